"""Injectable faults: what can go wrong between a client and the provider, and how it looks."""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any, Literal, get_args

import attrs

from ._reply import Reply

__all__ = [
    "ENDPOINTS",
    "FAULT_KINDS",
    "Endpoint",
    "FaultInjector",
    "FaultKind",
    "Faults",
    "check_fault",
]

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
        slow_seconds: How long, in seconds of the fake's clock, a ``"slow"`` answer takes.
            ``None`` (the default) means "until the client gives up": in-process, the
            request's read timeout followed by `httpx.ReadTimeout`; over loopback, until the
            client disconnects.
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


_HTML_PAGES = {
    502: "Bad Gateway",
    503: "Service Temporarily Unavailable",
}


class FaultInjector:
    """Draws the fault of each request (scripted first, then by `Faults`) and applies it.

    Args:
        faults: The probabilities in force; `faults` may be reassigned at any time.
        seed: Seeds one generator per endpoint, so a run is reproducible.
    """

    __slots__ = ("_rngs", "_scripts", "faults")

    def __init__(self, faults: Faults, *, seed: int) -> None:
        self.faults = faults
        self._rngs = {
            endpoint: random.Random(f"{seed}/faults/{endpoint}")  # noqa: S311 - reproducible
            for endpoint in ("create", "query", "result")
        }
        self._scripts: dict[str, deque[FaultKind]] = {
            endpoint: deque() for endpoint in ("create", "query", "result")
        }

    def script(self, endpoint: Endpoint, faults: Iterable[FaultKind]) -> None:
        """Queue ``faults`` for the next requests to ``endpoint`` (see `FakeNanoBanana.script`).

        Raises:
            ValueError: For an unknown endpoint or fault, before anything is queued.
        """
        kinds = list(faults)
        check_fault(endpoint, "ok")
        for kind in kinds:
            check_fault(endpoint, kind)
        self._scripts[endpoint].extend(kinds)

    def draw(self, endpoint: Endpoint) -> FaultKind:
        """The fault of the next request to ``endpoint``."""
        script = self._scripts[endpoint]
        if script:
            return script.popleft()
        rates = self.faults.rates(endpoint)
        if not rates:
            return "ok"
        draw = self._rngs[endpoint].random()
        for kind, rate in rates.items():
            if draw < rate:
                return kind
            draw -= rate
        return "ok"

    @staticmethod
    def before(fault: FaultKind, rate_limit_data: Callable[[], dict[str, Any]]) -> Reply | None:
        """The reply of a fault that happens in front of the provider (nothing is done), if any.

        Args:
            fault: The fault drawn.
            rate_limit_data: The ``data`` of a 429 for a full 1-second window, for ``"200_429"``.
        """
        if fault in ("ok", "drop_after", "slow"):
            return None
        if fault == "drop_before":
            reply = Reply(0, b"")
            reply.action = "refuse"
            return reply
        if fault == "500":
            return Reply.envelope(500, "Internal server error")
        if fault == "200_500":
            return Reply.envelope(500, "Internal server error", status=200)
        if fault == "200_429":
            return Reply.envelope(429, "Rate limit exceeded", rate_limit_data(), status=200)
        if fault == "record_null":
            return Reply.envelope(422, "recordInfo is null")
        status = 502 if fault == "502_html" else 503
        title = f"{status} {_HTML_PAGES[status]}"
        page = (
            f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
            f"<center><h1>{title}</h1></center>\r\n<hr><center>nginx</center>\r\n"
            "</body>\r\n</html>\r\n"
        )
        return Reply(status, page.encode(), content_type="text/html")

    def after(self, fault: FaultKind, reply: Reply) -> None:
        """Apply a fault that happens after the provider did the work to its ``reply``."""
        if fault == "drop_after":
            is_file = reply.content_type.startswith("image/")
            reply.action = "truncate" if is_file else "drop"
        elif fault == "slow":
            reply.action = "slow"
            reply.slow_seconds = self.faults.slow_seconds
