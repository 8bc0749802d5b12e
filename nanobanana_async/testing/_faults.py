"""Injectable faults: what can go wrong between a client and the provider."""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import Literal, get_args

import attrs

__all__ = ["ENDPOINTS", "FAULT_KINDS", "Endpoint", "FaultKind", "Faults", "check_fault"]

FaultKind = Literal[
    "ok",
    "500",
    "drop_before",
    "drop_after",
    "slow",
    "200_500",
    "200_429",
    "502_html",
    "503_html",
    "record_null",
]
"""One fault, as named in `Faults` and `FakeNanoBanana.script`.

- ``"ok"``: no fault (useful in scripts).
- ``"500"``: HTTP 500 with the JSON error envelope; nothing is done.
- ``"drop_before"``: the connection drops before the request reaches the provider.
- ``"drop_after"``: the provider does the work (a task may be created), then the connection
  drops without an answer. On ``"result"`` the body is cut off halfway instead.
- ``"slow"``: the provider does the work, then answers after `Faults.slow_seconds` (by default
  only after the client's read timeout, so the client times out).
- ``"200_500"`` / ``"200_429"``: HTTP 200 carrying an error envelope with code 500 / 429.
- ``"502_html"`` / ``"503_html"``: an HTML error page from a proxy in front of the provider.
- ``"record_null"``: (``"query"`` only) 422 ``recordInfo is null``, as seen right after a
  task is created.
"""

Endpoint = Literal["create", "query", "result"]
"""Where a fault applies: ``createTask``, ``recordInfo`` or the result-file downloads."""

FAULT_KINDS: frozenset[str] = frozenset(get_args(FaultKind))
ENDPOINTS: frozenset[str] = frozenset(get_args(Endpoint))


def check_fault(endpoint: str, kind: str) -> None:
    """Raise `ValueError` unless ``kind`` is a fault that can happen on ``endpoint``."""
    if endpoint not in ENDPOINTS:
        raise ValueError(f"unknown endpoint {endpoint!r}; expected one of {sorted(ENDPOINTS)}")
    if kind not in FAULT_KINDS:
        raise ValueError(f"unknown fault {kind!r}; expected one of {sorted(FAULT_KINDS)}")
    if kind == "record_null" and endpoint != "query":
        raise ValueError("the 'record_null' fault applies to the 'query' endpoint only")


def _convert_rates(
    endpoint: Endpoint, value: Mapping[FaultKind, float] | None
) -> Mapping[FaultKind, float]:
    rates = dict(value or {})
    for kind, rate in rates.items():
        check_fault(endpoint, kind)
        if not (isinstance(rate, (int, float)) and 0.0 <= rate <= 1.0):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise ValueError(f"the rate of {kind!r} on {endpoint!r} must be in [0, 1]")
    if math.fsum(rates.values()) > 1.0 + 1e-9:
        raise ValueError(f"the fault rates on {endpoint!r} add up to more than 1")
    return MappingProxyType(rates)


def _no_rates() -> Mapping[FaultKind, float]:
    return MappingProxyType({})


def _create_rates(value: Mapping[FaultKind, float] | None) -> Mapping[FaultKind, float]:
    return _convert_rates("create", value)


def _query_rates(value: Mapping[FaultKind, float] | None) -> Mapping[FaultKind, float]:
    return _convert_rates("query", value)


def _result_rates(value: Mapping[FaultKind, float] | None) -> Mapping[FaultKind, float]:
    return _convert_rates("result", value)


def _check_slow(_instance: object, _attribute: object, value: float | None) -> None:
    if value is not None and not value >= 0:
        raise ValueError("slow_seconds must be None or >= 0")


@attrs.frozen(kw_only=True)
class Faults:
    """Probabilities of faults, per endpoint; each request draws at most one fault.

    Draws come from generators seeded with the fake's ``seed``, so a run is reproducible.
    Scripted faults (`FakeNanoBanana.script`) are used first.

    Example:
        ``Faults(create={"500": 0.1, "drop_after": 0.05}, query={"200_429": 0.02})``

    Attributes:
        create: Fault kind -> probability, for ``POST /api/v1/jobs/createTask``.
        query: Fault kind -> probability, for ``GET /api/v1/jobs/recordInfo``.
        result: Fault kind -> probability, for downloads of result files.
        slow_seconds: How long, in real seconds, a ``"slow"`` answer takes. ``None`` (the
            default) means "until the client gives up": in-process, the request's read timeout
            followed by `httpx.ReadTimeout`; over loopback, until the client disconnects.
    """

    create: Mapping[FaultKind, float] = attrs.field(
        factory=_no_rates, converter=_create_rates, hash=False
    )
    query: Mapping[FaultKind, float] = attrs.field(
        factory=_no_rates, converter=_query_rates, hash=False
    )
    result: Mapping[FaultKind, float] = attrs.field(
        factory=_no_rates, converter=_result_rates, hash=False
    )
    slow_seconds: float | None = attrs.field(default=None, validator=_check_slow)

    def rates(self, endpoint: Endpoint) -> Mapping[FaultKind, float]:
        """Return the fault probabilities for ``endpoint``."""
        rates: Mapping[FaultKind, float] = getattr(self, endpoint)
        return rates
