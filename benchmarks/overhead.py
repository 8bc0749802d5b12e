"""The client's own overhead: create + poll cycles against raw httpx doing the same requests.

    python benchmarks/overhead.py                  # asyncio; writes docs/benchmarks.md
    python benchmarks/overhead.py --backend trio   # the same on trio, prints only
    python benchmarks/overhead.py --no-write       # prints only

Both contenders talk to one in-process `httpx.MockTransport` that answers from pre-encoded
bytes, so the network and the provider cost nothing and what is left is the client:

* client: ``await client.create_task(request)`` then ``await client.get_task(task_id)``.
* raw httpx: the same two requests by hand, with the same headers (a fresh X-Request-ID
  per create, bearer auth, a User-Agent), checking the status and the envelope's ``code``,
  and reading ``taskId`` and ``resultJson``'s URLs, as a careful user of raw httpx would.

Rounds alternate between the two (and which goes first), so that a busy machine's drift hits
both; each round times many cycles with ``time.perf_counter`` after a ``gc.collect()``. The
ratio is the median over rounds of client time / raw time of the same round, which is steadier
on a shared machine than the ratio of the two medians (also printed).
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import httpx
from _common import write_docs_section

from nanobanana_async import AsyncNanoBanana, Task, TextToImage, __version__

API_KEY = "sk-benchmark"
BASE = "https://aigptimage.com"
# Parsed once, as the client does: the baseline should not pay for parsing URL strings.
CREATE_URL = httpx.URL(f"{BASE}/api/v1/jobs/createTask")
QUERY_URL = httpx.URL(f"{BASE}/api/v1/jobs/recordInfo")
TARGET = 1.3
SECTION = "## Client overhead"

CREATED = json.dumps({"code": 200, "msg": "success", "data": {"taskId": "task_bench"}}).encode()
RECORD = json.dumps(
    {
        "code": 200,
        "msg": "success",
        "data": {
            "taskId": "task_bench",
            "model": "nano-banana-text-to-image",
            "state": "success",
            "param": json.dumps(
                {"model": "nano-banana-text-to-image", "input": {"prompt": "a banana"}}
            ),
            "resultJson": json.dumps({"resultUrls": ["https://cdn.example.com/r/task_bench.png"]}),
            "failCode": None,
            "failMsg": None,
            "costTime": 12000,
            "completeTime": 1757584176490,
            "createTime": 1757584164490,
        },
    }
).encode()
JSON_HEADERS = [(b"content-type", b"application/json")]


def provider(request: httpx.Request) -> httpx.Response:
    """The cheapest faithful provider: two pre-encoded answers."""
    body = CREATED if request.method == "POST" else RECORD
    return httpx.Response(200, headers=JSON_HEADERS, content=body)


def transport() -> httpx.MockTransport:
    return httpx.MockTransport(provider)


async def raw_cycle(http: httpx.AsyncClient) -> None:
    """Create and read a task with httpx alone."""
    headers = {
        "Authorization": f"Bearer {API_KEY}",
        "User-Agent": "raw-httpx",
        "Accept": "application/json",
        "X-Request-ID": str(uuid.uuid4()),
    }
    body = {
        "model": "nano-banana-text-to-image",
        "input": {"prompt": "a banana", "image_size": "1:1", "output_format": "png"},
    }
    response = await http.post(CREATE_URL, json=body, headers=headers)
    response.raise_for_status()
    created = response.json()
    if created["code"] != 200:
        raise RuntimeError(created)
    task_id = created["data"]["taskId"]
    del headers["X-Request-ID"]
    response = await http.get(QUERY_URL, params={"taskId": task_id}, headers=headers)
    response.raise_for_status()
    record = response.json()
    if record["code"] != 200:
        raise RuntimeError(record)
    urls = json.loads(record["data"]["resultJson"])["resultUrls"]
    if record["data"]["state"] != "success" or not urls:
        raise RuntimeError(record)


async def client_cycle(client: AsyncNanoBanana, request: TextToImage) -> Task:
    """Create and read a task with the client."""
    task_id = await client.create_task(request)
    return await client.get_task(task_id)


async def time_cycles(cycle: Callable[[], Awaitable[Any]], cycles: int) -> float:
    """Seconds per cycle over ``cycles`` cycles."""
    gc.collect()
    started = time.perf_counter()
    for _ in range(cycles):
        await cycle()
    return (time.perf_counter() - started) / cycles


async def measure(cycles: int, rounds: int) -> tuple[list[float], list[float]]:
    request = TextToImage(prompt="a banana")
    raw_times: list[float] = []
    client_times: list[float] = []
    async with (
        httpx.AsyncClient(transport=transport()) as raw_http,
        httpx.AsyncClient(transport=transport()) as client_http,
        AsyncNanoBanana(API_KEY, base_url=BASE, http_client=client_http) as client,
    ):
        task = await client_cycle(client, request)
        assert task.urls == ("https://cdn.example.com/r/task_bench.png",)

        async def raw() -> None:
            await raw_cycle(raw_http)

        async def ours() -> None:
            await client_cycle(client, request)

        # Warm both paths (imports, caches, the limiter's first use) before timing.
        await time_cycles(raw, cycles // 5 + 1)
        await time_cycles(ours, cycles // 5 + 1)
        for index in range(rounds):
            first, second = (raw, ours) if index % 2 == 0 else (ours, raw)
            for contender in (first, second):
                seconds = await time_cycles(contender, cycles)
                (raw_times if contender is raw else client_times).append(seconds)
    return raw_times, client_times


def report(
    raw_times: list[float], client_times: list[float], cycles: int, backend: str, command: str
) -> tuple[float, list[str]]:
    raw = statistics.median(raw_times)
    ours = statistics.median(client_times)
    ratios = [c / r for c, r in zip(client_times, raw_times, strict=True)]
    ratio = statistics.median(ratios)
    verdict = "within" if ratio <= TARGET else "ABOVE"
    lines = [
        SECTION,
        "",
        f"Produced by `{command}` (Python {platform.python_version()}, {backend}, "
        f"httpx {httpx.__version__}, nanobanana-async {__version__}) on the project's 2-core "
        "machine.",
        "",
        "One cycle is a `createTask` and a `recordInfo` through an in-process "
        "`httpx.MockTransport` answering from pre-encoded bytes, so only client-side work is "
        "measured. **client** is `create_task` + `get_task`; **raw httpx** sends the same two "
        "requests by hand (same headers, a fresh X-Request-ID, envelope `code` checked, "
        "`resultJson` parsed). Rounds alternate between the two; the times are medians "
        f"over {len(raw_times)} rounds of {cycles} cycles, the ratio is the median of the "
        "rounds' ratios.",
        "",
        "| contender | µs per cycle |",
        "|---|---:|",
        f"| raw httpx | {raw * 1e6:.0f} |",
        f"| client | {ours * 1e6:.0f} |",
        "",
        f"Ratio client / raw httpx: **{ratio:.2f}x** ({verdict} the {TARGET}x target; "
        f"rounds ranged {min(ratios):.2f}x to {max(ratios):.2f}x, ratio of medians "
        f"{ours / raw:.2f}x).",
    ]
    return ratio, lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=1000, help="cycles per round")
    parser.add_argument("--rounds", type=int, default=15, help="rounds per contender")
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    parser.add_argument("--no-write", action="store_true", help="do not touch docs/")
    args = parser.parse_args()
    raw_times, client_times = anyio.run(measure, args.cycles, args.rounds, backend=args.backend)
    command = "python " + " ".join(["benchmarks/overhead.py", *sys.argv[1:]])
    _, lines = report(raw_times, client_times, args.cycles, args.backend, command)
    print("\n".join(lines[2:]))
    if not args.no_write and args.backend == "asyncio":
        path = write_docs_section("overhead", lines)
        print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
