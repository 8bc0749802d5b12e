"""Virtual time: an anyio backend whose clock jumps ahead whenever every task is waiting.

``virtual_time("trio")`` and ``virtual_time("asyncio")`` return an anyio backend spec (a name
and its options) for ``anyio.run`` or the ``anyio_backend`` pytest fixture. Under it, a sleep,
a deadline or a fake task that ends in ten minutes takes no real time: when no task can run,
the clock moves straight to the next timer. Runs are deterministic on asyncio (the loop runs
ready callbacks in order); trio shuffles each batch of ready tasks on purpose.

Work in threads (anyio's ``to_thread``: the journal's SQLite, saved files, image reads) takes
real time but no virtual time: while a worker thread runs, the clock stands still and the
loop waits for it, so a thread's work can never look like a deadline that passed. Real
sockets are not covered: a test that waits on a loopback server would see the clock jump
before the answer arrives; run those in real time.

Why our own and not looptime on asyncio: looptime does not see anyio's worker threads, so the
clock may jump to a deadline while a file is written, and its pytest plugin breaks a test
session without pytest-asyncio. This is the one module of the package that imports asyncio:
it *is* an asyncio event loop, for tests; the library's own logic never touches asyncio.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import math
import selectors
import weakref
from collections.abc import Callable
from typing import Any, Literal, TypeVar, TypeVarTuple, Unpack, cast

import anyio.to_thread

__all__ = ["VirtualTimeEventLoop", "virtual_time"]

_T = TypeVar("_T")
_Ts = TypeVarTuple("_Ts")

_THREAD_WAIT = 0.05
"""Real seconds the loop waits at a time for a busy worker thread (it wakes when it ends)."""
_TURN = 1e-9
"""Virtual seconds each turn of the asyncio loop takes: time always moves, as a real clock's
does, so code that waits for a rounding error to drain (a leaky bucket's level that floats
a hair above zero) still gets there."""


def virtual_time(backend: Literal["asyncio", "trio"] = "asyncio") -> tuple[str, dict[str, Any]]:
    """An anyio backend on a virtual clock: time jumps ahead whenever every task waits.

    Use it as the ``anyio_backend`` fixture of pytest's anyio plugin::

        @pytest.fixture(params=["asyncio", "trio"])
        def anyio_backend(request):
            return virtual_time(request.param)

    or with ``anyio.run(main, backend=name, backend_options=options)``. Each call makes a new
    clock, starting at 0. On trio it is `trio.testing.MockClock` with an autojump threshold
    of 0, told to wait while a worker thread runs; on asyncio an event loop with the same
    behaviour (`VirtualTimeEventLoop`).

    Args:
        backend: ``"asyncio"`` or ``"trio"``.

    Returns:
        ``(backend, options)``, as anyio's ``anyio_backend`` fixture and ``anyio.run`` take.

    Raises:
        ValueError: For another backend.
    """
    if backend == "asyncio":
        return "asyncio", {"loop_factory": VirtualTimeEventLoop}
    if backend == "trio":
        return "trio", _trio_options()
    raise ValueError(f"virtual time runs on 'asyncio' or 'trio', not {backend!r}")


class VirtualTimeEventLoop(asyncio.SelectorEventLoop):
    """An asyncio event loop whose `time` is virtual, starting at 0.

    When no callback is ready, no I/O is ready and no worker thread is busy, the loop moves
    its clock to the next timer at once instead of sleeping. With nothing scheduled it waits
    for I/O as any loop does (a worker thread's end, a socket).
    """

    def __init__(self) -> None:
        super().__init__()
        self._virtual_now = 0.0
        self._executor_futures: weakref.WeakSet[asyncio.Future[Any]] = weakref.WeakSet()
        self._thread_limiter: anyio.CapacityLimiter | None = None
        selector = cast("selectors.BaseSelector", self._selector)  # type: ignore[attr-defined]
        real_select = selector.select

        def select(timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
            self._virtual_now += _TURN
            ready = real_select(0)
            if ready or timeout == 0:
                return ready
            if timeout is None:  # nothing scheduled: only I/O or a thread can wake us
                return real_select(None)
            if self._threads_busy():
                return real_select(min(timeout, _THREAD_WAIT))
            self._virtual_now += max(0.0, timeout - _TURN)
            return []

        selector.select = select  # type: ignore[method-assign]

    def time(self) -> float:
        """The virtual time, in seconds since the loop was made."""
        return self._virtual_now

    def run_in_executor(
        self,
        executor: concurrent.futures.Executor | None,
        func: Callable[[Unpack[_Ts]], _T],
        *args: Unpack[_Ts],
    ) -> asyncio.Future[_T]:
        """As asyncio's, and the clock waits while the work runs."""
        future = super().run_in_executor(executor, func, *args)
        self._executor_futures.add(future)
        return future

    def _threads_busy(self) -> bool:
        if any(not future.done() for future in self._executor_futures):
            return True
        if self._thread_limiter is None:
            # Outside a task, anyio asks sniffio which library runs; tell it, in a copy.
            context = contextvars.copy_context()
            context.run(_declare_asyncio)
            self._thread_limiter = context.run(anyio.to_thread.current_default_thread_limiter)
        return self._thread_limiter.borrowed_tokens > 0


def _declare_asyncio() -> None:
    try:
        import sniffio
    except ImportError:  # pragma: no cover - anyio then detects asyncio by its running loop
        return
    sniffio.current_async_library_cvar.set("asyncio")


def _nothing() -> None:
    """A callback that only wakes the run loop."""


def _trio_options() -> dict[str, Any]:
    import trio
    import trio.testing

    clock = trio.testing.MockClock(autojump_threshold=0)

    class ThreadWatch(trio.abc.Instrument):
        """Holds the clock still while a worker thread runs.

        Checked once per turn of the run loop, before it waits: a change of the threshold
        counts from the next turn, so this turn is woken at once (a no-op callback), lest it
        jump (or sleep) by the stale one.
        """

        threshold = 0.0
        token: trio.lowlevel.TrioToken | None = None

        def before_io_wait(self, timeout: float) -> None:
            threshold = math.inf if trio.testing.active_thread_count() else 0.0
            if threshold != self.threshold:
                self.threshold = clock.autojump_threshold = threshold
                if self.token is None:
                    self.token = trio.lowlevel.current_trio_token()
                self.token.run_sync_soon(_nothing)

    return {"clock": clock, "instruments": [ThreadWatch()]}
