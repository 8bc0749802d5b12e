"""The fake provider's default clock: the clock of the event loop that asks it.

The fake decides everything lazily from "seconds since it started", read when it is asked
something. Reading the running event loop's clock (anyio's ``current_time``) makes the fake
share the client's notion of time, so under a virtual clock (`virtual_time`, trio's
``MockClock``) a task of ten minutes ends when the loop's clock says so, at once in real time.
"""

from __future__ import annotations

import collections

import anyio
import anyio.lowlevel

__all__ = ["LoopClock"]

_LOOPS_REMEMBERED = 8


class LoopClock:
    """Seconds since first read, on the clock of whichever event loop reads it.

    Loops' clocks have arbitrary origins (trio's even a random one), so each loop the clock
    meets is given an offset that makes its time continue from the last reading; two loops
    running at once (a server in a portal thread, a test in another) each keep their own.
    Outside any event loop the time stands still at its last reading. It never goes back.
    """

    __slots__ = ("_last", "_offsets")

    def __init__(self) -> None:
        self._last = 0.0
        self._offsets: collections.OrderedDict[object, float] = collections.OrderedDict()

    def __call__(self) -> float:
        """The seconds elapsed, as the running loop's clock counts them."""
        try:
            loop = anyio.lowlevel.current_token().native_token
            now = anyio.current_time()
        except anyio.NoEventLoopError:
            return self._last
        offset = self._offsets.get(loop)
        if offset is None:
            offset = self._offsets[loop] = now - self._last
            while len(self._offsets) > _LOOPS_REMEMBERED:
                self._offsets.popitem(last=False)
        self._last = max(self._last, now - offset)
        return self._last
