"""`RedisLimits`: one API key's limits shared by many processes through Redis.

Several processes (web workers, batch jobs on several machines) that share one API key share
one set of provider limits. Each keeps its own `AsyncNanoBanana`; all of them hand it the same
Redis, so that:

* each endpoint's known windows ``(limit, seconds)`` live in a Redis hash, so a 429 learned by
  one process paces all of them;
* pacing is a sliding-window log per window (a sorted set of send times), checked and appended
  atomically by a Lua script that reads the time from Redis ``TIME``, never from the hosts'
  clocks, and answers how long to wait; a 429's ``retryAfter`` blocks the endpoint for everyone;
* active-task slots are leased entries of a sorted set (member: the holder, score: the lease's
  end by Redis time), taken, renewed and given back by Lua scripts. Every take first drops the
  expired leases, so the slots of a process that died come back within ``lease`` seconds. The
  learned cap (a 409) is stored in Redis too.

The instance is an async context manager: entering it connects and starts the one background
task that renews this process's leases and sends what the client's synchronous callbacks
(a release in a ``finally``, a 409 learned) have queued. Only anyio is used, so it runs on
asyncio and on trio. ``redis`` (the ``[redis]`` extra) is imported only when you enter it.
"""

from __future__ import annotations

import math
import sys
import uuid
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

import anyio
import anyio.abc
import anyio.to_thread

from ._limits import Endpoint, LimitsSnapshot, tier_limits

__all__ = ["RedisLimits"]

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
"""

# KEYS: windows hash, blocked key. ARGV: log key prefix, member, margin multiplier.
# Returns {wait, now}: wait > 0 means nothing was counted; come back in wait seconds.
_PACE = (
    _NOW
    + """
local widen = tonumber(ARGV[3])
local wait = 0
local blocked = tonumber(redis.call('GET', KEYS[2]) or '0')
if blocked > now then wait = blocked - now end
local windows = redis.call('HGETALL', KEYS[1])
for i = 1, #windows, 2 do
  local seconds = tonumber(windows[i])
  local limit = tonumber(windows[i + 1])
  local log = ARGV[1] .. windows[i]
  local margin = math.min(0.02 * seconds, 0.05) * widen
  redis.call('ZREMRANGEBYSCORE', log, '-inf', now - seconds - margin)
  local n = redis.call('ZCARD', log)
  if n >= limit then
    local oldest = redis.call('ZRANGE', log, n - limit, n - limit, 'WITHSCORES')
    local w = tonumber(oldest[2]) + seconds + margin - now
    if w > wait then wait = w end
  end
end
if wait <= 0 then
  for i = 1, #windows, 2 do
    local seconds = tonumber(windows[i])
    local log = ARGV[1] .. windows[i]
    redis.call('ZADD', log, now, ARGV[2])
    redis.call('PEXPIRE', log, math.ceil(seconds * (1.25 + widen) * 1000) + 1000)
  end
  wait = 0
end
return {tostring(wait), tostring(now)}
"""
)

# KEYS: windows hash, blocked key, stats hash. ARGV: retry_after or '', limit or '',
# seconds field or '', stat field. Returns the time now.
_RATE_LIMITED = (
    _NOW
    + """
redis.call('HINCRBY', KEYS[3], ARGV[4], 1)
if ARGV[1] ~= '' then
  local until_ = now + tonumber(ARGV[1])
  local blocked = tonumber(redis.call('GET', KEYS[2]) or '0')
  if until_ > blocked then
    redis.call('SET', KEYS[2], tostring(until_), 'PX', math.ceil(tonumber(ARGV[1]) * 1000) + 1000)
  end
end
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], ARGV[3], ARGV[2]) end
return tostring(now)
"""
)

# KEYS: slots zset, running zset, state hash. ARGV: member, lease, default limit.
# Returns {taken (0/1), limit, known (0/1), held}.
_TAKE = (
    _NOW
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local limit = tonumber(redis.call('HGET', KEYS[3], 'limit') or ARGV[3])
local known = tonumber(redis.call('HGET', KEYS[3], 'known') or '0')
local held = redis.call('ZCARD', KEYS[1])
local taken = 0
if redis.call('ZSCORE', KEYS[1], ARGV[1]) or held < limit then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
  taken = 1
  held = redis.call('ZCARD', KEYS[1])
end
return {taken, limit, known, held}
"""
)

