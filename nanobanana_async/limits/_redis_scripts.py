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

Priority across processes: a caller that waits for a slot is registered in a sorted set of
its class, scored by the end of a short lease that each of its tries renews, so a dead
process's waiters stop counting when their lease ends. `TAKE` refuses a background caller
while an interactive one waits anywhere on the key. A release, and a served or withdrawn
waiter that leaves room, are published on the key's ``released`` channel when somebody
waits, so waiters in every process try again at once. The endpoints' pacers put their
interactive waiters first the same way (see `PACE`).
"""

from __future__ import annotations

from ._probe import (
    CAP_LONGEST,
    CAP_ROOM_START,
    CAP_UPGRADE_START,
    MAX_INTERVAL,
    MIN_INTERVAL,
    UPGRADE_CREATES,
)

__all__ = [
    "COUNT",
    "NOW",
    "RENEW",
    "SMALL_CONSUMER",
    "TAKE",
    "TIME",
    "UPDATE",
    "RedisKeys",
    "lua_numbers",
]


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
        others: Hash: the slots 409s showed a small consumer holding → when last seen (the
            courtesy, see `small_consumer`).
        released: The pub/sub channel on which releases are announced to waiters.

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
        self.others = f"{prefix}:active:others"
        self.released = f"{prefix}:active:released"

    def slot_waiters(self, priority: str) -> str:
        """Sorted set: the callers of one class waiting for a slot, scored by their lease."""
        return f"{self.prefix}:active:waiting:{priority}"

    def windows(self, endpoint: str) -> str:
        """Hash: an endpoint's known windows, `window_field` → requests allowed."""
        return f"{self.prefix}:{endpoint}:windows"

    def blocked(self, endpoint: str) -> str:
        """String: the Redis time until which a 429 blocks the endpoint."""
        return f"{self.prefix}:{endpoint}:blocked"

    def probes(self, endpoint: str) -> str:
        """Hash: the probe schedules of an endpoint's windows, the last 429's round trip."""
        return f"{self.prefix}:{endpoint}:probes"

    def pace_waiters(self, endpoint: str) -> str:
        """Sorted set: interactive callers waiting to send to an endpoint, by their lease."""
        return f"{self.prefix}:{endpoint}:waiting"

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


def lua_numbers(**numbers: float) -> str:
    """Lua locals holding Python's numbers, so that a script cannot drift from the code."""
    return "".join(f"local {name} = {float(value)!r}\n" for name, value in numbers.items())


# The probe schedule of the active-task cap (`ProbeSchedule`, `ActiveTaskLimiter`), kept in
# the state hash for every process: ``base`` (the cap before the probe in flight), ``interval``,
# ``next_at``, ``step``, ``owed`` (creates still to be accepted before the next probe),
# ``probed_at``, ``outcome``, ``key_cap`` (the cap a 409 named), ``ceiling`` (a user's
# ``max_active``) and ``reach_after`` (until when no interactive caller may try past the
# estimate: after a 409, the time of two creates at the cap). ``unit`` is the caller's seconds
# between two creates at the cap; intervals are `CAP_ROOM_START` units (neighbours' room) or
# `CAP_UPGRADE_START` (an upgrade) after a tighten, doubled by each refused probe up to
# `CAP_LONGEST` units, within `MIN_INTERVAL` and `MAX_INTERVAL`; a probe past the key's named
# cap also waits for `UPGRADE_CREATES` creates of any process to be accepted (`owed_for`).
# The numbers are Python's (`lua_numbers`).
_PROBE = (
    lua_numbers(
        CAP_ROOM_START=CAP_ROOM_START,
        CAP_UPGRADE_START=CAP_UPGRADE_START,
        CAP_LONGEST=CAP_LONGEST,
        UPGRADE_CREATES=UPGRADE_CREATES,
        MIN_INTERVAL=MIN_INTERVAL,
        MAX_INTERVAL=MAX_INTERVAL,
    )
    + """
local function clamp(x) return math.min(MAX_INTERVAL, math.max(MIN_INTERVAL, x)) end
local function hnum(key, field)
  local v = redis.call('HGET', key, field)
  if v then return tonumber(v) end
  return nil
end
local function probe_start(limit, key_cap, unit)
  if key_cap and limit < key_cap then return clamp(CAP_ROOM_START * unit) end
  return clamp(CAP_UPGRADE_START * unit)
end
-- Creates to be accepted before the next probe: none to win the neighbours' room back, and
-- `UPGRADE_CREATES` past the key's named cap, where only an upgrade lies.
local function owed_for(limit, key_cap)
  if key_cap and limit < key_cap then return 0 end
  return UPGRADE_CREATES
end
"""
)

