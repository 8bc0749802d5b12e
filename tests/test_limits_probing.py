"""Limits that move both ways: the probe schedule, the active-task cap and the rate windows.

The schedule and the cap are driven by a fake clock: no test here depends on how fast the
machine runs. The windows' probes run on anyio's clock with windows of a few milliseconds,
asserting only the order of what happens.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Callable

import anyio
import anyio.abc
import pytest

from nanobanana_async import (
    AsyncNanoBanana,
    BatchOutcome,
    BatchRunner,
    BatchStatistics,
    TextToImage,
)
from nanobanana_async.limits import ActiveTaskLimiter, EndpointLimiter, Limits
from nanobanana_async.limits._probe import (
    MAX_INTERVAL,
    MIN_INTERVAL,
    UPGRADE_CREATES,
    WINDOW_PROBE_REQUESTS,
    ProbeSchedule,
    bounded,
)
from nanobanana_async.testing import FakeNanoBanana

pytestmark = pytest.mark.anyio


class Clock:
    """A clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# -- the schedule ---------------------------------------------------------------------------------


def test_a_probe_is_due_after_the_first_interval_and_one_at_a_time() -> None:
    probe = ProbeSchedule(2.0, now=10.0)
    assert not probe.due(11.9)
    assert probe.due(12.0)
    assert probe.begin(5, 12.0) == 6
    assert probe.probing
    assert probe.base == 5
    assert probe.probed_at == 12.0
    assert not probe.due(100.0)  # one probe at a time


def test_refused_probes_double_the_interval_up_to_the_longest() -> None:
    probe = ProbeSchedule(1.0, now=0.0)
    intervals = []
    for _ in range(6):
        probe.begin(5, probe.next_at)
        probe.refused(probe.next_at, longest=10.0)
        intervals.append(probe.interval)
    assert intervals == [2.0, 4.0, 8.0, 10.0, 10.0, 10.0]
    assert probe.last_outcome == "refused"
    assert probe.step == 1
    assert probe.next_at == probe.started_at + 10.0


def test_accepted_probes_go_on_at_once_with_growing_steps_and_keep_the_interval() -> None:
    probe = ProbeSchedule(1.0, now=0.0)
    probe.begin(5, 1.0)
    probe.refused(1.0, longest=8.0)  # interval 2
    limit = probe.begin(5, 3.0)
    probe.raised(3.5)
    assert (probe.last_outcome, probe.interval, probe.next_at) == ("raised", 2.0, 3.5)
    assert probe.begin(limit, 3.5) == limit + 2  # the step doubled
    probe.raised(4.0, grow=False)
    assert probe.begin(limit + 2, 4.0) == limit + 4  # the same step again
    assert probe.begin(10, 4.0, unit=3) == 10 + 2 * 3


def test_restart_unused_and_hold_off() -> None:
    probe = ProbeSchedule(1.0, now=0.0)
    probe.begin(4, 1.0)
    assert probe.unused(2.0) == 4
    assert (probe.probing, probe.last_outcome, probe.next_at) == (False, "unused", 3.0)
    probe.begin(4, 3.0)
    probe.refused(3.0, longest=100.0)
    probe.restart(5.0, 0.5)
    assert (probe.interval, probe.next_at, probe.step, probe.probing) == (0.5, 5.5, 1, False)
    probe.hold_off(5.2)
    assert probe.next_at == 5.7


def test_a_refused_probe_also_waits_for_requests_to_pass() -> None:
    probe = ProbeSchedule(1.0, now=0.0)
    probe.begin(5, 1.0)
    probe.refused(1.0, longest=8.0, owed=3)
    assert not probe.due(100.0)  # long past the interval, but no request has passed
    probe.passed()
    probe.passed()
    assert not probe.due(100.0)
    probe.passed()
    assert probe.due(100.0)
    probe.passed()
    assert probe.owed == 0


def test_intervals_are_bounded() -> None:
    assert bounded(0.0) == MIN_INTERVAL
    assert bounded(1e9) == MAX_INTERVAL
    assert ProbeSchedule(-1.0).next_at == -math.inf  # before any request: due at first need


# -- the active-task cap ---------------------------------------------------------------------------


