"""`RedisActiveTaskLimiter`: a key's active-task slots, shared by every process through Redis.

Interactive callers go first across processes: a caller that waits for a slot is registered
in Redis with its class, under a short lease its tries renew, and `TAKE` gives a background
caller no slot while an interactive one waits anywhere on the key. Releases are published to
the waiters of every process (`RedisLimits` listens), so the one waiting gets a slot freed
elsewhere at once; the poll stays as a fallback.
"""

from __future__ import annotations

import uuid
from typing import NamedTuple

import anyio

from ._base import COURTESY_SECONDS, COURTESY_SHARE, SlotsBase, kept_free
from ._probe import CAP_LONGEST, DEFAULT_HOLD, HOLD_WEIGHT
from ._protocols import Priority
from ._redis_link import Connection, RedisLink
from ._redis_scripts import COUNT, RENEW, TAKE, TIME, UPDATE, RedisKeys

__all__ = ["RedisActiveTaskLimiter"]


class _Read(NamedTuple):
    """What the room a background caller keeps (`kept_free`) is worked out from.

    As last read from Redis, and sent with each try, so that Redis can tell whether it still is.
    """

    limit: int
    key_cap: int
    known: int
    courtesy: int


class _Taken(NamedTuple):
    taken: bool
    stale: bool


