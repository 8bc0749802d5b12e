"""Telemetry: what the request paths report, recorded with OpenTelemetry when it is installed.

The call loop, the poll loop, the slot waits, the downloads, the verbs and the batch runner
tell the client's `Recorder` what happens. The `Recorder` here records nothing, at the cost
of a method call; `recorder_for` returns one that records spans and metrics through the
OpenTelemetry API (`_otel`, imported then and only then) when ``opentelemetry-api`` is
installed (the ``[otel]`` extra). The API itself records nothing until the application
configures an SDK.
"""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    import httpx

    from ._models import Task
    from .limits import LimitsBackend

__all__ = ["NO_RECORDER", "NULL_SCOPE", "AttributeValue", "Recorder", "Scope", "Telemetry"]

AttributeValue = str | bool | int | float
"""A value a span attribute may take."""


@attrs.frozen(kw_only=True)
class Telemetry:
    """What a client records with OpenTelemetry, and where (see the observability how-to).

    Recording needs ``opentelemetry-api`` (``pip install 'nanobanana-async[otel]'``); without
    it, or with ``enabled=False``, the client records nothing and imports nothing of it.
    Nothing is exported until the application configures an OpenTelemetry SDK.

    Attributes:
        enabled: Whether the client records spans and metrics.
        record_prompts: Put each request's prompt on its spans (``nanobanana.prompt``). Off by
            default: prompts are what your users typed.
        tracer_provider: An OpenTelemetry ``TracerProvider``. Default: the global one, which
            the application may set before or after the client is built.
        meter_provider: An OpenTelemetry ``MeterProvider``. Default: the global one.
        name: Names the client in the gauges of its limits (``nanobanana.client.name``): give
            one to each client when a process has clients of several keys on one host.
    """

    enabled: bool = True
    record_prompts: bool = False
    tracer_provider: object | None = None
    meter_provider: object | None = None
    name: str | None = None


class Scope:
    """A stretch of traced work: a call, a batch job, a wait or one HTTP exchange.

    Used as a context manager, it is the current span while the block runs and ends with it.
    This one records nothing; `_otel`'s scopes record.
    """

    __slots__ = ()

    def __enter__(self) -> Scope:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    def current(self) -> Scope:
        """A context manager that makes this the current span, ending it only on an error.

        For work started in one task and carried on in another (a batch job).
        """
        return self

    def end(self, error: BaseException | None = None) -> None:
        """End the work, failed with ``error`` if given (raised or not)."""

    def annotate(self, key: str, value: AttributeValue) -> None:
        """Set an attribute of the span."""

    def sending(self, held: float = 0.0) -> None:
        """An exchange's request goes out now, ``held`` seconds after its try began (pacing)."""

    def answered(self, status: int) -> None:
        """An exchange's answer came with this HTTP status."""

    def polled(self, task: Task | None = None, error: BaseException | None = None) -> None:
        """A wait polled its task: the task read, or the error the poll ended with."""

    def received(self, size: int) -> None:
        """A download read ``size`` bytes."""


NULL_SCOPE = Scope()
"""The scope that records nothing."""


class Recorder:
    """What the request paths report. This one records nothing.

    Every hook is cheap to call; `_otel.OtelRecorder` overrides them.
    """

    __slots__ = ()

    def operation(
        self,
        name: str,
        *,
        request: object = None,
        request_id: str | None = None,
        task_id: str | None = None,
        index: int | None = None,
        priority: str | None = None,
        parent: Scope | None = None,
    ) -> Scope:
        """A public call or a batch job (``name``), with what is known of it at the start.

        Args:
            name: ``generate``, ``create_task``, ``batch.job``...
            request: The `TextToImage` or `ImageToImage` it sends, if any.
            request_id: The ``X-Request-ID`` of its create.
            task_id: The task it concerns, when known at the start.
            index: A batch job's place in its batch.
            priority: Its class on the key: ``"interactive"`` or ``"background"``.
            parent: The scope it belongs to; default: the current span.
        """
        return NULL_SCOPE

    def slot_wait(self, reason: str, priority: str, *, parent: Scope | None = None) -> Scope:
        """A wait for an active-task slot by a caller of class ``priority``.

        ``reason``: ``"before_create"``, or ``"after_conflict"`` (a 409).
        """
        return NULL_SCOPE

    def exchange(self, endpoint: str) -> Scope:
        """One try of a call (``"create"`` or ``"query"``); it counts once its request is sent."""
        return NULL_SCOPE

    def paced(self, endpoint: str, priority: str, seconds: float) -> None:
        """The endpoint's pacer held a request of class ``priority`` this long (0: not at all)."""

    def created(self, task_id: str) -> None:
        """The current call or job created this task."""

    def waiting(self, task_id: str) -> Scope:
        """The poll loop follows this task."""
        return NULL_SCOPE

    def finished(self, task: Task, created_at: float | None) -> None:
        """A followed task was seen finished (``created_at``: our create, anyio's clock)."""

    def download(self, url: str | httpx.URL) -> Scope:
        """One result file is fetched from ``url``."""
        return NULL_SCOPE


NO_RECORDER = Recorder()
"""The recorder that records nothing."""

_otel_missing = False  # set once the import failed, so that each new client does not retry it


def recorder_for(
    telemetry: Telemetry | None, *, limits: LimitsBackend, server_address: str
) -> Recorder:
    """The recorder of a new client: OpenTelemetry's if installed and enabled, else none.

    Args:
        telemetry: The client's option (default: `Telemetry()`).
        limits: The key's limits, reported by the gauges.
        server_address: The API host, an attribute of the gauges.

    Raises:
        ConfigurationError: A provider given is not an OpenTelemetry one.
    """
    global _otel_missing
    telemetry = Telemetry() if telemetry is None else telemetry
    if not telemetry.enabled or _otel_missing:
        return NO_RECORDER
    try:
        from ._otel import OtelRecorder  # optional: imported by the first client only
    except ModuleNotFoundError as exc:
        if not (exc.name or "").startswith("opentelemetry"):
            raise
        _otel_missing = True
        return NO_RECORDER
    return OtelRecorder(telemetry, limits=limits, server_address=server_address)
