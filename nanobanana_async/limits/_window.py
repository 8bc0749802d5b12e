"""`Window`: what one in-process limiter knows of one of the provider's rate windows."""

from __future__ import annotations

import bisect
import collections
import math
from collections.abc import Iterable

from ._base import base_margin
from ._probe import ProbeSchedule, bounded

__all__ = [
    "BINDING",
    "LONGEST_WINDOWS",
    "ROUND_TRIPS_APART",
    "WINDOWS_PER_ENDPOINT",
    "Window",
    "probe_longest",
    "probe_start",
    "spacing",
]

BINDING = 1.5
"""A window binds the endpoint's sustained rate if it allows at most this much more than the
tightest one: only such a window is probed (one that holds a burst back gains nothing)."""

LONGEST_WINDOWS = 600.0
"""The longest probe interval of a window while its probes are refused, in windows."""

WINDOWS_PER_ENDPOINT = 2
"""The provider counts each endpoint in two windows: a second's and a minute's.

While an endpoint knows fewer, the other may be filling unseen. Its requests then go a little
apart (`spacing`), not in a burst at the start of the window it knows: when the unseen one
fills, one request meets the 429 that tells of it, not every request of a burst sent before
the first answer came back.
"""

ROUND_TRIPS_APART = 2.0
"""While a window may be unseen, requests go this many round trips apart (one, doubled for the
round trip's jitter), within the known windows' average rate."""


def spacing(windows: Iterable[tuple[int, float]], round_trip: float) -> float:
    """Seconds between two requests while an endpoint knows fewer than both its windows.

    `ROUND_TRIPS_APART` round trips (measured by the last 429), but never more than the
    tightest known window allows on average (``seconds / limit``): spreading a burst does not
    slow the endpoint's sustained rate. 0 while no window is known, once both are, or before
    a round trip was measured.
    """
    if round_trip <= 0:  # first: most endpoints never meet a 429, and this runs per request
        return 0.0
    known = list(windows)
    if not known or len(known) >= WINDOWS_PER_ENDPOINT:
        return 0.0
    tightest = min(seconds / limit for limit, seconds in known)
    return min(ROUND_TRIPS_APART * round_trip, tightest)


def probe_start(seconds: float) -> float:
    """The first probe interval of a window of ``seconds``: two windows, to see it used."""
    return bounded(2.0 * seconds)


def probe_longest(limit: int, seconds: float) -> float:
    """The longest probe interval of a window of ``limit`` per ``seconds``.

    Refused probes double the interval up to 600 windows (within `MAX_INTERVAL`): a limit
    that does not move costs a 429 now and then, and one that moved is found in bounded time.
    """
    return bounded(max(LONGEST_WINDOWS, 100.0 / max(1, limit)) * seconds)


class Window:
    """What is known of one of the provider's windows: ``limit`` requests per ``seconds``.

    Two models, from the safest to the fastest:

    * sliding: the send times of the last ``limit`` requests; the next may go once the oldest
      is ``seconds`` (plus a margin) old. Safe whatever the provider counts.
    * fixed: once a 429 has told when the provider's window resets (a precise
      ``retryAfter``), windows are known to start at ``phase + k * seconds``, and each may
      take ``limit`` requests, as the provider counts them, bursts at each start included. A
      request sent within ``margin`` of a boundary counts in both windows. If the provider
      refuses what this model allowed twice, the window falls back to sliding for good.

    Args:
        limit: Requests allowed per window.
        seconds: The window's length.
        learned_at: When the limit became known (-inf: before any request).
        sent: Send times of requests already sent, oldest first; they count against it.
    """

    __slots__ = (
        "base_margin",
        "counts",
        "learned_at",
        "limit",
        "margin",
        "misses",
        "phase",
        "probe",
        "seconds",
        "sent",
    )

    def __init__(
        self, limit: int, seconds: float, learned_at: float, sent: Iterable[float] = ()
    ) -> None:
        self.limit = limit
        self.seconds = seconds
        self.learned_at = learned_at
        self.base_margin = base_margin(seconds)
        self.margin = self.base_margin
        self.sent: collections.deque[float] = collections.deque(sent, maxlen=limit)
        self.phase: float | None = None
        self.counts: dict[int, int] = {}
        self.misses = 0
        self.probe: ProbeSchedule | None = None
        """When this window is next tried higher; made when it first holds a request back."""

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

    def spendable(self, now: float) -> float:
        """Requests per second this window can take evenly from ``now`` on, by what it counted.

        `rate` in the long run, but less while the requests already counted leave little
        room until they age out (a window learned late, after a move to a lower tier, may
        already be nearly spent): spending at `rate` would run it dry, and then hold every
        request back until it turns, while spreading what is left keeps them going.
        """
        rate = self.rate
        if self.phase is not None:
            index = math.floor((now - self.phase) / self.seconds)
            left = self.limit - self.counts.get(index, 0)
            until = self.phase + (index + 1) * self.seconds - now
            return min(rate, max(1, left) / until) if until > 0 else rate
        times = self.sent  # read in place: a copy per poll planned costs O(limit)
        first = bisect.bisect_right(times, now - self.seconds)
        n = len(times) - first
        # By the time the k-th oldest counted request ages out, k of them have: a steady rate
        # must fit the room left then. Checked at most 64 times along the log.
        for k in range(0, n, max(1, n // 64)):
            horizon = times[first + k] + self.seconds + self.margin - now
            if horizon > 0:
                rate = min(rate, (self.limit - n + k + 1) / horizon)
        return rate

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

    def resize(self, limit: int, learned_at: float) -> None:
        """The provider now allows ``limit`` per window (known since ``learned_at``)."""
        self.limit = limit
        self.learned_at = learned_at
        self.sent = collections.deque(self.sent, maxlen=limit)

    def sent_within(self, now: float) -> int:
        """Requests counted in the last ``seconds`` before ``now`` (at most ``limit``)."""
        return sum(1 for t in self.sent if t > now - self.seconds)
