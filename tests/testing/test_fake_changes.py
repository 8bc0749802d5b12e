"""The fake changing under a run: tier and limit changes, neighbours holding slots, schedules.

The rules are checked on a manual clock through `FakeNanoBanana.handle`; then end to end, in
process and over loopback, on asyncio and trio.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from nanobanana_async import AsyncNanoBanana, BatchRunner, TextToImage
from nanobanana_async.testing import TIERS, FakeNanoBanana, Neighbour, TierLimits

MakeFake = Callable[..., FakeNanoBanana]
ApiFor = Callable[[FakeNanoBanana], Any]  # conftest's Api
ManualClock = Any  # conftest's ManualClock


# -- tiers and limits ---------------------------------------------------------------------------


def test_set_tier_raises_the_active_cap_at_once(make_fake: MakeFake, api_for: ApiFor) -> None:
    fake = make_fake(tier="free", create_per_second=100)
    api = api_for(fake)
    api.task_id()
    assert api.create()[1]["data"] == {"limit": 1, "active": 1}
    assert fake.set_tier("standard") == TIERS["standard"]
    assert fake.limits == TIERS["standard"]
    api.task_id()  # the second task runs beside the first
    assert fake.stats.active == 2


def test_set_tier_with_overrides_and_a_downgrade(make_fake: MakeFake, api_for: ApiFor) -> None:
    fake = make_fake(tier="pro")
    api = api_for(fake)
    for _ in range(3):
        api.task_id()
    fake.set_tier("basic", max_active=2, create_per_second=100)
    assert fake.tier == "basic"
    # Running tasks go on; new ones wait for the key to be under its new cap.
    assert api.create()[1]["data"] == {"limit": 2, "active": 3}
    assert fake.stats.active == 3


def test_a_lower_rate_bites_in_the_window_in_progress(
    make_fake: MakeFake, api_for: ApiFor, clock: ManualClock
) -> None:
    fake = make_fake()
    api = api_for(fake)
    for _ in range(3):
        api.task_id()
    assert fake.set_limits(create_per_second=2).create_per_second == 2
    status, body = api.create()
    assert status == 429
    assert body["data"]["limit"] == 2
    clock.advance(1.0)
    api.task_id()
    api.task_id()
    assert api.create()[0] == 429
    fake.set_limits(create_per_second=None)  # lifted: no window refuses
    api.task_id()


def test_set_limits_keeps_the_other_limits_and_the_tier_name(make_fake: MakeFake) -> None:
    fake = make_fake(tier="basic")
    limits = fake.set_limits(max_active=15, query_per_second=None)
    assert limits == TierLimits(
        name="basic",
        create_per_second=TIERS["basic"].create_per_second,
        create_per_minute=TIERS["basic"].create_per_minute,
        query_per_second=None,
        query_per_minute=TIERS["basic"].query_per_minute,
        max_active=15,
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"max_active": 0}, "max_active must be >= 1"),
        ({"max_tasks": 3}, "unknown limits"),
        ({"name": "pro"}, "unknown limits"),
    ],
)
def test_impossible_limit_changes_change_nothing(
    make_fake: MakeFake, change: dict[str, Any], message: str
) -> None:
    fake = make_fake(tier="basic")
    with pytest.raises(ValueError, match=message):
        fake.set_limits(**change)
    with pytest.raises(ValueError, match=message):
        fake.set_tier("pro", **change)
    assert fake.limits == TIERS["basic"]


def test_set_tier_refuses_an_unknown_tier(make_fake: MakeFake) -> None:
    fake = make_fake(tier="basic")
    with pytest.raises(ValueError, match="unknown tier 'gold'"):
        fake.set_tier("gold")
    assert fake.set_tier(None) == TierLimits(name="custom")


# -- neighbours ---------------------------------------------------------------------------------


def test_a_neighbour_holds_slots_of_the_cap_until_it_leaves(
    make_fake: MakeFake, api_for: ApiFor
) -> None:
    fake = make_fake(max_active=10)
    api = api_for(fake)
    neighbour = fake.neighbour(6)
    assert neighbour.holding
    assert fake.stats.neighbour_slots == 6
    for _ in range(4):
        api.task_id()
    # The provider counts every task of the key, the neighbour's too.
    assert api.create()[1]["data"] == {"limit": 10, "active": 10}
    stats = fake.stats
    assert (stats.active, stats.max_active, stats.active_limited) == (4, 4, 1)
    neighbour.leave()
    assert not neighbour.holding
    assert neighbour.left_at == neighbour.started_at
    assert fake.stats.neighbour_slots == 0
    api.task_id()
    assert fake.stats.active == 5


def test_a_neighbour_for_a_while_leaves_on_the_fake_s_clock(
    make_fake: MakeFake, api_for: ApiFor, clock: ManualClock
) -> None:
    fake = make_fake(max_active=2, time_scale=0.5)
    api = api_for(fake)
    neighbour = fake.neighbour(2, for_seconds=4.0)  # 4 provider seconds = 2 real ones
    assert neighbour.left_at == neighbour.started_at + 2.0
    clock.advance(1.9)
    assert api.create()[0] == 409
    assert neighbour.holding
    clock.advance(0.1)
    assert not neighbour.holding
    api.task_id()
    neighbour.leave()  # already gone: nothing changes
    assert neighbour.left_at == neighbour.started_at + 2.0


def test_a_neighbour_may_take_the_key_over_its_cap(make_fake: MakeFake, api_for: ApiFor) -> None:
    fake = make_fake(max_active=3)
    api = api_for(fake)
    api.task_id()
    api.task_id()
    fake.neighbour(2)
    assert api.create()[1]["data"] == {"limit": 3, "active": 4}


@pytest.mark.anyio
async def test_a_neighbour_is_a_context_manager(make_fake: MakeFake, api_for: ApiFor) -> None:
    fake = make_fake(max_active=1)
    api = api_for(fake)
    with fake.neighbour(1) as neighbour:
        assert isinstance(neighbour, Neighbour)
        assert api.create()[0] == 409
    assert not neighbour.holding
    async with fake.neighbour(1):
        assert api.create()[0] == 409
    api.task_id()
    assert [n.slots for n in fake.neighbours] == [1, 1]
    assert repr(fake.neighbours[0]) == "<Neighbour slots=1 left>"


@pytest.mark.parametrize(("slots", "seconds"), [(0, None), (1, -1.0), (1, float("nan"))])
def test_impossible_neighbours_are_refused(
    make_fake: MakeFake, slots: int, seconds: float | None
) -> None:
    fake = make_fake()
    with pytest.raises(ValueError, match=r"slots|for_seconds"):
        fake.neighbour(slots, for_seconds=seconds)
    assert fake.neighbours == ()


# -- schedules ----------------------------------------------------------------------------------


def test_a_schedule_runs_each_change_at_its_time(
    make_fake: MakeFake, api_for: ApiFor, clock: ManualClock
) -> None:
    fake = make_fake(tier="basic", time_scale=0.5)
    api = api_for(fake)
    start = fake.elapsed
    fake.schedule(
        [
            (4.0, lambda f: f.set_tier("pro")),
            (2.0, lambda f: f.neighbour(8, for_seconds=4.0)),  # out of order on purpose
        ]
    )
    assert fake.neighbours == ()
    clock.advance(0.99)
    assert fake.neighbours == ()
    # Asked well after both times: both run, each seeing the clock at its own time.
    clock.advance(5.0)
    api.task_id()
    (neighbour,) = fake.neighbours
    assert neighbour.started_at == pytest.approx(start + 1.0)
    assert neighbour.left_at == pytest.approx(start + 3.0)
    assert not neighbour.holding
    assert fake.tier == "pro"
    assert fake.elapsed == pytest.approx(start + 5.99)


def test_changes_due_together_run_in_the_order_given(
    make_fake: MakeFake, clock: ManualClock
) -> None:
    fake = make_fake()
    fake.schedule([(1.0, lambda f: f.set_tier("free")), (1.0, lambda f: f.set_tier("ultra"))])
    fake.schedule([(0.0, lambda f: f.set_limits(max_active=2))])
    assert fake.limits.max_active == 2  # due at once: run before the limits are read
    assert fake.tier == "custom"
    clock.advance(1.0)
    assert fake.tier == "ultra"


def test_a_scheduled_change_runs_when_the_stats_are_read(
    make_fake: MakeFake, clock: ManualClock
) -> None:
    fake = make_fake(time_scale=0.01)
    fake.schedule([(100.0, lambda f: f.neighbour(3))])
    assert fake.stats.neighbour_slots == 0
    clock.advance(1.0)
    assert fake.stats.neighbour_slots == 3


def test_a_schedule_with_a_negative_time_plans_nothing(make_fake: MakeFake) -> None:
    fake = make_fake()
    with pytest.raises(ValueError, match=">= 0"):
        fake.schedule([(0.0, lambda f: f.neighbour(1)), (-1.0, lambda f: f.neighbour(1))])
    assert fake.stats.neighbour_slots == 0
    assert fake.neighbours == ()


# -- end to end: in process and over loopback ---------------------------------------------------

BODY = {"model": "nano-banana-text-to-image", "input": {"prompt": "a banana"}}


@contextlib.asynccontextmanager
async def http_to(fake: FakeNanoBanana, way: str) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client reaching ``fake`` in process or over loopback."""
    headers = {"Authorization": f"Bearer {fake.api_key}"}
    if way == "transport":
        async with httpx.AsyncClient(
            transport=fake.transport(), base_url="https://api.test", headers=headers
        ) as client:
            yield client
        return
    async with (
        fake.serve() as base_url,
        httpx.AsyncClient(base_url=base_url, headers=headers) as client,
    ):
        yield client


