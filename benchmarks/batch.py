"""BatchRunner against hand-written baselines and the oracle, on the fake provider over loopback.

    python benchmarks/batch.py                 # every scenario (about 12 min), writes the docs
    python benchmarks/batch.py --only basic    # one scenario, prints only
    python benchmarks/batch.py --only neighbour --pictures   # ... and draws its picture
    python benchmarks/batch.py --rss           # peak RSS of a lazy 100 000-job batch
    python benchmarks/batch.py --virtual       # every scenario, 20 seeds, virtual clock
    python benchmarks/batch.py --virtual --seeds 5 --only basic --contenders runner,gather
    python benchmarks/batch.py --only basic --contenders runner --time-scale 1   # provider's clock

Real time (the default) runs each scenario once against the fake over loopback, served from
its own process, so the client's CPU costs what it costs. ``--virtual`` runs every scenario
over many seeds in-process on a virtual clock (``benchmarks/_virtual.py``): the same seed
gives the same numbers, request for request, whatever else the machine is doing.

Each scenario runs the fake provider at a scaled time (``time_scale``), so a minute of
provider time passes in a few real seconds; every number below is in provider seconds.
``--time-scale 1`` runs the named scenarios on the provider's own clock instead (two to five
times longer): a loopback round trip or an event loop's wake-up then counts once against a
task's seconds, not two to five times.

* runner: ``BatchRunner(client)``, told no limit at all.
* webapp: hundreds of concurrent ``client.generate()`` calls on one client (a busy web app).
* gather: ``asyncio.gather`` + a semaphore of the active limit + fixed 1 s polls.
* aiolimiter: aiolimiter pacing at the create limit + a semaphore + 0.5 s polls.
* oracle: the makespan of a client that knows every limit and when every task ends, and
  in the changing scenarios when each limit changes and when other consumers hold slots.

Efficiency is oracle makespan / measured makespan (1.0 is the ceiling).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import httpx
from _common import (
    BENCHMARKS_MD,
    BaselineResult,
    Neighbour,
    Retier,
    Scenario,
    job_prompt,
    oracle_makespan,
    run_aiolimiter_baseline,
    run_gather_baseline,
    write_docs_section,
)

from nanobanana_async import AsyncNanoBanana, BatchRunner, NanoBananaError, TextToImage
from nanobanana_async.testing import Faults

SCENARIOS = [
    Scenario(
        name="basic",
        description="basic tier (5 active, 5/s and 180/min creates), tasks 2-6 s: "
        "the active limit binds",
        jobs=150,
        tier="basic",
        duration=(2.0, 6.0),
        time_scale=0.2,
    ),
    Scenario(
        name="pro-short",
        description="pro tier (30 active, 20/s and 1200/min creates), tasks 0.5-1.5 s: "
        "many short tasks, the create rate binds",
        jobs=600,
        tier="pro",
        duration=(0.5, 1.5),
        time_scale=0.5,
    ),
    Scenario(
        name="tight-minute",
        description="basic tier with a 40/min create window, tasks 2-6 s: "
        "the per-minute create window binds",
        jobs=150,
        tier="basic",
        duration=(2.0, 6.0),
        time_scale=0.2,
        overrides={"create_per_minute": 40, "max_active": 50},
    ),
    Scenario(
        name="faults",
        description="basic tier, tasks 2-6 s, with 5% 500s and 3% dropped connections on "
        "polls, 3% errors inside 200 envelopes on creates and polls",
        jobs=150,
        tier="basic",
        duration=(2.0, 6.0),
        time_scale=0.2,
        faults=Faults(
            create={"200_500": 0.03, "200_429": 0.0},
            query={"500": 0.05, "drop_before": 0.03, "200_500": 0.03},
        ),
    ),
]

CHANGING = [
    Scenario(
        name="neighbour",
        description="10 active (standard tier's rates), tasks 2-6 s; another consumer of the "
        "key takes 6 of the 10 slots from 20 s to 40 s, then frees them",
        jobs=200,
        tier="standard",
        overrides={"max_active": 10},
        duration=(2.0, 6.0),
        time_scale=0.2,
        changes=(Neighbour(at=20.0, slots=6, for_seconds=20.0),),
    ),
    Scenario(
        name="upgrade",
        description="basic tier (5 active, 5/s and 180/min creates), tasks 2-6 s; at 30 s "
        "the key moves up to standard (15 active, 10/s and 600/min creates)",
        jobs=200,
        tier="basic",
        duration=(2.0, 6.0),
        time_scale=0.2,
        changes=(Retier(at=30.0, tier="standard"),),
    ),
    Scenario(
        name="downgrade",
        description="standard tier (15 active, 10/s and 600/min creates), tasks 2-6 s; at 30 s "
        "the key moves down to basic (5 active, 5/s and 180/min creates)",
        jobs=200,
        tier="standard",
        duration=(2.0, 6.0),
        time_scale=0.2,
        changes=(Retier(at=30.0, tier="basic"),),
    ),
    Scenario(
        name="webapp-neighbour",
        description="300 concurrent `generate()` calls on one client (a busy web app), "
        "10 active (standard tier's rates), tasks 2-6 s; another consumer of the key takes 6 "
        "of the 10 slots from 20 s to 40 s, then frees them",
        jobs=300,
        tier="standard",
        overrides={"max_active": 10},
        duration=(2.0, 6.0),
        time_scale=0.2,
        changes=(Neighbour(at=20.0, slots=6, for_seconds=20.0),),
        contenders=("webapp", "gather", "aiolimiter"),
    ),
]


async def run_webapp(client: AsyncNanoBanana, scenario: Scenario) -> BaselineResult:
    """Every job its own ``await client.generate(...)``, all at once on one client."""
    result = BaselineResult()

    async def one(index: int) -> None:
        try:
            await client.generate(TextToImage(prompt=job_prompt(index)))
        except NanoBananaError:
            result.failed += 1
        else:
            result.succeeded += 1

    async with asyncio.TaskGroup() as group:
        for index in range(scenario.jobs):
            group.create_task(one(index))
    return result


async def watch_learned_cap(
    client: AsyncNanoBanana, scenario: Scenario, into: list[list[float | None]]
) -> None:
    """Sample the cap the client believes in, as the fake's server samples the true one."""
    started = time.perf_counter()
    while True:
        t = (time.perf_counter() - started) / scenario.time_scale
        into.append([round(t, 3), client.limits_snapshot().max_active])
        await asyncio.sleep(0.1 * scenario.time_scale)