async def _hold(limiter: ActiveTaskLimiter, n: int, *, running: bool = True) -> list[object]:
    holders = [object() for _ in range(n)]
    for holder in holders:
        await limiter.acquire(holder, "background")
        if running:
            limiter.mark_running(holder)
    return holders


class Waiter:
    """A batch's job waiting for a slot, in a task group: `got` is set once it holds one.

    (Background: an interactive caller would also try one slot past the estimate.)
    """

    def __init__(self, limiter: ActiveTaskLimiter) -> None:
        self.limiter = limiter
        self.holder = object()
        self.got = anyio.Event()

    async def run(self) -> None:
        await self.limiter.acquire(self.holder, "background")
        self.got.set()


async def _probed_slot(
    limiter: ActiveTaskLimiter, clock: Clock, group: anyio.abc.TaskGroup
) -> object:
    """A new caller waits; once a probe is due (at once, or after the interval) it gets in."""
    waiter = Waiter(limiter)
    group.start_soon(waiter.run)
    await anyio.wait_all_tasks_blocked()
    if not waiter.got.is_set():
        assert not limiter.probe_now()  # not due yet
        clock.now += MAX_INTERVAL
        assert limiter.probe_now()
    await waiter.got.wait()
    return waiter.holder


async def test_a_409_that_shows_neighbours_leaves_them_their_room() -> None:
    limiter = ActiveTaskLimiter(initial=10, clock=Clock())
    holders = await _hold(limiter, 10)
    # The key's cap is 10 and 15 tasks are active: 6 of them (at least) are someone else's
    # (9 of our slots hold tasks: the tenth is the refused create's own).
    limiter.on_conflict(10, 15)
    assert (limiter.limit, limiter.key_cap, limiter.neighbours, limiter.known) == (4, 10, 6, True)
    for holder in holders:
        limiter.release(holder)


async def test_a_409_at_our_own_count_is_the_cap_itself() -> None:
    limiter = ActiveTaskLimiter(8, clock=Clock())
    holders = await _hold(limiter, 8)
    limiter.on_conflict(7, 7)  # 7 active, all ours: the cap is lower, no neighbour
    assert (limiter.limit, limiter.neighbours) == (7, 0)
    for holder in holders:
        limiter.release(holder)


async def test_the_neighbours_room_is_won_back_by_probes_once_they_leave() -> None:
    clock = Clock()
    limiter = ActiveTaskLimiter(initial=10, clock=clock)
    holders = await _hold(limiter, 10)
    limiter.on_conflict(10, 15)
    for holder in holders[4:]:
        limiter.release(holder)
    holders = holders[:4]
    assert limiter.limit == 4
    async with anyio.create_task_group() as group:
        limits_seen = [limiter.limit]
        while limiter.limit < 10:
            waiter = Waiter(limiter)
            group.start_soon(waiter.run)
            await anyio.wait_all_tasks_blocked()
            if not waiter.got.is_set():
                # Not due yet (after an accepted probe, the next goes at once, by the
                # waiter's own timer): once the interval has passed, it is.
                assert limiter.waiting == 1
                assert not limiter.probe_now()
                clock.now += MAX_INTERVAL
                assert limiter.probe_now()
            await waiter.got.wait()  # the raised slot went to the waiter
            limiter.mark_running(waiter.holder)
            limiter.on_created()  # accepted: the neighbour has left
            holders.append(waiter.holder)
            limits_seen.append(limiter.limit)
    # One, then two (the second of them free for the next caller, with no probe), then the
    # rest of the named cap: the steps grow while they succeed.
    assert limits_seen == [4, 5, 7, 7, 10]
    assert (limiter.neighbours, limiter.probed_ago) == (0, 0.0)
    for holder in holders:
        limiter.release(holder)