class RedisActiveTaskLimiter(SlotsBase):
    """The key's active-task slots, shared by every process through leased Redis entries.

    The Redis twin of `ActiveTaskLimiter`: both implement `ActiveSlots` on the shared
    `SlotsBase`; this one leases its slots in Redis, so the slots of a process that died come
    back within a lease, and stores the learned cap and its probe schedule there for every
    process: a process that finds no free slot may probe (one at a time, under a lease that
    expires), and every process learns the result. Made by `RedisLimits`.

    Its waiters are known to every process with their class: a background caller gets no slot
    while an interactive caller waits in any process, and leaves the slots `kept_free` says
    free (the rule of `ActiveTaskLimiter`, with the small consumers 409s showed kept in Redis
    for every process). A waiter's registration lasts ``waiter_lease`` past its last try, so a
    process that died while waiting holds nobody up for longer.

    Args:
        link: The owner's way to Redis.
        keys: The names of the key's Redis keys.
        lease: Seconds a slot stays held without renewal.
        poll_interval: The longest pause between two tries for a slot held elsewhere.
        holder_id: This process's name in the slots' members.
        waiter_lease: Seconds a waiter stays registered after its last try.
        limit: The known cap, or None to learn it (starting at ``initial``).
        initial: The starting cap while the limit is unknown.
    """

    def __init__(
        self,
        link: RedisLink,
        keys: RedisKeys,
        *,
        lease: float,
        poll_interval: float,
        holder_id: str,
        waiter_lease: float,
        limit: int | None = None,
        initial: int = 2,
    ) -> None:
        super().__init__(limit, initial=initial)
        self._link = link
        self._keys = keys
        self._lease = lease
        self._poll_interval = poll_interval
        self._holder_id = holder_id
        self._waiter_lease = waiter_lease
        self._default = self._limit
        self._waiting = 0
        self._interactive_here = 0
        self._interactive_elsewhere = 0
        self._held_anywhere = 0
        self._mean_hold = DEFAULT_HOLD
        self._since: dict[object, float] = {}
        self._probed_at: float | None = None
        self._read = _Read(limit=self._limit, key_cap=0, known=0, courtesy=0)

    @property
    def held_anywhere(self) -> int:
        """Slots held by every process, as last read from Redis."""
        return self._held_anywhere

    @property
    def waiting(self) -> int:
        """Callers of this process waiting for a slot."""
        return self._waiting

    @property
    def interactive_waiting(self) -> int:
        """Interactive callers waiting for a slot, of this process or of all.

        This process's own are counted as they wait; the other processes' as last read from
        Redis: by this process's last try for a slot (a batch whose callers wait tries at
        least every ``poll_interval``) or its last refresh, whichever came later.
        """
        return self._interactive_here + self._interactive_elsewhere

    def members(self) -> list[str]:
        """The Redis members of the slots this process holds."""
        return list(self._members.values())

    @property
    def probed_ago(self) -> float | None:
        """Seconds since any process last probed the cap upward, or None if none did."""
        if self._probed_at is None:
            return None
        return max(0.0, anyio.current_time() - self._probed_at)

    def _unit(self) -> float:
        """Seconds between two creates at the cap, as this process sees its slots held."""
        return self._mean_hold / max(1, self._limit)

    async def _take(
        self, redis: Connection, member: str, priority: Priority, headroom: int
    ) -> _Taken:
        keys = [
            self._keys.slots,
            self._keys.running,
            self._keys.state,
            self._keys.probe,
            self._keys.slot_waiters("interactive"),
            self._keys.slot_waiters("background"),
            self._keys.others,
        ]
        unit = self._unit()
        # A probe's lease: long enough for its create to be answered, short enough that a
        # process that died mid-probe holds nobody up for long.
        probe_lease = max(2.0 * self._mean_hold, CAP_LONGEST * unit)
        read = self._read
        keep_free = kept_free(
            headroom,
            courtesy=read.courtesy,
            neighbours=max(0, read.key_cap - read.limit) if read.key_cap else 0,
            limit=read.limit,
            known=bool(read.known),
        )
        args = [
            member,
            repr(self._lease),
            self._default,
            repr(unit),
            repr(probe_lease),
            priority,
            keep_free,
            repr(self._waiter_lease),
            self._keys.released,
            repr(COURTESY_SECONDS),
            *read,
            "1" if self.cap_binds() else "0",
        ]
        answer = await redis.script(TAKE, keys, args)
        taken, limit, known, held, key_cap, ago, courtesy, stale, visitors = answer
        self._read = _Read(int(limit), int(key_cap), int(known), int(courtesy))
        # The other processes' visitors: Redis counted every waiter but this caller, and this
        # process's other interactive waiters are counted here already.
        ours = self._interactive_here - (priority == "interactive")
        self._interactive_elsewhere = max(0, int(visitors) - ours)
        self._limit = int(limit)
        self.known = bool(int(known)) or self.known
        self._held_anywhere = int(held)
        self.key_cap = int(key_cap) or None
        self._seen_probe(float(ago))
        return _Taken(taken=bool(int(taken)), stale=bool(int(stale)))

    def _seen_probe(self, ago: float) -> None:
        self._probed_at = None if ago < 0 else anyio.current_time() - ago

    async def acquire(
        self, holder: object, priority: Priority = "interactive", headroom: int = 0
    ) -> None:
        """Wait for a slot free across every process and lease it for ``holder``.

        Interactive callers of every process go first; a background caller also leaves the
        slots `kept_free` says free. The caller tries again whenever a slot is released in any
        process (or a waiter served leaves room), and at least every ``poll_interval``, until
        its cancel scope ends the wait; then it is unregistered.
        """
        redis = self._link.connection()
        member = f"{self._holder_id}:{uuid.uuid4().hex}"
        delay = self._poll_interval / 8
        self._waiting += 1
        interactive = priority == "interactive"
        self._interactive_here += interactive
        taken = False
        try:
            while True:
                # Asked for before the try: a release during it wakes the wait below at once.
                released = self._release_signal()
                await self._link.flush()
                attempt = await self._take(redis, member, priority, headroom)
                if attempt.taken:
                    taken = True
                    self._since[holder] = anyio.current_time()
                    self._hold(holder, member)
                    return
                if attempt.stale:
                    continue  # the room to keep was worked out from old numbers: again, now
                with anyio.move_on_after(delay):
                    await released.wait()
                delay = min(self._poll_interval, delay * 2)
        finally:
            self._waiting -= 1
            self._interactive_here -= interactive
            if not taken:
                # No longer a waiter; and a slot the last try may have leased as the caller
                # was cancelled (before it was booked here) is nobody's.
                self._update("withdraw", member)

    def on_released_elsewhere(self) -> None:
        """A slot of the key was released (in any process) while somebody waited: try again."""
        self._signal_release()

    def on_created(self) -> None:
        """A create was accepted: grow the cap while it is learned, or settle a probe."""
        self._update("created")

    async def wait_for_release(self, timeout: float) -> bool:
        """Wait until the slots held everywhere fall, at most ``timeout`` seconds.

        Returns:
            True if some slot was released, False on timeout.
        """
        redis = self._link.connection()
        await self._link.flush()
        before = int(await redis.script(COUNT, [self._keys.slots], []))
        with anyio.move_on_after(timeout):
            while True:
                released = self._release_signal()
                with anyio.move_on_after(self._poll_interval):
                    await released.wait()
                held = await redis.script(COUNT, [self._keys.slots], [])
                if int(held) < before:
                    return True
        return False

    async def renew(self) -> None:
        """Extend the leases of every slot this process holds."""
        redis = self._link.connection()
        members = self.members()
        if members:
            keys = [self._keys.slots, self._keys.running]
            await redis.script(RENEW, keys, [repr(self._lease), *members])

    async def refresh(self) -> None:
        """Read the cap and the slots held everywhere from Redis."""
        redis = self._link.connection()
        state = await redis.call("hgetall", self._keys.state)
        if b"limit" in state:
            self._limit = int(state[b"limit"])
        self.known = state.get(b"known") == b"1" or self.known
        self.key_cap = int(state[b"key_cap"]) if b"key_cap" in state else None
        self._held_anywhere = int(await redis.call("zcard", self._keys.slots))
        seen = await redis.call("hgetall", self._keys.others)
        now = float(await redis.script(TIME, [], []))
        # Waiters are scored by their lease's end: a dead process's lapse and are not counted.
        waiters = self._keys.slot_waiters("interactive")
        live = int(await redis.call("zcount", waiters, now, "+inf"))
        self._interactive_elsewhere = max(0, live - self._interactive_here)  # the others
        if b"probed_at" in state:
            self._seen_probe(max(0.0, now - float(state[b"probed_at"])))
        courtesy = max(
            (int(n) for n, at in seen.items() if now - float(at) < COURTESY_SECONDS), default=0
        )
        known = int(state.get(b"known") == b"1")
        self._read = _Read(self._limit, self.key_cap or 0, known, courtesy)

    def _update(self, op: str, arg: str = "", active: str = "") -> None:
        keys = [
            self._keys.slots,
            self._keys.running,
            self._keys.state,
            self._keys.stats,
            self._keys.probe,
            self._keys.slot_waiters("interactive"),
            self._keys.slot_waiters("background"),
            self._keys.others,
        ]
        args = [
            op,
            repr(self._lease),
            self._default,
            arg,
            active,
            repr(self._unit()),
            self._keys.released,
            repr(COURTESY_SHARE),
        ]
        self._link.enqueue(lambda r: r.script(UPDATE, keys, args))

    def _on_running(self, member: str) -> None:
        self._update("running", member)

    def _on_release(self, holder: object, member: str, running: bool) -> None:
        since = self._since.pop(holder, None)
        if since is not None:
            held = max(0.0, anyio.current_time() - since)
            self._mean_hold += HOLD_WEIGHT * (held - self._mean_hold)
        self._update("release", member)

    def _fix_limit(self, limit: int) -> None:
        self._limit = self._default = limit
        mapping = {"limit": str(limit), "known": "1"}
        ceiling = self.ceiling

        async def send(r: Connection) -> None:
            await r.call("hset", self._keys.state, mapping=mapping)
            if ceiling is None:
                await r.call("hdel", self._keys.state, "ceiling")
            else:
                await r.call("hset", self._keys.state, "ceiling", str(ceiling))

        self._link.enqueue(send)

    def on_tier_changed(self, old_cap: int, new_cap: int) -> None:
        """A 429 named another tier than before: move the cap with it, and probe it soon.

        For every process, as `ActiveTaskLimiter` does: when the cap a 409 named was the old
        tier's, the key's cap is now the new tier's (less the slots the estimate left to
        others), and the probe schedule starts again (its first interval, one slot at a time).
        """
        self._update("tier", str(int(old_cap)), str(int(new_cap)))

    def _learn_conflict(self, stated: int | None, active: int | None) -> None:
        # The cap is learned in Redis, from the slots and tasks of every process.
        self._update(
            "conflict",
            "" if stated is None else str(int(stated)),
            "" if active is None else str(int(active)),
        )
