"""The learned limits of one key (`limits`), driven by an injected clock where possible.

`EndpointLimiter` reads time from the clock it is given and sleeps with anyio; a test moves the
clock by hand and asks whether an acquire would wait (it is started in a task and found still
waiting after a few scheduler passes), so no test depends on how fast the machine is.
"""

from __future__ import annotations

import math

import anyio
import pytest
from anyio import wait_all_tasks_blocked

from nanobanana_async import TIERS as PUBLIC_TIERS
from nanobanana_async import AsyncNanoBanana, ConfigurationError
from nanobanana_async.limits import (
    TIERS,
    ActiveTaskLimiter,
    EndpointLimiter,
    Limits,
    tier_limits,
)
from nanobanana_async.limits._base import base_margin
from nanobanana_async.testing import TIERS as FAKE_TIERS

pytestmark = pytest.mark.anyio

#: The most safety margin a window may add, as a share of its length. The tests allow any
#: margin up to this, so that tuning the margin does not break them.
MAX_MARGIN = 0.25


def assert_window_rate(rate: float | None, limit: int, seconds: float) -> None:
    """The sustained rate of a window: its limit per its length, less a bounded margin."""
    assert rate is not None
    assert limit / (seconds * (1 + MAX_MARGIN)) <= rate <= limit / seconds


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def would_wait(limiter: EndpointLimiter) -> bool:
    """Whether ``limiter.acquire()`` waits now.

    The attempt runs beside this task for a few scheduler passes, plenty for a request that
    may go at once; one still waiting then is cancelled. If it went, it counts as sent; if it
    waited, it may keep what it reserved, so a test goes on with a fresh limiter.
    """
    went = False

    async def attempt() -> None:
        nonlocal went
        await limiter.acquire()
        went = True

    async with anyio.create_task_group() as group:
        group.start_soon(attempt)
        for _ in range(20):
            await anyio.lowlevel.checkpoint()
        group.cancel_scope.cancel()
    return not went


async def acquire_now(limiter: EndpointLimiter) -> None:
    """Acquire, failing the test if it has to wait."""
    assert not await would_wait(limiter), "expected the request to go at once"


def fresh(clock: Clock, windows: tuple[tuple[int, float], ...] = ()) -> EndpointLimiter:
    return EndpointLimiter("create", windows, clock=clock)


# -- EndpointLimiter: sliding windows ---------------------------------------------------------


async def test_an_unlimited_endpoint_never_waits() -> None:
    clock = Clock()
    limiter = fresh(clock)
    assert limiter.rate is None
    assert limiter.windows == {}
    for _ in range(50):
        await limiter.acquire()
    assert limiter.requests == 50
    assert not await would_wait(limiter)


async def sent_at(limiter: EndpointLimiter, clock: Clock, *times: float) -> None:
    for at in times:
        clock.now = at
        await acquire_now(limiter)


async def test_the_request_past_a_window_limit_waits_for_the_first_to_fall_out() -> None:
    clock = Clock(0.0)
    limiter = fresh(clock, ((3, 10.0),))
    assert limiter.windows == {10.0: 3}
    assert_window_rate(limiter.rate, 3, 10.0)
    await sent_at(limiter, clock, 0.0, 5.0, 6.0)
    clock.now = 9.99
    assert await would_wait(limiter)  # 3 went in the last 10 s

    # It may go once the first of the three is out of the window (with any safety margin),
    # long before the last one is.
    limiter = fresh(clock, ((3, 10.0),))
    await sent_at(limiter, clock, 0.0, 5.0, 6.0, 10.0 * (1 + MAX_MARGIN) + 0.01)
    clock.now = 14.0
    assert await would_wait(limiter)  # 5.0, 6.0 and 12.51 are in the window now
    assert limiter.requests == 4


