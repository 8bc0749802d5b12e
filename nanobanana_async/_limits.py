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
from typing import Literal, Protocol

import anyio
import attrs

__all__ = [
    "TIERS",
    "ActiveSlots",
    "ActiveTaskLimiter",
    "EndpointLimiter",
    "EndpointPacer",
    "Limits",
    "LimitsBackend",
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
    """What is known of one of the provider's windows: ``limit`` requests per ``seconds``.

    Two models, from the safest to the fastest:

    * sliding: the send times of the last ``limit`` requests; the next may go once the oldest
      is ``seconds`` (plus a margin) old. Safe whatever the provider counts.
    * fixed: once a 429 has told when the provider's window resets (a precise
      ``retryAfter``), windows are known to start at ``phase + k * seconds``, and each may
      take ``limit`` requests, as the provider counts them, bursts at each start included. A
      request sent within ``margin`` of a boundary counts in both windows. If the provider
      refuses what this model allowed twice, the window falls back to sliding for good.
    """

    __slots__ = (
        "base_margin",
        "counts",
        "learned_at",
        "limit",
        "margin",
        "misses",
        "phase",
        "seconds",
        "sent",
    )

    def __init__(self, limit: int, seconds: float, learned_at: float) -> None:
        self.limit = limit
        self.seconds = seconds
        self.learned_at = learned_at
        # Seconds of slack for latency jitter between our clock and the provider's windows;
        # absolute, since jitter does not grow with the window.
        self.base_margin = min(0.02 * seconds, 0.05)
        self.margin = self.base_margin
        self.sent: collections.deque[float] = collections.deque(maxlen=limit)
        self.phase: float | None = None
        self.counts: dict[int, int] = {}
        self.misses = 0

    def _span(self, t: float) -> range:
        """The provider windows a request sent at ``t`` may land in."""
        assert self.phase is not None
        low = math.floor((t - self.margin - self.phase) / self.seconds)
        high = math.floor((t + self.margin - self.phase) / self.seconds)
        return range(low, high + 1)

    def earliest(self, now: float) -> float:
        """The earliest time from ``now`` on that the next request may go."""
        if self.phase is not None:
            full = [k for k in self._span(now) if self.counts.get(k, 0) >= self.limit]
            if not full:
                return now
            return self.phase + (max(full) + 1) * self.seconds + self.margin
        if len(self.sent) < self.limit:
            return -math.inf
        return self.sent[0] + self.seconds + self.margin

    def record(self, t: float) -> None:
        """Count a request sent at ``t``."""
        self.sent.append(t)
        if self.phase is not None:
            span = self._span(t)
            for k in span:
                self.counts[k] = self.counts.get(k, 0) + 1
            for old in [k for k in self.counts if k < span.start - 1]:
                del self.counts[old]

    def align(self, boundary: float) -> None:
        """The provider said this window resets at ``boundary``: adopt its grid."""
        if self.misses >= 2:
            return
        if self.phase is None:
            self.phase = boundary
            self.counts = {}
        # The window that ends at the boundary is full, whatever we counted.
        current = math.floor((boundary - self.phase) / self.seconds + 0.5) - 1
        self.counts[current] = self.limit

    @property
    def rate(self) -> float:
        """Sustained requests per second under this window."""
        if self.phase is not None:
            return self.limit / self.seconds
        return self.limit / (self.seconds + self.margin)

    def widen(self) -> None:
        """Paced by this window and still refused: allow for more jitter."""
        self.margin = min(0.25 * self.seconds, self.margin * 2.0 + self.base_margin)
        if self.phase is not None:
            self.misses += 1
            if self.misses >= 2:
                self.phase = None
                self.counts = {}

    def relax(self) -> None:
        """A run of accepted requests: give back some of the extra margin."""
        self.margin = max(self.base_margin, self.margin * 0.9)

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
    _RELAX_EVERY = 50

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
        self._accepted = 0
        self._blocked_until = -math.inf
        self._gate: anyio.Lock | None = None
        # CUBIC fallback, used only when a 429 does not say which window it hit.
        self._rate: float | None = None
        self._last_max = 0.0
        self._last_throttle = 0.0
        self._sent_recent: collections.deque[float] = collections.deque(maxlen=256)
        self.rate_limited = 0
        self.requests = 0
        for limit, seconds in windows:
            self.learn_window(limit, seconds)

    @property
    def windows(self) -> dict[float, int]:
        """The known windows: seconds → requests allowed."""
        return {w.seconds: w.limit for w in self._windows.values()}

    @property
    def rate(self) -> float | None:
        """The sustained requests per second this limiter allows, or None if unlimited."""
        rates = [w.rate for w in self._windows.values()]
        if self._rate is not None:
            rates.append(self._rate)
        return min(rates) if rates else None

    def learn_window(self, limit: int, seconds: float) -> None:
        """Record that at most ``limit`` requests may go in any ``seconds`` seconds."""
        limit = max(1, int(limit))
        # Before the first request there is nothing to date, and maybe no event loop yet (a
        # client seeded from a tier may be built outside one): -inf is "known from the start".
        now = self._clock() if self._sent_recent else -math.inf
        window = self._windows.get(seconds)
        if window is None:
            window = self._windows[seconds] = _Window(limit, seconds, now)
            # The requests already sent in the window count against it too.
            window.sent.extend(t for t in self._sent_recent if t > now - seconds)
        elif window.limit != limit:
            window.resize(limit)
            window.learned_at = now

    def _next_slot(self, now: float) -> float:
        at = max(now, self._blocked_until)
        for window in self._windows.values():
            at = max(at, window.earliest(at))
        if self._rate is not None and self._sent_recent:
            at = max(at, self._sent_recent[-1] + 1.0 / self._rate)
        return at

    async def acquire(self) -> float:
        """Wait until a request may go, and count it as sent now.

        Callers pass one at a time, in order, and each is counted at the moment it is let
        through, not at a moment planned ahead: a busy event loop that wakes a sleeper late
        cannot bunch requests together beyond what the windows allow.

        Returns:
            When the request was let through (to tell `on_rate_limited` whether the
            request was paced by what the limiter knew at the time).
        """
        now = self._clock()
        if (self._gate is None or not self._gate.locked()) and self._next_slot(now) <= now:
            # Nobody queues (a held gate would show it) and nothing holds the request back:
            # let it through as taking the gate would, without a trip round the event loop.
            return self._let_through(now)
        if self._gate is None:
            self._gate = anyio.Lock()
        async with self._gate:
            while True:
                now = self._clock()
                at = self._next_slot(now)
                if at <= now:
                    break
                await anyio.sleep(at - now)
            return self._let_through(now)

    def _let_through(self, now: float) -> float:
        for window in self._windows.values():
            window.record(now)
        self._sent_recent.append(now)
        self.requests += 1
        return now

    def on_success(self) -> None:
        """After an accepted request: relax the margins now and then; grow the fallback rate."""
        self._accepted += 1
        if self._accepted % self._RELAX_EVERY == 0:
            for window in self._windows.values():
                window.relax()
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
                known.widen()
            self.learn_window(limit, window)
            if retry_after is not None and not float(retry_after).is_integer():
                # A precise wait tells where the provider's fixed window ends.
                self._windows[window].align(now + retry_after)
            return
        measured = self._measured_rate()
        if self._rate is None and not measured and retry_after is not None:
            # Too few requests to measure a rate, but the provider said how long to wait:
            # that wait is all there is to go on (inventing a rate would only slow us down).
            return
        current = self._rate if self._rate is not None else (measured or 1.0)
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

    def __init__(self, limit: int | None = None, *, initial: int = 2, probe_after: int = 200):
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
            # Grow only when the slots hold running tasks: slots held by creates that wait on
            # the rate limiter say nothing about room on the provider.
            if at_cap and len(self._running) >= self.limit - 1:
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


class EndpointPacer(Protocol):
    """What the client needs of one endpoint's pacer (`EndpointLimiter` or a shared one)."""

    @property
    def rate(self) -> float | None:
        """Sustained requests per second allowed, or None if unlimited."""
        ...

    async def acquire(self) -> float:
        """Wait until a request may go; return when it was let through."""
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
    def running(self) -> int:
        """Slots of this process whose task is running on the provider."""
        ...

    async def acquire(self, holder: object) -> None:
        """Wait for a free slot and hold it for ``holder``."""
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

    def on_conflict(self, limit: int | None = None) -> None:
        """A create met 409."""
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

    def seed(self, *, tier: str | None = None, max_active: int | None = None) -> None:
        """Start from known numbers."""
        ...

    def endpoint(self, name: Endpoint) -> EndpointPacer:
        """The pacer of one endpoint."""
        ...

    def snapshot(self) -> LimitsSnapshot:
        """What is known now."""
        ...
