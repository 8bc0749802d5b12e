"""Making way on a shared key: interactive calls first, and room left for others.

The order is tested on the slots and pacers themselves, then end to end on the fake: a web
app's ``generate()`` beside a batch on one client, a batch's ``headroom``, and a batch that
meets another consumer of the key it cannot see. Time is virtual (see ``conftest``); nothing
here depends on how fast the machine is.
"""

from __future__ import annotations

import random

import anyio
import attrs
import pytest
from support import prompts

from nanobanana_async import (
    APITimeoutError,
    AsyncNanoBanana,
    BatchRunner,
    ConfigurationError,
    InvalidRequestError,
    PollPolicy,
    ServerError,
    TextToImage,
)
from nanobanana_async._polling import DurationModel, PollPlanner, poll_slack, slots_wanted
from nanobanana_async.limits import ActiveTaskLimiter, EndpointLimiter, Limits
from nanobanana_async.limits._active import COURTESY_SECONDS
from nanobanana_async.limits._base import ToldWindow
from nanobanana_async.limits._probe import CAP_LONGEST, DEFAULT_HOLD, UPGRADE_CREATES
from nanobanana_async.limits._queue import PriorityGate, PrioritySlots
from nanobanana_async.testing import FakeNanoBanana

pytestmark = pytest.mark.anyio


# -- the slots ---------------------------------------------------------------------------------


async def test_a_freed_slot_goes_to_the_interactive_caller_though_it_came_last() -> None:
    slots = PrioritySlots(1)
    slots.try_acquire("running", "background")
    served: list[str] = []

    async def wait(name: str, priority: str) -> None:
        await slots.acquire(name, priority)  # type: ignore[arg-type]
        served.append(name)

    async with anyio.create_task_group() as group:
        for name, priority in (("batch 1", "background"), ("batch 2", "background")):
            group.start_soon(wait, name, priority)
            await anyio.wait_all_tasks_blocked()
        group.start_soon(wait, "visitor", "interactive")
        await anyio.wait_all_tasks_blocked()
        holder = "running"
        for _ in range(3):  # each holder gives its slot back in turn
            slots.release(holder)
            await anyio.wait_all_tasks_blocked()
            holder = served[-1]
        slots.release(holder)
    assert served == ["visitor", "batch 1", "batch 2"]


async def test_background_callers_leave_their_headroom_free() -> None:
    slots = PrioritySlots(4)
    assert [slots.try_acquire(i, "background", headroom=2) for i in range(3)] == [
        True,
        True,
        False,
    ]
    assert slots.try_acquire("visitor", "interactive")  # the room left is an interactive's
    assert slots.try_acquire("another visitor", "interactive")
    assert slots.borrowed == 4


async def test_a_cancelled_waiter_gives_up_its_place() -> None:
    slots = PrioritySlots(1)
    slots.try_acquire("running", "interactive")
    got: list[str] = []

    async def wait(name: str, scope: anyio.CancelScope) -> None:
        with scope:
            await slots.acquire(name, "background")
            got.append(name)

    cancelled, kept = anyio.CancelScope(), anyio.CancelScope()
    async with anyio.create_task_group() as group:
        group.start_soon(wait, "cancelled", cancelled)
        await anyio.wait_all_tasks_blocked()
        group.start_soon(wait, "kept", kept)
        await anyio.wait_all_tasks_blocked()
        cancelled.cancel()
        await anyio.wait_all_tasks_blocked()
        assert slots.waiting() == 1
        slots.release("running")
        await anyio.wait_all_tasks_blocked()
        slots.release("kept")
    assert got == ["kept"]
    assert slots.borrowed == 0


async def test_a_larger_total_wakes_the_waiters_that_fit() -> None:
    slots = PrioritySlots(1)
    slots.try_acquire("running", "background")
    done = 0

    async def wait(name: int) -> None:
        nonlocal done
        await slots.acquire(name, "background")
        done += 1

    async with anyio.create_task_group() as group:
        for name in range(3):
            group.start_soon(wait, name)
        await anyio.wait_all_tasks_blocked()
        slots.total = 3
        await anyio.wait_all_tasks_blocked()
        assert done == 2
        slots.total = 4
    assert done == 3


