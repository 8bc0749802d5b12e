"""A misbehaving HTTP/1.1 server, for ``test_hostile_server.py``.

`hostile_server` serves at ``http://127.0.0.1:<port>`` on a `MemoryNetwork` inside the test's
own event loop, on asyncio or trio: the client's requests go through httpx, httpcore and h11
as over a socket, on the test's virtual clock. Each path has a script: a list of behaviours,
the n-th request to the path getting the n-th behaviour (the last one repeats). A behaviour
writes raw bytes, so it can do what no well-behaved server library would: stall, trickle the
head a byte at a time, send an endless or huge body, a gzip bomb, a body shorter than it
declared, a chunked body cut short.

Requests are parsed with h11; every answer closes its connection, so one connection is one
exchange, and the server records per exchange what it received (path, headers, body) and how
many bytes the connection accepted before the client hung up. A connection holds at most
`PIPE_BYTES` in flight, so that count is close to what the client read.

Everything here ends by itself: no behaviour runs longer than `LIMIT_SECONDS` nor sends more
than `LIMIT_BYTES`; an "endless" body stalls once it reaches that many bytes.
"""

from __future__ import annotations

import contextlib
import functools
import http
import json
import struct
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import anyio
import anyio.abc
import attrs
import h11
import httpx
from memory_network import MemoryNetwork, memory_network

#: The longest any behaviour runs; tests bound their calls well below it.
LIMIT_SECONDS = 10.0
#: The most bytes any behaviour sends in one answer.
LIMIT_BYTES = 64 * 1024 * 1024
CHUNK = 64 * 1024
MIB = 1024 * 1024

CREATE_PATH = "/api/v1/jobs/createTask"
QUERY_PATH = "/api/v1/jobs/recordInfo"

#: The start of a ``createTask`` answer whose body was cut: the task exists, the id is lost.
TRUNCATED_CREATE = b'{"code":200,"msg":"succ'
CONFLICT_MESSAGE = "X-Request-ID was already used for a different request"
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"  # deflate, no name, no time
_FINAL_EMPTY_BLOCK = b"\x03\x00"  # a final, fixed-Huffman deflate block with no data


@attrs.define(eq=False)
class Exchange:
    """One request the server received, and what it sent back.

    Attributes:
        method: The request's method.
        path: The request target's path, without the query.
        query: The query string, without the ``?``.
        headers: The request headers, names in lower case.
        body: The request body.
        index: This request's position among the requests to ``path`` (0-based).
        received_at: `anyio.current_time` when the request was whole.
        sent: Bytes of the answer the connection accepted.
        answered_at: When the whole answer was sent, or None if it never was.
        hung_up: Whether the client closed the connection while the server was still sending.
    """

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    index: int
    received_at: float
    stream: anyio.abc.ByteStream = attrs.field(repr=False)
    sent: int = 0
    answered_at: float | None = None
    hung_up: bool = False
    #: A header line put into the answer's head, after its status line (see `hostile_server`).
    echo: bytes = b""
    _echoed: bool = attrs.field(default=False, init=False)

    @property
    def request_id(self) -> str | None:
        """The request's ``X-Request-ID``."""
        return self.headers.get("x-request-id")

    def json(self) -> Any:
        """The request body as JSON."""
        return json.loads(self.body)

    async def send(self, data: bytes) -> None:
        """Send bytes, counting those the connection accepted (the echoed header line too)."""
        if self.echo and not self._echoed and (end := data.find(b"\n")) >= 0:
            self._echoed = True
            data = data[: end + 1] + self.echo + data[end + 1 :]
        await self.stream.send(data)
        self.sent += len(data)


Behaviour = Callable[[Exchange], Awaitable[None]]
"""Writes (or does not write) an answer to one exchange."""


def _head(
    status: int,
    headers: Sequence[tuple[str, str]] = (),
    *,
    content_length: int | None = None,
    reason: str | None = None,
) -> bytes:
    phrase = http.HTTPStatus(status).phrase if reason is None else reason
    lines = [f"HTTP/1.1 {status} {phrase}", "Connection: close"]
    if content_length is not None:
        lines.append(f"Content-Length: {content_length}")
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _envelope(code: int, msg: str, data: Any = None) -> bytes:
    return json.dumps({"code": code, "msg": msg, "data": data}).encode()


JSON = (("Content-Type", "application/json"),)


async def _until_limit(started: float) -> None:
    """Sleep out the rest of `LIMIT_SECONDS`: the answer never ends, then the server closes."""
    await anyio.sleep(max(0.0, started + LIMIT_SECONDS - anyio.current_time()))


