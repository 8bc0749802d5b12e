"""Waiting by class: interactive callers first, each class in order of arrival.

`PrioritySlots` is a capacity limiter whose size may change while slots are held (the
active-task cap moves both ways) and whose waiters are served by class: a free slot goes to
the oldest interactive waiter, and to a background one only while no interactive caller waits
and the slots it would leave free are at least the room it must keep for others. `PriorityGate`
lets one caller at a time through (an endpoint's pacer), by the same order.
"""

from __future__ import annotations

import collections
import contextlib
from collections.abc import AsyncGenerator, Callable

import anyio

from ._protocols import Priority

__all__ = ["PRIORITIES", "PriorityGate", "PrioritySlots"]

PRIORITIES: tuple[Priority, ...] = ("interactive", "background")
"""The classes, first served first."""


class _Waiter:
    __slots__ = ("event", "granted", "headroom", "holder")

    def __init__(self, holder: object, headroom: int) -> None:
        self.holder = holder
        self.headroom = headroom
        self.event = anyio.Event()
        self.granted = False


def _as_asked(headroom: int) -> int:
    return headroom


def _no_reach() -> int:
    return 0


class PrioritySlots:
    """A resizable count of slots, handed out by class, then in order of arrival.

    A background caller asks for a ``headroom``: slots to leave free for others. How many
    that means now (``keep_free``) is decided each time a slot is handed out, so it follows
    what the owner learns (by default it is the headroom asked for). An interactive caller
    may go ``reach`` slots past the total (the owner's estimate of its room may be cautious
    where a person waits: the provider says no with a 409 if there is no room after all).

    Args:
        total: How many slots there are.
        keep_free: Maps a background caller's headroom to the slots it must leave free now.
        reach: How many slots past the total interactive callers may hold now.
    """

    def __init__(
        self,
        total: int,
        keep_free: Callable[[int], int] = _as_asked,
        reach: Callable[[], int] = _no_reach,
    ) -> None:
        self._total = total
        self._keep_free = keep_free
        self._reach = reach
        self._holders: set[object] = set()
        self._queues: dict[Priority, collections.deque[_Waiter]] = {
            priority: collections.deque() for priority in PRIORITIES
        }

    @property
    def total(self) -> int:
        """How many slots there are; may change while slots are held."""
        return self._total

    @total.setter
    def total(self, total: int) -> None:
        self._total = total
        self._grant()

    @property
    def borrowed(self) -> int:
        """Slots held now."""
        return len(self._holders)

    def waiting(self, priority: Priority | None = None) -> int:
        """Callers waiting (of one class, or of all)."""
        if priority is not None:
            return len(self._queues[priority])
        return sum(len(queue) for queue in self._queues.values())

    def _fits(self, priority: Priority, headroom: int, total: int | None = None) -> bool:
        total = self._total if total is None else total
        if priority == "interactive":
            return len(self._holders) < total + self._reach()
        if self._queues["interactive"]:
            return False  # a slot freed while an interactive caller waits is its
        return len(self._holders) + self._keep_free(headroom) < total

    def next_fits(self, total: int) -> bool:
        """Whether the next waiter (by class) would get a slot if there were ``total``."""
        for priority in PRIORITIES:
            queue = self._queues[priority]
            if queue:
                return self._fits(priority, queue[0].headroom, total)
        return False

    def try_acquire(self, holder: object, priority: Priority, headroom: int = 0) -> bool:
        """Take a slot now if one is free for this class and nobody of it waits earlier."""
        if self._queues[priority] or not self._fits(priority, headroom):
            return False
        self._holders.add(holder)
        return True

    async def acquire(self, holder: object, priority: Priority, headroom: int = 0) -> None:
        """Wait for a slot and hold it for ``holder``.

        Args:
            holder: Who holds the slot (released by `release`).
            priority: The waiter's class.
            headroom: For a background waiter: slots to leave free for others (see
                ``keep_free``), checked whenever a slot is handed out.
        """
        if self.try_acquire(holder, priority, headroom):
            await anyio.lowlevel.checkpoint()
            return
        waiter = _Waiter(holder, headroom)
        queue = self._queues[priority]
        queue.append(waiter)
        try:
            await waiter.event.wait()
        except BaseException:
            if waiter.granted:
                self.release(holder)  # granted as it was cancelled: pass the slot on
            else:
                queue.remove(waiter)
                self._grant()  # a background waiter behind it may fit now
            raise

    def release(self, holder: object) -> None:
        """Give ``holder``'s slot back (nothing if it holds none) and hand it on."""
        if holder in self._holders:
            self._holders.discard(holder)
            self._grant()

    def regrant(self) -> None:
        """Hand out what fits again (the room to keep for others may have changed)."""
        self._grant()

    def _grant(self) -> None:
        for priority in PRIORITIES:
            queue = self._queues[priority]
            while queue and self._fits(priority, queue[0].headroom):
                waiter = queue.popleft()
                waiter.granted = True
                self._holders.add(waiter.holder)
                waiter.event.set()
            if queue:
                return  # the oldest of this class waits: no later class goes ahead of it


class PriorityGate:
    """Lets one caller at a time through; the next is the oldest of the first class waiting."""

    def __init__(self) -> None:
        self._slots = PrioritySlots(1)

    @property
    def busy(self) -> bool:
        """Whether a caller is through the gate, or waits for it."""
        return self._slots.borrowed > 0 or self._slots.waiting() > 0

    def waiting(self, priority: Priority) -> int:
        """Callers of ``priority`` waiting for the gate."""
        return self._slots.waiting(priority)

    @contextlib.asynccontextmanager
    async def hold(self, priority: Priority) -> AsyncGenerator[None, None]:
        """Hold the gate for the block."""
        holder = object()
        await self._slots.acquire(holder, priority)
        try:
            yield
        finally:
            self._slots.release(holder)