# KEYS: slots zset. Drops the expired leases; returns how many are held.
_COUNT = (
    _NOW
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZCARD', KEYS[1])
"""
)

# KEYS: slots zset, running zset. ARGV: lease, members... Extends the leases still held.
_RENEW = (
    _NOW
    + """
local until_ = now + tonumber(ARGV[1])
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], 'XX', until_, ARGV[i])
  redis.call('ZADD', KEYS[2], 'XX', until_, ARGV[i])
end
return 0
"""
)

# KEYS: slots zset, running zset, state hash, stats hash. ARGV: op, lease, default limit, arg.
# Ops: release (arg: member), running (arg: member), created, conflict (arg: limit or '').
_UPDATE = (
    _NOW
    + """
local op = ARGV[1]
if op == 'release' then
  redis.call('ZREM', KEYS[1], ARGV[4])
  redis.call('ZREM', KEYS[2], ARGV[4])
  return 0
end
if op == 'running' then
  if redis.call('ZSCORE', KEYS[1], ARGV[4]) then
    redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[4])
  end
  return 0
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local limit = tonumber(redis.call('HGET', KEYS[3], 'limit') or ARGV[3])
local known = redis.call('HGET', KEYS[3], 'known') == '1'
local running = redis.call('ZCARD', KEYS[2])
if op == 'created' then
  if not known and redis.call('ZCARD', KEYS[1]) >= limit and running >= limit - 1 then
    redis.call('HSET', KEYS[3], 'limit', limit + 1)
  end
  return 0
end
redis.call('HINCRBY', KEYS[4], 'conflicts', 1)
if ARGV[4] ~= '' then
  redis.call('HSET', KEYS[3], 'limit', ARGV[4], 'known', '1')
elseif running > 0 then
  redis.call('HSET', KEYS[3], 'limit', math.max(1, math.min(limit, running)), 'known', '1')
end
return 0
"""
)

# KEYS: state hash, windows hashes... ARGV: max_active or '', then (hash index, field, limit)*.
_SEED = """
if ARGV[1] ~= '' then redis.call('HSET', KEYS[1], 'limit', ARGV[1], 'known', '1') end
for i = 2, #ARGV, 3 do
  redis.call('HSET', KEYS[tonumber(ARGV[i])], ARGV[i + 1], ARGV[i + 2])
end
return 0
"""


def _on_asyncio() -> bool:
    """Whether an asyncio event loop runs this task (asyncio is asked, never imported)."""
    asyncio = sys.modules.get("asyncio")
    if asyncio is None:  # pragma: no cover - anyio imports it
        return False
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class _Connection:
    """redis-py, through its asyncio client on asyncio, or its blocking one in threads on trio.

    redis-py's asyncio client runs only on asyncio's event loop; on trio, each command goes
    to a worker thread with the (thread-safe) blocking client instead.
    """

    def __init__(self, url: str) -> None:
        self.threaded = not _on_asyncio()
        # The [redis] extra, imported only when a RedisLimits is entered.
        if self.threaded:
            import redis

            self._client: Any = redis.Redis.from_url(url)  # pyright: ignore[reportUnknownMemberType]
        else:
            import redis.asyncio

            self._client = redis.asyncio.Redis.from_url(url)  # pyright: ignore[reportUnknownMemberType]
        self._scripts: dict[str, Any] = {}

    async def call(self, command: str, *args: Any) -> Any:
        """Run one Redis command (a redis-py method name) and return its answer."""
        method = getattr(self._client, command)
        if self.threaded:
            return await anyio.to_thread.run_sync(lambda: method(*args))
        return await method(*args)

    async def script(self, source: str, keys: list[str], args: list[Any]) -> Any:
        """Run a Lua script (by its SHA once Redis has it) and return its answer."""
        script = self._scripts.get(source)
        if script is None:
            script = self._scripts[source] = self._client.register_script(source)
        if self.threaded:
            return await anyio.to_thread.run_sync(lambda: script(keys=keys, args=args))
        return await script(keys=keys, args=args)

    async def aclose(self) -> None:
        """Close the connections."""
        if self.threaded:
            await anyio.to_thread.run_sync(self._client.close)
        else:
            await self._client.aclose()


_Op = Callable[[_Connection], Awaitable[Any]]


def _field(seconds: float) -> str:
    """A window's name in Redis: the same for every process (``1.0``, ``60.0``, ``0.2``)."""
    return repr(float(seconds))


