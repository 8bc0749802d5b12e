"""`BatchRunner`: many requests through one client, as fast as the key's limits allow.

The runner reads requests lazily, one per free active-task slot, so memory grows with the work
in flight, not with the batch. Each job is a small task in one task group: hold a slot, create
through the client's engine (which paces creates and learns the limits), then follow the task
with the same poll loop as ``wait_for_result``, its polls sharing the key's query budget; the
slot is released the moment the task is seen finished, and the next request is read at once.

A job that fails becomes an outcome with ``error``; the batch goes on. A 401 or 402 stops all
further creates, including those already waiting on pacing, a 429 or a 409: every job not yet
created gets an outcome with that error, and the tasks already running are still followed to
their end (they are paid for).
"""

from __future__ import annotations

import contextlib
import inspect
import os
import uuid
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Iterable, Sized
from typing import TYPE_CHECKING, Any, TypeAlias

import anyio
import attrs
from anyio.streams.memory import MemoryObjectSendStream

from ._batch_input import JournalCursor, read_requests
from ._errors import (
    APIStatusError,
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    InsufficientCreditsError,
    InvalidRequestError,
    JournalError,
    NanoBananaError,
    TaskFailedError,
    UnprocessableEntityError,
    UsageError,
)
from ._journal import Journal, Status, error_columns, fingerprint, outcome_from_row
from ._outcomes import BatchCounters, BatchOutcome, BatchStatistics, ProgressHook, RequestT
from ._polling import result_of
from ._telemetry import NULL_SCOPE, Scope
from ._wire import CreateBody
from .limits._queue import PRIORITIES

if TYPE_CHECKING:
    from ._client import AsyncNanoBanana
    from ._models import ImageRequest
    from .limits import Priority, TierName

__all__ = ["BatchRunner"]

