"""Changes to the fake planned ahead: each runs at its time, as the fake reads its clock.

The fake decides everything lazily, when it is asked, so a change due at ``t`` and run just
before the first question after ``t`` (with the fake's clock reading ``t`` meanwhile) looks
the same to every client as one run at ``t`` exactly, on any event loop or none.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["Schedule"]

T = TypeVar("T")


class Schedule(Generic[T]):
    """Changes (callables taking the fake) by the time they are due, earliest first."""

    __slots__ = ("_heap", "_order")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Callable[[T], object]]] = []
        self._order = 0  # keeps changes due at the same time in the order given

    @property
    def next_at(self) -> float:
        """When the next change is due (infinity if none is)."""
        return self._heap[0][0] if self._heap else math.inf

    def add(self, at: float, change: Callable[[T], object]) -> None:
        """Plan ``change`` for ``at`` seconds since the fake started."""
        heapq.heappush(self._heap, (at, self._order, change))
        self._order += 1

    def pop_due(self, now: float) -> tuple[float, Callable[[T], object]] | None:
        """Take the earliest change due at ``now`` or before, with its time; ``None`` if none."""
        if not self._heap or self._heap[0][0] > now:
            return None
        at, _, change = heapq.heappop(self._heap)
        return at, change

    def __len__(self) -> int:
        return len(self._heap)
