"""Serve one benchmark scenario's fake provider from its own process.

The parent writes nothing; this prints the base URL on the first line, serves until its
standard input closes, then prints the fake's statistics as JSON and exits. A separate
process stands in for the provider's own machine: the client under test does not share an
interpreter (or a core) with the server.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import anyio
import anyio.to_thread
import attrs

sys.path.insert(0, str(Path(__file__).parent))

from batch import SCENARIOS
from multiprocess import SCENARIO as MULTIPROCESS


async def main(name: str) -> None:
    scenario = next(s for s in [*SCENARIOS, MULTIPROCESS] if s.name == name)
    fake = scenario.fake()
    async with fake.serve() as base_url:
        # The wall-clock moment the fake's windows started, for the parent's oracle.
        print(base_url, time.time() - fake.elapsed, flush=True)
        await anyio.to_thread.run_sync(sys.stdin.read)
    stats = fake.stats
    print(json.dumps(attrs.asdict(stats)), flush=True)


if __name__ == "__main__":
    anyio.run(main, sys.argv[1])
