"""What the in-process and the Redis limits share, written once.

Both backends keep the same numbers and follow the same rules; they differ only in where the
numbers live (this process, or a Redis that every process of the key shares):

* `told_window` reads the window a 429's body names, and `base_margin` is the slack allowed
  for latency jitter at a window's edge;
* `grown_cap` and `cap_after_conflict` are the rules that adapt the active-task cap (the Redis
  scripts apply the same two rules atomically, over the slots of every process);
* `kept_free` is the room a background caller leaves to others, and `small_consumer` says
  how many slots a 409 shows a small consumer holding (background work leaves it that many
  for `COURTESY_SECONDS`);
* `PacerBase` counts requests and 429s and decides when a refusal means the margin is too
  thin; `SlotsBase` keeps the holder → slot bookkeeping, the running set and the release
  signal; `LimitsBase` seeds from a tier, names the endpoints and takes the snapshot.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable
from typing import Generic, NamedTuple, TypeVar

import anyio

from .._errors import ConfigurationError
from ._probe import DEFAULT_HOLD, HOLD_WEIGHT
from ._protocols import Endpoint, LimitsSnapshot, Priority
from ._tiers import TIERS, TierName, tier_limits

__all__ = [
    "COURTESY_SECONDS",
    "COURTESY_SHARE",
    "LimitsBase",
    "PacerBase",
    "SlotsBase",
    "ToldWindow",
    "base_margin",
    "cap_after_conflict",
    "cap_binds",
    "check_max_active",
    "grown_cap",
    "kept_free",
    "others_on_key",
    "small_consumer",
    "tier_named_by_cap",
    "told_window",
]

COURTESY_SECONDS = 120.0
"""For how long background work leaves room for a small consumer a 409 showed (seconds)."""
COURTESY_SHARE = 0.2
"""Another consumer counts as small (a web app's visitors, not another batch) while it holds
at most this share of the key's cap (and at least one slot)."""


def base_margin(seconds: float) -> float:
    """Seconds of slack at a window's edge for jitter between our clock and the provider's.

    Proportional between two absolute bounds, since jitter (an event loop's lag, a network's
    variance) neither grows with a long window nor shrinks with a short one; never more than
    a quarter of the window.
    """
    return min(max(0.02 * seconds, 0.01), 0.05, 0.25 * seconds)


class ToldWindow(NamedTuple):
    """A window named by a 429's body: ``limit`` requests per ``seconds``."""

    limit: int
    seconds: float


def told_window(limit: int | None, window: float | None) -> ToldWindow | None:
    """The window a 429 names, or None when its numbers are missing or unusable."""
    if limit is None or window is None or limit <= 0 or window <= 0:
        return None
    return ToldWindow(int(limit), float(window))


def grown_cap(limit: int, held: int, running: int) -> int:
    """The cap while it is still being learned, after a create was accepted.

    It grows only when every slot is held and (all but one of) them hold running tasks: slots
    held by creates that wait on the rate limiter say nothing about room on the provider.
    """
    if held >= limit and running >= limit - 1:
        return limit + 1
    return limit


def cap_after_conflict(
    limit: int,
    running: int,
    stated: int | None,
    *,
    active: int | None = None,
    held: int | None = None,
) -> int | None:
    """The cap a 409 teaches (the room left to us), or None when it teaches nothing.

    A body that names the key's cap and its active tasks tells the two cases apart: when the
    key holds more than our slots could (other consumers' tasks), the room left to us is the
    cap less theirs, and it comes back when they leave (probes find it); otherwise the cap
    itself is what the body names, lower or higher than the one we had.

    Args:
        limit: The cap in use.
        running: Our tasks running on the provider now.
        stated: The cap the 409's body names, if it names one.
        active: The key's active tasks the body names (ours and others'), if it does.
        held: Our slots held now, the refused create's included.
    """
    if stated is not None and stated > 0:
        return max(1, stated - others_on_key(active, held))
    if running == 0:
        # Nothing of ours runs: another client of the key fills it.
        return None
    return max(1, min(limit, running))


def others_on_key(active: int | None, held: int | None) -> int:
    """Slots other consumers hold, by a 409's ``active``: at least what ours cannot explain.

    Our slots held (less the refused create's own) bound our tasks on the provider from
    above, so what is left of ``active`` is surely someone else's.
    """
    if active is None or held is None:
        return 0
    return max(0, active - max(0, held - 1))


def small_consumer(stated: int | None, active: int | None, held: int, limit: int) -> int:
    """The slots a 409 shows a small consumer holding, one these limits do not count; or 0.

    The others' slots are what the key's active tasks it names leave unexplained by ours,
    or the part of the cap it names above the slots we hold (the refused create's
    included), whichever is more. They are a small consumer's (a web app's, say) while they
    are at most `COURTESY_SHARE` of the cap (and at least one slot); a large one (another
    batch) is not one to leave room for: it is left the room it holds.

    Args:
        stated: The cap the 409's body names, if it names one.
        active: The key's active tasks the body names, if it does.
        held: Our slots held now (every process's, with shared limits).
        limit: The cap in use.
    """
    others = max(others_on_key(active, held), 0 if stated is None else stated - held)
    return others if 0 < others <= max(1, COURTESY_SHARE * (stated or limit)) else 0


def kept_free(headroom: int, *, courtesy: int, neighbours: int, limit: int, known: bool) -> int:
    """Slots a background caller asking for ``headroom`` must leave free now.

    The room kept for others is the headroom asked for, or ``courtesy`` (the most slots a
    small consumer was seen to hold in the last `COURTESY_SECONDS`), whichever is more; the
    slots the estimate already leaves to others (``neighbours``) count toward it. A
    background caller may always hold one slot. While the cap is still being learned there
    is nothing to leave room of: the estimate grows only when every slot is held, and the
    first 409 names the cap.

    Args:
        headroom: The slots the caller asked to leave free.
        courtesy: The most slots a small consumer was seen to hold lately (0: none).
        neighbours: Slots of the key's named cap the estimate leaves to others.
        limit: The cap in use.
        known: Whether the cap is known (learned or given) rather than still growing.
    """
    reserve = max(headroom, courtesy)
    if not known or not reserve:
        return 0
    return max(0, min(reserve - neighbours, limit - 1))


def tier_named_by_cap(tier: str | None, named: int | None, stated: int | None) -> str | None:
    """The tier a 409 naming the cap ``stated`` says the key moved to, or None.

    Only a key known to follow the provider's table says so: its tier is known (``tier``, as
    a 429 named it) and the cap a 409 named before (``named``) was that tier's documented
    cap. A 409 naming another cap that is exactly one other tier's documented cap then says
    the key moved to that tier (an upgrade or a downgrade); any other cap says nothing of
    the rates.
    """
    if tier is None or named is None or stated is None or stated == named:
        return None
    if tier not in TIERS or TIERS[tier].active != named:
        return None
    matches = [name for name, row in TIERS.items() if row.active == stated]
    return matches[0] if len(matches) == 1 else None


def cap_binds(create_rate: float | None, mean_hold: float, limit: int) -> bool:
    """Whether the create rate could keep more than ``limit`` slots busy (Little's law).

    A slot is held ``mean_hold`` seconds on average, so creates at ``create_rate`` keep
    ``create_rate * mean_hold`` slots busy. Where that is no more than the cap, the create rate
    binds, not the cap: a larger cap (an upgrade) would gain nothing, and a probe past the
    key's cap would only cost a refused create, and its place in the create window.
    """
    return create_rate is None or create_rate * mean_hold > limit


def check_max_active(max_active: int) -> None:
    """Refuse an active-task cap below one.

    Raises:
        ConfigurationError: ``max_active`` is below 1.
    """
    if max_active < 1:
        raise ConfigurationError("max_active", f"must be at least 1, got {max_active}")


class PacerBase(abc.ABC):
    """The part of an endpoint's pacer that does not depend on where its windows are kept.

    Implements `EndpointPacer`, so `on_rate_limited` repeats the protocol's signature (a
    deliberate twin of its declaration there).

    Args:
        name: The endpoint's name, for statistics and logs.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.requests = 0
        self.rate_limited = 0

    @property
    @abc.abstractmethod
    def windows(self) -> dict[float, int]:
        """The known windows: seconds → requests allowed."""

    @property
    @abc.abstractmethod
    def rate(self) -> float | None:
        """The sustained requests per second allowed, or None if unlimited."""

    @property
    def spendable_rate(self) -> float | None:
        """The requests per second that may go evenly from now on, or None if unlimited.

        `rate`, unless what the windows already counted leaves less for now (an in-process
        pacer knows its requests' times; a shared one has only the rate).
        """
        return self.rate

    @property
    @abc.abstractmethod
    def probed_ago(self) -> float | None:
        """Seconds since a window was last probed upward, or None if none ever was."""

    @abc.abstractmethod
    def learn_window(self, limit: int, seconds: float) -> None:
        """Record that at most ``limit`` requests may go in any ``seconds`` seconds."""

    @abc.abstractmethod
    async def acquire(self, priority: Priority = "interactive") -> float:
        """Wait until a request may go, count it, and return when it was let through.

        Interactive callers go first, each class in order of arrival.
        """

    @abc.abstractmethod
    def on_success(self) -> None:
        """An accepted request."""

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
        told = told_window(limit, window)
        if told is not None and sent_at is not None:
            learned_at = self._learned_at(told.seconds)
            if (
                self.windows.get(told.seconds) == told.limit
                and learned_at is not None
                and sent_at > learned_at
            ):
                # Paced by this very window and still refused: the provider's window and our
                # clock disagree by more than the margin (latency jitter), so widen it.
                self._widen(told.seconds)
        self._learn_from_429(retry_after, told, sent_at)

    @abc.abstractmethod
    def _learned_at(self, seconds: float) -> float | None:
        """When the window of ``seconds`` took its current limit, if it is known."""

    @abc.abstractmethod
    def _widen(self, seconds: float) -> None:
        """Allow more jitter at the edge of the window of ``seconds``."""

    @abc.abstractmethod
    def _learn_from_429(
        self, retry_after: float | None, told: ToldWindow | None, sent_at: float | None
    ) -> None:
        """Block for ``retry_after`` and learn the window told (or cope without one)."""


class SlotsBase(abc.ABC):
    """The part of an active-task cap that does not depend on where the slots are kept.

    Keeps which holder holds which slot (by the slot's name in the store: the Redis member,
    or ``""`` in process), which of them hold running tasks, and the signal of a release.

    Args:
        limit: The known cap, or None to learn it (starting at ``initial``).
        initial: The starting cap while the limit is unknown.
    """

    def __init__(self, limit: int | None, *, initial: int) -> None:
        self._limit = limit if limit is not None else initial
        self.known = limit is not None
        self.conflicts = 0
        self.ceiling: int | None = None
        """A cap the user gave (``max_active=``): never exceeded, whatever probes find."""
        self.key_cap: int | None = None
        """The key's cap as a 409's body last named it (ours and other consumers' tasks)."""
        self.create_rate: Callable[[], float | None] = lambda: None
        """The sustained creates per second allowed (the owner's create pacer's), or None."""
        self.mean_run = DEFAULT_HOLD
        """Seconds a task of ours runs on average (accepted to released), as this process saw."""
        self._run_since: dict[object, float] = {}
        self._members: dict[object, str] = {}
        self._running: set[object] = set()
        self._released: anyio.Event | None = None

    @property
    def limit(self) -> int:
        """The current cap."""
        return self._limit

    @property
    def active(self) -> int:
        """Slots this process holds now (tasks being created or still running)."""
        return len(self._members)

    @property
    def running(self) -> int:
        """Slots of this process whose task the provider accepted and is not seen to finish."""
        return len(self._running)

    @property
    @abc.abstractmethod
    def waiting(self) -> int:
        """Callers of this process waiting for a slot."""

    @property
    @abc.abstractmethod
    def interactive_waiting(self) -> int:
        """Interactive callers waiting for a slot: of every process the limits are shared by."""

    @property
    def neighbours(self) -> int:
        """Slots of the key's named cap the estimate leaves to other consumers (0: none)."""
        return 0 if self.key_cap is None else max(0, self.key_cap - self._limit)

    @property
    @abc.abstractmethod
    def probed_ago(self) -> float | None:
        """Seconds since the cap was last probed upward, or None if it never was."""

    def _clock_now(self) -> float:
        """The time now, by the event loop's clock (-inf outside one)."""
        try:
            return anyio.current_time()
        except RuntimeError:
            return -math.inf

    def cap_binds(self) -> bool:
        """Whether the create rate could keep more slots busy than the cap (see `cap_binds`).

        By the time our tasks run (accepted to released), not the time a slot is held: that
        includes waiting for the create pacer, which is long exactly where the rate binds.
        """
        return cap_binds(self.create_rate(), self.mean_run, self._limit)

    def holds(self, holder: object) -> bool:
        """Whether ``holder`` holds a slot now."""
        return holder in self._members

    def set_limit(self, limit: int, *, ceiling: bool = False) -> None:
        """Start from a known cap: an estimate probed both ways, or a ceiling never exceeded.

        Args:
            limit: The cap.
            ceiling: Whether ``limit`` is a hard ceiling (a user's ``max_active``) rather
                than a starting estimate (a tier's row), which probes may raise.

        Raises:
            ConfigurationError: ``limit`` is below 1 (``field`` is ``max_active``).
        """
        check_max_active(limit)
        self.known = True
        self.ceiling = limit if ceiling else None
        self._fix_limit(limit)

    def mark_running(self, holder: object) -> None:
        """``holder``'s task was accepted by the provider and now counts as running."""
        member = self._members.get(holder)
        if member is not None:
            self._running.add(holder)
            self._run_since[holder] = self._clock_now()
            self._on_running(member)

    def release(self, holder: object) -> None:
        """Free ``holder``'s slot (its task finished, or was never created).

        Releasing a holder that holds no slot does nothing.
        """
        member = self._members.pop(holder, None)
        if member is None:
            return
        running = holder in self._running
        self._running.discard(holder)
        since = self._run_since.pop(holder, None)
        if since is not None:
            ran = max(0.0, self._clock_now() - since)
            self.mean_run += HOLD_WEIGHT * (ran - self.mean_run)
        self._on_release(holder, member, running)
        self._signal_release()

    def release_all(self) -> None:
        """Free every slot this process holds."""
        for holder in list(self._members):
            self.release(holder)

    def on_conflict(self, limit: int | None = None, active: int | None = None) -> None:
        """A create met 409: the provider is full with the tasks running now.

        Args:
            limit: The cap from the 409's body, when the server says it.
            active: The key's active tasks from the 409's body (every consumer's), if said.
        """
        self.conflicts += 1
        stated = limit if limit is not None and limit > 0 else None
        self._learn_conflict(stated, active if active is not None and active >= 0 else None)

    @abc.abstractmethod
    async def acquire(
        self, holder: object, priority: Priority = "interactive", headroom: int = 0
    ) -> None:
        """Wait for a free slot and hold it for ``holder``.

        Interactive callers go first; a background caller leaves ``headroom`` slots free.
        """

    @abc.abstractmethod
    def on_created(self) -> None:
        """A create was accepted."""

    @abc.abstractmethod
    async def wait_for_release(self, timeout: float) -> bool:
        """Wait until some slot is released, at most ``timeout`` seconds."""

    def _hold(self, holder: object, member: str = "") -> None:
        """Book the slot just taken for ``holder``."""
        self._members[holder] = member

    def _release_signal(self) -> anyio.Event:
        """An event set at the next release by this process (or, shared, by any)."""
        if self._released is None:
            self._released = anyio.Event()
        return self._released

    def _signal_release(self) -> None:
        """Wake whoever waits on `_release_signal`."""
        if self._released is not None:
            self._released.set()
            self._released = None

    @abc.abstractmethod
    def _on_running(self, member: str) -> None:
        """Tell the store that the slot ``member`` holds a running task."""

    @abc.abstractmethod
    def _on_release(self, holder: object, member: str, running: bool) -> None:
        """Give the slot back to the store (``running``: it held a task that ended)."""

    @abc.abstractmethod
    def _fix_limit(self, limit: int) -> None:
        """Make ``limit`` the cap in the store."""

    @abc.abstractmethod
    def _learn_conflict(self, stated: int | None, active: int | None) -> None:
        """Adapt the cap to a 409 (the cap and the key's active tasks its body names)."""

    @abc.abstractmethod
    def on_tier_changed(self, old_cap: int, new_cap: int) -> None:
        """A 429 named another tier than before, whose documented caps are given.

        When the cap a 409 named was the old tier's (the key follows the provider's table),
        the key's cap is now the new tier's, less what the estimate left to others; the probes
        start again either way.
        """


P = TypeVar("P", bound=PacerBase)
S = TypeVar("S", bound=SlotsBase)


class LimitsBase(Generic[P, S]):
    """Every limit of one API key: the two endpoints' pacers and the active-task cap.

    Args:
        create: The ``createTask`` pacer.
        query: The ``recordInfo`` pacer.
        active: The active-task cap.
    """

    def __init__(self, create: P, query: P, active: S) -> None:
        self.create = create
        self.query = query
        self.active = active
        active.create_rate = lambda: self.create.rate  # probes past the cap ask if it binds
        self._tier: str | None = None

    @property
    def tier(self) -> str | None:
        """The key's tier (lower case), or None while it is not known.

        As given to `seed`, as the last 429 naming a window of its row named it, or as a 409
        naming its cap showed the key moved to it. Limits shared by several processes
        (`RedisLimits`) share it too: each process reads the last one any of them learned.
        """
        return self._tier

    @tier.setter
    def tier(self, tier: str | None) -> None:
        self._tier = tier
        if tier is not None:
            self._share_tier(tier)

    def _share_tier(self, tier: str) -> None:
        """The key's tier was learned here: tell the other users of these limits (a hook)."""

    def seed(self, *, tier: TierName | None = None, max_active: int | None = None) -> None:
        """Start from known numbers: a tier's table row and/or an active-task cap.

        Raises:
            ConfigurationError: The tier is unknown or ``max_active`` is below 1 (nothing is
                learned then).
        """
        if max_active is not None:
            check_max_active(max_active)
        preset = None if tier is None else tier_limits(tier)
        if tier is not None and preset is not None:
            # The key's tier, as a 429 naming it would tell: the documented rates bound the
            # polls, and a 409 naming another tier's cap moves the windows with the key.
            self.tier = tier.lower()
            for pacer, (per_second, per_minute) in (
                (self.create, preset.create),
                (self.query, preset.query),
            ):
                pacer.learn_window(per_second, 1.0)
                pacer.learn_window(per_minute, 60.0)
        if max_active is not None:
            # The user's number is a ceiling that probes never pass; a tier's row is only
            # where the estimate starts (the key may be upgraded, or shared).
            self.active.set_limit(max_active, ceiling=True)
        elif preset is not None:
            self.active.set_limit(preset.active)

    def learn_tier(self, tier: str, endpoint: Endpoint, told: ToldWindow) -> None:
        """A 429 named the key's tier: fill in what is not known yet from its row of the table.

        The endpoint's windows not yet known, and the active-task cap while it is still being
        learned, start from the tier's documented numbers (estimates, probed like any learned
        limit), so the client does not meet each of them in a 429 of its own. The other
        endpoint is left alone: its budget stays cautious until its own limit is named (a key
        moved to a lower tier must not find its query window spent). Only on the provider's
        own time scale: a window of exactly 1 or 60 s that is the tier's says the body's
        numbers are the table's (a fake at a scaled time names other windows). A tier named
        otherwise is not taken at all: its row, the documented rates and the moves between
        rows would be real-time numbers on a scaled clock.
        """
        row = tier_limits(tier)
        per_second, per_minute = row.create if endpoint == "create" else row.query
        if (told.limit, told.seconds) not in ((per_second, 1.0), (per_minute, 60.0)):
            return
        if self.tier is not None and tier != self.tier:
            # The key moved to another tier: what followed the old row follows the new one.
            self._move_tier(self.tier, tier, cap_named=False)
        self.tier = tier
        pacer = self.endpoint(endpoint)
        known = pacer.windows
        for limit, seconds in ((per_second, 1.0), (per_minute, 60.0)):
            if seconds not in known:
                pacer.learn_window(limit, seconds)
        if not self.active.known:
            self.active.set_limit(row.active)

    def on_conflict(self, limit: int | None = None, active: int | None = None) -> None:
        """A create met 409: teach the cap; a cap that is another tier's says the key moved.

        The cap a 409 names is the key's: when the key's tier is known (a 429 named it) and
        the cap named before was that tier's documented one, a 409 naming another tier's
        documented cap says the key moved to that tier (see `tier_named_by_cap`): its windows
        that followed the old row follow the new one at once, instead of being met in 429s
        (a downgrade) or found by probes a window long each (an upgrade).

        Args:
            limit: The cap from the 409's body, when the server says it.
            active: The key's active tasks from the 409's body, if said.
        """
        named = self.active.key_cap
        self.active.on_conflict(limit, active)
        moved = tier_named_by_cap(self.tier, named, limit)
        if moved is not None and self.tier is not None:
            self._move_tier(self.tier, moved, cap_named=True)
            self.tier = moved

    def _move_tier(self, old: str, new: str, *, cap_named: bool) -> None:
        """The key moved from tier ``old`` to ``new``: what followed the old row follows the new.

        Each known window equal to the old tier's number becomes the new tier's (a window
        learned otherwise, an override of the provider's, stays). Unknown windows start from
        the new row on a move down (what was spent at the old tier's rates must not run into
        the new windows' 429s), and stay unknown on a move up (the cautious budget stays).
        Unless a 409 named the cap itself (``cap_named``), the cap moves as well when the cap
        a 409 named was the old tier's (`SlotsBase.on_tier_changed`).
        """
        before, after = tier_limits(old), tier_limits(new)
        lower = after.active < before.active
        for pacer, was, becomes in (
            (self.create, before.create, after.create),
            (self.query, before.query, after.query),
        ):
            known = pacer.windows
            for seconds, old_limit, new_limit in zip((1.0, 60.0), was, becomes, strict=True):
                if known.get(seconds) == old_limit or (lower and seconds not in known):
                    pacer.learn_window(new_limit, seconds)
        if not cap_named:
            self.active.on_tier_changed(before.active, after.active)

    def documented_rate(self, endpoint: Endpoint) -> float | None:
        """The sustained requests per second the key's tier documents for ``endpoint``.

        None until the tier is known (given to `seed`, or named by a 429). An upper bound for
        spending while the endpoint's own windows are unknown (the tier's table, not what this
        key was seen to allow).
        """
        if self.tier is None:
            return None
        row = tier_limits(self.tier)
        per_second, per_minute = row.create if endpoint == "create" else row.query
        return float(min(per_second, per_minute / 60.0))

    def endpoint(self, name: Endpoint) -> P:
        """The pacer of one endpoint."""
        return self.create if name == "create" else self.query

    def snapshot(self) -> LimitsSnapshot:
        """What is known now.

        ``active``, ``conflicts`` and ``rate_limited`` count what this process holds and saw.
        """
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
            max_active_neighbours=self.active.neighbours,
            max_active_probed_ago=self.active.probed_ago,
            create_probed_ago=self.create.probed_ago,
            query_probed_ago=self.query.probed_ago,
        )
