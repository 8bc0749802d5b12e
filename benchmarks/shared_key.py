"""One API key, a web app and a batch: the visitors' waits and the batch's makespan.

    python benchmarks/shared_key.py                       # virtual clock, 10 seeds, all setups
    python benchmarks/shared_key.py --seeds 3 --only alone,one-client
    python benchmarks/shared_key.py --arrivals poisson    # visitors at random, same mean
    python benchmarks/shared_key.py --write               # ... and its docs section
    python benchmarks/shared_key.py --real --runs 2 --write   # real time, processes, Redis

The scenario (the issue's): pro tier's rates with 10 active slots, tasks of 0.5-1.5 s. A web
app starts one ``client.generate()`` every 0.5 s (visitor i at 0.5·i s after the batch's
start; as many visitors as span the oracle's makespan of the batch beside them), while a
300-job ``BatchRunner(client)`` (background, the default) runs on the same key. Setups:

* alone: the web app only, the baseline of its waits (the same visitors);
* one-client: the batch and the web app on one ``AsyncNanoBanana``;
* shared: two clients sharing the key's limits (virtual: one ``Limits()`` given to both;
  real time: two processes, each with ``RedisLimits(url)`` on one Redis key);
* nothing-shared: two clients (two processes in real time), each with limits of its own;
* nothing-shared-headroom: the same, the batch with ``headroom=2`` (``--headroom``).

``--virtual`` (the default) runs each (setup, seed) in-process against the fake at the
provider's own speed (``time_scale=1``) on ``virtual_time("asyncio")``, spread over the
machine's cores: the same seed gives the same numbers, whatever else the machine does.
``--real`` runs in real time over loopback (about a minute per setup), the fake served from
its own process, the web app and the batch each in its own process where they have their
own clients (one process for one-client), and a redis-server of its own for ``shared``. The
fake runs at the provider's speed there too, so a task takes 0.5-1.5 s of wall time as in the
issue's run; ``--time-scale 0.1`` runs it ten times faster (the rate windows shrink with it),
which a 2-core machine shared with other work cannot keep up with: the clients' processes
then fall behind the tasks and the numbers measure the machine.

Every time is in provider seconds. The visitor's wait is one ``generate()`` call, start to
end, against the same visitor's in ``alone`` (same seed or run). The batch's makespan, start
to last outcome, is set against an oracle that knows every task's length and the web app's
demand: each visitor's task holds a slot from its arrival for its length, and the oracle
runs the 300 jobs in the slots (and create windows) left, never taking one a visitor needs.
Requests are counted by the fake for each side apart (by prompt): refused creates (409s) per
create, 429s per request, polls per task.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import anyio
import anyio.to_thread
import attrs
from _common import (
    BENCHMARKS_MD,
    FakeServer,
    Scenario,
    job_prompt,
    oracle_makespan,
    planned_duration,
    prompt_stem,
    start_redis,
    write_docs_section,
)

from nanobanana_async import (
    AsyncNanoBanana,
    BatchRunner,
    Limits,
    NanoBananaError,
    RedisLimits,
    RetryPolicy,
    TextToImage,
)
from nanobanana_async.testing import virtual_time

SETUPS = ("alone", "one-client", "shared", "nothing-shared", "nothing-shared-headroom")
LABELS = {
    "alone": "the web app alone on the key",
    "one-client": "batch and web app in one process, one client",
    "shared": "two clients, limits shared (one `Limits`; real time: `RedisLimits`)",
    "nothing-shared": "two clients, nothing shared (how most teams deploy)",
    "nothing-shared-headroom": "two clients, nothing shared, the batch with `headroom={h}`",
}
BARS = {
    "one-client": (1.25, 0.9),
    "shared": (1.25, 0.9),
    "nothing-shared": (None, 0.8),
    "nothing-shared-headroom": (2.0, 0.8),
}
"""The acceptance's bars: the web app's p95 against its p95 alone (at most), and the batch's
oracle / makespan (at least)."""

VISIT_EVERY = 0.5
"""Provider seconds between two visitors (the mean, with Poisson arrivals)."""
SCENARIO = Scenario(
    name="shared-key",
    description="pro tier's rates with 10 active slots, tasks 0.5-1.5 s",
    jobs=300,
    tier="pro",
    overrides={"max_active": 10},
    duration=(0.5, 1.5),
    time_scale=1.0,
    contenders=SETUPS,
    tally=True,
)
WEB, BATCH = "visitor", prompt_stem(job_prompt(0))
"""The two consumers of the key, as the fake tells them apart (their prompts' stems)."""
REAL_SEED = 0
"""The seed of the real-time runs (the fake served from its own process draws with 0)."""


def visitor_prompt(index: int) -> str:
    return f"visitor {index}"


# -- the web app's demand, and the oracle beside it -----------------------------------------


def web_demand(arrivals: Sequence[float], seed: int) -> list[tuple[float, float]]:
    """Each visitor's task, ``(start, end)``: created on arrival, as long as the fake plans."""
    draw = planned_duration(*SCENARIO.duration, seed=seed)
    return [
        (at, at + draw({"input": {"prompt": visitor_prompt(i)}})) for i, at in enumerate(arrivals)
    ]


def oracle(arrivals: Sequence[float], seed: int, offset: float = 0.0, origin: float = 0.0) -> float:
    """The batch's makespan for a client that knows every task and the web app's demand."""
    reserved = web_demand(arrivals, seed)
    return oracle_makespan(SCENARIO, offset, origin, seed, reserved=reserved)


def visitor_count(seed: int) -> int:
    """As many visitors as span the batch: the oracle's makespan beside them / `VISIT_EVERY`."""
    count = 0
    for _ in range(20):  # a fixed point: more visitors slow the batch, which needs more
        needed = math.ceil(oracle(steady_arrivals(count), seed) / VISIT_EVERY)
        if needed == count:
            break
        count = needed
    return count


def steady_arrivals(count: int) -> list[float]:
    return [VISIT_EVERY * i for i in range(count)]


def arrivals(seed: int, poisson: bool) -> list[float]:
    """The visitors' arrivals, in provider seconds from the batch's start."""
    count = visitor_count(seed)
    if not poisson:
        return steady_arrivals(count)
    rng = random.Random(f"{seed}/arrivals")
    times = [0.0]
    while len(times) < count:
        times.append(times[-1] + rng.expovariate(1.0 / VISIT_EVERY))
    return times


# -- the two sides ---------------------------------------------------------------------------


async def run_web(
    client: AsyncNanoBanana, arrivals: Sequence[float], scale: float
) -> list[list[float]]:
    """Visitor i calls ``generate()`` at ``arrivals[i]``; returns each ``[arrival, wait, ok]``."""
    start = anyio.current_time()
    visits: list[list[float]] = [[] for _ in arrivals]

    async def visit(index: int, at: float) -> None:
        await anyio.sleep_until(start + at * scale)
        began = anyio.current_time()
        try:
            await client.generate(TextToImage(prompt=visitor_prompt(index)))
            ok = 1.0
        except NanoBananaError:
            ok = 0.0
        visits[index] = [(began - start) / scale, (anyio.current_time() - began) / scale, ok]

    async with anyio.create_task_group() as group:
        for index, at in enumerate(arrivals):
            group.start_soon(visit, index, at)
    return visits


async def run_batch(client: AsyncNanoBanana, headroom: int, scale: float) -> dict[str, float]:
    """The 300-job batch (background); returns its makespan and how many jobs succeeded."""
    start = anyio.current_time()
    runner = BatchRunner(client, headroom=headroom)
    requests = (TextToImage(prompt=job_prompt(i)) for i in range(SCENARIO.jobs))
    ok = 0
    async with runner.stream(requests) as outcomes:
        async for outcome in outcomes:
            ok += outcome.ok
    return {"makespan": (anyio.current_time() - start) / scale, "ok": ok}


async def run_sides(
    web: AsyncNanoBanana | None,
    batch: AsyncNanoBanana | None,
    arrivals: Sequence[float],
    headroom: int,
    scale: float,
) -> dict[str, Any]:
    """Run the web app (on ``web``) and the batch (on ``batch``) together, as given."""
    sides: dict[str, Any] = {}

    async def web_side(client: AsyncNanoBanana) -> None:
        sides["visits"] = await run_web(client, arrivals, scale)

    async def batch_side(client: AsyncNanoBanana) -> None:
        sides["batch"] = await run_batch(client, headroom, scale)

    async with anyio.create_task_group() as group:
        if web is not None:
            group.start_soon(web_side, web)
        if batch is not None:
            group.start_soon(batch_side, batch)
    return sides


def headroom_of(setup: str, headroom: int) -> int:
    return headroom if setup == "nothing-shared-headroom" else 0


# -- virtual time: in-process, many seeds ----------------------------------------------------


async def measure_virtual(setup: str, seed: int, poisson: bool, headroom: int) -> dict[str, Any]:
    scenario = dataclasses.replace(SCENARIO, time_scale=1.0)  # the provider's own speed
    fake: Any = scenario.fake(seed)
    visitors = arrivals(seed, poisson)
    retry = attrs.evolve(RetryPolicy(), max_rate_limit_wait=300.0)
    async with contextlib.AsyncExitStack() as stack:

        async def client(limits: Limits | None = None) -> AsyncNanoBanana:
            return await stack.enter_async_context(fake.client(retry=retry, limits=limits))

        if setup == "alone":
            web, batch = await client(), None
        elif setup == "one-client":
            web = batch = await client()
        elif setup == "shared":
            limits = Limits()
            web, batch = await client(limits), await client(limits)
        else:
            web, batch = await client(), await client()
        sides = await run_sides(web, batch, visitors, headroom_of(setup, headroom), 1.0)
    stats = {**attrs.asdict(fake.stats), "tally": fake.tally, "tasks": fake.task_spans()}
    return result_row(setup, seed, sides, stats, oracle(visitors, seed))


def _run_virtual(job: tuple[str, int, bool, int]) -> dict[str, Any]:
    backend, options = virtual_time("asyncio")
    return anyio.run(measure_virtual, *job, backend=backend, backend_options=options)


# -- real time: processes over loopback ------------------------------------------------------

ROLES = {"alone": ("web",), "one-client": ("both",)}
"""The processes of each setup (default: a web app's and a batch's)."""


async def role_main(
    role: str, setup: str, base_url: str, redis_url: str, key: str, args: argparse.Namespace
) -> None:
    """One process of a real-time run: ready, wait for the go line, run, print its results."""
    scenario = dataclasses.replace(SCENARIO, time_scale=args.time_scale)
    scale = scenario.time_scale
    poisson = args.arrivals == "poisson"
    visitors = arrivals(REAL_SEED, poisson) if role != "batch" else []
    async with contextlib.AsyncExitStack() as stack:
        limits = None
        if setup == "shared":
            # The default pause between two tries for a slot held elsewhere, in scaled time.
            redis_limits = RedisLimits(redis_url, key=key, poll_interval=0.05 * scale)
            limits = await stack.enter_async_context(redis_limits)
        client = await stack.enter_async_context(
            AsyncNanoBanana(
                "sk-bench",
                base_url=base_url,
                timeout=30.0,
                limits=limits,
                **scenario.scaled_policies(),
            )
        )
        print("ready", flush=True)
        await anyio.to_thread.run_sync(sys.stdin.readline)
        cpu, wall = time.process_time(), time.perf_counter()
        sides = await run_sides(
            client if role != "batch" else None,
            client if role != "web" else None,
            visitors,
            headroom_of(setup, args.headroom),
            scale,
        )
        sides[f"{role} cpu"] = (time.process_time() - cpu) / (time.perf_counter() - wall)
    print(json.dumps(sides), flush=True)


def measure_real(setup: str, run: int, redis_url: str, args: argparse.Namespace) -> dict[str, Any]:
    server = FakeServer(dataclasses.replace(SCENARIO, time_scale=args.time_scale))
    key = f"bench-{uuid.uuid4().hex}"
    argv = [sys.executable, __file__, "--role"]
    options = ["--arrivals", args.arrivals, "--headroom", str(args.headroom)]
    options += ["--time-scale", str(args.time_scale)]
    processes = [
        subprocess.Popen(
            [*argv, role, setup, server.base_url, redis_url, key, *options],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for role in ROLES.get(setup, ("web", "batch"))
    ]
    for process in processes:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "ready"
    offset = server.go()
    for process in processes:
        assert process.stdin is not None
        process.stdin.write("go\n")
        process.stdin.flush()
    sides: dict[str, Any] = {}
    for process in processes:
        assert process.stdout is not None
        sides.update(json.loads(process.stdout.readline()))
        process.wait()
    stats = server.finish()
    visitors = arrivals(REAL_SEED, args.arrivals == "poisson")
    return result_row(
        setup, run, sides, stats, oracle(visitors, REAL_SEED, offset, stats["origin"])
    )


# -- results -----------------------------------------------------------------------------


def percentile(values: Sequence[float], fraction: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[round(fraction * 100) - 1]


def result_row(
    setup: str, seed: int, sides: dict[str, Any], stats: dict[str, Any], oracle: float
) -> dict[str, Any]:
    """One run's numbers; ``seed`` is the run's number in real time."""
    visits, batch = sides.get("visits", []), sides.get("batch")
    waits = [visit[1] for visit in visits]
    tasks = stats["tasks"]
    row: dict[str, Any] = {
        "setup": setup,
        "seed": seed,
        "p50": statistics.median(waits),
        "p95": percentile(waits, 0.95),
        "makespan": batch["makespan"] if batch else None,
        "oracle": oracle if batch else None,
        "efficiency": oracle / batch["makespan"] if batch else None,
        "duplicates": stats["duplicates"],
        "lost": sum(visit[2] == 0 for visit in visits)
        + (SCENARIO.jobs - batch["ok"] if batch else 0),
        "visits": visits,
        "tasks": tasks,
        "cpu": {key: value for key, value in sides.items() if key.endswith(" cpu")},
    }
    for side, stem in (("web", WEB), ("batch", BATCH)):
        counts = stats["tally"].get(stem, {})
        creates, polls = counts.get("create", 0), counts.get("query", 0)
        created = sum(task[2] == stem for task in tasks)
        refused_429 = counts.get("create 429", 0) + counts.get("query 429", 0)
        row[f"{side}_409"] = counts.get("create 409", 0) / creates if creates else None
        row[f"{side}_429"] = refused_429 / (creates + polls) if creates else None
        row[f"{side}_polls"] = polls / created if created else None
    return row


def against_alone(rows: list[dict[str, Any]]) -> None:
    """Add each row's waits against the web app's alone in the same seed (or run)."""
    alone = {row["seed"]: row for row in rows if row["setup"] == "alone"}
    for row in rows:
        base = alone.get(row["seed"])
        row["p50_ratio"] = row["p50"] / base["p50"] if base else None
        row["p95_ratio"] = row["p95"] / base["p95"] if base else None


def _cell(value: Any, spec: str) -> str:
    if isinstance(value, tuple):
        return " / ".join(_cell(v, spec) for v in value)
    return "-" if value is None else format(value, spec)


def _bar(setup: str, which: int, spec: str) -> str:
    bar = BARS.get(setup, (None, None))[which]
    if bar is None:
        return "-"
    return ("≤ " if which == 0 else "≥ ") + format(bar, spec)


SIDE_KEYS = ("web_409", "batch_409", "web_429", "batch_429", "web_polls", "batch_polls")
COLUMNS = (
    ("visitor's wait p50 (s)", "p50", ".2f"),
    ("p95 (s)", "p95", ".2f"),
    ("p50 / alone", "p50_ratio", ".2f"),
    ("p95 / alone", "p95_ratio", ".2f"),
    ("bar", None, ".2f"),
    ("batch makespan (s)", "makespan", ".1f"),
    ("oracle (s)", "oracle", ".1f"),
    ("oracle / makespan", "efficiency", ".3f"),
    ("bar", None, ".1f"),
    ("409s per create, web / batch", ("web_409", "batch_409"), ".1%"),
    ("429s per request, web / batch", ("web_429", "batch_429"), ".2%"),
    ("polls per task, web / batch", ("web_polls", "batch_polls"), ".1f"),
    ("duplicates", "duplicates", "d"),
    ("lost", "lost", "d"),
)


SPREAD = ("p50_ratio", "p95_ratio", "efficiency")
"""The columns a summary over seeds gives as mean / worst."""


def table(rows: Sequence[dict[str, Any]], first: tuple[str, str], headroom: int) -> str:
    """A markdown table of ``rows``; ``first`` names a leading column (its title and key).

    Rows of a `summary` (a tuple in a `SPREAD` column) say so in those columns' titles.
    """
    spread = any(isinstance(row[key], tuple) for row in rows for key in SPREAD)
    titles = [
        title + (", mean / worst" if spread and key in SPREAD else "") for title, key, _ in COLUMNS
    ]
    lines = [
        "| setup | " + " | ".join([first[0], *titles]) + " |",
        "|---|" + "---:|" * (len(COLUMNS) + 1),
    ]
    for row in rows:
        cells = [LABELS[row["setup"]].format(h=headroom), str(row[first[1]])]
        bars = 0
        for _, key, spec in COLUMNS:
            if key is None:
                cells.append(_bar(row["setup"], bars, spec))
                bars += 1
            elif isinstance(key, tuple):
                cells.append(_cell(tuple(row[k] for k in key), spec))
            else:
                cells.append(_cell(row[key], spec))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per setup over the seeds: means, and the worst seed's ratios as ``(mean, worst)``."""
    out = []
    for setup in SETUPS:
        runs = [row for row in rows if row["setup"] == setup]
        if not runs:
            continue

        def mean(key: str, runs: list[dict[str, Any]] = runs) -> float | None:
            values = [row[key] for row in runs if row[key] is not None]
            return statistics.fmean(values) if values else None

        def spread(key: str, worst: Any, runs: list[dict[str, Any]] = runs) -> Any:
            values = [row[key] for row in runs if row[key] is not None]
            return (statistics.fmean(values), worst(values)) if values else None

        group: dict[str, Any] = {"setup": setup, "seeds": len(runs)}
        for key in ("p50", "p95", "makespan", "oracle", *SIDE_KEYS):
            group[key] = mean(key)
        for key in ("p50_ratio", "p95_ratio"):
            group[key] = spread(key, max)
        group["efficiency"] = spread("efficiency", min)
        group["duplicates"] = sum(row["duplicates"] for row in runs)
        group["lost"] = sum(row["lost"] for row in runs)
        out.append(group)
    return out


# -- the command -------------------------------------------------------------------------


def scenario_text(args: argparse.Namespace, count: int) -> str:
    arrivals_text = (
        f"one every {VISIT_EVERY:g} s"
        if args.arrivals == "fixed"
        else f"at Poisson arrivals, one every {VISIT_EVERY:g} s on average"
    )
    return (
        f"{SCENARIO.description[0].upper()}{SCENARIO.description[1:]} (pro: 20/s and "
        f"1200/min creates, 100/s and 6000/min polls). The web app's visitors each call "
        f"`client.generate()` (interactive), {arrivals_text} from the batch's start "
        f"({count} visitors in the drawn run, as many as span the oracle's makespan), while a "
        f"{SCENARIO.jobs}-job `BatchRunner(client)` (background) runs on the same key. The "
        "visitor's wait is one `generate()` call, start to end, against the same visitors' "
        "alone on the key (same seed or run). The oracle knows every task's length and the "
        "web app's demand: each visitor's task holds a slot from its arrival for its length, "
        "and the oracle runs the batch's jobs (the best of input order, longest first, and "
        "the longest job that fits whenever one can start) in the slots and create windows "
        "they leave, never taking a slot a visitor is about to need. So an oracle / makespan "
        "above 1 is a batch that took slots the visitors needed, and they waited for it. The "
        "fake counts each side's requests apart (by prompt): refused creates (409s) per "
        "create, 429s per request (creates and polls), polls per task. Times are provider "
        "seconds."
    )


def run_virtual(args: argparse.Namespace, setups: Sequence[str]) -> None:
    from _virtual import run_all

    poisson = args.arrivals == "poisson"
    jobs = [(setup, seed, poisson, args.headroom) for setup in setups for seed in range(args.seeds)]
    started = time.perf_counter()
    rows = run_all(jobs, args.workers, _run_virtual)
    wall = time.perf_counter() - started
    against_alone(rows)
    for row in rows:
        report(row, f"seed {row['seed']:>2}")
    text = table(summary(rows), ("seeds", "seeds"), args.headroom)
    print(f"\n{len(jobs)} runs in {wall:.0f} s of real time")
    command = "python benchmarks/shared_key.py" + command_flags(args)
    publish(
        text,
        [row for row in rows if row["seed"] == 0],
        args,
        "shared-key-virtual" + ("" if args.arrivals == "fixed" else "-poisson"),
        "On a virtual clock, seed 0",
        [
            f"## One key, a web app and a batch: on a virtual clock, {args.seeds} seeds",
            "",
            f"Produced by `{command}`: each setup in-process against the fake at the "
            'provider\'s own speed (`time_scale=1`) on `virtual_time("asyncio")`, once per '
            "seed (the seed draws the tasks' lengths and the clients' jitter; the oracle "
            "knows the same lengths); the two clients of a setup are two `AsyncNanoBanana`s "
            "on the one fake, and **shared** gives both the same `Limits()`. Nothing here "
            "depends on the machine: two runs print the same table. Ratios are per seed "
            "against the web app alone with that seed: the mean over the seeds, then the "
            "worst seed; the other columns are means.",
        ],
    )


def run_real(args: argparse.Namespace, setups: Sequence[str]) -> None:
    redis_server, redis_url = start_redis()
    rows: list[dict[str, Any]] = []
    try:
        for run in range(1, args.runs + 1):
            for setup in setups:
                row = measure_real(setup, run, redis_url, args)
                rows.append(row)
                against_alone([r for r in rows if r["seed"] == run])
                report(row, f"run {run}")
    finally:
        redis_server.terminate()
        redis_server.wait()
    rows.sort(key=lambda row: (SETUPS.index(row["setup"]), row["seed"]))
    command = "python benchmarks/shared_key.py --real" + command_flags(args)
    publish(
        table(rows, ("run", "seed"), args.headroom),
        [row for row in rows if row["seed"] == 1],
        args,
        "shared-key" + ("" if args.arrivals == "fixed" else "-poisson"),
        "In real time, run 1",
        [
            "## One key, a web app and a batch",
            "",
            f"Produced by `{command}` on the project's 2-core machine, in real time: the "
            "fake provider served from its own process over loopback at "
            f"`time_scale={args.time_scale:g}`; the web app and the batch each in its own "
            "process where they have clients of their own (one process for **one-client**), "
            "and for **shared** each with `RedisLimits(url)` on one key of a redis-server "
            f"the script starts. {args.runs} runs of each setup, one after the other; each "
            "run's ratios are against **alone** of the same run. At `time_scale=1` a task "
            "takes 0.5-1.5 s of wall time, as in the issue's run; ten times faster "
            "(`--time-scale 0.1`), the clients' processes on this shared machine fall behind "
            "the tasks (the key's slots stand half empty) and the numbers measure the "
            "machine, not the client.",
        ],
    )


def publish(
    text: str,
    drawn: list[dict[str, Any]],
    args: argparse.Namespace,
    name: str,
    caption: str,
    heading: list[str],
) -> None:
    """Print the table, draw the ``drawn`` run of each setup, and write the docs with --write."""
    print()
    print(text)
    path = draw(drawn, name, args, caption)
    print(f"picture: {path}")
    if not args.write:
        return
    relative = path.relative_to(BENCHMARKS_MD.parent).as_posix()
    write_docs_section(
        name,
        [
            *heading,
            "",
            scenario_text(args, len(drawn[0]["visits"])),
            "",
            text,
            "",
            f"{caption} of each setup. Left: each visitor's wait against its arrival "
            "(dashed: the web app's p95 alone; dotted: the bar). Right: the key's slots held "
            "over time, by the web app (orange) and by the batch (blue), against the key's "
            "cap (black), from the fake's tasks (created to finished); dotted green: the "
            "oracle's makespan, dashed blue: the batch's.",
            "",
            f"![Shared key: each visitor's wait and the key's slots by owner over time]"
            f"({relative})",
        ],
    )


def draw(rows: list[dict[str, Any]], name: str, args: argparse.Namespace, caption: str) -> Path:
    """Draw the picture: into the docs with --write, else beside the system's temporary files."""
    from _pictures import PICTURES, draw_shared_key

    labels = {setup: label.format(h=args.headroom) for setup, label in LABELS.items()}
    cap = SCENARIO.overrides["max_active"]
    caption += f": {SCENARIO.description}, a visitor every {VISIT_EVERY:g} s ({args.arrivals})"
    directory = PICTURES if args.write else Path(tempfile.gettempdir()) / "nanobanana-benchmarks"
    return draw_shared_key(rows, name, labels, BARS, cap, caption, directory)


def command_flags(args: argparse.Namespace) -> str:
    flags = f" --runs {args.runs}" if args.real else f" --seeds {args.seeds}"
    if args.real and args.time_scale != SCENARIO.time_scale:
        flags += f" --time-scale {args.time_scale:g}"
    if args.arrivals != "fixed":
        flags += f" --arrivals {args.arrivals}"
    if args.headroom != 2:
        flags += f" --headroom {args.headroom}"
    return flags + " --write"


def report(row: dict[str, Any], which: str) -> None:
    cpu = "".join(f"  {key} {share:.0%}" for key, share in row.get("cpu", {}).items())
    ratio = "" if row["p95_ratio"] is None else f" ({row['p95_ratio']:.2f}x alone)"
    batch = (
        ""
        if row["makespan"] is None
        else f"  batch {row['makespan']:.1f}s (oracle {row['oracle']:.1f}s, "
        f"{row['efficiency']:.3f})"
    )
    print(
        f"{row['setup']:>24} {which}: wait p50 {row['p50']:.2f}s p95 {row['p95']:.2f}s{ratio}"
        f"{batch}  409/create web {_cell(row['web_409'], '.1%')} batch "
        f"{_cell(row['batch_409'], '.1%')}  dup {row['duplicates']} lost {row['lost']}{cpu}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--virtual", action="store_true", help="virtual clock (the default)")
    mode.add_argument("--real", action="store_true", help="real time, processes over loopback")
    parser.add_argument("--seeds", type=int, default=10, help="virtual: seeds per setup")
    parser.add_argument("--runs", type=int, default=1, help="real time: runs of each setup")
    parser.add_argument("--only", help="these setups (comma-separated; alone is always run)")
    parser.add_argument("--arrivals", choices=("fixed", "poisson"), default="fixed")
    parser.add_argument("--headroom", type=int, default=2, help="nothing-shared-headroom's")
    parser.add_argument("--workers", type=int, help="virtual: processes (default: the cores)")
    parser.add_argument(
        "--time-scale",
        type=float,
        default=SCENARIO.time_scale,
        help="real time: the fake's seconds per provider second (default: 1, real speed)",
    )
    parser.add_argument("--write", action="store_true", help="write the docs section")
    parser.add_argument("--role", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role:
        anyio.run(role_main, *args.role, args)
        return
    setups = SETUPS
    if args.only is not None:
        chosen = {"alone", *args.only.split(",")}
        setups = tuple(setup for setup in SETUPS if setup in chosen)
    if args.write and args.only is not None:
        parser.error("--write runs every setup: drop --only")
    if args.real:
        run_real(args, setups)
    else:
        run_virtual(args, setups)


if __name__ == "__main__":
    main()
