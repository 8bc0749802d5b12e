"""The limits of one key: the tier table, request pacing and the active-task cap."""

from __future__ import annotations

import anyio
import pytest

from nanobanana_async import TIERS, ConfigurationError, Limits, LimitsSnapshot, TierLimits
from nanobanana_async.limits import ActiveTaskLimiter, EndpointLimiter, tier_limits


class ManualClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class TestTiers:
    def test_the_documented_table(self) -> None:
        assert TIERS["free"] == TierLimits(create=(1, 10), query=(2, 60), active=1)
        assert TIERS["basic"] == TierLimits(create=(5, 180), query=(20, 1000), active=5)
        assert TIERS["standard"] == TierLimits(create=(10, 600), query=(50, 3000), active=15)
        assert TIERS["pro"] == TierLimits(create=(20, 1200), query=(100, 6000), active=30)
        assert TIERS["ultra"] == TierLimits(create=(50, 3000), query=(200, 12000), active=80)
        assert TIERS["enterprise"] == TierLimits(create=(100, 6000), query=(500, 30000), active=300)

    def test_lookup_ignores_case(self) -> None:
        assert tier_limits("PRO") is TIERS["pro"]

    def test_unknown_tier(self) -> None:
        with pytest.raises(
            ConfigurationError, match="unknown tier 'gold'; expected one of free, basic"
        ) as caught:
            tier_limits("gold")
        assert caught.value.field == "tier"


class TestLimits:
    def test_nothing_known_by_default(self) -> None:
        snapshot = Limits().snapshot()
        assert snapshot == LimitsSnapshot(
            max_active=snapshot.max_active,
            max_active_known=False,
            active=0,
            create_windows={},
            query_windows={},
            create_rate=None,
            query_rate=None,
            conflicts=0,
            rate_limited=0,
        )

    def test_seeded_from_a_tier(self) -> None:
        limits = Limits(tier="standard")
        snapshot = limits.snapshot()
        assert snapshot.max_active == 15
        assert snapshot.max_active_known
        assert snapshot.create_windows == {1.0: 10, 60.0: 600}
        assert snapshot.query_windows == {1.0: 50, 60.0: 3000}
        # The 60-second window is the tighter one for sustained creates (600/min < 10/s).
        assert snapshot.create_rate is not None
        assert 9.0 < snapshot.create_rate < 10.0

    def test_max_active_overrides_the_tier(self) -> None:
        assert Limits(tier="free", max_active=4).active.limit == 4
        assert Limits(max_active=7).snapshot().max_active_known

    def test_bad_max_active(self) -> None:
        with pytest.raises(ConfigurationError, match="at least 1") as caught:
            Limits(max_active=0)
        assert caught.value.field == "max_active"

    def test_endpoints_are_separate(self) -> None:
        limits = Limits()
        assert limits.endpoint("create") is limits.create
        assert limits.endpoint("query") is limits.query
        assert limits.create is not limits.query


def test_the_types_of_public_attributes_are_exported() -> None:
    from nanobanana_async import limits as package

    local = Limits()
    assert type(local.create) is type(local.query) is package.EndpointLimiter
    assert type(local.active) is package.ActiveTaskLimiter
    shared = package.RedisLimits("redis://127.0.0.1:1/0")  # nothing connects until entered
    assert type(shared.create) is type(shared.query) is package.RedisEndpointLimiter
    assert type(shared.active) is package.RedisActiveTaskLimiter
    assert package.Limits is Limits
    assert package.TIERS is TIERS
    assert sorted(package.__all__) == sorted(set(package.__all__))
    for name in package.__all__:
        assert getattr(package, name) is not None


