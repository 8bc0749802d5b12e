"""The provider's documented limits per tier, and the fake's fixed rate windows."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from types import MappingProxyType

import attrs

from ..limits import TIERS as _DOCUMENTED  # one table of the provider's tiers

__all__ = ["TIERS", "FixedWindow", "TierLimits", "changed_limits", "check_limits", "limits_for"]


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


def check_limits(limits: TierLimits) -> None:
    """Raise `ValueError` unless every limit of ``limits`` is ``None`` or at least 1."""
    for field in attrs.fields(TierLimits):
        value = getattr(limits, field.name)
        if field.name != "name" and value is not None and value < 1:
            raise ValueError(f"{field.name} must be >= 1 (or None for no limit)")


_LIMIT_NAMES = frozenset(field.name for field in attrs.fields(TierLimits)) - {"name"}


def _check_names(names: Iterable[str]) -> None:
    unknown = set(names) - _LIMIT_NAMES
    if unknown:
        raise ValueError(f"unknown limits {sorted(unknown)}; expected {sorted(_LIMIT_NAMES)}")


def changed_limits(limits: TierLimits, changes: Mapping[str, int | None]) -> TierLimits:
    """``limits`` with ``changes`` applied (``None`` lifts a limit), keeping the tier's name.

    Raises:
        ValueError: For an unknown limit or an impossible value.
    """
    _check_names(changes)
    changed = attrs.evolve(limits, **changes)  # type: ignore[arg-type]  # names checked above
    check_limits(changed)
    return changed


def limits_for(tier: str | None, overrides: Mapping[str, int | None]) -> TierLimits:
    """The limits of ``tier`` (``None``: none at all) with the non-``None`` overrides applied.

    Raises:
        ValueError: For an unknown tier or limit, or an impossible value.
    """
    _check_names(overrides)
    if tier is None:
        base = TierLimits(name="custom")
    elif tier in TIERS:
        base = TIERS[tier]
    else:
        raise ValueError(f"unknown tier {tier!r}; expected one of {', '.join(TIERS)} or None")
    given = {name: value for name, value in overrides.items() if value is not None}
    limits = TierLimits(
        name=base.name,
        create_per_second=given.get("create_per_second", base.create_per_second),
        create_per_minute=given.get("create_per_minute", base.create_per_minute),
        query_per_second=given.get("query_per_second", base.query_per_second),
        query_per_minute=given.get("query_per_minute", base.query_per_minute),
        max_active=given.get("max_active", base.max_active),
    )
    check_limits(limits)
    return limits


class FixedWindow:
    """A counter of requests in fixed windows aligned to the fake's start.

    Window ``k`` covers ``[k * length, (k + 1) * length)`` in seconds since the start. Only
    admitted requests are counted, so refused ones (429) do not use up the window. It counts
    even without a ``limit`` (``None``), so that a limit set while the fake runs applies to
    the window in progress at once, as the provider's would.
    """

    __slots__ = ("_count", "_index", "length", "limit", "nominal_seconds")

    def __init__(self, *, limit: int | None, length: float, nominal_seconds: int) -> None:
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
        if self.limit is None or self._count < self.limit:
            return 0.0
        # Never 0 while full: a float rounding must not let one more request through.
        return max((self._index + 1) * self.length - now, 1e-9)

    def add(self, now: float) -> None:
        """Count one admitted request at ``now``."""
        self._roll(now)
        self._count += 1
