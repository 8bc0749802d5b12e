"""The scopes that record: our spans, and the requests counted within them.

A scope of ours that records is the value of `CURRENT` while it runs (and its span the current
span), so that the hooks deeper down (the call loop counting its requests, the poll loop seeing
the task end) reach the spans of the call they serve without being handed them. A scope knows
the one it belongs to (``parent``): a request sent in a job counts in the job and its batch.
"""

# OpenTelemetry is optional: where it is not installed, pyright cannot know its types, and the
# package must still check clean (mypy: the override in pyproject.toml). Its API is typed, so
# with it installed these rules have nothing to report.
# pyright: reportMissingImports=false, reportUnknownMemberType=false
# pyright: reportUnknownVariableType=false, reportUnknownArgumentType=false
# pyright: reportUnknownParameterType=false

from __future__ import annotations

from contextvars import ContextVar, Token
from types import TracebackType

import anyio
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, StatusCode, Tracer

from .._errors import APIStatusError, RateLimitError
from .._models import Task
from .._telemetry import AttributeValue, Scope
from ._metrics import Attributes, Instruments

__all__ = [
    "CURRENT",
    "Current",
    "Download",
    "Exchange",
    "Operation",
    "SlotWait",
    "Traced",
    "Wait",
    "record_error",
]

CURRENT: ContextVar[Traced | None] = ContextVar("nanobanana_async_traced", default=None)
"""The innermost recording scope of ours in this task, if any."""


def record_error(span: Span, error: BaseException, *, exception: bool = True) -> None:
    """Mark ``span`` failed with ``error``; a cancellation is no failure, only noted.

    Args:
        span: The span.
        error: The error, raised or not.
        exception: Whether to add an ``exception`` event (its type, message and traceback).
    """
    if not isinstance(error, Exception):  # cancelled (asyncio, trio), interrupted
        span.set_attribute("nanobanana.cancelled", True)
        return
    span.set_attribute("error.type", type(error).__name__)
    span.set_status(StatusCode.ERROR, str(error))
    if exception:
        span.record_exception(error)


class Traced(Scope):
    """One recording span of ours, and the requests sent while it runs.

    Args:
        span: The span, started and recording.
        parent: The scope of ours it belongs to, if any: its counts add up there too.
    """

    __slots__ = ("_active", "_ended", "creates", "parent", "polls", "span")

    def __init__(self, span: Span, parent: Traced | None) -> None:
        self.span = span
        self.parent = parent
        self.creates = 0
        self.polls = 0
        self._ended = False
        self._active: Current | None = None

    def __enter__(self) -> Scope:
        self._active = Current(self)
        return self._active.__enter__()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        active, self._active = self._active, None
        assert active is not None  # entered before
        active.__exit__(exc_type, exc, tb)
        self.end(exc)

    def current(self) -> Scope:
        return Current(self)

    def end(self, error: BaseException | None = None) -> None:
        if self._ended:
            return
        self._ended = True
        if error is not None:
            record_error(self.span, error)
        self._finish()
        self.span.end()

    def annotate(self, key: str, value: AttributeValue) -> None:
        self.span.set_attribute(key, value)

    def count(self, endpoint: str) -> None:
        """Count a request sent within this scope, and within those it belongs to."""
        scope: Traced | None = self
        while scope is not None:
            if endpoint == "create":
                scope.creates += 1
            else:
                scope.polls += 1
            scope = scope.parent

    def operation(self) -> Operation | None:
        """The call or job this scope is part of (itself, if it is one)."""
        scope: Traced | None = self
        while scope is not None and not isinstance(scope, Operation):
            scope = scope.parent
        return scope

    def _finish(self) -> None:
        """Set the attributes known at the end."""


class Current(Scope):
    """Makes a scope the current span (and ours) while entered; ends it on an error."""

    __slots__ = ("_context_token", "_scope", "_token")

    def __init__(self, scope: Traced) -> None:
        self._scope = scope

    def __enter__(self) -> Scope:
        self._context_token = otel_context.attach(trace.set_span_in_context(self._scope.span))
        self._token: Token[Traced | None] = CURRENT.set(self._scope)
        return self._scope

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        CURRENT.reset(self._token)
        otel_context.detach(self._context_token)
        if exc is not None:
            self._scope.end(exc)


