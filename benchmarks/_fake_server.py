"""Serve one benchmark scenario's fake provider from its own process.

Arguments: the scenario's name, and optionally another time scale for it. This prints the
base URL (and when the fake started) on the first line. The parent writes a line when its
client starts: the scenario's changes are planned from then, and for a scenario with changes
the fake's state is sampled on a timer. When standard input closes this prints the fake's
statistics as JSON (with that timeline; for a scenario that tallies its consumers apart, with
each one's counts and every task's span) and exits. A separate process stands in for the
provider's own machine: the client under test does not share an interpreter (or a core) with
the server.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import attrs

sys.path.insert(0, str(Path(__file__).parent))

from _common import Scenario, TalliedFake
from batch import CHANGING, SCENARIOS
from multiprocess import SCENARIOS as MULTIPROCESS
from shared_key import SCENARIO as SHARED_KEY

from nanobanana_async.testing import FakeNanoBanana

SAMPLE_EVERY = 0.1
"""Provider seconds between two samples of the fake's state."""


async def sample(fake: FakeNanoBanana, origin: float, into: dict[str, list[Any]]) -> None:
    """Record the key's state every `SAMPLE_EVERY`, and each 409 and 429 from the request log.

    Times are provider seconds since ``origin`` (the client's start). The log keeps the last
    256 requests; read this often, it loses none.
    """
    scale = fake.time_scale
    seen = -1.0
    while True:
        stats = fake.stats
        now = fake.elapsed
        cap = fake.limits.max_active
        into["samples"].append(
            [round(now / scale - origin, 3), stats.active, stats.neighbour_slots, cap]
        )
        for record in fake.recent_requests:
            if record.at > seen and record.status in (409, 429):
                into["refusals"].append([round(record.at / scale - origin, 3), record.status])
        seen = now
        await anyio.sleep(SAMPLE_EVERY * scale)


async def main(name: str, time_scale: str | None = None) -> None:
    scenarios = [*SCENARIOS, *CHANGING, *MULTIPROCESS, SHARED_KEY]
    scenario: Scenario = next(s for s in scenarios if s.name == name)
    if time_scale is not None:
        scenario = dataclasses.replace(scenario, time_scale=float(time_scale))
    fake = scenario.fake()
    timeline: dict[str, list[Any]] = {"samples": [], "refusals": []}
    async with fake.serve() as base_url:
        # The wall-clock moment the fake's windows started, for the parent's oracle.
        print(base_url, time.time() - fake.elapsed, flush=True)
        await anyio.to_thread.run_sync(sys.stdin.readline)  # the client starts
        origin = fake.elapsed / fake.time_scale
        scenario.start_changes(fake)
        async with anyio.create_task_group() as group:
            if scenario.changes:
                group.start_soon(sample, fake, origin, timeline)
            await anyio.to_thread.run_sync(sys.stdin.read)
            group.cancel_scope.cancel()
    stats: dict[str, Any] = {**attrs.asdict(fake.stats), "origin": origin, "timeline": timeline}
    if isinstance(fake, TalliedFake):
        stats.update(tally=fake.tally, tasks=fake.task_spans(origin))
    print(json.dumps(stats), flush=True)


if __name__ == "__main__":
    anyio.run(main, *sys.argv[1:3])