async def test_every_known_window_binds() -> None:
    clock = Clock(0.0)
    limiter = fresh(clock, ((2, 1.0), (3, 60.0)))
    assert limiter.windows == {1.0: 2, 60.0: 3}
    assert_window_rate(limiter.rate, 3, 60.0)  # the tighter of the two
    await sent_at(limiter, clock, 0.0, 0.0)
    assert await would_wait(limiter)  # the 1 s window

    limiter = fresh(clock, ((2, 1.0), (3, 60.0)))
    await sent_at(limiter, clock, 0.0, 0.1, 2.0)
    clock.now = 5.0
    assert await would_wait(limiter)  # the 1 s window is free, the minute is not

    limiter = fresh(clock, ((2, 1.0), (3, 60.0)))
    await sent_at(limiter, clock, 0.0, 0.1, 2.0, 60.0 * (1 + MAX_MARGIN) + 0.01)


async def test_requests_already_sent_count_against_a_window_learned_later() -> None:
    clock = Clock(0.0)
    limiter = fresh(clock)
    await sent_at(limiter, clock, 0.0, 1.0, 2.0)
    clock.now = 2.5
    limiter.on_rate_limited(None, limit=3, window=10.0)
    assert await would_wait(limiter)


async def test_a_waiting_acquire_reserves_its_slot_in_order() -> None:
    # Real time here: two acquires at once, with room for one per 0.05 s; the second one is
    # reserved after the first, so both windows hold.
    limiter = EndpointLimiter("query", ((1, 0.05),))
    async with anyio.create_task_group() as group:
        for _ in range(3):
            group.start_soon(limiter.acquire)
    assert limiter.requests == 3


# -- EndpointLimiter: learning from 429s --------------------------------------------------------


async def test_a_429_body_teaches_the_window_and_retry_after_blocks() -> None:
    clock = Clock(0.0)
    limiter = fresh(clock)
    limiter.on_rate_limited(2.0, limit=4, window=10.0)
    assert limiter.windows == {10.0: 4}
    assert_window_rate(limiter.rate, 4, 10.0)
    assert limiter.rate_limited == 1
    clock.now = 1.9
    assert await would_wait(limiter)  # retryAfter: 2 s

    limiter = fresh(clock)
    clock.now = 0.0
    limiter.on_rate_limited(2.0, limit=4, window=10.0)
    await sent_at(limiter, clock, 2.01, 2.02, 2.03, 2.04)
    assert await would_wait(limiter)  # and the learned window binds


async def test_a_429_while_waiting_sends_the_request_after_the_providers_wait() -> None:
    # The real clock here: one request per 0.3 s, and a 429 asking for 0.5 s while the second
    # request waits its turn. Sleeps never end early, so the bound below cannot flake.
    limiter = EndpointLimiter("create", ((1, 0.3),))
    await limiter.acquire()
    got: list[float] = []

    async def second() -> None:
        got.append(await limiter.acquire())

    async with anyio.create_task_group() as group:
        group.start_soon(second)
        for _ in range(5):
            await anyio.lowlevel.checkpoint()
        assert not got
        throttled_at = anyio.current_time()
        limiter.on_rate_limited(0.5, limit=1, window=0.3)
    assert got[0] >= throttled_at + 0.5  # not at the slot it was waiting for
    assert limiter.requests == 2


async def test_a_precise_retry_after_lets_the_next_window_start_on_time() -> None:
    clock = Clock(0.0)
    limiter = fresh(clock, ((3, 10.0),))
    await sent_at(limiter, clock, 0.0, 5.0, 6.0)
    # The provider's window ends 3.5 s after the refused request was answered, at 9.5 (at
    # once: no round trip to space requests by).
    limiter.on_rate_limited(3.5, limit=3, window=10.0, sent_at=6.0)
    clock.now = 9.49
    assert await would_wait(limiter)
    limiter = fresh(clock, ((3, 10.0),))
    await sent_at(limiter, clock, 0.0, 5.0, 6.0)
    limiter.on_rate_limited(3.5, limit=3, window=10.0, sent_at=6.0)
    # A sliding window would hold the next request until 10 s after the first one.
    await sent_at(limiter, clock, 9.7, 9.8, 9.9)
    clock.now = 12.0
    assert await would_wait(limiter)  # three in the provider's window [9.5, 19.5)


