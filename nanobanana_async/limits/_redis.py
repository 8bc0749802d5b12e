"""`RedisLimits`: one API key's limits shared by many processes through Redis.

Several processes (web workers, batch jobs on several machines) that share one API key share
one set of provider limits. Each keeps its own `AsyncNanoBanana`; all of them hand it the same
Redis, so that a 429 learned by one process paces all of them, a 429's ``retryAfter`` blocks
the endpoint for everyone, and the active-task slots are one pool (see ``_redis_scripts`` for
how the numbers are kept).

Interactive callers go first across processes too: a caller that waits for a slot (or, when
interactive, for a place in a create or poll window) is registered in Redis with its class,
and background work in any process yields to it; a release in any process wakes the waiters
of every process (pub/sub), so the slot is handed over at once.

The instance is an async context manager: entering it connects and starts two background
tasks: one renews this process's leases and sends what the client's synchronous callbacks
(a release in a ``finally``, a 409 learned) have queued, the other listens for releases. Only
anyio is used, so it runs on asyncio and on trio. ``redis`` (the ``[redis]`` extra) is
imported only when you enter it.
"""

from __future__ import annotations

import uuid
from types import TracebackType

import anyio
import anyio.abc

from .._errors import ConfigurationError, UsageError
from ._base import LimitsBase
from ._redis_active import RedisActiveTaskLimiter
from ._redis_endpoint import RedisEndpointLimiter
from ._redis_link import Connection, RedisLink
from ._redis_scripts import RedisKeys
from ._tiers import TierName

__all__ = ["WAITER_LEASE", "RedisLimits"]

WAITER_LEASE = 1.0
"""Seconds a waiter stays registered after its last try (at most the ``lease``, at least four
times the ``poll_interval``): how long a process that died while waiting holds others up."""