TAKE = (
    NOW
    + _PROBE
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', now)
local function waiters() return redis.call('ZCARD', KEYS[5]) + redis.call('ZCARD', KEYS[6]) end
local limit = tonumber(redis.call('HGET', KEYS[3], 'limit') or ARGV[3])
local known = tonumber(redis.call('HGET', KEYS[3], 'known') or '0')
local held = redis.call('ZCARD', KEYS[1])
local unit = tonumber(ARGV[4])
local interactive = ARGV[6] == 'interactive'
local keep_free = tonumber(ARGV[7])
local key_cap = hnum(KEYS[3], 'key_cap')
local ceiling = hnum(KEYS[3], 'ceiling')
-- An interactive caller may try one slot past the estimate of the room other consumers leave
-- (the provider says no with a 409 if the key is full after all; a success raises the
-- estimate): one try at a time, none for a while after a 409, never past a user's ceiling.
local reach = 0
if interactive and key_cap and key_cap > limit
    and now >= (hnum(KEYS[3], 'reach_after') or 0) then
  reach = 1
  if ceiling then reach = math.min(reach, math.max(0, ceiling - limit)) end
end
-- The courtesy: the most slots a small consumer was seen to hold lately, by any process.
local courtesy = 0
local seen = redis.call('HGETALL', KEYS[7])
for i = 1, #seen, 2 do
  if now - tonumber(seen[i + 1]) < tonumber(ARGV[10]) then
    courtesy = math.max(courtesy, tonumber(seen[i]))
  else
    redis.call('HDEL', KEYS[7], seen[i])
  end
end
-- `keep_free` was worked out (by `kept_free`) from what the caller last read: a background
-- caller whose numbers are out of date takes nothing, and tries again with these.
local stale = not interactive and (limit ~= tonumber(ARGV[11])
  or (key_cap or 0) ~= tonumber(ARGV[12]) or known ~= tonumber(ARGV[13])
  or courtesy ~= tonumber(ARGV[14]))
local taken = 0
local function take()
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
  taken = 1
  held = redis.call('ZCARD', KEYS[1])
end
local function fits(cap)
  if interactive then return held < cap + reach end
  -- A slot freed while an interactive caller waits anywhere on the key is its, and
  -- background work leaves `keep_free` slots to others.
  return redis.call('ZCARD', KEYS[5]) == 0 and held + keep_free < cap
end
if not stale and (redis.call('ZSCORE', KEYS[1], ARGV[1]) or fits(limit)) then take() end
if taken == 0 and known == 1 and not stale then
  local base = hnum(KEYS[3], 'base')
  if base and redis.call('EXISTS', KEYS[4]) == 0 then
    -- The prober's lease ran out before its probe was settled: give the probe up.
    limit = base
    local interval = hnum(KEYS[3], 'interval') or probe_start(limit, key_cap, unit)
    redis.call('HSET', KEYS[3], 'limit', limit, 'next_at', now + interval, 'outcome', 'unused')
    redis.call('HDEL', KEYS[3], 'base')
    base = nil
  end
  local next_at = hnum(KEYS[3], 'next_at')
  if not next_at then
    -- The first demand at a known cap starts the schedule.
    next_at = now + probe_start(limit, key_cap, unit)
    redis.call('HSET', KEYS[3], 'next_at', next_at, 'owed', owed_for(limit, key_cap))
  end
  local owed = hnum(KEYS[3], 'owed') or 0
  local raised = limit + (hnum(KEYS[3], 'step') or 1)
  if key_cap and limit < key_cap then raised = math.min(raised, key_cap) end
  if ceiling then raised = math.min(raised, ceiling) end
  -- Only a caller that every slot holds back, and that one slot more would let in, probes;
  -- from the key's own cap, only while the create rate could fill more slots (`cap_binds`,
  -- ARGV[15]), unless a climb past it is under way.
  local demand = ARGV[15] == '1' or (key_cap and limit < key_cap)
    or redis.call('HGET', KEYS[3], 'outcome') == 'raised'
  if not base and now >= next_at and owed <= 0 and (not ceiling or limit < ceiling)
      and demand and held >= limit
      and fits(raised)
      and redis.call('SET', KEYS[4], ARGV[1], 'NX', 'PX', math.ceil(tonumber(ARGV[5]) * 1000)) then
    redis.call('HSET', KEYS[3], 'limit', raised, 'base', limit, 'probed_at', now)
    limit = raised
    take()
  end
