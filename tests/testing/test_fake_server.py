"""The fake over loopback: `FakeNanoBanana.serve()`, a real HTTP/1.1 server, on asyncio and trio."""

from __future__ import annotations

import json
import logging
from typing import Any

import anyio
import anyio.abc
import httpx
import pytest

from nanobanana_async.testing import FakeNanoBanana, Faults

pytestmark = [pytest.mark.anyio, pytest.mark.real_time]  # real sockets (loopback)

BODY = {"model": "nano-banana-text-to-image", "input": {"prompt": "a banana"}}
AUTH = {"Authorization": "Bearer sk-test"}


def raw_request(
    method: str, target: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", "Authorization: Bearer sk-test"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class Reader:
    """Reads HTTP/1.1 responses with a Content-Length off a raw stream."""

    def __init__(self, stream: anyio.abc.ByteStream) -> None:
        self.stream = stream
        self.buffer = b""

    async def _fill(self) -> bool:
        try:
            self.buffer += await self.stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            return False
        return True

    async def response(self) -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buffer:
            if not await self._fill():
                raise EOFError(self.buffer)
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers["content-length"])
        while len(self.buffer) < length:
            if not await self._fill():
                raise EOFError(self.buffer)
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return int(status_line.split()[1]), headers, body

    async def closed(self) -> bool:
        return not self.buffer and not await self._fill()


def port_of(base_url: str) -> int:
    return int(base_url.rsplit(":", 1)[1])


async def test_serves_the_api_and_files_on_loopback() -> None:
    fake = FakeNanoBanana(tier="basic", time_scale=0.01, duration=1.0)
    async with fake.serve() as base_url, httpx.AsyncClient(base_url=base_url) as client:
        assert base_url.startswith("http://127.0.0.1:")
        created = await client.post("/api/v1/jobs/createTask", json=BODY, headers=AUTH)
        assert created.status_code == 200
        assert created.headers["content-type"] == "application/json"
        assert created.headers["server"] == "fake-nanobanana"
        task_id = created.json()["data"]["taskId"]
        with anyio.fail_after(10):
            while True:
                query = await client.get(
                    "/api/v1/jobs/recordInfo", params={"taskId": task_id}, headers=AUTH
                )
                data = query.json()["data"]
                if data["state"] == "success":
                    break
                await anyio.sleep(0.005)
        url = json.loads(data["resultJson"])["resultUrls"][0]
        assert url == f"{base_url}/files/{task_id}/0.png"  # served by the server itself
        image = await client.get(url)
        assert image.status_code == 200
        assert image.headers["content-type"] == "image/png"
        assert image.content.startswith(b"\x89PNG")
        unauthorized = await client.post("/api/v1/jobs/createTask", json=BODY)
        assert unauthorized.status_code == 401
    assert fake.stats.authorization_sent_to_result_host is False


async def test_many_concurrent_connections() -> None:
    fake = FakeNanoBanana(tier=None, time_scale=0.01)
    limits = httpx.Limits(max_connections=20, max_keepalive_connections=20)
    async with (
        fake.serve() as base_url,
        httpx.AsyncClient(base_url=base_url, headers=AUTH, limits=limits) as client,
    ):
        statuses: list[int] = []

        async def create(index: int) -> None:
            body = {"model": BODY["model"], "input": {"prompt": f"banana {index}"}}
            response = await client.post("/api/v1/jobs/createTask", json=body)
            statuses.append(response.status_code)

        with anyio.fail_after(30):
            async with anyio.create_task_group() as task_group:
                for index in range(100):
                    task_group.start_soon(create, index)
    assert statuses == [200] * 100
    assert fake.stats.tasks_created == 100
    assert fake.stats.duplicates == 0


async def test_keep_alive_and_pipelining_on_one_connection() -> None:
    fake = FakeNanoBanana(tier=None, duration=0.0)
    async with fake.serve() as base_url:
        stream = await anyio.connect_tcp("127.0.0.1", port_of(base_url))
        async with stream:
            reader = Reader(stream)
            body = json.dumps(BODY).encode()
            await stream.send(raw_request("POST", "/api/v1/jobs/createTask", body))
            status, _, answer = await reader.response()
            assert status == 200
            task_id = json.loads(answer)["data"]["taskId"]
            # Two requests in one write: answered in order on the same connection.
            await stream.send(
                raw_request("GET", f"/api/v1/jobs/recordInfo?taskId={task_id}")
                + raw_request("GET", f"/files/{task_id}/0.png")
            )
            status, _, answer = await reader.response()
            assert json.loads(answer)["data"]["state"] == "success"
            status, headers, image = await reader.response()
            assert (status, headers["content-type"]) == (200, "image/png")
            assert image.startswith(b"\x89PNG")
            await stream.send(raw_request("GET", "/nope", headers={"Connection": "close"}))
            status, _, _ = await reader.response()
            assert status == 404
            assert await reader.closed()  # the server honoured "Connection: close"


