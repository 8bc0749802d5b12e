"""Four processes, one API key: limits shared through Redis against limits kept per process.

    python benchmarks/multiprocess.py           # both modes, writes docs/benchmarks.md
    python benchmarks/multiprocess.py --runs 3  # the median of three runs per mode

One fake provider (basic tier: 5 active tasks, 5/s and 180/min creates; tasks 2-6 s) is
served from its own process at a scaled time (``time_scale`` 0.2). Four worker processes each
run a `BatchRunner` batch of 60 jobs against it with the same API key, all started together:

* shared: each worker's client has ``limits=RedisLimits(url)`` on one Redis key, told no limit;
* per-process: each worker's client has its own in-process `Limits` (the default), told none.

The oracle is the makespan of one all-knowing client running the 240 jobs, as in
``benchmarks/batch.py``. Needs ``redis-server`` on PATH (it starts its own on a free port).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import socket
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from _common import Scenario, job_prompt, oracle_makespan, write_docs_section

from nanobanana_async import AsyncNanoBanana, BatchRunner, RedisLimits, TextToImage

PROCESSES = 4
JOBS_EACH = 60
SCENARIO = Scenario(
    name="multiprocess",
    description="basic tier, tasks 2-6 s, 4 processes x 60 jobs on one key",
    jobs=PROCESSES * JOBS_EACH,
    tier="basic",
    duration=(2.0, 6.0),
    time_scale=0.2,
)
HERE = Path(__file__).parent


async def worker(base_url: str, mode: str, redis_url: str, key: str, index: int) -> None:
    """One process's batch: ready, wait for the go line, run, print its counts as JSON."""
    jobs = range(index * JOBS_EACH, (index + 1) * JOBS_EACH)
    requests = [TextToImage(prompt=job_prompt(i)) for i in jobs]
    loop = asyncio.get_running_loop()
    policies = SCENARIO.scaled_policies()
    if mode == "shared":
        limits: Any = RedisLimits(redis_url, key=key, poll_interval=0.01)
        await limits.__aenter__()
    else:
        limits = None
    try:
        async with AsyncNanoBanana(
            "sk-bench", base_url=base_url, timeout=30.0, limits=limits, **policies
        ) as client:
            runner = BatchRunner(client)
            print("ready", flush=True)
            await loop.run_in_executor(None, sys.stdin.readline)
            outcomes = await runner.run(requests)
            stats = runner.statistics()
    finally:
        if limits is not None:
            await limits.__aexit__(None, None, None)
    print(
        json.dumps(
            {
                "ok": sum(o.ok for o in outcomes),
                "conflicts": stats.conflicts,
                "rate_limited": stats.rate_limited,
            }
        ),
        flush=True,
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def measure(mode: str, redis_url: str) -> dict[str, Any]:
    server = subprocess.Popen(
        [sys.executable, str(HERE / "_fake_server.py"), SCENARIO.name],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdin is not None
    assert server.stdout is not None
    base_url, fake_started = server.stdout.readline().split()
    key = f"bench-{uuid.uuid4().hex}"
    workers = [
        subprocess.Popen(
            [sys.executable, __file__, "--worker", base_url, mode, redis_url, key, str(i)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(PROCESSES)
    ]
    for w in workers:
        assert w.stdout is not None
        assert w.stdout.readline().strip() == "ready"
    offset = (time.time() - float(fake_started)) / SCENARIO.time_scale
    started = time.perf_counter()
    for w in workers:
        assert w.stdin is not None
        w.stdin.write("go\n")
        w.stdin.flush()
    results = []
    for w in workers:
        assert w.stdout is not None
        results.append(json.loads(w.stdout.readline()))
    wall = time.perf_counter() - started
    for w in workers:
        w.wait()
    server.stdin.close()
    fs = json.loads(server.stdout.readline())
    server.wait()
    requests = fs["create_requests"] + fs["query_requests"]
    makespan = wall / SCENARIO.time_scale
    oracle = oracle_makespan(SCENARIO, SCENARIO.fake(), offset)
    return {
        "mode": mode,
        "makespan": makespan,
        "oracle": oracle,
        "efficiency": oracle / makespan,
        "requests": requests,
        "conflicts": fs["active_limited"],
        "rate_limited": fs["rate_limited"],
        "wasted": (fs["active_limited"] + fs["rate_limited"]) / requests,
        "max_active": fs["max_active"],
        "ok": sum(r["ok"] for r in results),
    }


def start_redis() -> tuple[subprocess.Popen[bytes], str]:
    if shutil.which("redis-server") is None:
        sys.exit("redis-server is not on PATH (Debian: apt-get install redis-server)")
    port = _free_port()
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1"]
    proc = subprocess.Popen(
        [*argv, "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    for _ in range(200):
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.02)
    return proc, f"redis://127.0.0.1:{port}/0"


LABELS = {"shared": "shared (RedisLimits)", "local": "per-process Limits"}


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| limits | makespan (s) | oracle (s) | efficiency | 409s | 429s | 409+429 share "
        "| most active | jobs ok |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {LABELS[r['mode']]} | {r['makespan']:.1f} | {r['oracle']:.1f} "
            f"| {r['efficiency']:.3f} | {r['conflicts']} | {r['rate_limited']} "
            f"| {r['wasted']:.2%} | {r['max_active']} | {r['ok']} |"
        )
    return "\n".join(lines)


def write_docs(rows: list[dict[str, Any]], command: str) -> None:
    write_docs_section(
        "multiprocess",
        [
            "## Many processes, one key: shared limits on Redis",
            "",
            f"Produced by `{command}` on the project's 2-core machine. One fake provider "
            "(basic tier: 5 active tasks, 5/s and 180/min creates; tasks 2-6 s; time scale "
            "0.2) served from its own process; 4 worker processes, each a `BatchRunner` batch "
            "of 60 jobs on the same key, started together and told no limit. **shared**: "
            "every client has `limits=RedisLimits(url)` on one key of a local redis-server; "
            "**per-process**: each has its own in-process `Limits`. The oracle is one "
            "all-knowing client running all 240 jobs (see above); times are provider seconds, "
            "the median run of each mode is shown.",
            "",
            table(rows),
        ],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    parser.add_argument("--runs", type=int, default=1, help="runs per mode; the median is kept")
    parser.add_argument("--no-docs", action="store_true", help="print only")
    args = parser.parse_args()
    if args.worker:
        base_url, mode, redis_url, key, index = args.worker
        asyncio.run(worker(base_url, mode, redis_url, key, int(index)))
        return
    redis_server, redis_url = start_redis()
    rows = []
    try:
        for mode in ("shared", "local"):
            runs = []
            for _ in range(args.runs):
                row = measure(mode, redis_url)
                runs.append(row)
                print(
                    f"{LABELS[mode]:>22}: efficiency {row['efficiency']:.3f}  makespan "
                    f"{row['makespan']:.1f}s (oracle {row['oracle']:.1f}s)  409 "
                    f"{row['conflicts']}  429 {row['rate_limited']}  wasted {row['wasted']:.2%}"
                    f"  most active {row['max_active']}  ok {row['ok']}",
                    flush=True,
                )
            median = statistics.median(r["efficiency"] for r in runs)
            rows.append(min(runs, key=lambda r: abs(r["efficiency"] - median)))
    finally:
        redis_server.terminate()
        redis_server.wait()
    print()
    print(table(rows))
    if not args.no_docs:
        command = "python benchmarks/multiprocess.py" + (
            f" --runs {args.runs}" if args.runs != 1 else ""
        )
        write_docs(rows, command)


if __name__ == "__main__":
    main()