_Outcome: TypeAlias = "BatchOutcome[Any]"


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
        priority: The jobs' class: ``"background"`` (the default) lets interactive calls of
            the key (``generate``, ``create_task``: on this client, or in another process
            through `RedisLimits`) take a free slot and the create pacer first.
        headroom: Slots of the key's active-task cap the batch leaves free for others it
            cannot see (a web app on the same key with limits of its own): at most the cap
            less ``headroom`` of the batch's tasks run at once. Without it, a background batch
            still leaves one slot free for a while after a 409 showed another consumer.

    Raises:
        ConfigurationError: ``tier``, ``max_active``, ``task_timeout``, ``priority`` or
            ``headroom`` is not valid.
    """

    def __init__(
        self,
        client: AsyncNanoBanana,
        *,
        max_active: int | None = None,
        tier: TierName | None = None,
        journal: str | os.PathLike[str] | None = None,
        task_timeout: float = 3600.0,
        on_progress: ProgressHook | None = None,
        priority: Priority = "background",
        headroom: int = 0,
    ) -> None:
        if not task_timeout > 0:
            raise ConfigurationError("task_timeout", "must be more than 0 seconds")
        if priority not in PRIORITIES:
            raise ConfigurationError(
                "priority", f"must be 'interactive' or 'background', got {priority!r}"
            )
        if isinstance(headroom, bool) or not isinstance(headroom, int) or headroom < 0:  # pyright: ignore[reportUnnecessaryIsInstance]
            raise ConfigurationError("headroom", f"must be a whole number >= 0, got {headroom!r}")
        client.limits.seed(tier=tier, max_active=max_active)
        self._priority: Priority = priority
        self._headroom = headroom
        self._client = client
        self._engine = client.engine
        self._journal_path = journal
        self._task_timeout = task_timeout
        self._on_progress = on_progress
        self._counters = BatchCounters()
        self._stop: APIStatusError | None = None
        self._running = False
        self._progress_lock: anyio.Lock | None = None
        self._trace: Scope = NULL_SCOPE

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
            elapsed=anyio.current_time() - c.started if c.started is not None else 0.0,
            total=c.total,
            on_provider=c.following,
            # Read but neither finished nor on the provider: so done + on_provider + waiting
            # + the requests not read yet make the total.
            waiting=max(c.submitted - c.succeeded - c.failed - c.following, 0),
            max_active_neighbours=limits.max_active_neighbours,
            max_active_probed_ago=limits.max_active_probed_ago,
            create_probed_ago=limits.create_probed_ago,
            query_probed_ago=limits.query_probed_ago,
        )

    async def run(
        self,
        requests: Iterable[RequestT] | AsyncIterable[RequestT],
        *,
        total: int | None = None,
    ) -> list[BatchOutcome[RequestT]]:
        """Run a whole batch and return one outcome per request, in input order.

        Args:
            requests: `TextToImage` / `ImageToImage` requests, from any iterable or async
                iterable; read lazily.
            total: How many requests there are, for `BatchStatistics.total` when
                ``requests`` has no length (a generator); a sized input is counted.

        Returns:
            The outcomes, ``outcomes[i]`` for ``requests[i]``.
        """
        found: dict[int, BatchOutcome[RequestT]] = {}
        async with self.stream(requests, total=total) as results:
            async for outcome in results:
                found[outcome.index] = outcome
        return [found[i] for i in range(len(found))]

    @contextlib.asynccontextmanager
    async def stream(
        self,
        requests: Iterable[RequestT] | AsyncIterable[RequestT],
        *,
        total: int | None = None,
    ) -> AsyncGenerator[AsyncIterator[BatchOutcome[RequestT]], None]:
        """Run a batch, yielding outcomes as they complete.

        Leaving the ``async with`` block early cancels the rest of the batch: nothing keeps
        running, and the journal (if any) holds every task id created so far.

        Args:
            requests: `TextToImage` / `ImageToImage` requests, from any iterable or async
                iterable; read lazily.
            total: How many requests there are, as for `run`.

        Yields:
            An async iterator of `BatchOutcome`, in completion order.

        Raises:
            UsageError: This runner is already running a batch.
            JournalError: The journal cannot be opened or is not a journal.
        """
        if self._running:
            raise UsageError("this BatchRunner is already running a batch")
        self._running = True
        self._stop = None
        self._counters = BatchCounters()
        self._counters.started = anyio.current_time()
        self._counters.total = (
            len(requests) if total is None and isinstance(requests, Sized) else total
        )
        snapshot = self._client.limits.snapshot()
        self._counters.conflicts0 = snapshot.conflicts
        self._counters.rate_limited0 = snapshot.rate_limited
        # The batch's span: its jobs' parent, whichever task runs them.
        self._trace = self._engine.telemetry.operation("batch", priority=self._priority)
        if self._counters.total is not None:
            self._trace.annotate("nanobanana.batch.total", self._counters.total)
        try:
            # Opened here, so that a bad journal raises as itself, not inside a task group.
            journal = None if self._journal_path is None else await Journal.open(self._journal_path)
            try:
                send, receive = anyio.create_memory_object_stream[_Outcome](64)
                async with anyio.create_task_group() as group, receive:
                    group.start_soon(self._drive, requests, journal, send)
                    try:
                        yield receive
                    finally:
                        group.cancel_scope.cancel()
            finally:
                if journal is not None:
                    await journal.aclose()
        except BaseException as exc:
            self._end_trace(exc)
            raise
        else:
            self._end_trace()
        finally:
            self._running = False

    def _end_trace(self, error: BaseException | None = None) -> None:
        """End the batch's span with its counts."""
        stats = self.statistics()
        for name in ("submitted", "created", "succeeded", "failed", "resumed", "polls"):
            self._trace.annotate(f"nanobanana.batch.{name}", getattr(stats, name))
        self._trace.annotate("nanobanana.batch.conflicts", stats.conflicts)
        self._trace.annotate("nanobanana.batch.rate_limited", stats.rate_limited)
        self._trace.end(error)
        self._trace = NULL_SCOPE

    # -- the batch ---------------------------------------------------------------------------

    async def _drive(
        self,
        requests: Iterable[Any] | AsyncIterable[Any],
        journal: Journal | None,
        send: MemoryObjectSendStream[_Outcome],
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
        requests: Iterable[Any] | AsyncIterable[Any],
        journal: Journal | None,
        jobs: anyio.abc.TaskGroup,
        send: MemoryObjectSendStream[_Outcome],
    ) -> None:
        rows = JournalCursor(journal)
        index = -1
        async with contextlib.aclosing(read_requests(requests)) as items:
            async for request in items:
                index += 1
                await self._admit(index, request, rows, journal, jobs, send)

    async def _admit(
        self,
        index: int,
        request: object,
        rows: JournalCursor,
        journal: Journal | None,
        jobs: anyio.abc.TaskGroup,
        send: MemoryObjectSendStream[_Outcome],
    ) -> None:
        """Take one request: answer it from the journal, or start its job once a slot frees."""
        active = self._client.limits.active
        self._counters.submitted += 1
        try:
            body = self._engine.body_for(request)
        except InvalidRequestError as exc:
            await self._emit(send, BatchOutcome(index=index, request=request, error=exc))
            return
        job_fingerprint = fingerprint(body.body)
        row = await rows.get(index)
        if row is not None and row.fingerprint != job_fingerprint:
            error = JournalError(
                f"request {index + 1} of the batch (job {index}) differs from the request "
                "journaled at that place; use a new journal for a different batch"
            )
            await self._emit(send, BatchOutcome(index=index, request=request, error=error))
            return
        if row is not None and row.finished:
            await self._emit(send, outcome_from_row(row, request))
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
        trace = self._engine.telemetry.operation(
            "batch.job", request=request, request_id=request_id, index=index, parent=self._trace
        )
        try:
            with self._engine.telemetry.slot_wait("before_create", self._priority, parent=trace):
                await active.acquire(holder, self._priority, self._headroom)
        except BaseException as exc:
            trace.end(exc)
            raise
        if task_id is None and self._stop is not None:
            active.release(holder)
            await self._emit(send, self._stopped(index, request), trace)
            return
        self._counters.running += 1
        jobs.start_soon(
            self._job,
            _Job(index, body, job_fingerprint, request_id, task_id, trace),
            holder,
            journal,
            send,
        )

    async def _job(
        self,
        job: _Job,
        holder: object,
        journal: Journal | None,
        send: MemoryObjectSendStream[_Outcome],
    ) -> None:
        try:
            with job.trace.current():  # ends the job's span if it is cancelled
                outcome = await self._create_and_follow(job, holder, journal)
        finally:
            self._engine.limits.active.release(holder)
            self._counters.running -= 1
        await self._emit(send, outcome, job.trace)

    async def _create_and_follow(
        self, job: _Job, holder: object, journal: Journal | None
    ) -> _Outcome:
        engine = self._engine
        outcome = BatchOutcome(index=job.index, request=job.request, request_id=job.request_id)
        if job.task_id is None:
            deadline = anyio.current_time() + self._task_timeout
            try:
                # Published within the create's deadline; the journal keeps the URLs, so a
                # rerun sends this very body again under the same request id.
                body = await engine.publish(
                    job.body,
                    deadline=deadline,
                    needed_for=self._task_timeout,
                    store=journal,
                    request_id=job.request_id,
                )
                job.task_id = await engine.caller.create(
                    body,
                    job.request_id,
                    deadline,
                    holder=holder,
                    stop=self._stop_error,
                    priority=self._priority,
                    headroom=self._headroom,
                )
            except NanoBananaError as exc:
                self._on_create_error(job, exc, journal)
                return attrs.evolve(outcome, error=exc)
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
            engine.limits.active.mark_running(holder)
        outcome = attrs.evolve(outcome, task_id=job.task_id)
        self._counters.following += 1
        try:
            task = await engine.follow(
                job.task_id,
                timeout=self._task_timeout,
                on_poll=self._polled,
                priority=self._priority,
            )
        except NanoBananaError as exc:
            return attrs.evolve(outcome, error=exc)
        finally:
            self._counters.following -= 1
        self._counters.finished_tasks += 1
        try:
            result = result_of(task)
        except TaskFailedError as exc:
            self._journal_end(job, journal, "failed", exc)
            return attrs.evolve(outcome, error=exc)
        except NanoBananaError as exc:
            return attrs.evolve(outcome, error=exc)
        self._journal_end(job, journal, "succeeded", urls=result.urls)
        return attrs.evolve(outcome, result=result)

    def _polled(self) -> None:
        self._counters.polls += 1

    def _stop_error(self) -> APIStatusError | None:
        """The error a create not yet sent gets once the batch has stopped creating."""
        stop = self._stop
        if stop is None:
            return None
        return type(stop)(
            f"not created: the batch stopped creating after {stop.code} ({stop.message})",
            code=stop.code,
            http_status=stop.http_status,
            data=stop.data,
        )

    def _on_create_error(self, job: _Job, exc: NanoBananaError, journal: Journal | None) -> None:
        if isinstance(exc, (AuthenticationError, InsufficientCreditsError)) and self._stop is None:
            self._stop = exc
        if isinstance(exc, (BadRequestError, UnprocessableEntityError)):
            self._journal_end(job, journal, "rejected", exc)

    def _journal_end(
        self,
        job: _Job,
        journal: Journal | None,
        status: Status,
        exc: NanoBananaError | None = None,
        urls: tuple[str, ...] = (),
    ) -> None:
        if journal is None:
            return
        journal.record(
            job.index,
            job.fingerprint,
            job.request_id,
            status=status,
            task_id=job.task_id,
            urls=urls,
            **error_columns(exc),
        )

    def _stopped(self, index: int, request: object) -> _Outcome:
        error = self._stop_error()
        assert error is not None
        return BatchOutcome(index=index, request=request, error=error)

    async def _emit(
        self, send: MemoryObjectSendStream[_Outcome], outcome: _Outcome, trace: Scope | None = None
    ) -> None:
        """Hand an outcome to the stream, ending its job's span (one made now if it had none)."""
        if trace is None:  # answered without a job: from the journal, invalid, or stopped
            trace = self._engine.telemetry.operation(
                "batch.job", request=outcome.request, index=outcome.index, parent=self._trace
            )
        if outcome.task_id is not None:
            trace.annotate("nanobanana.task_id", outcome.task_id)
        if outcome.resumed:
            trace.annotate("nanobanana.batch.resumed", True)
        trace.end(outcome.error)
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


@attrs.define
class _Job:
    index: int
    body: CreateBody
    fingerprint: str
    request_id: str
    task_id: str | None
    trace: Scope = NULL_SCOPE

    @property
    def request(self) -> ImageRequest:
        return self.body.request
