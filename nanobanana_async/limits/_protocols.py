"""What the client and the runner need of a key's limits, whichever backend keeps them.

`LimitsBackend` is met by the in-process `Limits` and by the shared `RedisLimits`; its parts are
an `EndpointPacer` per endpoint and the `ActiveSlots` cap. `LimitsSnapshot` is what either
reports. Limits kept outside the process (`RedisLimits`) are also `ConnectedLimits`: they are
entered before use, by you or by the client they are given to.
"""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

import attrs

from ._tiers import TierName

if TYPE_CHECKING:
    from ._base import ToldWindow

__all__ = [
    "ActiveSlots",
    "ConnectedLimits",
    "Endpoint",
    "EndpointPacer",
    "LimitsBackend",
    "LimitsSnapshot",
    "Priority",
]

Endpoint = Literal["create", "query"]
"""The two paced endpoints: ``createTask`` and ``recordInfo``."""

Priority = Literal["interactive", "background"]
"""Who goes first for a key's free slots and its create pacer: ``"interactive"`` calls (a
visitor waits: ``generate``, ``create_task``) ahead of ``"background"`` work (a batch)."""


@attrs.frozen
class LimitsSnapshot:
    """What a client knows of its key's limits at one moment.

    Attributes:
        max_active: The active-task cap in use.
        max_active_known: Whether the cap was learned (or given) rather than still growing.
        active: Slots held now.
        create_windows: Known ``createTask`` windows, seconds → requests.
        query_windows: Known ``recordInfo`` windows, seconds → requests.
        create_rate: Sustained creates per second allowed, or None if unlimited.
        query_rate: Sustained polls per second allowed, or None if unlimited.
        conflicts: 409 answers seen.
        rate_limited: 429 answers seen.
        max_active_neighbours: Slots of the key's cap (as a 409 named it) left to other
            consumers by the estimate: > 0 while neighbours are believed to hold them.
        max_active_probed_ago: Seconds since the cap was last probed upward, or None.
        create_probed_ago: Seconds since a ``createTask`` window was last probed, or None.
        query_probed_ago: Seconds since a ``recordInfo`` window was last probed, or None.
    """

    max_active: int
    max_active_known: bool
    active: int
    create_windows: dict[float, int]
    query_windows: dict[float, int]
    create_rate: float | None
    query_rate: float | None
    conflicts: int
    rate_limited: int
    max_active_neighbours: int = 0
    max_active_probed_ago: float | None = None
    create_probed_ago: float | None = None
    query_probed_ago: float | None = None


class EndpointPacer(Protocol):
    """What the client needs of one endpoint's pacer (`EndpointLimiter` or a shared one)."""

    @property
    def rate(self) -> float | None:
        """Sustained requests per second allowed, or None if unlimited."""
        ...

    @property
    def spendable_rate(self) -> float | None:
        """The requests per second that may go evenly from now on, or None if unlimited."""
        ...

    async def acquire(self, priority: Priority = "interactive") -> float:
        """Wait until a request may go (interactive callers first); return when it went."""
        ...

    def on_success(self) -> None:
        """An accepted request."""
        ...

    def on_rate_limited(
        self,
        retry_after: float | None,
        *,
        limit: int | None = None,
        window: float | None = None,
        sent_at: float | None = None,
    ) -> None:
        """A 429: block for ``retry_after`` and learn the window."""
        ...


class ActiveSlots(Protocol):
    """What the client and the runner need of an active-task cap."""

    @property
    def limit(self) -> int:
        """The current cap."""
        ...

    @property
    def known(self) -> bool:
        """Whether the cap was learned (or given) rather than still growing."""
        ...

    @property
    def running(self) -> int:
        """Slots of this process whose task is running on the provider."""
        ...

    @property
    def waiting(self) -> int:
        """Callers of this process waiting for a slot."""
        ...

    @property
    def interactive_waiting(self) -> int:
        """Interactive callers waiting for a slot: of every process the limits are shared by."""
        ...

    @property
    def active(self) -> int:
        """Slots this process holds now (tasks being created or running)."""
        ...

    async def acquire(
        self, holder: object, priority: Priority = "interactive", headroom: int = 0
    ) -> None:
        """Wait for a free slot and hold it for ``holder``.

        Interactive callers are served first; a background caller leaves ``headroom`` slots
        of the key free for others (and more once it has seen others on the key).
        """
        ...

    def holds(self, holder: object) -> bool:
        """Whether ``holder`` holds a slot now."""
        ...

    def mark_running(self, holder: object) -> None:
        """``holder``'s task was accepted by the provider."""
        ...

    def release(self, holder: object) -> None:
        """Free ``holder``'s slot; nothing if it holds none."""
        ...

    def on_created(self) -> None:
        """A create was accepted."""
        ...

    def on_conflict(self, limit: int | None = None, active: int | None = None) -> None:
        """A create met 409 (the cap and the key's active tasks, if its body names them)."""
        ...

    async def wait_for_release(self, timeout: float) -> bool:
        """Wait until some slot is released, at most ``timeout`` seconds."""
        ...


class LimitsBackend(Protocol):
    """The interface of a key's limits: in-process `Limits`, or a shared `RedisLimits`."""

    @property
    def query(self) -> EndpointPacer:
        """The ``recordInfo`` pacer."""
        ...

    @property
    def active(self) -> ActiveSlots:
        """The active-task cap."""
        ...

    def seed(self, *, tier: TierName | None = None, max_active: int | None = None) -> None:
        """Start from known numbers."""
        ...

    def endpoint(self, name: Endpoint) -> EndpointPacer:
        """The pacer of one endpoint."""
        ...

    def learn_tier(self, tier: str, endpoint: Endpoint, told: ToldWindow) -> None:
        """A 429 named the key's tier: fill in the limits not known yet from the table."""
        ...

    def on_conflict(self, limit: int | None = None, active: int | None = None) -> None:
        """A create met 409: teach the cap (and the tier, when the cap names another one)."""
        ...

    def documented_rate(self, endpoint: Endpoint) -> float | None:
        """The requests per second the key's tier documents (once it is known), or None."""
        ...

    def snapshot(self) -> LimitsSnapshot:
        """What is known now."""
        ...


@runtime_checkable
class ConnectedLimits(Protocol):
    """Limits kept outside this process, entered (connected) before use, as `RedisLimits`.

    A client given such limits not yet entered enters them itself in its ``__aenter__`` and
    exits them when it closes; limits you entered are yours, used and never exited by the
    client. A client whose limits are not entered (it was not entered itself, or you exited
    them) refuses every call with `UsageError` before sending anything.
    """

    @property
    def entered(self) -> bool:
        """Whether the limits are entered now."""
        ...

    async def __aenter__(self) -> Any:
        """Connect, and start what keeps the shared numbers up to date."""
        ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Any:
        """Give back what this process holds and disconnect."""
        ...
