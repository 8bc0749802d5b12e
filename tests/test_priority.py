"""Priority on one key, in process: interactive callers first, background work keeps room.

`PrioritySlots` and `PriorityGate` order the waiters; `kept_free` and `shows_others` are the
rules both backends share (the Redis ones are in ``test_redis_limits``). Time is virtual.
"""

from __future__ import annotations

import anyio
import pytest

from nanobanana_async.limits import ActiveTaskLimiter, EndpointLimiter, Priority
from nanobanana_async.limits._base import COURTESY_SECONDS, kept_free, shows_others
from nanobanana_async.limits._queue import PriorityGate, PrioritySlots


async def _settle() -> None:
    """Let every task that can run do so (the virtual clock does not move)."""
    for _ in range(10):
        await anyio.lowlevel.checkpoint()


class TestRules:
    def test_no_room_is_kept_unless_asked_or_courteous(self) -> None:
        assert kept_free(0, courtesy=False, neighbours=0, limit=10) == 0
        assert kept_free(2, courtesy=False, neighbours=0, limit=10) == 2
        assert kept_free(0, courtesy=True, neighbours=0, limit=10) == 1
        assert kept_free(2, courtesy=True, neighbours=0, limit=10) == 2

    def test_slots_already_left_to_others_count_toward_the_room(self) -> None:
        assert kept_free(3, courtesy=False, neighbours=2, limit=10) == 1
        assert kept_free(0, courtesy=True, neighbours=1, limit=10) == 0

    def test_background_work_may_always_hold_one_slot(self) -> None:
        assert kept_free(5, courtesy=True, neighbours=0, limit=3) == 2
        assert kept_free(5, courtesy=True, neighbours=0, limit=1) == 0

    def test_a_409_shows_others_when_our_slots_cannot_explain_it(self) -> None:
        assert not shows_others(None, None, 3)  # a bare 409: nothing told
        assert not shows_others(4, None, 4)  # the cap named, and we hold all of it
        assert shows_others(5, None, 4)  # a cap above what we hold: the rest is someone's
        assert not shows_others(None, 3, 4)  # 3 active of our 4 (one is the refused create)
        assert shows_others(None, 5, 4)


class TestPrioritySlots:
    @pytest.mark.anyio
    async def test_a_freed_slot_goes_to_the_interactive_waiter_first(self) -> None:
        slots = PrioritySlots(1)
        first = object()
        assert slots.try_acquire(first, "interactive")
        order: list[str] = []

        async def take(name: str, priority: Priority) -> None:
            holder = object()
            await slots.acquire(holder, priority)
            order.append(name)
            await anyio.sleep(1)
            slots.release(holder)

        async with anyio.create_task_group() as tg:
            for name, priority in (
                ("batch 1", "background"),
                ("batch 2", "background"),
                ("visitor 1", "interactive"),
                ("visitor 2", "interactive"),
            ):
                tg.start_soon(take, name, priority)
                await _settle()  # they arrive in this order
            assert (slots.waiting("interactive"), slots.waiting("background")) == (2, 2)
            slots.release(first)
        # Interactive first, then background; each class in order of arrival.
        assert order == ["visitor 1", "visitor 2", "batch 1", "batch 2"]
        assert slots.borrowed == 0

    @pytest.mark.anyio
    async def test_background_work_waits_while_an_interactive_caller_does(self) -> None:
        slots = PrioritySlots(2)
        held = object()
        assert slots.try_acquire(held, "interactive")
        assert slots.try_acquire(object(), "interactive")
        async with anyio.create_task_group() as tg:
            tg.start_soon(slots.acquire, object(), "interactive")
            await _settle()
            # Even a fresh caller: a slot freed while an interactive caller waits is its.
            assert not slots.try_acquire(object(), "background")
            slots.release(held)
        assert slots.waiting() == 0
        assert slots.borrowed == 2
        assert not slots.try_acquire(object(), "background")  # and none is free

    @pytest.mark.anyio
    async def test_background_work_leaves_its_headroom_to_others(self) -> None:
        slots = PrioritySlots(3)
        assert slots.try_acquire(object(), "background", headroom=1)
        assert slots.try_acquire(object(), "background", headroom=1)
        assert not slots.try_acquire(object(), "background", headroom=1)
        assert slots.try_acquire(object(), "background")  # asked for no headroom
        slots.total = 4
        assert slots.try_acquire(object(), "interactive")  # the room was kept for it
        assert slots.borrowed == 4

    @pytest.mark.anyio
    async def test_a_cancelled_waiter_lets_the_next_of_its_class_go(self) -> None:
        slots = PrioritySlots(3)
        assert slots.try_acquire(object(), "background")
        modest = object()
        async with anyio.create_task_group() as tg, anyio.create_task_group() as greedy:
            greedy.start_soon(slots.acquire, object(), "background", 2)  # must leave 2
            await _settle()
            tg.start_soon(slots.acquire, modest, "background")  # would fit: waits its turn
            await _settle()
            assert slots.waiting("background") == 2
            greedy.cancel_scope.cancel()
        assert slots.borrowed == 2  # the modest one's
        assert slots.waiting() == 0


