"""What a batch produces: one `BatchOutcome` per request, and `BatchStatistics` as it runs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

import attrs

from ._errors import NanoBananaError
from ._models import ImageToImage, TaskResult, TextToImage

__all__ = ["BatchCounters", "BatchOutcome", "BatchStatistics", "ProgressHook", "RequestT"]

RequestT = TypeVar("RequestT", bound="TextToImage | ImageToImage")
"""The type of a batch's requests, carried by its outcomes."""


@attrs.frozen(kw_only=True)
class BatchOutcome(Generic[RequestT]):
    """What became of one request of a batch: ``BatchOutcome[TextToImage]`` and so on.

    Attributes:
        index: The request's position in the input (0-based).
        request: The request as given.
        task_id: The provider's task id, if a task was created.
        result: The result, if the task succeeded.
        error: Why the job has no result, if it has none.
        request_id: The ``X-Request-ID`` the create carried.
        resumed: True when the outcome was read from the journal, with no request sent.
    """

    index: int
    request: RequestT
    task_id: str | None = None
    result: TaskResult | None = None
    error: NanoBananaError | None = None
    request_id: str | None = None
    resumed: bool = False

    @property
    def ok(self) -> bool:
        """Whether the job produced a result."""
        return self.result is not None


@attrs.frozen(kw_only=True)
class BatchStatistics:
    """A runner's counts at one moment, and what it has learned of the key's limits.

    Attributes:
        submitted: Requests read from the input.
        created: Tasks created by this run.
        running: Jobs holding an active-task slot now (being created or on the provider).
        succeeded: Outcomes with a result.
        failed: Outcomes with an error.
        resumed: Outcomes taken from the journal without any request.
        polls: ``recordInfo`` calls made for this run's jobs.
        polls_per_task: ``polls`` divided by the tasks seen finished.
        conflicts: 409 answers seen by the client since the run started.
        rate_limited: 429 answers seen by the client since the run started.
        max_active: The active-task cap in use now.
        max_active_known: Whether that cap is learned (or given) rather than still growing.
        create_rate: Creates per second the client allows now, or None if unlimited.
        query_rate: Polls per second the client allows now, or None if unlimited.
        elapsed: Seconds since the run started.
        total: How many requests the batch holds, when known (a sized input, or the
            ``total=`` given to `BatchRunner.run`); None for a lazy input of unknown length.
        on_provider: Jobs whose task is created and running on the provider now.
        waiting: Requests read whose task is not created yet: waiting for a slot, the create
            pacing, a 409 or a retry. ``done + on_provider + waiting`` plus the requests not
            read yet make ``total``.
        max_active_neighbours: Slots of the key's cap left to other consumers of the key
            (0 unless a 409 showed their tasks): the cap is tightened by neighbours, and
            probes look for their room to come back.
        max_active_probed_ago: Seconds since the cap was last probed upward, or None.
        create_probed_ago: Seconds since the create rate was last probed upward, or None.
        query_probed_ago: Seconds since the poll rate was last probed upward, or None.
    """

    submitted: int
    created: int
    running: int
    succeeded: int
    failed: int
    resumed: int
    polls: int
    polls_per_task: float
    conflicts: int
    rate_limited: int
    max_active: int
    max_active_known: bool
    create_rate: float | None
    query_rate: float | None
    elapsed: float
    total: int | None = None
    on_provider: int = 0
    waiting: int = 0
    max_active_neighbours: int = 0
    max_active_probed_ago: float | None = None
    create_probed_ago: float | None = None
    query_probed_ago: float | None = None

    @property
    def done(self) -> int:
        """Outcomes so far, whatever they were."""
        return self.succeeded + self.failed


ProgressHook = Callable[[BatchStatistics], object]
"""Called with fresh statistics after every outcome; it may be sync or async."""


class BatchCounters:
    """A running batch's counts, from which `BatchStatistics` are made (internal)."""

    __slots__ = (
        "conflicts0",
        "created",
        "failed",
        "finished_tasks",
        "following",
        "polls",
        "rate_limited0",
        "resumed",
        "running",
        "started",
        "submitted",
        "succeeded",
        "total",
    )

    def __init__(self) -> None:
        self.submitted = self.created = self.running = self.following = 0
        self.total: int | None = None
        self.succeeded = self.failed = self.resumed = 0
        self.polls = self.finished_tasks = 0
        self.conflicts0 = self.rate_limited0 = 0
        self.started: float | None = None  # the clock may read 0 (a virtual one does)
