"""The provider's documented limits per tier, and the fake's fixed rate windows."""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import MappingProxyType

import attrs

from ..limits import TIERS as _DOCUMENTED  # one table of the provider's tiers

__all__ = ["TIERS", "FixedWindow", "TierLimits"]


@attrs.frozen(kw_only=True)
class TierLimits:
    """The limits of one API key, as documented per tier (SPEC §1).

    ``None`` means "no limit".

    Attributes:
        name: The tier's name, reported as ``tier`` in 429 answers (``"custom"`` when the limits
            were given without a tier).
        create_per_second: ``createTask`` requests allowed in each 1-second window.
        create_per_minute: ``createTask`` requests allowed in each 60-second window.
        query_per_second: ``recordInfo`` requests allowed in each 1-second window.
        query_per_minute: ``recordInfo`` requests allowed in each 60-second window.
        max_active: Tasks allowed to be unfinished (not ``success``/``fail``) at once.
    """

    name: str
    create_per_second: int | None = None
    create_per_minute: int | None = None
    query_per_second: int | None = None
    query_per_minute: int | None = None
    max_active: int | None = None


def _tier(name: str, cs: int, cm: int, qs: int, qm: int, active: int) -> TierLimits:
    return TierLimits(
        name=name,
        create_per_second=cs,
        create_per_minute=cm,
        query_per_second=qs,
        query_per_minute=qm,
        max_active=active,
    )


TIERS: Mapping[str, TierLimits] = MappingProxyType(
    {name: _tier(name, *row.create, *row.query, row.active) for name, row in _DOCUMENTED.items()}
)
"""The documented limits of each tier, by tier name."""


class FixedWindow:
    """A counter of requests in fixed windows aligned to the fake's start.

    Window ``k`` covers ``[k * length, (k + 1) * length)`` in seconds since the start. Only
    admitted requests are counted, so refused ones (429) do not use up the window.
    """

    __slots__ = ("_count", "_index", "length", "limit", "nominal_seconds")

    def __init__(self, *, limit: int, length: float, nominal_seconds: int) -> None:
        self.limit = limit
        self.length = length
        self.nominal_seconds = nominal_seconds
        self._index = -1
        self._count = 0

    def _roll(self, now: float) -> None:
        # The epsilon absorbs float error, so waiting exactly `retryAfter` always suffices.
        index = math.floor(now / self.length + 1e-9)
        if index != self._index:
            self._index = index
            self._count = 0

    def wait(self, now: float) -> float:
        """Return 0.0 if a request fits at ``now``, else the seconds until the window resets."""
        self._roll(now)
        if self._count < self.limit:
            return 0.0
        # Never 0 while full: a float rounding must not let one more request through.
        return max((self._index + 1) * self.length - now, 1e-9)

    def add(self, now: float) -> None:
        """Count one admitted request at ``now``."""
        self._roll(now)
        self._count += 1