async def test_the_gate_lets_interactive_callers_through_first() -> None:
    gate = PriorityGate()
    order: list[str] = []
    release = anyio.Event()

    async def through(name: str, priority: str) -> None:
        async with gate.hold(priority):  # type: ignore[arg-type]
            order.append(name)
            if name == "first":
                await release.wait()

    async with anyio.create_task_group() as group:
        group.start_soon(through, "first", "background")
        await anyio.wait_all_tasks_blocked()
        group.start_soon(through, "batch", "background")
        await anyio.wait_all_tasks_blocked()
        group.start_soon(through, "visitor", "interactive")
        await anyio.wait_all_tasks_blocked()
        release.set()
    assert order == ["first", "visitor", "batch"]


async def test_the_create_pacer_lets_an_interactive_create_go_first() -> None:
    pacer = EndpointLimiter("create")
    pacer.learn_window(1, 1.0)  # one create a second
    order: list[str] = []

    async def create(name: str, priority: str) -> None:
        await pacer.acquire(priority)  # type: ignore[arg-type]
        order.append(name)

    await pacer.acquire("background")  # this second's create is spent
    async with anyio.create_task_group() as group:
        for i in range(3):
            group.start_soon(create, f"batch {i}", "background")
            await anyio.wait_all_tasks_blocked()
        group.start_soon(create, "visitor", "interactive")
    # The first batch create already held the gate, waiting for the next second; the visitor
    # goes right after it, ahead of the batch creates queued before it came.
    assert order == ["batch 0", "visitor", "batch 1", "batch 2"]


# -- the cap's room for others ------------------------------------------------------------------


async def test_a_small_consumer_seen_in_a_409_is_left_a_slot_for_a_while() -> None:
    limiter = ActiveTaskLimiter(10)
    holders = [object() for _ in range(10)]
    for holder in holders:
        await limiter.acquire(holder, "background")
        limiter.mark_running(holder)
    assert limiter.keep_free(0) == 0
    limiter.release(holders.pop())
    # The key holds 10 of which 9 are ours: a web app took the slot our release freed.
    refused = object()
    await limiter.acquire(refused, "background")
    limiter.on_conflict(10, 10)
    limiter.release(refused)
    assert (limiter.limit, limiter.neighbours) == (9, 1)
    # Its slot is left to it already; once probes win it back, one slot stays free anyway.
    assert limiter.keep_free(0) == 0
    limiter.set_limit(10)
    assert limiter.keep_free(0) == 1
    assert limiter.keep_free(3) == 3  # a headroom asked for counts if larger
    await anyio.sleep(COURTESY_SECONDS)
    assert limiter.keep_free(0) == 0  # nothing seen of it for a while: the room is the batch's
    for holder in holders:
        limiter.release(holder)


async def test_a_large_consumer_is_left_its_room_and_no_more() -> None:
    limiter = ActiveTaskLimiter(10)
    holders = [object() for _ in range(5)]
    for holder in holders:
        await limiter.acquire(holder, "background")
        limiter.mark_running(holder)
    limiter.on_conflict(10, 10)  # 6 of the 10 active are someone else's: another batch
    assert limiter.neighbours == 6
    limiter.set_limit(10)  # it left, and probes won the room back
    assert limiter.keep_free(0) == 0
    for holder in holders:
        limiter.release(holder)


# -- end to end on the fake --------------------------------------------------------------------


def web_prompt(i: int) -> TextToImage:
    return TextToImage(prompt=f"a visitor's banana #{i}")


async def test_a_visitor_goes_ahead_of_the_batch_queued_on_one_client() -> None:
    fake = FakeNanoBanana(tier=None, max_active=3, duration=(20.0, 30.0), seed=1)
    async with fake.client(max_active=3) as client, anyio.create_task_group() as group:
        group.start_soon(BatchRunner(client).run, prompts(12, "queued"))
        await anyio.sleep(5.0)  # the batch holds every slot and has 9 jobs queued
        assert client.limits.active.waiting > 0
        await client.generate(web_prompt(0))
    prompts_in_order = [task.prompt for task in fake.tasks.values()]
    visitor = prompts_in_order.index("a visitor's banana #0")
    # Created the moment the first slot came free: right after the first three batch jobs.
    assert visitor == 3
    assert fake.stats.duplicates == 0