class Operation(Traced):
    """A public call, a batch or a batch job: its requests, the task it made or followed.

    Args:
        span: The span, started and recording.
        parent: The scope of ours it belongs to (a job's batch), if any.
        creating: Whether it sends a create, so that its attempts are always told.
    """

    __slots__ = ("_creating",)

    def __init__(self, span: Span, parent: Traced | None, *, creating: bool) -> None:
        super().__init__(span, parent)
        self._creating = creating

    def _finish(self) -> None:
        if self._creating or self.creates:
            self.span.set_attribute("nanobanana.attempts", self.creates)
        if self.polls:
            self.span.set_attribute("nanobanana.polls", self.polls)


class Wait(Traced):
    """The poll loop following one task: an event per poll, the requests it sent."""

    __slots__ = ()

    def polled(self, task: Task | None = None, error: BaseException | None = None) -> None:
        told: Attributes = (
            {"error.type": type(error).__name__}
            if task is None
            else {"nanobanana.task.state": task.raw_state}
        )
        self.span.add_event("nanobanana.poll", told)

    def _finish(self) -> None:
        self.span.set_attribute("nanobanana.polls", self.polls)


class Download(Traced):
    """One result file fetched."""

    __slots__ = ()

    def received(self, size: int) -> None:
        self.span.set_attribute("http.response.body.size", size)


class SlotWait(Scope):
    """A wait for an active-task slot: a histogram, and a span within a call that records.

    Args:
        instruments: Where the wait is measured.
        attributes: The histogram's attributes (the wait's reason).
        span: The span, if the wait is traced.
    """

    __slots__ = ("_attributes", "_instruments", "_span", "_started")

    def __init__(self, instruments: Instruments, attributes: Attributes, span: Span | None) -> None:
        self._instruments = instruments
        self._attributes = attributes
        self._span = span
        self._started = 0.0

    def __enter__(self) -> Scope:
        self._started = anyio.current_time()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        waited = anyio.current_time() - self._started
        self._instruments.slot_wait.record(waited, self._attributes)
        if self._span is not None:
            if exc is not None:
                record_error(self._span, exc, exception=False)
            self._span.end()


class Exchange(Scope):
    """One try of a call: counted once its request is sent; a span if it is a traced create.

    Args:
        tracer: Starts the create's span.
        instruments: Where the request is counted.
        endpoint: ``"create"`` or ``"query"``.
        parent: The recording scope it runs in, if any.
    """

    __slots__ = ("_endpoint", "_instruments", "_parent", "_sent", "_span", "_status", "_tracer")

    def __init__(
        self, tracer: Tracer, instruments: Instruments, endpoint: str, parent: Traced | None
    ) -> None:
        self._tracer = tracer
        self._instruments = instruments
        self._endpoint = endpoint
        self._parent = parent
        self._sent = False
        self._status: int | None = None
        self._span: tuple[Span, Token[otel_context.Context]] | None = None

    def sending(self, held: float = 0.0) -> None:
        self._sent = True
        parent = self._parent
        if parent is None:
            return
        parent.count(self._endpoint)
        if self._endpoint != "create":
            return  # polls are counted and told as events, not spans
        operation = parent.operation()
        attributes: Attributes = {
            "nanobanana.endpoint": "create",
            "nanobanana.attempt": parent.creates if operation is None else operation.creates,
            "nanobanana.pacer.wait": held,
            "http.request.method": "POST",
        }
        span = self._tracer.start_span(
            "nanobanana.create", kind=SpanKind.CLIENT, attributes=attributes
        )
        # Current while the request is out: an HTTP instrumentation's span nests under it.
        self._span = span, otel_context.attach(trace.set_span_in_context(span))

    def answered(self, status: int) -> None:
        self._status = status

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._sent:
            return  # nothing went out: the pacing was cut short, or the batch stopped
        code: int | None = None
        error_type: str | None = None
        if exc is None:
            code = 200
        elif isinstance(exc, Exception):
            error_type = type(exc).__name__
            if isinstance(exc, APIStatusError):
                code = exc.code
        else:
            error_type = "cancelled"
        attributes = self._instruments.request_attributes(
            self._endpoint, self._status, code, error_type
        )
        self._instruments.requests.add(1, attributes)
        if self._span is None:
            return
        span, token = self._span
        otel_context.detach(token)
        if self._status is not None:
            span.set_attribute("http.response.status_code", self._status)
        if code is not None:
            span.set_attribute("nanobanana.response.code", code)
        if isinstance(exc, RateLimitError) and exc.retry_after is not None:
            span.set_attribute("nanobanana.retry_after", exc.retry_after)
        if exc is not None:
            record_error(span, exc, exception=False)
        span.end()
