"""The provider's tier table: the documented limits of each tier."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, TypeAlias

import attrs

from .._errors import ConfigurationError

__all__ = ["TIERS", "TierLimits", "TierName", "tier_limits"]

TierName: TypeAlias = Literal["free", "basic", "standard", "pro", "ultra", "enterprise"]
"""The name of a tier of the provider's table (a type checker catches a typo)."""


@attrs.frozen
class TierLimits:
    """The documented limits of one tier.

    Attributes:
        create: ``createTask`` requests per 1 s and per 60 s.
        query: ``recordInfo`` requests per 1 s and per 60 s.
        active: The most tasks that may be active at once.
    """

    create: tuple[int, int]
    query: tuple[int, int]
    active: int


TIERS: Mapping[str, TierLimits] = {
    "free": TierLimits(create=(1, 10), query=(2, 60), active=1),
    "basic": TierLimits(create=(5, 180), query=(20, 1000), active=5),
    "standard": TierLimits(create=(10, 600), query=(50, 3000), active=15),
    "pro": TierLimits(create=(20, 1200), query=(100, 6000), active=30),
    "ultra": TierLimits(create=(50, 3000), query=(200, 12000), active=80),
    "enterprise": TierLimits(create=(100, 6000), query=(500, 30000), active=300),
}
"""The provider's tier table."""


def tier_limits(tier: str) -> TierLimits:
    """Look a tier up by name (case-insensitive).

    Raises:
        ConfigurationError: The tier is not in the provider's table (``field`` is ``tier``).
    """
    try:
        return TIERS[tier.lower()]
    except KeyError:
        raise ConfigurationError(
            "tier", f"unknown tier {tier!r}; expected one of {', '.join(TIERS)}"
        ) from None
