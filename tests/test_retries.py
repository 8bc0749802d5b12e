"""Retries: idempotent creates, backoff, 429 waits, deadlines and the 404 grace period."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import TYPE_CHECKING, Any

import anyio
import httpx
import pytest

from nanobanana_async import (
    ActiveTaskLimitError,
    APIConnectionError,
    APITimeoutError,
    BadRequestError,
    RateLimitError,
    RetryPolicy,
    ServerError,
    TaskNotFoundError,
    TaskState,
    TextToImage,
    UnprocessableEntityError,
)
from nanobanana_async._retry import is_not_visible_yet, retry_decision
from nanobanana_async._wire import retry_after_seconds

if TYPE_CHECKING:
    from conftest import Api

REQUEST = TextToImage(prompt="a banana")
RATE_DATA = {"retryAfter": 0.01, "limit": 100, "tier": "basic", "windowSeconds": 1}


def request_ids(route: Any) -> list[str]:
    return [call.request.headers["X-Request-ID"] for call in route.calls]


# -- 5xx, dropped connections, timeouts --------------------------------------------------------


@pytest.mark.anyio
class TestBackoff:
    @pytest.mark.parametrize(
        "failure",
        [
            httpx.Response(500, json={"code": 500, "msg": "Internal server error"}),
            httpx.Response(200, json={"code": 500, "msg": "provider error"}),
            httpx.Response(502, text="<h1>Bad Gateway</h1>", headers={"content-type": "text/html"}),
            httpx.Response(503),
            httpx.ConnectError("connection refused"),
            httpx.RemoteProtocolError("peer closed connection"),
            httpx.ReadTimeout("read timed out"),
            httpx.ConnectTimeout("connect timed out"),
        ],
        ids=["500", "500-in-200", "html-502", "503", "connect", "dropped", "read-timeout",
             "connect-timeout"],
    )  # fmt: skip
    async def test_create_is_retried_with_the_same_request_id(self, api: Api, failure: Any) -> None:
        api.create.mock(side_effect=[failure, failure, api.created("task_7")])
        async with api.client() as client:
            assert await client.create_task(REQUEST) == "task_7"
        ids = request_ids(api.create)
        assert len(ids) == 3
        assert len(set(ids)) == 1

    async def test_caller_request_id_is_reused_on_every_retry(self, api: Api) -> None:
        api.create.mock(side_effect=[httpx.Response(500), httpx.ReadError(""), api.created()])
        async with api.client() as client:
            await client.create_task(REQUEST, request_id="job-42")
        assert request_ids(api.create) == ["job-42"] * 3

    async def test_the_body_is_the_same_on_every_retry(self, api: Api) -> None:
        api.create.mock(side_effect=[httpx.Response(500), api.created()])
        async with api.client() as client:
            await client.create_task(REQUEST)
        first, second = (call.request.content for call in api.create.calls)
        assert first == second

    async def test_gives_up_after_max_retries(self, api: Api) -> None:
        api.create.mock(
            return_value=httpx.Response(
                502, text="<html>Bad Gateway</html>", headers={"content-type": "text/html"}
            )
        )
        async with api.client(max_retries=2) as client:
            with pytest.raises(ServerError) as info:
                await client.create_task(REQUEST, request_id="rid")
        error = info.value
        assert (error.code, error.http_status, error.request_id) == (502, 502, "rid")
        assert error.message == "Bad Gateway (text/html body)"
        assert api.create.call_count == 3

    async def test_connection_errors_give_up_after_max_retries(self, api: Api) -> None:
        api.create.mock(side_effect=httpx.ConnectError("refused"))
        async with api.client(max_retries=3) as client:
            with pytest.raises(APIConnectionError) as info:
                await client.create_task(REQUEST)
        assert isinstance(info.value.__cause__, httpx.ConnectError)
        assert api.create.call_count == 4
        assert len(set(request_ids(api.create))) == 1

    async def test_timeouts_give_up_as_api_timeout_error(self, api: Api) -> None:
        api.query.mock(side_effect=httpx.ReadTimeout("slow"))
        async with api.client(max_retries=1) as client:
            with pytest.raises(APITimeoutError) as info:
                await client.get_task("task_1")
        assert isinstance(info.value.__cause__, httpx.ReadTimeout)
        assert api.query.call_count == 2

    async def test_no_retries(self, api: Api) -> None:
        api.create.mock(return_value=httpx.Response(500))
        async with api.client(max_retries=0) as client:
            with pytest.raises(ServerError):
                await client.create_task(REQUEST)
        assert api.create.call_count == 1

    async def test_queries_are_retried_too(self, api: Api) -> None:
        api.query.mock(side_effect=[httpx.Response(504), httpx.ReadError("reset"), api.task()])
        async with api.client() as client:
            task = await client.get_task("task_1")
        assert task.state is TaskState.SUCCESS
        assert api.query.call_count == 3

    @pytest.mark.parametrize("code", [400, 401, 402, 422])
    async def test_final_errors_are_never_retried(self, api: Api, code: int) -> None:
        api.create.mock(return_value=api.error(code, "final"))
        api.query.mock(return_value=api.error(code, "final"))
        async with api.client(max_retries=5) as client:
            with pytest.raises(Exception) as create_info:  # noqa: PT011
                await client.create_task(REQUEST)
            with pytest.raises(Exception) as query_info:  # noqa: PT011
                await client.get_task("someone-elses-task")
        assert type(create_info.value) is type(query_info.value)
        assert create_info.value.code == code  # type: ignore[attr-defined]
        assert api.create.call_count == 1
        assert api.query.call_count == 1

    async def test_backoff_stops_at_the_deadline(self, api: Api) -> None:
        api.create.mock(return_value=httpx.Response(500))
        slow = RetryPolicy(max_retries=10, backoff_base=60.0, backoff_max=60.0)
        async with api.client(retry=slow) as client:
            client.engine.caller.rng.seed(1)  # a backoff draw far beyond the deadline
            with pytest.raises(ServerError) as info:
                await client.create_task(REQUEST, timeout=0.5)
        assert info.value.__cause__ is None
        assert api.create.call_count == 1

    async def test_transport_error_at_the_deadline_keeps_its_cause(self, api: Api) -> None:
        api.create.mock(side_effect=httpx.ConnectError("refused"))
        slow = RetryPolicy(max_retries=10, backoff_base=60.0, backoff_max=60.0)
        async with api.client(retry=slow) as client:
            client.engine.caller.rng.seed(1)
            with pytest.raises(APIConnectionError) as info:
                await client.create_task(REQUEST, timeout=0.5)
        assert isinstance(info.value.__cause__, httpx.ConnectError)


# -- 429 ---------------------------------------------------------------------------------------


@pytest.mark.anyio
class TestRateLimit:
    async def test_429_waits_and_retries_with_the_same_request_id(self, api: Api) -> None:
        api.create.mock(
            side_effect=[api.error(429, "Rate limit exceeded", data=RATE_DATA), api.created()]
        )
        async with api.client(max_retries=0) as client:  # 429 waits are not retries
            assert await client.create_task(REQUEST) == "task_1"
            snapshot = client.limits_snapshot()
        ids = request_ids(api.create)
        assert len(ids) == 2
        assert len(set(ids)) == 1
        assert snapshot.rate_limited == 1
        assert snapshot.create_windows == {1: 100}

    async def test_429_in_a_200_envelope(self, api: Api) -> None:
        api.query.mock(side_effect=[api.error(429, "slow", status=200, data=RATE_DATA), api.task()])
        async with api.client() as client:
            assert (await client.get_task("task_1")).is_finished
        assert api.query.call_count == 2

    async def test_retry_after_header(self, api: Api) -> None:
        api.query.mock(
            side_effect=[
                api.error(
                    429,
                    "Too Many Requests",
                    data={"limit": 100, "windowSeconds": 1},
                    headers={"Retry-After": "0.01"},
                ),
                api.task(),
            ]
        )
        async with api.client() as client:
            await client.get_task("task_1")
        assert api.query.call_count == 2

    async def test_retry_after_header_on_a_bare_429(self, api: Api) -> None:
        api.create.mock(return_value=httpx.Response(429, headers={"Retry-After": "30"}))
        async with api.client() as client:
            with pytest.raises(RateLimitError) as info:
                await client.create_task(REQUEST, timeout=1.0)
        assert info.value.retry_after == 30.0
        assert info.value.message == "Too Many Requests"

    async def test_429_without_a_wait_backs_off(self, api: Api) -> None:
        data = {"limit": 100, "windowSeconds": 1}
        api.query.mock(side_effect=[api.error(429, "slow", data=data), api.task()])
        async with api.client() as client:
            await client.get_task("task_1")
            assert client.limits_snapshot().query_windows == {1: 100}
        assert api.query.call_count == 2

    async def test_429_past_the_deadline_is_raised_at_once(self, api: Api) -> None:
        data = {**RATE_DATA, "retryAfter": 30}
        api.create.mock(return_value=api.error(429, "Rate limit exceeded", data=data))
        async with api.client() as client:
            with pytest.raises(RateLimitError) as info:
                await client.create_task(REQUEST, timeout=1.0, request_id="rid")
        assert info.value.retry_after == 30.0
        assert info.value.request_id == "rid"
        assert api.create.call_count == 1

    async def test_429_waits_are_capped_in_total(self, api: Api) -> None:
        api.query.mock(return_value=api.error(429, "slow", data=RATE_DATA))
        retry = RetryPolicy(backoff_base=0.001, max_rate_limit_wait=0.1)
        async with api.client(retry=retry) as client:
            started = anyio.current_time()
            with pytest.raises(RateLimitError):
                await client.get_task("task_1", timeout=30)
            waited = anyio.current_time() - started
        # Each wait is at least the 0.01 s asked for (plus the pacer's margin at the window's
        # edge): a few fit in the 0.1 s budget, and the call ends once it is spent.
        assert 2 <= api.query.call_count <= 10
        assert waited < 0.1 + 5.0

    async def test_429_huge_retry_after_is_capped(self) -> None:
        assert retry_after_seconds({"retryAfter": 10**9}, httpx.Headers()) == 3600.0


class TestRetryAfterSeconds:
    @pytest.mark.parametrize(
        ("data", "expected"),
        [({"retryAfter": 2}, 2.0), ({"retryAfter": "1.5"}, 1.5), ({"retryAfter": 0}, 0.0)],
    )
    def test_from_the_body(self, data: Any, expected: float) -> None:
        assert retry_after_seconds(data, httpx.Headers({"Retry-After": "99"})) == expected

    @pytest.mark.parametrize(
        "data",
        [None, [], {"retryAfter": None}, {"retryAfter": True}, {"retryAfter": -1},
         {"retryAfter": "soon"}, {"retryAfter": float("nan")}, {"retryAfter": [1]}],
    )  # fmt: skip
    def test_unusable_body_falls_back_to_the_header(self, data: Any) -> None:
        assert retry_after_seconds(data, httpx.Headers({"Retry-After": " 7 "})) == 7.0
        assert retry_after_seconds(data, httpx.Headers()) is None

    def test_http_date_header(self) -> None:
        later = datetime.now(UTC) + timedelta(seconds=120)
        seconds = retry_after_seconds(None, httpx.Headers({"Retry-After": format_datetime(later)}))
        assert seconds is not None
        assert 100 < seconds <= 120

    def test_http_date_in_the_past_is_no_wait(self) -> None:
        headers = httpx.Headers({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})
        assert retry_after_seconds(None, headers) == 0.0

    def test_naive_http_date_is_utc(self) -> None:
        headers = httpx.Headers({"Retry-After": "Wed, 21 Oct 2015 07:28:00 -0000"})
        assert retry_after_seconds(None, headers) == 0.0

    def test_garbage_header(self) -> None:
        assert retry_after_seconds(None, httpx.Headers({"Retry-After": "tomorrow"})) is None


# -- 404 right after a create ------------------------------------------------------------------


@pytest.mark.anyio
class TestNotVisibleYet:
    @pytest.mark.parametrize(
        "not_yet",
        [
            {"code": 404, "msg": "Task not found"},
            {"code": 422, "msg": "recordInfo is null"},
            {"code": 422, "message": "RecordInfo is null"},
        ],
    )
    async def test_grace_right_after_a_create(self, api: Api, not_yet: dict[str, Any]) -> None:
        api.create.mock(return_value=api.created("task_new"))
        api.query.mock(
            side_effect=[httpx.Response(not_yet["code"], json=not_yet), api.task("task_new")]
        )
        async with api.client() as client:
            task_id = await client.create_task(REQUEST)
            task = await client.get_task(task_id)
        assert task.task_id == "task_new"
        assert api.query.call_count == 2

    async def test_grace_also_in_an_envelope(self, api: Api) -> None:
        api.create.mock(return_value=api.created())
        api.query.mock(side_effect=[api.error(404, "Task not found", status=200), api.task()])
        async with api.client() as client:
            await client.get_task(await client.create_task(REQUEST))
        assert api.query.call_count == 2

    async def test_grace_ends(self, api: Api) -> None:
        api.create.mock(return_value=api.created())
        api.query.mock(return_value=api.error(404, "Task not found"))
        retry = RetryPolicy(backoff_base=0.001, not_found_grace=0.15)
        async with api.client(retry=retry) as client:
            task_id = await client.create_task(REQUEST)
            with pytest.raises(TaskNotFoundError) as info:
                await client.get_task(task_id)
        assert info.value.code == 404
        assert api.query.call_count >= 2

    async def test_only_recent_creates_are_remembered(
        self, api: Api, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from nanobanana_async import _calls

        monkeypatch.setattr(_calls, "_REMEMBERED_CREATES", 2)
        api.create.mock(side_effect=[api.created(f"task_{n}") for n in range(3)])
        api.query.mock(return_value=api.error(404, "Task not found"))
        async with api.client() as client:
            for _ in range(3):
                await client.create_task(REQUEST)
            with pytest.raises(TaskNotFoundError):
                await client.get_task("task_0")  # forgotten: no grace
            assert api.query.call_count == 1

    async def test_no_grace_for_tasks_this_client_did_not_create(self, api: Api) -> None:
        api.query.mock(return_value=api.error(422, "recordInfo is null"))
        async with api.client() as client:
            with pytest.raises(UnprocessableEntityError):
                await client.get_task("task_elsewhere")
        assert api.query.call_count == 1

    async def test_other_422s_are_final_even_after_a_create(self, api: Api) -> None:
        api.create.mock(return_value=api.created())
        api.query.mock(return_value=api.error(422, "taskId is malformed"))
        async with api.client() as client:
            with pytest.raises(UnprocessableEntityError):
                await client.get_task(await client.create_task(REQUEST))
        assert api.query.call_count == 1

    def test_is_not_visible_yet(self) -> None:
        def error(code: int, msg: str) -> Any:
            from nanobanana_async._errors import error_for_status

            return error_for_status(code, msg, http_status=code)

        assert is_not_visible_yet(error(404, ""))
        assert is_not_visible_yet(error(422, "Error: recordInfo is null"))
        assert not is_not_visible_yet(error(422, "prompt too long"))
        assert not is_not_visible_yet(error(400, "recordInfo is null"))


# -- 409 ---------------------------------------------------------------------------------------


@pytest.mark.anyio
class TestActiveTaskLimit:
    async def test_409_waits_for_a_slot_then_creates(self, api: Api) -> None:
        api.create.mock(
            side_effect=[api.error(409, "Active task limit exceeded"), api.created("task_2")]
        )
        async with api.client(max_retries=0) as client:  # a 409 is not a retry-budget matter
            assert await client.create_task(REQUEST) == "task_2"
            assert client.limits_snapshot().conflicts == 1
        ids = request_ids(api.create)
        assert len(ids) == 2
        assert len(set(ids)) == 1

    async def test_409_in_an_envelope_with_the_limit(self, api: Api) -> None:
        api.create.mock(
            side_effect=[api.error(409, "limit", status=200, data={"limit": 4}), api.created()]
        )
        async with api.client() as client:
            await client.create_task(REQUEST)
            snapshot = client.limits_snapshot()
        assert snapshot.max_active == 4
        assert snapshot.max_active_known

    @pytest.mark.parametrize("limit", ["4", True, 0, -3, None])
    async def test_409_with_an_unusable_limit_learns_nothing(self, api: Api, limit: Any) -> None:
        api.create.mock(side_effect=[api.error(409, "full", data={"limit": limit}), api.created()])
        async with api.client() as client:
            await client.create_task(REQUEST)
            snapshot = client.limits_snapshot()
        assert snapshot.conflicts == 1
        assert not snapshot.max_active_known

    async def test_409_while_our_task_runs_waits_for_it_to_finish(self, api: Api) -> None:
        first_done, refused = anyio.Event(), anyio.Event()
        answers = iter(
            [
                api.created("task_a"),
                api.error(409, "Active task limit exceeded"),
                api.created("task_b"),
            ]
        )

        def create(request: httpx.Request) -> httpx.Response:
            response = next(answers)
            if response.status_code == 409:
                refused.set()
            return response

        api.create.mock(side_effect=create)

        async def query(request: httpx.Request) -> httpx.Response:
            task_id = request.url.params["taskId"]
            if task_id == "task_a" and not first_done.is_set():
                return api.task(task_id, "generating")
            return api.task(task_id)

        api.query.mock(side_effect=query)
        results: list[str] = []
        async with api.client() as client:

            async def generate() -> None:
                results.append((await client.generate(REQUEST)).task_id)

            async with anyio.create_task_group() as tg:
                tg.start_soon(generate)
                await anyio.wait_all_tasks_blocked()
                tg.start_soon(generate)
                await refused.wait()
                await anyio.wait_all_tasks_blocked()
                # Refused while task_a runs: the cap is learned and the second call queues.
                assert client.limits_snapshot().max_active == 1
                assert api.create.call_count == 2
                first_done.set()
            assert client.limits.active.active == 0
        assert sorted(results) == ["task_a", "task_b"]
        ids = request_ids(api.create)
        assert ids[1] == ids[2]  # the retried create kept its request id

    async def test_409_while_our_task_runs_until_the_deadline(self, api: Api) -> None:
        api.create.mock(
            side_effect=[api.created("task_a"), api.error(409, "Active task limit exceeded")]
        )
        api.query.mock(return_value=api.task("task_a", "generating"))
        async with api.client() as client, anyio.create_task_group() as tg:
            tg.start_soon(lambda: client.generate(REQUEST, timeout=30))
            await anyio.wait_all_tasks_blocked()
            with pytest.raises(ActiveTaskLimitError):
                await client.generate(REQUEST, timeout=0.1)
            assert api.create.call_count == 2
            tg.cancel_scope.cancel()

    async def test_409_until_the_deadline(self, api: Api) -> None:
        api.create.mock(return_value=api.error(409, "Active task limit exceeded"))
        async with api.client() as client:
            with pytest.raises(ActiveTaskLimitError) as info:
                await client.create_task(REQUEST, timeout=0.1, request_id="rid")
        assert info.value.request_id == "rid"
        assert api.create.call_count >= 2
        assert set(request_ids(api.create)) == {"rid"}


# -- the policy itself -------------------------------------------------------------------------


class TestRetryPolicy:
    def test_defaults(self) -> None:
        policy = RetryPolicy()
        assert policy.max_retries == 3
        assert policy.backoff_base == 0.5

    def test_full_jitter_under_a_doubling_ceiling(self) -> None:
        policy = RetryPolicy(backoff_base=1.0, backoff_max=8.0)
        rng = random.Random(7)
        for attempt, ceiling in [(0, 1.0), (1, 2.0), (2, 4.0), (3, 8.0), (10, 8.0), (500, 8.0)]:
            draws = [policy.backoff(attempt, rng) for _ in range(200)]
            assert all(0.0 <= d <= ceiling for d in draws)
            assert max(draws) > ceiling / 2  # spread over the whole range, not a fixed pause

    def test_only_server_errors_are_retried_of_status_errors(self) -> None:
        policy, rng = RetryPolicy(), random.Random(0)
        server = ServerError("x", code=500, http_status=500)
        decision = retry_decision(server, create=False, attempt=0, policy=policy, rng=rng)
        assert decision is not None
        assert decision.kind == "backoff"
        bad = BadRequestError("x", code=400, http_status=400)
        assert retry_decision(bad, create=True, attempt=0, policy=policy, rng=rng) is None
        spent = retry_decision(server, create=True, attempt=3, policy=policy, rng=rng)
        assert spent is None  # max_retries (3) spent

    @pytest.mark.parametrize(
        "kwargs",
        [{"max_retries": -1}, {"backoff_base": 0}, {"backoff_max": -1},
         {"max_rate_limit_wait": -1}, {"not_found_grace": -0.1}],
    )  # fmt: skip
    def test_validation(self, kwargs: dict[str, Any]) -> None:
        with pytest.raises(ValueError):  # noqa: PT011
            RetryPolicy(**kwargs)
