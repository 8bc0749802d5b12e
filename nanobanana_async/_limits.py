"""The limits of one API key, learned from the provider's answers and shared by every caller.

The provider limits each key per endpoint (``createTask`` and ``recordInfo`` separately) in a
1-second and a 60-second window, and caps the number of active tasks per tier. One `Limits`
lives on each `AsyncNanoBanana`, so concurrent ``generate()`` calls from web handlers and any
`BatchRunner` on that client pace themselves together.

* `EndpointLimiter` paces one endpoint with a sliding-window log per known window: a request
  may go when fewer than ``limit`` requests went in the last ``window`` seconds. Windows are
  learned from the body of a 429 (``limit`` and ``windowSeconds``) or seeded from a tier. A 429
  without those numbers falls back to a CUBIC rate (the scheme of the AWS SDKs' adaptive retry
  mode): cut by ``beta`` on a throttle, then grown back along a cubic curve.
* `ActiveTaskLimiter` is an `anyio.CapacityLimiter` whose size is learned: raised while creates
  succeed, cut to the level seen at a 409, and re-probed upward after a long quiet spell. A
  create that met a 409 waits for the next slot release, not a blind timer.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Callable, Mapping
from typing import Literal

import anyio
import attrs

__all__ = [
    "TIERS",
    "ActiveTaskLimiter",
    "EndpointLimiter",
    "Limits",
    "LimitsSnapshot",
    "TierLimits",
]

Endpoint = Literal["create", "query"]


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
        ValueError: The tier is not in the provider's table.
    """
    try:
        return TIERS[tier.lower()]
    except KeyError:
        raise ValueError(f"unknown tier {tier!r}; expected one of {', '.join(TIERS)}") from None


class _Window:
    """A sliding-window log: the send times of the last ``limit`` requests."""

    __slots__ = ("learned_at", "limit", "seconds", "sent")

    def __init__(self, limit: int, seconds: float, learned_at: float) -> None:
        self.limit = limit
        self.seconds = seconds
        self.learned_at = learned_at
        self.sent: collections.deque[float] = collections.deque(maxlen=limit)

    def earliest(self, margin: float) -> float:
        """The earliest time the next request may go under this window."""
        if len(self.sent) < self.limit:
            return -math.inf
        return self.sent[0] + self.seconds * (1.0 + margin)

    def resize(self, limit: int) -> None:
        self.limit = limit
        self.sent = collections.deque(self.sent, maxlen=limit)


