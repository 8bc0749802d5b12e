"""`BatchRunner`: many requests through one client, as fast as the key's limits allow.

The runner reads requests lazily, one per free active-task slot, so memory grows with the work
in flight, not with the batch. Each job is a small task in one task group: hold a slot, create
(the client paces creates and learns the limits), then poll on a schedule drawn from the task
durations seen so far and spread within the key's query budget; the slot is released the moment
the task is seen finished, and the next request is read at once.

A job that fails becomes an outcome with ``error``; the batch goes on. A 401 or 402 stops all
further creates: every job not yet created gets an outcome with that error, and the tasks
already running are still followed to their end (they are paid for).
"""

from __future__ import annotations

import contextlib
import inspect
import math
import os
import random
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Callable, Iterable
from typing import TYPE_CHECKING, Any, cast

import anyio
import attrs
from anyio.streams.memory import MemoryObjectSendStream

from ._errors import (
    APIStatusError,
    AuthenticationError,
    BadRequestError,
    DecodeError,
    InsufficientCreditsError,
    InvalidRequestError,
    NanoBananaError,
    TaskFailedError,
    TaskNotFoundError,
    UnprocessableEntityError,
    WaitTimeoutError,
)
from ._journal import Journal, JournalRow, fingerprint
from ._models import ImageToImage, Request, Task, TaskResult, TaskState, TextToImage
from ._wire import request_body

if TYPE_CHECKING:
    from ._client import AsyncNanoBanana

__all__ = ["BatchOutcome", "BatchRunner", "BatchStatistics", "ProgressHook"]

_JOURNAL_CHUNK = 512
_POLL_BUDGET_SHARE = 0.9
_MAX_UNREADABLE = 3