# -- well-formed answers -----------------------------------------------------------------------


def answer(
    status: int,
    body: bytes,
    *,
    headers: Sequence[tuple[str, str]] = JSON,
    delay: float = 0.0,
) -> Behaviour:
    """A whole answer with a Content-Length, after ``delay`` seconds."""

    async def behave(exchange: Exchange) -> None:
        await anyio.sleep(delay)
        await exchange.send(_head(status, headers, content_length=len(body)) + body)

    return behave


def envelope(
    code: int, msg: str, data: Any = None, *, status: int | None = None, delay: float = 0.0
) -> Behaviour:
    """The provider's JSON envelope; the HTTP status is ``code`` unless given."""
    return answer(code if status is None else status, _envelope(code, msg, data), delay=delay)


def created(task_id: str = "task_1") -> Behaviour:
    """A successful ``createTask`` answer."""
    return envelope(200, "success", {"taskId": task_id})


def task_record(task_id: str, urls: Sequence[str]) -> Behaviour:
    """A ``recordInfo`` answer for a task that succeeded with ``urls``."""
    data = {
        "taskId": task_id,
        "model": "nano-banana-text-to-image",
        "state": "success",
        "param": "",
        "resultJson": json.dumps({"resultUrls": list(urls)}),
        "costTime": 1000,
        "createTime": 1757584164490,
        "completeTime": 1757584165490,
    }
    return envelope(200, "success", data)


def conflict() -> Behaviour:
    """409: the request id was already used for a different request."""
    return envelope(409, CONFLICT_MESSAGE)


def active_limit() -> Behaviour:
    """409: the key's active-task limit (the words say nothing of a request id)."""
    return envelope(409, "Too many active tasks", {"limit": 2})


def rate_limited(retry_after: float, **data: Any) -> Behaviour:
    """429 with ``data.retryAfter`` (and any other ``data`` members, e.g. a window)."""
    return envelope(429, "Too many requests", {"retryAfter": retry_after, **data})


def echo_key(
    status: int, *, code: int | None = None, as_json: bool = True, in_head: bool = False
) -> Behaviour:
    """An error that echoes the request's Authorization header, as careless servers do.

    The echo is in the body (an envelope's ``msg``, or an HTML page); with ``in_head``, in a
    ``WWW-Authenticate`` header and the status line's reason phrase too.
    """

    async def behave(exchange: Exchange) -> None:
        authorization = exchange.headers.get("authorization", "")
        message = f"Invalid API key provided: {authorization}"
        if as_json:
            body = _envelope(code or status, message)
            headers: Sequence[tuple[str, str]] = JSON
        else:
            body = f"<html><body><h1>Error</h1><p>{message}</p></body></html>".encode()
            headers = (("Content-Type", "text/html"),)
        reason = None
        if in_head:
            headers = (*headers, ("WWW-Authenticate", f'Bearer error="{authorization}"'))
            reason = f"Bad key {authorization}"
        head = _head(status, headers, content_length=len(body), reason=reason)
        await exchange.send(head + body)

    return behave


def result_file(data: bytes, content_type: str = "image/png") -> Behaviour:
    """A result file."""
    return answer(200, data, headers=(("Content-Type", content_type),))


# -- misbehaviours ------------------------------------------------------------------------------


def stall() -> Behaviour:
    """Read the request, answer nothing, close after `LIMIT_SECONDS`."""

    async def behave(exchange: Exchange) -> None:
        await _until_limit(exchange.received_at)

    return behave


def drop() -> Behaviour:
    """Close the connection without answering."""

    async def behave(exchange: Exchange) -> None:
        return None

    return behave


