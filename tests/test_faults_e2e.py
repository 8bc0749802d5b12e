"""Faults end to end: the client and the batch runner against the fake over HTTP.

Every scenario goes through the whole HTTP stack (the fake's own HTTP/1.1 server, or a bare
server for the answers the fake cannot give, on a `MemoryNetwork`, so the clock stays virtual)
on asyncio and trio, and checks what a user would notice: the call succeeds or raises the right
error, and the provider never bills twice (``stats.duplicates == 0``, one task per logical
request).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from memory_network import memory_network
from support import (
    KEY,
    POLL,
    RETRY,
    RawRequest,
    envelope_json,
    fake_provider,
    http_response,
    over_http,
    prompts,
    raw_server,
    record_info,
)

from nanobanana_async import (
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BatchRunner,
    DecodeError,
    ServerError,
    Task,
    TaskResult,
    TaskState,
    TextToImage,
    WaitTimeoutError,
)
from nanobanana_async.testing import FakeNanoBanana, Faults

pytestmark = pytest.mark.anyio

REQUEST = TextToImage(prompt="a banana under stress")


def assert_billed_once_per_request(fake: FakeNanoBanana, requests: int) -> None:
    stats = fake.stats
    assert stats.tasks_created == requests
    assert stats.duplicates == 0
    assert stats.conflicts == 0


# -- storms of 5xx ----------------------------------------------------------------------------


async def test_a_storm_of_server_errors_on_create_then_success() -> None:
    fake = fake_provider()
    storm = ["500"] * 6 + ["200_500", "502_html", "503_html", "500"]
    fake.script("create", storm)
    async with over_http(fake) as client:
        result = await client.generate(REQUEST, timeout=30)
    assert result.task_id in fake.tasks
    assert fake.stats.create_requests == len(storm) + 1
    assert fake.stats.idempotent_replays == 0  # none of the failed tries created anything
    assert_billed_once_per_request(fake, 1)


async def test_a_storm_of_server_errors_on_polls_does_not_end_the_wait() -> None:
    fake = fake_provider()
    storm = ["500"] * 8 + ["200_500", "502_html", "503_html", "record_null"]
    fake.script("query", storm)
    # One retry per poll: the storm outlasts every poll's retries, and the wait goes on.
    async with over_http(fake, max_retries=1) as client:
        result = await client.generate(REQUEST, timeout=30)
    assert result.urls
    assert fake.stats.query_requests > len(storm)
    assert_billed_once_per_request(fake, 1)


async def test_server_errors_past_the_retries_are_server_errors_with_the_proxy_page_named() -> None:
    fake = fake_provider()
    fake.script("create", ["502_html"] * 3)
    async with over_http(fake, max_retries=2) as client:
        with pytest.raises(ServerError) as info:
            await client.create_task(REQUEST)
    error = info.value
    assert (error.code, error.http_status) == (502, 502)
    assert error.message == "Bad Gateway (text/html body)"
    assert "<html>" not in str(error)
    assert fake.stats.create_requests == 3
    assert fake.stats.tasks_created == 0


# -- dropped connections ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("faults", "replays"),
    [
        (["drop_before"], 0),
        (["drop_after"], 1),
        (["drop_after", "drop_after", "drop_before", "drop_after"], 3),
    ],
)
async def test_dropped_creates_are_retried_with_the_same_request_id(
    faults: list[Any], replays: int
) -> None:
    fake = fake_provider()
    fake.script("create", faults)
    async with over_http(fake) as client:
        task_id = await client.create_task(REQUEST, request_id="hardening-drop-1")
        result = await client.wait_for_result(task_id, timeout=30)
    assert list(fake.tasks) == [task_id] == [result.task_id]
    assert fake.tasks[task_id].request_id == "hardening-drop-1"
    assert fake.stats.create_requests == len(faults) + 1
    assert fake.stats.idempotent_replays == replays
    assert_billed_once_per_request(fake, 1)


async def test_dropped_polls_do_not_end_the_wait() -> None:
    fake = fake_provider()
    fake.script("query", ["drop_after", "drop_before", "drop_after", "drop_before"])
    async with over_http(fake, max_retries=0) as client:
        result = await client.generate(REQUEST, timeout=30)
    assert result.task_id in fake.tasks
    assert_billed_once_per_request(fake, 1)


# -- slow answers -------------------------------------------------------------------------------


@pytest.mark.parametrize("slow_seconds", [None, 0.6])
async def test_a_create_slower_than_the_timeout_is_retried_and_billed_once(
    slow_seconds: float | None,
) -> None:
    fake = fake_provider(faults=Faults(slow_seconds=slow_seconds))
    fake.script("create", ["slow"])
    async with over_http(fake, timeout=0.2) as client:
        task_id = await client.create_task(REQUEST)
    assert list(fake.tasks) == [task_id]
    assert fake.stats.idempotent_replays == 1
    assert_billed_once_per_request(fake, 1)


async def test_a_timed_out_create_retried_by_the_caller_with_its_id_bills_once() -> None:
    fake = fake_provider()
    fake.script("create", ["slow"])
    async with over_http(fake, timeout=0.2, max_retries=0) as client:
        with pytest.raises(APITimeoutError):
            await client.create_task(REQUEST, request_id="caller-id-1")
        # The task exists though the caller never heard of it; the same id finds it.
        task_id = await client.create_task(REQUEST, request_id="caller-id-1")
    assert list(fake.tasks) == [task_id]
    assert_billed_once_per_request(fake, 1)


# -- answers the fake cannot give: a bare server ----------------------------------------------


@pytest.mark.parametrize(
    "body",
    ['{"code": 200, "msg": "success", "data": {"taskId": "t', "null", "[1, 2]", '"ok"', ""],
)
async def test_an_unreadable_200_to_a_create_is_retried_with_its_request_id(body: str) -> None:
    # The task may exist (and be billed): only the same X-Request-ID can recover it.
    async with (
        memory_network() as network,
        raw_server(lambda _r: http_response(200, body), network) as (base_url, received),
        network.client(base_url, api_key=KEY, retry=RETRY, max_retries=2) as client,
    ):
        with pytest.raises(DecodeError, match="not a JSON object") as info:
            await client.create_task(REQUEST, request_id="rid-unreadable")
    assert info.value.request_id == "rid-unreadable"
    assert len(received) == 3


async def test_malformed_json_in_a_500_is_a_server_error_retried() -> None:
    answer = http_response(500, '{"code": 500, "msg": "upstr')
    async with (
        memory_network() as network,
        raw_server(lambda _r: answer, network) as (base_url, received),
        network.client(base_url, api_key=KEY, retry=RETRY, max_retries=2) as client,
    ):
        with pytest.raises(ServerError) as info:
            await client.get_task("task_1")
    assert (info.value.code, info.value.http_status) == (500, 500)
    assert info.value.message == "Internal Server Error (application/json body)"
    assert len(received) == 3


@pytest.mark.parametrize(
    ("status", "cls", "message", "tries"),
    [
        (403, APIStatusError, "Forbidden (text/html body)", 1),
        (401, AuthenticationError, "Unauthorized (text/html body)", 1),
        (502, ServerError, "Bad Gateway (text/html body)", 3),
        (503, ServerError, "Service Unavailable (text/html body)", 3),
    ],
)
async def test_html_pages_from_a_proxy(
    status: int, cls: type[APIStatusError], message: str, tries: int
) -> None:
    page = f"<html><body><h1>{status}</h1><p>cloudflare</p></body></html>"
    answer = http_response(status, page, content_type="text/html; charset=UTF-8")
    async with (
        memory_network() as network,
        raw_server(lambda _r: answer, network) as (base_url, received),
        network.client(base_url, api_key=KEY, retry=RETRY, max_retries=2) as client,
    ):
        with pytest.raises(cls) as info:
            await client.create_task(REQUEST)
    error = info.value
    assert type(error) is cls
    assert (error.code, error.http_status, error.message) == (status, status, message)
    assert str(error) == f"{status}: {message}"
    assert len(received) == tries
    # Every try of the create carried the same idempotency key.
    assert len({request.headers["x-request-id"] for request in received}) == 1


async def test_unknown_states_are_shown_and_waited_through() -> None:
    states = iter(["waiting", "moderating", "moderating", "upscaling", "success"])

    def answer(request: RawRequest) -> bytes:
        record = record_info("task_1", next(states), urls=["http://127.0.0.1:1/x.png"])
        return http_response(200, envelope_json(200, "success", record))

    seen: list[Task] = []
    async with (
        memory_network() as network,
        raw_server(answer, network) as (base_url, _received),
        network.client(base_url, api_key=KEY, retry=RETRY, poll=POLL) as client,
    ):
        result = await client.wait_for_result("task_1", timeout=30, on_update=seen.append)
    assert [task.raw_state for task in seen] == ["waiting", "moderating", "upscaling", "success"]
    assert [task.state for task in seen][1:3] == [TaskState.UNKNOWN, TaskState.UNKNOWN]
    assert not any(task.is_finished for task in seen[:-1])
    assert result.urls == ("http://127.0.0.1:1/x.png",)


# -- result files and deadlines -----------------------------------------------------------------


async def test_an_expired_result_url_is_read_again_from_the_task(tmp_path: Path) -> None:
    fake = fake_provider()
    async with over_http(fake) as client:
        result = await client.generate(REQUEST, timeout=30)
        queries = fake.stats.query_requests
        expired = result.urls[0].replace("/0.png", "/0-expired.png")
        stale = TaskResult(task_id=result.task_id, urls=(expired,), task=result.task)
        (path,) = await client.save_result(stale, tmp_path)
    assert path.name == f"{result.task_id}.png"
    assert path.read_bytes().startswith(b"\x89PNG")
    assert fake.stats.query_requests == queries + 1  # read once more, for fresh URLs
    assert fake.stats.result_requests == 2
    assert fake.stats.authorization_sent_to_result_host is False


async def test_a_task_stuck_waiting_past_the_deadline() -> None:
    fake = fake_provider(duration=100_000.0)  # a thousand real seconds
    async with over_http(fake) as client:
        with pytest.raises(WaitTimeoutError) as info:
            await client.generate(REQUEST, timeout=0.3)
        error = info.value
        assert error.task_id in fake.tasks
        assert error.task is not None
        assert error.task.task_id == error.task_id
        assert (error.task.state, error.task.raw_state) == (TaskState.WAITING, "waiting")
        # The wait can be resumed from the id, and nothing is created again.
        with pytest.raises(WaitTimeoutError) as again:
            await client.wait_for_result(error.task_id, timeout=0.05)
        assert again.value.task_id == error.task_id
    assert_billed_once_per_request(fake, 1)


# -- the same faults through a batch ------------------------------------------------------------

BATCH_FAULTS = [
    ("create", "500"),
    ("create", "200_429"),
    ("create", "drop_before"),
    ("create", "drop_after"),
    ("create", "slow"),
    ("create", "502_html"),
    ("query", "500"),
    ("query", "drop_after"),
    ("query", "slow"),
    ("query", "503_html"),
    ("query", "200_429"),
    ("query", "record_null"),
]


@pytest.mark.parametrize(("endpoint", "fault"), BATCH_FAULTS)
async def test_every_fault_through_a_batch_loses_nothing_and_bills_once(
    endpoint: Any, fault: Any
) -> None:
    fake = fake_provider()
    # Every other request to the endpoint meets the fault, the first one included.
    fake.script(endpoint, [fault, "ok"] * 12)
    requests = prompts(8, f"batch {endpoint} {fault}")
    async with over_http(fake, timeout=0.25) as client:
        outcomes = await BatchRunner(client, max_active=4).run(requests)
    assert [o.index for o in outcomes] == list(range(8))
    assert all(o.ok for o in outcomes), [o.error for o in outcomes if not o.ok]
    assert {o.task_id for o in outcomes} == set(fake.tasks)
    assert fake.stats.faults >= 4
    assert_billed_once_per_request(fake, 8)


async def test_a_random_mix_of_faults_through_a_journaled_batch(tmp_path: Path) -> None:
    kinds = ["500", "drop_before", "drop_after", "200_500", "503_html"]
    fake = fake_provider(
        seed=6,
        fail_rate=0.1,
        faults=Faults(
            create=dict.fromkeys(kinds, 0.05),
            query={**dict.fromkeys(kinds, 0.04), "record_null": 0.02, "200_429": 0.02},
            result={"drop_after": 0.1},
        ),
    )
    path = tmp_path / "batch.sqlite"
    async with over_http(fake) as client:
        outcomes = await BatchRunner(client, journal=path, max_active=6).run(prompts(40, "mix"))
    assert len(outcomes) == 40
    failed = [o for o in outcomes if not o.ok]
    # Only the provider's own task failures are left: no fault lost a job.
    assert all(o.task_id is not None and o.error is not None for o in failed)
    assert {type(o.error).__name__ for o in failed} <= {"TaskFailedError"}
    assert {o.task_id for o in outcomes} == set(fake.tasks)
    assert_billed_once_per_request(fake, 40)
    with sqlite3.connect(path) as db:
        rows = dict(db.execute("SELECT idx, task_id FROM jobs WHERE status != 'created'"))
    assert rows == {o.index: o.task_id for o in outcomes}
