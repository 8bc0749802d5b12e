"""`ActiveTaskLimiter`: the adaptive cap on the tasks one key has running, in this process.

An `anyio.CapacityLimiter` whose size is learned: raised while creates succeed, cut to the level
seen at a 409, and re-probed upward after a long quiet spell. A create that met a 409 waits for
the next slot release, not a blind timer.
"""

from __future__ import annotations

import anyio

from ._base import SlotsBase, cap_after_conflict, grown_cap

__all__ = ["ActiveTaskLimiter"]


class ActiveTaskLimiter(SlotsBase):
    """An adaptive cap on the tasks this key has running on the provider, in this process.

    The in-process twin of `RedisActiveTaskLimiter`: both implement `ActiveSlots` on the
    shared `SlotsBase`; this one keeps its slots in an `anyio.CapacityLimiter`, whose size can
    change while tokens are held. The limiter is made on first use, so a client can be built
    outside an event loop.

    Args:
        limit: The known cap, or None to learn it (starting at ``initial``).
        initial: The starting cap while the limit is unknown.
        probe_after: Creates accepted at the learned cap before trying one more slot.
    """

    def __init__(self, limit: int | None = None, *, initial: int = 2, probe_after: int = 200):
        super().__init__(limit, initial=initial)
        self._limiter: anyio.CapacityLimiter | None = None
        self._probe_after = probe_after
        self._accepted_at_cap = 0

    def _capacity(self) -> anyio.CapacityLimiter:
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self._limit)
        return self._limiter

    def _resize(self, total: int) -> None:
        self._limit = total
        if self._limiter is not None:
            self._limiter.total_tokens = total

    @property
    def waiting(self) -> int:
        """Callers waiting for a slot."""
        return 0 if self._limiter is None else self._limiter.statistics().tasks_waiting

    async def acquire(self, holder: object) -> None:
        """Wait for a free slot and hold it for ``holder``."""
        await self._capacity().acquire_on_behalf_of(holder)
        self._hold(holder)

    def on_created(self) -> None:
        """A create was accepted: raise the cap while learning, re-probe once in a while."""
        if not self.known:
            grown = grown_cap(self.limit, self.active, self.running)
            if grown != self.limit:
                self._resize(grown)
            return
        if self.active >= self.limit and self.waiting:
            self._accepted_at_cap += 1
            if self._accepted_at_cap >= self._probe_after:
                self._accepted_at_cap = 0
                self._resize(self.limit + 1)

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

    def _on_release(self, holder: object, member: str) -> None:
        self._capacity().release_on_behalf_of(holder)

    def _fix_limit(self, limit: int) -> None:
        self._resize(limit)

    def _learn_conflict(self, stated: int | None) -> None:
        self._accepted_at_cap = 0
        cap = cap_after_conflict(self.limit, self.running, stated)
        if cap is not None:
            self.known = True
            self._resize(cap)
