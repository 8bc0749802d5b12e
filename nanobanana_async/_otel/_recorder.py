"""`OtelRecorder`: the request paths' hooks as OpenTelemetry spans and metrics.

Spans (the observability how-to lists their attributes): one per public call
(``nanobanana.generate``, ``.create_task``, ``.get_task``, ``.wait_for_result``,
``.save_result``, and ``nanobanana.download`` for `download`), per batch (``nanobanana.batch``)
and per batch job (``nanobanana.batch.job``, a child of its batch's span, whichever task runs
it); below them ``nanobanana.slot_wait``, ``nanobanana.create`` (one per create request sent),
``nanobanana.wait`` (the poll loop: a ``nanobanana.poll`` event per poll, the count in
``nanobanana.polls``) and ``nanobanana.download`` (one per result file). Metrics: see
`Instruments`. Durations are read on anyio's clock, the one the library runs on; span
timestamps are the SDK's.

Without an SDK, nothing reaches OpenTelemetry: while the application has set no global
provider (and gave none), every hook returns at once (see `GlobalProvider`). Once it has, a
call that is not sampled gets the API's non-recording span, and nothing below it is started.
Nothing here reads the clock per request.
"""

# OpenTelemetry is optional: where it is not installed, pyright cannot know its types, and the
# package must still check clean (mypy: the override in pyproject.toml). Its API is typed, so
# with it installed these rules have nothing to report.
# pyright: reportMissingImports=false, reportUnknownMemberType=false
# pyright: reportUnknownVariableType=false, reportUnknownArgumentType=false
# pyright: reportUnknownParameterType=false

from __future__ import annotations

import importlib
import time
from collections.abc import Callable

import anyio
import httpx
from opentelemetry import metrics, trace
from opentelemetry.trace import SpanKind

from .._errors import ConfigurationError
from .._models import ImageToImage, Task, TextToImage
from .._telemetry import NULL_SCOPE, Recorder, Scope, Telemetry
from .._version import __version__
from ..limits import LimitsBackend
from ..limits._queue import PRIORITIES
from ._metrics import NAME, Attributes, instruments_for
from ._spans import CURRENT, Download, Exchange, Operation, SlotWait, Traced, Wait

__all__ = ["GlobalProvider", "OtelRecorder"]


class GlobalProvider:
    """Whether the application has set OpenTelemetry's global tracer (or meter) provider.

    Asked by every hook, so it must cost next to nothing. The API's own answer costs more
    than the client's whole hook: ``get_tracer_provider()`` looks the environment up (a
    ``KeyError`` raised and caught) each time while none is set, and a non-recording
    ``start_span`` walks the context API. The API keeps the provider it was given in a module
    global, read here; an API without that global is taken as set, so that the client
    records (through the API's proxies) exactly as without this shortcut.

    Args:
        module: The API module keeping the global, e.g. ``opentelemetry.trace``.
        name: The global's name.
        resolve: The API's getter, called once: a provider named by an
            ``OTEL_PYTHON_*_PROVIDER`` environment variable is set by it.
    """

    __slots__ = ("_module", "_name")

    def __init__(self, module: str, name: str, resolve: Callable[[], object]) -> None:
        resolve()
        self._module = importlib.import_module(module)
        self._name = name

    def __call__(self) -> bool:
        """Whether a provider is set (or, with an unknown API, may be)."""
        return getattr(self._module, self._name, True) is not None


def _given() -> bool:
    return True


def _describe(request: object, *, prompt: bool) -> Attributes:
    """The attributes of a request: model, size, format, input images, the prompt if asked."""
    if not isinstance(request, (TextToImage, ImageToImage)):
        return {}
    described: Attributes = {
        "nanobanana.model": request.model,
        "nanobanana.image_size": request.image_size,
        "nanobanana.output_format": request.output_format,
    }
    if isinstance(request, ImageToImage):
        described["nanobanana.input_images"] = len(request.image_urls)
    if prompt:
        described["nanobanana.prompt"] = request.prompt
    return described


