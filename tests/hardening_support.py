"""Helpers for the hardening suites: the fake over loopback, a raw HTTP server, small waits.

The hardening tests (``test_faults_e2e.py``, ``test_hostile_input.py``,
``test_cancellation.py``, ``test_secrets.py``) run the client against real sockets on
loopback, on asyncio and trio. Nothing here asserts on elapsed time: the machine is shared.
"""

from __future__ import annotations

import contextlib
import http
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import anyio.abc
import attrs

from nanobanana_async import AsyncNanoBanana, PollPolicy, RetryPolicy, TextToImage
from nanobanana_async.testing import FakeNanoBanana

#: A distinctive key: the secrets suite searches every text the library produces for it.
KEY = "sk-SECRET-hardening-7f3a9c1e5b2d4f60"
SCALE = 0.01  # real seconds per provider second
POLL = PollPolicy(initial=0.005, factor=1.5, maximum=0.02, jitter=0.1, min_interval=0.002)
RETRY = RetryPolicy(max_retries=12, backoff_base=0.002, backoff_max=0.01, max_rate_limit_wait=30.0)


def prompts(count: int, prefix: str) -> list[TextToImage]:
    """Distinct requests: the fake counts a second task with the same body as a duplicate."""
    return [TextToImage(prompt=f"{prefix} #{i}") for i in range(count)]


def fake_provider(**kwargs: Any) -> FakeNanoBanana:
    """A fake with our key, no rate limits, and tasks of 10 to 30 ms."""
    kwargs.setdefault("api_key", KEY)
    kwargs.setdefault("tier", None)
    kwargs.setdefault("time_scale", SCALE)
    kwargs.setdefault("duration", (1.0, 3.0))
    return FakeNanoBanana(**kwargs)


@contextlib.asynccontextmanager
async def loopback(fake: FakeNanoBanana, **kwargs: Any) -> AsyncIterator[AsyncNanoBanana]:
    """Serve ``fake`` on loopback and open a client of it with tiny poll and retry intervals."""
    kwargs.setdefault("poll", POLL)
    kwargs.setdefault("retry", RETRY)
    kwargs.setdefault("api_key", fake.api_key)
    async with (
        fake.serve() as base_url,
        AsyncNanoBanana(base_url=base_url, **kwargs) as client,
    ):
        yield client


async def wait_until(condition: Callable[[], bool], limit: float = 20.0) -> None:
    """Wait for ``condition``; the limit only keeps a broken test from hanging."""
    with anyio.fail_after(limit):
        while not condition():  # noqa: ASYNC110 - the fake has no event to wait on
            await anyio.sleep(0.001)


@attrs.define
class RawRequest:
    """One request a `raw_server` received."""

    method: str
    target: str
    headers: dict[str, str]
    body: bytes


def http_response(
    status: int,
    body: bytes | str = b"",
    *,
    content_type: str = "application/json",
    headers: dict[str, str] | None = None,
) -> bytes:
    """A whole HTTP/1.1 response that closes the connection."""
    data = body.encode() if isinstance(body, str) else body
    lines = [
        f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(data)}",
        "Connection: close",
        *(f"{name}: {value}" for name, value in (headers or {}).items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + data


Answer = Callable[[RawRequest], bytes]


@contextlib.asynccontextmanager
async def raw_server(
    answer: Answer, host: str = "127.0.0.1"
) -> AsyncIterator[tuple[str, list[RawRequest]]]:
    """A bare HTTP/1.1 server on loopback answering each request with ``answer``'s bytes.

    For what the fake cannot send: malformed JSON, proxy pages, redirects to other hosts.
    Yields the base URL and the list of requests received so far.
    """
    received: list[RawRequest] = []
    listener = await anyio.create_tcp_listener(local_host=host, local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)

    async def handle(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            buffer = b""
            with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError):
                while b"\r\n\r\n" not in buffer:
                    buffer += await stream.receive()
                head, body = buffer.split(b"\r\n\r\n", 1)
                request_line, *lines = head.decode("latin-1").split("\r\n")
                headers = {}
                for line in lines:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                while len(body) < int(headers.get("content-length", "0")):
                    body += await stream.receive()
                method, target, _ = request_line.split(" ", 2)
                request = RawRequest(method, target, headers, body)
                received.append(request)
                await stream.send(answer(request))

    async with listener, anyio.create_task_group() as group:
        group.start_soon(listener.serve, handle)
        try:
            yield f"http://{host}:{port}", received
        finally:
            group.cancel_scope.cancel()


def envelope_json(code: int, msg: str, data: Any = None) -> str:
    """The provider's envelope as JSON text."""
    return json.dumps({"code": code, "msg": msg, "data": data})
