"""Where `RedisLimits` keeps a key's limits in Redis, and the Lua scripts that change them.

Every script reads the time from Redis ``TIME``, never from the hosts' clocks, and runs
atomically, so that every process sharing the key sees one count:

* `PACE` and `RATE_LIMITED` pace the endpoints (in ``_redis_pacing``);
* `TAKE`, `RENEW`, `COUNT` and `UPDATE` keep the active-task slots: leased entries of a sorted
  set (member: the holder, score: the lease's end), expired leases dropped before each take.
  `UPDATE`'s ``created`` and ``conflict`` ops apply the rules of `grown_cap` and
  `cap_after_conflict` (in ``_base``) to the slots of every process, and `TAKE` and `UPDATE`
  keep the cap's probe schedule, the rules of `ProbeSchedule` (in ``_probe``) for every
  process at once.
"""

from __future__ import annotations

__all__ = ["COUNT", "NOW", "RENEW", "TAKE", "TIME", "UPDATE", "RedisKeys"]


class RedisKeys:
    """The names of the Redis keys of one API key's limits.

    Attributes:
        prefix: The prefix of every key (one per API key).
        stats: Hash: the 409s and 429s every process reported.
        slots: Sorted set: the active-task slots held, scored by the end of their lease.
        running: Sorted set: the slots whose task runs on the provider, scored likewise.
        state: Hash: the learned cap (``limit``), whether it is known (``known``), and its
            probe schedule (see `TAKE`).
        probe: String: the lease of the active-task probe in flight (its holder's member).

    Args:
        prefix: The prefix of every key.
    """

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.stats = f"{prefix}:stats"
        self.slots = f"{prefix}:active:slots"
        self.running = f"{prefix}:active:running"
        self.state = f"{prefix}:active:state"
        self.probe = f"{prefix}:active:probe"

    def windows(self, endpoint: str) -> str:
        """Hash: an endpoint's known windows, `window_field` → requests allowed."""
        return f"{self.prefix}:{endpoint}:windows"

    def blocked(self, endpoint: str) -> str:
        """String: the Redis time until which a 429 blocks the endpoint."""
        return f"{self.prefix}:{endpoint}:blocked"

    def probes(self, endpoint: str) -> str:
        """Hash: the probe schedules of an endpoint's windows (see `PACE`)."""
        return f"{self.prefix}:{endpoint}:probes"

    def log_prefix(self, endpoint: str) -> str:
        """The prefix of an endpoint's send logs, one sorted set per `window_field`."""
        return f"{self.prefix}:{endpoint}:log:"

    @staticmethod
    def window_field(seconds: float) -> str:
        """A window's name in Redis: the same for every process (``1.0``, ``60.0``, ``0.2``)."""
        return repr(float(seconds))


NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
"""
"""The start of every script: ``now``, Redis's time (seconds)."""

TIME = NOW + "return tostring(now)\n"
"""Returns Redis's time now (seconds), the clock every script dates by."""

# The probe schedule of the active-task cap (`ProbeSchedule`, `ActiveTaskLimiter`), kept in
# the state hash for every process: ``base`` (the cap before the probe in flight), ``interval``,
# ``next_at``, ``step``, ``probed_at``, ``outcome``, ``key_cap`` (the cap a 409 named) and
# ``ceiling`` (a user's ``max_active``). ``unit`` is the caller's seconds between two creates
# at the cap; intervals are 2 units (neighbours' room) or 4 (an upgrade) after a tighten,
# doubled by each refused probe up to 12, within 0.01 s and 600 s.
_PROBE = """
local function clamp(x) return math.min(600, math.max(0.01, x)) end
local function hnum(key, field)
  local v = redis.call('HGET', key, field)
  if v then return tonumber(v) end
  return nil
end
local function probe_start(limit, key_cap, unit)
  if key_cap and limit < key_cap then return clamp(2 * unit) end
  return clamp(4 * unit)
end
"""

