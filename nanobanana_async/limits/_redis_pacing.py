"""The Lua scripts that pace an endpoint of a key for every process that shares a Redis.

Like every script of `RedisLimits` (see ``_redis_scripts``, which names the keys), they read
the time from Redis ``TIME`` and run atomically:

* `PACE` checks and appends to the sliding-window logs (a sorted set of send times per
  window) and answers how long to wait, interactive callers first across processes: one
  told to wait is registered (in a sorted set scored by its turn and a lease), and a
  background request takes no place in a window that a registered waiter needs;
* `RATE_LIMITED` stores a 429's window and block.
"""

from __future__ import annotations

from ._probe import MAX_INTERVAL, MIN_INTERVAL, WINDOW_PROBE_REQUESTS
from ._redis_scripts import NOW, lua_numbers
from ._window import BINDING, LONGEST_WINDOWS, ROUND_TRIPS_APART, WINDOWS_PER_ENDPOINT

__all__ = ["PACE", "RATE_LIMITED"]

# The probes of an endpoint's windows (`Window`, `EndpointLimiter`), kept in one hash per
# endpoint for every process, fields ``<window>:<name>``: ``base`` (the limit before the probe
# in flight), ``at`` (when it began), ``used`` (when more than ``base`` went in one window),
# ``next``, ``interval``, ``step``, ``probed``, ``owed`` (requests to pass before the next
# probe). Scripts run atomically, so one probe of a window goes at a time, and it settles by
# time (accepted a window after it was used, given up when unused), so no process has to live
# to settle it. Intervals: 2 windows after a tighten, doubled by each refused probe up to
# max(`LONGEST_WINDOWS`, 100 / limit) windows, within `MIN_INTERVAL` and `MAX_INTERVAL` (the
# rules of `probe_start` and `probe_longest`), and each probe (the first, the one after a
# refused probe or after a 429 told a new limit) waits for `WINDOW_PROBE_REQUESTS` requests
# of any process. Only a window that binds the endpoint's
# sustained rate (within `BINDING` of the tightest) is probed, as in `EndpointLimiter`.
_WINDOW_PROBE = (
    lua_numbers(
        BINDING=BINDING,
        LONGEST_WINDOWS=LONGEST_WINDOWS,
        MIN_INTERVAL=MIN_INTERVAL,
        MAX_INTERVAL=MAX_INTERVAL,
        WINDOW_PROBE_REQUESTS=WINDOW_PROBE_REQUESTS,
        WINDOWS_PER_ENDPOINT=WINDOWS_PER_ENDPOINT,
        ROUND_TRIPS_APART=ROUND_TRIPS_APART,
    )
    + """
local function clamp(x) return math.min(MAX_INTERVAL, math.max(MIN_INTERVAL, x)) end
local function pget(f, name)
  local v = redis.call('HGET', KEYS[3], f .. ':' .. name)
  if v then return tonumber(v) end
  return nil
end
local function pset(f, name, v) redis.call('HSET', KEYS[3], f .. ':' .. name, v) end
local function pdel(f, name) redis.call('HDEL', KEYS[3], f .. ':' .. name) end
"""
)

