"""`RedisEndpointLimiter`: paces one endpoint of a key for every process that shares a Redis."""

from __future__ import annotations

import uuid

import anyio

from ._base import PacerBase, ToldWindow, base_margin
from ._probe import WINDOW_PROBE_REQUESTS
from ._protocols import Endpoint, Priority
from ._redis_link import Connection, RedisLink
from ._redis_pacing import PACE, RATE_LIMITED
from ._redis_scripts import TIME, RedisKeys

__all__ = ["RedisEndpointLimiter"]


class RedisEndpointLimiter(PacerBase):
    """Paces one endpoint of the key for every process that shares the Redis.

    The Redis twin of `EndpointLimiter`: both implement `EndpointPacer` on the shared
    `PacerBase`; this one keeps the windows, the send logs and a 429's block in Redis, so a
    429 learned by one process paces all of them. A 429 that names neither a wait nor a
    window blocks the endpoint for one second. The windows' probes live there too (see
    `PACE`): one process probes, every process paces by the result. Made by `RedisLimits`.

    Interactive callers go first across processes: one that must wait is registered in Redis
    until its turn (and ``waiter_lease`` more, so a dead process's waiter lapses), and a
    background request takes no place in a window that an interactive waiter needs.

    Args:
        link: The owner's way to Redis.
        keys: The names of the key's Redis keys.
        name: The endpoint.
        waiter_lease: Seconds an interactive waiter stays registered past its turn.
    """

    def __init__(
        self, link: RedisLink, keys: RedisKeys, name: Endpoint, *, waiter_lease: float
    ) -> None:
        super().__init__(name)
        self._link = link
        self._waiter_lease = waiter_lease
        self._waiters_key = keys.pace_waiters(name)
        self._windows_key = keys.windows(name)
        self._blocked_key = keys.blocked(name)
        self._log_prefix = keys.log_prefix(name)
        self._probes_key = keys.probes(name)
        self._probed_at: float | None = None
        self._stats_key = keys.stats
        self._windows: dict[float, int] = {}
        self._learned: dict[float, float] = {}
        # Margins of jitter: `base_margin`, times this after refusals.
        self._widening = 1.0

    @property
    def windows(self) -> dict[float, int]:
        """The known windows (as last read from Redis): seconds → requests allowed."""
        return dict(self._windows)

    @property
    def rate(self) -> float | None:
        """The sustained requests per second the key allows, or None if unlimited."""
        rates = [
            limit / (seconds + base_margin(seconds) * self._widening)
            for seconds, limit in self._windows.items()
        ]
        return min(rates) if rates else None

    @property
    def probed_ago(self) -> float | None:
        """Seconds since any process last probed a window upward (as last read), or None."""
        if self._probed_at is None:
            return None
        return max(0.0, anyio.current_time() - self._probed_at)

    async def refresh(self) -> None:
        """Read the windows every process has learned, and when they were probed, from Redis."""
        redis = self._link.connection()
        raw = await redis.call("hgetall", self._windows_key)
        self._windows = {float(k): int(v) for k, v in raw.items()}
        probes = await redis.call("hgetall", self._probes_key)
        probed = [float(v) for k, v in probes.items() if bytes(k).endswith(b":probed")]
        if probed:
            now = await redis.script(TIME, [], [])
            self._probed_at = anyio.current_time() - max(0.0, float(now) - max(probed))

    def learn_window(self, limit: int, seconds: float) -> None:
        """Record (for every process) that at most ``limit`` requests may go per ``seconds``."""
        limit = max(1, int(limit))
        self._windows[float(seconds)] = limit
        field = RedisKeys.window_field(seconds)
        self._link.enqueue(lambda r: r.call("hset", self._windows_key, field, limit))

    async def acquire(self, priority: Priority = "interactive") -> float:
        """Wait until a request may go by every process's count, and count it.

        An interactive caller that must wait is known to every process until it goes; a
        background one waits until the windows have a place for each interactive waiter of
        the key and for itself.

        Returns:
            The Redis time at which the request was let through.
        """
        redis = self._link.connection()
        member = uuid.uuid4().hex
        keys = [self._windows_key, self._blocked_key, self._probes_key, self._waiters_key]
        went = False
        try:
            while True:
                # A 429 just learned (queued by on_rate_limited) must be in Redis first.
                await self._link.flush()
                args = [
                    self._log_prefix,
                    member,
                    repr(self._widening),
                    priority,
                    repr(self._waiter_lease),
                ]
                wait, now = await redis.script(PACE, keys, args)
                wait = float(wait)
                if wait <= 0:
                    went = True
                    self.requests += 1
                    return float(now)
                await anyio.sleep(wait)
        finally:
            if priority == "interactive" and not went:
                # Given up (cancelled): no longer a waiter, for anyone.
                self._link.enqueue(lambda r: r.call("zrem", self._waiters_key, member))

    def on_success(self) -> None:
        """An accepted request: give back some of any margin widened by a refusal."""
        self._widening = max(1.0, self._widening * 0.99)

    def _learned_at(self, seconds: float) -> float | None:
        return self._learned.get(seconds)

    def _widen(self, seconds: float) -> None:
        # One widening for every window: the send logs in Redis share the multiplier.
        self._widening = min(10.0, self._widening * 2.0 + 1.0)

    def _learn_from_429(
        self, retry_after: float | None, told: ToldWindow | None, sent_at: float | None
    ) -> None:
        if told is not None:
            self._windows[told.seconds] = told.limit
            self._learned.setdefault(told.seconds, sent_at if sent_at is not None else 0.0)
        elif retry_after is None:
            retry_after = 1.0
        args = [
            "" if retry_after is None else repr(float(retry_after)),
            "" if told is None else str(told.limit),
            "" if told is None else RedisKeys.window_field(told.seconds),
            f"rate_limited_{self.name}",
            str(WINDOW_PROBE_REQUESTS),
            "" if sent_at is None else repr(sent_at),
        ]
        keys = [self._windows_key, self._blocked_key, self._probes_key, self._stats_key]

        async def send(redis: Connection) -> None:
            now = await redis.script(RATE_LIMITED, keys, args)
            if told is not None:
                # Dated by Redis, as the send times `acquire` returns are.
                self._learned[told.seconds] = float(now)

        self._link.enqueue(send)