async def test_while_one_window_is_known_requests_go_a_round_trip_apart() -> None:
    clock = Clock(0.0)
    limiter = fresh(clock)
    await sent_at(limiter, clock, 0.0, 0.0, 0.0)
    clock.now = 0.03  # the answer took 0.03 s
    limiter.on_rate_limited(0.97, limit=3, window=1.0, sent_at=0.0)
    # The second's window is known; the minute's may be filling unseen. At the next window's
    # start the requests go two round trips (0.06 s) apart, not in a burst, so that when the
    # minute's fills one request meets its 429, not three.
    await sent_at(limiter, clock, 1.03)  # the window's start, and its margin
    clock.now = 1.08
    assert await would_wait(limiter)
    await sent_at(limiter, clock, 1.091, 1.152)


async def test_the_spacing_never_slows_the_known_windows_rate() -> None:
    clock = Clock(0.0)
    limiter = fresh(clock)
    await sent_at(limiter, clock, 0.0, 0.0, 0.0)
    clock.now = 5.0  # an answer that took 5 s
    limiter.on_rate_limited(0.5, limit=3, window=1.0, sent_at=0.0)
    await sent_at(limiter, clock, 6.0)
    clock.now = 6.3
    assert await would_wait(limiter)
    await sent_at(limiter, clock, 6.34, 6.68)  # a third of a second apart: 3 a second


async def test_once_both_windows_are_known_a_burst_goes_as_they_allow() -> None:
    clock = Clock(0.0)
    limiter = fresh(clock, ((100, 60.0),))
    await sent_at(limiter, clock, 0.0, 0.0, 0.0)
    clock.now = 0.03
    limiter.on_rate_limited(0.97, limit=3, window=1.0, sent_at=0.0)
    await sent_at(limiter, clock, 1.1, 1.1, 1.1)


async def test_fixed_windows_fall_back_to_sliding_when_the_provider_disagrees() -> None:
    clock = Clock(0.0)
    limiter = fresh(clock)
    await sent_at(limiter, clock, 0.0)
    clock.now = 1.0
    limiter.on_rate_limited(2.5, limit=3, window=10.0)  # a precise wait: fixed windows
    fixed = limiter.rate
    assert fixed == pytest.approx(3 / 10.0)  # no margin needed on a known grid
    clock.now = 13.0
    limiter.on_rate_limited(0.5, limit=3, window=10.0)  # another precise wait: same grid
    assert limiter.rate == fixed

    # Refused twice for requests the fixed model let through: back to sliding windows, for good.
    limiter.on_rate_limited(1.0, limit=3, window=10.0, sent_at=5.0)
    assert limiter.rate == fixed
    limiter.on_rate_limited(1.0, limit=3, window=10.0, sent_at=6.0)
    sliding = limiter.rate
    assert sliding is not None
    assert sliding < fixed
    assert_window_rate(sliding, 3, 10.0)
    clock.now = 20.0
    limiter.on_rate_limited(2.5, limit=3, window=10.0)
    assert limiter.rate == sliding


async def test_retry_after_alone_blocks_until_it_passes() -> None:
    clock = Clock(100.0)
    limiter = fresh(clock)
    limiter.on_rate_limited(5.0, limit=None, window=None)
    assert limiter.rate is None  # nothing measured: the wait is all there is to go on
    clock.now = 104.0
    assert await would_wait(limiter)

    limiter = fresh(clock)
    clock.now = 100.0
    limiter.on_rate_limited(5.0)
    limiter.on_rate_limited(1.0)  # a shorter wait never shortens the block
    clock.now = 104.0
    assert await would_wait(limiter)

    limiter = fresh(clock)
    clock.now = 100.0
    limiter.on_rate_limited(5.0)
    await sent_at(limiter, clock, 105.01)