async def test_requests_sent_during_a_slow_answer_are_kept() -> None:
    fake = FakeNanoBanana(tier=None, faults=Faults(slow_seconds=0.3))
    fake.script("query", ["slow"])
    async with fake.serve() as base_url:
        stream = await anyio.connect_tcp("127.0.0.1", port_of(base_url))
        async with stream:
            reader = Reader(stream)
            await stream.send(raw_request("GET", "/api/v1/jobs/recordInfo?taskId=a"))
            await anyio.sleep(0.05)
            await stream.send(raw_request("GET", "/api/v1/jobs/recordInfo?taskId=b"))
            assert (await reader.response())[0] == 404
            assert (await reader.response())[0] == 404
    assert [r.fault for r in fake.recent_requests] == ["slow", "ok"]


async def test_dropped_connections() -> None:
    fake = FakeNanoBanana(tier=None)
    fake.script("create", ["drop_before", "drop_after"])
    async with (
        fake.serve() as base_url,
        httpx.AsyncClient(base_url=base_url, headers=AUTH) as client,
    ):
        with pytest.raises(httpx.RemoteProtocolError):
            await client.post("/api/v1/jobs/createTask", json=BODY)
        assert fake.stats.tasks_created == 0
        with pytest.raises(httpx.RemoteProtocolError):
            await client.post("/api/v1/jobs/createTask", json=BODY)
        assert fake.stats.tasks_created == 1
        response = await client.post("/api/v1/jobs/createTask", json=BODY)
        assert response.status_code == 200  # the server is still there


async def test_request_ids_over_loopback() -> None:
    fake = FakeNanoBanana(tier=None)
    async with (
        fake.serve() as base_url,
        httpx.AsyncClient(base_url=base_url, headers=AUTH) as client,
    ):
        headers = {"X-Request-ID": "the-one"}
        first = await client.post("/api/v1/jobs/createTask", json=BODY, headers=headers)
        second = await client.post("/api/v1/jobs/createTask", json=BODY, headers=headers)
    assert first.json() == second.json()
    assert fake.stats.idempotent_replays == 1
    assert fake.tasks[first.json()["data"]["taskId"]].request_id == "the-one"


