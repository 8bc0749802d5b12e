"""Cancellation and shutdown at many await points, against the fake over HTTP (in memory).

Each test cancels a call once ``n`` requests have reached the fake, for a range of ``n``, so the
cancellation lands in a request, in a retry's backoff, between polls, in a slot wait or in a
journal write. Then it checks what a user would notice: the call returns, none of the library's
tasks runs on, no connection is left busy (and none open after ``aclose``), and the journal
lets a rerun pick up every task already paid for, creating nothing twice.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from support import fake_provider, over_http, prompts, wait_until

from nanobanana_async import AsyncNanoBanana, BatchRunner, TextToImage
from nanobanana_async._journal import Journal, fingerprint
from nanobanana_async._wire import request_body
from nanobanana_async.testing import FakeNanoBanana, Faults

pytestmark = pytest.mark.anyio

POINTS = range(1, 9)  # cancel once this many requests have reached the fake
# Faults that put the client in a retry backoff or a hanging request when the cancel lands.
FLAKY = ["ok", "500", "ok", "slow", "drop_after", "ok", "drop_before", "503_html"] * 6


def requests_seen(fake: FakeNanoBanana) -> int:
    stats = fake.stats
    return stats.create_requests + stats.query_requests + stats.result_requests


def library_tasks() -> list[str]:
    """The names of the library's tasks still running (the fake's server tasks aside)."""
    return [
        task.name
        for task in anyio.get_running_tasks()
        if task.name
        and task.name.startswith("nanobanana_async.")
        and not task.name.startswith("nanobanana_async.testing.")
    ]


def server_connections() -> int:
    """Connections the fake's server is still serving."""
    return sum(
        1 for task in anyio.get_running_tasks() if task.name and "MemoryNetwork._serve" in task.name
    )


async def cancel_after(
    fake: FakeNanoBanana, count: int, call: Callable[[], Awaitable[Any]]
) -> bool:
    """Run ``call`` and cancel it once ``count`` requests reached the fake; True if it finished."""
    finished = False
    with anyio.CancelScope() as scope:

        async def watch() -> None:
            await wait_until(lambda: requests_seen(fake) >= count)
            scope.cancel()

        # fail_after only keeps a broken cancellation from hanging the suite.
        with anyio.fail_after(20):
            async with anyio.create_task_group() as group:
                group.start_soon(watch)
                await call()
                finished = True
                group.cancel_scope.cancel()
    return finished


async def assert_shut_down_cleanly(client: AsyncNanoBanana, fake: FakeNanoBanana) -> None:
    """Nothing of ours runs or talks any more; then close twice, once under cancellation."""
    assert library_tasks() == []
    seen = requests_seen(fake)
    await anyio.sleep(0.05)
    assert requests_seen(fake) == seen  # no request goes out any more
    pool = client._http._transport._pool  # type: ignore[attr-defined]
    # A request cut off mid-flight must not leave its connection busy in the pool.
    assert all(c.is_idle() or c.is_closed() for c in pool.connections), pool.connections
    assert client.limits.active.active == 0
    with anyio.CancelScope() as scope:
        scope.cancel()
        await client.aclose()  # shielded: closes even when cancelled
    await client.aclose()
    # The HTTP clients are the test's (see `over_http`): once closed, no connection is left.
    await client._http.aclose()  # type: ignore[attr-defined]
    await client._download.aclose()  # type: ignore[attr-defined]
    assert pool.connections == []
    await wait_until(lambda: server_connections() == 0)  # the server saw every connection close


@contextlib.asynccontextmanager
async def flaky_client(fake: FakeNanoBanana) -> AsyncIterator[AsyncNanoBanana]:
    async with over_http(fake, timeout=0.15, max_retries=3) as client:
        yield client