async def test_a_batch_with_headroom_never_runs_more_than_the_cap_less_it() -> None:
    fake = FakeNanoBanana(tier=None, max_active=5, duration=(2.0, 6.0), seed=2)
    async with fake.client() as client:
        outcomes = await BatchRunner(client, max_active=5, headroom=2).run(prompts(30, "hr"))
    assert all(outcome.ok for outcome in outcomes)
    assert fake.stats.max_active == 3


async def test_visitors_of_a_web_app_with_limits_of_its_own_find_room_beside_a_batch() -> None:
    fake = FakeNanoBanana(tier=None, max_active=4, duration=(4.0, 6.0), seed=3)
    waits: list[float] = []
    async with fake.client() as batch_client, fake.client() as web_client:
        assert batch_client.limits is not web_client.limits

        async def visitor(i: int) -> None:
            started = anyio.current_time()
            await web_client.generate(web_prompt(i))
            waits.append(anyio.current_time() - started)

        async with anyio.create_task_group() as group:
            group.start_soon(BatchRunner(batch_client).run, prompts(60, "bg"))
            for i in range(12):
                await anyio.sleep(6.0)
                group.start_soon(visitor, i)
    assert len(waits) == 12
    # The batch met the web app in a 409 and left a slot free from then on: after the first
    # visitors, every visitor got a slot at once, so its wait is its task's own length.
    durations = [t.duration for t in fake.tasks.values() if t.prompt.startswith("a visitor")]
    late = [wait - took for wait, took in zip(waits[4:], durations[4:], strict=True)]
    assert max(late) < 2.0  # a poll or two after its end, not a wait for the batch
    assert batch_client.limits.active.keep_free(0) == 1


async def test_priority_and_headroom_are_checked() -> None:
    async with AsyncNanoBanana(api_key="sk-x") as client:
        with pytest.raises(ConfigurationError, match="priority"):
            BatchRunner(client, priority="urgent")  # type: ignore[arg-type]
        for headroom in (-1, 1.5, True):
            with pytest.raises(ConfigurationError, match="headroom"):
                BatchRunner(client, headroom=headroom)  # type: ignore[arg-type]
        with pytest.raises(InvalidRequestError, match="priority"):
            await client.generate(web_prompt(0), priority="now")  # type: ignore[arg-type]
        with pytest.raises(InvalidRequestError, match="priority"):
            await client.create_task(web_prompt(0), priority=None)  # type: ignore[arg-type]


def test_limits_made_outside_an_event_loop_keep_the_headroom_asked_for() -> None:
    limits = Limits(max_active=5)
    assert limits.active.keep_free(2) == 2
    assert limits.active.keep_free(0) == 0
    assert limits.active.keep_free(9) == 4  # a background caller may always hold one slot


# -- an interactive caller beside a batch it cannot see ------------------------------------------


async def _neighboured(limit: int = 10, ours: int = 2) -> tuple[ActiveTaskLimiter, list[object]]:
    """A cap of ``limit`` of which a 409 showed all but ``ours`` held by someone else."""
    limiter = ActiveTaskLimiter(limit)
    holders = [object() for _ in range(ours)]
    for holder in holders:
        await limiter.acquire(holder)
        limiter.mark_running(holder)
    refused = object()
    await limiter.acquire(refused)
    limiter.on_conflict(limit, limit)  # the key is full: ours and a batch's
    limiter.release(refused)
    return limiter, holders


async def test_an_interactive_caller_tries_one_slot_past_the_room_left_to_others() -> None:
    limiter, holders = await _neighboured()
    assert (limiter.limit, limiter.neighbours) == (2, 8)
    batch_job = object()
    with anyio.move_on_after(0.1):  # before any probe of the room is due
        await limiter.acquire(batch_job, "background")
    assert not limiter.holds(batch_job)  # a batch waits for the room it has
    await anyio.sleep(60)  # the 409 that closed the try is long past
    visitor = object()
    assert limiter._capacity().try_acquire(visitor, "interactive")  # type: ignore[attr-defined]
    assert not limiter._capacity().try_acquire(object(), "interactive")  # type: ignore[attr-defined]
    limiter._hold(visitor)  # type: ignore[attr-defined]
    limiter.mark_running(visitor)
    limiter.on_created()  # the provider took it: the room is larger than believed
    assert (limiter.limit, limiter.neighbours) == (3, 7)
    for holder in [*holders, visitor]:
        limiter.release(holder)