class RedisEndpointLimiter:
    """Paces one endpoint of the key for every process that shares the Redis.

    Made by `RedisLimits`; its interface is that of `EndpointLimiter`.
    """

    def __init__(self, owner: RedisLimits, name: Endpoint) -> None:
        self.name = name
        self._owner = owner
        prefix = f"{owner.key}:{name}"
        self._windows_key = f"{prefix}:windows"
        self._blocked_key = f"{prefix}:blocked"
        self._log_prefix = f"{prefix}:log:"
        self._windows: dict[float, int] = {}
        self._learned_at: dict[float, float] = {}
        # Margins of jitter: min(2 % of the window, 50 ms), times this after refusals.
        self._widen = 1.0
        self.rate_limited = 0
        self.requests = 0

    @property
    def windows(self) -> dict[float, int]:
        """The known windows (as last read from Redis): seconds → requests allowed."""
        return dict(self._windows)

    @property
    def rate(self) -> float | None:
        """The sustained requests per second the key allows, or None if unlimited."""
        rates = [
            limit / (seconds + min(0.02 * seconds, 0.05) * self._widen)
            for seconds, limit in self._windows.items()
        ]
        return min(rates) if rates else None

    def _adopt(self, raw: dict[Any, Any]) -> None:
        self._windows = {float(k): int(v) for k, v in raw.items()}

    def learn_window(self, limit: int, seconds: float) -> None:
        """Record (for every process) that at most ``limit`` requests may go per ``seconds``."""
        limit = max(1, int(limit))
        self._windows[float(seconds)] = limit
        self._owner._enqueue(lambda r: r.call("hset", self._windows_key, _field(seconds), limit))

    async def acquire(self) -> float:
        """Wait until a request may go by every process's count, and count it.

        Returns:
            The Redis time at which the request was let through.
        """
        redis = await self._owner._ready()
        member = uuid.uuid4().hex
        while True:
            # A 429 just learned (queued by on_rate_limited) must be in Redis first.
            await self._owner._flush()
            wait, now = await redis.script(
                _PACE,
                [self._windows_key, self._blocked_key],
                [self._log_prefix, member, repr(self._widen)],
            )
            wait = float(wait)
            if wait <= 0:
                self.requests += 1
                return float(now)
            await anyio.sleep(wait)

    def on_success(self) -> None:
        """An accepted request: give back some of any margin widened by a refusal."""
        self._widen = max(1.0, self._widen * 0.99)

    def on_rate_limited(
        self,
        retry_after: float | None,
        *,
        limit: int | None = None,
        window: float | None = None,
        sent_at: float | None = None,
    ) -> None:
        """Learn from a 429, for every process: block until ``retry_after``, store the window.

        A 429 that says neither how long to wait nor which window it hit blocks the endpoint
        for one second.
        """
        self.rate_limited += 1
        known = limit is not None and window is not None and limit > 0 and window > 0
        if known:
            assert limit is not None
            assert window is not None
            seconds = float(window)
            if (
                self._windows.get(seconds) == limit
                and sent_at is not None
                and sent_at > self._learned_at.get(seconds, math.inf)
            ):
                # Paced by this very window and still refused: allow for more jitter.
                self._widen = min(10.0, self._widen * 2.0 + 1.0)
            self._windows[seconds] = int(limit)
            self._learned_at.setdefault(seconds, sent_at if sent_at is not None else 0.0)
        elif retry_after is None:
            retry_after = 1.0
        args = [
            "" if retry_after is None else repr(float(retry_after)),
            str(int(limit)) if known and limit is not None else "",
            _field(window) if known and window is not None else "",
            f"rate_limited_{self.name}",
        ]

        async def send(redis: _Connection) -> None:
            now = await redis.script(
                _RATE_LIMITED, [self._windows_key, self._blocked_key, self._owner._stats_key], args
            )
            if known and window is not None:
                self._learned_at[float(window)] = float(now)

        self._owner._enqueue(send)