async def test_a_changed_limit_resizes_the_window() -> None:
    clock = Clock(0.0)
    limiter = fresh(clock, ((5, 1.0),))
    limiter.on_rate_limited(None, limit=2, window=1.0)
    assert limiter.windows == {1.0: 2}
    await sent_at(limiter, clock, 0.0, 0.0)
    assert await would_wait(limiter)
    limiter.learn_window(0, 30.0)  # a limit below 1 means one at a time
    assert limiter.windows == {1.0: 2, 30.0: 1}


async def test_a_429_inside_a_window_it_kept_widens_the_margin_within_bounds() -> None:
    clock = Clock(0.0)
    limiter = fresh(clock)
    await limiter.acquire()
    clock.now = 5.0
    limiter.learn_window(10, 1.0)
    before = limiter.rate
    assert before is not None
    # Refused for a request sent before the window was known: nothing to learn about clocks.
    limiter.on_rate_limited(1.0, limit=10, window=1.0, sent_at=4.0)
    limiter.on_rate_limited(1.0, limit=10, window=1.0)
    assert limiter.rate == before

    clock.now = 7.0
    sent = await limiter.acquire()
    limiter.on_rate_limited(1.0, limit=10, window=1.0, sent_at=sent)
    after = limiter.rate
    assert after is not None
    assert after < before
    rates = [after]
    for _ in range(30):
        limiter.on_rate_limited(1.0, limit=10, window=1.0, sent_at=sent)
        rate = limiter.rate
        assert rate is not None
        rates.append(rate)
    assert rates == sorted(rates, reverse=True)
    assert rates[-1] == rates[-2]  # the margin has a cap
    assert_window_rate(rates[-1], 10, 1.0)
    assert limiter.windows == {1.0: 10}
    assert limiter.rate_limited == 33


async def test_a_run_of_accepted_requests_gives_the_margin_back() -> None:
    clock = Clock(0.0)
    limiter = fresh(clock, ((10, 1.0),))
    start = limiter.rate
    clock.now = 1.0
    sent = await limiter.acquire()
    for _ in range(5):
        limiter.on_rate_limited(1.0, limit=10, window=1.0, sent_at=sent)
    widened = limiter.rate
    assert widened is not None
    assert start is not None
    assert widened < start
    for _ in range(5000):
        limiter.on_success()
    assert limiter.rate == pytest.approx(start)  # back to the base margin, not past it


@pytest.mark.parametrize(("limit", "window"), [(0, 1.0), (5, 0.0), (-1, -1.0), (5, None)])
def test_a_429_body_without_usable_numbers_falls_back_to_cubic(
    limit: int | None, window: float | None
) -> None:
    clock = Clock(0.0)
    limiter = fresh(clock)
    limiter.on_rate_limited(None, limit=limit, window=window)
    assert limiter.windows == {}
    assert limiter.rate is not None


async def test_cubic_cuts_the_rate_on_a_throttle_and_grows_it_back() -> None:
    clock = Clock(0.0)
    limiter = fresh(clock)
    for step in range(11):  # 10 requests per second
        clock.now = step * 0.1
        await limiter.acquire()
    limiter.on_success()  # no fallback rate yet: nothing changes
    assert limiter.rate is None

    limiter.on_rate_limited(None)
    assert limiter.rate == pytest.approx(10.0 * EndpointLimiter._BETA)
    cut = limiter.rate
    assert cut is not None

    rates = []
    for dt in (0.5, 1.0, 1.5, 2.0, 3.0, 4.0):
        clock.now = 1.0 + dt
        limiter.on_success()
        rate = limiter.rate
        assert rate is not None
        rates.append(rate)
    assert rates == sorted(rates)  # it only grows between throttles
    assert rates[-1] > 10.0  # past the old maximum, probing upward
    assert rates[-1] <= 2 * 10.0 + 1e-9  # but never past twice the rate measured

    # A second throttle cuts from where it got to.
    top = limiter.rate
    assert top is not None
    limiter.on_rate_limited(None)
    assert limiter.rate == pytest.approx(top * EndpointLimiter._BETA)
    assert limiter.rate_limited == 2


