"""`ActiveTaskLimiter`: the adaptive cap on the tasks one key has running, in this process.

Slots (`PrioritySlots`) whose number is an estimate that moves both ways: grown while it is
still being learned, cut to what a 409 teaches (the room other consumers leave us, or a lower
cap), moved with the key's tier when a 429 names another one, and probed upward
(`ProbeSchedule`) while callers wait for a slot, so that the room a neighbour gives back, or a
tier upgrade, is found: the neighbours' room in time, past the key's own cap (only an upgrade
lies there) once every `UPGRADE_CREATES` creates. A create that met a 409 waits for the next
slot release, not a blind timer.

Interactive callers are served first. Background callers (a batch) leave room for others:
the headroom they ask for, and, for a while after 409s showed a small consumer on the key (a
web app that shares the key without sharing these limits), as many slots as it was seen to
hold at most, so that it finds a free slot instead of losing every race for one.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Callable

import anyio

from ._base import (
    COURTESY_SECONDS,
    COURTESY_SHARE,
    SlotsBase,
    cap_after_conflict,
    grown_cap,
    kept_free,
    small_consumer,
)
from ._probe import (
    CAP_LONGEST,
    CAP_ROOM_START,
    CAP_UPGRADE_START,
    DEFAULT_HOLD,
    HOLD_WEIGHT,
    UPGRADE_CREATES,
    ProbeSchedule,
    bounded,
)
from ._protocols import Priority
from ._queue import PrioritySlots

__all__ = ["COURTESY_SECONDS", "COURTESY_SHARE", "ActiveTaskLimiter"]

_SEEN_KEPT = 64


class ActiveTaskLimiter(SlotsBase):
    """An adaptive cap on the tasks this key has running on the provider, in this process.

    The in-process twin of `RedisActiveTaskLimiter`: both implement `ActiveSlots` on the
    shared `SlotsBase`; this one keeps its slots in `PrioritySlots`, whose number can change
    while slots are held. They are made on first use, so a client can be built outside an
    event loop.

    Args:
        limit: The known cap, or None to learn it (starting at ``initial``).
        initial: The starting cap while the limit is unknown.
        clock: The time source; anyio's by default.
    """

    def __init__(
        self,
        limit: int | None = None,
        *,
        initial: int = 2,
        clock: Callable[[], float] = anyio.current_time,
    ) -> None:
        super().__init__(limit, initial=initial)
        self._slots: PrioritySlots | None = None
        self._clock = clock
        self._reach_after = -math.inf
        """Until when an interactive caller may not try past the estimate (after a 409)."""
        self._others_seen: collections.deque[tuple[float, int]] = collections.deque()
        """When 409s showed a small consumer on the key, and how many slots it held."""
        self._mean_hold = DEFAULT_HOLD
        self._since: dict[object, float] = {}
        self._probe: ProbeSchedule | None = None
        self._timer = False  # whether a waiter runs `_probe_when_due`

    def _now(self) -> float:
        try:
            return self._clock()
        except RuntimeError:
            # Taught outside an event loop (a test, a sync setup): before any request.
            return -math.inf

    def _reach(self) -> int:
        """Slots past the estimate an interactive caller may try: one, while others hold some.

        The estimate of the room other consumers leave us is a guess that errs on the safe
        side, which suits a batch; a person waiting is better served by a try, which the
        provider refuses (a 409) if the key is full after all, and which raises the estimate
        if it does not. Never past the key's named cap, nor a user's ceiling.
        """
        if self._now() < self._reach_after:
            return 0  # the last try met a 409: the next after a release, or a little while
        reach = min(1, self.neighbours)  # one try at a time: each that fails is a 409
        if self.ceiling is not None:
            reach = min(reach, max(0, self.ceiling - self._limit))
        return reach

    def _courtesy(self) -> int:
        """The most slots a small consumer was seen to hold in the last `COURTESY_SECONDS`."""
        seen = self._others_seen
        since = self._now() - COURTESY_SECONDS
        while seen and not seen[0][0] > since:
            seen.popleft()
        return max((others for _, others in seen), default=0)

    def _capacity(self) -> PrioritySlots:
        if self._slots is None:
            self._slots = PrioritySlots(self._limit, self.keep_free, self._reach)
        return self._slots

    def _resize(self, total: int) -> None:
        self._limit = total
        if self._slots is not None:
            self._slots.total = total

    @property
    def waiting(self) -> int:
        """Callers waiting for a slot."""
        return 0 if self._slots is None else self._slots.waiting()

    @property
    def interactive_waiting(self) -> int:
        """Interactive callers waiting for a slot."""
        return 0 if self._slots is None else self._slots.waiting("interactive")

    def keep_free(self, headroom: int) -> int:
        """Slots a background caller asking for ``headroom`` must leave free now.

        The rule of `kept_free`: the headroom asked for, or, for `COURTESY_SECONDS` after 409s
        showed a small consumer, the most slots it was seen to hold, whichever is more, less
        the slots our estimate already leaves to others (a 409 saw them held). A background
        caller may always hold one slot; while the cap is still being learned, none is kept.
        """
        return kept_free(
            headroom,
            courtesy=self._courtesy(),
            neighbours=self.neighbours,
            limit=self._limit,
            known=self.known,
        )

    @property
    def probed_ago(self) -> float | None:
        """Seconds since the cap was last probed upward, or None if it never was."""
        if self._probe is None or self._probe.probed_at is None:
            return None
        return max(0.0, self._now() - self._probe.probed_at)

    @property
    def probe_interval(self) -> float | None:
        """Seconds between probes now (doubled by each refused one), or None before any."""
        return None if self._probe is None else self._probe.interval

    def _unit(self) -> float:
        """Seconds between two creates at the cap: the time scale of every probe interval."""
        return self._mean_hold / max(1, self._limit)

    def _start(self) -> float:
        room = self.key_cap is not None and self._limit < self.key_cap
        return bounded((CAP_ROOM_START if room else CAP_UPGRADE_START) * self._unit())

    def _owed(self) -> int:
        """Creates to pass before the next probe: `UPGRADE_CREATES` past the key's cap."""
        room = self.key_cap is not None and self._limit < self.key_cap
        return 0 if room else UPGRADE_CREATES

    def _schedule(self) -> ProbeSchedule:
        if self._probe is None:
            self._probe = ProbeSchedule(self._start(), self._now())
            self._probe.owed = self._owed()
        return self._probe

    async def acquire(
        self, holder: object, priority: Priority = "interactive", headroom: int = 0
    ) -> None:
        """Wait for a free slot and hold it for ``holder``.

        Interactive callers are served first; a background caller leaves room for others (see
        `keep_free`). While callers wait, the cap is probed one slot higher whenever the
        schedule allows.
        """
        capacity = self._capacity()
        if not capacity.try_acquire(holder, priority, headroom):
            if self._timer:
                # One waiter keeps the time; releases and creates check for a probe too.
                await capacity.acquire(holder, priority, headroom)
            else:
                self._timer = True
                try:
                    async with anyio.create_task_group() as group:
                        group.start_soon(self._probe_when_due)
                        await capacity.acquire(holder, priority, headroom)
                        group.cancel_scope.cancel()
                finally:
                    self._timer = False
        self._since[holder] = self._now()
        self._hold(holder)

    async def _probe_when_due(self) -> None:
        """While a caller waits: try one more slot each time the schedule says so."""
        while True:
            self.probe_now()
            self._capacity().regrant()  # an interactive caller's try may be due again
            probe = self._schedule()
            now = self._now()
            wait = probe.next_at - now
            if probe.probing or wait <= 0:
                wait = probe.interval
            if self._reach_after > now:
                wait = min(wait, self._reach_after - now)
            await anyio.sleep(max(wait, 0.001))

    def probe_now(self) -> bool:
        """Raise the cap for a probe if one is due and callers wait for a slot.

        Called by waiting callers as time passes; a probe nobody put to use is given up.

        Returns:
            Whether a probe started.
        """
        if not self.known or (self.ceiling is not None and self._limit >= self.ceiling):
            return False
        probe = self._schedule()
        now = self._now()
        if probe.probing:
            if now - probe.started_at > max(probe.interval, 2.0 * self._mean_hold):
                base = probe.unused(now)
                if base is not None and base < self._limit:
                    self._resize(base)
            return False
        capacity = self._capacity()
        if not probe.due(now) or capacity.borrowed < self._limit:
            return False
        room = self.key_cap is not None and self._limit < self.key_cap
        if not room and probe.last_outcome != "raised" and not self.cap_binds():
            # From the key's own cap, no demand: the create rate fills fewer slots than the
            # cap, so no upgrade would help (a climb under way goes on: it may move the rates).
            return False
        raised = self._limit + 1
        if self.key_cap is not None and self._limit < self.key_cap:
            raised = min(raised, self.key_cap)
        if self.ceiling is not None:
            raised = min(raised, self.ceiling)
        if not capacity.next_fits(raised):
            return False  # nobody waits who could use one slot more (background keeps room)
        raised = probe.begin(self._limit, now)
        if self.key_cap is not None and self._limit < self.key_cap:
            raised = min(raised, self.key_cap)  # win back the neighbours' room first
        if self.ceiling is not None:
            raised = min(raised, self.ceiling)
        self._resize(raised)
        return True

    def on_created(self) -> None:
        """A create was accepted: raise the cap while learning; settle a probe in flight."""
        if not self.known:
            grown = grown_cap(self.limit, self.active, self.running)
            if grown != self.limit:
                self._resize(grown)
            return
        probe = self._schedule()
        probe.passed()
        if probe.base is None:
            if self.running > self._limit:
                # An interactive caller reached past the estimate, and the provider took it:
                # the room is at least what runs now (the estimate had erred on the safe side).
                # Never lowered by it: past the key's named cap, the estimate stays.
                self._resize(max(self._limit, min(self.running, self.key_cap or self.running)))
            return
        if self.running <= probe.base:
            return
        now = self._now()
        room = self.key_cap is not None and probe.base < self.key_cap
        # Past the key's named cap, one slot at a time: an acceptance there may be a fluke
        # (a task of ours that ended unseen left its slot), and flukes must not compound.
        # The key's cap stays what a 409 named until a 409 names another: an acceptance past
        # it proves nothing yet (a fluke, or an upgrade, which the next 409 will name). The
        # steps go at the pace of creates (the create window binds them), not of releases.
        probe.raised(now, grow=room)
        if room and self._limit == self.key_cap:
            # The neighbours' room is back whole: past it lies only a rare upgrade, tried
            # where the cap binds (no climb is under way any more).
            probe.restart(now, self._start(), owed=self._owed())
            probe.last_outcome = None
        elif self.waiting:
            # The next step goes at once, at the pace of creates rather than of releases.
            self.probe_now()

    async def wait_for_release(self, timeout: float) -> bool:
        """Wait until some slot is released, at most ``timeout`` seconds.

        Returns:
            True if a slot was released, False on timeout.
        """
        event = self._release_signal()
        with anyio.move_on_after(timeout):
            await event.wait()
            return True
        return False

    def _on_running(self, member: str) -> None:
        # The running set kept by the base is all there is to it in this process.
        return

    def _on_release(self, holder: object, member: str, running: bool) -> None:
        since = self._since.pop(holder, None)
        if since is not None:
            held = max(0.0, self._now() - since)
            self._mean_hold += HOLD_WEIGHT * (held - self._mean_hold)
        self._capacity().release(holder)
        if self.waiting:
            self.probe_now()

    def _fix_limit(self, limit: int) -> None:
        self._resize(limit)

    def on_tier_changed(self, old_cap: int, new_cap: int) -> None:
        """A 429 named another tier than before: move the cap with it, and probe it soon.

        When the cap a 409 named was the old tier's, the key's cap is now the new tier's,
        less the slots the estimate left to others; a cap the key does not take from the
        table only has its probes started again.
        """
        if self.key_cap == old_cap:
            cap = max(1, new_cap - self.neighbours)
            if self.ceiling is not None:
                cap = min(cap, self.ceiling)
            self.key_cap = new_cap
            self._resize(cap)
        self._schedule().restart(self._now(), self._start())

    def _learn_conflict(self, stated: int | None, active: int | None) -> None:
        now = self._now()
        # The key is full: no interactive try past the estimate for a little while (the time
        # of two creates at the cap): each try that fails is a refused create.
        self._reach_after = now + bounded(CAP_ROOM_START * self._unit())
        probe = self._schedule()
        was_probing = probe.probing
        before = self._limit
        named_before = self.key_cap
        upgraded = stated is not None and named_before is not None and stated > named_before
        # Past the cap a 409 named, told the same cap: the probe (or a fluke's raise) failed.
        past_named = named_before is not None and before > named_before and not upgraded
        others = small_consumer(stated, active, self.active, self._limit)
        if others:
            # A small consumer (a web app, say) holds slots of the key: background work leaves
            # it room for a while. (A large one, another batch, is left the room it holds.)
            if len(self._others_seen) >= _SEEN_KEPT:
                self._others_seen.popleft()
            self._others_seen.append((now, others))
        cap = cap_after_conflict(self.limit, self.running, stated, active=active, held=self.active)
        if cap is not None:
            self.known = True
            if stated is not None:
                self.key_cap = stated
            if self.ceiling is not None:
                cap = min(cap, self.ceiling)
            self._resize(cap)
        if past_named:
            probe.refused(now, bounded(CAP_LONGEST * self._unit()), owed=UPGRADE_CREATES)
        elif upgraded or (not was_probing and cap is not None and cap < before):
            probe.restart(now, self._start(), owed=self._owed())
        elif was_probing:
            probe.refused(now, bounded(CAP_LONGEST * self._unit()), owed=self._owed())
        else:
            probe.hold_off(now)
            # A 409 that leaves room below the key's cap: that room is probed by time alone.
            probe.owed = min(probe.owed, self._owed())
