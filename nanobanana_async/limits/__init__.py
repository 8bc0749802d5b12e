"""The limits of one API key, learned from the provider's answers and shared by every caller.

The provider limits each key per endpoint (``createTask`` and ``recordInfo`` separately) in a
1-second and a 60-second window, and caps the number of active tasks per tier. One
`LimitsBackend` lives on each `AsyncNanoBanana`, so concurrent ``generate()`` calls from web
handlers and any `BatchRunner` on that client pace themselves together:

* `Limits` keeps them in this process: an `EndpointLimiter` per endpoint and an
  `ActiveTaskLimiter`;
* `RedisLimits` shares them through Redis with every process of the key: a
  `RedisEndpointLimiter` per endpoint and a `RedisActiveTaskLimiter`.

Both are built on one base (``_base``): seeding from a tier, the snapshot, the slot bookkeeping
and the rules that adapt the numbers are written once.
"""

from ._active import ActiveTaskLimiter
from ._endpoint import EndpointLimiter
from ._local import Limits
from ._protocols import (
    ActiveSlots,
    ConnectedLimits,
    Endpoint,
    EndpointPacer,
    LimitsBackend,
    LimitsSnapshot,
    Priority,
)
from ._redis import RedisLimits
from ._redis_active import RedisActiveTaskLimiter
from ._redis_endpoint import RedisEndpointLimiter
from ._tiers import TIERS, TierLimits, TierName, tier_limits

__all__ = [
    "TIERS",
    "ActiveSlots",
    "ActiveTaskLimiter",
    "ConnectedLimits",
    "Endpoint",
    "EndpointLimiter",
    "EndpointPacer",
    "Limits",
    "LimitsBackend",
    "LimitsSnapshot",
    "Priority",
    "RedisActiveTaskLimiter",
    "RedisEndpointLimiter",
    "RedisLimits",
    "TierLimits",
    "TierName",
    "tier_limits",
]
