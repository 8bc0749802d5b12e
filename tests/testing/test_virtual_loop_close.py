"""Closing a `VirtualTimeEventLoop`: its default executor's threads are joined, not left."""

from __future__ import annotations

import asyncio
import threading
import time

from nanobanana_async.testing import VirtualTimeEventLoop


def test_closing_the_loop_joins_the_threads_of_its_default_executor() -> None:
    async def main() -> None:
        # The default executor (getaddrinfo's, and this call's) starts a thread.
        await asyncio.get_running_loop().run_in_executor(None, time.sleep, 0.01)

    before = set(threading.enumerate())
    # From Python 3.12 the runner gives the join 300 seconds: on a clock that jumps, none.
    with asyncio.Runner(loop_factory=VirtualTimeEventLoop) as runner:
        runner.run(main())
    assert set(threading.enumerate()) <= before