async def test_cubic_paces_requests_at_its_rate() -> None:
    clock = Clock(0.0)
    limiter = fresh(clock)
    limiter.on_rate_limited(None)  # nothing measured: from 1 request/s, cut to 0.7
    assert limiter.rate == pytest.approx(EndpointLimiter._BETA)
    await acquire_now(limiter)
    clock.now = 1.0
    assert await would_wait(limiter)  # the next goes 1/0.7 s after the last
    limiter = fresh(clock)
    clock.now = 0.0
    limiter.on_rate_limited(None)
    await limiter.acquire()
    clock.now = 1 / EndpointLimiter._BETA + 0.01
    await acquire_now(limiter)


def test_cubic_never_cuts_below_a_floor() -> None:
    clock = Clock(0.0)
    limiter = fresh(clock)
    for _ in range(100):
        limiter.on_rate_limited(None)
    assert limiter.rate == pytest.approx(0.05)


def test_cubic_growth_without_a_measured_rate_follows_the_curve() -> None:
    clock = Clock(0.0)
    limiter = fresh(clock)
    limiter.on_rate_limited(None)  # from 1/s, nothing measured
    clock.now = 100.0
    limiter.on_success()
    rate = limiter.rate
    assert rate is not None
    assert rate > 1.0  # grown past the old maximum with no measured ceiling
    assert math.isfinite(rate)


def test_cubic_and_windows_together_the_tighter_binds() -> None:
    clock = Clock(0.0)
    limiter = fresh(clock, ((100, 1.0),))
    limiter.on_rate_limited(None)
    assert limiter.rate == pytest.approx(EndpointLimiter._BETA)


# -- ActiveTaskLimiter -------------------------------------------------------------------------


async def hold(limiter: ActiveTaskLimiter, count: int) -> list[object]:
    holders = [object() for _ in range(count)]
    for holder in holders:
        await limiter.acquire(holder)
    return holders


async def test_an_unknown_cap_grows_while_creates_succeed() -> None:
    limiter = ActiveTaskLimiter(initial=3)
    assert limiter.limit == 3
    assert not limiter.known
    assert limiter.waiting == 0  # no capacity limiter made yet
    holders = await hold(limiter, 2)
    for holder in holders:
        limiter.mark_running(holder)
    limiter.on_created()  # below the cap: nothing to learn
    assert limiter.limit == 3
    holders += await hold(limiter, 1)
    assert limiter.active == 3
    limiter.mark_running(holders[-1])
    limiter.on_created()
    assert limiter.limit == 4
    holders += await hold(limiter, 1)  # the new slot is usable at once
    assert limiter.active == 4
    for holder in holders:
        limiter.release(holder)
    assert limiter.active == 0


async def test_an_unknown_cap_does_not_grow_on_slots_still_creating() -> None:
    # Slots held by creates still waiting on the rate limiter say nothing about the provider.
    limiter = ActiveTaskLimiter(initial=3)
    holders = await hold(limiter, 3)
    limiter.on_created()
    assert limiter.limit == 3
    for holder in holders:
        limiter.release(holder)