class RedisActiveTaskLimiter:
    """The key's active-task slots, shared by every process through leased Redis entries.

    Made by `RedisLimits`; its interface is that of `ActiveTaskLimiter`.
    """

    def __init__(self, owner: RedisLimits, limit: int | None, initial: int = 2) -> None:
        self._owner = owner
        self._slots_key = f"{owner.key}:active:slots"
        self._running_key = f"{owner.key}:active:running"
        self._state_key = f"{owner.key}:active:state"
        self._default = limit if limit is not None else initial
        self._limit = self._default
        self.known = limit is not None
        self._members: dict[object, str] = {}
        self._running: set[object] = set()
        self._waiting = 0
        self._held_anywhere = 0
        self.conflicts = 0

    @property
    def limit(self) -> int:
        """The cap, as last read from Redis."""
        return self._limit

    @property
    def active(self) -> int:
        """Slots this process holds now."""
        return len(self._members)

    @property
    def held_anywhere(self) -> int:
        """Slots held by every process, as last read from Redis."""
        return self._held_anywhere

    @property
    def running(self) -> int:
        """Slots of this process whose task the provider accepted."""
        return len(self._running)

    @property
    def waiting(self) -> int:
        """Callers of this process waiting for a slot."""
        return self._waiting

    def members(self) -> list[str]:
        """The Redis members of the slots this process holds."""
        return list(self._members.values())

    def _keys(self) -> list[str]:
        return [self._slots_key, self._running_key, self._state_key, self._owner._stats_key]

    async def _take(self, redis: _Connection, member: str) -> bool:
        taken, limit, known, held = await redis.script(
            _TAKE, self._keys()[:3], [member, repr(self._owner.lease), self._default]
        )
        self._limit = int(limit)
        self.known = bool(int(known)) or self.known
        self._held_anywhere = int(held)
        return bool(int(taken))

    async def acquire(self, holder: object) -> None:
        """Wait for a slot free across every process and lease it for ``holder``.

        Polls with a short backoff (reset whenever this process releases a slot) until the
        caller's cancel scope ends the wait.
        """
        redis = await self._owner._ready()
        member = f"{self._owner.holder_id}:{uuid.uuid4().hex}"
        delay = self._owner.poll_interval / 8
        self._waiting += 1
        try:
            while True:
                await self._owner._flush()
                if await self._take(redis, member):
                    self._members[holder] = member
                    return
                released = self._owner._released
                with anyio.move_on_after(delay):
                    await released.wait()
                delay = min(self._owner.poll_interval, delay * 2)
        finally:
            self._waiting -= 1

    def holds(self, holder: object) -> bool:
        """Whether ``holder`` holds a slot now."""
        return holder in self._members

    def _update(self, op: str, arg: str = "") -> None:
        args = [op, repr(self._owner.lease), self._default, arg]
        self._owner._enqueue(lambda r: r.script(_UPDATE, self._keys(), args))

    def mark_running(self, holder: object) -> None:
        """``holder``'s task was accepted by the provider and now counts as running."""
        member = self._members.get(holder)
        if member is not None:
            self._running.add(holder)
            self._update("running", member)

    def set_limit(self, limit: int) -> None:
        """Fix the cap, for every process."""
        if limit < 1:
            raise ValueError(f"max_active must be at least 1, got {limit}")
        self.known = True
        self._limit = self._default = limit

    def release(self, holder: object) -> None:
        """Give ``holder``'s slot back (to every process); nothing if it holds none."""
        member = self._members.pop(holder, None)
        if member is None:
            return
        self._running.discard(holder)
        self._update("release", member)
        self._owner._wake()

    def on_created(self) -> None:
        """A create was accepted: while the cap is unknown, grow it when every slot runs."""
        if not self.known:
            self._update("created")

    def on_conflict(self, limit: int | None = None) -> None:
        """A 409: store the cap seen (the body's, or the tasks running everywhere)."""
        self.conflicts += 1
        self._update("conflict", "" if limit is None or limit <= 0 else str(int(limit)))

    async def wait_for_release(self, timeout: float) -> bool:
        """Wait until the slots held everywhere fall, at most ``timeout`` seconds.

        Returns:
            True if some slot was released, False on timeout.
        """
        redis = await self._owner._ready()
        await self._owner._flush()
        before = int(await redis.script(_COUNT, [self._slots_key], []))
        with anyio.move_on_after(timeout):
            while True:
                released = self._owner._released
                with anyio.move_on_after(self._owner.poll_interval):
                    await released.wait()
                held = await redis.script(_COUNT, [self._slots_key], [])
                if int(held) < before:
                    return True
        return False