class TestEndpointLimiter:
    @pytest.mark.anyio
    async def test_unlimited_until_told(self) -> None:
        limiter = EndpointLimiter("query")
        for _ in range(100):
            await limiter.acquire()
        assert limiter.requests == 100
        assert limiter.rate is None
        assert limiter.windows == {}

    @pytest.mark.anyio
    async def test_a_window_spaces_requests(self) -> None:
        limiter = EndpointLimiter("create", ((2, 0.05),))
        started = anyio.current_time()
        for _ in range(3):
            await limiter.acquire()
        # The third request had to wait for the first to leave the window (a lower bound only).
        assert anyio.current_time() - started >= 0.05
        assert limiter.requests == 3

    @pytest.mark.anyio
    async def test_requests_go_in_arrival_order(self) -> None:
        limiter = EndpointLimiter("create", ((1, 0.02),))
        order: list[int] = []

        async def request(n: int) -> None:
            await limiter.acquire()
            order.append(n)

        async with anyio.create_task_group() as tg:
            for n in range(5):
                tg.start_soon(request, n)
                # Each arrives while the ones before it still wait for the window.
                await anyio.wait_all_tasks_blocked()
        assert order == [0, 1, 2, 3, 4]
        assert limiter.requests == 5

    @pytest.mark.anyio
    async def test_retry_after_blocks_every_caller(self) -> None:
        limiter = EndpointLimiter("query")
        await limiter.acquire()
        limiter.on_rate_limited(0.05, limit=100, window=1.0)
        started = anyio.current_time()
        await limiter.acquire()
        assert anyio.current_time() - started >= 0.05
        assert limiter.rate_limited == 1

    @pytest.mark.anyio
    async def test_a_429_during_a_wait_queues_the_request_again(self) -> None:
        limiter = EndpointLimiter("query", ((1, 0.3),))
        await limiter.acquire()
        let_through: list[float] = []

        async def second() -> None:
            await limiter.acquire()
            let_through.append(anyio.current_time())

        async with anyio.create_task_group() as tg:
            tg.start_soon(second)
            await anyio.wait_all_tasks_blocked()
            refused_at = anyio.current_time()
            # The wait outlasts the second request's turn in the window.
            limiter.on_rate_limited(0.4, limit=1, window=0.3)
        assert let_through
        assert let_through[0] - refused_at >= 0.4
        assert limiter.requests == 2

    def test_windows_are_learned_and_resized(self) -> None:
        clock = ManualClock()
        limiter = EndpointLimiter("query", clock=clock)
        limiter.learn_window(10, 1.0)
        limiter.learn_window(0, 60.0)  # a nonsense limit still allows one request
        assert limiter.windows == {1.0: 10, 60.0: 1}
        limiter.learn_window(5, 1.0)
        assert limiter.windows == {1.0: 5, 60.0: 1}
        limiter.learn_window(5, 1.0)
        assert limiter.windows == {1.0: 5, 60.0: 1}

    def test_a_429_body_teaches_its_window(self) -> None:
        limiter = EndpointLimiter("create", clock=ManualClock())
        limiter.on_rate_limited(1.0, limit=5, window=1.0)
        assert limiter.windows == {1.0: 5}
        assert limiter.rate == pytest.approx(5 / 1.02)
        limiter.on_rate_limited(None, limit=0, window=1.0)  # unusable numbers: fall back
        assert limiter.windows == {1.0: 5}

    @pytest.mark.anyio
    async def test_refused_while_paced_widens_the_margin_then_relaxes(self) -> None:
        clock = ManualClock()
        limiter = EndpointLimiter("create", clock=clock)
        await limiter.acquire()
        limiter.on_rate_limited(None, limit=1000, window=1.0)
        before = limiter.rate
        assert before is not None
        clock.now += 5
        sent_at = await limiter.acquire()
        limiter.on_rate_limited(None, limit=1000, window=1.0, sent_at=sent_at)
        widened = limiter.rate
        assert widened is not None
        assert widened < before
        # A request sent before the window was known was not paced by it: nothing to widen.
        limiter.on_rate_limited(None, limit=1000, window=1.0, sent_at=clock.now - 60)
        assert limiter.rate == widened
        for _ in range(200):
            limiter.on_success()
        relaxed = limiter.rate
        assert relaxed is not None
        assert widened < relaxed <= before

    @pytest.mark.anyio
    async def test_an_unexplained_429_cuts_the_rate_and_it_grows_back(self) -> None:
        clock = ManualClock()
        limiter = EndpointLimiter("query", clock=clock)
        for _ in range(11):  # 10 requests per second
            await limiter.acquire()
            clock.now += 0.1
        limiter.on_rate_limited(None)
        cut = limiter.rate
        assert cut == pytest.approx(0.7 * 10, rel=0.05)
        assert cut is not None
        clock.now += 0.5
        limiter.on_success()
        recovering = limiter.rate
        assert recovering is not None
        assert cut < recovering < 10  # back towards the rate that was refused...
        clock.now += 10
        limiter.on_success()
        grown = limiter.rate
        assert grown is not None
        assert 10 < grown <= 2 * 10 * 1.05  # ...then past it, but never beyond twice the measure

    def test_an_unexplained_first_429_assumes_one_per_second(self) -> None:
        limiter = EndpointLimiter("query", clock=ManualClock())
        limiter.on_rate_limited(None)
        assert limiter.rate == pytest.approx(0.7)
        limiter.on_success()  # no measured rate: the cubic curve alone
        limiter.on_rate_limited(None)
        assert limiter.rate == pytest.approx(0.49)

    @pytest.mark.anyio
    async def test_the_fallback_rate_spaces_requests(self) -> None:
        clock = ManualClock()
        limiter = EndpointLimiter("query", clock=clock)
        await limiter.acquire()
        await limiter.acquire()  # same instant: no measurable rate yet
        limiter.on_rate_limited(None)
        for _ in range(300):
            limiter.on_rate_limited(None)  # floors at 0.05/s
        assert limiter.rate == pytest.approx(0.05)
        clock.now += 20.0  # one interval at 0.05/s has passed since the last request
        assert await limiter.acquire() == clock.now
        assert limiter.requests == 3


