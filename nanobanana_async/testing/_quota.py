"""The key's limits in force: its rate windows per endpoint and its count of active tasks."""

from __future__ import annotations

import heapq
import math
from typing import Any, Literal

from ._faults import Endpoint
from ._limits import FixedWindow, TierLimits, check_limits
from ._reply import Reply
from ._stats import StatsRecorder

__all__ = ["KeyQuota", "RatedEndpoint"]

RatedEndpoint = Literal["create", "query"]


class KeyQuota:
    """Admits requests into the rate windows and counts the tasks still running.

    Times are real seconds since the fake started; windows last ``time_scale`` times their
    nominal 1 or 60 seconds.
    """

    __slots__ = ("_limits", "_recorder", "_running", "_time_scale", "_windows")

    def __init__(self, limits: TierLimits, *, time_scale: float, recorder: StatsRecorder) -> None:
        self._time_scale = time_scale
        self._recorder = recorder
        self._running: list[float] = []  # a heap of the unfinished tasks' end times
        self._limits = limits
        self._windows = self._build_windows()

    @property
    def limits(self) -> TierLimits:
        """The limits in force."""
        return self._limits

    @limits.setter
    def limits(self, limits: TierLimits) -> None:
        check_limits(limits)
        self._limits = limits
        self._windows = self._build_windows()

    def _build_windows(self) -> dict[RatedEndpoint, list[FixedWindow]]:
        limits = self._limits
        return {
            "create": self._windows_of(limits.create_per_second, limits.create_per_minute),
            "query": self._windows_of(limits.query_per_second, limits.query_per_minute),
        }

    def _windows_of(self, per_second: int | None, per_minute: int | None) -> list[FixedWindow]:
        return [
            FixedWindow(limit=limit, length=seconds * self._time_scale, nominal_seconds=seconds)
            for limit, seconds in ((per_second, 1), (per_minute, 60))
            if limit is not None
        ]

    # -- rates ----------------------------------------------------------------------------------

    def limit_data(self, wait: float, limit: int | None, nominal_seconds: int) -> dict[str, Any]:
        """The ``data`` of a 429 answer: wait ``wait`` real seconds for a window to reset."""
        window_seconds: float = nominal_seconds * self._time_scale
        if window_seconds.is_integer():
            window_seconds = int(window_seconds)
        return {
            "retryAfter": math.ceil(wait * 1000) / 1000,  # round up: never too early
            "limit": limit,
            "tier": self._limits.name,
            "windowSeconds": window_seconds,
        }

    def full_second(self, endpoint: Endpoint, now: float) -> dict[str, Any]:
        """The ``data`` of a 429 answer as if ``endpoint``'s 1-second window were full now."""
        length = self._time_scale
        per_second = {
            "create": self._limits.create_per_second,
            "query": self._limits.query_per_second,
        }.get(endpoint)
        return self.limit_data(length - now % length, per_second, 1)

    def admit(self, endpoint: RatedEndpoint, now: float) -> Reply | None:
        """Admit the request in every window, or refuse it with 429 counting nothing."""
        windows = self._windows[endpoint]
        waits = [(window.wait(now), window) for window in windows]
        full = [(wait, window) for wait, window in waits if wait > 0]
        if not full:
            for window in windows:
                window.add(now)
            return None
        wait, window = max(full, key=lambda pair: pair[0])
        self._recorder.count("rate_limited")
        self._recorder.count(f"rate_limited_{endpoint}")
        data = self.limit_data(wait, window.limit, window.nominal_seconds)
        retry_after = str(max(1, math.ceil(data["retryAfter"])))
        return Reply.envelope(
            429, "Rate limit exceeded", data, headers=[("retry-after", retry_after)]
        )

    # -- active tasks -----------------------------------------------------------------------------

    def active(self, now: float) -> int:
        """How many tasks are unfinished at ``now`` (forgetting those that have ended)."""
        running = self._running
        while running and running[0] <= now:
            heapq.heappop(running)
        return len(running)

    def start(self, ends_at: float) -> None:
        """Count a new task, running until ``ends_at``."""
        heapq.heappush(self._running, ends_at)
        self._recorder.saw_active(len(self._running))
