"""The telemetry hooks recorded through the OpenTelemetry API: `OtelRecorder`.

Imported by `_telemetry.recorder_for` only, and only when ``opentelemetry-api`` is installed:
``_metrics`` holds the instruments, ``_spans`` the scopes that record, ``_recorder`` the hooks.
"""

from ._recorder import OtelRecorder

__all__ = ["OtelRecorder"]
