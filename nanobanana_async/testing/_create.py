"""``createTask``: idempotency, validation, credits, the active-task cap, and task plans.

A create reusing an ``X-Request-ID`` gets its task back (or 409 for another body); a new
task's plan (how long it runs, whether it fails) is drawn when it is created.

Authentication and the rate windows are checked before (see `_routing`).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Mapping
from typing import Any, cast

from ._fetch import loopback_images
from ._quota import KeyQuota
from ._reply import Reply, dumps
from ._stats import StatsRecorder
from ._tasks import TaskTable
from ._validation import validate_create

__all__ = ["Creator", "DurationSpec", "FailSpec"]

DurationSpec = float | tuple[float, float] | Callable[[Mapping[str, Any]], float]
FailSpec = float | Callable[[Mapping[str, Any]], bool]


def _duration_sampler(
    spec: DurationSpec, rng: random.Random
) -> Callable[[Mapping[str, Any]], float]:
    if callable(spec):
        return spec
    if isinstance(spec, tuple):
        low, high = (float(value) for value in spec)
        if not 0 <= low <= high:
            raise ValueError("duration=(low, high) needs 0 <= low <= high")
        return lambda _body: rng.uniform(low, high)
    value = float(spec)
    if value < 0:
        raise ValueError("duration must be >= 0")
    return lambda _body: value


def _fail_decider(spec: FailSpec, rng: random.Random) -> Callable[[Mapping[str, Any]], bool]:
    if callable(spec):
        return spec
    rate = float(spec)
    if not 0 <= rate <= 1:
        raise ValueError("fail_rate must be in [0, 1]")
    return lambda _body: rng.random() < rate


class Creator:
    """Answers admitted ``createTask`` requests and plans the tasks they create.

    Args:
        tasks: Where new tasks are stored.
        quota: The key's active-task count and cap.
        recorder: The counters to feed.
        time_scale: Seconds of the clock per provider second (durations are drawn in
            provider seconds).
        duration: See `FakeNanoBanana`.
        fail_rate: See `FakeNanoBanana`.
        credits: Creates left before 402; ``None`` = unlimited.
        seed: Seeds the draws of durations and failures.

    Raises:
        ValueError: For an impossible ``duration`` or ``fail_rate``.
    """

    __slots__ = (
        "_draw_duration",
        "_draw_failure",
        "_quota",
        "_recorder",
        "_rng",
        "_tasks",
        "_time_scale",
        "credits",
    )

    def __init__(
        self,
        *,
        tasks: TaskTable,
        quota: KeyQuota,
        recorder: StatsRecorder,
        time_scale: float,
        duration: DurationSpec,
        fail_rate: FailSpec,
        credits: int | None,
        seed: int,
    ) -> None:
        self._tasks = tasks
        self._quota = quota
        self._recorder = recorder
        self._time_scale = time_scale
        self._rng = random.Random(f"{seed}/tasks")  # noqa: S311 - reproducible, not secret
        self._draw_duration = _duration_sampler(duration, self._rng)
        self._draw_failure = _fail_decider(fail_rate, self._rng)
        self.credits = credits

    def create(self, now: float, request_id: str | None, body: bytes) -> tuple[Reply, str | None]:
        """Answer a create admitted at ``now``; return the reply and the task concerned."""
        try:
            payload: object = json.loads(body)
        except ValueError:
            return Reply.envelope(400, "Invalid JSON body"), None
        request_id = (request_id or "").strip() or None
        tasks = self._tasks
        if request_id and request_id in tasks.by_request_id:
            return self._replay(tasks.by_request_id[request_id], payload)
        problem = validate_create(payload)
        if problem:
            return Reply.envelope(*problem), None
        if self.credits is not None and self.credits <= 0:
            return Reply.envelope(402, "Insufficient credits"), None
        active = self._quota.key_active(now)  # other consumers' tasks count too
        limit = self._quota.limits.max_active
        if limit is not None and active >= limit:
            self._recorder.count("active_limited")
            data = {"limit": limit, "active": active}
            return Reply.envelope(409, "Active task limit exceeded", data), None
        task_id = self._new_task(now, request_id, cast("dict[str, Any]", payload))
        return Reply.envelope(200, "success", {"taskId": task_id}), task_id

    def _replay(self, index: int, payload: object) -> tuple[Reply, str | None]:
        task_id = self._tasks.task_id(index)
        if json.loads(self._tasks.params[index]) != payload:
            self._recorder.count("conflicts")
            msg = "Request conflict: X-Request-ID was already used for a different request"
            return Reply.envelope(409, msg, {"taskId": task_id}), task_id
        self._recorder.count("idempotent_replays")
        return Reply.envelope(200, "success", {"taskId": task_id}), task_id

    def _new_task(self, now: float, request_id: str | None, payload: dict[str, Any]) -> str:
        duration = float(self._draw_duration(payload))
        if not duration >= 0:
            raise ValueError(f"the duration callable returned {duration}, not a number >= 0")
        fail_index = -1
        complete_time_missing = False
        if self._draw_failure(payload):
            fail_index = self._rng.randrange(self._tasks.drawn_fail_codes)
            complete_time_missing = self._rng.random() < 0.5
        param = dumps(payload)
        if param in self._tasks.params_seen:
            self._recorder.count("duplicates")
        duration *= self._time_scale
        index = self._tasks.add(
            request_id=request_id,
            param=param,
            model=payload["model"],
            output_format=payload["input"].get("output_format") or "png",
            created_at=now,
            duration=duration,
            fail_index=fail_index,
            complete_time_missing=complete_time_missing,
        )
        if loopback_images(payload):
            self._tasks.image_checks.append(index)
        if self.credits is not None:
            self.credits -= 1
        self._recorder.count("tasks_created")
        self._quota.start(now + duration)
        return self._tasks.task_id(index)