async def test_a_refused_probe_backs_off_and_the_neighbour_keeps_its_room() -> None:
    clock = Clock()
    limiter = ActiveTaskLimiter(initial=5, clock=clock)
    holders = await _hold(limiter, 5)
    # The fifth create is refused: 10 active, 4 of them ours, so 6 are a neighbour's.
    limiter.on_conflict(10, 10)
    limiter.release(holders.pop())
    assert (limiter.limit, limiter.neighbours) == (4, 6)
    intervals = []
    async with anyio.create_task_group() as group:
        for _ in range(4):
            waiter = Waiter(limiter)
            group.start_soon(waiter.run)
            await anyio.wait_all_tasks_blocked()
            clock.now += MAX_INTERVAL
            assert limiter.probe_now()
            assert limiter.limit == 5
            await waiter.got.wait()
            # The neighbour is still there: the probe's create meets a 409.
            limiter.on_conflict(10, 10)
            limiter.release(waiter.holder)
            assert limiter.limit == 4
            assert limiter.probe_interval is not None
            intervals.append(limiter.probe_interval)
    assert intervals[1] > intervals[0]  # the interval grows while probes are refused
    # ... up to a bound of a few creates' time (here a few seconds), not ten minutes.
    assert max(intervals) < MAX_INTERVAL / 10
    for holder in holders:
        limiter.release(holder)


async def test_no_probe_without_demand_or_before_it_is_due() -> None:
    clock = Clock()
    limiter = ActiveTaskLimiter(2, clock=clock)
    holders = await _hold(limiter, 2)
    clock.now += MAX_INTERVAL
    assert not limiter.probe_now()  # full, but nobody waits
    limiter.release(holders.pop())
    async with anyio.create_task_group() as group:
        waiter = Waiter(limiter)
        group.start_soon(waiter.run)
        await waiter.got.wait()  # a free slot: no need for a probe
    assert not limiter.probe_now()
    assert limiter.limit == 2
    for holder in [*holders, waiter.holder]:
        limiter.release(holder)


def _creates_accepted(limiter: ActiveTaskLimiter, count: int = UPGRADE_CREATES) -> None:
    """``count`` creates accepted with no probe in flight (slots freed and taken again)."""
    for _ in range(count):
        limiter.on_created()


async def test_an_upgrade_past_a_tier_seed_is_found_one_slot_at_a_time() -> None:
    clock = Clock()
    limits = Limits(tier="basic")
    assert (limits.active.limit, limits.active.ceiling) == (5, None)  # an estimate only
    assert Limits(tier="basic", max_active=4).active.ceiling == 4  # the user's number binds
    limiter = ActiveTaskLimiter(clock=clock)
    limiter.set_limit(limits.active.limit)
    holders = await _hold(limiter, 5)
    _creates_accepted(limiter)  # past the key's cap, a probe waits for creates too
    async with anyio.create_task_group() as group:
        for expected in (6, 7, 8):
            holder = await _probed_slot(limiter, clock, group)
            assert limiter.limit == expected  # one slot more each time: no growing steps
            limiter.mark_running(holder)
            limiter.on_created()
            holders.append(holder)
    assert limiter.limit == 8
    # A 409 that names a larger cap is believed at once.
    limiter.on_conflict(15)
    assert limiter.limit == 15
    for holder in holders:
        limiter.release(holder)


async def test_a_users_max_active_is_a_ceiling() -> None:
    clock = Clock()
    limiter = ActiveTaskLimiter(clock=clock)
    limiter.set_limit(3, ceiling=True)
    holders = await _hold(limiter, 3)
    limiter.on_conflict(2, 2)  # the key holds 2 of ours (the third was refused): the cap is 2
    assert limiter.limit == 2
    limiter.release(holders.pop())
    _creates_accepted(limiter)
    async with anyio.create_task_group() as group:
        for _ in range(2):
            waiter = Waiter(limiter)
            group.start_soon(waiter.run)
            await anyio.wait_all_tasks_blocked()
            clock.now += MAX_INTERVAL
            if limiter.limit < 3:
                assert limiter.probe_now()
                await waiter.got.wait()
                limiter.mark_running(waiter.holder)
                limiter.on_created()
                holders.append(waiter.holder)
            else:
                assert not limiter.probe_now()  # never past the user's number
                group.cancel_scope.cancel()
    assert limiter.limit == 3
    limiter.on_conflict(50, 3)  # nor past it when a 409 names more
    assert limiter.limit == 3
    for holder in holders:
        limiter.release(holder)