# The margin is that of `base_margin`, times the pacer's widening. A background request needs
# a place in each window for itself and for every interactive caller waiting (``need``).
PACE = (
    NOW
    + _WINDOW_PROBE
    + """
local widen = tonumber(ARGV[3])
local interactive = ARGV[4] == 'interactive'
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
local need = 1
if not interactive then need = 1 + redis.call('ZCARD', KEYS[4]) end
local wait = 0
local blocked = tonumber(redis.call('GET', KEYS[2]) or '0')
if blocked > now then wait = blocked - now end
local windows = redis.call('HGETALL', KEYS[1])
local function margin_of(seconds)
  return math.min(math.max(0.02 * seconds, 0.01), 0.05, 0.25 * seconds) * widen
end
-- Only a window that binds the sustained rate is worth a probe: one that only holds a burst
-- back (a second's window under a tight minute's) gains the endpoint nothing.
local binding = math.huge
for i = 1, #windows, 2 do
  local seconds = tonumber(windows[i])
  binding = math.min(binding, tonumber(windows[i + 1]) / (seconds + margin_of(seconds)))
end
binding = binding * BINDING
local counts = {}
for i = 1, #windows, 2 do
  local f = windows[i]
  local seconds = tonumber(f)
  local limit = tonumber(windows[i + 1])
  local binds = limit / (seconds + margin_of(seconds)) <= binding
  local log = ARGV[1] .. f
  local margin = margin_of(seconds)
  redis.call('ZREMRANGEBYSCORE', log, '-inf', now - seconds - margin)
  local n = redis.call('ZCARD', log)
  counts[f] = n
  local base = pget(f, 'base')
  if base then
    local interval = pget(f, 'interval') or clamp(2 * seconds)
    local used = pget(f, 'used')
    if used and now >= used + seconds + 2 * margin then
      -- Used a whole window long and no 429 came: the raise stays, the next comes sooner.
      pset(f, 'step', math.min((pget(f, 'step') or 1) * 2, 64))
      pset(f, 'next', now)
      pdel(f, 'base')
      pdel(f, 'used')
      base = nil
    elseif not used and now - pget(f, 'at') > 2 * seconds + interval then
      redis.call('HSET', KEYS[1], f, base)
      limit = base
      pset(f, 'next', now + interval)
      pdel(f, 'base')
      base = nil
    end
  end
  if n >= limit and binds then
    -- This window holds the request back: the demand that makes a probe worth its cost.
    local next_at = pget(f, 'next')
    if not next_at then
      pset(f, 'next', now + clamp(2 * seconds))
      pset(f, 'owed', WINDOW_PROBE_REQUESTS)
    elseif not base and now >= next_at and (pget(f, 'owed') or 0) <= 0 then
      local raised = limit + (pget(f, 'step') or 1) * math.max(1, math.floor(limit / 10))
      redis.call('HSET', KEYS[1], f, raised)
      pset(f, 'base', limit)
      pset(f, 'at', now)
      pset(f, 'probed', now)
      limit = raised
    end
  end
  if n + need > limit then
    -- The place comes free when the entry `need` places from the window's end expires; past
    -- the log's start (more waiters than places), when the waiters' own will.
    local at = n + need - 1 - limit
    local w = seconds + margin
    if at < n then
      local oldest = redis.call('ZRANGE', log, at, at, 'WITHSCORES')
      w = tonumber(oldest[2]) + seconds + margin - now
    end
    if w > wait then wait = w end
  end
end
-- Fewer windows known than the provider counts: the other may be filling unseen, so requests
-- of every process go a few round trips apart (the last 429's, of any process), within the
-- tightest known window's average rate (`spacing`). A background request leaves a gap for
-- each interactive caller waiting, as it leaves each a place in the windows.
local round_trip = tonumber(redis.call('HGET', KEYS[3], 'round_trip') or '0')
if round_trip > 0 and #windows > 0 and #windows < 2 * WINDOWS_PER_ENDPOINT then
  local gap = ROUND_TRIPS_APART * round_trip
  local newest = -math.huge
  for i = 1, #windows, 2 do
    local seconds = tonumber(windows[i])
    gap = math.min(gap, seconds / tonumber(windows[i + 1]))
    local last = redis.call('ZRANGE', ARGV[1] .. windows[i], -1, -1, 'WITHSCORES')
    if last[2] then newest = math.max(newest, tonumber(last[2])) end
  end
  if newest + need * gap - now > wait then wait = newest + need * gap - now end
end
if wait > 0 then
  if interactive then redis.call('ZADD', KEYS[4], now + wait + tonumber(ARGV[5]), ARGV[2]) end
else
  if interactive then redis.call('ZREM', KEYS[4], ARGV[2]) end
  for i = 1, #windows, 2 do
    local f = windows[i]
    local seconds = tonumber(f)
    local log = ARGV[1] .. f
    redis.call('ZADD', log, now, ARGV[2])
    redis.call('PEXPIRE', log, math.ceil(seconds * (1.25 + widen) * 1000) + 1000)
    local base = pget(f, 'base')
    if base and not pget(f, 'used') and counts[f] + 1 > base then pset(f, 'used', now) end
    local owed = pget(f, 'owed')
    if owed and owed > 0 then pset(f, 'owed', owed - 1) end
  end
  wait = 0
end
return {tostring(wait), tostring(now)}
"""
)
"""KEYS: windows hash, blocked key, probes hash, interactive waiters. ARGV: log key prefix,
member, margin multiplier, class (``interactive`` or ``background``), waiter lease. The
last 429's round trip (the probes hash's ``round_trip``, by `RATE_LIMITED`) spaces requests
while fewer windows are known than the provider counts (`spacing`); a background request
waits a gap more for each interactive waiter.

Returns ``{wait, now}``: wait > 0 means nothing was counted; come back in wait seconds. An
interactive caller told to wait is registered until then and a lease more; a background one
waits until every window has a place for each interactive waiter and for itself. A window
that holds the request back, and binds the endpoint's sustained rate, is probed one step
higher when its schedule allows.
"""