class RedisLimits(LimitsBase[RedisEndpointLimiter, RedisActiveTaskLimiter]):
    """Every limit of one API key, shared through Redis by all the processes that use the key.

    Enter it (``async with``) and hand it to each client::

        async with RedisLimits("redis://localhost:6379/0") as limits:
            async with AsyncNanoBanana(limits=limits) as client:
                ...

    A client given it not yet entered enters it for the client's own lifetime
    (``async with AsyncNanoBanana(limits=RedisLimits(url)) as client``) and exits it when it
    closes; enter it yourself to share it among several clients of this process (the
    clients then never exit it).

    Needs the ``[redis]`` extra (redis-py ≥ 5). The Redis twin of `Limits` (both implement
    `LimitsBackend` on the shared `LimitsBase`). The shared numbers (windows, the cap) are as
    last read from Redis; ``snapshot()``'s ``conflicts`` and ``rate_limited`` count what this
    process saw, and `shared_counts` has every process's.

    Attributes:
        create: The ``createTask`` limiter.
        query: The ``recordInfo`` limiter.
        active: The active-task slots.

    Args:
        url: The Redis URL (``redis://``, ``rediss://``, ``unix://``).
        key: The prefix of every Redis key used: one per API key.
        lease: Seconds a slot stays held without renewal, so the slots of a process that
            died come back within that time. Renewed every third of it while held. A waiter's
            registration is shorter (`WAITER_LEASE`, at most this), renewed by its tries.
        tier: Seed the numbers from this tier of the provider's table.
        max_active: A known active-task cap (overrides the tier's).
        poll_interval: The longest pause between two tries for a slot held elsewhere.

    Raises:
        ConfigurationError: The tier is unknown, or ``lease``, ``poll_interval`` or
            ``max_active`` is out of range.
    """

    def __init__(
        self,
        url: str,
        *,
        key: str = "nanobanana",
        lease: float = 30.0,
        tier: TierName | None = None,
        max_active: int | None = None,
        poll_interval: float = 0.05,
    ) -> None:
        if not lease > 0:
            raise ConfigurationError("lease", f"must be more than 0 seconds, got {lease}")
        if not poll_interval > 0:
            raise ConfigurationError(
                "poll_interval", f"must be more than 0 seconds, got {poll_interval}"
            )
        self.url = url
        self.key = key
        self.lease = float(lease)
        self.poll_interval = float(poll_interval)
        self.waiter_lease = max(min(self.lease, WAITER_LEASE), 4 * self.poll_interval)
        self.holder_id = uuid.uuid4().hex
        self._keys = RedisKeys(key)
        self._link = RedisLink()
        super().__init__(
            RedisEndpointLimiter(self._link, self._keys, "create", waiter_lease=self.waiter_lease),
            RedisEndpointLimiter(self._link, self._keys, "query", waiter_lease=self.waiter_lease),
            RedisActiveTaskLimiter(
                self._link,
                self._keys,
                lease=self.lease,
                poll_interval=self.poll_interval,
                holder_id=self.holder_id,
                waiter_lease=self.waiter_lease,
            ),
        )
        self._group: anyio.abc.TaskGroup | None = None
        self._stats: dict[str, int] = {}
        self.seed(tier=tier, max_active=max_active)

    @property
    def entered(self) -> bool:
        """Whether it is entered (connected) now."""
        return self._link.is_open

    async def __aenter__(self) -> RedisLimits:
        if self._link.is_open:
            raise UsageError("this RedisLimits is already entered")
        connection = Connection(self.url)
        try:
            await connection.call("ping")
        except BaseException:
            with anyio.CancelScope(shield=True):
                await connection.aclose()
            raise
        self._link.open(connection)
        group = anyio.create_task_group()
        await group.__aenter__()
        self._group = group
        try:
            # Listening before any caller waits, so that no release is missed.
            await group.start(
                connection.listen, self._keys.released, self.active.on_released_elsewhere
            )
            group.start_soon(self._background)
            await self._link.flush()
            await self.refresh()
        except BaseException:
            await self.aclose()  # its steps are shielded where they must be
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Give back this process's slots and close the connection. Safe to call twice."""
        group = self._group
        if group is None:
            return
        # The task group's scope must be the innermost when it exits: stop it first.
        self._group = None
        group.cancel_scope.cancel()
        try:
            with anyio.CancelScope(shield=True):
                await self._link.connection().stop_listening()
        finally:
            await group.__aexit__(None, None, None)
        self.active.release_all()
        await self._link.close()

    async def _background(self) -> None:
        """Send queued writes as they come; renew this process's leases every lease / 3."""
        renew_every = self.lease / 3
        next_renewal = anyio.current_time() + renew_every
        while True:
            await self._link.wait_for_writes(max(0.0, next_renewal - anyio.current_time()))
            await self._link.flush()
            if anyio.current_time() >= next_renewal:
                next_renewal = anyio.current_time() + renew_every
                await self.renew()
                await self.refresh()

    async def flush(self) -> None:
        """Send what this process's callbacks have queued now (the background task soon would).

        Raises:
            UsageError: Not entered.
        """
        self._link.connection()
        await self._link.flush()

    async def renew(self) -> None:
        """Extend the leases of every slot this process holds (done in the background)."""
        await self.active.renew()

    async def refresh(self) -> None:
        """Read what every process has learned (windows, the cap, the tier, the counts)."""
        await self.create.refresh()
        await self.query.refresh()
        await self.active.refresh()
        redis = self._link.connection()
        tier = await redis.call("hget", self._keys.state, "tier")
        if tier is not None:
            # Another process's word, taken as it is: the windows it moved with it are in
            # Redis already (read above), so nothing moves here.
            self._tier = bytes(tier).decode()
        stats = await redis.call("hgetall", self._keys.stats)
        self._stats = {k.decode() if isinstance(k, bytes) else k: int(v) for k, v in stats.items()}

    def _share_tier(self, tier: str) -> None:
        """Record the key's tier for every process (read by their next `refresh`)."""
        self._link.enqueue(lambda r: r.call("hset", self._keys.state, "tier", tier))

    def shared_counts(self) -> dict[str, int]:
        """The 409s and 429s every process reported, as of the last `refresh`."""
        return dict(self._stats)

    def __repr__(self) -> str:
        return f"<RedisLimits key={self.key!r} lease={self.lease:g}>"
