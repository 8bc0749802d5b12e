"""The client's own overhead: create + poll cycles against raw httpx doing the same requests.

    python benchmarks/overhead.py                  # asyncio; writes docs/benchmarks.md
    python benchmarks/overhead.py --backend trio   # the same on trio, prints only
    python benchmarks/overhead.py --no-write       # prints only
    python benchmarks/overhead.py --without-otel   # as without the [otel] extra, prints only

Both contenders talk to one in-process `httpx.MockTransport` that answers from pre-encoded
bytes, so the network and the provider cost nothing and what is left is the client:

* client: ``await client.create_task(request)`` then ``await client.get_task(task_id)``.
* raw httpx: the same two requests by hand, with the same headers (a fresh X-Request-ID
  per create, bearer auth, a User-Agent), checking the status and the envelope's ``code``,
  and reading ``taskId`` and ``resultJson``'s URLs, as a careful user of raw httpx would.

The client's telemetry (OpenTelemetry, the ``[otel]`` extra) is measured the same way, with
clients of one process that differ in it alone:

* client, telemetry off: ``Telemetry(enabled=False)``, the code path of a client without the
  extra (``--without-otel`` runs the whole benchmark with every import of opentelemetry
  failing, to compare with a run as without the extra);
* client: the default, with opentelemetry-api installed and no SDK configured;
* client + SDK: an OpenTelemetry SDK recording every span (a batch processor, its exports
  dropped) and every metric (an in-memory reader, never collected during the run).

Within each round the contenders take turns every 20 cycles (in an order that rotates), so that
a busy machine's drift hits all of them alike; a round times each contender's cycles with
``time.perf_counter``, after a ``gc.collect()``. A ratio is the median over rounds of one
contender's time / another's in the same round, which is steadier on a shared machine than the
ratio of the two medians (also printed).
"""

from __future__ import annotations

import sys

WITHOUT_OTEL = "--without-otel" in sys.argv
if WITHOUT_OTEL:  # before the library is imported: as if the [otel] extra were not installed
    sys.modules["opentelemetry"] = None  # type: ignore[assignment]

import argparse  # noqa: E402 - after the switch above
import contextlib  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Awaitable, Callable, Sequence  # noqa: E402
from typing import Any  # noqa: E402

import anyio  # noqa: E402
import httpx  # noqa: E402
from _common import write_docs_section  # noqa: E402

from nanobanana_async import AsyncNanoBanana, Task, Telemetry, TextToImage, __version__  # noqa: E402

API_KEY = "sk-benchmark"
BASE = "https://aigptimage.com"
# Parsed once, as the client does: the baseline should not pay for parsing URL strings.
CREATE_URL = httpx.URL(f"{BASE}/api/v1/jobs/createTask")
QUERY_URL = httpx.URL(f"{BASE}/api/v1/jobs/recordInfo")
TARGET = 1.2
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


CHUNK = 20
"""Cycles a contender runs before the next takes over, within a round."""


async def time_cycles(cycle: Callable[[], Awaitable[Any]], cycles: int) -> float:
    """Seconds per cycle over ``cycles`` cycles."""
    gc.collect()
    started = time.perf_counter()
    for _ in range(cycles):
        await cycle()
    return (time.perf_counter() - started) / cycles


