"""A network in memory: servers in the test's own event loop, reached by the real HTTP stack.

`MemoryNetwork` is an httpcore network backend. A server listens on a made-up address
(``http://127.0.0.1:<port>``) with `MemoryNetwork.listen`; httpx clients reach it through
`MemoryNetwork.http_client`, whose requests go through httpcore and h11 as over a socket, but
the bytes travel through bounded in-memory pipes. Nothing waits on the kernel (no loopback
latency, no delayed ACK), so a test runs on a virtual clock and gives the same answer on a busy
machine; a pipe holds at most `PIPE_BYTES`, so a writer blocks when its reader stops reading,
as over a socket with small buffers.
"""

from __future__ import annotations

import contextlib
import itertools
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import anyio
import anyio.abc
import httpcore
import httpx

from nanobanana_async import AsyncNanoBanana
from nanobanana_async._config import DEFAULT_POOL, DEFAULT_TIMEOUT, timeouts

#: The most bytes in flight in one direction of a connection (a socket's buffers).
PIPE_BYTES = 64 * 1024
_PIECE = 8 * 1024

Handler = Callable[[anyio.abc.ByteStream], Awaitable[None]]
"""Serves one connection; the stream closes when it returns."""


class _Pipe:
    """One direction of a connection: bytes in order, at most `PIPE_BYTES` in flight."""

    def __init__(self) -> None:
        self.send, self.receive = anyio.create_memory_object_stream[bytes](PIPE_BYTES // _PIECE)
        self.leftover = b""


class MemoryStream(anyio.abc.ByteStream):
    """One end of a connection, for a server (as an anyio byte stream)."""

    def __init__(self, inbound: _Pipe, outbound: _Pipe) -> None:
        self._in = inbound
        self._out = outbound

    async def receive(self, max_bytes: int = 65536) -> bytes:
        if not self._in.leftover:
            self._in.leftover = await self._in.receive.receive()  # EndOfStream when closed
        data, self._in.leftover = self._in.leftover[:max_bytes], self._in.leftover[max_bytes:]
        return data

    async def send(self, item: bytes) -> None:
        for start in range(0, len(item), _PIECE):
            await self._out.send.send(item[start : start + _PIECE])

    async def send_eof(self) -> None:
        await self._out.send.aclose()

    async def aclose(self) -> None:
        await self._out.send.aclose()
        await self._in.receive.aclose()

    def readable(self) -> bool:
        """Whether a read would return at once (data, or the other end closed)."""
        statistics = self._in.receive.statistics()
        return bool(
            self._in.leftover
            or statistics.current_buffer_used
            or statistics.open_send_streams == 0
            or statistics.tasks_waiting_send
        )


class _ClientStream(httpcore.AsyncNetworkStream):
    """The client's end, as httpcore sees a socket: timeouts and errors as its own."""

    def __init__(self, stream: MemoryStream) -> None:
        self._stream = stream

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        try:
            with anyio.fail_after(timeout):
                return await self._stream.receive(max_bytes)
        except anyio.EndOfStream:
            return b""
        except TimeoutError as exc:
            raise httpcore.ReadTimeout(str(exc)) from exc
        except (anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            raise httpcore.ReadError(str(exc)) from exc

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        try:
            with anyio.fail_after(timeout):
                await self._stream.send(buffer)
        except TimeoutError as exc:
            raise httpcore.WriteTimeout(str(exc)) from exc
        except (anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            raise httpcore.WriteError(str(exc)) from exc

    async def aclose(self) -> None:
        await self._stream.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("the memory network speaks plain HTTP only")

    def get_extra_info(self, info: str) -> Any:
        return self._stream.readable() if info == "is_readable" else None


class MemoryNetwork(httpcore.AsyncNetworkBackend):
    """Servers listening in memory, and the connections to them; made by `memory_network`."""

    def __init__(self, group: anyio.abc.TaskGroup) -> None:
        self._group = group
        self._servers: dict[tuple[str, int], Handler] = {}
        self._ports = itertools.count(20000)
        self.connections = 0
        """Connections opened so far."""
        self.open = 0
        """Connections whose server end is still running."""

    def listen(self, handler: Handler, host: str = "127.0.0.1") -> str:
        """Serve each new connection to a fresh port on ``host`` with ``handler``.

        Returns:
            The server's base URL, e.g. ``http://127.0.0.1:20000``.
        """
        port = next(self._ports)
        self._servers[(host, port)] = handler
        return f"http://{host}:{port}"

    def close(self, base_url: str) -> None:
        """Stop accepting connections at ``base_url`` (they are refused from now on)."""
        url = httpx.URL(base_url)
        self._servers.pop((url.host, url.port or 80), None)

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        await anyio.lowlevel.checkpoint()
        handler = self._servers.get((host, port))
        if handler is None:
            raise httpcore.ConnectError(f"[memory network] connection refused: {host}:{port}")
        up, down = _Pipe(), _Pipe()
        self.connections += 1
        self.open += 1
        self._group.start_soon(self._serve, handler, MemoryStream(up, down))
        return _ClientStream(MemoryStream(down, up))

    async def _serve(self, handler: Handler, stream: MemoryStream) -> None:
        try:
            async with stream:
                await handler(stream)
        finally:
            self.open -= 1

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("the memory network has no unix sockets")

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)

    def transport(self) -> httpx.AsyncBaseTransport:
        """An httpx transport whose connections are made on this network."""
        return _MemoryTransport(self)

    def http_client(
        self, timeout: float | httpx.Timeout | None = None, **kwargs: Any
    ) -> httpx.AsyncClient:
        """An `httpx.AsyncClient` on this network, set up as `AsyncNanoBanana` sets up its own.

        Args:
            timeout: The ``timeout`` the library's client is given, if any.
            **kwargs: Other settings for httpx (``headers=``, ...).
        """
        per_phase, _ = timeouts(timeout)
        kwargs.setdefault("timeout", per_phase or DEFAULT_TIMEOUT)
        kwargs.setdefault("limits", DEFAULT_POOL)
        kwargs.setdefault("follow_redirects", False)
        return httpx.AsyncClient(transport=self.transport(), **kwargs)

    @contextlib.asynccontextmanager
    async def client(self, base_url: str, **kwargs: Any) -> AsyncIterator[AsyncNanoBanana]:
        """An `AsyncNanoBanana` of the server at ``base_url``, its HTTP clients on this network.

        ``kwargs`` go to `AsyncNanoBanana`; its API and download clients are built as it builds
        its own (for its ``timeout``), unless given.
        """
        timeout = kwargs.get("timeout")
        async with contextlib.AsyncExitStack() as stack:
            for name in ("http_client", "download_client"):
                if name not in kwargs:
                    made = self.http_client(timeout)
                    kwargs[name] = await stack.enter_async_context(made)
            yield await stack.enter_async_context(AsyncNanoBanana(base_url=base_url, **kwargs))


class _MemoryTransport(httpx.AsyncHTTPTransport):
    """httpx's own transport (its request and error mapping) over a `MemoryNetwork`."""

    def __init__(self, network: MemoryNetwork) -> None:
        super().__init__(verify=False)  # no TLS here: skip loading the CA bundle
        # httpx takes no network backend; its pool is swapped for one that has ours.
        self._pool = httpcore.AsyncConnectionPool(network_backend=network)


@contextlib.asynccontextmanager
async def memory_network() -> AsyncIterator[MemoryNetwork]:
    """A `MemoryNetwork` for the block; every server connection is cancelled at its end."""
    async with anyio.create_task_group() as group:
        try:
            yield MemoryNetwork(group)
        finally:
            group.cancel_scope.cancel()
