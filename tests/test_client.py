"""The client's transport: construction, headers, ownership, answers and secrets."""

from __future__ import annotations

import json
import logging
import traceback
import uuid
from typing import TYPE_CHECKING, Any

import anyio
import httpx
import pytest

from nanobanana_async import (
    DEFAULT_BASE_URL,
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AsyncNanoBanana,
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    DecodeError,
    InsufficientCreditsError,
    InvalidRequestError,
    NanoBananaError,
    PollPolicy,
    RateLimitError,
    RetryPolicy,
    ServerError,
    Task,
    TaskNotFoundError,
    TaskState,
    TextToImage,
    UnprocessableEntityError,
    WaitTimeoutError,
    __version__,
)

if TYPE_CHECKING:
    from conftest import Api

pytestmark = pytest.mark.anyio

API_KEY = "sk-nb-SECRET-0xC0FFEE-d41d8cd98f00b204"  # the key the `api` fixture's clients use

REQUEST = TextToImage(prompt="a banana", image_size="16:9")


# -- construction ------------------------------------------------------------------------------


class TestConstruction:
    async def test_api_key_from_the_environment(
        self, api: Api, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("NANOBANANA_API_KEY", API_KEY)
        api.create.mock(return_value=api.created())
        async with AsyncNanoBanana(http_client=api.http()) as client:
            await client.create_task(REQUEST)
        assert api.create.calls.last.request.headers["Authorization"] == f"Bearer {API_KEY}"

    async def test_explicit_key_wins_over_the_environment(
        self, api: Api, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("NANOBANANA_API_KEY", "from-env")
        api.create.mock(return_value=api.created())
        async with AsyncNanoBanana("  explicit  ", http_client=api.http()) as client:
            await client.create_task(REQUEST)
        assert api.create.calls.last.request.headers["Authorization"] == "Bearer explicit"

    @pytest.mark.parametrize("key", [None, "", "   "])
    async def test_missing_key_is_a_clear_error(
        self, key: str | None, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.delenv("NANOBANANA_API_KEY", raising=False)
        with pytest.raises(ConfigurationError, match="NANOBANANA_API_KEY") as info:
            AsyncNanoBanana(key)
        assert info.value.field == "api_key"
        assert not isinstance(info.value, APIStatusError)  # the server said nothing

    async def test_base_url_from_the_environment(
        self, api: Api, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("NANOBANANA_BASE_URL", "https://eu.example.com")
        route = api.router.post("https://eu.example.com/api/v1/jobs/createTask")
        route.mock(return_value=api.created())
        async with api.client() as client:
            assert client.base_url == httpx.URL("https://eu.example.com")
            assert await client.create_task(REQUEST) == "task_1"
        assert route.call_count == 1

    async def test_base_url_path_prefix_is_kept(self, api: Api) -> None:
        route = api.router.get("https://gw.example.com/nano/api/v1/jobs/recordInfo")
        route.mock(return_value=api.task())
        async with api.client(base_url="https://gw.example.com/nano/") as client:
            task = await client.get_task("task_1")
        assert task.state is TaskState.SUCCESS
        assert route.calls.last.request.url.params["taskId"] == "task_1"

    @pytest.mark.parametrize(
        "base_url",
        ["http://aigptimage.com", "ftp://aigptimage.com", "aigptimage.com", "https://"],
    )
    async def test_bad_base_url(self, base_url: str) -> None:
        with pytest.raises(InvalidRequestError) as info:
            AsyncNanoBanana(API_KEY, base_url=base_url)
        assert info.value.field == "base_url"

    @pytest.mark.parametrize(
        "base_url", ["http://localhost:8080", "http://127.0.0.1:9", "http://[::1]:9"]
    )
    async def test_plain_http_on_loopback_is_allowed(self, base_url: str) -> None:
        async with AsyncNanoBanana(API_KEY, base_url=base_url) as client:
            assert client.base_url.scheme == "http"

    async def test_default_base_url(self) -> None:
        async with AsyncNanoBanana(API_KEY) as client:
            assert client.base_url == httpx.URL(DEFAULT_BASE_URL)
            assert client.limits_snapshot().max_active_known is False

    @pytest.mark.parametrize(
        ("kwargs", "field"),
        [
            ({"max_retries": -1}, "max_retries"),
            ({"max_download_bytes": 0}, "max_download_bytes"),
            ({"tier": "platinum"}, "tier"),
            ({"max_active": 0}, "max_active"),
        ],
    )
    async def test_bad_settings(self, kwargs: dict[str, Any], field: str) -> None:
        with pytest.raises(InvalidRequestError) as info:
            AsyncNanoBanana(API_KEY, **kwargs)
        assert info.value.field == field

    def test_can_be_built_outside_an_event_loop(self) -> None:
        client = AsyncNanoBanana(API_KEY, tier="pro")
        assert client.limits_snapshot().create_windows == {1.0: 20, 60.0: 1200}

    async def test_tier_and_max_active_seed_the_limits(self) -> None:
        async with AsyncNanoBanana(API_KEY, tier="Basic") as client:
            snapshot = client.limits_snapshot()
            assert snapshot.max_active == 5
            assert snapshot.create_windows == {1.0: 5, 60.0: 180}
            assert snapshot.query_windows == {1.0: 20, 60.0: 1000}
        async with AsyncNanoBanana(API_KEY, tier="free", max_active=3) as client:
            assert client.limits.active.limit == 3

    async def test_policies_are_exposed(self) -> None:
        poll = PollPolicy(initial=2.0)
        async with AsyncNanoBanana(API_KEY, poll=poll) as client:
            assert client.poll_policy is poll
            assert len(client.durations) == 0

    async def test_max_retries_overrides_only_the_count(self, api: Api) -> None:
        api.create.mock(return_value=httpx.Response(500))
        retry = RetryPolicy(max_retries=5, backoff_base=0.001, backoff_max=0.002)
        async with api.client(retry=retry, max_retries=1) as client:
            with pytest.raises(ServerError):
                await client.create_task(REQUEST)
        assert api.create.call_count == 2


# -- the requests ------------------------------------------------------------------------------


class TestRequests:
    async def test_create_sends_the_documented_request(self, api: Api) -> None:
        api.create.mock(return_value=api.created("task_abc"))
        async with api.client() as client:
            assert await client.create_task(REQUEST) == "task_abc"
        request = api.create.calls.last.request
        assert request.method == "POST"
        assert request.headers["Authorization"] == f"Bearer {API_KEY}"
        assert request.headers["User-Agent"] == f"nanobanana-async/{__version__}"
        assert request.headers["Content-Type"] == "application/json"
        assert json.loads(request.content) == {
            "model": "nano-banana-text-to-image",
            "input": {
                "prompt": "a banana",
                "image_size": "16:9",
                "output_format": "png",
                "nsfw_checker": True,
            },
        }
        assert uuid.UUID(request.headers["X-Request-ID"]).version == 4

    async def test_every_create_gets_its_own_request_id(self, api: Api) -> None:
        api.create.mock(return_value=api.created())
        async with api.client() as client:
            await client.create_task(REQUEST)
            await client.create_task(REQUEST)
        ids = {call.request.headers["X-Request-ID"] for call in api.create.calls}
        assert len(ids) == 2

    async def test_caller_request_id_is_sent(self, api: Api) -> None:
        api.create.mock(return_value=api.created())
        async with api.client() as client:
            await client.create_task(REQUEST, request_id="order-17:image-3")
        assert api.create.calls.last.request.headers["X-Request-ID"] == "order-17:image-3"

    @pytest.mark.parametrize("request_id", ["", "has space", "é", "x" * 129, 42])
    async def test_bad_request_id_sends_nothing(self, api: Api, request_id: Any) -> None:
        async with api.client() as client:
            with pytest.raises(InvalidRequestError) as info:
                await client.create_task(REQUEST, request_id=request_id)
        assert info.value.field == "request_id"
        assert not api.router.calls

    async def test_request_that_is_not_a_model_sends_nothing(self, api: Api) -> None:
        async with api.client() as client:
            with pytest.raises(InvalidRequestError, match="not dict"):
                await client.create_task({"prompt": "x"})  # type: ignore[arg-type]
        assert not api.router.calls

    async def test_get_task_sends_one_query(self, api: Api) -> None:
        api.query.mock(return_value=api.task("task_9"))
        async with api.client() as client:
            task = await client.get_task("task_9")
        assert isinstance(task, Task)
        assert task.task_id == "task_9"
        assert task.urls == (api.result_url,)
        assert api.query.call_count == 1
        request = api.query.calls.last.request
        assert request.url.params["taskId"] == "task_9"
        assert request.headers["User-Agent"] == f"nanobanana-async/{__version__}"
        assert request.headers["Authorization"] == f"Bearer {API_KEY}"
        assert "X-Request-ID" not in request.headers

    @pytest.mark.parametrize("task_id", ["", "  ", None])
    async def test_bad_task_id_sends_nothing(self, api: Api, task_id: Any) -> None:
        async with api.client() as client:
            with pytest.raises(InvalidRequestError):
                await client.get_task(task_id)
        assert not api.router.calls

    async def test_timeout_applies_to_each_request(self, api: Api) -> None:
        api.create.mock(return_value=api.created())
        async with api.client(timeout=5) as client:
            await client.create_task(REQUEST)
        assert api.create.calls.last.request.extensions["timeout"] == {
            "connect": 5.0, "read": 5.0, "write": 5.0, "pool": 5.0,
        }  # fmt: skip

    async def test_caller_client_keeps_its_timeouts(self, api: Api) -> None:
        api.create.mock(return_value=api.created())
        async with api.client(http_client=api.http(timeout=7.0)) as client:
            await client.create_task(REQUEST)
        assert api.create.calls.last.request.extensions["timeout"]["read"] == 7.0

    async def test_caller_client_headers_cannot_replace_ours(self, api: Api) -> None:
        api.create.mock(return_value=api.created())
        http = api.http(headers={"Authorization": "Bearer other", "X-Trace": "1"})
        async with api.client(http_client=http) as client:
            await client.create_task(REQUEST)
        headers = api.create.calls.last.request.headers
        assert headers["Authorization"] == f"Bearer {API_KEY}"
        assert headers["X-Trace"] == "1"


# -- lifecycle ---------------------------------------------------------------------------------


class TestLifecycle:
    async def test_caller_owned_client_is_not_closed(self, api: Api) -> None:
        http = api.http()
        async with api.client(http_client=http) as client:
            pass
        await client.aclose()
        assert not http.is_closed
        await http.aclose()

    async def test_own_clients_are_closed_and_aclose_is_idempotent(self) -> None:
        client = AsyncNanoBanana(API_KEY)
        http, download = client._http, client._download
        assert http is not download
        assert not http.is_closed
        await client.aclose()
        await client.aclose()
        assert http.is_closed
        assert download.is_closed

    async def test_own_clients_wait_60_s_and_do_not_follow_redirects(self) -> None:
        async with AsyncNanoBanana(API_KEY) as client:
            assert client._http.timeout == httpx.Timeout(60.0, connect=10.0)
            assert client._http.follow_redirects is False
            assert client._download.follow_redirects is False
        async with AsyncNanoBanana(API_KEY, timeout=3) as client:
            assert client._http.timeout == httpx.Timeout(3.0)

    async def test_a_closed_client_refuses_calls(self, api: Api) -> None:
        client = api.client()
        await client.aclose()
        with pytest.raises(NanoBananaError, match="closed"):
            await client.create_task(REQUEST)
        with pytest.raises(NanoBananaError, match="closed"):
            await client.get_task("task_1")
        with pytest.raises(NanoBananaError, match="closed"):
            await client.download(api.result_url)
        assert not api.router.calls

    async def test_aclose_finishes_even_when_cancelled(self) -> None:
        client = AsyncNanoBanana(API_KEY)
        with anyio.CancelScope() as scope:
            scope.cancel()
            await client.aclose()
        assert client._http.is_closed

    async def test_repr_without_the_key(self) -> None:
        async with AsyncNanoBanana(API_KEY) as client:
            expected = "<AsyncNanoBanana base_url='https://aigptimage.com' api_key='***'>"
            assert repr(client) == expected
            assert API_KEY not in str(client)
            assert API_KEY not in repr(vars(client))


# -- answers -----------------------------------------------------------------------------------


class TestAnswers:
    @pytest.mark.parametrize(
        ("code", "cls"),
        [
            (400, BadRequestError),
            (401, AuthenticationError),
            (402, InsufficientCreditsError),
            (422, UnprocessableEntityError),
        ],
    )
    @pytest.mark.parametrize("status", ["http", "envelope"])
    async def test_final_errors_are_sent_once(
        self, api: Api, code: int, cls: type[APIStatusError], status: str
    ) -> None:
        http_status = code if status == "http" else 200
        api.create.mock(
            return_value=api.error(code, "refused", status=http_status, data={"why": "x"})
        )
        async with api.client() as client:
            with pytest.raises(cls) as info:
                await client.create_task(REQUEST, request_id="rid-1")
        error = info.value
        assert type(error) is cls
        assert (error.code, error.http_status) == (code, http_status)
        assert error.message == "refused"
        assert error.data == {"why": "x"}
        assert error.request_id == "rid-1"
        assert api.create.call_count == 1

    async def test_message_member_instead_of_msg(self, api: Api) -> None:
        api.query.mock(return_value=api.error(401, "Invalid API key", key="message"))
        async with api.client() as client:
            with pytest.raises(AuthenticationError) as info:
                await client.get_task("task_1")
        assert info.value.message == "Invalid API key"
        assert info.value.request_id is None

    async def test_code_as_a_string_in_the_body(self, api: Api) -> None:
        api.create.mock(return_value=httpx.Response(200, json={"code": "402", "msg": "no credits"}))
        async with api.client() as client:
            with pytest.raises(InsufficientCreditsError) as info:
                await client.create_task(REQUEST)
        assert (info.value.code, info.value.http_status) == (402, 200)

    async def test_http_status_counts_when_the_body_has_no_code(self, api: Api) -> None:
        api.create.mock(return_value=httpx.Response(400, json={"error": "bad"}))
        async with api.client() as client:
            with pytest.raises(BadRequestError) as info:
                await client.create_task(REQUEST)
        assert info.value.code == 400
        assert info.value.message == "Bad Request (application/json body)"
        assert info.value.data is None

    async def test_http_error_status_wins_over_a_body_saying_200(self, api: Api) -> None:
        api.create.mock(return_value=httpx.Response(401, json={"code": 200, "msg": "ok?"}))
        async with api.client() as client:
            with pytest.raises(AuthenticationError) as info:
                await client.create_task(REQUEST)
        assert (info.value.code, info.value.http_status) == (401, 401)

    async def test_unknown_error_code_is_a_plain_status_error(self, api: Api) -> None:
        api.create.mock(return_value=api.error(418, "teapot"))
        async with api.client() as client:
            with pytest.raises(APIStatusError) as info:
                await client.create_task(REQUEST)
        assert type(info.value) is APIStatusError
        assert api.create.call_count == 1

    async def test_odd_success_code_in_the_body_is_an_error(self, api: Api) -> None:
        api.create.mock(return_value=httpx.Response(200, json={"code": 302, "msg": "moved"}))
        async with api.client() as client:
            with pytest.raises(APIStatusError) as info:
                await client.create_task(REQUEST)
        assert info.value.message == "moved"

    async def test_body_code_201_is_success(self, api: Api) -> None:
        body = {"code": 201, "data": {"taskId": "t"}}
        api.create.mock(return_value=httpx.Response(200, json=body))
        async with api.client() as client:
            assert await client.create_task(REQUEST) == "t"

    async def test_answer_without_code_is_success(self, api: Api) -> None:
        api.query.mock(return_value=httpx.Response(200, json={"data": api.record()}))
        async with api.client() as client:
            assert (await client.get_task("task_1")).state is TaskState.SUCCESS

    @pytest.mark.parametrize(
        "response",
        [
            httpx.Response(200, text="<html>ok</html>", headers={"content-type": "text/html"}),
            httpx.Response(200, json=[1, 2]),
            httpx.Response(200, content=b""),
        ],
    )
    async def test_unreadable_success_is_a_decode_error(
        self, api: Api, response: httpx.Response
    ) -> None:
        api.query.mock(return_value=response)
        async with api.client() as client:
            with pytest.raises(DecodeError, match="not a JSON object"):
                await client.get_task("task_1")
        assert api.query.call_count == 1

    async def test_create_without_a_task_id_is_a_decode_error(self, api: Api) -> None:
        api.create.mock(return_value=api.ok({"id": "elsewhere"}))
        async with api.client() as client:
            with pytest.raises(DecodeError, match="without a taskId"):
                await client.create_task(REQUEST)

    async def test_unknown_state_is_kept(self, api: Api) -> None:
        api.query.mock(return_value=api.task(state="moderating"))
        async with api.client() as client:
            task = await client.get_task("task_1")
        assert task.state is TaskState.UNKNOWN
        assert task.raw_state == "moderating"

    async def test_html_404_page(self, api: Api) -> None:
        api.query.mock(
            return_value=httpx.Response(
                404, text="<h1>Not Found</h1>", headers={"content-type": "text/html; charset=utf-8"}
            )
        )
        async with api.client() as client:
            with pytest.raises(TaskNotFoundError) as info:
                await client.get_task("nope")
        assert info.value.message == "Not Found (text/html body)"
        assert api.query.call_count == 1  # not created by this client: no grace

    async def test_error_without_any_body(self, api: Api) -> None:
        api.create.mock(return_value=httpx.Response(400))
        async with api.client() as client:
            with pytest.raises(BadRequestError) as info:
                await client.create_task(REQUEST)
        assert info.value.message == "Bad Request"

    async def test_409_on_a_query_is_final(self, api: Api) -> None:
        api.query.mock(return_value=api.error(409, "conflict"))
        async with api.client() as client:
            with pytest.raises(APIStatusError) as info:
                await client.get_task("task_1")
        assert info.value.code == 409
        assert api.query.call_count == 1


# -- secrets -----------------------------------------------------------------------------------


def _texts(error: BaseException) -> list[str]:
    """Every text an exception (and its causes) shows, including its own frames' locals."""
    texts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        texts += [str(current), repr(current), repr(current.args), repr(vars(current))]
        current = current.__cause__ or current.__context__
    exception = traceback.TracebackException.from_exception(error, capture_locals=True)
    texts.append("".join(exception.format(chain=False)))
    return texts


async def test_the_key_never_shows(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    failures: list[BaseException] = []
    api.create.mock(
        side_effect=[
            httpx.Response(500, json={"code": 500, "msg": "upstream"}),
            httpx.ConnectError("connection reset"),
            api.created(),
            api.error(401, "Invalid API key"),
            api.error(402, "no credits", status=200),
            httpx.ReadTimeout("slow"),
            httpx.ReadTimeout("slow"),
            httpx.ReadTimeout("slow"),
            httpx.ReadTimeout("slow"),
        ]
    )
    answers = {
        "task_1": iter(
            [
                api.error(429, "slow", data={"retryAfter": 0.01, "limit": 50, "windowSeconds": 1}),
                api.task(state="fail", failCode="500", failMsg="NSFW"),
            ]
        ),
        "task_3": iter([api.error(404, "not found")]),
        "task_4": iter([httpx.Response(200, text="garbage")]),
    }

    def query(request: httpx.Request) -> httpx.Response:
        task_id = request.url.params["taskId"]
        if task_id in answers:
            return next(answers[task_id])
        return api.task(task_id, state="generating")

    api.query.mock(side_effect=query)
    api.router.get(api.result_url).mock(return_value=httpx.Response(403))
    async with api.client() as client:
        texts = [repr(client), str(client)]
        await client.create_task(REQUEST)
        for call in (
            lambda: client.create_task(REQUEST),
            lambda: client.create_task(REQUEST),
            lambda: client.create_task(REQUEST),
            lambda: client.wait_for_result("task_1"),
            lambda: client.wait_for_result("task_2", timeout=0.001),
            lambda: client.get_task("task_3"),
            lambda: client.get_task("task_4"),
            lambda: client.download(api.result_url),
            lambda: client.download("http://cdn.example.com/x.png"),
        ):
            with pytest.raises(NanoBananaError) as info:
                await call()
            failures.append(info.value)
    with pytest.raises(ConfigurationError) as info:
        AsyncNanoBanana("")
    failures.append(info.value)
    kinds = {type(error).__name__ for error in failures}
    assert kinds >= {
        "AuthenticationError", "InsufficientCreditsError", "APITimeoutError", "TaskFailedError",
        "WaitTimeoutError", "TaskNotFoundError", "DecodeError", "DownloadError",
    }  # fmt: skip
    for error in failures:
        texts += _texts(error)
    texts.append(caplog.text)
    texts += [repr(record.args) for record in caplog.records]
    assert "retrying" in caplog.text  # the logs were captured, so the check means something
    for text in texts:
        assert API_KEY not in text
    # ...and the key did go to the provider.
    assert api.create.calls.last.request.headers["Authorization"] == f"Bearer {API_KEY}"


async def test_transport_errors_keep_their_cause(api: Api) -> None:
    api.query.mock(side_effect=httpx.ConnectError("refused"))
    async with api.client(max_retries=0) as client:
        with pytest.raises(APIConnectionError) as info:
            await client.get_task("task_1")
    assert not isinstance(info.value, APITimeoutError)
    assert isinstance(info.value.__cause__, httpx.ConnectError)
    assert "ConnectError: refused" in str(info.value)


async def test_rate_limit_error_attributes(api: Api) -> None:
    data = {"retryAfter": 30, "limit": 2, "tier": "free", "windowSeconds": 1}
    api.query.mock(return_value=api.error(429, "Rate limit exceeded", data=data))
    async with api.client() as client:
        with pytest.raises(WaitTimeoutError) as timed_out:
            await client.wait_for_result("task_1", timeout=1.0)
    # The wait ends at its deadline, not at the first refused poll; the 429 is its cause.
    error = timed_out.value.__cause__
    assert isinstance(error, RateLimitError)
    assert (error.code, error.http_status, error.retry_after) == (429, 429, 30.0)
    assert error.data == data
    assert api.query.call_count == 1  # 30 s would pass the deadline: no wait at all
