"""`EndpointLimiter`: paces the requests to one endpoint, in this process.

A sliding-window log per known window (see `Window`): a request may go when fewer than
``limit`` requests went in the last ``window`` seconds. Windows are learned from the body of a
429 (``limit`` and ``windowSeconds``) or seeded from a tier. A 429 without those numbers falls
back to a CUBIC rate (the scheme of the AWS SDKs' adaptive retry mode): cut by ``beta`` on a
throttle, then grown back along a cubic curve.

A learned (or seeded) window is an estimate: while it holds requests back, it is probed one
step higher now and then (`ProbeSchedule`: spaced in time, backing off while 429s answer,
stepping up faster while the provider accepts), and a 429 that names a larger limit raises it
at once. So a tier upgrade is found, and a limit that does not move costs few 429s.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Callable

import anyio

from ._base import PacerBase, ToldWindow
from ._probe import WINDOW_PROBE_REQUESTS, ProbeSchedule
from ._protocols import Priority
from ._queue import PriorityGate
from ._window import BINDING, Window, probe_longest, probe_start, spacing

__all__ = ["EndpointLimiter"]

_HISTORY = 60.0
"""Seconds of requests remembered for a window learned later (the provider's longest)."""
_BUCKET = 0.1
"""Seconds of one count of that memory."""


class EndpointLimiter(PacerBase):
    """Paces the requests to one endpoint of one API key, in this process.

    The in-process twin of `RedisEndpointLimiter`: both implement `EndpointPacer` on the
    shared `PacerBase`; this one keeps its windows in memory and adds the CUBIC fallback.

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
        super().__init__(name)
        self._clock = clock
        self._windows: dict[float, Window] = {}
        self._accepted = 0
        self._blocked_until = -math.inf
        self._round_trip = 0.0  # of the last 429: how long a burst goes unanswered
        self._gate: PriorityGate | None = None
        # CUBIC fallback, used only when a 429 does not say which window it hit.
        self._rate: float | None = None
        self._last_max = 0.0
        self._last_throttle = 0.0
        self._sent_recent: collections.deque[float] = collections.deque(maxlen=256)
        # Requests sent in the last `_HISTORY` seconds, counted per `_BUCKET` seconds: what a
        # window learned now must count beside the last requests `_sent_recent` holds (a
        # move to a lower tier names a window that more than those filled).
        self._buckets: collections.deque[list[int]] = collections.deque()
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

    @property
    def spendable_rate(self) -> float | None:
        """The requests per second that may go evenly from now on, or None if unlimited.

        The least of each window's `Window.spendable` (less than `rate` while the requests a
        window already counted leave it little room) and of the fallback rate.
        """
        now = self._clock()
        rates = [w.spendable(now) for w in self._windows.values()]
        if self._rate is not None:
            rates.append(self._rate)
        return min(rates) if rates else None

    @property
    def probed_ago(self) -> float | None:
        """Seconds since a window was last probed upward, or None if none ever was."""
        times = [
            w.probe.probed_at
            for w in self._windows.values()
            if w.probe is not None and w.probe.probed_at is not None
        ]
        return max(0.0, self._clock() - max(times)) if times else None

    def learn_window(self, limit: int, seconds: float) -> None:
        """Record that at most ``limit`` requests may go in any ``seconds`` seconds."""
        limit = max(1, int(limit))
        # Before the first request there is nothing to date, and maybe no event loop yet (a
        # client seeded from a tier may be built outside one): -inf is "known from the start".
        now = self._clock() if self._sent_recent else -math.inf
        window = self._windows.get(seconds)
        if window is None:
            # The requests already sent in the window count against it too.
            self._windows[seconds] = Window(limit, seconds, now, self._sent_since(now - seconds))
        elif window.limit != limit:
            window.resize(limit, now)

    def _sent_since(self, since: float) -> list[float]:
        """Send times after ``since``, oldest first: exact for the last ones, then by bucket.

        A request older than those `_sent_recent` holds is dated at the end of its bucket (or
        at the oldest exact time, if sooner): a little later than it went, so it is counted
        a little too long, never too short.
        """
        exact = list(self._sent_recent)
        older: list[float] = []
        if len(exact) == self._sent_recent.maxlen:
            first = exact[0]
            for index, count in self._buckets:
                start, end = index * _BUCKET, (index + 1) * _BUCKET
                if start >= first:
                    break
                at = min(end, first)
                if at <= since:
                    continue
                older += [at] * max(0, count - sum(1 for t in exact if start <= t < end))
        return older + [t for t in exact if t > since]

    def _next_slot(self, now: float) -> float:
        at = max(now, self._blocked_until, self._spaced())
        for window in self._windows.values():
            at = max(at, window.earliest(at))
        if self._rate is not None and self._sent_recent:
            at = max(at, self._sent_recent[-1] + 1.0 / self._rate)
        return at

    def _spaced(self) -> float:
        """The earliest the next request may go by `spacing` (-inf: at once)."""
        if not self._sent_recent:
            return -math.inf
        known = ((w.limit, w.seconds) for w in self._windows.values())
        return self._sent_recent[-1] + spacing(known, self._round_trip)

    async def acquire(self, priority: Priority = "interactive") -> float:
        """Wait until a request may go, and count it as sent now.

        Callers pass one at a time, interactive ones first, each class in order of arrival,
        and each is counted at the moment it is let through, not at a moment planned ahead: a
        busy event loop that wakes a sleeper late cannot bunch requests together beyond what
        the windows allow.

        Returns:
            When the request was let through (to tell `on_rate_limited` whether the
            request was paced by what the limiter knew at the time).
        """
        now = self._clock()
        if (self._gate is None or not self._gate.busy) and self._next_slot(now) <= now:
            # Nobody queues (a held gate would show it) and nothing holds the request back:
            # let it through as taking the gate would, without a trip round the event loop.
            return self._let_through(now)
        if self._gate is None:
            self._gate = PriorityGate()
        async with self._gate.hold(priority):
            while True:
                now = self._clock()
                at = self._next_slot(now)
                if at > now and self._probe_binding(now):
                    at = self._next_slot(now)
                if at <= now:
                    break
                await anyio.sleep(at - now)
            return self._let_through(now)

    def _probe_binding(self, now: float) -> bool:
        """A request is held back: try one step more in each window that holds it, if due.

        Returns:
            Whether a probe started.
        """
        started = False
        # Only a window that binds the sustained rate is worth a probe: one that only holds a
        # burst back (a second's window under a tight minute's) gains the endpoint nothing.
        binding = min((w.rate for w in self._windows.values()), default=math.inf) * BINDING
        for window in self._windows.values():
            if window.earliest(now) <= now or window.rate > binding:
                continue
            if window.probe is None:
                window.probe = ProbeSchedule(
                    probe_start(window.seconds), now, owed=WINDOW_PROBE_REQUESTS
                )
                continue
            self._settle(window, now)
            if window.probe.due(now):
                raised = window.probe.begin(window.limit, now, unit=window.limit // 10)
                window.resize(raised, now)
                started = True
        return started

    def _settle(self, window: Window, now: float) -> None:
        """End a window's probe: accepted once used a whole window long, or given up unused."""
        probe = window.probe
        if probe is None or probe.base is None:
            return
        if probe.used_at is None:
            if now - probe.started_at > 2.0 * window.seconds + probe.interval:
                window.resize(probe.unused(now) or window.limit, now)
        elif now >= probe.used_at + window.seconds + 2.0 * window.margin:
            probe.raised(now)

    def _let_through(self, now: float) -> float:
        for window in self._windows.values():
            window.record(now)
            probe = window.probe
            if probe is not None:
                probe.passed()
            if (
                probe is not None
                and probe.base is not None
                and probe.used_at is None
                and window.sent_within(now) > probe.base
            ):
                probe.used_at = now  # more went than the old limit allowed: now it is tested
        self._sent_recent.append(now)
        index = math.floor(now / _BUCKET)
        buckets = self._buckets
        if buckets and buckets[-1][0] == index:
            buckets[-1][1] += 1
        else:
            buckets.append([index, 1])
        while buckets[0][0] < index - _HISTORY / _BUCKET:
            buckets.popleft()
        self.requests += 1
        return now

    def on_success(self) -> None:
        """After an accepted request: relax the margins now and then; grow the fallback rate."""
        self._accepted += 1
        if self._accepted % self._RELAX_EVERY == 0:
            for window in self._windows.values():
                window.relax()
                self._settle(window, self._clock())
        if self._rate is None:
            return
        elapsed = self._clock() - self._last_throttle
        k = (self._last_max * (1.0 - self._BETA) / self._SCALE) ** (1.0 / 3.0)
        cubic = self._SCALE * (elapsed - k) ** 3 + self._last_max
        measured = self._measured_rate()
        ceiling = 2.0 * measured if measured > 0 else cubic
        self._rate = max(self._rate, min(cubic, ceiling))

    def _learned_at(self, seconds: float) -> float | None:
        window = self._windows.get(seconds)
        return None if window is None else window.learned_at

    def _widen(self, seconds: float) -> None:
        self._windows[seconds].widen()

    def _learn_from_429(
        self, retry_after: float | None, told: ToldWindow | None, sent_at: float | None
    ) -> None:
        now = self._clock()
        if sent_at is not None:
            self._round_trip = max(0.0, now - sent_at)
        if retry_after is not None:
            self._blocked_until = max(self._blocked_until, now + retry_after)
        for seconds, other in self._windows.items():
            if other.probe is not None and (told is None or seconds != told.seconds):
                # Refused by another window: this one's raise is not shown to hold yet.
                other.probe.used_at = None
        if told is not None:
            window = self._windows.get(told.seconds)
            before = None if window is None else window.limit
            probe = None if window is None else window.probe
            self.learn_window(told.limit, told.seconds)
            if probe is None:
                pass
            elif probe.base is not None and told.limit <= probe.base:
                # The probe met a 429 (the told limit replaced the raise): back off.
                probe.refused(
                    now, probe_longest(told.limit, told.seconds), owed=WINDOW_PROBE_REQUESTS
                )
            elif before is not None and told.limit != before:
                # Told a lower limit, or a larger one than we knew (an upgrade, for sure).
                probe.restart(now, probe_start(told.seconds), owed=WINDOW_PROBE_REQUESTS)
            else:
                probe.hold_off(now)
            if retry_after is not None and not float(retry_after).is_integer():
                # A precise wait tells where the provider's fixed window ends. Dated from the
                # answer, it errs late by the way back: a request waiting for that boundary
                # then goes after it, whatever the way there took (dated from the send, it
                # would err early by the refused request's way there, queueing included).
                self._windows[told.seconds].align(now + retry_after)
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
