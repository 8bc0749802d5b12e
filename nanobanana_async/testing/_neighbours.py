"""Other consumers of the fake's key: slots of the active-task cap held for a while."""

from __future__ import annotations

import math
from collections.abc import Callable
from types import TracebackType

__all__ = ["Neighbour"]


class Neighbour:
    """Another consumer of the key, holding ``slots`` of its active-task cap for a while.

    Made by `FakeNanoBanana.neighbour`. Its slots count against the cap like the client's
    tasks: the provider's 409 then reports them in ``active``. They are taken at once, even
    if that puts the key over its cap (the client's creates get 409 until enough of its own
    tasks finish). Use it as a context manager (``with`` or ``async with``) to hold the slots
    for a block, or call `leave`. Times are seconds since the fake started, on its clock.
    """

    __slots__ = ("_elapsed", "_left_at", "slots", "started_at")

    def __init__(
        self, *, slots: int, started_at: float, left_at: float, elapsed: Callable[[], float]
    ) -> None:
        self.slots = slots
        """The slots held."""
        self.started_at = started_at
        """When the neighbour took its slots."""
        self._left_at = left_at
        self._elapsed = elapsed

    @property
    def left_at(self) -> float | None:
        """When the neighbour gives (or gave) its slots back; ``None`` until it is known."""
        return None if math.isinf(self._left_at) else self._left_at

    @property
    def holding(self) -> bool:
        """Whether the neighbour holds its slots now."""
        return self.holds_at(self._elapsed())

    def holds_at(self, at: float) -> bool:
        """Whether the neighbour holds its slots at ``at`` seconds since the start."""
        return self.started_at <= at < self._left_at

    def leave(self) -> None:
        """Give the slots back now (nothing happens if they are already back)."""
        self._left_at = min(self._left_at, self._elapsed())

    # The sync and async context manager protocols: deliberate twins, both leave on exit.
    def __enter__(self) -> Neighbour:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.leave()

    async def __aenter__(self) -> Neighbour:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.leave()

    def __repr__(self) -> str:
        return f"<Neighbour slots={self.slots} {'holding' if self.holding else 'left'}>"
