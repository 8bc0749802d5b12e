"""What the fake saw: counters, the highest activity, and a log of the last requests."""

from __future__ import annotations

from collections import deque
from typing import NamedTuple

import attrs

from ._faults import FaultKind

__all__ = ["LOG_SIZE", "FakeStats", "RequestRecord", "StatsRecorder"]

LOG_SIZE = 256
"""How many recent requests `FakeNanoBanana.recent_requests` keeps."""

_STATUS_COUNTERS = {
    400: "invalid",
    401: "unauthorized",
    402: "insufficient_credits",
    404: "not_found",
    422: "invalid",
}


class RequestRecord(NamedTuple):
    """One request the fake has seen (see `FakeNanoBanana.recent_requests`).

    Attributes:
        at: Seconds since the fake started, on its clock.
        endpoint: ``"create"``, ``"query"``, ``"result"`` or ``"other"``.
        status: The HTTP status answered, or ``None`` if the connection was dropped.
        fault: The fault injected (``"ok"`` for none).
        task_id: The task concerned, if any.
    """

    at: float
    endpoint: str
    status: int | None
    fault: FaultKind
    task_id: str | None


@attrs.frozen(kw_only=True)
class FakeStats:
    """A snapshot of what the fake has seen, for assertions in tests and benchmarks.

    Attributes:
        create_requests: ``createTask`` requests received (all outcomes, faults included).
        query_requests: ``recordInfo`` requests received.
        result_requests: Result-file downloads received.
        other_requests: Requests to any other path.
        tasks_created: Tasks created (each charged one credit).
        idempotent_replays: Creates answered with an existing task because their
            ``X-Request-ID`` was seen before (charged nothing).
        duplicates: Tasks created with the same body as an earlier task, without reusing its
            ``X-Request-ID`` (the client paid twice for one request).
        conflicts: Creates refused with 409 because their ``X-Request-ID`` belongs to a task
            with a different body.
        active_limited: Creates refused with 409 because the active-task limit was reached.
        rate_limited: Requests refused with HTTP 429 (both endpoints).
        rate_limited_create: Of those, ``createTask`` requests.
        rate_limited_query: Of those, ``recordInfo`` requests.
        unauthorized: Requests refused with 401.
        insufficient_credits: Creates refused with 402.
        not_found: 404 answers (unknown task, result file or path).
        invalid: 400 and 422 answers.
        faults: Faults injected (scripted or drawn).
        images_fetched: Input images fetched from loopback ``image_urls`` (see
            `FakeNanoBanana.fetch_images`).
        images_refused: Of those, images that could not be fetched or were not images (their
            task fails).
        active: Tasks not yet finished, now (the client's: neighbours' slots are apart).
        max_active: The highest number of unfinished tasks at any moment.
        neighbour_slots: Slots of the active-task cap held by other consumers of the key now
            (see `FakeNanoBanana.neighbour`).
        authorization_sent_to_result_host: Whether any request for a result file carried an
            ``Authorization`` header (the API key must not leave for the result host).
    """

    create_requests: int
    query_requests: int
    result_requests: int
    other_requests: int
    tasks_created: int
    idempotent_replays: int
    duplicates: int
    conflicts: int
    active_limited: int
    rate_limited: int
    rate_limited_create: int
    rate_limited_query: int
    unauthorized: int
    insufficient_credits: int
    not_found: int
    invalid: int
    faults: int
    images_fetched: int
    images_refused: int
    active: int
    max_active: int
    neighbour_slots: int
    authorization_sent_to_result_host: bool


COUNTERS = tuple(
    field.name
    for field in attrs.fields(FakeStats)
    if field.name
    not in {"active", "max_active", "neighbour_slots", "authorization_sent_to_result_host"}
)
"""The fields of `FakeStats` that only ever grow (until `StatsRecorder.reset`)."""


class StatsRecorder:
    """The fake's running counters, turned into a `FakeStats` on demand."""

    __slots__ = ("authorization_to_result_host", "counts", "log", "max_active")

    def __init__(self) -> None:
        self.counts = dict.fromkeys(COUNTERS, 0)
        self.max_active = 0
        self.authorization_to_result_host = False
        self.log: deque[RequestRecord] = deque(maxlen=LOG_SIZE)

    def reset(self, active: int) -> None:
        """Zero the counters and the log; ``max_active`` restarts from ``active``."""
        self.counts = dict.fromkeys(COUNTERS, 0)
        self.max_active = active
        self.authorization_to_result_host = False
        self.log.clear()

    def count(self, name: str) -> None:
        """Add one to the counter ``name``."""
        self.counts[name] += 1

    def saw_active(self, active: int) -> None:
        """Note that ``active`` tasks run at once now."""
        self.max_active = max(self.max_active, active)

    def answered(self, record: RequestRecord, status: int) -> None:
        """Count the HTTP ``status`` answered where it has a counter, and log the request.

        ``status`` is the reply's even when the connection was dropped after the work (the
        record then says ``None``); a refused connection has status 0 and counts nothing.
        """
        name = _STATUS_COUNTERS.get(status)
        if name:
            self.counts[name] += 1
        self.log.append(record)

    def snapshot(self, active: int, neighbour_slots: int) -> FakeStats:
        """The counters now, with ``active`` tasks unfinished and ``neighbour_slots`` held."""
        return FakeStats(
            **self.counts,
            active=active,
            max_active=self.max_active,
            neighbour_slots=neighbour_slots,
            authorization_sent_to_result_host=self.authorization_to_result_host,
        )