@attrs.frozen(kw_only=True)
class BatchOutcome:
    """What became of one request of a batch.

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
    request: Any
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
        running: Jobs holding a slot now (being created or running on the provider).
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

    @property
    def done(self) -> int:
        """Outcomes so far, whatever they were."""
        return self.succeeded + self.failed


ProgressHook = Callable[[BatchStatistics], object]
"""Called with fresh statistics after every outcome; it may be sync or async."""


class _Counters:
    __slots__ = (
        "conflicts0",
        "created",
        "failed",
        "finished_tasks",
        "polls",
        "rate_limited0",
        "resumed",
        "running",
        "started",
        "submitted",
        "succeeded",
        "weights",
    )

    def __init__(self) -> None:
        self.submitted = self.created = self.running = 0
        self.succeeded = self.failed = self.resumed = 0
        self.polls = self.finished_tasks = 0
        self.weights = 0.0
        self.conflicts0 = self.rate_limited0 = 0
        self.started = 0.0


class BatchRunner:
    """Runs many requests through one client, within its key's limits, in input order.

    Nothing needs to be configured: the runner learns the active-task limit from 409s and the
    rate limits from 429s, through the client it is given (limits live with the client, so
    other callers of the same client share them).

    Args:
        client: The client to use (its API key, connection pool and limits).
        max_active: A known active-task cap for the key; seeds the client's limits.
        tier: The key's tier (e.g. ``"basic"``); seeds the client's limits from the table.
        journal: A file path for an SQLite journal: re-running the same batch with it skips
            finished jobs and resumes polling created ones, never creating a task twice.
        task_timeout: The most seconds to follow one task after creating it.
        on_progress: Called with `BatchStatistics` after every outcome (sync or async).

    Raises:
        InvalidRequestError: ``tier`` or ``max_active`` is not valid.
    """

    def __init__(
        self,
        client: AsyncNanoBanana,
        *,
        max_active: int | None = None,
        tier: str | None = None,
        journal: str | os.PathLike[str] | None = None,
        task_timeout: float = 3600.0,
        on_progress: ProgressHook | None = None,
    ) -> None:
        try:
            client.limits.seed(tier=tier, max_active=max_active)
        except ValueError as exc:
            raise InvalidRequestError("tier" if tier else "max_active", str(exc)) from None
        if not task_timeout > 0:
            raise InvalidRequestError("task_timeout", "must be more than 0 seconds")
        self._client = client
        self._journal_path = journal
        self._task_timeout = task_timeout
        self._on_progress = on_progress
        self._rng = random.Random()  # noqa: S311 - jitter, not cryptography
        self._counters = _Counters()
        self._stop: APIStatusError | None = None
        self._running = False
        self._progress_lock: anyio.Lock | None = None

    # -- public ------------------------------------------------------------------------------

    def statistics(self) -> BatchStatistics:
        """The counts of the current (or last) run and the limits learned so far."""
        c = self._counters
        limits = self._client.limits.snapshot()
        return BatchStatistics(
            submitted=c.submitted,
            created=c.created,
            running=c.running,
            succeeded=c.succeeded,
            failed=c.failed,
            resumed=c.resumed,
            polls=c.polls,
            polls_per_task=c.polls / c.finished_tasks if c.finished_tasks else 0.0,
            conflicts=limits.conflicts - c.conflicts0,
            rate_limited=limits.rate_limited - c.rate_limited0,
            max_active=limits.max_active,
            max_active_known=limits.max_active_known,
            create_rate=limits.create_rate,
            query_rate=limits.query_rate,
            elapsed=anyio.current_time() - c.started if c.started else 0.0,
        )

    async def run(self, requests: Iterable[Request] | AsyncIterable[Request]) -> list[BatchOutcome]:
        """Run a whole batch and return one outcome per request, in input order.

        Args:
            requests: `TextToImage` / `ImageToImage` requests, from any iterable or async
                iterable; read lazily.

        Returns:
            The outcomes, ``outcomes[i]`` for ``requests[i]``.
        """
        found: dict[int, BatchOutcome] = {}
        async with self.stream(requests) as results:
            async for outcome in results:
                found[outcome.index] = outcome
        return [found[i] for i in range(len(found))]

    @contextlib.asynccontextmanager
    async def stream(
        self, requests: Iterable[Request] | AsyncIterable[Request]
    ) -> AsyncGenerator[AsyncIterator[BatchOutcome], None]:
        """Run a batch, yielding outcomes as they complete.

        Leaving the ``async with`` block early cancels the rest of the batch: nothing keeps
        running, and the journal (if any) holds every task id created so far.

        Args:
            requests: `TextToImage` / `ImageToImage` requests, from any iterable or async
                iterable; read lazily.

        Yields:
            An async iterator of `BatchOutcome`, in completion order.
        """
        if self._running:
            raise RuntimeError("this BatchRunner is already running a batch")
        self._running = True
        self._stop = None
        self._counters = _Counters()
        self._counters.started = anyio.current_time()
        snapshot = self._client.limits.snapshot()
        self._counters.conflicts0 = snapshot.conflicts
        self._counters.rate_limited0 = snapshot.rate_limited
        try:
            # Opened here, so that a bad journal raises as itself, not inside a task group.
            journal = None if self._journal_path is None else await Journal.open(self._journal_path)
            try:
                send, receive = anyio.create_memory_object_stream[BatchOutcome](64)
                async with anyio.create_task_group() as group, receive:
                    group.start_soon(self._drive, requests, journal, send)
                    try:
                        yield receive
                    finally:
                        group.cancel_scope.cancel()
            finally:
                if journal is not None:
                    await journal.aclose()
        finally:
            self._running = False

    # -- the batch ---------------------------------------------------------------------------

    async def _drive(
        self,
        requests: Iterable[Request] | AsyncIterable[Request],
        journal: Journal | None,
        send: MemoryObjectSendStream[BatchOutcome],
    ) -> None:
        async with send:
            try:
                async with anyio.create_task_group() as background:
                    if journal is not None:
                        background.start_soon(journal.run_flusher)
                    async with anyio.create_task_group() as jobs:
                        await self._feed(requests, journal, jobs, send)
                    background.cancel_scope.cancel()
            finally:
                if journal is not None:
                    # Every outcome is on disk before the consumer sees the stream end.
                    with anyio.CancelScope(shield=True):
                        await journal.flush()

    async def _feed(
        self,
        requests: Iterable[Request] | AsyncIterable[Request],
        journal: Journal | None,
        jobs: anyio.abc.TaskGroup,
        send: MemoryObjectSendStream[BatchOutcome],
    ) -> None:
        rows = _JournalCursor(journal)
        index = -1
        async with contextlib.aclosing(_aiter(requests)) as items:
            async for request in items:
                index += 1
                await self._admit(index, request, rows, journal, jobs, send)

    async def _admit(
        self,
        index: int,
        request: object,
        rows: _JournalCursor,
        journal: Journal | None,
        jobs: anyio.abc.TaskGroup,
        send: MemoryObjectSendStream[BatchOutcome],
    ) -> None:
        """Take one request: answer it from the journal, or start its job once a slot frees."""
        active = self._client.limits.active
        self._counters.submitted += 1
        if not isinstance(request, (TextToImage, ImageToImage)):
            error = InvalidRequestError(
                "request", f"must be a TextToImage or ImageToImage, not {type(request).__name__}"
            )
            await self._emit(send, BatchOutcome(index=index, request=request, error=error))
            return
        job_fingerprint = fingerprint(request_body(request))
        row = await rows.get(index)
        if row is not None and row.fingerprint != job_fingerprint:
            error = InvalidRequestError(
                "journal",
                f"job {index} differs from the request journaled at that place; "
                "use a new journal for a different batch",
            )
            await self._emit(send, BatchOutcome(index=index, request=request, error=error))
            return
        if row is not None and row.finished:
            await self._emit(send, _resumed_outcome(row, request))
            return
        # With a journal, the id is derived from it, so a rerun sends the same one.
        request_id = (
            journal.request_id(index, job_fingerprint) if journal is not None else str(uuid.uuid4())
        )
        task_id = row.task_id if row is not None else None
        if task_id is None and self._stop is not None:
            await self._emit(send, self._stopped(index, request))
            return
        holder = object()
        await active.acquire(holder)
        if task_id is None and self._stop is not None:
            active.release(holder)
            await self._emit(send, self._stopped(index, request))
            return
        self._counters.running += 1
        jobs.start_soon(
            self._job,
            _Job(index, request, job_fingerprint, request_id, task_id),
            holder,
            journal,
            send,
        )

    async def _job(
        self,
        job: _Job,
        holder: object,
        journal: Journal | None,
        send: MemoryObjectSendStream[BatchOutcome],
    ) -> None:
        client = self._client
        try:
            outcome = await self._create_and_follow(job, holder, journal)
        finally:
            client.limits.active.release(holder)
            self._counters.running -= 1
        await self._emit(send, outcome)

    async def _create_and_follow(
        self, job: _Job, holder: object, journal: Journal | None
    ) -> BatchOutcome:
        client = self._client
        created_at: float | None = None
        if job.task_id is None:
            try:
                job.task_id = await client._create(job.request, job.request_id, None, holder)
            except NanoBananaError as exc:
                self._on_create_error(job, exc, journal)
                return BatchOutcome(
                    index=job.index, request=job.request, error=exc, request_id=job.request_id
                )
            created_at = anyio.current_time()
            self._counters.created += 1
            if journal is not None:
                journal.record(
                    job.index,
                    job.fingerprint,
                    job.request_id,
                    status="created",
                    task_id=job.task_id,
                )
        else:
            client.limits.active.mark_running(holder)
        return await self._follow(job, created_at, journal)

    async def _follow(
        self, job: _Job, created_at: float | None, journal: Journal | None
    ) -> BatchOutcome:
        """Poll a created task until it ends (or the task timeout passes)."""
        client = self._client
        assert job.task_id is not None
        task_id = job.task_id
        started = anyio.current_time()
        deadline = started + self._task_timeout
        polls = 0
        unreadable = 0
        slot = _PollSlot()
        last: Task | None = None
        error: NanoBananaError | None = None
        try:
            with anyio.move_on_after(self._task_timeout):
                while True:
                    if polls or created_at is not None:
                        await anyio.sleep(self._next_poll(created_at, started, polls, last, slot))
                    try:
                        task = await client._get_task(task_id, deadline=deadline)
                    except (AuthenticationError, TaskNotFoundError, BadRequestError) as exc:
                        error = exc
                        break
                    except DecodeError as exc:
                        # An answer we cannot read will most likely read the same next time.
                        unreadable += 1
                        if unreadable >= _MAX_UNREADABLE:
                            error = exc
                            break
                        polls += 1
                        continue
                    except NanoBananaError:
                        # The task exists and is paid for: a flaky poll is no reason to drop it.
                        polls += 1
                        continue
                    finally:
                        self._counters.polls += 1
                    polls += 1
                    last = task
                    if task.is_finished:
                        self._counters.finished_tasks += 1
                        client._observe_duration(task, created_at)
                        break
        finally:
            self._counters.weights -= slot.weight
        outcome = BatchOutcome(
            index=job.index, request=job.request, task_id=task_id, request_id=job.request_id
        )
        if error is not None:
            return attrs.evolve(outcome, error=error)
        if last is None or not last.is_finished:
            return attrs.evolve(outcome, error=WaitTimeoutError(task_id, self._task_timeout, last))
        try:
            result = client._result(last)
        except TaskFailedError as exc:
            self._journal_end(job, journal, "failed", exc)
            return attrs.evolve(outcome, error=exc)
        except NanoBananaError as exc:
            return attrs.evolve(outcome, error=exc)
        self._journal_end(job, journal, "succeeded", urls=result.urls)
        return attrs.evolve(outcome, result=result)

    def _next_poll(
        self,
        created_at: float | None,
        started: float,
        polls: int,
        last: Task | None,
        slot: _PollSlot,
    ) -> float:
        """Seconds until the next poll of a task: its likely end, within the query budget."""
        client = self._client
        now = anyio.current_time()
        if created_at is not None:
            age = now - created_at
        elif last is not None and last.create_time is not None:
            age = max(0.0, _wall_age(last))
        else:
            age = now - started
        delay = client.durations.next_delay(age, polls, client.poll_policy, self._rng)
        if not polls:
            return delay  # the first sleep: until the fastest tasks tend to finish
        remaining = client.durations.expected_remaining(age)
        weight = 1.0 / math.sqrt(max(remaining or 1.0, client.poll_policy.min_interval))
        c = self._counters
        c.weights += weight - slot.weight
        slot.weight = weight
        rate = client.limits.query.rate
        if rate:
            # Share the query budget among the tasks being polled now (the others sleep until
            # the fastest tasks tend to finish), each in proportion to the square root of its
            # chance to be done (1 / expected remaining time): the split that makes the
            # expected delay before a finished task is seen smallest for a given budget.
            share = max(c.weights, weight) / (rate * _POLL_BUDGET_SHARE)
            delay = max(delay, share / weight)
        return delay

    def _on_create_error(self, job: _Job, exc: NanoBananaError, journal: Journal | None) -> None:
        if isinstance(exc, (AuthenticationError, InsufficientCreditsError)) and self._stop is None:
            self._stop = exc
        if isinstance(exc, (BadRequestError, UnprocessableEntityError)):
            self._journal_end(job, journal, "rejected", exc)

    def _journal_end(
        self,
        job: _Job,
        journal: Journal | None,
        status: Any,
        exc: NanoBananaError | None = None,
        urls: tuple[str, ...] = (),
    ) -> None:
        if journal is None:
            return
        code: str | None = None
        if isinstance(exc, TaskFailedError):
            code = exc.fail_code
        elif isinstance(exc, APIStatusError):
            code = str(exc.code)
        journal.record(
            job.index,
            job.fingerprint,
            job.request_id,
            status=status,
            task_id=job.task_id,
            urls=urls,
            error_type=None if exc is None else type(exc).__name__,
            error_message=None if exc is None else str(exc),
            error_code=code,
        )

    def _stopped(self, index: int, request: Request) -> BatchOutcome:
        stop = self._stop
        assert stop is not None
        error = type(stop)(
            f"not created: the batch stopped creating after {stop.code} ({stop.message})",
            code=stop.code,
            http_status=stop.http_status,
            data=stop.data,
        )
        return BatchOutcome(index=index, request=request, error=error)

    async def _emit(
        self, send: MemoryObjectSendStream[BatchOutcome], outcome: BatchOutcome
    ) -> None:
        if outcome.resumed:
            self._counters.resumed += 1
        if outcome.ok:
            self._counters.succeeded += 1
        else:
            self._counters.failed += 1
        await send.send(outcome)
        if self._on_progress is not None:
            # One call at a time, so the hook sees the counts grow in order.
            if self._progress_lock is None:
                self._progress_lock = anyio.Lock()
            async with self._progress_lock:
                called = self._on_progress(self.statistics())
                if inspect.isawaitable(called):
                    await called


class _PollSlot:
    """One polled task's share of the query budget."""

    __slots__ = ("weight",)

    def __init__(self) -> None:
        self.weight = 0.0


