"""Shared pieces of the batch benchmarks: scenarios, the oracle, and the two baselines."""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import math
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import attrs
import httpx

from nanobanana_async import PollPolicy, RetryPolicy
from nanobanana_async.testing import FakeNanoBanana, Faults, TierLimits

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

    def fake(self, seed: int = 0) -> FakeNanoBanana:
        """The scenario's fake; ``seed`` draws other task lengths, faults and ids."""
        return FakeNanoBanana(
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


class KeyTimeline:
    """The key's limits and the slots other consumers hold, as functions of provider time.

    Times are provider seconds since the fake started; the scenario's changes start at
    ``origin`` (when the fake was told the schedule, just as the client started).
    """

    def __init__(self, scenario: Scenario, origin: float = 0.0) -> None:
        fake = scenario.fake()  # the fake's own arithmetic turns each change into limits
        self.steps: list[tuple[float, TierLimits]] = [(-math.inf, fake.limits)]
        self.neighbours: list[tuple[float, float, int]] = []
        for change in sorted(scenario.changes, key=lambda c: c.at):
            at = origin + change.at
            if isinstance(change, Retier):
                self.steps.append((at, fake.set_tier(change.tier, **change.overrides)))
            else:
                self.neighbours.append((at, at + change.for_seconds, change.slots))
        self.points = sorted(
            {at for at, _ in self.steps[1:]} | {t for n in self.neighbours for t in n[:2]}
        )

    def limits_at(self, t: float) -> TierLimits:
        return [limits for at, limits in self.steps if at <= t][-1]

    def neighbour_slots_at(self, t: float) -> int:
        return sum(slots for start, end, slots in self.neighbours if start <= t < end)

    def next_change_after(self, t: float) -> float:
        return next((at for at in self.points if at > t), math.inf)


def oracle_makespan(
    scenario: Scenario, offset: float = 0.0, origin: float | None = None, seed: int = 0
) -> float:
    """Provider seconds an all-knowing client needs: every limit and task end known ahead.

    It creates in input order the moment a slot is free (the key's cap then, less the slots
    other consumers hold then) and both fixed create windows (aligned to the fake's start, as
    the fake counts them, with the limits in force then) have room; polls cost it nothing. The
    client starts ``offset`` provider seconds after the fake, and the scenario's changes start
    at ``origin`` (default: ``offset``). The better of input order and longest-first is taken,
    so the ceiling is never flattering.
    """
    timeline = KeyTimeline(scenario, offset if origin is None else origin)
    durations = scenario.durations(seed)
    return (
        min(
            _greedy(durations, timeline, offset),
            _greedy(sorted(durations, reverse=True), timeline, offset),
        )
        - offset
    )


def _greedy(durations: list[float], timeline: KeyTimeline, offset: float = 0.0) -> float:
    running: list[float] = []
    counts: dict[float, dict[int, int]] = {1.0: {}, 60.0: {}}
    t = offset
    end = 0.0
    for duration in durations:
        while True:
            while running and running[0] <= t:
                heapq.heappop(running)
            limits = timeline.limits_at(t)
            later = timeline.next_change_after(t)
            cap = limits.max_active
            if cap is not None and len(running) + timeline.neighbour_slots_at(t) >= cap:
                t = min(running[0] if running else math.inf, later)
            else:
                full = [
                    (math.floor(t / seconds + 1e-9) + 1) * seconds
                    for seconds, limit in (
                        (1.0, limits.create_per_second),
                        (60.0, limits.create_per_minute),
                    )
                    if limit is not None
                    and counts[seconds].get(math.floor(t / seconds + 1e-9), 0) >= limit
                ]
                if not full:
                    break
                t = min(max(full), later)
            if math.isinf(t):
                raise ValueError("the key never has room again: the scenario cannot finish")
        for seconds, count in counts.items():  # the fake counts even without a limit
            slot = math.floor(t / seconds + 1e-9)
            count[slot] = count.get(slot, 0) + 1
        heapq.heappush(running, t + duration)
        end = max(end, t + duration)
    return end


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