async def test_a_probe_nobody_uses_is_given_up() -> None:
    clock = Clock()
    limiter = ActiveTaskLimiter(2, clock=clock)
    holders = await _hold(limiter, 2)
    _creates_accepted(limiter)
    async with anyio.create_task_group() as group:
        waiter = Waiter(limiter)
        group.start_soon(waiter.run)
        await anyio.wait_all_tasks_blocked()
        clock.now += MAX_INTERVAL
        assert limiter.probe_now()
        await waiter.got.wait()
    limiter.release(waiter.holder)  # its create never went (cancelled, say)
    clock.now += 10 * MAX_INTERVAL
    assert not limiter.probe_now()  # gives the probe up: nothing was learned
    assert limiter.limit == 2
    for holder in holders:
        limiter.release(holder)


# -- the rate windows --------------------------------------------------------------------------


async def _acquire_until(limiter: EndpointLimiter, seconds: float, done: object) -> None:
    """Acquire until ``done()``; the requests a window's first probe waits for pass at once."""
    with anyio.fail_after(20):
        while not done():  # type: ignore[operator]
            await limiter.acquire()
            limiter.on_success()
            probe = limiter._windows[seconds].probe
            if probe is not None and probe.last_outcome is None and probe.owed:
                probe.owed = 0  # as if its requests had passed (a test of the time rule)


async def test_the_first_probe_of_a_window_waits_for_its_requests() -> None:
    limiter = EndpointLimiter("create")
    limiter.learn_window(2, 0.02)
    window = limiter._windows[0.02]
    with anyio.fail_after(20):
        while window.probe is None:  # until the window first holds a request back
            await limiter.acquire()
    # A window learned a moment ago is the one least likely to have moved: a probe every
    # two windows would cost a 429 every few seconds while it binds. The request held back
    # went since: the first of those it waits for.
    assert window.probe.owed == WINDOW_PROBE_REQUESTS - 1
    assert not window.probe.due(float("inf"))
    await limiter.acquire()
    assert window.probe.owed == WINDOW_PROBE_REQUESTS - 2


async def test_a_window_that_holds_requests_back_is_probed_and_backs_off_when_refused() -> None:
    limiter = EndpointLimiter("create")
    limiter.learn_window(2, 0.02)
    assert limiter.probed_ago is None
    await _acquire_until(limiter, 0.02, lambda: limiter.windows[0.02] > 2)
    assert limiter.windows[0.02] == 3
    assert limiter.probed_ago is not None
    window = limiter._windows[0.02]
    assert window.probe is not None
    first = window.probe.interval
    # The provider still allows 2: its 429 names the old limit.
    limiter.on_rate_limited(0.001, limit=2, window=0.02, sent_at=anyio.current_time())
    assert limiter.windows[0.02] == 2
    assert window.probe.interval == 2 * first
    assert window.probe.last_outcome == "refused"


async def test_a_refused_window_probe_waits_for_its_requests_too() -> None:
    limiter = EndpointLimiter("create")
    limiter.learn_window(2, 0.02)
    await _acquire_until(limiter, 0.02, lambda: limiter.windows[0.02] > 2)
    window = limiter._windows[0.02]
    assert window.probe is not None
    limiter.on_rate_limited(0.001, limit=2, window=0.02, sent_at=anyio.current_time())
    assert window.probe.owed == WINDOW_PROBE_REQUESTS
    await limiter.acquire()
    assert window.probe.owed == WINDOW_PROBE_REQUESTS - 1


async def test_a_429_from_another_window_does_not_accept_a_probe() -> None:
    clock = Clock()
    limiter = EndpointLimiter("create", clock=clock)
    limiter.learn_window(2, 1.0)
    limiter.learn_window(100, 60.0)
    window = limiter._windows[1.0]
    window.probe = ProbeSchedule(2.0, clock.now)
    window.resize(window.probe.begin(2, clock.now), clock.now)  # probing 3 a second
    sent = [await limiter.acquire() for _ in range(3)]
    assert window.probe.used_at == clock.now  # the third went past the old limit
    # The minute's window refuses it: the raise of the second's window was not tested.
    limiter.on_rate_limited(30.0, limit=100, window=60.0, sent_at=sent[-1])
    assert window.probe.used_at is None
    assert window.probe.probing
    assert limiter.windows[1.0] == 3