@attrs.define
class _Job:
    index: int
    request: Request
    fingerprint: str
    request_id: str
    task_id: str | None


class _JournalCursor:
    """Reads journal rows in index order, a chunk at a time, beside the lazy input."""

    def __init__(self, journal: Journal | None) -> None:
        self._journal = journal
        self._rows: dict[int, JournalRow] = {}
        self._next = 0
        self._exhausted = journal is None

    async def get(self, index: int) -> JournalRow | None:
        """The row of job ``index``; indexes must be asked for in increasing order."""
        if self._journal is None:
            return None
        # Past the chunk in hand: read on (the loop ends once the chunk covers ``index``, or
        # the journal has no more rows).
        while not self._exhausted and index >= self._next:
            rows = await self._journal.rows(self._next, _JOURNAL_CHUNK)
            self._rows = {row.index: row for row in rows}
            if len(rows) < _JOURNAL_CHUNK:
                self._exhausted = True
            else:
                self._next = rows[-1].index + 1
        return self._rows.pop(index, None)


def _resumed_outcome(row: JournalRow, request: Request) -> BatchOutcome:
    outcome = BatchOutcome(
        index=row.index,
        request=request,
        task_id=row.task_id,
        request_id=row.request_id,
        resumed=True,
    )
    if row.status == "succeeded" and row.task_id is not None:
        task = Task(
            task_id=row.task_id, state=TaskState.SUCCESS, raw_state="success", urls=row.urls
        )
        return attrs.evolve(
            outcome, result=TaskResult(task_id=row.task_id, urls=row.urls, task=task)
        )
    if row.status == "failed" and row.task_id is not None:
        task = Task(
            task_id=row.task_id,
            state=TaskState.FAIL,
            raw_state="fail",
            fail_code=row.error_code,
            fail_message=row.error_message,
        )
        return attrs.evolve(outcome, error=TaskFailedError(task))
    code = int(row.error_code) if row.error_code and row.error_code.isdigit() else 400
    cls = UnprocessableEntityError if code == 422 else BadRequestError
    return attrs.evolve(
        outcome,
        error=cls(row.error_message or "rejected", code=code, http_status=code),
    )


def _wall_age(task: Task) -> float:
    assert task.create_time is not None
    return time.time() - task.create_time.timestamp()


async def _aiter(
    requests: Iterable[Request] | AsyncIterable[Request],
) -> AsyncGenerator[object, None]:
    if isinstance(requests, AsyncIterable):
        async for request in cast("AsyncIterable[object]", requests):
            yield request
    else:
        for request in cast("Iterable[object]", requests):
            yield request
            await anyio.lowlevel.checkpoint()