async def test_after_a_409_a_visitor_waits_for_a_slot_of_ours_or_a_while() -> None:
    limiter, holders = await _neighboured()
    visitor = object()
    with anyio.move_on_after(0.01):
        await limiter.acquire(visitor)
    assert not limiter.holds(visitor)  # just refused: no try for now
    async with anyio.create_task_group() as group:
        group.start_soon(limiter.acquire, visitor)
        await anyio.wait_all_tasks_blocked()
        assert not limiter.holds(visitor)
        limiter.release(holders.pop())  # a task of ours ended: its slot is the visitor's
        await anyio.wait_all_tasks_blocked()
    assert limiter.holds(visitor)
    for holder in [*holders, visitor]:
        limiter.release(holder)


async def test_a_users_ceiling_bounds_the_try_too() -> None:
    limiter = ActiveTaskLimiter()
    limiter.set_limit(2, ceiling=True)
    holders = [object(), object()]
    for holder in holders:
        await limiter.acquire(holder)
        limiter.mark_running(holder)
    limiter.on_conflict(10, 10)  # a key of 10, full: the ceiling is ours all the same
    await anyio.sleep(60)
    visitor = object()
    with anyio.move_on_after(1):
        await limiter.acquire(visitor)
    assert not limiter.holds(visitor)
    for holder in holders:
        limiter.release(holder)


# -- spending less --------------------------------------------------------------------------------


async def test_a_raise_past_the_named_cap_that_meets_a_409_naming_it_waits_for_creates() -> None:
    limiter = ActiveTaskLimiter(5)
    holders = [object() for _ in range(5)]
    for holder in holders:
        await limiter.acquire(holder, "background")
        limiter.mark_running(holder)
    probe = limiter._schedule()  # type: ignore[attr-defined]
    limiter.key_cap = 5  # as a 409 named it
    for _ in range(3):
        assert probe.owed == UPGRADE_CREATES  # an upgrade is rare, each refused probe a 409
        await anyio.sleep(max(0.0, probe.next_at - anyio.current_time()))
        extra = object()
        async with anyio.create_task_group() as group:
            group.start_soon(limiter.acquire, extra, "background")
            await anyio.wait_all_tasks_blocked()
            assert not limiter.probe_now()  # due by time, not by the creates accepted
            for _ in range(UPGRADE_CREATES):
                limiter.on_created()  # creates of ours accepted (slots freed and taken)
            assert limiter.probe_now() or limiter.holds(extra)
        limiter.on_conflict(5, 5)  # the provider names the same cap: no upgrade
        limiter.release(extra)
        assert (limiter.limit, limiter.key_cap) == (5, 5)
        # The interval stays within the bound of the neighbours' room (a slot's hold is at
        # most the second assumed before any was seen): the creates space the probes.
        assert probe.interval <= CAP_LONGEST * DEFAULT_HOLD
    for holder in holders:
        limiter.release(holder)


async def test_only_a_window_that_binds_the_rate_is_probed() -> None:
    pacer = EndpointLimiter("create")
    pacer.learn_window(5, 1.0)  # holds a burst back
    pacer.learn_window(40, 60.0)  # binds the sustained rate
    for _ in range(60):
        await pacer.acquire("background")
    windows = pacer._windows  # type: ignore[attr-defined]
    assert windows[1.0].probe is None  # never tried higher: it gains nothing
    assert pacer.windows == {1.0: 5, 60.0: 40}


async def test_a_429_naming_the_tier_fills_in_that_endpoints_windows_and_the_cap() -> None:
    limits = Limits()
    limits.create.on_rate_limited(0.5, limit=5, window=1.0, sent_at=None)
    limits.learn_tier("basic", "create", ToldWindow(5, 1.0))
    assert limits.create.windows == {1.0: 5, 60.0: 180}
    assert limits.query.windows == {}  # polls stay cautious until their own limit is named
    assert (limits.active.limit, limits.active.known) == (5, True)
    limits.learn_tier("pro", "create", ToldWindow(20, 1.0))  # the key moved up a tier
    probe = limits.active._schedule()  # type: ignore[attr-defined]
    assert probe.next_at <= anyio.current_time() + probe.interval