RATE_LIMITED = (
    NOW
    + _WINDOW_PROBE
    + """
redis.call('HINCRBY', KEYS[4], ARGV[4], 1)
if ARGV[6] ~= '' then
  -- The refused request's way there and back (or a little more), by Redis's clock: what
  -- spaces every process's requests while a window may be unseen (see `PACE`).
  redis.call('HSET', KEYS[3], 'round_trip', tostring(math.max(0, now - tonumber(ARGV[6]))))
end
-- Refused by another window: a probe in flight is not shown to hold yet.
for _, other in ipairs(redis.call('HKEYS', KEYS[1])) do
  if other ~= ARGV[3] then pdel(other, 'used') end
end
if ARGV[1] ~= '' then
  local until_ = now + tonumber(ARGV[1])
  local blocked = tonumber(redis.call('GET', KEYS[2]) or '0')
  if until_ > blocked then
    redis.call('SET', KEYS[2], tostring(until_), 'PX', math.ceil(tonumber(ARGV[1]) * 1000) + 1000)
  end
end
if ARGV[2] ~= '' then
  local f = ARGV[3]
  local seconds = tonumber(f)
  local told = tonumber(ARGV[2])
  local before = tonumber(redis.call('HGET', KEYS[1], f) or '0')
  redis.call('HSET', KEYS[1], f, told)
  local interval = pget(f, 'interval') or clamp(2 * seconds)
  local base = pget(f, 'base')
  pdel(f, 'base')
  pdel(f, 'used')
  if base and told <= base then
    -- The probe met a 429: back off.
    interval = math.min(clamp(math.max(LONGEST_WINDOWS, 100 / told) * seconds), interval * 2)
    pset(f, 'interval', interval)
    pset(f, 'next', now + interval)
    pset(f, 'step', 1)
    pset(f, 'owed', ARGV[5])
  elseif told ~= before and pget(f, 'next') then
    -- Told a lower limit, or a larger one than was known: the schedule starts again. (A
    -- window with no schedule yet starts one when it first holds a request back.)
    pset(f, 'interval', clamp(2 * seconds))
    pset(f, 'next', now + clamp(2 * seconds))
    pset(f, 'step', 1)
    pset(f, 'owed', ARGV[5])
  elseif told == before then
    pset(f, 'next', math.max(pget(f, 'next') or now, now + interval))
  end
end
return tostring(now)
"""
)
"""KEYS: windows hash, blocked key, probes hash, stats hash.

ARGV: retry_after or '', limit or '', window field or '', stat field, requests owed before
the next probe (after a refused probe, or a new limit told), the refused request's send time
(Redis's clock) or ''. Returns the time now.
A 429 that names a window settles its probe as refused, and a larger limit is taken at once;
the other windows' probes in flight wait to be used again (that request did not test them).
"""
