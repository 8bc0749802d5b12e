"""The virtual clock (`virtual_time`) and the fake's reading of the event loop's clock.

Every assertion here is on the virtual clock, which a busy machine cannot move.
"""

from __future__ import annotations

import time
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread
import pytest

from nanobanana_async import TextToImage, WaitTimeoutError
from nanobanana_async.testing import FakeNanoBanana, VirtualTimeEventLoop, virtual_time
from nanobanana_async.testing._clock import LoopClock

BACKENDS = ["asyncio", "trio"]


def run(backend: str, func: Any, *args: Any) -> Any:
    name, options = virtual_time(backend)  # type: ignore[arg-type]
    return anyio.run(func, *args, backend=name, backend_options=options)


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_hour_of_sleep_is_an_hour_of_virtual_time(backend: str) -> None:
    async def main() -> float:
        started = anyio.current_time()
        await anyio.sleep(3600)
        return anyio.current_time() - started

    assert run(backend, main) == pytest.approx(3600)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_worker_thread_holds_the_clock_still(backend: str) -> None:
    async def main() -> float:
        started = anyio.current_time()
        # The only timer is the deadline: a clock that jumped while the thread sleeps would
        # reach it, and the call would time out though it took 50 real milliseconds.
        with anyio.fail_after(10):
            for _ in range(5):
                await anyio.to_thread.run_sync(time.sleep, 0.01)
        return anyio.current_time() - started

    assert run(backend, main) < 0.001


@pytest.mark.parametrize("backend", BACKENDS)
def test_timers_still_fire_in_order(backend: str) -> None:
    async def main() -> list[int]:
        fired: list[int] = []

        async def after(seconds: int) -> None:
            await anyio.sleep(seconds)
            fired.append(seconds)

        async with anyio.create_task_group() as group:
            for seconds in (30, 10, 20):
                group.start_soon(after, seconds)
        return fired

    assert run(backend, main) == [10, 20, 30]


def test_an_executor_on_asyncio_holds_the_clock_too() -> None:
    async def main() -> float:
        import asyncio

        loop = asyncio.get_running_loop()
        started = loop.time()
        with anyio.fail_after(10):
            await loop.run_in_executor(None, time.sleep, 0.02)
        return loop.time() - started

    assert run("asyncio", main) < 0.001


def test_every_turn_of_the_asyncio_loop_takes_a_little_time() -> None:
    # A leaky bucket whose level floats a hair above empty must still drain.
    async def main() -> bool:
        before = anyio.current_time()
        await anyio.lowlevel.checkpoint()
        return anyio.current_time() > before

    assert run("asyncio", main)


def test_an_unknown_backend_is_refused() -> None:
    with pytest.raises(ValueError, match="asyncio"):
        virtual_time("curio")  # type: ignore[arg-type]


def test_the_loop_can_be_made_and_closed_on_its_own() -> None:
    loop = VirtualTimeEventLoop()
    try:
        assert loop.time() == 0.0
    finally:
        loop.close()


# -- the fake on the loop's clock -------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_task_that_never_ends_times_out_on_the_virtual_clock(backend: str) -> None:
    async def main() -> tuple[float, str]:
        fake = FakeNanoBanana(duration=10**9)
        async with fake.client() as client:
            started = anyio.current_time()
            with pytest.raises(WaitTimeoutError) as info:
                await client.generate(TextToImage(prompt="forever"), timeout=600)
        return anyio.current_time() - started, info.value.task_id

    waited, task_id = run(backend, main)
    assert waited == pytest.approx(600)
    assert task_id.startswith("task_")


def test_the_loop_clock_stands_still_outside_a_loop_and_goes_on_in_the_next() -> None:
    clock = LoopClock()
    assert clock() == 0.0  # no loop: nothing has passed

    async def wait(seconds: float) -> float:
        clock()  # its time in this loop counts from its first reading in it
        await anyio.sleep(seconds)
        return clock()

    first = run("trio", wait, 5.0)  # trio's clock starts anywhere: the offset hides it
    assert first == pytest.approx(5.0)
    assert clock() == first  # between loops, still
    second = run("asyncio", wait, 2.0)
    assert second == pytest.approx(7.0)  # goes on from where it was, never back


def test_a_fake_made_outside_a_loop_starts_its_time_at_its_first_question() -> None:
    fake = FakeNanoBanana(duration=60.0, tier=None)

    async def main() -> tuple[float, bool, bool]:
        await anyio.sleep(1000)  # before the fake is asked anything
        async with fake.client() as client:
            task_id = await client.create_task(TextToImage(prompt="a banana"))
            await anyio.sleep(59)
            early = (await client.get_task(task_id)).is_finished
            await anyio.sleep(2)
            late = (await client.get_task(task_id)).is_finished
            return fake.elapsed, early, late

    elapsed, early, late = run("asyncio", main)
    assert elapsed == pytest.approx(61, abs=0.01)  # its time began at its first question
    assert (early, late) == (False, True)  # a task of 60 s, to the second