class TestActiveTaskLimiter:
    @pytest.mark.anyio
    async def test_a_409_that_shows_a_neighbour_keeps_a_slot_free_for_a_while(self) -> None:
        limiter = ActiveTaskLimiter(4)
        held = [object(), object()]
        for holder in held:
            await limiter.acquire(holder)
            limiter.mark_running(holder)
        assert limiter.keep_free(0) == 0
        limiter.on_conflict(5)  # the key's cap is 5 and we hold 2: someone holds the rest
        assert limiter.limit == 5
        assert limiter.keep_free(0) == 1
        await limiter.acquire(object(), "background")
        await limiter.acquire(object(), "background")
        async with anyio.create_task_group() as tg:
            batch = object()
            tg.start_soon(limiter.acquire, batch, "background")
            await _settle()
            assert limiter.waiting == 1  # 4 of 5 held: the last is left to the neighbour
            await anyio.sleep(COURTESY_SECONDS)  # no 409 since: the courtesy ends
            assert limiter.keep_free(0) == 0
            limiter.release(held[0])  # a release hands the slot out again, by the rule now
        assert limiter.holds(batch)
        assert limiter.active == 4

    @pytest.mark.anyio
    async def test_interactive_callers_are_served_first(self) -> None:
        limiter = ActiveTaskLimiter(1)
        first = object()
        await limiter.acquire(first, "background")
        order: list[Priority] = []

        async def take(priority: Priority) -> None:
            holder = object()
            await limiter.acquire(holder, priority)
            order.append(priority)
            limiter.release(holder)

        async with anyio.create_task_group() as tg:
            tg.start_soon(take, "background")
            await _settle()
            tg.start_soon(take, "interactive")
            await _settle()
            limiter.release(first)
        assert order == ["interactive", "background"]


class TestPriorityGate:
    @pytest.mark.anyio
    async def test_the_gate_lets_interactive_callers_through_first(self) -> None:
        gate = PriorityGate()
        order: list[str] = []

        async def through(name: str, priority: Priority) -> None:
            async with gate.hold(priority):
                order.append(name)
                await anyio.sleep(1)

        async with anyio.create_task_group() as tg:
            tg.start_soon(through, "batch 1", "background")
            await _settle()
            tg.start_soon(through, "batch 2", "background")
            await _settle()
            tg.start_soon(through, "visitor", "interactive")
            await _settle()
            assert gate.busy
            assert gate.waiting("interactive") == 1
        assert order == ["batch 1", "visitor", "batch 2"]
        assert not gate.busy

    @pytest.mark.anyio
    async def test_an_interactive_request_goes_ahead_of_waiting_background_ones(self) -> None:
        pacer = EndpointLimiter("create", windows=((1, 1.0),))
        await pacer.acquire("background")  # the window's one place, for a second
        order: list[str] = []

        async def send(name: str, priority: Priority) -> None:
            await pacer.acquire(priority)
            order.append(name)

        async with anyio.create_task_group() as tg:
            for name, priority in (
                ("batch 1", "background"),
                ("batch 2", "background"),
                ("visitor", "interactive"),
            ):
                tg.start_soon(send, name, priority)
                await _settle()
        assert order.index("visitor") < order.index("batch 2")
        assert len(order) == 3
