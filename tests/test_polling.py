"""wait_for_result, generate, cancellation, and the poll schedule."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
import attrs
import httpx
import pytest

from nanobanana_async import (
    APITimeoutError,
    AuthenticationError,
    BatchRunner,
    DecodeError,
    ImageToImage,
    InsufficientCreditsError,
    InvalidRequestError,
    PollPolicy,
    RetryPolicy,
    Task,
    TaskFailedError,
    TaskNotFoundError,
    TaskResult,
    TaskState,
    TextToImage,
    UnprocessableEntityError,
    WaitTimeoutError,
)
from nanobanana_async._polling import DurationModel, PollPlanner, follow
from nanobanana_async._telemetry import Recorder

if TYPE_CHECKING:
    from conftest import Api

REQUEST = TextToImage(prompt="a banana")
FAST = PollPolicy(initial=0.01, maximum=0.02, jitter=0)


def states(updates: list[Task]) -> list[str]:
    return [task.raw_state for task in updates]


@pytest.mark.anyio
class TestWaitForResult:
    async def test_polls_until_success_and_reports_each_change(self, api: Api) -> None:
        api.query.mock(
            side_effect=[
                *api.states("waiting", "waiting", "queuing", "generating", "generating"),
                api.task(urls=["https://cdn.example.com/a.png", "https://cdn.example.com/b.png"]),
            ]
        )
        updates: list[Task] = []
        async with api.client() as client:
            result = await client.wait_for_result("task_1", on_update=updates.append)
        assert isinstance(result, TaskResult)
        assert result.task_id == "task_1"
        assert result.urls == ("https://cdn.example.com/a.png", "https://cdn.example.com/b.png")
        assert result.task.state is TaskState.SUCCESS
        assert states(updates) == ["waiting", "queuing", "generating", "success"]
        assert api.query.call_count == 6

    async def test_async_callback(self, api: Api) -> None:
        api.query.mock(side_effect=[*api.states("queuing", "generating"), api.task()])
        updates: list[str] = []

        async def on_update(task: Task) -> None:
            await anyio.lowlevel.checkpoint()
            updates.append(task.raw_state)

        async with api.client() as client:
            await client.wait_for_result("task_1", on_update=on_update)
        assert updates == ["queuing", "generating", "success"]

    async def test_already_finished_is_one_poll(self, api: Api) -> None:
        api.query.mock(return_value=api.task())
        async with api.client() as client:
            result = await client.wait_for_result("task_1")
        assert result.urls == (api.result_url,)
        assert api.query.call_count == 1

    async def test_unknown_states_are_waited_through_and_shown(
        self, api: Api, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.INFO, logger="nanobanana_async")
        api.query.mock(side_effect=[*api.states("moderating", "moderating"), api.task()])
        updates: list[Task] = []
        async with api.client() as client:
            await client.wait_for_result("task_1", on_update=updates.append)
        assert updates[0].state is TaskState.UNKNOWN
        assert updates[0].raw_state == "moderating"
        assert states(updates) == ["moderating", "success"]
        assert "'moderating'" in caplog.text

    async def test_fail_raises_task_failed_error(self, api: Api) -> None:
        api.query.mock(
            side_effect=[
                api.task(state="generating"),
                api.task(state="fail", failCode="400", failMsg="prompt flagged", completeTime=None),
            ]
        )
        updates: list[Task] = []
        async with api.client() as client:
            with pytest.raises(TaskFailedError) as info:
                await client.wait_for_result("task_1", on_update=updates.append)
        error = info.value
        assert error.fail_code == "400"
        assert error.fail_message == "prompt flagged"
        assert error.task.state is TaskState.FAIL
        assert error.task.task_id == "task_1"
        assert "prompt flagged" in str(error)
        assert states(updates) == ["generating", "fail"]

    async def test_success_without_urls_is_a_decode_error(self, api: Api) -> None:
        api.query.mock(return_value=api.task(urls=[]))
        async with api.client() as client:
            with pytest.raises(DecodeError, match="without result URLs"):
                await client.wait_for_result("task_1")

    async def test_deadline_raises_wait_timeout_with_the_task_id(self, api: Api) -> None:
        api.query.mock(return_value=api.task(state="generating"))
        async with api.client() as client:
            with pytest.raises(WaitTimeoutError) as info:
                await client.wait_for_result("task_1", timeout=0.05)
        error = info.value
        assert isinstance(error, TimeoutError)
        assert error.task_id == "task_1"
        assert error.task is not None
        assert error.task.state is TaskState.GENERATING
        assert "last state: generating" in str(error)

    async def test_the_wait_can_be_resumed(self, api: Api) -> None:
        api.query.mock(side_effect=[*api.states("generating", "generating"), api.task()])
        async with api.client(poll=PollPolicy(initial=0.05, jitter=0)) as client:
            with pytest.raises(WaitTimeoutError) as info:
                await client.wait_for_result("task_1", timeout=0.01)
            result = await client.wait_for_result(info.value.task_id)
        assert result.task_id == "task_1"

    @pytest.mark.parametrize("timeout", [0, -1.0, float("nan")])
    async def test_bad_timeout(self, api: Api, timeout: float) -> None:
        async with api.client() as client:
            with pytest.raises(InvalidRequestError, match="timeout"):
                await client.wait_for_result("task_1", timeout=timeout)
        assert not api.router.calls

    async def test_a_raising_callback_stops_the_wait(self, api: Api) -> None:
        api.query.mock(return_value=api.task(state="generating"))

        def on_update(task: Task) -> None:
            raise KeyError(task.raw_state)

        async with api.client() as client:
            with pytest.raises(KeyError, match="generating"):
                await client.wait_for_result("task_1", on_update=on_update)
        assert api.query.call_count == 1

    async def test_polls_of_a_created_task_learn_its_duration(self, api: Api) -> None:
        api.create.mock(return_value=api.created())
        api.query.mock(side_effect=[api.task(state="generating"), api.task()])
        async with api.client() as client:
            await client.wait_for_result(await client.create_task(REQUEST))
            assert len(client.durations) == 1

    async def test_provider_timestamps_are_used_when_they_fit(self, api: Api) -> None:
        # 12 s by the provider's clock is longer than this test: the client's own measure wins.
        api.create.mock(return_value=api.created())
        api.query.mock(return_value=api.task())
        async with api.client() as client:
            await client.wait_for_result(await client.create_task(REQUEST))
            seen = list(client.durations._sorted)
        assert len(seen) == 1
        assert seen[0] < 12.0

    async def test_provider_timestamps_of_someone_elses_task(self, api: Api) -> None:
        api.query.mock(return_value=api.task())
        async with api.client() as client:
            await client.wait_for_result("task_1")
            assert client.durations._sorted == [12.0]

    async def test_no_timestamps_and_not_ours_learns_nothing(self, api: Api) -> None:
        api.query.mock(return_value=api.task(createTime=None))
        async with api.client() as client:
            await client.wait_for_result("task_1")
            assert len(client.durations) == 0


@pytest.mark.anyio
class TestGenerate:
    async def test_create_then_wait(self, api: Api) -> None:
        api.create.mock(return_value=api.created("task_g"))
        api.query.mock(side_effect=[api.task("task_g", "generating"), api.task("task_g")])
        updates: list[str] = []
        async with api.client() as client:
            result = await client.generate(
                ImageToImage(prompt="gold", image_urls=["https://cdn.example.com/in.png"]),
                request_id="gen-1",
                on_update=lambda task: updates.append(task.raw_state),
            )
            assert client.limits.active.active == 0
        assert result.task_id == "task_g"
        assert updates == ["generating", "success"]
        assert api.create.calls.last.request.headers["X-Request-ID"] == "gen-1"

    async def test_bad_request_fails_before_anything(self, api: Api) -> None:
        async with api.client() as client:
            with pytest.raises(InvalidRequestError):
                await client.generate("a banana")  # type: ignore[arg-type]
            with pytest.raises(InvalidRequestError):
                await client.generate(REQUEST, request_id="has space")
            with pytest.raises(InvalidRequestError):
                await client.generate(REQUEST, timeout=0)
        assert not api.router.calls

    async def test_refused_create_frees_the_slot(self, api: Api) -> None:
        api.create.mock(return_value=api.error(402, "Insufficient credits"))
        async with api.client(max_active=1) as client:
            with pytest.raises(InsufficientCreditsError):
                await client.generate(REQUEST)
            assert client.limits.active.active == 0
        assert api.create.call_count == 1
        assert not api.query.called

    async def test_failed_task_frees_the_slot(self, api: Api) -> None:
        api.create.mock(return_value=api.created())
        api.query.mock(return_value=api.task(state="fail", failCode="1"))
        async with api.client(max_active=1) as client:
            with pytest.raises(TaskFailedError):
                await client.generate(REQUEST)
            assert client.limits.active.active == 0

    async def test_timeout_after_the_create_carries_the_task_id(self, api: Api) -> None:
        api.create.mock(return_value=api.created("task_slow"))
        api.query.mock(return_value=api.task("task_slow", "waiting"))
        async with api.client() as client:
            with pytest.raises(WaitTimeoutError) as info:
                await client.generate(REQUEST, timeout=0.05)
        assert info.value.task_id == "task_slow"
        assert "0.05 s" in str(info.value)

    async def test_a_create_that_uses_up_the_whole_timeout(self, api: Api) -> None:
        async def slow_create(request: httpx.Request) -> httpx.Response:
            await anyio.sleep(0.1)
            return api.created("task_late")

        api.create.mock(side_effect=slow_create)
        api.query.mock(return_value=api.task("task_late"))
        async with api.client() as client:
            with pytest.raises(APITimeoutError) as info:
                await client.generate(REQUEST, request_id="rid-late", timeout=0.02)
        # The deadline bounds the create's exchange too: the error carries the request id,
        # so creating again with it cannot bill twice.
        assert info.value.request_id == "rid-late"

    async def test_waits_for_a_free_slot(self, api: Api) -> None:
        api.create.mock(side_effect=[api.created("task_a"), api.created("task_b")])
        done = anyio.Event()

        async def query(request: httpx.Request) -> httpx.Response:
            task_id = request.url.params["taskId"]
            if task_id == "task_a" and not done.is_set():
                return api.task(task_id, "generating")
            return api.task(task_id)

        api.query.mock(side_effect=query)
        results: dict[str, TaskResult] = {}
        async with api.client(max_active=1) as client:

            async def generate(name: str) -> None:
                results[name] = await client.generate(REQUEST)

            async with anyio.create_task_group() as tg:
                tg.start_soon(generate, "first")
                await anyio.wait_all_tasks_blocked()
                tg.start_soon(generate, "second")
                await anyio.wait_all_tasks_blocked()
                # The second call waits for the slot: it has not created anything yet.
                assert api.create.call_count == 1
                assert client.limits.active.waiting == 1
                done.set()
        assert results["first"].task_id == "task_a"
        assert results["second"].task_id == "task_b"

    async def test_no_slot_in_time_creates_nothing(self, api: Api) -> None:
        api.create.mock(return_value=api.created())
        api.query.mock(return_value=api.task(state="generating"))
        async with api.client(max_active=1) as client, anyio.create_task_group() as tg:
            tg.start_soon(lambda: client.generate(REQUEST, timeout=5))
            await anyio.wait_all_tasks_blocked()
            with pytest.raises(APITimeoutError, match="nothing was created"):
                await client.generate(REQUEST, timeout=0.02)
            assert api.create.call_count == 1
            tg.cancel_scope.cancel()


@pytest.mark.anyio
class TestCancellation:
    @staticmethod
    async def assert_quiet(api: Api) -> None:
        """No request goes out any more once the call was cancelled."""
        calls = len(api.router.calls)
        await anyio.sleep(0.05)
        assert len(api.router.calls) == calls

    async def test_cancelling_a_wait_leaves_nothing_running(self, api: Api) -> None:
        api.query.mock(return_value=api.task(state="generating"))
        async with api.client() as client:
            with anyio.move_on_after(0.03) as scope:
                await client.wait_for_result("task_1", timeout=60)
            assert scope.cancelled_caught
            assert api.query.call_count >= 1
            await self.assert_quiet(api)

    async def test_cancelling_generate_frees_the_slot(self, api: Api) -> None:
        api.create.mock(return_value=api.created())
        api.query.mock(return_value=api.task(state="generating"))
        async with api.client(max_active=1) as client:
            with anyio.move_on_after(0.03):
                await client.generate(REQUEST, timeout=60)
            assert client.limits.active.active == 0
            await self.assert_quiet(api)
            # The slot really is free: another generate can run.
            api.query.mock(return_value=api.task())
            assert (await client.generate(REQUEST, timeout=5)).task_id == "task_1"

    async def test_cancelling_during_a_request(self, api: Api) -> None:
        started = anyio.Event()
        sent: list[httpx.Request] = []

        async def hang(request: httpx.Request) -> httpx.Response:
            sent.append(request)
            started.set()
            await anyio.sleep_forever()
            raise AssertionError  # pragma: no cover

        api.query.mock(side_effect=hang)
        async with api.client() as client, anyio.create_task_group() as tg:
            tg.start_soon(client.wait_for_result, "task_1")
            await started.wait()
            tg.cancel_scope.cancel()
        await anyio.sleep(0.05)
        assert len(sent) == 1

    async def test_cancelling_during_a_retry_wait(self, api: Api) -> None:
        api.create.mock(return_value=httpx.Response(503))
        from nanobanana_async import RetryPolicy

        slow = RetryPolicy(max_retries=5, backoff_base=30.0, backoff_max=30.0)
        async with api.client(retry=slow) as client:
            # The retry's backoff (full jitter) then draws 4 s: never the rare draw under the
            # 0.05 s the test waits, which would send the retry before the cancel.
            client.engine.caller.rng.seed(1)
            with anyio.move_on_after(0.05):
                await client.create_task(REQUEST)
        assert api.create.call_count == 1
        await self.assert_quiet(api)


# -- the schedule ------------------------------------------------------------------------------


class TestPollPolicy:
    def test_grows_geometrically_to_the_maximum(self) -> None:
        policy = PollPolicy(initial=1.0, factor=2.0, maximum=10.0, jitter=0)
        rng = random.Random(0)
        intervals = [policy.interval(n, rng) for n in range(6)]
        assert intervals == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
        assert policy.interval(10_000, rng) == 10.0

    def test_jitter_spreads_around_the_interval(self) -> None:
        policy = PollPolicy(initial=1.0, jitter=0.25)
        rng = random.Random(0)
        draws = [policy.interval(0, rng) for _ in range(500)]
        assert all(0.75 <= d <= 1.25 for d in draws)
        assert min(draws) < 0.8
        assert max(draws) > 1.2

    @pytest.mark.parametrize(
        "kwargs",
        [{"initial": 0}, {"factor": 0.5}, {"maximum": 0}, {"jitter": 1.0}, {"jitter": -0.1},
         {"min_interval": 0}, {"budget_per_task": 0}, {"budget_floor": 0}, {"resolution": 0},
         {"resolution": 1.5}],
    )  # fmt: skip
    def test_validation(self, kwargs: dict[str, Any]) -> None:
        with pytest.raises(ValueError):  # noqa: PT011
            PollPolicy(**kwargs)

    def test_scaled_to_a_faster_clock(self) -> None:
        policy = PollPolicy(initial=2.0, maximum=10.0, min_interval=0.1, jitter=0.2)
        scaled = policy.scaled(0.5)
        assert (scaled.initial, scaled.maximum, scaled.min_interval) == (1.0, 5.0, 0.05)
        assert scaled.budget_per_task == 2 * policy.budget_per_task  # a rate grows
        assert scaled.budget_floor == 2 * policy.budget_floor
        assert (scaled.factor, scaled.jitter) == (policy.factor, policy.jitter)
        assert scaled.resolution == policy.resolution  # a share of a task's length

    def test_the_default_budget_is_the_least_a_paid_tier_allows(self) -> None:
        policy = PollPolicy()
        assert policy.budget_per_task == pytest.approx(60 / 60 / 1)  # free
        assert policy.budget_floor == pytest.approx(1000 / 60)  # basic


class TestPollPlanner:
    """The query budget shared by every task a client follows."""

    POLICY = PollPolicy(jitter=0, min_interval=0.001, budget_per_task=2.0, budget_floor=3.0)

    def planner(self, rate: float | None) -> PollPlanner:
        durations = DurationModel()
        for seconds in (3.0, 3.3, 3.6):
            durations.observe(seconds)
        return PollPlanner(self.POLICY, durations, lambda: rate)

    def spent(self, planner: PollPlanner, tasks: int) -> float:
        """Polls per second that ``tasks`` tasks near their likely end spend together."""
        shares = [planner.join() for _ in range(tasks)]
        # Near its end, a task of about 3.3 s would be polled every 0.12 s: the budget binds.
        delays = [planner.next_delay(3.3, 1, share) for share in shares]
        delays = [planner.next_delay(3.3, 2, share) for share in shares]  # all weighed now
        return sum(1.0 / delay for delay in delays)

    def test_short_tasks_get_a_few_polls_in_a_typical_life(self) -> None:
        fast = DurationModel()
        for seconds in (0.1, 0.11, 0.12):
            fast.observe(seconds)
        planner = PollPlanner(PollPolicy(), fast, lambda: None)
        shares = [planner.join() for _ in range(10)]
        # Tasks of about 0.11 s: six polls each in that time, not one a second.
        assert planner.polls_per_second() == pytest.approx(10 * 6 / 0.11)
        for share in shares:
            planner.leave(share)
        slow = DurationModel()
        slow.observe(60.0)
        planner = PollPlanner(PollPolicy(), slow, lambda: None)
        shares = [planner.join() for _ in range(30)]
        assert planner.polls_per_second() == pytest.approx(30 * PollPolicy().budget_per_task)

    @pytest.mark.parametrize(("tasks", "budget"), [(1, 3.0), (2, 4.0), (10, 20.0)])
    def test_an_unknown_query_limit_spends_per_task_or_the_floor(
        self, tasks: int, budget: float
    ) -> None:
        assert self.spent(self.planner(None), tasks) == pytest.approx(budget)

    def test_a_known_query_limit_is_spent_up_to_most_of_it(self) -> None:
        planner = self.planner(20.0)
        assert self.spent(planner, 10) == pytest.approx(18.0)
        assert planner.polls_per_second() == pytest.approx(18.0)

    def test_a_rate_of_nothing_is_no_rate(self) -> None:
        planner = self.planner(0.0)  # a pacer that knows nothing useful: the default budget
        planner.join()
        assert planner.polls_per_second() == 3.0

    def test_a_task_that_leaves_gives_its_share_back(self) -> None:
        planner = self.planner(None)
        shares = [planner.join() for _ in range(10)]
        assert planner.polls_per_second() == 20.0
        for share in shares[:9]:
            planner.leave(share)
        assert planner.polls_per_second() == 3.0  # the floor

    def test_the_first_sleep_is_not_budgeted(self) -> None:
        planner = self.planner(None)
        share = planner.join()
        assert planner.next_delay(0.0, 0, share) == pytest.approx(3.0)  # the fastest end


class TestDurationModel:
    POLICY = PollPolicy(initial=1.0, factor=2.0, maximum=10.0, jitter=0, min_interval=0.05)

    def test_falls_back_to_the_policy_without_samples(self) -> None:
        model = DurationModel(min_samples=3)
        model.observe(20.0)
        model.observe(0.0)  # ignored
        model.observe(-1.0)  # ignored
        assert len(model) == 1
        assert model.quantile(0.5) is None
        rng = random.Random(0)
        assert model.next_delay(age=5.0, polls=2, policy=self.POLICY, rng=rng) == 4.0

    def model(self, durations: list[float]) -> DurationModel:
        model = DurationModel(min_samples=3)
        for seconds in durations:
            model.observe(seconds)
        return model

    def test_quantiles(self) -> None:
        model = self.model([float(n) for n in range(1, 101)])
        assert model.quantile(0.0) == 1.0
        assert model.quantile(0.5) == 51.0
        assert model.quantile(1.0) == 100.0

    def test_sleeps_until_the_fastest_tasks_tend_to_end(self) -> None:
        model = self.model([20.0, 25.0, 30.0])
        rng = random.Random(0)
        assert model.next_delay(age=2.0, polls=0, policy=self.POLICY, rng=rng) == 18.0
        # Never less than the minimum interval.
        assert model.next_delay(age=19.99, polls=0, policy=self.POLICY, rng=rng) == 0.05

    def test_polls_closely_near_the_likely_end(self) -> None:
        model = self.model([20.0, 25.0, 30.0])
        rng = random.Random(0)
        assert model.next_delay(age=24.0, polls=3, policy=self.POLICY, rng=rng) == pytest.approx(
            25.0 * self.POLICY.resolution
        )

    def test_a_coarser_resolution_polls_further_apart_and_relaxed_polls_never_closer(
        self,
    ) -> None:
        model = self.model([20.0, 25.0, 30.0])
        rng = random.Random(0)
        coarse = attrs.evolve(self.POLICY, resolution=0.15)
        assert model.next_delay(age=24.0, polls=3, policy=coarse, rng=rng) == pytest.approx(3.75)
        relaxed = model.next_delay(age=24.0, polls=3, policy=coarse, rng=rng, awaited=False)
        assert relaxed == pytest.approx(25.0 * DurationModel.RELAXED_RESOLUTION)
        coarsest = attrs.evolve(self.POLICY, resolution=0.5)
        assert model.next_delay(
            age=24.0, polls=3, policy=coarsest, rng=rng, awaited=False
        ) == pytest.approx(10.0)  # the policy's maximum

    def test_backs_off_once_overdue(self) -> None:
        model = self.model([20.0, 25.0, 30.0])
        rng = random.Random(0)
        near = model.next_delay(age=29.0, polls=5, policy=self.POLICY, rng=rng)
        later = model.next_delay(age=40.0, polls=6, policy=self.POLICY, rng=rng)
        much_later = model.next_delay(age=600.0, polls=7, policy=self.POLICY, rng=rng)
        assert near < later < much_later
        assert much_later == self.POLICY.maximum

    def test_expected_remaining(self) -> None:
        assert DurationModel(min_samples=2).expected_remaining(1.0) is None
        model = self.model([10.0, 20.0, 30.0, 40.0])
        assert model.expected_remaining(0.0) == 30.0 - 0.0  # median of all four (upper middle)
        assert model.expected_remaining(25.0) == 40.0 - 25.0  # of those still running: 30, 40
        assert model.expected_remaining(39.0) == 40.0 - 39.0
        # Older than every task seen: about as long again as a typical one.
        assert model.expected_remaining(100.0) == 30.0

    def test_keeps_only_recent_durations(self) -> None:
        model = DurationModel(size=3, min_samples=1)
        for seconds in [100.0, 1.0, 2.0, 3.0]:
            model.observe(seconds)
        assert len(model) == 3
        assert model.quantile(1.0) == 3.0
        assert model.quantile(0.0) == 1.0


@pytest.mark.anyio
class TestOneSetOfRules:
    """wait_for_result and a batch job follow a task by the same poll loop and rules."""

    @pytest.mark.parametrize(
        ("answer", "error"),
        [
            ((404, "Task not found"), TaskNotFoundError),
            ((422, "recordInfo is null"), UnprocessableEntityError),
            ((401, "Invalid API key"), AuthenticationError),
        ],
    )
    async def test_a_final_answer_after_the_grace_period_ends_both_paths(
        self, api: Api, answer: tuple[int, str], error: type[Exception]
    ) -> None:
        api.create.mock(return_value=api.created("task_1"))
        api.query.mock(return_value=api.error(*answer))
        retry = RetryPolicy(not_found_grace=0.0)
        async with api.client(retry=retry) as client:
            with pytest.raises(error):
                await client.wait_for_result("task_1", timeout=5)
            waited = api.query.call_count
            outcomes = await BatchRunner(client, task_timeout=5).run([REQUEST])
        assert isinstance(outcomes[0].error, error)
        assert outcomes[0].task_id == "task_1"
        # One poll each: a final answer is not polled again for an hour.
        assert waited == 1
        assert api.query.call_count == 2

    async def test_passing_failures_are_polled_through_on_both_paths(self, api: Api) -> None:
        answers = {"n": 0}

        def query(request: httpx.Request) -> httpx.Response:
            answers["n"] += 1
            if answers["n"] % 3 == 1:
                return api.error(500, "upstream")
            if answers["n"] % 3 == 2:
                return httpx.Response(200, text="<html>proxy</html>")
            return api.task(request.url.params["taskId"])

        api.create.mock(return_value=api.created("task_1"))
        api.query.mock(side_effect=query)
        async with api.client(max_retries=0, poll=FAST) as client:
            result = await client.wait_for_result("task_1", timeout=5)
        async with api.client(max_retries=0, poll=FAST) as client:
            outcomes = await BatchRunner(client, task_timeout=5).run([REQUEST])
        assert result.task_id == "task_1"
        assert outcomes[0].ok


@pytest.mark.anyio
async def test_generate_never_loses_the_id_of_a_task_it_created(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    """A final poll error after the create: the paid task's id is logged, at WARNING."""
    api.create.mock(return_value=api.created("task_paid"))
    api.query.mock(return_value=api.error(401, "Invalid API key"))
    async with api.client() as client:
        with pytest.raises(AuthenticationError):
            await client.generate(REQUEST, timeout=5)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("task_paid" in message for message in warnings)