async def test_an_accepted_window_probe_steps_up_and_a_429_naming_more_is_believed() -> None:
    limiter = EndpointLimiter("create")
    limiter.learn_window(2, 0.02)
    # The provider allows more now: nothing refuses, so the probes go on, in growing steps.
    await _acquire_until(limiter, 0.02, lambda: limiter.windows[0.02] >= 5)
    window = limiter._windows[0.02]
    assert window.probe is not None
    assert window.probe.last_outcome == "raised"
    limiter.on_rate_limited(0.001, limit=40, window=0.02, sent_at=anyio.current_time())
    assert limiter.windows[0.02] == 40  # an upgrade named by a 429 is taken at once


# -- on the fake provider ------------------------------------------------------------------------

# One provider second is 100 ms here: enough that a loaded machine's event-loop latency stays
# small next to the tasks' durations, which time the probes.
SCALE = 0.1


_numbers = itertools.count()


def _requests(n: int) -> list[TextToImage]:
    """``n`` requests, never the same prompt twice (the fake counts repeats as duplicates)."""
    return [TextToImage(prompt=f"probing banana {next(_numbers)}") for _ in range(n)]


class Seen:
    """What the runner reported after each outcome: its statistics, and the cap's interval."""

    def __init__(self, client: AsyncNanoBanana) -> None:
        self.client = client
        self.stats: list[BatchStatistics] = []
        self.intervals: list[float] = []

    def __call__(self, stats: BatchStatistics) -> None:
        self.stats.append(stats)
        active = self.client.limits.active
        assert isinstance(active, ActiveTaskLimiter)
        if active.probe_interval is not None:
            self.intervals.append(active.probe_interval)


async def _batches_until(
    client: AsyncNanoBanana, seen: Seen | None, done: Callable[[], bool], size: int = 50
) -> list[BatchOutcome[TextToImage]]:
    """Run batches until ``done()`` (a slow, loaded machine needs more), within 180 s."""
    outcomes: list[BatchOutcome[TextToImage]] = []
    with anyio.fail_after(180):
        while True:
            outcomes += await BatchRunner(client, on_progress=seen).run(_requests(size))
            if done():
                return outcomes


async def test_a_cap_learned_under_a_neighbour_is_raised_again_once_it_leaves() -> None:
    fake = FakeNanoBanana(tier=None, max_active=6, duration=(1.0, 2.0), time_scale=SCALE)
    fake.schedule([(4.0, lambda f: f.neighbour(4, for_seconds=10.0))])
    async with fake.client() as client:
        seen = Seen(client)

        def raised_again() -> bool:
            caps = [(s.max_active, s.max_active_neighbours) for s in seen.stats]
            under = next((i for i, (_, others) in enumerate(caps) if others == 4), None)
            return under is not None and (6, 0) in caps[under:]

        outcomes = await _batches_until(client, seen, raised_again)
    assert all(outcome.ok for outcome in outcomes)
    caps = [(s.max_active, s.max_active_neighbours) for s in seen.stats]
    # Under the neighbour: a cap of 2, the 4 other slots known to be someone else's ...
    under = next(i for i, (cap, others) in enumerate(caps) if others == 4)
    assert caps[under][0] == 2
    # ... and the whole cap again once it left.
    assert (6, 0) in caps[under:]
    assert seen.stats[-1].max_active_probed_ago is not None
    assert fake.stats.duplicates == 0


async def test_an_upgrade_of_the_cap_is_found() -> None:
    fake = FakeNanoBanana(tier=None, max_active=4, duration=(1.0, 2.0), time_scale=SCALE)
    fake.schedule([(8.0, lambda f: f.set_limits(max_active=10))])
    async with fake.client() as client:
        seen = Seen(client)
        outcomes = await _batches_until(
            client, seen, lambda: bool(seen.stats) and seen.stats[-1].max_active >= 10
        )
    assert all(outcome.ok for outcome in outcomes)
    caps = [s.max_active for s in seen.stats]
    assert 4 in caps  # learned from the first 409s
    # ... and the upgrade found (a probe past the true cap may still be in flight at the end),
    # and used: more of our tasks ran at once than the old cap allowed. (Not always all 10 at
    # once: while tasks that ended are not yet polled, their slots still count as ours.)
    assert caps[-1] >= 10
    assert 4 < fake.stats.max_active <= 10