async def test_a_409_cuts_the_cap_to_what_runs_now() -> None:
    limiter = ActiveTaskLimiter(initial=8)
    holders = await hold(limiter, 6)
    for holder in holders[:4]:
        limiter.mark_running(holder)
    assert limiter.running == 4
    limiter.on_conflict()
    assert limiter.known
    assert limiter.limit == 4
    assert limiter.conflicts == 1
    # Later 409s never raise it.
    for holder in holders[:4]:
        limiter.release(holder)
    extra = await hold(limiter, 0)
    assert extra == []
    limiter.mark_running(holders[4])
    limiter.on_conflict()
    assert limiter.limit == 1
    limiter.mark_running(holders[5])
    limiter.on_conflict()
    assert limiter.limit == 1  # min(current, running): never grows on a conflict
    assert limiter.conflicts == 3


async def test_a_409_with_nothing_of_ours_running_learns_nothing() -> None:
    limiter = ActiveTaskLimiter(initial=8)
    holder = object()
    await limiter.acquire(holder)
    limiter.on_conflict()
    assert not limiter.known
    assert limiter.limit == 8
    assert limiter.conflicts == 1
    limiter.release(holder)


@pytest.mark.parametrize("body_limit", [3, 12])
async def test_a_409_that_says_the_limit_is_believed(body_limit: int) -> None:
    limiter = ActiveTaskLimiter(initial=8)
    holders = await hold(limiter, 2)
    limiter.on_conflict(body_limit)
    assert limiter.known
    assert limiter.limit == body_limit
    limiter.on_conflict(0)  # not a limit: fall back to the running count (none runs)
    assert limiter.limit == body_limit
    for holder in holders:
        limiter.release(holder)


async def test_holds_mark_running_and_release_of_a_non_holder() -> None:
    limiter = ActiveTaskLimiter(2)
    stranger = object()
    assert not limiter.holds(stranger)
    limiter.mark_running(stranger)
    assert limiter.running == 0
    limiter.release(stranger)  # does nothing
    assert limiter.active == 0

    holder = object()
    await limiter.acquire(holder)
    assert limiter.holds(holder)
    limiter.mark_running(holder)
    assert limiter.running == 1
    limiter.release(holder)
    limiter.release(holder)  # twice is harmless
    assert not limiter.holds(holder)
    assert (limiter.active, limiter.running) == (0, 0)
    # The slot really came back: two holders fit again.
    await hold(limiter, 2)


async def test_set_limit_before_and_after_first_use() -> None:
    limiter = ActiveTaskLimiter()
    limiter.set_limit(1)  # before the capacity limiter exists
    assert (limiter.limit, limiter.known) == (1, True)
    holders = await hold(limiter, 1)
    limiter.set_limit(2)  # resized while a token is held
    holders += await hold(limiter, 1)
    assert limiter.active == 2
    with pytest.raises(ConfigurationError, match="at least 1"):
        limiter.set_limit(0)
    for holder in holders:
        limiter.release(holder)


async def test_wait_for_release_returns_when_a_slot_is_freed() -> None:
    limiter = ActiveTaskLimiter(1)
    holder = object()
    await limiter.acquire(holder)
    results: list[bool] = []

    async def waiter() -> None:
        results.append(await limiter.wait_for_release(60.0))

    async with anyio.create_task_group() as group:
        group.start_soon(waiter)
        group.start_soon(waiter)  # both share one event
        await wait_all_tasks_blocked()
        limiter.release(holder)
    assert results == [True, True]


async def test_wait_for_release_times_out_without_a_release() -> None:
    limiter = ActiveTaskLimiter(1)
    assert await limiter.wait_for_release(0.001) is False
    limiter.release(object())  # a non-holder release wakes nobody
    assert await limiter.wait_for_release(0.001) is False


# -- Limits and tiers --------------------------------------------------------------------------


def test_limits_with_a_tier_can_be_built_outside_an_event_loop() -> None:
    limits = Limits(tier="basic")
    assert limits.active.limit == 5
    assert AsyncNanoBanana(api_key="sk-test", tier="basic").limits.active.limit == 5


