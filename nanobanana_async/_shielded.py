"""Work that runs to its end whatever cancels its caller: opening and closing a resource.

`anyio.CancelScope(shield=True)` keeps out anyio's cancellation (and trio's), but not a
native asyncio one: ``task.cancel()``, ``asyncio.timeout``, or `asyncio.run` cancelling its
main task on Ctrl-C raise `asyncio.CancelledError` at whatever the task awaits, shield or not.
Awaiting a worker thread then drops the thread's result: a file it opened is never closed, a
write it was handed may never be made.

`run_shielded` runs the work in a task of its own, under a shield. The caller's task group waits
for that task even when the caller is cancelled natively, so the work always finishes; then
the caller's cancellation goes on, and what the work made for a caller that is gone is undone.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio

__all__ = ["run_shielded"]

T = TypeVar("T")


async def run_shielded(
    work: Callable[[], Awaitable[T]],
    *,
    undo: Callable[[T], Awaitable[object]] | None = None,
) -> T:
    """Await ``work()`` to its end, even if the caller is cancelled meanwhile.

    Args:
        work: The work, e.g. a call in a worker thread that opens a file or writes to it.
        undo: Called (also to its end) with what ``work`` returned when the caller is
            cancelled before it could take it: closes what ``work`` opened.

    Returns:
        What ``work`` returned.

    Raises:
        BaseException: What ``work`` raised; or the caller's cancellation, once ``work`` is
            done (and undone).
    """
    results: list[T] = []
    errors: list[BaseException] = []

    async def run() -> None:
        with anyio.CancelScope(shield=True):
            try:
                results.append(await work())
            except BaseException as exc:  # raised in the caller, not as a task group's error
                errors.append(exc)

    try:
        async with anyio.create_task_group() as group:
            group.start_soon(run)
    except BaseException:
        if results and undo is not None:
            made = results[0]
            await run_shielded(lambda: undo(made))
        raise
    if errors:
        raise errors[0]
    return results[0]