class TestActiveTaskLimiter:
    @pytest.mark.anyio
    async def test_holders(self) -> None:
        limiter = ActiveTaskLimiter(2)
        a, b = object(), object()
        await limiter.acquire(a)
        await limiter.acquire(b)
        assert limiter.active == 2
        assert limiter.holds(a)
        limiter.mark_running(a)
        limiter.mark_running(object())  # not a holder: ignored
        assert limiter.running == 1
        limiter.release(a)
        limiter.release(a)  # a second release does nothing
        limiter.release(object())
        assert limiter.active == 1
        assert limiter.running == 0
        assert not limiter.holds(a)

    @pytest.mark.anyio
    async def test_waiters_get_freed_slots(self) -> None:
        limiter = ActiveTaskLimiter(1)
        first, second = object(), object()
        await limiter.acquire(first)
        assert limiter.waiting == 0
        async with anyio.create_task_group() as tg:
            tg.start_soon(limiter.acquire, second)
            await anyio.wait_all_tasks_blocked()
            assert limiter.waiting == 1
            assert not limiter.holds(second)
            limiter.release(first)
        assert limiter.holds(second)

    def test_waiting_before_first_use(self) -> None:
        assert ActiveTaskLimiter().waiting == 0

    @pytest.mark.anyio
    async def test_learning_raises_the_cap_at_each_accepted_create(self) -> None:
        limiter = ActiveTaskLimiter(initial=1)
        holder = object()
        await limiter.acquire(holder)
        assert not limiter.known
        limiter.on_created()
        assert limiter.limit == 2
        limiter.on_created()  # not at the cap any more
        assert limiter.limit == 2

    @pytest.mark.anyio
    async def test_a_409_with_running_tasks_sets_the_cap(self) -> None:
        limiter = ActiveTaskLimiter(initial=5)
        holders = [object() for _ in range(4)]
        for holder in holders:
            await limiter.acquire(holder)
        for holder in holders[:3]:
            limiter.mark_running(holder)
        limiter.on_conflict()
        assert limiter.known
        assert limiter.limit == 3
        assert limiter.conflicts == 1

    def test_a_409_without_our_tasks_teaches_nothing(self) -> None:
        limiter = ActiveTaskLimiter(initial=5)
        limiter.on_conflict()
        assert not limiter.known
        assert limiter.limit == 5
        assert limiter.conflicts == 1

    def test_a_409_that_names_the_limit(self) -> None:
        limiter = ActiveTaskLimiter()
        limiter.on_conflict(12)
        assert (limiter.limit, limiter.known) == (12, True)

    def test_set_limit(self) -> None:
        limiter = ActiveTaskLimiter()
        limiter.set_limit(9)
        assert (limiter.limit, limiter.known) == (9, True)
        with pytest.raises(ConfigurationError, match="at least 1"):
            limiter.set_limit(0)

    @pytest.mark.anyio
    async def test_wait_for_release(self) -> None:
        limiter = ActiveTaskLimiter(1)
        holder = object()
        await limiter.acquire(holder)
        assert await limiter.wait_for_release(0.01) is False
        released: list[bool] = []

        async def wait() -> None:
            released.append(await limiter.wait_for_release(10))

        async with anyio.create_task_group() as tg:
            tg.start_soon(wait)
            await anyio.wait_all_tasks_blocked()
            limiter.release(holder)
        assert released == [True]

    @pytest.mark.anyio
    async def test_the_cap_can_shrink_while_slots_are_held(self) -> None:
        limiter = ActiveTaskLimiter(3)
        holders = [object() for _ in range(3)]
        for holder in holders:
            await limiter.acquire(holder)
            limiter.mark_running(holder)
        limiter.on_conflict(1)
        late = object()
        async with anyio.create_task_group() as tg:
            tg.start_soon(limiter.acquire, late)
            await anyio.wait_all_tasks_blocked()
            limiter.release(holders[0])
            limiter.release(holders[1])
            await anyio.wait_all_tasks_blocked()
            assert not limiter.holds(late)  # two of three still held, over the cap of one
            limiter.release(holders[2])
        assert limiter.holds(late)