TAKE = (
    NOW
    + _PROBE
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local limit = tonumber(redis.call('HGET', KEYS[3], 'limit') or ARGV[3])
local known = tonumber(redis.call('HGET', KEYS[3], 'known') or '0')
local held = redis.call('ZCARD', KEYS[1])
local unit = tonumber(ARGV[4])
local taken = 0
local function take()
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
  taken = 1
  held = redis.call('ZCARD', KEYS[1])
end
if redis.call('ZSCORE', KEYS[1], ARGV[1]) or held < limit then take() end
local key_cap = hnum(KEYS[3], 'key_cap')
if taken == 0 and known == 1 then
  local base = hnum(KEYS[3], 'base')
  if base and redis.call('EXISTS', KEYS[4]) == 0 then
    -- The prober's lease ran out before its probe was settled: give the probe up.
    limit = base
    local interval = hnum(KEYS[3], 'interval') or probe_start(limit, key_cap, unit)
    redis.call('HSET', KEYS[3], 'limit', limit, 'next_at', now + interval, 'outcome', 'unused')
    redis.call('HDEL', KEYS[3], 'base')
    base = nil
  end
  local ceiling = hnum(KEYS[3], 'ceiling')
  local next_at = hnum(KEYS[3], 'next_at')
  if not next_at then
    -- The first demand at a known cap starts the schedule.
    next_at = now + probe_start(limit, key_cap, unit)
    redis.call('HSET', KEYS[3], 'next_at', next_at)
  end
  if not base and now >= next_at and (not ceiling or limit < ceiling)
      and redis.call('SET', KEYS[4], ARGV[1], 'NX', 'PX', math.ceil(tonumber(ARGV[5]) * 1000)) then
    local raised = limit + (hnum(KEYS[3], 'step') or 1)
    if key_cap and limit < key_cap then raised = math.min(raised, key_cap) end
    if ceiling then raised = math.min(raised, ceiling) end
    redis.call('HSET', KEYS[3], 'limit', raised, 'base', limit, 'probed_at', now)
    limit = raised
    if held < limit then take() end
  end
end
local probed_at = hnum(KEYS[3], 'probed_at')
local ago = -1
if probed_at then ago = now - probed_at end
return {taken, limit, known, held, key_cap or 0, tostring(ago)}
"""
)
"""KEYS: slots, running, state, probe lease. ARGV: member, lease, default limit, unit, lease
of a probe (seconds).

A caller that finds no free slot may start a probe (one slot more, for every process) when the
schedule allows: the probe lease (``SET NX PX``) makes it one probe at a time, and expires so
that a process that died mid-probe cannot wedge the others. Returns ``{taken (0/1), limit,
known (0/1), held, key_cap (0: none), seconds since the last probe (-1: none)}``.
"""

COUNT = (
    NOW
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZCARD', KEYS[1])
"""
)
"""KEYS: slots. Drops the expired leases; returns how many are held."""

RENEW = (
    NOW
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
    NOW
    + _PROBE
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
local unit = tonumber(ARGV[6])
local key_cap = hnum(KEYS[3], 'key_cap')
local base = hnum(KEYS[3], 'base')
if op == 'created' then
  if not known then
    if redis.call('ZCARD', KEYS[1]) >= limit and running >= limit - 1 then
      redis.call('HSET', KEYS[3], 'limit', limit + 1)
    end
  elseif base and running > base then
    -- The probe was accepted: keep the raise, probe again at once with a larger step.
    -- The interval stays (an acceptance may be a fluke of a task that ended unseen).
    -- The step grows only below the key's named cap (past it, a fluke must not compound).
    local step = hnum(KEYS[3], 'step') or 1
    if key_cap and base < key_cap then step = math.min(step * 2, 64) end
    local interval = hnum(KEYS[3], 'interval') or probe_start(limit, key_cap, unit)
    local next_at = now
    if key_cap and limit > key_cap then
      redis.call('HSET', KEYS[3], 'key_cap', limit)
    elseif key_cap and base < key_cap and limit == key_cap then
      step = 1
      interval = clamp(4 * unit)
      next_at = now + interval
    end
    redis.call('HSET', KEYS[3], 'step', step, 'interval', interval, 'next_at', next_at,
      'outcome', 'raised')
    redis.call('HDEL', KEYS[3], 'base')
    redis.call('DEL', KEYS[5])
  end
  return 0
end
redis.call('HINCRBY', KEYS[4], 'conflicts', 1)
local before = limit
local cap = nil
local upgraded = ARGV[4] ~= '' and key_cap and tonumber(ARGV[4]) > key_cap
if ARGV[4] ~= '' then
  local others = 0
  if ARGV[5] ~= '' then
    others = math.max(0, tonumber(ARGV[5]) - math.max(0, redis.call('ZCARD', KEYS[1]) - 1))
  end
  cap = math.max(1, tonumber(ARGV[4]) - others)
  key_cap = tonumber(ARGV[4])
  redis.call('HSET', KEYS[3], 'key_cap', key_cap)
elseif running > 0 then
  cap = math.max(1, math.min(limit, running))
end
if cap then
  local ceiling = hnum(KEYS[3], 'ceiling')
  if ceiling then cap = math.min(cap, ceiling) end
  redis.call('HSET', KEYS[3], 'limit', cap, 'known', '1')
  limit = cap
end
local interval = hnum(KEYS[3], 'interval') or probe_start(limit, key_cap, unit)
if base then
  redis.call('HSET', KEYS[3], 'outcome', 'refused')
  redis.call('HDEL', KEYS[3], 'base')
  redis.call('DEL', KEYS[5])
end
if upgraded or (not base and cap and cap < before) then
  -- The cap moved for sure: the schedule starts again.
  interval = probe_start(limit, key_cap, unit)
  redis.call('HSET', KEYS[3], 'interval', interval, 'next_at', now + interval, 'step', 1)
elseif base then
  -- The probe met a 409: back off.
  interval = math.min(clamp(12 * unit), interval * 2)
  redis.call('HSET', KEYS[3], 'interval', interval, 'next_at', now + interval, 'step', 1)
else
  local next_at = math.max(hnum(KEYS[3], 'next_at') or now, now + interval)
  redis.call('HSET', KEYS[3], 'next_at', next_at)
end
return 0
"""
)
"""KEYS: slots, running, state, stats, probe lease. ARGV: op, lease, default limit, arg, the
key's active tasks named by a 409 (or ''), unit.

Ops: ``release`` (arg: member), ``running`` (arg: member), ``created`` (grows the cap as
`grown_cap` does while it is learned; settles a probe in flight as accepted), ``conflict``
(arg: the stated cap or ''; learns as `cap_after_conflict`, and a probe in flight backs off).
"""