class _FixedPlanner:
    """A planner that asks for a poll every 3 s."""

    def join(self) -> object:
        return object()

    def leave(self, share: object) -> None:
        pass

    def observe(self, task: Task, created_at: float | None) -> None:
        pass

    def next_delay(self, age: float, polls: int, share: object, priority: str) -> float:
        return 3.0


class _HeldCaller:
    """Answers after a 0.1 s round trip; the second poll waits 10 s in the pacer first."""

    telemetry = Recorder()

    def __init__(self) -> None:
        self.sent: list[float] = []

    async def query(
        self,
        task_id: str,
        deadline: float,
        *,
        priority: str,
        backoff: bool,
        on_sent: Callable[[float], object] | None = None,
    ) -> Task:
        if len(self.sent) == 1:
            await anyio.sleep(10.0)  # held by the pacer (a 429 blocks the endpoint)
        self.sent.append(anyio.current_time())
        if on_sent is not None:
            on_sent(self.sent[-1])
        await anyio.sleep(0.1)  # the round trip
        done = len(self.sent) == 4
        state = TaskState.SUCCESS if done else TaskState.GENERATING
        return Task(task_id=task_id, state=state, raw_state=state.value, urls=("u",) * done)


@pytest.mark.anyio
async def test_polls_are_spaced_from_send_to_send_and_a_pacer_wait_is_not_a_round_trip() -> None:
    caller = _HeldCaller()
    started = anyio.current_time()
    await follow(caller, _FixedPlanner(), "t", deadline=started + 100, timeout=100)  # type: ignore[arg-type]
    gaps = [round(b - a, 2) for a, b in zip(caller.sent, caller.sent[1:], strict=False)]
    # 3 s from one send to the next (the round trip inside it); after the 10 s in the pacer,
    # the next poll still waits its 3 s from that poll's send, not at once.
    assert gaps == [13.0, 3.0, 3.0]
