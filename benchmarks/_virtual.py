"""The batch scenarios on a virtual clock: many seeds, the same numbers every run.

Each (scenario, contender, seed) runs in-process against the fake at the provider's own speed
(``time_scale=1``) on `nanobanana_async.testing.virtual_time("asyncio")`: the clock jumps
whenever every task waits, so a run costs only the CPU of its requests, and the machine's load
cannot move a number. The seed draws the tasks' lengths (and the fake's faults and ids, and the
client's jitter, through ``fake.client()``); the oracle knows the same lengths.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any, TypeVar

import anyio
import attrs
import httpx
from _common import (
    BaselineResult,
    Scenario,
    oracle_makespan,
    run_aiolimiter_baseline,
    run_gather_baseline,
)

from nanobanana_async import PollPolicy, RetryPolicy
from nanobanana_async.testing import virtual_time

BASE_URL = "https://api.fake-nanobanana.test"
Job = TypeVar("Job")


async def measure(
    scenario: Scenario, contender: str, seed: int, poll: PollPolicy | None = None
) -> dict[str, Any]:
    """One run of ``contender`` on ``scenario`` with ``seed``, in virtual provider seconds.

    ``poll`` is the client's `PollPolicy` (runner and webapp; default: the fake's own).
    """
    from batch import run_runner, run_webapp  # batch imports this module: a late import

    scenario = dataclasses.replace(scenario, time_scale=1.0)  # the provider's own speed
    fake = scenario.fake(seed)
    started = anyio.current_time()
    scenario.start_changes(fake)
    if contender in ("runner", "webapp"):
        retry = attrs.evolve(RetryPolicy(), max_rate_limit_wait=300.0)
        policies = {"retry": retry} if poll is None else {"retry": retry, "poll": poll}
        async with fake.client(**policies) as client:
            if contender == "runner":
                result, _ = await run_runner(client, scenario)
            else:
                result = await run_webapp(client, scenario)
    else:
        baseline = run_gather_baseline if contender == "gather" else run_aiolimiter_baseline
        async with httpx.AsyncClient(transport=fake.transport(), timeout=30.0) as http:
            result = await baseline(http, BASE_URL, scenario, fake)
    return _row(scenario, contender, seed, fake, result, anyio.current_time() - started)


def _row(
    scenario: Scenario,
    contender: str,
    seed: int,
    fake: Any,
    result: BaselineResult,
    makespan: float,
) -> dict[str, Any]:
    stats = fake.stats
    requests = stats.create_requests + stats.query_requests
    oracle = oracle_makespan(scenario, 0.0, 0.0, seed)
    return {
        "scenario": scenario.name,
        "contender": contender,
        "seed": seed,
        "makespan": makespan,
        "oracle": oracle,
        "efficiency": oracle / makespan,
        "refused_creates": stats.active_limited / max(1, stats.create_requests),
        "rate_limited": stats.rate_limited / max(1, requests),
        "polls_per_task": stats.query_requests / scenario.jobs,
        "duplicates": stats.duplicates,
        "lost": scenario.jobs - result.succeeded,
    }


def _run(job: tuple[str, str, int]) -> dict[str, Any]:
    from batch import CHANGING, SCENARIOS

    name, contender, seed = job
    scenario = next(s for s in [*SCENARIOS, *CHANGING] if s.name == name)
    backend, options = virtual_time("asyncio")
    return anyio.run(measure, scenario, contender, seed, backend=backend, backend_options=options)


def run_all(
    jobs: Sequence[Job],
    workers: int | None = None,
    run: Callable[[Job], dict[str, Any]] = _run,
) -> list[dict]:
    """``run`` each job (by default a (scenario, contender, seed)), over the machine's cores."""
    workers = workers or min(len(jobs), os.cpu_count() or 1)
    if workers <= 1:
        return [run(job) for job in jobs]
    with ProcessPoolExecutor(workers) as pool:
        return list(pool.map(run, jobs))


def summary(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per scenario and contender: the mean and worst over the seeds."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["scenario"], row["contender"]), []).append(row)
    out = []
    for (scenario, contender), runs in groups.items():
        efficiency = [r["efficiency"] for r in runs]
        out.append(
            {
                "scenario": scenario,
                "contender": contender,
                "seeds": len(runs),
                "mean": statistics.fmean(efficiency),
                "worst": min(efficiency),
                "refused_creates": statistics.fmean(r["refused_creates"] for r in runs),
                "worst_refused_creates": max(r["refused_creates"] for r in runs),
                "rate_limited": statistics.fmean(r["rate_limited"] for r in runs),
                "polls_per_task": statistics.fmean(r["polls_per_task"] for r in runs),
                "duplicates": sum(r["duplicates"] for r in runs),
                "lost": sum(r["lost"] for r in runs),
            }
        )
    return out


def table(groups: Sequence[dict[str, Any]]) -> str:
    lines = [
        "| scenario | client | seeds | efficiency, mean | worst | refused creates (409), "
        "mean / worst | 429s per request | polls/task | duplicates | lost |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for g in groups:
        lines.append(
            f"| {g['scenario']} | {g['contender']} | {g['seeds']} | {g['mean']:.3f} "
            f"| {g['worst']:.3f} | {g['refused_creates']:.1%} / {g['worst_refused_creates']:.1%} "
            f"| {g['rate_limited']:.2%} | {g['polls_per_task']:.1f} | {g['duplicates']} "
            f"| {g['lost']} |"
        )
    return "\n".join(lines)