async def time_round(
    contenders: dict[str, Callable[[], Awaitable[Any]]], cycles: int, shift: int
) -> dict[str, float]:
    """Seconds per cycle of each contender over one round of ``cycles`` cycles each.

    The contenders take turns every `CHUNK` cycles, in an order that rotates, so that each of
    them meets the same moments of a busy machine.
    """
    names = list(contenders)
    spent = dict.fromkeys(names, 0.0)
    gc.collect()
    for chunk in range(max(1, cycles // CHUNK)):
        turn = (shift + chunk) % len(names)
        for name in names[turn:] + names[:turn]:
            cycle = contenders[name]
            started = time.perf_counter()
            for _ in range(CHUNK):
                await cycle()
            spent[name] += time.perf_counter() - started
    done = max(1, cycles // CHUNK) * CHUNK
    return {name: seconds / done for name, seconds in spent.items()}


RAW = "raw httpx"
OFF = "client, telemetry off"
CLIENT = "client"
SDK = "client + OpenTelemetry SDK"


def sdk_telemetry() -> Telemetry | None:
    """Providers of an OpenTelemetry SDK that records everything, or None without the SDK."""
    try:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            SpanExporter,
            SpanExportResult,
        )
    except ImportError:
        return None

    class Dropped(SpanExporter):
        """Exports nothing: the cost measured is the SDK's, not a backend's."""

        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(Dropped()))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    return Telemetry(tracer_provider=tracer_provider, meter_provider=meter_provider)


async def measure(cycles: int, rounds: int) -> dict[str, list[float]]:
    """Seconds per cycle of each contender, one number per round."""
    request = TextToImage(prompt="a banana")
    clients: dict[str, Telemetry | None] = {CLIENT: None}
    if not WITHOUT_OTEL:
        clients[OFF] = Telemetry(enabled=False)
        sdk = sdk_telemetry()
        if sdk is not None:
            clients[SDK] = sdk
    times: dict[str, list[float]] = {RAW: [], **{name: [] for name in clients}}
    async with contextlib.AsyncExitStack() as stack:
        raw_http = await stack.enter_async_context(httpx.AsyncClient(transport=transport()))

        async def raw() -> None:
            await raw_cycle(raw_http)

        contenders: dict[str, Callable[[], Awaitable[Any]]] = {RAW: raw}
        for name, telemetry in clients.items():
            http = await stack.enter_async_context(httpx.AsyncClient(transport=transport()))
            client = await stack.enter_async_context(
                AsyncNanoBanana(API_KEY, base_url=BASE, http_client=http, telemetry=telemetry)
            )
            task = await client_cycle(client, request)
            assert task.urls == ("https://cdn.example.com/r/task_bench.png",)

            async def ours(client: AsyncNanoBanana = client) -> None:
                await client_cycle(client, request)

            contenders[name] = ours
        # Warm every path (imports, caches, the limiter's first use) before timing.
        for contender in contenders.values():
            await time_cycles(contender, cycles // 5 + 1)
        for index in range(rounds):
            for name, seconds in (await time_round(contenders, cycles, index)).items():
                times[name].append(seconds)
    return times


def ratio(times: dict[str, list[float]], over: str, under: str) -> tuple[float, list[float]]:
    """The median of the rounds' ratios of ``over`` to ``under``, and those ratios."""
    ratios = [a / b for a, b in zip(times[over], times[under], strict=True)]
    return statistics.median(ratios), ratios


def report(
    times: dict[str, list[float]], cycles: int, backend: str, command: str
) -> tuple[float, list[str]]:
    raw = statistics.median(times[RAW])
    ours = statistics.median(times[CLIENT])
    client_ratio, ratios = ratio(times, CLIENT, RAW)
    verdict = "within" if client_ratio <= TARGET else "ABOVE"
    otel = "without opentelemetry" if WITHOUT_OTEL else "opentelemetry-api installed, no SDK"
    lines = [
        SECTION,
        "",
        f"Produced by `{command}` (Python {platform.python_version()}, {backend}, "
        f"httpx {httpx.__version__}, nanobanana-async {__version__}, {otel}) on the project's "
        "2-core machine.",
        "",
        "One cycle is a `createTask` and a `recordInfo` through an in-process "
        "`httpx.MockTransport` answering from pre-encoded bytes, so only client-side work is "
        "measured. **client** is `create_task` + `get_task`; **raw httpx** sends the same two "
        "requests by hand (same headers, a fresh X-Request-ID, envelope `code` checked, "
        "`resultJson` parsed). The contenders take turns every 20 cycles; the times are medians "
        f"over {len(times[RAW])} rounds of {cycles} cycles, a ratio is the median of the "
        "rounds' ratios.",
        "",
        "| contender | µs per cycle | / raw httpx |",
        "|---|---:|---:|",
    ]
    for name, measured in times.items():
        per_raw = "" if name == RAW else f"{ratio(times, name, RAW)[0]:.2f}x"
        lines.append(f"| {name} | {statistics.median(measured) * 1e6:.0f} | {per_raw} |")
    lines += [
        "",
        f"Ratio client / raw httpx: **{client_ratio:.2f}x** ({verdict} the {TARGET}x target; "
        f"rounds ranged {min(ratios):.2f}x to {max(ratios):.2f}x, ratio of medians "
        f"{ours / raw:.2f}x).",
    ]
    if OFF in times:
        lines += [
            "",
            "Telemetry (OpenTelemetry, the `[otel]` extra), against **client, telemetry off** "
            "(`Telemetry(enabled=False)`: the code path of a client without the extra):",
            "",
        ]
        for name, what in ((CLIENT, "installed, no SDK configured"), (SDK, "with an SDK")):
            if name in times:
                cost, spread = ratio(times, name, OFF)
                lines.append(
                    f"- {what}: **{(cost - 1) * 100:+.1f} %** per cycle (rounds ranged "
                    f"{(min(spread) - 1) * 100:+.1f} % to {(max(spread) - 1) * 100:+.1f} %)."
                )
    return client_ratio, lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=1000, help="cycles per round")
    parser.add_argument("--rounds", type=int, default=15, help="rounds per contender")
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    parser.add_argument("--no-write", action="store_true", help="do not touch docs/")
    parser.add_argument(
        "--without-otel",
        action="store_true",
        help="fail every import of opentelemetry, as without the [otel] extra (prints only)",
    )
    args = parser.parse_args()
    times = anyio.run(measure, args.cycles, args.rounds, backend=args.backend)
    command = "python " + " ".join(["benchmarks/overhead.py", *sys.argv[1:]])
    _, lines = report(times, args.cycles, args.backend, command)
    print("\n".join(lines[2:]))
    if not args.no_write and not args.without_otel and args.backend == "asyncio":
        path = write_docs_section("overhead", lines)
        print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