async def test_an_upgrade_of_the_create_rate_is_found() -> None:
    fake = FakeNanoBanana(tier=None, create_per_second=3, duration=0.5, time_scale=SCALE)
    fake.schedule([(6.0, lambda f: f.set_limits(create_per_second=12))])
    async with fake.client() as client:

        def probed_up() -> bool:
            return client.limits.create.windows.get(SCALE, 0) > 3

        outcomes = await _batches_until(client, None, probed_up, size=100)
        window = client.limits.create.windows
        snapshot = client.limits_snapshot()
    assert all(outcome.ok for outcome in outcomes)
    assert snapshot.create_probed_ago is not None
    # The 1-second window (SCALE real seconds) was learned from a 429 at 3, then probed up.
    assert window[SCALE] > 3


async def test_a_refused_probe_backs_off() -> None:
    fake = FakeNanoBanana(tier=None, max_active=6, duration=(1.0, 2.0), time_scale=SCALE)
    async with fake.client() as client:
        seen = Seen(client)
        with fake.neighbour(3), anyio.fail_after(180):  # for the whole run
            outcomes = await BatchRunner(client, on_progress=seen).run(_requests(120))
    assert all(outcome.ok for outcome in outcomes)
    # Most of the run, the cap is the room the neighbour leaves. (Not at every moment: a probe
    # may be accepted by a fluke, a slot freed by a task of ours that ended unseen, until the
    # next 409 takes it back.)
    caps = [s.max_active for s in seen.stats]
    others = [s.max_active_neighbours for s in seen.stats]
    assert statistics.mode(caps) == 3
    assert statistics.mode(others) == 3
    # Probes went on (the neighbour might have left) and were refused: the interval grew,
    # so the 409s they cost stay few.
    assert max(seen.intervals) > min(seen.intervals)
    assert fake.stats.active_limited < fake.stats.tasks_created / 4


async def test_many_generate_calls_probe_too() -> None:
    fake = FakeNanoBanana(tier=None, max_active=6, duration=(1.0, 2.0), time_scale=SCALE)
    fake.schedule([(4.0, lambda f: f.neighbour(4, for_seconds=8.0))])
    caps: list[tuple[int, int]] = []
    async with fake.client() as client:

        async def one(i: int) -> None:
            await client.generate(TextToImage(prompt=f"web banana {i}"))
            snapshot = client.limits_snapshot()
            caps.append((snapshot.max_active, snapshot.max_active_neighbours))

        def raised_again() -> bool:
            under = next((i for i, (_, others) in enumerate(caps) if others == 4), None)
            return under is not None and (6, 0) in caps[under:]

        rounds = 0
        with anyio.fail_after(180):  # rounds until seen: a slow, loaded machine needs more
            while not raised_again():
                async with anyio.create_task_group() as group:
                    for i in range(150):
                        group.start_soon(one, i)
                rounds += 1
    assert fake.stats.tasks_created == 150 * rounds
    assert fake.stats.duplicates == 0


async def test_no_probe_past_the_cap_while_the_create_rate_binds() -> None:
    clock = Clock()
    limiter = ActiveTaskLimiter(clock=clock)
    limiter.set_limit(5)
    limiter.create_rate = lambda: 1.0  # one create a second, tasks of a second: 1 slot's worth
    holders = await _hold(limiter, 5)
    _creates_accepted(limiter)
    async with anyio.create_task_group() as group:
        waiter = Waiter(limiter)
        group.start_soon(waiter.run)
        await anyio.wait_all_tasks_blocked()
        clock.now += MAX_INTERVAL
        assert not limiter.probe_now()  # one slot more would gain nothing: no refused create
        limiter.create_rate = lambda: 100.0  # a rate that could fill many more
        assert limiter.probe_now()
        await waiter.got.wait()
    holders.append(waiter.holder)
    for holder in holders:
        limiter.release(holder)