async def run_runner(client: AsyncNanoBanana, scenario: Scenario) -> tuple[BaselineResult, Any]:
    result = BaselineResult()
    runner = BatchRunner(client)
    requests = (TextToImage(prompt=job_prompt(i)) for i in range(scenario.jobs))
    async with runner.stream(requests) as outcomes:
        async for outcome in outcomes:
            if outcome.ok:
                result.succeeded += 1
            else:
                result.failed += 1
    return result, runner.statistics()


async def measure(scenario: Scenario, contender: str) -> dict[str, Any]:
    server = await asyncio.create_subprocess_exec(
        sys.executable,
        str(Path(__file__).parent / "_fake_server.py"),
        scenario.name,
        str(scenario.time_scale),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert server.stdin is not None
    assert server.stdout is not None
    base_url, fake_started = (await server.stdout.readline()).decode().split()
    fake = scenario.fake()  # the same settings, for the limits the baselines and oracle know
    stats = None
    # Clients are built before the clock starts: their start-up (TLS contexts, pools) is the
    # same whatever the batch, and would be magnified by the time scale.
    learned: list[list[float | None]] = []
    async with (
        AsyncNanoBanana(
            "sk-bench", base_url=base_url, timeout=30.0, **scenario.scaled_policies()
        ) as client,
        httpx.AsyncClient(timeout=30.0, limits=httpx.Limits(max_connections=100)) as http,
    ):
        offset = (time.time() - float(fake_started)) / scenario.time_scale
        server.stdin.write(b"go\n")  # the scenario's changes count from now
        await server.stdin.drain()
        started = time.perf_counter()
        watcher = None
        if scenario.changes and contender in ("runner", "webapp"):
            watcher = asyncio.create_task(watch_learned_cap(client, scenario, learned))
        if contender == "runner":
            result, stats = await run_runner(client, scenario)
        elif contender == "webapp":
            result = await run_webapp(client, scenario)
        elif contender == "gather":
            result = await run_gather_baseline(http, base_url, scenario, fake)
        else:
            result = await run_aiolimiter_baseline(http, base_url, scenario, fake)
        wall = time.perf_counter() - started
        if watcher is not None:
            watcher.cancel()
    server.stdin.close()
    fs = json.loads(await server.stdout.readline())
    await server.wait()
    requests = fs["create_requests"] + fs["query_requests"]
    wasted = fs["active_limited"] + fs["rate_limited"]
    makespan = wall / scenario.time_scale
    oracle = oracle_makespan(scenario, offset, fs["origin"])
    return {
        "scenario": scenario.name,
        "contender": contender,
        "makespan": makespan,
        "oracle": oracle,
        "efficiency": oracle / makespan,
        "requests": requests,
        "wasted": wasted / requests if requests else 0.0,
        "refused_creates": fs["active_limited"] / max(1, fs["create_requests"]),
        "rate_limited_share": fs["rate_limited"] / requests if requests else 0.0,
        "conflicts": fs["active_limited"],
        "rate_limited": fs["rate_limited"],
        "polls_per_task": fs["query_requests"] / scenario.jobs,
        "duplicates": fs["duplicates"],
        "lost": scenario.jobs - result.succeeded,
        "learned": None
        if stats is None
        else f"active {stats.max_active}, creates {stats.create_rate or 0:.1f}/s "
        f"(scaled), polls {stats.query_rate or 0:.1f}/s (scaled)",
        "timeline": {**fs["timeline"], "learned": learned},
    }


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| scenario | client | makespan (s) | oracle (s) | efficiency | refused creates "
        "(409s per create) | 429s per request | polls/task | duplicates | lost |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['scenario']} | {row['contender']} | {row['makespan']:.1f} "
            f"| {row['oracle']:.1f} | {row['efficiency']:.3f} | {row['refused_creates']:.1%} "
            f"| {row['rate_limited_share']:.2%} | {row['polls_per_task']:.1f} "
            f"| {row['duplicates']} | {row['lost']} |"
        )
    return "\n".join(lines)


