"""The API's requests: made from parts made once, as httpx's `build_request` makes them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from nanobanana_async import __version__
from nanobanana_async._http import ACCEPT_ENCODING, RequestBody
from nanobanana_async._requests import RequestBuilder
from nanobanana_async._secret import Secret

pytestmark = pytest.mark.anyio

KEY = "sk-nb-SECRET-requests"
SECRET = Secret(KEY)
BASE = httpx.URL("https://gw.example.com:8443/nano/")
USER_AGENT = f"nanobanana-async/{__version__}"
BODY = b'{"model":"nano-banana-text-to-image","input":{"prompt":"a banana"}}'


def by_httpx(
    http: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    content: bytes | None = None,
    params: dict[str, str] | None = None,
    request_id: str | None = None,
    timeout: httpx.Timeout | None = None,
) -> httpx.Request:
    """The request as httpx's own `build_request` makes it from the library's headers."""
    headers = [("User-Agent", USER_AGENT), ("Accept", "application/json")]
    headers.append(("Accept-Encoding", ACCEPT_ENCODING))
    if content is not None:
        headers.append(("Content-Type", "application/json"))
    if request_id is not None:
        headers.append(("X-Request-ID", request_id))
    headers.append(("Authorization", f"Bearer {KEY}"))
    return http.build_request(
        method,
        url,
        content=content,
        params=params,
        headers=headers,
        timeout=httpx.USE_CLIENT_DEFAULT if timeout is None else timeout,
    )


def assert_same(ours: httpx.Request, theirs: httpx.Request) -> None:
    assert ours.method == theirs.method
    assert ours.url == theirs.url
    assert ours.headers.raw == theirs.headers.raw  # names, values, order and spelling
    assert ours.extensions == theirs.extensions
    assert ours.content == theirs.content  # read already, as httpx's are


def both(
    http: httpx.AsyncClient, timeout: httpx.Timeout | None = None
) -> Iterator[tuple[httpx.Request, httpx.Request]]:
    """The create's and the query's requests, ours and httpx's."""
    builder = RequestBuilder(http, BASE, user_agent=USER_AGENT, timeout=timeout)
    create = "https://gw.example.com:8443/nano/api/v1/jobs/createTask"
    query = "https://gw.example.com:8443/nano/api/v1/jobs/recordInfo"
    ours = builder.build("create", SECRET, content=BODY, request_id="order-17")
    yield ours, by_httpx(http, "POST", create, content=BODY, request_id="order-17", timeout=timeout)
    ours = builder.build("query", SECRET, params={"taskId": "task 1/é"})
    yield ours, by_httpx(http, "GET", query, params={"taskId": "task 1/é"}, timeout=timeout)


CLIENTS: list[dict[str, Any]] = [
    {},
    {"timeout": 7.0},
    {"headers": {"X-Trace": "1", "Accept": "text/html", "Authorization": "Bearer other"}},
    # Headers the library sets on some requests only: kept on the others, as httpx keeps them.
    {"headers": {"Content-Type": "text/plain", "x-request-id": "theirs", "user-agent": "theirs"}},
    {"headers": [("X-Twice", "1"), ("X-Twice", "2")]},
]


@pytest.mark.parametrize("settings", CLIENTS)
async def test_a_request_is_the_one_build_request_makes(settings: dict[str, Any]) -> None:
    async with httpx.AsyncClient(**settings) as http:
        for ours, theirs in both(http):
            assert_same(ours, theirs)
            assert isinstance(ours.stream, RequestBody)  # sent without an async generator


async def test_the_library_s_timeouts_replace_the_client_s() -> None:
    async with httpx.AsyncClient(timeout=7.0) as http:
        for ours, theirs in both(http, httpx.Timeout(5.0)):
            assert_same(ours, theirs)
            assert ours.extensions["timeout"]["read"] == 5.0


async def test_the_client_s_headers_and_timeout_are_read_anew_when_they_change() -> None:
    async with httpx.AsyncClient(headers={"X-Trace": "1"}) as http:
        builder = RequestBuilder(http, BASE, user_agent=USER_AGENT, timeout=None)
        assert builder.build("query", SECRET).headers["X-Trace"] == "1"
        http.headers["X-Trace"] = "2"
        http.timeout = httpx.Timeout(3.0)
        request = builder.build("query", SECRET)
        assert request.headers["X-Trace"] == "2"
        assert request.extensions["timeout"]["read"] == 3.0
        http.headers = {"X-Other": "3"}
        assert "X-Trace" not in builder.build("query", SECRET).headers
        for ours, theirs in both(http):
            assert_same(ours, theirs)