async def test_a_client_gone_before_its_answers_is_harmless(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = FakeNanoBanana(tier=None)
    with caplog.at_level(logging.ERROR, logger="nanobanana_async.testing"):
        async with fake.serve() as base_url:
            stream = await anyio.connect_tcp("127.0.0.1", port_of(base_url))
            await stream.send(raw_request("GET", "/files/none/0.png") * 200)
            await stream.aclose()  # the server's answers meet a closed socket
            with anyio.fail_after(10):
                while fake.stats.result_requests < 2:  # noqa: ASYNC110 - polls the fake
                    await anyio.sleep(0.01)
            async with httpx.AsyncClient(base_url=base_url, headers=AUTH) as client:
                response = await client.post("/api/v1/jobs/createTask", json=BODY)
                assert response.status_code == 200
    assert "error while serving" not in caplog.text


async def test_truncated_download_over_loopback() -> None:
    fake = FakeNanoBanana(tier=None, duration=0.0)
    async with (
        fake.serve() as base_url,
        httpx.AsyncClient(base_url=base_url, headers=AUTH) as client,
    ):
        created = await client.post("/api/v1/jobs/createTask", json=BODY)
        task_id = created.json()["data"]["taskId"]
        fake.script("result", ["drop_after"])
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get(f"/files/{task_id}/0.png")
        assert (await client.get(f"/files/{task_id}/0.png")).status_code == 200


async def test_slow_answers_over_loopback() -> None:
    fake = FakeNanoBanana(tier=None, faults=Faults(slow_seconds=0.02))
    fake.script("create", ["slow"])
    async with (
        fake.serve() as base_url,
        httpx.AsyncClient(base_url=base_url, headers=AUTH, timeout=5.0) as client,
    ):
        assert (await client.post("/api/v1/jobs/createTask", json=BODY)).status_code == 200
        fake.faults = Faults()  # slow_seconds=None: until the client gives up
        fake.script("create", ["slow"])
        with pytest.raises(httpx.ReadTimeout):
            await client.post("/api/v1/jobs/createTask", json=BODY, timeout=0.1)
        assert fake.stats.tasks_created == 2
        assert (await client.post("/api/v1/jobs/createTask", json=BODY)).status_code == 200


async def test_bad_http_gets_400_and_a_closed_connection() -> None:
    fake = FakeNanoBanana(tier=None)
    async with fake.serve() as base_url:
        stream = await anyio.connect_tcp("127.0.0.1", port_of(base_url))
        async with stream:
            reader = Reader(stream)
            await stream.send(b"NOT HTTP AT ALL\r\n\r\n")
            status, _, body = await reader.response()
            assert status == 400
            assert json.loads(body)["code"] == 400
            assert await reader.closed()


async def test_too_large_bodies_get_413() -> None:
    fake = FakeNanoBanana(tier=None)
    async with fake.serve() as base_url:
        stream = await anyio.connect_tcp("127.0.0.1", port_of(base_url))
        async with stream:
            reader = Reader(stream)
            head = raw_request("POST", "/api/v1/jobs/createTask", headers={})
            head = head.replace(b"Content-Length: 0", b"Content-Length: 2000000")
            await stream.send(head + b"x" * (1 << 20) + b"y" * 1000)
            status, _, body = await reader.response()
            assert status == 413
            assert json.loads(body)["code"] == 413
    assert fake.stats.tasks_created == 0


async def test_client_hanging_up_mid_request_is_harmless() -> None:
    fake = FakeNanoBanana(tier=None)
    async with fake.serve() as base_url:
        stream = await anyio.connect_tcp("127.0.0.1", port_of(base_url))
        head = raw_request("POST", "/api/v1/jobs/createTask", headers={})
        await stream.send(head.replace(b"Content-Length: 0", b"Content-Length: 100") + b"{")
        await stream.aclose()
        idle = await anyio.connect_tcp("127.0.0.1", port_of(base_url))
        await idle.aclose()  # connect and leave without a request
        async with httpx.AsyncClient(base_url=base_url, headers=AUTH) as client:
            response = await client.post("/api/v1/jobs/createTask", json=BODY)
            assert response.status_code == 200
    assert fake.stats.create_requests == 1


async def test_an_error_in_one_connection_is_logged_and_the_server_goes_on(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeNanoBanana(tier=None)
    handle = fake.handle
    calls = []

    def broken_once(**kwargs: Any) -> Any:
        calls.append(kwargs)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return handle(**kwargs)

    monkeypatch.setattr(fake, "handle", broken_once)
    with caplog.at_level(logging.ERROR, logger="nanobanana_async.testing"):
        async with (
            fake.serve() as base_url,
            httpx.AsyncClient(base_url=base_url, headers=AUTH) as client,
        ):
            with pytest.raises(httpx.RemoteProtocolError):
                await client.post("/api/v1/jobs/createTask", json=BODY)
            response = await client.post("/api/v1/jobs/createTask", json=BODY)
            assert response.status_code == 200
    assert "error while serving a connection" in caplog.text


async def test_clean_shutdown_closes_connections_and_the_port() -> None:
    fake = FakeNanoBanana(tier=None)
    async with fake.serve() as base_url:
        port = port_of(base_url)
        idle = await anyio.connect_tcp("127.0.0.1", port)
        busy = await anyio.connect_tcp("127.0.0.1", port)
        fake.script("query", ["slow"])  # slow_seconds=None: would wait forever
        await busy.send(raw_request("GET", "/api/v1/jobs/recordInfo?taskId=x"))
        await anyio.sleep(0.05)
    with anyio.fail_after(5):
        assert await Reader(idle).closed()
        assert await Reader(busy).closed()
    await idle.aclose()
    await busy.aclose()
    with pytest.raises(OSError):  # noqa: PT011 - refused, whatever the platform calls it
        await anyio.connect_tcp("127.0.0.1", port)


async def test_exceptions_in_the_body_propagate_and_still_shut_down() -> None:
    fake = FakeNanoBanana(tier=None)
    ports = []

    async def fail_inside() -> None:
        async with fake.serve() as base_url:
            ports.append(port_of(base_url))
            raise KeyError("from the test")

    with pytest.raises(KeyError, match="from the test"):
        await fail_inside()
    port = ports[0]
    with pytest.raises(OSError):  # noqa: PT011
        await anyio.connect_tcp("127.0.0.1", port)


async def test_ipv6_loopback() -> None:
    fake = FakeNanoBanana(tier=None, duration=0.0)
    try:
        server = fake.serve(host="::1")
        base_url = await server.__aenter__()
    except OSError:  # pragma: no cover - a host without IPv6
        pytest.skip("no IPv6 loopback here")
    try:
        assert base_url.startswith("http://[::1]:")
        async with httpx.AsyncClient(base_url=base_url, headers=AUTH) as client:
            created = await client.post("/api/v1/jobs/createTask", json=BODY)
            task_id = created.json()["data"]["taskId"]
            data = (await client.get("/api/v1/jobs/recordInfo", params={"taskId": task_id})).json()[
                "data"
            ]
            url = json.loads(data["resultJson"])["resultUrls"][0]
            assert url.startswith(base_url)
            assert (await client.get(url)).status_code == 200
    finally:
        await server.__aexit__(None, None, None)
