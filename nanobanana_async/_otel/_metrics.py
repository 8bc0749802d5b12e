"""`Instruments`: the client's metrics, made once on each meter provider.

Requests, the waits for a slot and for the pacer, task durations and how late
a task's end is seen are recorded as they happen; the active tasks held and the limits learned
are gauges, read when the SDK collects (by its reader's thread, so the callbacks read a few
numbers and no clock).
"""

# OpenTelemetry is optional: where it is not installed, pyright cannot know its types, and the
# package must still check clean (mypy: the override in pyproject.toml). Its API is typed, so
# with it installed these rules have nothing to report.
# pyright: reportMissingImports=false, reportUnknownMemberType=false
# pyright: reportUnknownVariableType=false, reportUnknownArgumentType=false
# pyright: reportUnknownParameterType=false

from __future__ import annotations

import weakref
from collections.abc import Iterable

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

from .._telemetry import AttributeValue
from .._version import __version__
from ..limits import LimitsBackend
from ..limits._base import SlotsBase

__all__ = ["NAME", "Attributes", "Instruments", "instruments_for"]

NAME = "nanobanana_async"
"""The instrumentation scope's name (the tracer's and the meter's)."""

Attributes = dict[str, AttributeValue]

# Bucket advice, in seconds: waits for a slot or the pacer (zero most of the time), a task's
# life, and how late its end is seen.
_WAIT_BUCKETS = (0.0, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
_TASK_BUCKETS = (1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 300.0, 600.0)
_DELAY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0)


class Instruments:
    """The client's metrics on one meter, shared by every client of its provider.

    Args:
        meter: The library's meter.
    """

    def __init__(self, meter: metrics.Meter) -> None:
        self.requests = meter.create_counter(
            "nanobanana.client.requests",
            unit="{request}",
            description="HTTP requests sent to the API, by endpoint and outcome.",
        )
        self.task_duration = meter.create_histogram(
            "nanobanana.task.duration",
            unit="s",
            description="A task's life: from its create to the poll that saw it finished.",
            explicit_bucket_boundaries_advisory=_TASK_BUCKETS,
        )
        self.detection_delay = meter.create_histogram(
            "nanobanana.task.detection_delay",
            unit="s",
            description="From a task's end on the provider to the poll that saw it.",
            explicit_bucket_boundaries_advisory=_DELAY_BUCKETS,
        )
        self.slot_wait = meter.create_histogram(
            "nanobanana.slot.wait.duration",
            unit="s",
            description="Time waiting for an active-task slot.",
            explicit_bucket_boundaries_advisory=_WAIT_BUCKETS,
        )
        self.pacer_wait = meter.create_histogram(
            "nanobanana.pacer.wait.duration",
            unit="s",
            description="Time a request was held by the key's pacer (0: let go at once).",
            explicit_bucket_boundaries_advisory=_WAIT_BUCKETS,
        )
        meter.create_observable_up_down_counter(
            "nanobanana.client.active_tasks",
            callbacks=[self._observe_active],
            unit="{task}",
            description="Active-task slots held by this process: tasks being created or running.",
        )
        meter.create_observable_gauge(
            "nanobanana.limits.max_active",
            callbacks=[self._observe_cap],
            unit="{task}",
            description="The active-task cap the client uses now (learned, given or probed).",
        )
        meter.create_observable_gauge(
            "nanobanana.limits.rate",
            callbacks=[self._observe_rates],
            unit="{request}/s",
            description="The sustained requests per second the client allows itself now.",
        )
        self._watched: weakref.WeakKeyDictionary[LimitsBackend, Attributes] = (
            weakref.WeakKeyDictionary()
        )
        self._requests: dict[tuple[str, int | None, int | None, str | None], Attributes] = {}

    def watch(self, limits: LimitsBackend, attributes: Attributes) -> None:
        """Report ``limits`` in the gauges, with ``attributes``, for as long as it lives."""
        self._watched[limits] = attributes

    def request_attributes(
        self, endpoint: str, status: int | None, code: int | None, error_type: str | None
    ) -> Attributes:
        """The attributes of one request's metrics (the same few sets over and over).

        Args:
            endpoint: ``"create"`` or ``"query"``.
            status: The answer's HTTP status, if one came.
            code: The provider's code (the envelope's, else the status), if it said one.
            error_type: The error's class name, ``"cancelled"``, or None on success.
        """
        key = (endpoint, status, code, error_type)
        cached = self._requests.get(key)
        if cached is not None:
            return cached
        attributes: Attributes = {"nanobanana.endpoint": endpoint}
        if status is not None:
            attributes["http.response.status_code"] = status
        if code is not None:
            attributes["nanobanana.response.code"] = code
        if error_type is not None:
            attributes["error.type"] = error_type
        self._requests[key] = attributes
        return attributes

    def _each(self) -> list[tuple[LimitsBackend, Attributes]]:
        # Read by the SDK's reader thread: a copy, as the event loop may add a client.
        return list(self._watched.items())

    def _observe_active(self, _options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(limits.active.active, attributes)
            for limits, attributes in self._each()
            if isinstance(limits.active, SlotsBase)
        ]

    def _observe_cap(self, _options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(limits.active.limit, attributes) for limits, attributes in self._each()]

    def _observe_rates(self, _options: CallbackOptions) -> Iterable[Observation]:
        observed: list[Observation] = []
        for limits, attributes in self._each():
            for endpoint in ("create", "query"):
                try:
                    rate = limits.endpoint(endpoint).rate
                except RuntimeError:  # a window learned while this thread read them
                    continue
                if rate is not None:
                    labels = {**attributes, "nanobanana.endpoint": endpoint}
                    observed.append(Observation(rate, labels))
        return observed


_BY_PROVIDER: weakref.WeakKeyDictionary[metrics.MeterProvider, Instruments] = (
    weakref.WeakKeyDictionary()
)
_GLOBAL: list[Instruments] = []
"""The instruments on the global provider: made once, on OpenTelemetry's proxy meter if the
application has not set a provider yet (the proxy hands them over when it does)."""


def instruments_for(provider: metrics.MeterProvider | None) -> Instruments:
    """The instruments on ``provider`` (None: the global one), made on first use.

    An instrument is made once per meter: every client of a provider shares them.
    """
    if provider is None:
        if not _GLOBAL:
            _GLOBAL.append(Instruments(metrics.get_meter(NAME, __version__)))
        return _GLOBAL[0]
    instruments = _BY_PROVIDER.get(provider)
    if instruments is None:
        meter = metrics.get_meter(NAME, __version__, provider)
        instruments = _BY_PROVIDER[provider] = Instruments(meter)
    return instruments