end
local mine = KEYS[6]
if interactive then mine = KEYS[5] end
if taken == 1 then
  if redis.call('ZREM', mine, ARGV[1]) == 1 and held < limit and waiters() > 0 then
    -- A waiter served with room to spare: the others may fit now (background ones, once no
    -- interactive caller waits).
    redis.call('PUBLISH', ARGV[9], '')
  end
else
  redis.call('ZADD', mine, now + tonumber(ARGV[8]), ARGV[1])
end
local probed_at = hnum(KEYS[3], 'probed_at')
local ago = -1
if probed_at then ago = now - probed_at end
local was_stale = 0
if stale then was_stale = 1 end
-- The other interactive callers waiting anywhere now (this one, if it waits, is its process's
-- to count): a batch whose callers wait learns of a visitor at its next try, not at the next
-- full refresh, and a visitor that gives up leaves no count of itself behind.
local visitors = redis.call('ZCARD', KEYS[5])
if interactive and taken == 0 then visitors = visitors - 1 end
return {taken, limit, known, held, key_cap or 0, tostring(ago), courtesy, was_stale, visitors}
"""
)
"""KEYS: slots, running, state, probe lease, interactive waiters, background waiters, others
seen. ARGV: member, lease, default limit, unit, lease of a probe (seconds), class
(``interactive`` or ``background``), slots a background caller leaves free (`kept_free`),
waiter lease, the ``released`` channel, `COURTESY_SECONDS`, the numbers ``keep_free`` was
worked out from: the limit, the key's cap (0: none), known (0/1) and the courtesy, and whether
the create rate could fill more slots than the cap (``1``/``0``, `SlotsBase.cap_binds`).

An interactive caller takes a slot while fewer than the cap are held, or one more while the
key's named cap leaves others room and no 409 came lately (its try past the estimate; see
``reach_after``); a background one only
while no interactive caller waits anywhere on the key and the slots it leaves free are at
least ``keep_free``, and only if the numbers it was worked out from are those in Redis now
(else it is told them, and tries again). A caller refused is registered as a waiter of its
class (each try renews its lease); one served is unregistered. A caller that every slot holds
back may start a probe (one slot more, for every process) when the schedule allows: the probe
lease (``SET NX PX``) makes it one probe at a time, and expires so that a process that died
mid-probe cannot wedge the others. Returns ``{taken (0/1), limit, known (0/1), held, key_cap
(0: none), seconds since the last probe (-1: none), courtesy, stale (0/1), interactive
waiters other than this caller}``.
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

SMALL_CONSUMER = """
local function small_consumer(stated, active, held, limit, share)
  local others = 0
  if active then others = math.max(0, active - math.max(0, held - 1)) end
  if stated then others = math.max(others, stated - held) end
  if others > 0 and others <= math.max(1, share * (stated or limit)) then return others end
  return 0
end
"""
"""`small_consumer` (in ``_base``) in Lua, for `UPDATE`: the rule is tested to agree."""

