"""The fake in-process, through `httpx` and `FakeNanoBanana.transport()`, on asyncio and trio."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest

from nanobanana_async.testing import FakeNanoBanana, Faults

pytestmark = pytest.mark.anyio

BODY = {"model": "nano-banana-text-to-image", "input": {"prompt": "a banana"}}
AUTH = {"Authorization": "Bearer sk-test"}


@pytest.fixture
async def http() -> AsyncIterator[Any]:
    """A factory of httpx clients on a fake's transport, closed after the test."""
    clients: list[httpx.AsyncClient] = []

    def make(fake: FakeNanoBanana, **kwargs: Any) -> httpx.AsyncClient:
        kwargs.setdefault("base_url", "https://aigptimage.com")
        kwargs.setdefault("headers", AUTH)
        client = httpx.AsyncClient(transport=fake.transport(), **kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


async def test_a_task_runs_in_real_time_and_its_file_downloads(http) -> None:
    fake = FakeNanoBanana(tier="basic", time_scale=0.01, duration=5.0)  # 50 ms
    client = http(fake)
    response = await client.post("/api/v1/jobs/createTask", json=BODY)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    task_id = response.json()["data"]["taskId"]
    order = ["waiting", "generating", "success"]
    states = []
    with anyio.fail_after(10):
        while not states or states[-1] != "success":
            query = await client.get("/api/v1/jobs/recordInfo", params={"taskId": task_id})
            data = query.json()["data"]
            states.append(data["state"])
            await anyio.sleep(0.005)
    assert states == sorted(states, key=order.index)  # never backwards
    url = json.loads(data["resultJson"])["resultUrls"][0]
    assert url.startswith("https://results.fake-nanobanana.test/files/")
    downloads = http(fake, headers={}, base_url="")
    image = await downloads.get(url)
    assert image.status_code == 200
    assert image.headers["content-type"] == "image/png"
    assert int(image.headers["content-length"]) == len(image.content)
    assert image.content.startswith(b"\x89PNG")
    assert fake.stats.authorization_sent_to_result_host is False
    await client.get(url)  # the API client carries the key
    assert fake.stats.authorization_sent_to_result_host is True


async def test_any_host_answers_the_api(http) -> None:
    fake = FakeNanoBanana(tier=None)
    client = http(fake, base_url="https://api.example.test/")
    assert (await client.post("/api/v1/jobs/createTask", json=BODY)).status_code == 200


async def test_rate_limited_answer_over_httpx(http) -> None:
    now = [0.0]
    fake = FakeNanoBanana(tier="free", time_scale=0.01, duration=0.0, clock=lambda: now[0])
    client = http(fake)
    assert (await client.post("/api/v1/jobs/createTask", json=BODY)).status_code == 200
    now[0] += 0.004
    response = await client.post("/api/v1/jobs/createTask", json=BODY)
    assert response.status_code == 429
    assert response.headers["retry-after"] == "1"
    data = response.json()["data"]
    assert data["retryAfter"] == pytest.approx(0.006)
    now[0] += data["retryAfter"]
    assert (await client.post("/api/v1/jobs/createTask", json=BODY)).status_code == 200


async def test_drop_before_raises_connect_error_and_creates_nothing(http) -> None:
    fake = FakeNanoBanana(tier=None)
    fake.script("create", ["drop_before"])
    client = http(fake)
    with pytest.raises(httpx.ConnectError):
        await client.post("/api/v1/jobs/createTask", json=BODY)
    assert fake.stats.tasks_created == 0


async def test_drop_after_creates_then_a_retry_with_the_id_gets_the_same_task(http) -> None:
    fake = FakeNanoBanana(tier=None)
    fake.script("create", ["drop_after"])
    client = http(fake)
    headers = {"X-Request-ID": "once"}
    with pytest.raises(httpx.RemoteProtocolError):
        await client.post("/api/v1/jobs/createTask", json=BODY, headers=headers)
    assert fake.stats.tasks_created == 1
    response = await client.post("/api/v1/jobs/createTask", json=BODY, headers=headers)
    assert response.json()["data"]["taskId"] == next(iter(fake.tasks))
    stats = fake.stats
    assert (stats.tasks_created, stats.idempotent_replays, stats.duplicates) == (1, 1, 0)


async def test_slow_answer_times_out_at_the_clients_read_timeout(http) -> None:
    fake = FakeNanoBanana(tier=None)
    fake.script("create", ["slow"])
    client = http(fake, timeout=httpx.Timeout(5.0, read=0.05))
    started = anyio.current_time()
    with pytest.raises(httpx.ReadTimeout):
        await client.post("/api/v1/jobs/createTask", json=BODY)
    assert anyio.current_time() - started >= 0.04
    assert fake.stats.tasks_created == 1  # the work was done


async def test_slow_answer_shorter_than_the_timeout_arrives(http) -> None:
    fake = FakeNanoBanana(tier=None, faults=Faults(slow_seconds=0.02))
    fake.script("create", ["slow"])
    client = http(fake, timeout=5.0)
    response = await client.post("/api/v1/jobs/createTask", json=BODY)
    assert response.status_code == 200


async def test_slow_answer_longer_than_the_timeout_times_out(http) -> None:
    fake = FakeNanoBanana(tier=None, faults=Faults(slow_seconds=30.0))
    fake.script("create", ["slow"])
    client = http(fake, timeout=httpx.Timeout(5.0, read=0.02))
    with pytest.raises(httpx.ReadTimeout):
        await client.post("/api/v1/jobs/createTask", json=BODY)


async def test_slow_answers_without_timeouts(http) -> None:
    fake = FakeNanoBanana(tier=None, faults=Faults(slow_seconds=0.01))
    fake.script("create", ["slow", "slow"])
    client = http(fake, timeout=None)
    response = await client.post("/api/v1/jobs/createTask", json=BODY)
    assert response.status_code == 200
    fake.faults = Faults()  # slow_seconds=None and no timeout: it never answers
    with anyio.move_on_after(0.05) as scope:
        await client.post("/api/v1/jobs/createTask", json=BODY)
    assert scope.cancelled_caught


async def test_truncated_download(http) -> None:
    fake = FakeNanoBanana(tier=None, duration=0.0)
    client = http(fake)
    task_id = (await client.post("/api/v1/jobs/createTask", json=BODY)).json()["data"]["taskId"]
    fake.script("result", ["drop_after"])
    url = f"https://results.fake-nanobanana.test/files/{task_id}/0.png"
    downloads = http(fake, headers={}, base_url="")
    async with downloads.stream("GET", url) as response:
        assert response.status_code == 200
        size = int(response.headers["content-length"])
        received = bytearray()

        async def read_all() -> None:
            async for chunk in response.aiter_bytes():
                received.extend(chunk)

        with pytest.raises(httpx.RemoteProtocolError):
            await read_all()
    assert 0 < len(received) < size
    assert (await downloads.get(url)).content.startswith(received)


async def test_500_html_and_envelope_faults(http) -> None:
    fake = FakeNanoBanana(tier=None)
    fake.script("query", ["500", "503_html", "200_500"])
    client = http(fake)
    params = {"taskId": "task_x"}
    first = await client.get("/api/v1/jobs/recordInfo", params=params)
    assert first.status_code == 500
    assert first.json() == {"code": 500, "msg": "Internal server error", "data": None}
    second = await client.get("/api/v1/jobs/recordInfo", params=params)
    assert second.status_code == 503
    assert second.headers["content-type"] == "text/html"
    third = await client.get("/api/v1/jobs/recordInfo", params=params)
    assert third.status_code == 200
    assert third.json()["code"] == 500
    assert (await client.get("/api/v1/jobs/recordInfo", params=params)).status_code == 404


async def test_encoded_query_strings(http) -> None:
    fake = FakeNanoBanana(tier=None)
    client = http(fake)
    task_id = (await client.post("/api/v1/jobs/createTask", json=BODY)).json()["data"]["taskId"]
    response = await client.get(f"/api/v1/jobs/recordInfo?x=%20&taskId={task_id}&y")
    assert response.json()["data"]["taskId"] == task_id
