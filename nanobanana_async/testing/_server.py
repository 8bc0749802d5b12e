"""The fake provider over loopback: a small HTTP/1.1 server on anyio and h11."""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING

import anyio
import anyio.abc
import h11

from ._reply import Reply

if TYPE_CHECKING:
    from ._fake import FakeNanoBanana

__all__ = ["MAX_BODY_BYTES", "Connection", "serve"]

MAX_BODY_BYTES = 1 << 20
"""Larger request bodies get 413; a valid create body is far smaller."""

_log = logging.getLogger("nanobanana_async.testing")
_RECEIVE_SIZE = 65536
_DISCONNECTS = (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError)


class Connection:
    """One client connection: requests in, answers out, keep-alive until either side closes."""

    def __init__(self, fake: FakeNanoBanana, stream: anyio.abc.ByteStream, base_url: str) -> None:
        self._fake = fake
        self._stream = stream
        self._base_url = base_url
        self._h11 = h11.Connection(h11.SERVER)

    async def _receive(self) -> None:
        try:
            data = await self._stream.receive(_RECEIVE_SIZE)
        except _DISCONNECTS:
            data = b""
        self._h11.receive_data(data)

    async def _next_request(self) -> tuple[h11.Request, bytes] | None:
        request: h11.Request | None = None
        body = bytearray()
        while True:
            event = self._h11.next_event()
            if event is h11.NEED_DATA:
                await self._receive()
            elif isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > MAX_BODY_BYTES:
                    await self._send(Reply.envelope(413, "Request body too large"))
                    return None
            elif isinstance(event, h11.EndOfMessage):
                assert request is not None  # h11 sends Request first
                return request, bytes(body)
            else:  # ConnectionClosed (or PAUSED, which cannot happen between cycles)
                return None

    async def _send(self, reply: Reply, *, body: bytes | None = None) -> None:
        headers = [
            ("content-type", reply.content_type),
            ("content-length", str(len(reply.body))),
            ("server", "fake-nanobanana"),
            *reply.headers,
        ]
        data = self._h11.send(h11.Response(status_code=reply.status, headers=headers)) or b""
        data += self._h11.send(h11.Data(data=reply.body if body is None else body)) or b""
        if body is None:
            data += self._h11.send(h11.EndOfMessage()) or b""
        await self._stream.send(data)

    async def _wait_slowly(self, seconds: float | None) -> bool:
        """Wait before a slow answer; return False if the client hung up meanwhile."""
        with anyio.move_on_after(math.inf if seconds is None else seconds):
            while True:
                try:
                    data = await self._stream.receive(_RECEIVE_SIZE)
                except _DISCONNECTS:
                    return False
                # Not pipelining clients send nothing here; keep anything for the next cycle.
                self._h11.receive_data(data)
        return True

    async def run(self) -> None:
        while True:
            try:
                received = await self._next_request()
            except h11.RemoteProtocolError as error:
                with contextlib.suppress(h11.LocalProtocolError, *_DISCONNECTS):
                    await self._send(Reply.envelope(400, f"Bad HTTP request: {error}"))
                return
            if received is None:
                return
            request, body = received
            reply = self._answer(request, body)
            await self._fake.fetch_images()
            if reply.action in ("refuse", "drop"):
                return
            if reply.action == "slow" and not await self._wait_slowly(reply.slow_seconds):
                return
            if reply.action == "truncate":
                await self._send(reply, body=reply.body[: len(reply.body) // 2])
                return
            await self._send(reply)
            if self._h11.our_state is not h11.DONE or self._h11.their_state is not h11.DONE:
                return  # h11 says the connection must close (e.g. "Connection: close")
            self._h11.start_next_cycle()

    def _answer(self, request: h11.Request, body: bytes) -> Reply:
        authorization = request_id = None
        for name, value in request.headers:
            if name == b"authorization":
                authorization = value.decode("latin-1")
            elif name == b"x-request-id":
                request_id = value.decode("latin-1")
        path, _, query = request.target.decode("latin-1").partition("?")
        return self._fake.handle(
            method=request.method.decode("ascii"),
            path=path,
            query=query,
            authorization=authorization,
            request_id=request_id,
            body=body,
            result_base_url=self._base_url,
        )


@contextlib.asynccontextmanager
async def serve(fake: FakeNanoBanana, host: str, port: int) -> AsyncGenerator[str, None]:
    """Serve ``fake`` on ``host``:``port`` in the current event loop; yield the base URL."""
    listener = await anyio.create_tcp_listener(local_host=host, local_port=port)
    bound_port = listener.extra(anyio.abc.SocketAttribute.local_port)  # noqa: S610
    base_url = f"http://[{host}]:{bound_port}" if ":" in host else f"http://{host}:{bound_port}"

    async def handle(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            try:
                await Connection(fake, stream, base_url).run()
            except _DISCONNECTS:
                pass
            except Exception:  # a server must outlive one bad connection
                _log.exception("fake provider: error while serving a connection")

    failure: Exception | None = None
    async with listener, anyio.create_task_group() as task_group:
        task_group.start_soon(listener.serve, handle)
        try:
            yield base_url
        except Exception as error:  # raised below, not wrapped in the task group's group
            failure = error
        finally:
            task_group.cancel_scope.cancel()
    if failure is not None:
        raise failure
