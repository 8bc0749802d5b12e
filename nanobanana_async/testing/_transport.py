"""The fake provider in-process, as an httpx transport."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import anyio
import httpx

from ._reply import Reply
from ._routing import DEFAULT_RESULT_BASE_URL

if TYPE_CHECKING:
    from ._fake import FakeNanoBanana

__all__ = ["FakeTransport"]


class _TruncatedStream(httpx.AsyncByteStream):
    """Yields part of a body, then fails as a connection closed mid-body would."""

    def __init__(self, part: bytes, request: httpx.Request) -> None:
        self._part = part
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self._part
        raise httpx.RemoteProtocolError(
            "peer closed connection without sending complete message body", request=self._request
        )


class FakeTransport(httpx.AsyncBaseTransport):
    """Answers requests with a `FakeNanoBanana`, without sockets.

    httpx does not enforce timeouts on custom transports, so a ``"slow"`` fault reads the
    request's read timeout and raises `httpx.ReadTimeout` itself once it has passed.
    """

    def __init__(self, fake: FakeNanoBanana) -> None:
        self._fake = fake

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Answer one request as the provider would.

        Raises:
            httpx.ConnectError: For a ``"drop_before"`` fault.
            httpx.RemoteProtocolError: For a ``"drop_after"`` fault.
            httpx.ReadTimeout: For a ``"slow"`` fault slower than the read timeout.
        """
        body = await request.aread()
        reply = self._fake.handle(
            method=request.method,
            path=request.url.path,
            query=request.url.query.decode("ascii", "replace"),
            authorization=request.headers.get("authorization"),
            request_id=request.headers.get("x-request-id"),
            body=body,
            result_base_url=DEFAULT_RESULT_BASE_URL,
        )
        await self._fake.fetch_images()
        if reply.action == "refuse":
            raise httpx.ConnectError("[fake] connection refused", request=request)
        if reply.action == "drop":
            raise httpx.RemoteProtocolError(
                "Server disconnected without sending a response.", request=request
            )
        if reply.action == "slow":
            await self._wait_slowly(reply, request)
        headers = [
            ("content-type", reply.content_type),
            ("content-length", str(len(reply.body))),
            *reply.headers,
        ]
        stream: httpx.AsyncByteStream
        if reply.action == "truncate":
            stream = _TruncatedStream(reply.body[: len(reply.body) // 2], request)
        else:
            stream = httpx.ByteStream(reply.body)  # far cheaper than content=
        return httpx.Response(reply.status, headers=headers, stream=stream, request=request)

    @staticmethod
    async def _wait_slowly(reply: Reply, request: httpx.Request) -> None:
        timeouts: dict[str, float | None] = request.extensions.get("timeout", {})
        read_timeout = timeouts.get("read")
        slow = reply.slow_seconds
        if slow is not None and (read_timeout is None or slow <= read_timeout):
            await anyio.sleep(slow)
            return
        if read_timeout is None:
            await anyio.sleep_forever()  # no timeout: the client waits as long as it asked
        else:
            await anyio.sleep(read_timeout)
        raise httpx.ReadTimeout("[fake] timed out waiting for a slow answer", request=request)