class EndpointLimiter:
    """Paces the requests to one endpoint of one API key.

    Args:
        name: The endpoint's name, for statistics and logs.
        windows: Known ``(limit, seconds)`` pairs, e.g. from a tier.
        clock: The time source; anyio's by default.
    """

    _BETA = 0.7
    _SCALE = 0.4
    _MARGIN = 0.02
    _MAX_MARGIN = 0.5

    def __init__(
        self,
        name: str,
        windows: tuple[tuple[int, float], ...] = (),
        *,
        clock: Callable[[], float] = anyio.current_time,
    ) -> None:
        self.name = name
        self._clock = clock
        self._windows: dict[float, _Window] = {}
        for limit, seconds in windows:
            self.learn_window(limit, seconds)
        self._margin = self._MARGIN
        self._blocked_until = -math.inf
        self._last_reserved = -math.inf
        # CUBIC fallback, used only when a 429 does not say which window it hit.
        self._rate: float | None = None
        self._last_max = 0.0
        self._last_throttle = 0.0
        self._sent_recent: collections.deque[float] = collections.deque(maxlen=256)
        self.rate_limited = 0
        self.requests = 0

    @property
    def windows(self) -> dict[float, int]:
        """The known windows: seconds → requests allowed."""
        return {w.seconds: w.limit for w in self._windows.values()}

    @property
    def rate(self) -> float | None:
        """The sustained requests per second this limiter allows, or None if unlimited."""
        rates = [w.limit / (w.seconds * (1.0 + self._margin)) for w in self._windows.values()]
        if self._rate is not None:
            rates.append(self._rate)
        return min(rates) if rates else None

    def learn_window(self, limit: int, seconds: float) -> None:
        """Record that at most ``limit`` requests may go in any ``seconds`` seconds."""
        limit = max(1, int(limit))
        window = self._windows.get(seconds)
        if window is None:
            self._windows[seconds] = _Window(limit, seconds, self._clock())
        elif window.limit != limit:
            window.resize(limit)
            window.learned_at = self._clock()

    def _next_slot(self, now: float) -> float:
        at = max(now, self._blocked_until, self._last_reserved)
        for window in self._windows.values():
            at = max(at, window.earliest(self._margin))
        if self._rate is not None and self._sent_recent:
            at = max(at, self._sent_recent[-1] + 1.0 / self._rate)
        return at

    async def acquire(self) -> float:
        """Wait until a request may go, and count it as sent at that moment.

        Returns:
            The moment the request was let go, for `on_rate_limited`.
        """
        now = self._clock()
        at = self._next_slot(now)
        self._last_reserved = at
        for window in self._windows.values():
            window.sent.append(at)
        self._sent_recent.append(at)
        self.requests += 1
        if at > now:
            await anyio.sleep(at - now)
        else:
            await anyio.lowlevel.checkpoint()
        return at

    def on_success(self) -> None:
        """Grow the fallback rate along the cubic curve after an accepted request."""
        if self._rate is None:
            return
        elapsed = self._clock() - self._last_throttle
        k = (self._last_max * (1.0 - self._BETA) / self._SCALE) ** (1.0 / 3.0)
        cubic = self._SCALE * (elapsed - k) ** 3 + self._last_max
        measured = self._measured_rate()
        ceiling = 2.0 * measured if measured > 0 else cubic
        self._rate = max(self._rate, min(cubic, ceiling))

    def on_rate_limited(
        self,
        retry_after: float | None,
        *,
        limit: int | None = None,
        window: float | None = None,
        sent_at: float | None = None,
    ) -> None:
        """Learn from a 429: block until ``retry_after`` and tighten the pacing.

        Args:
            retry_after: Seconds the provider asked to wait, if it said.
            limit: The window's request limit from the 429 body, if given.
            window: The window's length in seconds from the 429 body, if given.
            sent_at: When the refused request was let go (what `acquire` returned).
        """
        self.rate_limited += 1
        now = self._clock()
        if retry_after is not None:
            self._blocked_until = max(self._blocked_until, now + retry_after)
        if limit is not None and window is not None and limit > 0 and window > 0:
            known = self._windows.get(window)
            if (
                known is not None
                and known.limit == limit
                and sent_at is not None
                and sent_at > known.learned_at
            ):
                # Paced by this very window and still refused: the provider's window and our
                # clock disagree by more than the margin (latency jitter), so widen it.
                self._margin = min(self._MAX_MARGIN, self._margin * 2.0)
            self.learn_window(limit, window)
            return
        measured = self._measured_rate() or 1.0
        current = self._rate if self._rate is not None else measured
        self._last_max = current
        self._rate = max(0.05, current * self._BETA)
        self._last_throttle = now

    def _measured_rate(self) -> float:
        if len(self._sent_recent) < 2:
            return 0.0
        span = self._sent_recent[-1] - self._sent_recent[0]
        return (len(self._sent_recent) - 1) / span if span > 0 else 0.0


