"""The way from `RedisLimits` to Redis: one connection, and the writes queued for it.

redis-py runs through its asyncio client on asyncio, or its blocking one in worker threads on
trio. The limiters' synchronous callbacks (a release in a ``finally``, a 409 learned) cannot
await, so they queue their writes on the `RedisLink`; the owner's background task, or the next
caller that needs Redis up to date, sends them in order. A `Connection` also listens to a
pub/sub channel (`Connection.listen`), on a connection of its own.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.abc
import anyio.to_thread

from .._errors import UsageError

__all__ = ["LISTEN_TIMEOUT", "Connection", "RedisLink", "Write", "on_asyncio"]

LISTEN_TIMEOUT = 5.0
"""On trio, the longest a listener's worker thread waits for a message before it looks again
(and so the longest closing waits for it, should its wake-up message be lost)."""


def on_asyncio() -> bool:
    """Whether an asyncio event loop runs this task (asyncio is asked, never imported)."""
    asyncio = sys.modules.get("asyncio")
    if asyncio is None:  # pragma: no cover - anyio imports it
        return False
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class Connection:
    """redis-py, through its asyncio client on asyncio, or its blocking one in threads on trio.

    redis-py's asyncio client runs only on asyncio's event loop; on trio, each command goes
    to a worker thread with the (thread-safe) blocking client instead.

    Args:
        url: The Redis URL.
    """

    def __init__(self, url: str) -> None:
        self.threaded = not on_asyncio()
        # The [redis] extra, imported only when a RedisLimits is entered.
        if self.threaded:
            import redis

            self._client: Any = redis.Redis.from_url(url)  # pyright: ignore[reportUnknownMemberType]
        else:
            import redis.asyncio

            self._client = redis.asyncio.Redis.from_url(url)  # pyright: ignore[reportUnknownMemberType]
        self._scripts: dict[str, Any] = {}
        self._wake_channel: str | None = None

    async def call(self, command: str, *args: Any, **kwargs: Any) -> Any:
        """Run one Redis command (a redis-py method name) and return its answer."""
        method = getattr(self._client, command)
        if self.threaded:
            return await anyio.to_thread.run_sync(lambda: method(*args, **kwargs))
        return await method(*args, **kwargs)

    async def script(self, source: str, keys: list[str], args: list[Any]) -> Any:
        """Run a Lua script (by its SHA once Redis has it) and return its answer."""
        script = self._scripts.get(source)
        if script is None:
            script = self._scripts[source] = self._client.register_script(source)
        if self.threaded:
            return await anyio.to_thread.run_sync(lambda: script(keys=keys, args=args))
        return await script(keys=keys, args=args)

    async def listen(
        self,
        channel: str,
        on_message: Callable[[], object],
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Call ``on_message`` for every message published on ``channel``, until cancelled.

        Started (for ``TaskGroup.start``) once Redis confirmed the subscription, so nothing
        published after that is missed. On trio the wait for a message runs in a worker
        thread, which `stop_listening` wakes so that cancelling the listener is prompt.
        """
        pubsub = self._client.pubsub()
        try:
            if self.threaded:
                wake = self._wake_channel = f"{channel}:wake:{uuid.uuid4().hex}"
                await anyio.to_thread.run_sync(lambda: pubsub.subscribe(channel, wake))
                await self._subscribed(pubsub, 2)
                task_status.started()
                while True:
                    message = await anyio.to_thread.run_sync(
                        lambda: pubsub.get_message(True, LISTEN_TIMEOUT)
                    )
                    await anyio.lowlevel.checkpoint()  # a cancelled listener stops here
                    if message is not None and message["channel"] != wake.encode():
                        on_message()
            else:
                await pubsub.subscribe(channel)
                await self._subscribed(pubsub, 1)
                task_status.started()
                while True:
                    if await pubsub.get_message(True, None) is not None:
                        on_message()
        finally:
            self._wake_channel = None
            with anyio.CancelScope(shield=True):
                if self.threaded:
                    await anyio.to_thread.run_sync(pubsub.close)
                else:
                    await pubsub.aclose()

    async def _subscribed(self, pubsub: Any, channels: int) -> None:
        """Wait for Redis to confirm ``channels`` subscriptions."""
        confirmed = 0
        while confirmed < channels:
            if self.threaded:
                message = await anyio.to_thread.run_sync(
                    lambda: pubsub.get_message(False, LISTEN_TIMEOUT)
                )
            else:
                message = await pubsub.get_message(False, LISTEN_TIMEOUT)
            if message is not None and message["type"] == "subscribe":
                confirmed += 1

    async def stop_listening(self) -> None:
        """Wake a listener's worker thread (on trio), so that cancelling it takes no wait."""
        if self._wake_channel is not None:
            await self.call("publish", self._wake_channel, "")

    async def aclose(self) -> None:
        """Close the connections."""
        if self.threaded:
            await anyio.to_thread.run_sync(self._client.close)
        else:
            await self._client.aclose()


Write = Callable[[Connection], Awaitable[Any]]
"""A queued write: sent with the connection once there is one."""


class RedisLink:
    """The connection of one `RedisLimits` (once entered) and the writes queued for it."""

    def __init__(self) -> None:
        self._connection: Connection | None = None
        self._pending: list[Write] = []
        self._flush_lock = anyio.Lock()
        self._queued: anyio.Event | None = None

    @property
    def is_open(self) -> bool:
        """Whether a connection is open."""
        return self._connection is not None

    def open(self, connection: Connection) -> None:
        """Use ``connection`` from now on."""
        self._connection = connection
        self._queued = anyio.Event()

    async def close(self) -> None:
        """Send what is queued, then close the connection (shielded from cancellation).

        Raises:
            UsageError: No connection is open.
        """
        connection = self.connection()
        with anyio.CancelScope(shield=True):
            await self.flush()
            self._connection = None
            await connection.aclose()

    def connection(self) -> Connection:
        """The open connection.

        Raises:
            UsageError: The owning `RedisLimits` is not entered.
        """
        if self._connection is None:
            raise UsageError("enter the RedisLimits (async with RedisLimits(url) as limits)")
        return self._connection

    def enqueue(self, write: Write) -> None:
        """Queue a write from a synchronous callback; it is sent soon, in order."""
        self._pending.append(write)
        if self._queued is not None:
            self._queued.set()

    async def wait_for_writes(self, timeout: float) -> None:
        """Wait until a write is queued, at most ``timeout`` seconds."""
        assert self._queued is not None
        with anyio.move_on_after(timeout):
            await self._queued.wait()
        self._queued = anyio.Event()

    async def flush(self) -> None:
        """Send the queued writes, in order; returns once they, and any in flight, are sent."""
        connection = self._connection
        if connection is None or not (self._pending or self._flush_lock.locked()):
            return
        # One flusher at a time, so a caller that flushes also waits for a write in flight;
        # shielded, so a cancelled caller does not drop a popped write (a release, say).
        with anyio.CancelScope(shield=True):
            async with self._flush_lock:
                while self._pending:
                    write = self._pending.pop(0)
                    await write(connection)