UPDATE = (
    NOW
    + _PROBE
    + SMALL_CONSUMER
    + """
local op = ARGV[1]
local function wake()
  -- Tell the waiters of every process, if there are any, that a slot may be free.
  if redis.call('ZCARD', KEYS[6]) + redis.call('ZCARD', KEYS[7]) > 0 then
    redis.call('PUBLISH', ARGV[7], '')
  end
end
if op == 'release' then
  if redis.call('ZREM', KEYS[1], ARGV[4]) == 1 then wake() end
  redis.call('ZREM', KEYS[2], ARGV[4])
  return 0
end
if op == 'withdraw' then
  -- A waiter gave up. Its last try may have leased a slot as its caller was cancelled: that
  -- slot is nobody's now. Without it (or the interactive waiter), others may fit.
  local freed = redis.call('ZREM', KEYS[1], ARGV[4])
  redis.call('ZREM', KEYS[2], ARGV[4])
  freed = freed + redis.call('ZREM', KEYS[6], ARGV[4])
  redis.call('ZREM', KEYS[7], ARGV[4])
  if freed > 0 then wake() end
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
if op == 'tier' then
  -- A 429 named another tier than before (arg: its documented cap before, and now): when the
  -- cap a 409 named was the old tier's, it is the new tier's now, less what the estimate
  -- left to others. The schedule starts again either way (a probe in flight goes on).
  local old_cap, new_cap = tonumber(ARGV[4]), tonumber(ARGV[5])
  if key_cap and key_cap == old_cap then
    local cap = math.max(1, new_cap - math.max(0, key_cap - limit))
    local ceiling = hnum(KEYS[3], 'ceiling')
    if ceiling then cap = math.min(cap, ceiling) end
    key_cap = new_cap
    redis.call('HSET', KEYS[3], 'key_cap', key_cap, 'limit', cap)
    if cap > limit then wake() end
    limit = cap
  end
  local interval = probe_start(limit, key_cap, unit)
  redis.call('HSET', KEYS[3], 'interval', interval, 'next_at', now + interval, 'step', 1,
    'owed', 0)
  return 0
end
if op == 'created' then
  local owed = hnum(KEYS[3], 'owed')
  if known and owed and owed > 0 then redis.call('HSET', KEYS[3], 'owed', owed - 1) end
  if not known then
    if redis.call('ZCARD', KEYS[1]) >= limit and running >= limit - 1 then
      redis.call('HSET', KEYS[3], 'limit', limit + 1)
      wake()
    end
  elseif base and running > base then
    -- The probe was accepted: keep the raise, probe again at once with a larger step.
    -- The interval stays (an acceptance may be a fluke of a task that ended unseen).
    -- The step grows only below the key's named cap (past it, a fluke must not compound).
    -- The key's cap stays what a 409 named until a 409 names another: an acceptance past
    -- it proves nothing yet (a fluke, or an upgrade, which the next 409 will name).
    local step = hnum(KEYS[3], 'step') or 1
    if key_cap and base < key_cap then step = math.min(step * 2, 64) end
    local interval = hnum(KEYS[3], 'interval') or probe_start(limit, key_cap, unit)
    local next_at = now
    local outcome = 'raised'
    if key_cap and base < key_cap and limit == key_cap then
      -- The neighbours' room is back whole: past it lies only a rare upgrade, tried where the
      -- cap binds (no climb is under way any more).
      step = 1
      interval = probe_start(limit, key_cap, unit)
      next_at = now + interval
      outcome = 'restarted'
      redis.call('HSET', KEYS[3], 'owed', owed_for(limit, key_cap))
    end
    redis.call('HSET', KEYS[3], 'step', step, 'interval', interval, 'next_at', next_at,
      'outcome', outcome)
    redis.call('HDEL', KEYS[3], 'base')
    redis.call('DEL', KEYS[5])
    -- The next step goes at once, at the pace of creates rather than of releases.
    if next_at <= now then wake() end
  elseif not base and running > limit then
    -- An interactive caller reached past the estimate, and the provider took it: the room is
    -- at least what runs now (the estimate had erred on the safe side).
    local room = running
    if key_cap then room = math.min(room, key_cap) end
    local ceiling = hnum(KEYS[3], 'ceiling')
    if ceiling then room = math.min(room, ceiling) end
    if room > limit then
      redis.call('HSET', KEYS[3], 'limit', room)
      wake()
    end
  end
  return 0
end
redis.call('HINCRBY', KEYS[4], 'conflicts', 1)
local before = limit
local cap = nil
local upgraded = ARGV[4] ~= '' and key_cap and tonumber(ARGV[4]) > key_cap
-- Past the cap a 409 named, told the same cap: the probe (or a fluke's raise) failed.
local past_named = key_cap and before > key_cap and not upgraded
-- The key is full: no interactive try past the estimate for a little while (the time of two
-- creates at the cap): each try that fails is a refused create.
redis.call('HSET', KEYS[3], 'reach_after', now + clamp(CAP_ROOM_START * unit))
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local held = redis.call('ZCARD', KEYS[1])
local others = 0
if ARGV[5] ~= '' then others = math.max(0, tonumber(ARGV[5]) - math.max(0, held - 1)) end
local stated = nil
if ARGV[4] ~= '' then stated = tonumber(ARGV[4]) end
local active = nil
if ARGV[5] ~= '' then active = tonumber(ARGV[5]) end
local small = small_consumer(stated, active, held, limit, tonumber(ARGV[8]))
if small > 0 then
  -- A small consumer (a web app) holds slots of the key: background work in every process
  -- leaves it room for a while (`kept_free`).
  redis.call('HSET', KEYS[8], small, tostring(now))
end
if ARGV[4] ~= '' then
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
if past_named then
  -- Past it lies only an upgrade, which nothing else shows; each refused probe is a 409 the
  -- key's other users pay for too: the next waits for `UPGRADE_CREATES` creates.
  interval = math.min(clamp(CAP_LONGEST * unit), interval * 2)
  redis.call('HSET', KEYS[3], 'interval', interval, 'next_at', now + interval, 'step', 1,
    'owed', UPGRADE_CREATES)
elseif upgraded or (not base and cap and cap < before) then
  -- The cap moved for sure: the schedule starts again.
  interval = probe_start(limit, key_cap, unit)
  redis.call('HSET', KEYS[3], 'interval', interval, 'next_at', now + interval, 'step', 1,
    'owed', owed_for(limit, key_cap))
elseif base then
  -- The probe met a 409: back off.
  interval = math.min(clamp(CAP_LONGEST * unit), interval * 2)
  redis.call('HSET', KEYS[3], 'interval', interval, 'next_at', now + interval, 'step', 1,
    'owed', owed_for(limit, key_cap))
else
  -- The schedule starts here (past the key's named cap, with the creates to wait for), or a
  -- 409 left room below the key's cap: that room is probed by time alone.
  local owed = hnum(KEYS[3], 'owed')
  local owed_now = owed_for(limit, key_cap)
  if not hnum(KEYS[3], 'next_at') or not owed or owed_now < owed then
    redis.call('HSET', KEYS[3], 'owed', owed_now)
  end
  local next_at = math.max(hnum(KEYS[3], 'next_at') or now, now + interval)
  redis.call('HSET', KEYS[3], 'next_at', next_at)
end
return 0
"""
)
"""KEYS: slots, running, state, stats, probe lease, interactive waiters, background waiters,
others seen. ARGV: op, lease, default limit, arg, the key's active tasks named by a 409 (or
''), unit, the ``released`` channel, `COURTESY_SHARE`.

Ops: ``release`` (arg: member), ``withdraw`` (arg: a waiter's member: it gave up),
``running`` (arg: member), ``tier`` (a 429 named another tier; arg and the active field: the
old and the new tier's documented caps: the cap moves with them when the cap a 409 named was
the old one's, and its probe schedule starts again), ``created`` (grows the cap as
`grown_cap` does while it is learned; counts down the creates a probe waits for; settles a
probe in flight as accepted, the next step at once; raises the estimate to what runs when an
interactive try past it was taken), ``conflict`` (arg: the stated cap or ''; learns as
`cap_after_conflict`, notes a small consumer's slots as `small_consumer` sees them, closes the
interactive try past the estimate for a while, and a probe in flight backs off: past the
key's named cap, the next also waits for `UPGRADE_CREATES` creates). A release, a withdrawal
that frees room, a grown cap and an accepted probe are published on the channel when
somebody waits.
"""