async def create_status(client: httpx.AsyncClient, prompt: str) -> int:
    body = {**BODY, "input": {"prompt": prompt}}
    return (await client.post("/api/v1/jobs/createTask", json=body)).status_code


@pytest.mark.anyio
@pytest.mark.parametrize("way", ["transport", pytest.param("serve", marks=pytest.mark.real_time)])
async def test_changes_reach_clients_in_process_and_over_loopback(way: str) -> None:
    fake = FakeNanoBanana(tier="free", create_per_second=100, duration=1000.0)
    async with http_to(fake, way) as client:
        assert await create_status(client, "one") == 200
        assert await create_status(client, "two") == 409  # free: one active task
        fake.set_tier("basic", create_per_second=100)
        assert await create_status(client, "two") == 200
        async with fake.neighbour(slots=8):
            assert await create_status(client, "three") == 409
            assert fake.stats.neighbour_slots == 8
        assert await create_status(client, "three") == 200
        fake.schedule([(0.0, lambda f: f.set_limits(max_active=3))])
        assert await create_status(client, "four") == 409
    assert fake.stats.tasks_created == 3


@pytest.mark.anyio
@pytest.mark.parametrize("way", ["transport", pytest.param("serve", marks=pytest.mark.real_time)])
async def test_a_batch_runs_through_a_scheduled_neighbour_and_upgrade(way: str) -> None:
    fake = FakeNanoBanana(tier="standard", time_scale=0.01, duration=(1.0, 3.0))  # 15 slots
    fake.schedule(
        [
            (0.0, lambda f: f.neighbour(12, for_seconds=10.0)),
            (10.0, lambda f: f.set_tier("pro")),
        ]
    )
    requests = [TextToImage(prompt=f"banana {i}") for i in range(30)]
    if way == "transport":
        async with fake.client() as client:
            outcomes = await BatchRunner(client).run(requests)
    else:
        async with (
            fake.serve() as base_url,
            AsyncNanoBanana(api_key=fake.api_key, base_url=base_url) as client,
        ):
            outcomes = await BatchRunner(client).run(requests)
    assert all(outcome.ok for outcome in outcomes)
    stats = fake.stats
    assert stats.tasks_created == 30
    assert stats.duplicates == 0
    (neighbour,) = fake.neighbours
    assert neighbour.left_at == pytest.approx(neighbour.started_at + 0.1)
    # While the neighbour held 12 of the 15 slots, the client never ran more than 3 tasks.
    tasks = list(fake.tasks.values())
    for task in tasks:
        if neighbour.holds_at(task.created_at):
            beside = [
                other for other in tasks if other.created_at <= task.created_at < other.finished_at
            ]
            assert len(beside) <= 3