class RedisLimits:
    """Every limit of one API key, shared through Redis by all the processes that use the key.

    Enter it (``async with``) before use, and hand it to each client::

        async with RedisLimits("redis://localhost:6379/0") as limits:
            async with AsyncNanoBanana(limits=limits) as client:
                ...

    Needs the ``[redis]`` extra (redis-py ≥ 5). The interface is that of `Limits`.

    Args:
        url: The Redis URL (``redis://``, ``rediss://``, ``unix://``).
        key: The prefix of every Redis key used: one per API key.
        lease: Seconds a slot stays held without renewal, so the slots of a process that
            died come back within that time. Renewed every third of it while held.
        tier: Seed the numbers from this tier of the provider's table.
        max_active: A known active-task cap (overrides the tier's).
        poll_interval: The longest pause between two tries for a slot held elsewhere.

    Raises:
        ValueError: The tier is unknown, or ``lease`` or ``max_active`` is out of range.
    """

    def __init__(
        self,
        url: str,
        *,
        key: str = "nanobanana",
        lease: float = 30.0,
        tier: str | None = None,
        max_active: int | None = None,
        poll_interval: float = 0.05,
    ) -> None:
        if not lease > 0:
            raise ValueError(f"lease must be more than 0 seconds, got {lease}")
        if not poll_interval > 0:
            raise ValueError(f"poll_interval must be more than 0 seconds, got {poll_interval}")
        self.url = url
        self.key = key
        self.lease = float(lease)
        self.poll_interval = float(poll_interval)
        self.holder_id = uuid.uuid4().hex
        self._stats_key = f"{key}:stats"
        self.create = RedisEndpointLimiter(self, "create")
        self.query = RedisEndpointLimiter(self, "query")
        self.active = RedisActiveTaskLimiter(self, None)
        self._redis: _Connection | None = None
        self._pending: list[_Op] = []
        self._flush_lock = anyio.Lock()
        self._wake_worker: anyio.Event | None = None
        self._released_event: anyio.Event | None = None
        self._group: anyio.abc.TaskGroup | None = None
        self._stats: dict[str, int] = {}
        self.seed(tier=tier, max_active=max_active)

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> RedisLimits:
        if self._redis is not None:
            raise RuntimeError("this RedisLimits is already entered")
        redis = _Connection(self.url)
        try:
            await redis.call("ping")
        except BaseException:
            with anyio.CancelScope(shield=True):
                await redis.aclose()
            raise
        self._redis = redis
        self._wake_worker = anyio.Event()
        group = anyio.create_task_group()
        await group.__aenter__()
        self._group = group
        group.start_soon(self._background)
        await self._flush()
        await self.refresh()
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
        redis, group = self._redis, self._group
        if redis is None or group is None:
            return
        # The task group's scope must be the innermost when it exits: stop it first.
        self._group = None
        group.cancel_scope.cancel()
        await group.__aexit__(None, None, None)
        with anyio.CancelScope(shield=True):
            for holder in list(self.active._members):
                self.active.release(holder)
            await self._flush()
            self._redis = None
            await redis.aclose()

    async def _ready(self) -> _Connection:
        if self._redis is None:
            raise RuntimeError("enter the RedisLimits (async with RedisLimits(url) as limits)")
        return self._redis

    @property
    def _released(self) -> anyio.Event:
        if self._released_event is None:
            self._released_event = anyio.Event()
        return self._released_event

    def _wake(self) -> None:
        if self._released_event is not None:
            self._released_event.set()
            self._released_event = None

    def _enqueue(self, op: _Op) -> None:
        """Queue a write from a synchronous callback; the background task sends it soon."""
        self._pending.append(op)
        if self._wake_worker is not None:
            self._wake_worker.set()

    async def _flush(self) -> None:
        """Send the queued writes, in order."""
        redis = self._redis
        if redis is None or not self._pending:
            return
        # One flusher at a time, so a caller that flushes also waits for a write in flight;
        # shielded, so a cancelled caller does not drop a popped write (a release, say).
        with anyio.CancelScope(shield=True):
            async with self._flush_lock:
                while self._pending:
                    op = self._pending.pop(0)
                    await op(redis)

    async def _background(self) -> None:
        """Send queued writes as they come; renew this process's leases every lease / 3."""
        renew_every = self.lease / 3
        next_renewal = anyio.current_time() + renew_every
        while True:
            assert self._wake_worker is not None
            with anyio.move_on_after(max(0.0, next_renewal - anyio.current_time())):
                await self._wake_worker.wait()
            self._wake_worker = anyio.Event()
            await self._flush()
            if anyio.current_time() >= next_renewal:
                next_renewal = anyio.current_time() + renew_every
                await self.renew()
                await self.refresh()

    async def renew(self) -> None:
        """Extend the leases of every slot this process holds (done in the background)."""
        redis = await self._ready()
        members = self.active.members()
        if members:
            active = self.active
            await redis.script(
                _RENEW, [active._slots_key, active._running_key], [repr(self.lease), *members]
            )

    async def refresh(self) -> None:
        """Read what every process has learned (windows, the cap, the counts) from Redis."""
        redis = await self._ready()
        self.create._adopt(await redis.call("hgetall", self.create._windows_key))
        self.query._adopt(await redis.call("hgetall", self.query._windows_key))
        state = await redis.call("hgetall", self.active._state_key)
        if b"limit" in state:
            self.active._limit = int(state[b"limit"])
        self.active.known = state.get(b"known") == b"1" or self.active.known
        stats = await redis.call("hgetall", self._stats_key)
        self._stats = {k.decode() if isinstance(k, bytes) else k: int(v) for k, v in stats.items()}
        self.active._held_anywhere = int(await redis.call("zcard", self.active._slots_key))

    # -- the Limits interface ----------------------------------------------------------------

    def seed(self, *, tier: str | None = None, max_active: int | None = None) -> None:
        """Start from known numbers, for every process: a tier's row and/or an active cap.

        Raises:
            ValueError: The tier is unknown or ``max_active`` is below 1.
        """
        args: list[str] = []
        if tier is not None:
            preset = tier_limits(tier)
            for index, limiter, (per_second, per_minute) in (
                (2, self.create, preset.create),
                (3, self.query, preset.query),
            ):
                for limit, seconds in ((per_second, 1.0), (per_minute, 60.0)):
                    limiter._windows[seconds] = limit
                    args += [str(index), _field(seconds), str(limit)]
            if max_active is None:
                max_active = preset.active
        if max_active is not None:
            self.active.set_limit(max_active)
        if not args and max_active is None:
            return
        keys = [self.active._state_key, self.create._windows_key, self.query._windows_key]
        values = ["" if max_active is None else str(max_active), *args]
        self._enqueue(lambda r: r.script(_SEED, keys, values))

    def endpoint(self, name: Endpoint) -> RedisEndpointLimiter:
        """The limiter of one endpoint."""
        return self.create if name == "create" else self.query

    def snapshot(self) -> LimitsSnapshot:
        """What is known now (shared numbers as last read from Redis; counts of every process).

        ``conflicts`` and ``rate_limited`` count what this process saw; `shared_counts`
        has every process's.
        """
        return LimitsSnapshot(
            max_active=self.active.limit,
            max_active_known=self.active.known,
            active=self.active.active,
            create_windows=self.create.windows,
            query_windows=self.query.windows,
            create_rate=self.create.rate,
            query_rate=self.query.rate,
            conflicts=self.active.conflicts,
            rate_limited=self.create.rate_limited + self.query.rate_limited,
        )

    def shared_counts(self) -> dict[str, int]:
        """The 409s and 429s every process reported, as of the last `refresh`."""
        return dict(self._stats)

    def __repr__(self) -> str:
        return f"<RedisLimits key={self.key!r} lease={self.lease:g}>"
