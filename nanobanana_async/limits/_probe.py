"""`ProbeSchedule`: when a limit that was learned (or seeded) is tried one step higher.

A learned limit is an estimate: another consumer of the key may have left, or the key may
have moved to a larger tier. The only way to know is to try a little more than the estimate
(a probe) and see what the provider says. Probes are spaced in time, and only made while
callers are held back by the estimate (demand), so that a limit that does not move costs
little:

* after a tighten (a refusal that lowered the estimate) the first probe comes ``start``
  seconds later;
* a probe that is refused doubles the interval, up to ``longest``: steady limits are tried
  ever more rarely, so the refusals they cost stay a small share of the requests; each probe
  of a rate window (the first too) also waits for `WINDOW_PROBE_REQUESTS` requests to pass (a
  window that binds only now and then would otherwise be probed each time it binds), and a
  probe past the active-task cap a 409 named for `UPGRADE_CREATES` creates (only an upgrade
  lies there: the refusals cost a bounded share of the creates, and an upgrade is found
  within that many);
* a probe that is accepted keeps the raise and doubles the next step (1, 2, 4, ... more),
  tried at once, so a limit that grew a lot is found in a few round trips; the interval
  starts again only when a refusal names a larger limit than was known (an upgrade, sure);
* a probe that nobody used (demand ended) is given up after a while.

The numbers are given by the owner at each call (they depend on what it measures: the time a
task holds a slot, a window's length), so the schedule itself is a plain state machine with
the time passed in: the unit tests drive it with a fake clock.
"""

from __future__ import annotations

import math
from typing import Literal

__all__ = [
    "CAP_LONGEST",
    "CAP_ROOM_START",
    "CAP_UPGRADE_START",
    "DEFAULT_HOLD",
    "HOLD_WEIGHT",
    "MAX_INTERVAL",
    "MIN_INTERVAL",
    "WINDOW_PROBE_REQUESTS",
    "UPGRADE_CREATES",
    "ProbeOutcome",
    "ProbeSchedule",
    "bounded",
]

ProbeOutcome = Literal["raised", "refused", "unused"]
"""How the last probe ended: accepted (the raise stays), refused, or never put to use."""

MIN_INTERVAL = 0.01
"""The shortest probe interval (seconds): below it a probe could not even be answered."""

MAX_INTERVAL = 600.0
"""The longest probe interval (seconds): a limit that moved is found within ten minutes."""

# The active-task cap's probe intervals, in units of the time between two creates at the cap
# (a slot's mean hold time over the cap): the first after a tighten by neighbours (their room
# is likely to come back soon) or by the cap itself (an upgrade is rare), and the longest while
# probes are refused. The Redis scripts (``_redis_scripts``) use the same numbers.
CAP_ROOM_START = 2.0
CAP_UPGRADE_START = 8.0
CAP_LONGEST = 12.0
UPGRADE_CREATES = 21
"""Creates accepted between two probes past the cap a 409 named (the key's own cap).

Past that cap lies only an upgrade of the key's tier, which nothing else shows (no 429 comes
from windows that grew): a probe is the only test, and each refused one is a 409 that the
key's other users pay for too. Counting creates, not seconds, bounds that cost per create
whatever the tier and the tasks' lengths: at most one refused create in this many accepted,
4.5 % of creates (creates are the cap's time unit: at the cap, one goes per unit). An upgrade
is then found within this many units, about half of it on average. A trade-off, measured in
docs/benchmarks.md ("the round after"): 12 finds an upgrade sooner at 6.8 % of a steady
batch's creates refused, 24 costs 3.3 % and finds it later. 18 (1 in 19: 5.3 %) and 20 came
out over 5 % in real time, where the 409 that first teaches the cap counts too (8 of 158
creates in a 150-job basic batch); 21 keeps such a batch at 7 of 157, 4.5 %."""

WINDOW_PROBE_REQUESTS = 200
"""Requests a rate window lets through before a probe: at most 0.5 % of them are refused.

Counted from when the window first holds a request back, from each refused probe and from
each move of its limit that a 429 told (after an accepted probe, the next goes at once).
Time alone (two windows) would probe a second's
window every few seconds while it binds, and a window learned a moment ago is the one least
likely to have moved."""

