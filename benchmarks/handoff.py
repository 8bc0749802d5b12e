"""Hand-off across processes: a slot released in one process, taken by a waiter in another.

    python benchmarks/handoff.py               # 200 hand-offs per backend and mode
    python benchmarks/handoff.py --rounds 500

Two processes share one `RedisLimits` key with a cap of one slot. The releaser holds the
slot; the waiter asks for it (interactive) and waits; after 0.1-0.3 s (as a batch's task ends
at any moment) the releaser frees it. The hand-off is the time from the release to the
waiter's ``acquire`` returning, on the host's monotonic clock (one clock for both processes).

* published: as shipped, the release is published to the waiters (Redis pub/sub);
* polled: the baseline, the waiter's process ignores those messages and finds the slot by its
  poll (``poll_interval``, 50 ms by default), as before releases were published.

Needs ``redis-server`` on PATH (it starts its own on a free port).
"""

from __future__ import annotations

import argparse
import multiprocessing
import random
import statistics
import sys
import time
import uuid
from multiprocessing.connection import Connection
from pathlib import Path

import anyio
import anyio.to_thread

sys.path.insert(0, str(Path(__file__).parent))

from multiprocess import start_redis

from nanobanana_async import RedisLimits
from nanobanana_async.limits import RedisActiveTaskLimiter


def waiter(url: str, key: str, backend: str, polled: bool, pipe: Connection) -> None:
    """The waiting process: take the slot whenever asked, note when, give it back."""
    if polled:
        RedisActiveTaskLimiter.on_released_elsewhere = lambda self: None

    async def main() -> None:
        async with RedisLimits(url, key=key, max_active=1) as limits:
            pipe.send("ready")
            while await anyio.to_thread.run_sync(pipe.recv) == "take":
                holder = object()
                await limits.active.acquire(holder, "interactive")
                taken_at = time.monotonic()
                limits.active.release(holder)
                await limits.flush()
                pipe.send(taken_at)

    anyio.run(main, backend=backend)


async def release_many(url: str, key: str, pipe: Connection, rounds: int) -> list[float]:
    """The releasing process: hold the slot, let the waiter queue, free it; the hand-offs."""
    handoffs = []
    async with RedisLimits(url, key=key, max_active=1) as limits:
        assert await anyio.to_thread.run_sync(pipe.recv) == "ready"
        for _ in range(rounds):
            holder = object()
            await limits.active.acquire(holder, "interactive")
            pipe.send("take")
            await anyio.sleep(random.uniform(0.1, 0.3))
            released_at = time.monotonic()
            limits.active.release(holder)
            taken_at = await anyio.to_thread.run_sync(pipe.recv)
            handoffs.append(taken_at - released_at)
        pipe.send("stop")
    return handoffs


def measure(url: str, backend: str, polled: bool, rounds: int) -> list[float]:
    key = f"handoff-{uuid.uuid4().hex}"
    ours, theirs = multiprocessing.Pipe()
    process = multiprocessing.get_context("spawn").Process(
        target=waiter, args=(url, key, backend, polled, theirs)
    )
    process.start()
    try:
        return anyio.run(release_many, url, key, ours, rounds, backend=backend)
    finally:
        process.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    server, url = start_redis()
    try:
        for backend in ("asyncio", "trio"):
            medians = {}
            for mode in ("published", "polled"):
                ms = sorted(1000 * t for t in measure(url, backend, mode == "polled", args.rounds))
                medians[mode] = statistics.median(ms)
                p95 = statistics.quantiles(ms, n=20)[18]
                print(
                    f"{backend:8} {mode:9} p50 {medians[mode]:6.2f} ms  p95 {p95:6.2f} ms  "
                    f"max {ms[-1]:6.2f} ms",
                    flush=True,
                )
            ratio = medians["polled"] / medians["published"]
            print(f"{backend:8} polled / published (p50): {ratio:.1f}x")
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