class OtelRecorder(Recorder):
    """Records the hooks as OpenTelemetry spans and metrics (see the module's docstring).

    Args:
        telemetry: The client's option.
        limits: The key's limits, for the gauges.
        server_address: The API host, an attribute of the gauges.

    Raises:
        ConfigurationError: A provider given is not an OpenTelemetry one.
    """

    __slots__ = ("_instruments", "_metering", "_paced", "_prompts", "_tracer", "_tracing", "_waits")

    def __init__(self, telemetry: Telemetry, *, limits: LimitsBackend, server_address: str) -> None:
        tracer_provider = telemetry.tracer_provider
        if tracer_provider is not None and not isinstance(tracer_provider, trace.TracerProvider):
            raise ConfigurationError(
                "telemetry", "tracer_provider must be an OpenTelemetry TracerProvider"
            )
        meter_provider = telemetry.meter_provider
        if meter_provider is not None and not isinstance(meter_provider, metrics.MeterProvider):
            raise ConfigurationError(
                "telemetry", "meter_provider must be an OpenTelemetry MeterProvider"
            )
        self._tracer = trace.get_tracer(NAME, __version__, tracer_provider)
        self._instruments = instruments_for(meter_provider)
        # Providers given are used as they are; the global ones only once the app sets them.
        self._tracing: Callable[[], bool] = _given
        if tracer_provider is None:
            self._tracing = GlobalProvider(
                "opentelemetry.trace", "_TRACER_PROVIDER", trace.get_tracer_provider
            )
        self._metering: Callable[[], bool] = _given
        if meter_provider is None:
            self._metering = GlobalProvider(
                "opentelemetry.metrics._internal", "_METER_PROVIDER", metrics.get_meter_provider
            )
        gauges: Attributes = {"server.address": server_address}
        if telemetry.name is not None:
            gauges["nanobanana.client.name"] = telemetry.name
        self._instruments.watch(limits, gauges)
        self._prompts = telemetry.record_prompts
        # The few attribute sets of the waits, made once.
        self._paced: dict[tuple[str, str], Attributes] = {
            (endpoint, priority): {"nanobanana.endpoint": endpoint, "nanobanana.priority": priority}
            for endpoint in ("create", "query")
            for priority in PRIORITIES
        }
        self._waits: dict[tuple[str, str], Attributes] = {
            (reason, priority): {"nanobanana.slot.reason": reason, "nanobanana.priority": priority}
            for reason in ("before_create", "after_conflict", "cap_fell")
            for priority in PRIORITIES
        }

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
        if not self._tracing():
            return NULL_SCOPE
        if isinstance(parent, Traced):
            owner: Traced | None = parent
            context = trace.set_span_in_context(parent.span)
        else:
            owner, context = CURRENT.get(), None
        span = self._tracer.start_span(f"nanobanana.{name}", context=context)
        if not span.is_recording():
            return NULL_SCOPE
        attributes = _describe(request, prompt=self._prompts)
        if request_id is not None:
            attributes["nanobanana.request_id"] = request_id
        if task_id is not None:
            attributes["nanobanana.task_id"] = task_id
        if index is not None:
            attributes["nanobanana.batch.index"] = index
        if priority is not None:
            attributes["nanobanana.priority"] = priority
        span.set_attributes(attributes)
        return Operation(span, owner, creating=request is not None)

    def slot_wait(self, reason: str, priority: str, *, parent: Scope | None = None) -> Scope:
        owner = parent if isinstance(parent, Traced) else CURRENT.get()
        if owner is None and not self._metering():
            return NULL_SCOPE
        span = None
        if owner is not None:  # a span only within a call or job that records
            context = trace.set_span_in_context(owner.span) if owner is parent else None
            span = self._tracer.start_span(
                "nanobanana.slot_wait",
                context=context,
                attributes={"nanobanana.slot.reason": reason, "nanobanana.priority": priority},
            )
        return SlotWait(self._instruments, self._waits[reason, priority], span)

    def exchange(self, endpoint: str) -> Scope:
        parent = CURRENT.get()
        if parent is None and not self._metering():
            return NULL_SCOPE
        return Exchange(self._tracer, self._instruments, endpoint, parent)

    def paced(self, endpoint: str, priority: str, seconds: float) -> None:
        if self._metering():
            self._instruments.pacer_wait.record(seconds, self._paced[endpoint, priority])

    def created(self, task_id: str) -> None:
        scope = CURRENT.get()
        operation = None if scope is None else scope.operation()
        if operation is not None:
            operation.annotate("nanobanana.task_id", task_id)

    def waiting(self, task_id: str) -> Scope:
        owner = CURRENT.get()
        if owner is None:
            return NULL_SCOPE
        span = self._tracer.start_span(
            "nanobanana.wait", attributes={"nanobanana.task_id": task_id}
        )
        return Wait(span, owner)

    def finished(self, task: Task, created_at: float | None) -> None:
        seen = None if created_at is None else anyio.current_time() - created_at
        ran = task.elapsed  # by the provider's own clock
        duration = ran if seen is None else seen
        delay = None
        if seen is not None and ran is not None:
            # How much longer we saw the task run than it did: each side on its own clock, so
            # neither a skew between the two nor a virtual clock in tests can bend it.
            delay = max(0.0, seen - ran)
        elif task.complete_time is not None:  # a task created elsewhere: the wall clocks
            delay = max(0.0, time.time() - task.complete_time.timestamp())
        if self._metering():
            attributes: Attributes = {"nanobanana.task.state": task.raw_state}
            if task.model:
                attributes["nanobanana.model"] = task.model
            if duration is not None:
                self._instruments.task_duration.record(duration, attributes)
            if delay is not None:
                self._instruments.detection_delay.record(delay, attributes)
        scope = CURRENT.get()
        if scope is None:
            return
        if isinstance(scope, Wait):
            if duration is not None:
                scope.annotate("nanobanana.task.duration", duration)
            if delay is not None:
                scope.annotate("nanobanana.task.detection_delay", delay)
        operation = scope.operation()
        if operation is not None:
            operation.annotate("nanobanana.task.state", task.raw_state)
            if task.fail_code is not None:
                operation.annotate("nanobanana.task.fail_code", task.fail_code)

    def download(self, url: str | httpx.URL) -> Scope:
        if not self._tracing():
            return NULL_SCOPE
        span = self._tracer.start_span("nanobanana.download", kind=SpanKind.CLIENT)
        if not span.is_recording():
            return NULL_SCOPE
        try:
            host = httpx.URL(url).host
        except (httpx.InvalidURL, TypeError):
            host = ""
        # The host only: a result URL's query may hold a signature.
        span.set_attributes({"server.address": host, "http.request.method": "GET"})
        return Download(span, CURRENT.get())