@pytest.mark.parametrize("point", POINTS)
async def test_cancelling_wait_for_result(point: int) -> None:
    fake = fake_provider(duration=1000.0, faults=Faults(slow_seconds=None))
    async with flaky_client(fake) as client:
        task_id = await client.create_task(TextToImage(prompt="cancel a wait"))
        fake.script("query", FLAKY)
        finished = await cancel_after(
            fake, point + 1, lambda: client.wait_for_result(task_id, timeout=60)
        )
        assert not finished
        await assert_shut_down_cleanly(client, fake)


@pytest.mark.parametrize("point", POINTS)
async def test_cancelling_generate(point: int) -> None:
    fake = fake_provider(duration=1000.0, faults=Faults(slow_seconds=None))
    fake.script("create", ["500", "slow"])
    fake.script("query", FLAKY)
    async with flaky_client(fake) as client:
        finished = await cancel_after(
            fake, point, lambda: client.generate(TextToImage(prompt="cancel"), timeout=60)
        )
        assert not finished
        await assert_shut_down_cleanly(client, fake)
    assert fake.stats.tasks_created <= 1
    assert fake.stats.duplicates == 0


# -- batches: the journal after a cancel, and the rerun ---------------------------------------


async def assert_rerun_creates_nothing_twice(
    fake: FakeNanoBanana, path: Path, requests: list[TextToImage]
) -> None:
    """Every task the fake made is journaled, or its job's X-Request-ID finds it again."""
    paid = dict(fake.tasks)
    with sqlite3.connect(path) as db:
        rows = {
            idx: (rid, tid)
            for idx, rid, tid in db.execute("SELECT idx, request_id, task_id FROM jobs")
        }
    journal = await Journal.open(path)
    try:
        job_ids = {
            journal.request_id(i, fingerprint(request_body(r))): i for i, r in enumerate(requests)
        }
    finally:
        await journal.aclose()
    for task_id, task in paid.items():
        assert task.request_id in job_ids, "a task that no job of the batch can find again"
        index = job_ids[task.request_id]
        if index in rows and rows[index][1] is not None:
            assert rows[index] == (task.request_id, task_id)
    # The rerun follows every paid task and creates only what was never created.
    # What is left of the scripted faults meets the rerun too; it rides them out.
    async with over_http(fake, timeout=0.15) as client:
        with anyio.fail_after(30):
            outcomes = await BatchRunner(client, journal=path, max_active=4).run(requests)
    assert all(o.ok for o in outcomes), [o.error for o in outcomes if not o.ok]
    assert set(paid) <= {o.task_id for o in outcomes}
    stats = fake.stats
    assert stats.tasks_created == len(requests) == len(fake.tasks)
    assert stats.duplicates == 0
    assert stats.conflicts == 0


BATCH_CASES = [
    *((how, point) for how in ("run", "stream-cancel") for point in (1, 2, 3, 5, 8, 13)),
    ("stream-break", 1),
    ("stream-break", 2),
]


@pytest.mark.parametrize(("how", "point"), BATCH_CASES)
async def test_cancelling_a_journaled_batch(tmp_path: Path, how: str, point: int) -> None:
    fake = fake_provider(duration=(2.0, 12.0), seed=point, faults=Faults(slow_seconds=None))
    fake.script("create", FLAKY)
    fake.script("query", FLAKY)
    path = tmp_path / "batch.sqlite"
    requests = prompts(8, f"cancel {how} {point}")
    async with flaky_client(fake) as client:
        runner = BatchRunner(client, journal=path, max_active=4)
        if how == "run":
            assert not await cancel_after(fake, point * 2, lambda: runner.run(requests))
        elif how == "stream-cancel":

            async def consume() -> None:
                async with runner.stream(requests) as results:
                    async for _outcome in results:
                        pass

            assert not await cancel_after(fake, point * 2, consume)
        else:  # leave the stream early, after a few outcomes
            wanted, seen = point % 3 + 1, 0
            async with runner.stream(requests) as results:
                async for _outcome in results:
                    seen += 1
                    if seen == wanted:
                        break
            assert seen == wanted
        assert runner.statistics().running == 0
        await assert_shut_down_cleanly(client, fake)
    await assert_rerun_creates_nothing_twice(fake, path, requests)