async def test_a_fake_at_another_time_scale_teaches_no_tier() -> None:
    limits = Limits()
    limits.learn_tier("basic", "create", ToldWindow(5, 0.01))
    assert limits.create.windows == {}
    assert not limits.active.known
    # Nor is the tier taken: its documented rates and moves are real-time numbers.
    assert limits.tier is None
    assert limits.documented_rate("query") is None
    limits.learn_tier("free", "create", ToldWindow(1, 0.01))
    limits.on_conflict(1, 1)  # a 409 naming free's cap moves no row either
    assert (limits.tier, limits.create.windows, limits.query.windows) == (None, {}, {})


async def test_a_batch_on_a_scaled_fake_polls_at_the_fake_s_pace() -> None:
    # A basic-tier fake a hundred times faster than the provider: its 429s name "basic" with
    # windows of 0.01 s and 0.6 s, which must not cap the polls at basic's real 20 a second.
    fake = FakeNanoBanana(tier="basic", time_scale=0.01, seed=3)
    async with fake.client() as client:
        started = anyio.current_time()
        outcomes = await BatchRunner(client).run(prompts(60, "scaled"))
        took = anyio.current_time() - started
    assert all(outcome.ok for outcome in outcomes)
    assert client.limits.tier is None
    # 60 tasks of 0.3-0.6 s (scaled) in 5 slots: a few seconds; at basic's real poll rate
    # for the tasks' ends, several times that.
    assert took < 1.5, took


async def test_polls_relax_while_the_create_rate_binds() -> None:
    # Pro tier, tasks of about a second: creates wait for the pacer, not for slots.
    fake = FakeNanoBanana(tier="pro", duration=(0.5, 1.5), seed=5)
    async with fake.client() as client:
        outcomes = await BatchRunner(client).run(prompts(300, "relaxed"))
    assert all(outcome.ok for outcome in outcomes)
    assert fake.stats.query_requests / 300 < 4
    assert fake.stats.duplicates == 0


@attrs.define
class _Slots:
    """What `slots_wanted` reads of a key's slots."""

    running: int
    active: int
    waiting: int
    limit: int = 5
    interactive_waiting: int = 0


@pytest.mark.parametrize(
    ("slots", "rate", "wanted"),
    [
        (_Slots(running=4, active=5, waiting=3), 3.0, False),  # one waits for the pacer
        (_Slots(running=5, active=5, waiting=3), 3.0, True),  # 3 a second keep 12 busy
        (_Slots(running=5, active=5, waiting=3), 1.0, False),  # 4: a burst, the rate binds
        (_Slots(running=5, active=5, waiting=0), 1.0, True),  # the work runs out
        (_Slots(running=5, active=5, waiting=3), None, True),  # no window known
        # A visitor waits for a slot: its end is awaited, whatever binds the batch.
        (_Slots(running=5, active=5, waiting=3, interactive_waiting=1), 1.0, True),
        (_Slots(running=4, active=5, waiting=3, interactive_waiting=1), 3.0, True),
    ],
)
def test_a_tasks_end_is_awaited_where_a_freed_slot_would_be_used(
    slots: _Slots, rate: float | None, wanted: bool
) -> None:
    assert slots_wanted(slots, rate, typical=4.0) is wanted  # type: ignore[arg-type]
    assert slots_wanted(slots, rate, typical=None) is (  # type: ignore[arg-type]
        slots.interactive_waiting > 0 or slots.running >= slots.active
    )


async def test_a_minute_window_that_binds_relaxes_polls_in_its_bursts() -> None:
    # 40 creates a minute and room for 50 tasks of 4-12 s: the slots fill during each
    # minute's burst, but the minute's window decides when creates go, not the tasks' ends
    # (6.3 polls per task when every burst's ends are awaited; the same makespan).
    fake = FakeNanoBanana(
        tier="basic", duration=(4.0, 12.0), create_per_minute=40, max_active=50, seed=2
    )
    async with fake.client() as client:
        outcomes = await BatchRunner(client).run(prompts(100, "minute"))
    assert all(outcome.ok for outcome in outcomes)
    assert fake.stats.query_requests / 100 < 5.6
    assert fake.stats.duplicates == 0


@pytest.mark.parametrize(
    ("rate", "typical", "slack"),
    [
        (1.0, 4.0, 1.0),  # 5 slots last 5 s a task at one create a second: 1 s to spare
        (0.5, 4.0, 6.0),
        (3.0, 4.0, None),  # 3 a second keep 12 slots busy: the slots bind
        (1.25, 4.0, None),  # exactly full: nothing to spare
        (None, 4.0, None),  # no create window known
        (1.0, None, None),  # no durations yet
    ],
)
def test_the_slack_is_what_the_slots_leave_a_task_at_the_create_rate(
    rate: float | None, typical: float | None, slack: float | None
) -> None:
    slots = _Slots(running=5, active=5, waiting=3)
    assert poll_slack(slots, rate, typical) == slack  # type: ignore[arg-type]


