"""Soak: 20 000 jobs through BatchRunner on the in-process fake with 5 % faults.

    python benchmarks/soak.py            # writes its section of docs/benchmarks.md
    python benchmarks/soak.py --jobs 2000

Every kind of fault the fake knows is injected on creates and polls, 5 % of requests in all on
each endpoint: 500s, dropped connections before and after the work (a create that dropped
after the work made a task the client never heard of), answers slower than the client's
timeout, errors inside HTTP 200 envelopes, HTML pages from a proxy. It reports duplicates
(the same request created twice), lost jobs (no result), peak RSS and the wall time against
the oracle's makespan.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).parent))

from _common import Scenario, job_prompt, oracle_makespan, write_docs_section

from nanobanana_async import BatchRunner, TextToImage
from nanobanana_async.testing import Faults

FAULTS = Faults(
    create={
        "500": 0.01,
        "drop_before": 0.01,
        "drop_after": 0.01,
        "slow": 0.005,
        "200_500": 0.01,
        "502_html": 0.005,
    },
    query={
        "500": 0.015,
        "drop_before": 0.01,
        "drop_after": 0.01,
        "200_500": 0.01,
        "503_html": 0.005,
    },
)


async def soak(jobs: int) -> dict[str, float]:
    scenario = Scenario(
        name="soak",
        description="",
        jobs=jobs,
        tier="enterprise",
        duration=(2.0, 6.0),
        time_scale=0.01,
        faults=FAULTS,
    )
    fake = scenario.fake(seed=7)
    ok = failed = 0
    policies = scenario.scaled_policies()
    async with fake.client(timeout=0.5, **policies) as client:
        runner = BatchRunner(client)
        started = time.perf_counter()
        requests = (TextToImage(prompt=job_prompt(i)) for i in range(jobs))
        async with runner.stream(requests) as outcomes:
            async for outcome in outcomes:
                if outcome.ok:
                    ok += 1
                else:
                    failed += 1
        wall = time.perf_counter() - started
    stats = fake.stats
    oracle = oracle_makespan(scenario) * scenario.time_scale
    return {
        "jobs": jobs,
        "succeeded": ok,
        "failed": failed,
        "lost": jobs - ok,
        "duplicates": stats.duplicates,
        "tasks_created": stats.tasks_created,
        "faults": stats.faults,
        "requests": stats.create_requests + stats.query_requests,
        "wall": wall,
        "oracle": oracle,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def write_docs(result: dict[str, float], command: str) -> None:
    write_docs_section(
        "soak",
        [
            "## Soak: 20 000 jobs with 5 % faults",
            "",
            f"Produced by `{command}`: BatchRunner on the in-process fake (enterprise tier, tasks",
            "2-6 s at `time_scale=0.01`), 5 % of creates and of polls faulty (500s, dropped",
            "connections before and after the work, answers past the client's timeout, errors in",
            "200 envelopes, HTML proxy pages).",
            "",
            "| jobs | succeeded | lost | duplicates | tasks created | faults injected | requests "
            "| peak RSS | wall | oracle |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
            f"| {result['jobs']:.0f} | {result['succeeded']:.0f} | {result['lost']:.0f} "
            f"| {result['duplicates']:.0f} | {result['tasks_created']:.0f} "
            f"| {result['faults']:.0f} | {result['requests']:.0f} "
            f"| {result['peak_rss_mb']:.0f} MB | {result['wall']:.1f} s "
            f"| {result['oracle']:.1f} s |",
            "",
            "The wall time is bound by the CPU (client and fake share one Python process), not by",
            "the limits; the oracle's makespan is given for scale.",
        ],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    args = parser.parse_args()
    result = anyio.run(soak, args.jobs)
    for key, value in result.items():
        print(f"{key:>14}: {value:.1f}" if isinstance(value, float) else f"{key:>14}: {value}")
    if args.jobs == 20_000:
        write_docs(result, "python benchmarks/soak.py")
    if result["lost"] or result["duplicates"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
