"""Where `RedisLimits` keeps a key's limits in Redis, and the Lua scripts that change them.

Every script reads the time from Redis ``TIME``, never from the hosts' clocks, and runs
atomically, so that every process sharing the key sees one count:

* `PACE` checks and appends to the sliding-window logs (a sorted set of send times per
  window) and answers how long to wait; `RATE_LIMITED` stores a 429's window and block;
* `TAKE`, `RENEW`, `COUNT` and `UPDATE` keep the active-task slots: leased entries of a sorted
  set (member: the holder, score: the lease's end), expired leases dropped before each take.
  `UPDATE`'s ``created`` and ``conflict`` ops apply the rules of `grown_cap` and
  `cap_after_conflict` (in ``_base``) to the slots of every process.
"""

from __future__ import annotations

__all__ = ["COUNT", "PACE", "RATE_LIMITED", "RENEW", "TAKE", "UPDATE", "RedisKeys"]


class RedisKeys:
    """The names of the Redis keys of one API key's limits.

    Attributes:
        prefix: The prefix of every key (one per API key).
        stats: Hash: the 409s and 429s every process reported.
        slots: Sorted set: the active-task slots held, scored by the end of their lease.
        running: Sorted set: the slots whose task runs on the provider, scored likewise.
        state: Hash: the learned cap (``limit``) and whether it is known (``known``).

    Args:
        prefix: The prefix of every key.
    """

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.stats = f"{prefix}:stats"
        self.slots = f"{prefix}:active:slots"
        self.running = f"{prefix}:active:running"
        self.state = f"{prefix}:active:state"

    def windows(self, endpoint: str) -> str:
        """Hash: an endpoint's known windows, `window_field` → requests allowed."""
        return f"{self.prefix}:{endpoint}:windows"

    def blocked(self, endpoint: str) -> str:
        """String: the Redis time until which a 429 blocks the endpoint."""
        return f"{self.prefix}:{endpoint}:blocked"

    def log_prefix(self, endpoint: str) -> str:
        """The prefix of an endpoint's send logs, one sorted set per `window_field`."""
        return f"{self.prefix}:{endpoint}:log:"

    @staticmethod
    def window_field(seconds: float) -> str:
        """A window's name in Redis: the same for every process (``1.0``, ``60.0``, ``0.2``)."""
        return repr(float(seconds))


_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
"""

# The margin is that of `base_margin`, times the pacer's widening.
PACE = (
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
"""KEYS: windows hash, blocked key. ARGV: log key prefix, member, margin multiplier.

Returns ``{wait, now}``: wait > 0 means nothing was counted; come back in wait seconds.
"""

RATE_LIMITED = (
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
"""KEYS: windows hash, blocked key, stats hash.

ARGV: retry_after or '', limit or '', window field or '', stat field. Returns the time now.
"""

TAKE = (
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
"""KEYS: slots, running, state. ARGV: member, lease, default limit.

Returns ``{taken (0/1), limit, known (0/1), held}``.
"""

COUNT = (
    _NOW
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZCARD', KEYS[1])
"""
)
"""KEYS: slots. Drops the expired leases; returns how many are held."""

RENEW = (
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
"""KEYS: slots, running. ARGV: lease, members... Extends the leases still held."""

UPDATE = (
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
"""KEYS: slots, running, state, stats. ARGV: op, lease, default limit, arg.

Ops: ``release`` (arg: member), ``running`` (arg: member), ``created`` (grows the cap as
`grown_cap` does), ``conflict`` (arg: the stated cap or ''; learns as `cap_after_conflict`).
"""