async def test_limits_start_unknown() -> None:
    limits = Limits()
    snapshot = limits.snapshot()
    assert not snapshot.max_active_known
    assert snapshot.max_active == ActiveTaskLimiter().limit  # the starting guess
    assert snapshot.create_windows == {}
    assert snapshot.query_windows == {}
    assert snapshot.create_rate is None
    assert snapshot.query_rate is None
    assert (snapshot.active, snapshot.conflicts, snapshot.rate_limited) == (0, 0, 0)
    assert limits.endpoint("create") is limits.create
    assert limits.endpoint("query") is limits.query


@pytest.mark.parametrize("tier", ["free", "basic", "standard", "pro", "ultra", "enterprise"])
async def test_a_tier_seeds_every_number(tier: str) -> None:
    limits = Limits(tier=tier)
    preset = TIERS[tier]
    snapshot = limits.snapshot()
    assert snapshot.max_active == preset.active
    assert snapshot.max_active_known
    assert snapshot.create_windows == {1.0: preset.create[0], 60.0: preset.create[1]}
    assert snapshot.query_windows == {1.0: preset.query[0], 60.0: preset.query[1]}
    assert snapshot.create_rate is not None
    assert snapshot.create_rate < preset.create[0]


async def test_tier_names_are_case_insensitive_and_max_active_overrides() -> None:
    limits = Limits(tier="PRO", max_active=7)
    assert limits.active.limit == 7
    assert limits.create.windows == {1.0: 20, 60.0: 1200}
    limits = Limits()
    limits.seed(max_active=3)
    assert (limits.active.limit, limits.active.known) == (3, True)
    assert limits.create.windows == {}
    limits.seed()  # nothing given: nothing changes
    assert limits.active.limit == 3


@pytest.mark.parametrize("tier", ["gold", "", "basic "])
async def test_an_unknown_tier_is_refused_with_the_known_ones_listed(tier: str) -> None:
    with pytest.raises(ConfigurationError, match="unknown tier") as caught:
        Limits(tier=tier)
    assert "enterprise" in str(caught.value)
    assert caught.value.field == "tier"
    with pytest.raises(ConfigurationError, match="unknown tier"):
        tier_limits(tier)


@pytest.mark.parametrize("max_active", [0, -1])
async def test_a_cap_below_one_is_refused(max_active: int) -> None:
    with pytest.raises(ConfigurationError, match="at least 1") as caught:
        Limits(max_active=max_active)
    assert caught.value.field == "max_active"


def test_the_tier_table_matches_the_fake_provider() -> None:
    assert PUBLIC_TIERS is TIERS
    assert set(TIERS) == set(FAKE_TIERS)
    for name, preset in TIERS.items():
        fake = FAKE_TIERS[name]
        assert preset.create == (fake.create_per_second, fake.create_per_minute)
        assert preset.query == (fake.query_per_second, fake.query_per_minute)
        assert preset.active == fake.max_active


async def test_snapshot_counts_conflicts_and_rate_limits() -> None:
    limits = Limits()
    holder = object()
    await limits.active.acquire(holder)
    limits.active.mark_running(holder)
    limits.active.on_conflict()
    limits.create.on_rate_limited(None)
    limits.query.on_rate_limited(0.0, limit=5, window=1.0)
    snapshot = limits.snapshot()
    assert snapshot.conflicts == 1
    assert snapshot.rate_limited == 2
    assert snapshot.active == 1
    assert snapshot.max_active == 1
    assert snapshot.query_windows == {1.0: 5}
    limits.active.release(holder)


@pytest.mark.parametrize(
    ("seconds", "margin"),
    [(60.0, 0.05), (1.0, 0.02), (0.2, 0.01), (0.02, 0.005), (1e-300, 2.5e-301)],
)
def test_a_windows_margin_is_bounded_both_ways_and_by_the_window(
    seconds: float, margin: float
) -> None:
    assert base_margin(seconds) == pytest.approx(margin)
    assert base_margin(seconds) <= MAX_MARGIN * seconds