def slowloris_head(interval: float = 0.05) -> Behaviour:
    """A status line, then header bytes one at a time, never ending the head."""

    async def behave(exchange: Exchange) -> None:
        await exchange.send(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
        line = 0
        while anyio.current_time() < exchange.received_at + LIMIT_SECONDS:
            for byte in b"X-Pad-%d: y\r\n" % line:
                await exchange.send(bytes([byte]))
                await anyio.sleep(interval)
            line += 1

    return behave


def trickle_body(interval: float = 0.05, content: bytes = b"") -> Behaviour:
    """A whole head, then the body one byte at a time (``content``, then spaces).

    The declared length is more than `LIMIT_SECONDS` of trickling can send.
    """

    async def behave(exchange: Exchange) -> None:
        declared = len(content) + int(LIMIT_SECONDS / interval) + 16
        headers = (("Content-Type", "application/octet-stream"),)
        await exchange.send(_head(200, headers, content_length=declared))
        sent = 0
        while sent < declared and anyio.current_time() < exchange.received_at + LIMIT_SECONDS:
            await exchange.send(content[sent : sent + 1] or b" ")
            sent += 1
            await anyio.sleep(interval)

    return behave


def endless_chunked(prefix: bytes = b'{"code":200,"msg":"success","data":{"pad":"') -> Behaviour:
    """A chunked body that never ends: as fast as the client reads, up to `LIMIT_BYTES`."""

    async def behave(exchange: Exchange) -> None:
        await exchange.send(_head(200, (*JSON, ("Transfer-Encoding", "chunked"))))
        await exchange.send(_chunk(prefix))
        piece = _chunk(b"x" * CHUNK)
        while exchange.sent < LIMIT_BYTES and (
            anyio.current_time() < exchange.received_at + LIMIT_SECONDS
        ):
            await exchange.send(piece)
        await _until_limit(exchange.received_at)

    return behave


def huge_json(size: int, *, chunked: bool = False) -> Behaviour:
    """A valid envelope of ``size`` bytes (a long ``pad`` string), made as it is sent."""

    async def behave(exchange: Exchange) -> None:
        prefix = b'{"code":200,"msg":"success","data":{"taskId":"task_1","pad":"'
        suffix = b'"}}'
        padding = size - len(prefix) - len(suffix)
        if chunked:
            await exchange.send(_head(200, (*JSON, ("Transfer-Encoding", "chunked"))))
            wrap: Callable[[bytes], bytes] = _chunk
        else:
            await exchange.send(_head(200, JSON, content_length=size))
            wrap = bytes
        await exchange.send(wrap(prefix))
        piece = b"x" * CHUNK
        while padding > 0 and anyio.current_time() < exchange.received_at + LIMIT_SECONDS:
            await exchange.send(wrap(piece[:padding]))
            padding -= len(piece)
        await exchange.send(wrap(suffix) + (_chunk(b"") if chunked else b""))

    return behave


@functools.cache
def _deflated_zeros() -> bytes:
    """A mebibyte of NUL bytes as self-contained raw deflate blocks, none of them final.

    Made by a fresh compressor and ended by a full flush, it refers to nothing before it and
    ends on a byte boundary: any number of copies in a row is a valid deflate stream.
    """
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    return compressor.compress(bytes(MIB)) + compressor.flush(zlib.Z_FULL_FLUSH)


def gzip_bomb(
    inflated_mib: int,
    *,
    prefix: bytes = b'{"code":200,"msg":"success","data":{"pad":"',
    content_type: str = "application/json",
) -> Behaviour:
    """A gzip body that inflates to ``prefix`` and ``inflated_mib`` MiB of NUL bytes.

    About 1 KiB of gzip per MiB, sent as a chunked body a few hundred MiB at a time, so
    nothing on either side of the server ever holds the inflated text.
    """

    async def behave(exchange: Exchange) -> None:
        headers = (
            ("Content-Type", content_type),
            ("Content-Encoding", "gzip"),
            ("Transfer-Encoding", "chunked"),
        )
        compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
        start = compressor.compress(prefix) + compressor.flush(zlib.Z_FULL_FLUSH)
        await exchange.send(_head(200, headers) + _chunk(_GZIP_HEADER + start))
        block = _deflated_zeros()
        zeros = bytes(MIB)
        crc = zlib.crc32(prefix)
        for sent in range(0, inflated_mib, 16):
            if anyio.current_time() > exchange.received_at + LIMIT_SECONDS:
                return
            count = min(16, inflated_mib - sent)
            for _ in range(count):
                crc = zlib.crc32(zeros, crc)
            await exchange.send(_chunk(block * count))
        size = (len(prefix) + inflated_mib * MIB) & 0xFFFFFFFF
        trailer = _FINAL_EMPTY_BLOCK + struct.pack("<II", crc, size)
        await exchange.send(_chunk(trailer) + _chunk(b""))

    return behave


def short_body(declared: int, sent: bytes) -> Behaviour:
    """Declare ``declared`` bytes, send ``sent`` (fewer), and close."""

    async def behave(exchange: Exchange) -> None:
        headers = (("Content-Type", "image/png"),)
        await exchange.send(_head(200, headers, content_length=declared) + sent)

    return behave


def truncated_chunked(sent: bytes, content_type: str = "image/png") -> Behaviour:
    """A chunked body cut off before its last chunk; then the connection closes."""

    async def behave(exchange: Exchange) -> None:
        headers = (("Content-Type", content_type), ("Transfer-Encoding", "chunked"))
        await exchange.send(_head(200, headers) + _chunk(sent) + b"%x\r\n" % (len(sent) * 4))

    return behave


def stall_mid_body(declared: int, sent: bytes, content_type: str = "image/png") -> Behaviour:
    """Declare ``declared`` bytes, send ``sent``, then stall until `LIMIT_SECONDS`."""

    async def behave(exchange: Exchange) -> None:
        headers = (("Content-Type", content_type),)
        await exchange.send(_head(200, headers, content_length=declared) + sent)
        await _until_limit(exchange.received_at)

    return behave


# -- the server --------------------------------------------------------------------------------


class HostileServer:
    """The server's scripts and records; made by `hostile_server`."""

    def __init__(
        self, network: MemoryNetwork, clients: contextlib.AsyncExitStack, *, echo: bool = True
    ) -> None:
        self._network = network
        self._clients = clients
        self.base_url = network.listen(self.handle)
        self.echo = echo
        self.exchanges: list[Exchange] = []
        self._scripts: dict[str, list[Behaviour]] = {}
        self._offsets: dict[str, int] = {}

    def url(self, path: str) -> str:
        """The absolute URL of ``path`` on this server."""
        return self.base_url + path

    def http_client(self, timeout: float | httpx.Timeout | None = None) -> httpx.AsyncClient:
        """An httpx client that reaches this server, as the library builds its own.

        Args:
            timeout: The ``timeout`` given to the library's client, if any.

        It is closed when the server stops.
        """
        client = self._network.http_client(timeout)
        self._clients.push_async_callback(client.aclose)
        return client

    def script(self, path: str, *behaviours: Behaviour) -> None:
        """Answer the next requests to ``path`` with ``behaviours`` in turn (the last repeats).

        Requests already received keep their place: the n-th request to the path overall
        gets ``behaviours[n - received]``.
        """
        self._scripts[path] = list(behaviours)
        self._offsets[path] = len(self.received(path))

    def received(self, path: str) -> list[Exchange]:
        """The requests received on ``path``, in order of arrival."""
        return [exchange for exchange in self.exchanges if exchange.path == path]

    def _behaviour(self, exchange: Exchange) -> Behaviour:
        script = self._scripts.get(exchange.path)
        if not script:
            return envelope(404, f"nothing scripted for {exchange.path}")
        offset = self._offsets.get(exchange.path, 0)
        return script[min(exchange.index - offset, len(script) - 1)]

    async def _read(self, stream: anyio.abc.ByteStream) -> Exchange | None:
        parser = h11.Connection(h11.SERVER)
        request: h11.Request | None = None
        body = b""
        while True:
            event = parser.next_event()
            if event is h11.NEED_DATA:
                try:
                    parser.receive_data(await stream.receive())
                except anyio.EndOfStream:
                    return None
            elif isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > MIB:
                    return None
            elif isinstance(event, h11.EndOfMessage):
                break
            else:
                return None
        assert request is not None
        target = request.target.decode("latin-1")
        path, _, query = target.partition("?")
        authorization = next(
            (value for name, value in request.headers if name.lower() == b"authorization"), b""
        )
        return Exchange(
            method=request.method.decode("latin-1"),
            path=path,
            query=query,
            headers={
                name.decode("latin-1").lower(): value.decode("latin-1")
                for name, value in request.headers
            },
            body=body,
            index=len(self.received(path)),
            received_at=anyio.current_time(),
            stream=stream,
            echo=b"X-Echo-Authorization: " + authorization + b"\r\n" if self.echo else b"",
        )

    async def handle(self, stream: anyio.abc.ByteStream) -> None:
        """Serve one connection: one request, one (mis)behaviour, then close."""
        async with stream:
            with anyio.move_on_after(LIMIT_SECONDS + 1.0):
                try:
                    exchange = await self._read(stream)
                except (anyio.BrokenResourceError, h11.RemoteProtocolError, OSError):
                    return
                if exchange is None:
                    return
                self.exchanges.append(exchange)
                try:
                    await self._behaviour(exchange)(exchange)
                except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                    exchange.hung_up = True
                else:
                    exchange.answered_at = anyio.current_time()


@contextlib.asynccontextmanager
async def hostile_server(*, echo: bool = True) -> AsyncIterator[HostileServer]:
    """Serve a `HostileServer` for the block; every connection and client ends with it.

    Args:
        echo: Echo each request's ``Authorization`` header in an ``X-Echo-Authorization``
            header of its answer, whatever the behaviour (as a debugging proxy might), so
            that every error of the suite is one the key could leak into.
    """
    async with memory_network() as network, contextlib.AsyncExitStack() as clients:
        yield HostileServer(network, clients, echo=echo)
