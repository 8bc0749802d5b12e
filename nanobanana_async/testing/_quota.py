"""The key's limits in force: its rate windows per endpoint and its count of active tasks.

The active tasks are the client's (tasks created through the fake) and the slots held by
other consumers of the key (`Neighbour`); both count against the cap.
"""

from __future__ import annotations

import heapq
import math
from typing import Any, Literal

from ._faults import Endpoint
from ._limits import FixedWindow, TierLimits, check_limits
from ._neighbours import Neighbour
from ._reply import Reply
from ._stats import StatsRecorder

__all__ = ["KeyQuota", "RatedEndpoint"]

RatedEndpoint = Literal["create", "query"]


class KeyQuota:
    """Admits requests into the rate windows and counts the tasks still running.

    Times are seconds since the fake started, on its clock; windows last ``time_scale`` times their
    nominal 1 or 60 seconds.
    """

    __slots__ = ("_limits", "_neighbours", "_recorder", "_running", "_time_scale", "_windows")

    def __init__(self, limits: TierLimits, *, time_scale: float, recorder: StatsRecorder) -> None:
        self._time_scale = time_scale
        self._recorder = recorder
        self._running: list[float] = []  # a heap of the unfinished tasks' end times
        self._neighbours: list[Neighbour] = []  # those that may still hold slots
        self._limits = limits
        self._windows: dict[RatedEndpoint, tuple[FixedWindow, FixedWindow]] = {
            endpoint: (
                FixedWindow(limit=None, length=time_scale, nominal_seconds=1),
                FixedWindow(limit=None, length=60 * time_scale, nominal_seconds=60),
            )
            for endpoint in ("create", "query")
        }
        self._apply_limits()

    @property
    def limits(self) -> TierLimits:
        """The limits in force."""
        return self._limits

    @limits.setter
    def limits(self, limits: TierLimits) -> None:
        check_limits(limits)
        self._limits = limits
        self._apply_limits()

    def _apply_limits(self) -> None:
        """Set the windows' limits; what they counted so far stays, so a change bites at once."""
        limits = self._limits
        second, minute = self._windows["create"]
        second.limit, minute.limit = limits.create_per_second, limits.create_per_minute
        second, minute = self._windows["query"]
        second.limit, minute.limit = limits.query_per_second, limits.query_per_minute

    # -- rates ----------------------------------------------------------------------------------

    def limit_data(self, wait: float, limit: int | None, nominal_seconds: int) -> dict[str, Any]:
        """The ``data`` of a 429 answer: wait ``wait`` seconds for a window to reset."""
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
        """How many of the client's tasks are unfinished at ``now`` (forgetting ended ones)."""
        running = self._running
        while running and running[0] <= now:
            heapq.heappop(running)
        return len(running)

    def start(self, ends_at: float) -> None:
        """Count a new task, running until ``ends_at``."""
        heapq.heappush(self._running, ends_at)
        self._recorder.saw_active(len(self._running))

    def add_neighbour(self, neighbour: Neighbour) -> None:
        """Count ``neighbour``'s slots while it holds them."""
        self._neighbours.append(neighbour)

    def neighbour_slots(self, now: float) -> int:
        """How many slots other consumers hold at ``now`` (forgetting those that left)."""
        staying = [n for n in self._neighbours if n.left_at is None or n.left_at > now]
        self._neighbours = staying
        return sum(n.slots for n in staying if n.holds_at(now))

    def key_active(self, now: float) -> int:
        """The key's active tasks at ``now``: the client's and the neighbours' slots."""
        return self.active(now) + self.neighbour_slots(now)