DEFAULT_HOLD = 1.0
"""Seconds a slot is assumed held before any was released (the probes' time unit)."""

HOLD_WEIGHT = 0.1
"""The weight of each new hold time in the running mean."""


def bounded(seconds: float) -> float:
    """``seconds`` within `MIN_INTERVAL` and `MAX_INTERVAL`."""
    return min(MAX_INTERVAL, max(MIN_INTERVAL, seconds))


class ProbeSchedule:
    """When the next probe of one limit may go, and the probe in flight, if any.

    Args:
        start: The first interval (seconds) after a tighten or a seed.
        now: The time now (the owner's clock); -inf before the first request.
        owed: Requests that must pass (`passed`) before the first probe, too.
    """

    __slots__ = (
        "base",
        "interval",
        "last_outcome",
        "next_at",
        "owed",
        "probed_at",
        "started_at",
        "step",
        "used_at",
    )

    def __init__(self, start: float, now: float = -math.inf, owed: int = 0) -> None:
        self.interval = bounded(start)
        self.next_at = now + self.interval
        self.step = 1
        self.base: int | None = None
        """The limit before the probe in flight, or None when none is."""
        self.started_at = -math.inf
        self.used_at: float | None = None
        self.probed_at: float | None = None
        """When the last probe was made (the owner's clock), or None if none was."""
        self.last_outcome: ProbeOutcome | None = None
        self.owed = owed
        """Requests still to pass before the next probe (see `refused`)."""

    @property
    def probing(self) -> bool:
        """Whether a probe is in flight."""
        return self.base is not None

    def due(self, now: float) -> bool:
        """Whether a probe may start now (none in flight, the interval and requests passed)."""
        return self.base is None and now >= self.next_at and self.owed <= 0

    def passed(self) -> None:
        """A request went: one fewer to wait for."""
        if self.owed > 0:
            self.owed -= 1

    def begin(self, limit: int, now: float, unit: int = 1) -> int:
        """Start a probe from ``limit``, ``unit`` times the step higher; returns the limit."""
        self.base = limit
        self.started_at = now
        self.used_at = None
        self.probed_at = now
        return limit + self.step * max(1, unit)

    def raised(self, now: float, *, grow: bool = True) -> None:
        """The probe was accepted: keep the raise, and probe again at once.

        With ``grow`` the next step doubles; without, it stays (where a fluke would compound).
        The interval stays: an acceptance can be a fluke (a task of ours that ended unseen
        freed the slot the probe took), and a fluke must not undo the backoff. A refusal
        that names a larger limit than was known confirms an upgrade (`restart`).
        """
        self.base = None
        self.last_outcome = "raised"
        if grow:
            self.step = min(self.step * 2, 64)
        self.next_at = now

    def refused(self, now: float, longest: float, owed: int = 0) -> None:
        """The probe met a refusal: back off (the interval doubles, up to ``longest``).

        Args:
            now: The time now.
            longest: The longest interval.
            owed: Requests that must pass (`passed`) before the next probe, too.
        """
        self.base = None
        self.owed = owed
        self.last_outcome = "refused"
        self.step = 1
        self.interval = min(bounded(longest), self.interval * 2.0)
        self.next_at = now + self.interval

    def unused(self, now: float) -> int | None:
        """Give up a probe nobody put to use; returns the limit to go back to."""
        base, self.base = self.base, None
        self.last_outcome = "unused"
        self.next_at = now + self.interval
        return base

    def restart(self, now: float, start: float, owed: int = 0) -> None:
        """The limit moved for sure: start the schedule again from ``start``.

        A refusal lowered it, or named a larger one than was known.

        Args:
            now: The time now.
            start: The first interval.
            owed: Requests that must pass (`passed`) before the next probe, too.
        """
        self.base = None
        self.owed = owed
        self.step = 1
        self.interval = bounded(start)
        self.next_at = now + self.interval

    def hold_off(self, now: float) -> None:
        """A refusal at the estimate itself: no probe for one more interval."""
        self.next_at = max(self.next_at, now + self.interval)