def test_a_task_whose_end_is_not_awaited_is_polled_by_the_slack() -> None:
    durations = DurationModel()
    for seconds in (2.0, 3.0, 4.0, 5.0, 6.0):
        durations.observe(seconds)
    policy = PollPolicy(jitter=0.0)
    rng = random.Random(0)

    def delay(*, awaited: bool, slack: float | None) -> float:
        return durations.next_delay(4.0, 3, policy, rng, awaited=awaited, slack=slack)

    relaxed = delay(awaited=False, slack=None)
    assert relaxed == pytest.approx(4.0 * DurationModel.RELAXED_RESOLUTION)
    assert delay(awaited=False, slack=1.0) == relaxed  # a small slack: the relaxed step
    assert delay(awaited=False, slack=60.0) == pytest.approx(60.0 * DurationModel.SLACK_SHARE)
    assert delay(awaited=True, slack=60.0) == delay(awaited=True, slack=None)


async def test_a_minute_window_far_below_the_cap_spreads_polls_by_the_slack(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 40 creates a minute and a known cap of 30 tasks of 2-6 s: each task could be seen 41 s
    # late before the slots bind in the long run. The same batch, polled with and without it.
    polls = []
    for share in (0.0, DurationModel.SLACK_SHARE):
        monkeypatch.setattr(DurationModel, "SLACK_SHARE", share)
        fake = FakeNanoBanana(
            tier="basic", duration=(2.0, 6.0), create_per_minute=40, max_active=50, seed=1
        )
        async with fake.client(max_active=30) as client:
            outcomes = await BatchRunner(client).run(prompts(100, "slack"))
        assert all(outcome.ok for outcome in outcomes)
        assert fake.stats.duplicates == 0
        polls.append(fake.stats.query_requests / 100)
    assert polls[1] < 0.9 * polls[0], polls


async def test_a_coarser_resolution_spends_fewer_polls_where_the_slots_bind() -> None:
    polls = []
    for resolution in (PollPolicy().resolution, 0.15):
        fake = FakeNanoBanana(tier="basic", duration=(2.0, 6.0), seed=5)
        async with fake.client(poll=PollPolicy(resolution=resolution)) as client:
            outcomes = await BatchRunner(client).run(prompts(40, "coarse"))
        assert all(outcome.ok for outcome in outcomes)
        polls.append(fake.stats.query_requests / 40)
    assert polls[1] < 0.6 * polls[0], polls


async def test_a_409_naming_another_tiers_cap_moves_the_windows_with_the_key() -> None:
    limits = Limits()
    limits.learn_tier("basic", "create", ToldWindow(5, 1.0))  # a 429 named the tier
    limits.on_conflict(5, 5)  # the key's cap is basic's
    assert limits.create.windows == {1.0: 5, 60.0: 180}
    limits.on_conflict(15, 15)  # a probe past it met standard's cap: the key moved up
    assert limits.tier == "standard"
    assert limits.create.windows == {1.0: 10, 60.0: 600}  # found at once, not by probes
    assert limits.query.windows == {}  # unknown stays unknown on a move up (polls cautious)
    limits.on_conflict(5, 14)  # and down again: unknown windows start from the lower row
    assert limits.tier == "basic"
    assert limits.create.windows == {1.0: 5, 60.0: 180}
    assert limits.query.windows == {1.0: 20, 60.0: 1000}


async def test_a_tier_given_by_the_user_is_the_keys_tier_until_a_409_moves_it() -> None:
    assert Limits(tier="STANDARD").tier == "standard"  # as the table names it
    limits = Limits(tier="basic")
    assert limits.tier == "basic"
    assert limits.documented_rate("query") == pytest.approx(1000 / 60)
    limits.on_conflict(5, 5)  # basic's cap, as the user said
    limits.on_conflict(15, 15)  # a probe past it met standard's: the key was upgraded
    assert limits.tier == "standard"
    assert limits.create.windows == {1.0: 10, 60.0: 600}


async def test_a_window_not_from_the_table_stays_when_the_tier_moves() -> None:
    limits = Limits()
    limits.create.learn_window(40, 60.0)  # an override of the provider's, as a 429 named it
    limits.learn_tier("basic", "create", ToldWindow(5, 1.0))
    limits.on_conflict(5, 5)
    limits.on_conflict(15, 15)
    assert limits.create.windows == {1.0: 10, 60.0: 40}
    limits.on_conflict(12, 12)  # no tier's cap: the rates are not told
    assert limits.tier == "standard"


async def test_a_429_naming_another_tier_moves_a_cap_that_followed_the_old_one() -> None:
    limits = Limits()
    limits.learn_tier("basic", "create", ToldWindow(5, 1.0))
    limits.on_conflict(5)  # the key's cap is basic's
    limits.learn_tier("pro", "query", ToldWindow(100, 1.0))  # the key moved up two tiers
    assert (limits.active.limit, limits.active.key_cap) == (30, 30)
    assert limits.create.windows == {1.0: 20, 60.0: 1200}
    other = Limits()
    other.learn_tier("standard", "create", ToldWindow(10, 1.0))
    other.on_conflict(10)  # this key's cap is its own (no tier's row)
    other.learn_tier("pro", "create", ToldWindow(20, 1.0))
    assert (other.active.limit, other.active.key_cap) == (10, 10)  # only probed again soon


async def test_a_create_whose_429_lowered_the_cap_under_it_queues_instead_of_a_sure_409() -> None:
    # Told nothing, the runner grows its cap past basic's 5 in the first burst; the 429 that
    # names the tier sets the cap to 5 under a create already holding a sixth slot.
    fake = FakeNanoBanana(tier="basic", duration=(2.0, 6.0), seed=1)
    async with fake.client() as client:
        outcomes = await BatchRunner(client).run(prompts(12, "learning"))
    assert all(outcome.ok for outcome in outcomes)
    assert fake.stats.rate_limited >= 1  # the 429 that named the tier
    # ...and no create went out to meet a sure 409: not the one the 429 met, nor one the pacer
    # held meanwhile (trio's scheduler orders the burst's creates differently from run to run).
    assert fake.stats.active_limited == 0


async def _cap_falls_to_one(client: AsyncNanoBanana, held: list[int]) -> None:
    """Half a second in, the cap falls to one task, as another create's 409 would tell.

    ``held`` is told the slots the client held at that moment.
    """
    await anyio.sleep(0.5)
    held.append(client.limits.active.active)
    client.limits.on_conflict(1, 1)


async def test_a_create_the_pacer_holds_queues_again_when_the_cap_falls_under_it() -> None:
    # The key allows one task. The batch believes in more: its second create holds a slot and
    # waits a second for the pacer (one create a second), and meanwhile the cap falls to one.
    # Sent when the pacer lets it go, it would meet a sure 409.
    fake = FakeNanoBanana(tier="pro", max_active=1, duration=(3.0, 3.0), seed=1)
    held: list[int] = []
    async with fake.client() as client:
        client.limits.create.learn_window(1, 1.0)
        async with anyio.create_task_group() as group:
            group.start_soon(_cap_falls_to_one, client, held)
            outcomes = await BatchRunner(client).run(prompts(2, "fell"))
    assert held == [2]  # both held a slot, one running, when the cap fell
    assert all(outcome.ok for outcome in outcomes)
    assert fake.stats.active_limited == 0
    assert fake.stats.duplicates == 0


async def test_a_create_queued_again_after_the_cap_fell_ends_by_its_deadline() -> None:
    fake = FakeNanoBanana(tier="pro", max_active=1, duration=(30.0, 30.0), seed=1)
    async with fake.client() as client:
        client.limits.create.learn_window(1, 1.0)

        async def first() -> None:
            await client.generate(TextToImage(prompt="first"), priority="background")

        async with anyio.create_task_group() as group:
            group.start_soon(first)
            group.start_soon(_cap_falls_to_one, client, [])
            await anyio.wait_all_tasks_blocked()
            started = anyio.current_time()
            with pytest.raises(APITimeoutError, match="cap fell; nothing was sent"):
                await client.generate(
                    TextToImage(prompt="second"), priority="background", timeout=3.0
                )
            assert anyio.current_time() - started <= 3.0 + 1e-6
            assert client.limits.active.active == 1  # the second's slot is not left held
            group.cancel_scope.cancel()
    assert fake.stats.create_requests == 1
    assert fake.stats.active_limited == 0


async def test_a_window_learned_late_counts_every_request_of_its_length() -> None:
    now = [0.0]
    pacer = EndpointLimiter("query", clock=lambda: now[0])
    for _ in range(900):  # 900 polls in the first 30 s, more than the last-requests log holds
        await pacer.acquire()
        now[0] += 30.0 / 900
    pacer.learn_window(1000, 60.0)  # a move to a lower tier names its minute window now
    window = pacer._windows[60.0]  # type: ignore[attr-defined]
    assert window.sent_within(now[0]) == 900
    # Spread evenly, what is left lasts until the first of them age out; the rate would not.
    spendable = pacer.spendable_rate
    assert spendable is not None
    assert spendable < 101 / 30 * 1.05
    assert pacer.rate is not None
    assert pacer.rate > 16


async def test_polls_spend_no_more_than_the_named_tier_documents() -> None:
    planner = PollPlanner(PollPolicy(), DurationModel(), lambda: None, lambda: True, lambda: 5.0)
    shares = [planner.join() for _ in range(100)]  # many tasks followed at once
    assert planner.polls_per_second() == 5.0
    for share in shares:
        planner.leave(share)
    unnamed = PollPlanner(PollPolicy(), DurationModel(), lambda: None)
    for _ in range(100):
        unnamed.join()
    assert unnamed.polls_per_second() > 5.0


async def test_a_failed_poll_of_a_followed_task_is_retried_by_the_next_poll() -> None:
    fake = FakeNanoBanana(tier="basic", duration=(2.0, 2.0), seed=2)
    async with fake.client() as client:
        task_id = await client.create_task(TextToImage(prompt="a banana"))
        fake.script("query", ["500"])
        caller = client.engine.caller
        before = fake.stats.query_requests
        with pytest.raises(ServerError):
            await caller.query(task_id, anyio.current_time() + 60, backoff=False)
        assert fake.stats.query_requests == before + 1  # no backoff and retry within
        fake.script("query", ["500"])
        result = await client.wait_for_result(task_id, timeout=60)  # the loop polls again
    assert result.urls


async def test_once_the_room_is_back_no_probe_goes_past_the_cap_where_the_create_rate_binds() -> (
    None
):
    slots = ActiveTaskLimiter(9)
    slots.key_cap = 10  # a 409 named 10: one slot is a neighbour's
    slots.create_rate = lambda: 0.1  # 0.1 creates a second fill far fewer slots than 10
    assert not slots.cap_binds()
    for holder in [object() for _ in range(9)]:
        await slots.acquire(holder)
        slots.mark_running(holder)
    probe = slots._schedule()  # type: ignore[attr-defined]
    await anyio.sleep(probe.next_at - anyio.current_time() + 0.001)
    room = object()
    async with anyio.create_task_group() as group:
        group.start_soon(slots.acquire, room, "background")
        await anyio.wait_all_tasks_blocked()
    slots.mark_running(room)
    slots.on_created()  # the room probe was accepted: the key's cap is ours again
    assert slots.limit == 10
    for _ in range(UPGRADE_CREATES):
        slots.on_created()
    await anyio.sleep(probe.next_at - anyio.current_time() + 0.001)
    past = object()
    with anyio.move_on_after(60):
        async with anyio.create_task_group() as group:
            group.start_soon(slots.acquire, past, "background")
            await anyio.wait_all_tasks_blocked()
            assert not slots.probe_now()  # an upgrade would not be used: no 409 spent on it
            assert slots.limit == 10
            group.cancel_scope.cancel()


async def test_a_409_that_leaves_room_below_the_key_s_cap_owes_no_creates() -> None:
    limits = Limits()
    limits.learn_tier("basic", "create", ToldWindow(5, 1.0))  # cap 5, from the tier's row
    for holder in [object() for _ in range(5)]:
        await limits.active.acquire(holder)
        limits.active.mark_running(holder)
    probe = limits.active._schedule()  # type: ignore[attr-defined]
    assert probe.owed == UPGRADE_CREATES  # past the key's own cap: wait for creates
    limits.on_conflict(10, 9)  # the key's cap is 10: the rest is a neighbour's room
    assert (limits.active.limit, limits.active.key_cap) == (5, 10)
    assert probe.owed == 0  # that room is probed by time alone