def peak_rss_child(jobs: int) -> None:
    """Run a lazy batch of ``jobs`` on the in-process fake; print peak RSS in MB."""
    from nanobanana_async.testing import FakeNanoBanana

    async def main() -> None:
        fake = FakeNanoBanana(tier="enterprise", duration=(2.0, 6.0), time_scale=0.0005, seed=3)
        done = 0
        async with fake.client() as client:
            runner = BatchRunner(client)
            requests = (TextToImage(prompt=f"rss banana {i}") for i in range(jobs))
            async with runner.stream(requests) as outcomes:
                async for outcome in outcomes:
                    done += outcome.ok
        gc.collect()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"{done} {peak:.1f}")

    asyncio.run(main())


def measure_rss(jobs: int) -> tuple[int, float, float]:
    started = time.perf_counter()
    out = subprocess.run(
        [sys.executable, __file__, "--rss-child", str(jobs)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    return int(out[0]), float(out[1]), time.perf_counter() - started


def write_docs(rows: list[dict[str, Any]], command: str, rss: tuple[int, float, float] | None):
    scenario_lines = "\n".join(
        f"- **{s.name}** ({s.jobs} jobs, `time_scale={s.time_scale}`): {s.description}."
        for s in SCENARIOS
    )
    section = [
        "## Batches: BatchRunner against the oracle",
        "",
        f"Produced by `{command}` on the project's 2-core machine, against the fake provider",
        "over loopback (served from its own process) at a scaled time; times are provider",
        "seconds. A loopback round trip costs the client a few milliseconds, i.e. a few hundredths",
        "of a provider second at these scales; the oracle pays nothing for its requests.",
        "",
        scenario_lines,
        "",
        "Contenders: **runner** is `BatchRunner(client)` told no limit at all; **gather** is "
        "`asyncio.gather` + a semaphore of the active limit + fixed 1 s polls; **aiolimiter** "
        "is aiolimiter pacing at the create limit + a semaphore + 0.5 s polls (both baselines "
        "are told the limits and keep one X-Request-ID per job). The **oracle** knows every "
        "limit and each task's end, and creates in the better of input order and longest task "
        "first: efficiency = oracle makespan / measured makespan.",
        "",
        table(rows),
    ]
    if rss is not None:
        done, peak, wall = rss
        section += [
            "",
            f"Lazy 100 000-job batch on the in-process fake (`python benchmarks/batch.py --rss`): "
            f"{done} jobs succeeded, peak RSS **{peak:.0f} MB**, {wall:.0f} s wall.",
        ]
    write_docs_section("batch", section)


def write_changes_docs(rows: list[dict[str, Any]], command: str, pictures: dict[str, Path]):
    scenario_lines = "\n".join(
        f"- **{s.name}** ({s.jobs} jobs, `time_scale={s.time_scale}`): {s.description}."
        for s in CHANGING
    )
    section = [
        "## Limits that change under a run",
        "",
        f"Produced by `{command}` (the same run as the table above), against the same fake",
        "provider, which changes under the run on a schedule (`fake.schedule`, see",
        "[Testing](testing.md#changes-under-a-run)) counted from the client's start. Times are",
        "provider seconds.",
        "",
        scenario_lines,
        "",
        "Contenders as above, plus **webapp**: every job its own `await client.generate(...)`, "
        "all started at once in one task group on one client, as a busy web app runs. The "
        "baselines are told the key's limits as they are at the start, and keep them. The "
        "**oracle** knows the schedule: the key's cap and create rates at every moment and "
        "when each change comes, the slots the other consumer holds and when, and when every "
        "task ends; it creates the moment the cap less the neighbour's slots and both create "
        "windows (with the limits in force then) have room, and pays nothing for polls.",
        "",
        table(rows),
        "",
        "One run of each scenario, drawn from the fake's state sampled every 0.1 provider "
        "second: the key's cap (black), the room the other consumer leaves (grey above it is "
        "what it holds), the slots the client's tasks hold (blue), the cap the client believes "
        "in (orange, for ours), and each 409 (red) and 429 (purple) the fake answered.",
    ]
    for name, path in pictures.items():
        relative = path.relative_to(BENCHMARKS_MD.parent).as_posix()
        section += ["", f"![{name}: slots in use against the key's cap over time]({relative})"]
    write_docs_section("batch-changes", section)


def report(row: dict[str, Any]) -> None:
    print(
        f"{row['scenario']:>16} {row['contender']:>10}: efficiency {row['efficiency']:.3f}"
        f"  makespan {row['makespan']:.1f}s (oracle {row['oracle']:.1f}s)"
        f"  409/create {row['refused_creates']:.1%}  429/request {row['rate_limited_share']:.2%}"
        f"  polls/task {row['polls_per_task']:.1f}"
        f"  dup {row['duplicates']}  lost {row['lost']}"
        + (f"  [{row['learned']}]" if row["learned"] else ""),
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", help="run these scenarios (comma-separated); nothing is written")
    parser.add_argument("--contenders", help="comma-separated; default: each scenario's own")
    parser.add_argument(
        "--pictures", action="store_true", help="with --only: draw the changing ones' pictures"
    )
    parser.add_argument("--rss", action="store_true", help="measure the 100 000-job batch too")
    parser.add_argument("--virtual", action="store_true", help="many seeds on a virtual clock")
    parser.add_argument("--seeds", type=int, default=20, help="with --virtual: how many")
    parser.add_argument(
        "--time-scale",
        type=float,
        help="real time, with --only: run the fake at this scale instead (1 = the provider's "
        "own clock, five times slower than most scenarios); nothing is written",
    )
    parser.add_argument("--rss-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        peak_rss_child(args.rss_child)
        return
    names = None if args.only is None else set(args.only.split(","))
    full = names is None and args.contenders is None  # --time-scale needs --only
    if args.time_scale is not None:
        if args.virtual or names is None:
            parser.error("--time-scale is for real-time runs of the scenarios named by --only")
        if not (math.isfinite(args.time_scale) and args.time_scale > 0):
            parser.error(f"--time-scale must be a number more than 0, got {args.time_scale}")
        if args.pictures:
            parser.error("--pictures draws the docs' pictures, at each scenario's own scale")
    if args.virtual:
        run_virtual(names, args.contenders, args.seeds, write=full and args.seeds == 20)
        return
    rows: list[dict[str, Any]] = []
    pictures: dict[str, Path] = {}
    for scenario in SCENARIOS + CHANGING:
        if names is not None and scenario.name not in names:
            continue
        if args.time_scale is not None:
            scenario = dataclasses.replace(scenario, time_scale=args.time_scale)
        contenders = scenario.contenders
        if args.contenders is not None:
            contenders = tuple(c for c in args.contenders.split(",") if c in contenders)
        scenario_rows = []
        for contender in contenders:
            row = asyncio.run(measure(scenario, contender))
            scenario_rows.append(row)
            report(row)
        rows += scenario_rows
        if scenario.changes and scenario_rows and (full or args.pictures):
            from _pictures import draw

            pictures[scenario.name] = draw(scenario, scenario_rows)
            print(f"{'':>16} picture: {pictures[scenario.name]}", flush=True)
    rss = None
    if args.rss:
        rss = measure_rss(100_000)
        print(f"100000-job lazy batch: {rss[0]} ok, peak RSS {rss[1]:.1f} MB, {rss[2]:.0f} s")
    print()
    print(table(rows))
    if full:
        command = "python benchmarks/batch.py" + (" --rss" if args.rss else "")
        steady = {s.name for s in SCENARIOS}
        write_docs([r for r in rows if r["scenario"] in steady], command, rss)
        write_changes_docs([r for r in rows if r["scenario"] not in steady], command, pictures)


def run_virtual(names: set[str] | None, contenders: str | None, seeds: int, *, write: bool) -> None:
    from _virtual import run_all, summary
    from _virtual import table as virtual_table

    jobs = []
    for scenario in SCENARIOS + CHANGING:
        if names is not None and scenario.name not in names:
            continue
        # Ours by default; the baselines on request (--contenders), as they cost CPU too.
        chosen = tuple(c for c in scenario.contenders if c in ("runner", "webapp"))
        if contenders is not None:
            chosen = tuple(c for c in contenders.split(",") if c in scenario.contenders)
        jobs += [(scenario.name, contender, seed) for contender in chosen for seed in range(seeds)]
    started = time.perf_counter()
    groups = summary(run_all(jobs))
    wall = time.perf_counter() - started
    text = virtual_table(groups)
    print(text)
    print(f"\n{len(jobs)} runs in {wall:.0f} s of real time")
    if write:
        write_docs_section(
            "batch-virtual",
            [
                "## Batches on a virtual clock: every scenario, 20 seeds",
                "",
                "Produced by `python benchmarks/batch.py --virtual`: each scenario of the two "
                "tables above, in-process against the fake at the provider's own speed "
                '(`time_scale=1`) on `virtual_time("asyncio")`, once per seed (the seed '
                "draws the tasks' lengths, the fake's faults and ids, and the client's "
                "jitter; the oracle knows the same lengths). Nothing here depends on the "
                "machine: two runs print the same table. Refused creates are 409s per create "
                "sent; 429s are counted per request (creates and polls).",
                "",
                text,
                "",
                f"The {len(jobs)} runs took {wall:.0f} s of real time on the project's "
                f"{os.cpu_count()}-core machine, one process per core.",
            ],
        )


if __name__ == "__main__":
    main()