class ActiveTaskLimiter:
    """An adaptive cap on the tasks this key has running on the provider.

    Built on `anyio.CapacityLimiter`, whose size can change while tokens are held; it is made
    on first use, so a client can be built outside an event loop.

    Args:
        limit: The known cap, or None to learn it (starting at ``initial``).
        initial: The starting cap while the limit is unknown.
        probe_after: Creates accepted at the learned cap before trying one more slot.
    """

    def __init__(self, limit: int | None = None, *, initial: int = 8, probe_after: int = 200):
        self._total = limit if limit is not None else initial
        self._limiter: anyio.CapacityLimiter | None = None
        self._released: anyio.Event | None = None
        self._holders: set[object] = set()
        self._running: set[object] = set()
        self.known = limit is not None
        self._probe_after = probe_after
        self._accepted_at_cap = 0
        self.conflicts = 0

    def _capacity(self) -> anyio.CapacityLimiter:
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self._total)
        return self._limiter

    def _resize(self, total: int) -> None:
        self._total = total
        if self._limiter is not None:
            self._limiter.total_tokens = total

    @property
    def limit(self) -> int:
        """The current cap."""
        return self._total

    @property
    def active(self) -> int:
        """Slots held now (tasks being created or still running)."""
        return len(self._holders)

    @property
    def running(self) -> int:
        """Slots whose task the provider accepted and that have not been seen to finish."""
        return len(self._running)

    @property
    def waiting(self) -> int:
        """Callers waiting for a slot."""
        return 0 if self._limiter is None else self._limiter.statistics().tasks_waiting

    async def acquire(self, holder: object) -> None:
        """Wait for a free slot and hold it for ``holder``."""
        await self._capacity().acquire_on_behalf_of(holder)
        self._holders.add(holder)

    def holds(self, holder: object) -> bool:
        """Whether ``holder`` holds a slot now."""
        return holder in self._holders

    def mark_running(self, holder: object) -> None:
        """``holder``'s task was accepted by the provider and now counts as running."""
        if holder in self._holders:
            self._running.add(holder)

    def set_limit(self, limit: int) -> None:
        """Fix the cap to a known value."""
        if limit < 1:
            raise ValueError(f"max_active must be at least 1, got {limit}")
        self.known = True
        self._resize(limit)

    def release(self, holder: object) -> None:
        """Free ``holder``'s slot (its task finished, or was never created).

        Releasing a holder that holds no slot does nothing.
        """
        if holder not in self._holders:
            return
        self._holders.discard(holder)
        self._running.discard(holder)
        self._capacity().release_on_behalf_of(holder)
        if self._released is not None:
            self._released.set()
            self._released = None

    def on_created(self) -> None:
        """A create was accepted: raise the cap while learning, re-probe once in a while."""
        at_cap = self.active >= self.limit
        if not self.known:
            if at_cap:
                self._resize(self.limit + 1)
            return
        if at_cap and self.waiting:
            self._accepted_at_cap += 1
            if self._accepted_at_cap >= self._probe_after:
                self._accepted_at_cap = 0
                self._resize(self.limit + 1)

    def on_conflict(self, limit: int | None = None) -> None:
        """A create met 409: the provider is full with the tasks we have running now.

        Args:
            limit: The cap from the 409's body, when the server says it.
        """
        self.conflicts += 1
        self._accepted_at_cap = 0
        if limit is not None and limit > 0:
            self.known = True
            self._resize(limit)
            return
        if not self._running:
            # Nothing of ours runs: another client of the key fills it. Learn nothing.
            return
        self.known = True
        self._resize(max(1, min(self.limit, len(self._running))))

    async def wait_for_release(self, timeout: float) -> bool:
        """Wait until some slot is released, at most ``timeout`` seconds.

        Returns:
            True if a slot was released, False on timeout.
        """
        if self._released is None:
            self._released = anyio.Event()
        event = self._released
        with anyio.move_on_after(timeout):
            await event.wait()
            return True
        return False


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


class Limits:
    """Every limit of one API key: the two endpoints and the active-task cap.

    Args:
        tier: Seed the numbers from this tier of the provider's table.
        max_active: A known active-task cap (overrides the tier's).
    """

    def __init__(self, *, tier: str | None = None, max_active: int | None = None) -> None:
        self.create = EndpointLimiter("create")
        self.query = EndpointLimiter("query")
        self.active = ActiveTaskLimiter()
        self.seed(tier=tier, max_active=max_active)

    def seed(self, *, tier: str | None = None, max_active: int | None = None) -> None:
        """Start from known numbers: a tier's table row and/or an active-task cap.

        Raises:
            ValueError: The tier is unknown or ``max_active`` is below 1.
        """
        if tier is not None:
            preset = tier_limits(tier)
            for limiter, (per_second, per_minute) in (
                (self.create, preset.create),
                (self.query, preset.query),
            ):
                limiter.learn_window(per_second, 1.0)
                limiter.learn_window(per_minute, 60.0)
            if max_active is None:
                max_active = preset.active
        if max_active is not None:
            self.active.set_limit(max_active)

    def endpoint(self, name: Endpoint) -> EndpointLimiter:
        """The limiter of one endpoint."""
        return self.create if name == "create" else self.query

    def snapshot(self) -> LimitsSnapshot:
        """What is known now."""
        return LimitsSnapshot(
            max_active=self.active.limit,
            max_active_known=self.active.known,
            active=self.active.active,
            create_windows=self.create.windows,
            query_windows=self.query.windows,
            create_rate=self.create.rate,
            query_rate=self.query.rate,
            conflicts=self.active.conflicts,
            rate_limited=self.create.rate_limited + self.query.rate_limited,
        )