@pytest.mark.parametrize(
    "settings",
    [
        {"cookies": {"session": "abc"}},
        {"params": {"region": "eu"}},
        {"headers": {"Host": "front.example.com"}},
        {"headers": {"Transfer-Encoding": "chunked"}},
    ],
)
async def test_what_only_httpx_merges_is_merged_by_httpx(settings: dict[str, Any]) -> None:
    """Cookies, default parameters, a Host or framing header of the client's: httpx's rules."""
    async with httpx.AsyncClient(**settings) as http:
        for ours, theirs in both(http):
            assert_same(ours, theirs)
        if "cookies" in settings:
            assert ours.headers["Cookie"] == "session=abc"
        if "params" in settings:
            assert ours.url.params["region"] == "eu"


async def test_cookies_set_later_are_sent() -> None:
    async with httpx.AsyncClient() as http:
        builder = RequestBuilder(http, BASE, user_agent=USER_AGENT, timeout=None)
        assert "Cookie" not in builder.build("query", SECRET).headers
        http.cookies.set("session", "abc", domain="gw.example.com")
        assert builder.build("query", SECRET).headers["Cookie"] == "session=abc"


class StampingClient(httpx.AsyncClient):
    """A client whose own `build_request` adds a header to every request."""

    def build_request(self, *args: Any, **kwargs: Any) -> httpx.Request:
        request = super().build_request(*args, **kwargs)
        request.headers["X-Stamp"] = "1"
        return request


async def test_a_client_s_own_build_request_builds_every_request() -> None:
    async with StampingClient() as http:
        for ours, theirs in both(http):
            assert_same(ours, theirs)
            assert ours.headers["X-Stamp"] == "1"


async def test_the_request_goes_through_the_client_s_hooks_with_its_body_readable() -> None:
    seen: list[tuple[str, bytes]] = []

    async def hook(request: httpx.Request) -> None:
        seen.append((request.method, request.content))

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"code": 200, "data": {"taskId": "task_1"}})

    transport = httpx.MockTransport(answer)
    async with httpx.AsyncClient(transport=transport, event_hooks={"request": [hook]}) as http:
        builder = RequestBuilder(http, BASE, user_agent=USER_AGENT, timeout=None)
        await http.send(builder.build("create", SECRET, content=BODY, request_id="r1"))
        await http.send(builder.build("query", SECRET, params={"taskId": "task_1"}))
    assert seen == [("POST", BODY), ("GET", b"")]


async def test_the_builder_keeps_nothing_of_the_key() -> None:
    async with httpx.AsyncClient(headers={"X-Trace": "1"}) as http:
        builder = RequestBuilder(http, BASE, user_agent=USER_AGENT, timeout=None)
        builder.build("create", SECRET, content=BODY, request_id="r1")
        builder.build("query", SECRET, params={"taskId": "task_1"})
        assert KEY not in repr(vars(builder))


async def test_a_task_s_url_is_made_once_and_the_urls_kept_are_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("nanobanana_async._requests._URL_CACHE_SIZE", 2)
    made: list[dict[str, str]] = []
    merge = httpx.URL.copy_merge_params

    def counted(url: httpx.URL, params: dict[str, str]) -> httpx.URL:
        made.append(params)
        return merge(url, params)

    monkeypatch.setattr(httpx.URL, "copy_merge_params", counted)
    query = "https://gw.example.com:8443/nano/api/v1/jobs/recordInfo"
    async with httpx.AsyncClient() as http:
        builder = RequestBuilder(http, BASE, user_agent=USER_AGENT, timeout=None)

        def poll(task_id: str) -> None:
            ours = builder.build("query", SECRET, params={"taskId": task_id})
            assert ours.url == f"{query}?taskId={task_id}"

        poll("task_1")
        poll("task_1")  # the same task polled again: its URL made once
        poll("task_2")
        poll("task_1")  # used last, so kept when a third comes
        poll("task_3")
        poll("task_1")
        assert [params["taskId"] for params in made] == ["task_1", "task_2", "task_3"]
        poll("task_2")  # used least recently, so it was given up: made again
        assert [params["taskId"] for params in made][-1] == "task_2"
        assert len(made) == 4
        builder.build("query", SECRET, params={"taskId": "t" * 5000})  # a huge id: not kept
        assert len(builder._urls) == 2
        assert len(made) == 5
