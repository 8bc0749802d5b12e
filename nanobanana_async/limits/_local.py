"""`Limits`: every limit of one API key, kept in this process."""

from __future__ import annotations

from ._active import ActiveTaskLimiter
from ._base import LimitsBase
from ._endpoint import EndpointLimiter
from ._tiers import TierName

__all__ = ["Limits"]


class Limits(LimitsBase[EndpointLimiter, ActiveTaskLimiter]):
    """Every limit of one API key: the two endpoints and the active-task cap, in this process.

    The in-process twin of `RedisLimits` (both implement `LimitsBackend` on the shared
    `LimitsBase`). One lives on each `AsyncNanoBanana`, so concurrent ``generate()`` calls
    and any `BatchRunner` on that client pace themselves together.

    Attributes:
        create: The ``createTask`` limiter.
        query: The ``recordInfo`` limiter.
        active: The active-task cap.

    Args:
        tier: Seed the numbers from this tier of the provider's table.
        max_active: A known active-task cap (overrides the tier's).

    Raises:
        ConfigurationError: The tier is unknown or ``max_active`` is below 1.
    """

    def __init__(self, *, tier: TierName | None = None, max_active: int | None = None) -> None:
        super().__init__(EndpointLimiter("create"), EndpointLimiter("query"), ActiveTaskLimiter())
        self.seed(tier=tier, max_active=max_active)
