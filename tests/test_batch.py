"""`BatchRunner` against the in-process fake provider, on asyncio and trio.

Every scenario runs at a scaled-down time (a provider second is 10 ms here) with fast poll and
retry policies, so the whole file takes seconds. Nothing asserts on elapsed time: the machine
is shared, so the tests check counts and order only.
"""

from __future__ import annotations

import contextlib
import gc
import json
import sqlite3
import types
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from support import client_for, envelope, fake_provider, prompts, wait_until

from nanobanana_async import (
    APIConnectionError,
    AuthenticationError,
    BadRequestError,
    BatchOutcome,
    BatchRunner,
    BatchStatistics,
    DecodeError,
    ImageToImage,
    InsufficientCreditsError,
    InvalidRequestError,
    JournalError,
    RetryPolicy,
    TaskFailedError,
    TaskNotFoundError,
    TextToImage,
    UnprocessableEntityError,
    WaitTimeoutError,
    _batch_input,
)
from nanobanana_async._journal import Journal, fingerprint
from nanobanana_async._wire import request_body
from nanobanana_async.testing import FakeNanoBanana, Faults

pytestmark = pytest.mark.anyio


def prompt_of(request: httpx.Request) -> str:
    return str(json.loads(request.content)["input"]["prompt"])


def is_create(request: httpx.Request) -> bool:
    return request.url.path.endswith("/createTask")


async def journal_rows(path: Path) -> list[Any]:
    journal = await Journal.open(path)
    try:
        return await journal.rows(0, 100_000)
    finally:
        await journal.aclose()


def assert_no_duplicates(fake: FakeNanoBanana) -> None:
    stats = fake.stats
    assert stats.duplicates == 0
    assert stats.conflicts == 0  # no X-Request-ID was ever reused for another body


# -- order, streaming, laziness ---------------------------------------------------------------


async def test_run_returns_one_outcome_per_request_in_input_order() -> None:
    # Later requests finish first, so completion order is far from input order.
    fake = fake_provider(duration=lambda body: 6.0 - int(body["input"]["prompt"][2:]) * 0.4)
    requests = [TextToImage(prompt=f"p#{i}") for i in range(12)]
    async with client_for(fake) as client:
        outcomes = await BatchRunner(client).run(requests)

    assert [outcome.index for outcome in outcomes] == list(range(12))
    for outcome, request in zip(outcomes, requests, strict=True):
        assert outcome.request is request
        assert outcome.ok
        assert outcome.error is None
        assert outcome.result is not None
        assert outcome.task_id == outcome.result.task_id
        assert fake.tasks[outcome.task_id].prompt == request.prompt
        assert outcome.result.urls
        assert not outcome.resumed
    assert fake.stats.tasks_created == 12
    assert_no_duplicates(fake)


async def test_outcome_carries_the_request_id_the_create_sent() -> None:
    fake = fake_provider()
    async with client_for(fake) as client:
        outcomes = await BatchRunner(client).run(prompts(2))
    for outcome in outcomes:
        assert outcome.task_id is not None
        assert outcome.request_id is not None
        assert outcome.request_id == fake.tasks[outcome.task_id].request_id


async def test_outcome_carries_the_journaled_request_id(tmp_path: Path) -> None:
    fake = fake_provider()
    async with client_for(fake) as client:
        outcomes = await BatchRunner(client, journal=tmp_path / "j.sqlite").run(prompts(2))
    for outcome in outcomes:
        assert outcome.task_id is not None
        assert outcome.request_id == fake.tasks[outcome.task_id].request_id


async def test_run_of_an_empty_batch_returns_no_outcomes() -> None:
    fake = fake_provider()
    async with client_for(fake) as client:
        assert await BatchRunner(client).run([]) == []
    assert fake.stats.create_requests == 0


async def test_stream_yields_outcomes_as_they_complete() -> None:
    # Job 0 runs 100x longer than the others: it must come last, after all the rest arrived
    # while it was still running.
    fake = fake_provider(
        duration=lambda body: 60.0 if body["input"]["prompt"].endswith("#0") else 0.5
    )
    requests = prompts(8)
    seen: list[int] = []
    slow_running_at_first = None
    async with client_for(fake) as client:
        runner = BatchRunner(client)
        async with runner.stream(requests) as results:
            async for outcome in results:
                if not seen:
                    slow = [t for t in fake.tasks.values() if t.prompt == requests[0].prompt]
                    slow_running_at_first = bool(slow) and slow[0].state != "success"
                seen.append(outcome.index)
                assert outcome.ok

    assert sorted(seen) == list(range(8))
    assert seen[-1] == 0
    assert slow_running_at_first


async def test_leaving_the_stream_early_cancels_the_rest() -> None:
    fake = fake_provider(duration=(2.0, 4.0))
    async with client_for(fake) as client:
        runner = BatchRunner(client, max_active=3)
        async with runner.stream(prompts(30)) as results:
            async for _ in results:
                break
        before = fake.stats
        await anyio.sleep(0.05)
        after = fake.stats
        assert runner.statistics().running == 0
        assert client.limits.active.active == 0
    assert after.create_requests == before.create_requests
    assert after.query_requests == before.query_requests
    assert before.tasks_created < 30


async def test_a_cancelled_batch_leaves_no_unfinished_async_generator() -> None:
    # Found by trio: an abandoned generator is a ResourceWarning there, an error under -W error.
    fake = fake_provider(duration=(2.0, 4.0))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        async with client_for(fake) as client:
            runner = BatchRunner(client, max_active=1)
            with anyio.CancelScope() as scope:
                async with runner.stream(prompts(10)) as results:
                    # The one slot is taken: the runner waits for it with the input half read.
                    await wait_until(lambda: fake.stats.query_requests >= 1)
                    scope.cancel()
                    async for _ in results:
                        pass
            gc.collect()
            alive = [
                obj
                for obj in gc.get_objects()
                if isinstance(obj, types.AsyncGeneratorType)
                and obj.ag_code.co_name == "_aiter"
                and obj.ag_frame is not None
            ]
    leaked = [str(w.message) for w in caught if "_aiter" in str(w.message)]
    assert (alive, leaked) == ([], [])


class CountingInput:
    """A lazy input that records how far it has been read, against the outcomes emitted."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.consumed = 0
        self.worst_gap = 0
        self.runner: BatchRunner | None = None

    def _take(self, index: int) -> TextToImage:
        assert self.runner is not None
        self.consumed += 1
        self.worst_gap = max(self.worst_gap, self.consumed - self.runner.statistics().done)
        return TextToImage(prompt=f"lazy #{index}")

    def __iter__(self) -> Iterator[TextToImage]:
        for index in range(self.count):
            yield self._take(index)

    async def aiter(self) -> AsyncIterator[TextToImage]:
        for index in range(self.count):
            await anyio.lowlevel.checkpoint()
            yield self._take(index)


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_input_is_read_lazily_as_slots_free_up(kind: str) -> None:
    fake = fake_provider(duration=(1.0, 3.0))
    source = CountingInput(60)
    async with client_for(fake) as client:
        runner = BatchRunner(client, max_active=4)
        source.runner = runner
        requests = iter(source) if kind == "sync" else source.aiter()
        received = 0
        async with runner.stream(requests) as results:
            async for outcome in results:
                received += 1
                assert outcome.ok
    assert received == 60
    assert source.consumed == 60
    # Read no further than the work in flight (4 slots, and the request waiting for one).
    assert source.worst_gap <= 4 + 2
    assert fake.stats.max_active <= 4


async def test_async_generator_input_keeps_order() -> None:
    async def generate() -> AsyncIterator[TextToImage]:
        for request in prompts(10, "agen"):
            await anyio.lowlevel.checkpoint()
            yield request

    fake = fake_provider()
    async with client_for(fake) as client:
        outcomes = await BatchRunner(client).run(generate())
    assert [o.request.prompt for o in outcomes] == [f"agen #{i}" for i in range(10)]
    assert all(o.ok for o in outcomes)


# -- failures are outcomes ---------------------------------------------------------------------


async def test_failed_tasks_become_outcomes_and_the_batch_goes_on() -> None:
    fake = fake_provider(fail_rate=0.4, fail_codes=[("501", "the model refused")], seed=7)
    async with client_for(fake) as client:
        runner = BatchRunner(client)
        outcomes = await runner.run(prompts(30))

    failed = [o for o in outcomes if not o.ok]
    assert failed, "seed 7 makes some tasks fail"
    assert len(failed) < 30
    for outcome in outcomes:
        assert outcome.task_id is not None
        assert fake.tasks[outcome.task_id].failed == (not outcome.ok)
    for outcome in failed:
        assert isinstance(outcome.error, TaskFailedError)
        assert outcome.error.fail_code == "501"
        assert outcome.error.fail_message == "the model refused"
        assert outcome.result is None
    stats = runner.statistics()
    assert stats.failed == len(failed)
    assert stats.succeeded == 30 - len(failed)


async def test_items_that_are_not_requests_become_invalid_request_outcomes() -> None:
    fake = fake_provider()
    items: list[Any] = [TextToImage(prompt="one"), "a banana", 42, None, TextToImage(prompt="two")]
    async with client_for(fake) as client:
        outcomes = await BatchRunner(client).run(items)

    assert [o.ok for o in outcomes] == [True, False, False, False, True]
    for outcome in outcomes[1:4]:
        assert isinstance(outcome.error, InvalidRequestError)
        assert outcome.error.field == "request"
        assert outcome.task_id is None
        assert outcome.request is items[outcome.index]
    assert "str" in str(outcomes[1].error)
    assert fake.stats.create_requests == 2
    assert fake.stats.tasks_created == 2


async def test_insufficient_credits_stop_creation_and_created_tasks_still_finish() -> None:
    fake = fake_provider(credits=4, duration=(2.0, 4.0))
    async with client_for(fake) as client:
        runner = BatchRunner(client)
        outcomes = await runner.run(prompts(20))

    assert fake.stats.tasks_created == 4
    succeeded = [o for o in outcomes if o.ok]
    assert len(succeeded) == 4
    assert {o.task_id for o in succeeded} == set(fake.tasks)
    for outcome in outcomes:
        if not outcome.ok:
            assert isinstance(outcome.error, InsufficientCreditsError)
            assert outcome.error.code == 402
            assert outcome.task_id is None
    # Only the creates already on their way met the 402; the rest were never sent.
    assert fake.stats.insufficient_credits <= 8
    assert fake.stats.create_requests == 4 + fake.stats.insufficient_credits
    assert runner.statistics().created == 4
    assert_no_duplicates(fake)


@pytest.mark.parametrize("refusal", ["credits", "key"])
async def test_one_slot_means_exactly_one_refused_create(refusal: str) -> None:
    # The next request waits for the slot the refused create holds, and is not sent after it.
    fake = fake_provider(credits=1 if refusal == "credits" else None)
    kwargs = {"api_key": "sk-wrong"} if refusal == "key" else {}
    async with client_for(fake, **kwargs) as client:
        outcomes = await BatchRunner(client, max_active=1).run(prompts(5))
    refused = fake.stats.insufficient_credits + fake.stats.unauthorized
    assert refused == 1
    expected = InsufficientCreditsError if refusal == "credits" else AuthenticationError
    first_refused = 1 if refusal == "credits" else 0
    assert all(o.ok for o in outcomes[:first_refused])
    assert all(isinstance(o.error, expected) for o in outcomes[first_refused:])
    assert fake.stats.create_requests == first_refused + 1


async def test_a_wrong_key_stops_the_batch_after_a_handful_of_creates() -> None:
    fake = fake_provider()
    async with client_for(fake, api_key="sk-wrong") as client:
        outcomes = await BatchRunner(client).run(prompts(40))

    assert len(outcomes) == 40
    for outcome in outcomes:
        assert isinstance(outcome.error, AuthenticationError)
        assert outcome.task_id is None
        assert "sk-wrong" not in str(outcome.error)
    assert fake.stats.create_requests <= 8
    assert fake.stats.query_requests == 0
    assert fake.stats.tasks_created == 0


async def test_a_rejected_request_is_an_outcome_and_the_rest_go_on() -> None:
    def reject(request: httpx.Request, _response: httpx.Response) -> httpx.Response | None:
        if is_create(request) and prompt_of(request).endswith("#3"):
            return envelope(400, "prompt rejected by the provider")
        if is_create(request) and prompt_of(request).endswith("#5"):
            return envelope(422, "validation failed", status=200)
        return None

    fake = fake_provider()
    async with client_for(fake, reject) as client:
        outcomes = await BatchRunner(client).run(prompts(8))

    assert isinstance(outcomes[3].error, BadRequestError)
    assert isinstance(outcomes[5].error, UnprocessableEntityError)
    assert [o.index for o in outcomes if o.ok] == [0, 1, 2, 4, 6, 7]


# -- limits, learned or given ------------------------------------------------------------------


async def test_runner_told_nothing_learns_the_active_limit_from_409s() -> None:
    # Tasks long enough that the first wave overlaps, past the 5 slots, on a slow machine.
    fake = fake_provider(
        tier="basic", create_per_second=1000, query_per_second=1000, duration=(5.0, 10.0)
    )
    async with client_for(fake) as client:
        runner = BatchRunner(client)
        outcomes = await runner.run(prompts(40))

    assert all(o.ok for o in outcomes)
    stats = runner.statistics()
    assert fake.stats.max_active <= 5
    assert stats.max_active == 5
    assert stats.max_active_known
    assert stats.conflicts == fake.stats.active_limited
    assert 1 <= stats.conflicts <= 5
    assert fake.stats.tasks_created == 40
    assert_no_duplicates(fake)


async def test_active_limit_is_learned_from_409s_without_a_body() -> None:
    """Providers of the family that do not say the limit: it is learned from what runs."""

    def strip(request: httpx.Request, response: httpx.Response) -> httpx.Response | None:
        if is_create(request) and response.status_code == 409:
            return envelope(409, "Active task limit exceeded")
        return None

    fake = fake_provider(tier=None, max_active=5, duration=(5.0, 10.0))
    async with client_for(fake, strip) as client:
        runner = BatchRunner(client)
        outcomes = await runner.run(prompts(40))

    assert all(o.ok for o in outcomes)
    stats = runner.statistics()
    assert stats.max_active_known
    assert 5 <= stats.max_active <= 8
    assert fake.stats.tasks_created == 40
    assert stats.conflicts == fake.stats.active_limited
    assert stats.conflicts <= 12  # a few while learning, not one per job
    assert_no_duplicates(fake)


async def test_tier_seeds_the_limits_so_no_409_or_429_is_met() -> None:
    # The fake runs in real time here, so that the tier's numbers mean what they say.
    fake = fake_provider(tier="basic", time_scale=1.0, duration=0.05)
    async with client_for(fake) as client:
        runner = BatchRunner(client, tier="basic")
        first = runner.statistics()
        outcomes = await runner.run(prompts(8))

    assert first.max_active == 5
    assert first.max_active_known
    assert first.create_rate is not None
    assert first.query_rate is not None
    assert all(o.ok for o in outcomes)
    assert fake.stats.active_limited == 0
    assert fake.stats.rate_limited == 0
    stats = runner.statistics()
    assert stats.conflicts == 0
    assert stats.rate_limited == 0
    assert fake.stats.max_active <= 5


async def test_rate_limit_is_learned_from_the_429_body() -> None:
    fake = fake_provider(create_per_second=2, time_scale=0.05, duration=(1.0, 3.0))
    async with client_for(fake) as client:
        runner = BatchRunner(client)
        outcomes = await runner.run(prompts(30))

    assert all(o.ok for o in outcomes)
    # One to learn the window; a late answer may cost one or two more (the margin widens).
    assert 1 <= fake.stats.rate_limited_create <= 5
    stats = runner.statistics()
    assert stats.rate_limited == fake.stats.rate_limited
    # 2 creates per 0.05 s window, learned from the body: 40/s, less a safety margin.
    assert stats.create_rate is not None
    assert 40 / 1.5 <= stats.create_rate <= 40
    assert fake.stats.tasks_created == 30
    assert_no_duplicates(fake)


async def test_headroom_on_an_unknown_cap_learns_the_cap_then_leaves_the_room() -> None:
    # Until the first 409 names the key's cap there is nothing to leave room of: a batch told
    # nothing learns the cap as any does, then runs at most the cap less its headroom.
    fake = fake_provider(max_active=10, duration=(5.0, 10.0))
    active_after_learning: list[int] = []

    def sample(stats: BatchStatistics) -> None:
        if stats.max_active_known:
            active_after_learning.append(fake.stats.active)

    async with client_for(fake) as client:
        runner = BatchRunner(client, headroom=2, on_progress=sample)
        outcomes = await runner.run(prompts(80))

    assert all(o.ok for o in outcomes)
    assert runner.statistics().max_active_known
    assert 1 <= fake.stats.active_limited <= 5
    assert active_after_learning
    assert max(active_after_learning) == 8
    assert_no_duplicates(fake)


async def test_max_active_given_is_never_exceeded() -> None:
    fake = fake_provider(duration=(1.0, 2.0))
    async with client_for(fake) as client:
        runner = BatchRunner(client, max_active=3)
        outcomes = await runner.run(prompts(15))
    assert all(o.ok for o in outcomes)
    assert fake.stats.max_active <= 3
    assert runner.statistics().max_active == 3


# -- faults: never pay twice, never lose a job -------------------------------------------------


async def test_faults_cause_no_duplicate_and_no_lost_job() -> None:
    fake = fake_provider(
        seed=3,
        faults=Faults(
            create={"500": 0.1, "drop_after": 0.1, "drop_before": 0.05, "200_500": 0.05},
            query={"500": 0.1, "drop_after": 0.1, "200_500": 0.05, "200_429": 0.05},
        ),
    )
    # Every kind of create fault at least once, first.
    fake.script("create", ["drop_after", "slow", "200_500", "500", "drop_before", "502_html"])
    fake.script("query", ["slow", "drop_after", "503_html", "record_null"])
    async with client_for(
        fake, timeout=0.05, retry=RetryPolicy(max_retries=10, backoff_base=0.002, backoff_max=0.01)
    ) as client:
        runner = BatchRunner(client)
        outcomes = await runner.run(prompts(30))

    assert len(outcomes) == 30
    assert all(o.ok for o in outcomes), [o.error for o in outcomes if not o.ok]
    stats = fake.stats
    assert stats.tasks_created == 30
    assert stats.idempotent_replays >= 2  # the dropped and the slow create were answered again
    assert stats.faults >= 10
    assert_no_duplicates(fake)
    assert {o.task_id for o in outcomes} == set(fake.tasks)


async def test_create_that_keeps_failing_is_an_outcome_not_a_crash() -> None:
    fake = fake_provider(faults=Faults(create={"drop_before": 1.0}))
    async with client_for(fake, max_retries=1) as client:
        outcomes = await BatchRunner(client).run(prompts(3))
    assert all(isinstance(o.error, APIConnectionError) for o in outcomes)
    assert fake.stats.tasks_created == 0


async def test_flaky_polls_do_not_drop_a_created_task() -> None:
    fake = fake_provider()
    fake.script("query", ["500"] * 6)
    async with client_for(fake, max_retries=0) as client:
        runner = BatchRunner(client)
        outcomes = await runner.run(prompts(3))
    assert all(o.ok for o in outcomes)
    assert runner.statistics().polls == fake.stats.query_requests


# -- task-level errors while following ---------------------------------------------------------


async def test_task_timeout_gives_a_wait_timeout_outcome_with_the_task_id(tmp_path: Path) -> None:
    fake = fake_provider(
        duration=lambda body: 500.0 if body["input"]["prompt"].endswith("#1") else 1.0
    )
    path = tmp_path / "batch.sqlite"
    async with client_for(fake) as client:
        outcomes = await BatchRunner(client, task_timeout=0.2, journal=path).run(prompts(3))

    assert outcomes[0].ok
    assert outcomes[2].ok
    error = outcomes[1].error
    assert isinstance(error, WaitTimeoutError)
    assert error.task_id == outcomes[1].task_id
    assert outcomes[1].task_id in fake.tasks
    rows = {row.index: row for row in await journal_rows(path)}
    assert rows[1].status == "created"  # a later run resumes polling it
    assert rows[1].task_id == outcomes[1].task_id


async def test_errors_while_following_a_task_are_outcomes() -> None:
    def answer(request: httpx.Request, response: httpx.Response) -> httpx.Response | None:
        if is_create(request):
            return None
        task_id = request.url.params["taskId"]
        prompt = fake.tasks[task_id].prompt
        if prompt.endswith("#0"):
            return envelope(401, "key revoked")
        if prompt.endswith("#1"):
            data = json.loads(response.content)["data"]
            if data["state"] == "success":
                data["resultJson"] = json.dumps({"resultUrls": []})
                return envelope(200, "success", data)
        if prompt.endswith("#2"):
            return envelope(400, "bad taskId")
        return None

    fake = fake_provider()
    async with client_for(fake, answer) as client:
        outcomes = await BatchRunner(client).run(prompts(4))

    assert isinstance(outcomes[0].error, AuthenticationError)
    assert isinstance(outcomes[1].error, DecodeError)
    assert isinstance(outcomes[2].error, BadRequestError)
    assert outcomes[3].ok
    assert all(o.task_id is not None for o in outcomes)


async def test_unreadable_answers_while_polling_end_the_job_only_if_they_persist() -> None:
    garbled: dict[str, int] = {}

    def garble(request: httpx.Request, _response: httpx.Response) -> httpx.Response | None:
        if is_create(request):
            return None
        prompt = fake.tasks[request.url.params["taskId"]].prompt
        if prompt.endswith("#0") or (prompt.endswith("#1") and garbled.get(prompt, 0) < 2):
            garbled[prompt] = garbled.get(prompt, 0) + 1
            return httpx.Response(200, text="<html>try again</html>")
        return None

    fake = fake_provider()
    async with client_for(fake, garble) as client:
        outcomes = await BatchRunner(client).run(prompts(3))

    assert isinstance(outcomes[0].error, DecodeError)
    assert outcomes[0].task_id is not None
    assert outcomes[1].ok  # two unreadable answers, then a good one
    assert outcomes[2].ok


async def test_a_resumed_task_whose_first_poll_fails_is_still_followed(tmp_path: Path) -> None:
    path = tmp_path / "batch.sqlite"
    request = TextToImage(prompt="resumed")
    fake = fake_provider()
    fp = fingerprint(request_body(request))
    journal = await Journal.open(path)
    async with client_for(fake) as client:
        task_id = await client.create_task(request, request_id=journal.request_id(0, fp))
    journal.record(0, fp, journal.request_id(0, fp), status="created", task_id=task_id)
    await journal.aclose()

    fake.script("query", ["500", "drop_before"])
    async with client_for(fake, max_retries=0) as client:
        (outcome,) = await BatchRunner(client, journal=path).run([request])
    assert outcome.ok
    assert outcome.task_id == task_id
    assert not outcome.resumed
    assert fake.stats.tasks_created == 1
    assert fake.stats.create_requests == 1


# -- cancellation and resume -------------------------------------------------------------------


async def test_cancelling_a_run_leaves_nothing_running_and_journals_every_task(
    tmp_path: Path,
) -> None:
    path = tmp_path / "batch.sqlite"
    fake = fake_provider(duration=(5.0, 10.0))
    async with client_for(fake) as client:
        runner = BatchRunner(client, max_active=4, journal=path)
        finished = False
        with anyio.CancelScope() as scope:

            async def cancel_mid_batch() -> None:
                await wait_until(lambda: fake.stats.tasks_created >= 6)
                scope.cancel()

            async with anyio.create_task_group() as group:
                group.start_soon(cancel_mid_batch)
                await runner.run(prompts(40))
                finished = True
        assert not finished
        assert scope.cancelled_caught
        assert runner.statistics().running == 0
        assert client.limits.active.active == 0
        before = fake.stats
        await anyio.sleep(0.05)
        after = fake.stats
        assert (after.create_requests, after.query_requests) == (
            before.create_requests,
            before.query_requests,
        )

        # The runner is free again.
        assert await runner.run([]) == []

    assert_no_duplicates(fake)
    rows = await journal_rows(path)
    journaled = {row.task_id for row in rows if row.task_id is not None}
    assert 6 <= len(fake.tasks) < 40
    assert set(fake.tasks) == journaled
    for row in rows:
        if row.task_id is not None:
            assert fake.tasks[row.task_id].request_id == row.request_id


@pytest.mark.parametrize("how", ["break", "cancel"])
async def test_resuming_an_interrupted_batch_creates_nothing_twice(
    tmp_path: Path, how: str
) -> None:
    path = tmp_path / "batch.sqlite"
    requests = prompts(16, "resume")
    fake = fake_provider(duration=(2.0, 8.0), fail_rate=0.2, seed=11)
    first: dict[int, BatchOutcome] = {}
    async with client_for(fake) as client:
        runner = BatchRunner(client, max_active=4, journal=path)
        with anyio.CancelScope() as scope:
            async with runner.stream(iter(requests)) as results:
                async for outcome in results:
                    first[outcome.index] = outcome
                    if len(first) == 5:
                        if how == "break":
                            break
                        scope.cancel()
    assert len(first) == 5
    rows = {row.index: row for row in await journal_rows(path)}
    created = {i: row.task_id for i, row in rows.items() if row.status == "created"}
    finished = {i for i, row in rows.items() if row.finished}
    assert set(first) <= finished
    assert created, "some tasks were still running when the batch was interrupted"
    tasks_before = fake.stats.tasks_created
    assert tasks_before < 16
    fake.reset_stats()

    # A new process: a new client and runner, the same journal.
    async with client_for(fake) as client:
        runner = BatchRunner(client, max_active=4, journal=path)
        outcomes = await runner.run(requests)

    assert [o.index for o in outcomes] == list(range(16))
    assert len(fake.tasks) == 16
    stats = fake.stats
    assert stats.tasks_created == 16 - tasks_before
    assert stats.create_requests - stats.idempotent_replays == 16 - tasks_before
    assert_no_duplicates(fake)
    log = fake.recent_requests
    assert len(log) < 256
    recreated = {r.task_id for r in log if r.endpoint == "create"} & set(created.values())
    assert not recreated  # jobs journaled as created were polled, not sent again
    for index, outcome in enumerate(outcomes):
        assert outcome.request is requests[index]
        assert outcome.task_id is not None
        assert fake.tasks[outcome.task_id].prompt == requests[index].prompt
        assert outcome.ok == (not fake.tasks[outcome.task_id].failed)
        if index in finished:
            assert outcome.resumed
            assert outcome.task_id == rows[index].task_id
        else:
            assert not outcome.resumed
        if index in created:
            assert outcome.task_id == created[index]  # polled again, not created again
    for index, outcome in first.items():
        again = outcomes[index]
        assert again.task_id == outcome.task_id
        assert again.ok == outcome.ok
        if outcome.ok:
            assert again.result is not None
            assert outcome.result is not None
            assert again.result.urls == outcome.result.urls
        else:
            assert isinstance(again.error, TaskFailedError)
            assert isinstance(outcome.error, TaskFailedError)
            assert again.error.fail_code == outcome.error.fail_code
    assert runner.statistics().resumed == len(finished)

    # A third run sends nothing at all.
    async with client_for(fake) as client:
        third = await BatchRunner(client, journal=path).run(requests)
    assert [o.index for o in third if not o.resumed] == []
    assert fake.stats.create_requests == stats.create_requests
    assert fake.stats.query_requests == stats.query_requests


async def test_a_journal_of_another_batch_is_refused_job_by_job(tmp_path: Path) -> None:
    path = tmp_path / "batch.sqlite"
    fake = fake_provider()
    async with client_for(fake) as client:
        await BatchRunner(client, journal=path).run(prompts(3))
        stats = fake.stats
        changed = prompts(3)
        changed[1] = TextToImage(prompt="something else entirely")
        outcomes = await BatchRunner(client, journal=path).run(changed)

    assert outcomes[0].resumed
    assert outcomes[2].resumed
    error = outcomes[1].error
    assert isinstance(error, JournalError)
    assert "request 2 of the batch (job 1) differs from the request journaled" in str(error)
    assert outcomes[1].task_id is None
    assert fake.stats.create_requests == stats.create_requests
    assert fake.stats.tasks_created == 3


async def test_resumed_outcomes_are_rebuilt_from_every_kind_of_row(tmp_path: Path) -> None:
    path = tmp_path / "batch.sqlite"
    requests = prompts(5, "rows")
    fps = [fingerprint(request_body(r)) for r in requests]
    journal = await Journal.open(path)
    rid = journal.request_id
    journal.record(
        0, fps[0], rid(0, fps[0]), status="succeeded", task_id="t0", urls=["https://x/0.png"]
    )
    journal.record(
        1,
        fps[1],
        rid(1, fps[1]),
        status="failed",
        task_id="t1",
        error_type="TaskFailedError",
        error_message="nsfw",
        error_code="NSFW",
    )
    journal.record(
        2,
        fps[2],
        rid(2, fps[2]),
        status="rejected",
        error_type="UnprocessableEntityError",
        error_message="bad size",
        error_code="422",
    )
    journal.record(
        3, fps[3], rid(3, fps[3]), status="rejected", error_message=None, error_code=None
    )
    journal.record(4, fps[4], rid(4, fps[4]), status="created", task_id="task_unknown_here")
    await journal.aclose()

    fake = fake_provider()
    async with client_for(fake) as client:
        runner = BatchRunner(client, journal=path)
        outcomes = await runner.run(requests)

    assert outcomes[0].resumed
    assert outcomes[0].result is not None
    assert outcomes[0].result.urls == ("https://x/0.png",)
    assert outcomes[0].task_id == "t0"
    error1 = outcomes[1].error
    assert isinstance(error1, TaskFailedError)
    assert (error1.fail_code, error1.fail_message) == ("NSFW", "nsfw")
    error2 = outcomes[2].error
    assert isinstance(error2, UnprocessableEntityError)
    assert error2.code == 422
    assert "bad size" in str(error2)
    assert isinstance(outcomes[3].error, BadRequestError)
    # A created task the provider does not know: polled, not created again.
    assert isinstance(outcomes[4].error, TaskNotFoundError)
    assert not outcomes[4].resumed
    assert fake.stats.create_requests == 0
    assert runner.statistics().resumed == 4


async def test_journal_is_read_in_chunks_for_long_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Chunks of 16 rows (512 in use): 120 jobs read the journal in eight chunks, the last
    # one short, as a long batch does.
    monkeypatch.setattr(_batch_input, "_JOURNAL_CHUNK", 16)
    path = tmp_path / "batch.sqlite"
    count = 120
    requests = prompts(count, "long")
    journal = await Journal.open(path)
    for index, request in enumerate(requests):
        if index % 7 == 3:
            continue  # never journaled: created in this run
        fp = fingerprint(request_body(request))
        journal.record(
            index,
            fp,
            journal.request_id(index, fp),
            status="succeeded",
            task_id=f"t{index}",
            urls=[f"https://x/{index}.png"],
        )
    await journal.flush()
    await journal.aclose()

    fake = fake_provider()
    async with client_for(fake) as client:
        outcomes = await BatchRunner(client, journal=path).run(requests)

    fresh = [i for i in range(count) if i % 7 == 3]
    assert fake.stats.tasks_created == len(fresh)
    for index, outcome in enumerate(outcomes):
        assert outcome.ok
        if index % 7 == 3:
            assert not outcome.resumed
        else:
            assert outcome.resumed
            assert outcome.task_id == f"t{index}"


async def test_rejected_jobs_are_journaled_and_not_sent_again(tmp_path: Path) -> None:
    def reject(request: httpx.Request, _response: httpx.Response) -> httpx.Response | None:
        if is_create(request) and prompt_of(request).endswith("#1"):
            return envelope(400, "prompt rejected")
        return None

    path = tmp_path / "batch.sqlite"
    fake = fake_provider()
    async with client_for(fake, reject) as client:
        await BatchRunner(client, journal=path).run(prompts(3))
        sent = fake.stats.create_requests
        outcomes = await BatchRunner(client, journal=path).run(prompts(3))
    assert fake.stats.create_requests == sent
    assert outcomes[1].resumed
    assert isinstance(outcomes[1].error, BadRequestError)
    assert "prompt rejected" in str(outcomes[1].error)


async def test_a_file_that_is_not_a_journal_raises_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.sqlite"
    path.write_text("these are my notes, not a database\n" * 20)
    fake = fake_provider()
    async with client_for(fake) as client:
        runner = BatchRunner(client, journal=path)
        with pytest.raises(JournalError, match="is not a nanobanana-async batch journal"):
            await runner.run(prompts(2))
        with pytest.raises(JournalError, match="is not a nanobanana-async batch journal"):
            async with runner.stream(prompts(2)):
                pass
        assert path.read_text().startswith("these are my notes")
        assert fake.stats.create_requests == 0
        # The runner is not left busy: with the file out of the way, it runs.
        path.unlink()
        assert all(o.ok for o in await runner.run(prompts(2)))


async def test_an_sqlite_database_of_another_program_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "app.sqlite"
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE users (name TEXT)")
        db.commit()
    fake = fake_provider()
    async with client_for(fake) as client:
        with pytest.raises(JournalError, match="not a nanobanana-async batch journal"):
            await BatchRunner(client, journal=path).run(prompts(1))
    assert fake.stats.create_requests == 0
    with contextlib.closing(sqlite3.connect(path)) as db:
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master")}
    assert tables == {"users"}  # not written into


# -- statistics, hooks, API guards -------------------------------------------------------------


async def test_statistics_count_the_run() -> None:
    fake = fake_provider(
        tier="basic", create_per_second=1000, query_per_second=1000, fail_rate=0.3, seed=5
    )
    async with client_for(fake) as client:
        runner = BatchRunner(client)
        empty = runner.statistics()
        outcomes = await runner.run(prompts(20))

    assert empty.submitted == empty.created == empty.polls == 0
    assert empty.elapsed == 0.0
    assert empty.polls_per_task == 0.0
    stats = runner.statistics()
    failed = sum(1 for o in outcomes if not o.ok)
    assert stats.submitted == 20
    assert stats.created == 20
    assert stats.running == 0
    assert stats.succeeded == 20 - failed
    assert stats.failed == failed
    assert stats.done == 20
    assert stats.resumed == 0
    assert stats.polls == fake.stats.query_requests
    assert stats.polls_per_task == pytest.approx(stats.polls / 20)
    assert stats.polls_per_task >= 1
    assert stats.conflicts == fake.stats.active_limited
    assert stats.rate_limited == fake.stats.rate_limited
    assert stats.elapsed > 0


async def test_statistics_count_from_the_start_of_each_run() -> None:
    fake = fake_provider()
    async with client_for(fake) as client:
        # What the client met before this run (another caller of the same key, say).
        client.limits.active.on_conflict()
        client.limits.create.on_rate_limited(0.0)
        before = client.limits_snapshot()
        assert (before.conflicts, before.rate_limited) == (1, 1)
        runner = BatchRunner(client)
        await runner.run(prompts(3))
    stats = runner.statistics()
    assert (stats.conflicts, stats.rate_limited) == (0, 0)
    assert stats.submitted == 3


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_progress_hook_is_called_once_per_outcome(kind: str) -> None:
    calls: list[BatchStatistics] = []

    def sync_hook(stats: BatchStatistics) -> None:
        calls.append(stats)

    async def async_hook(stats: BatchStatistics) -> None:
        await anyio.lowlevel.checkpoint()
        calls.append(stats)

    fake = fake_provider()
    items: list[Any] = [*prompts(9), "not a request"]
    async with client_for(fake) as client:
        runner = BatchRunner(client, on_progress=sync_hook if kind == "sync" else async_hook)
        await runner.run(items)

    assert len(calls) == 10
    dones = [s.done for s in calls]
    assert dones == sorted(dones)
    assert dones[-1] == 10
    assert calls[-1].failed == 1
    assert all(isinstance(s, BatchStatistics) for s in calls)


async def test_one_runner_cannot_run_two_batches_at_once() -> None:
    fake = fake_provider()
    async with client_for(fake) as client:
        runner = BatchRunner(client)
        async with runner.stream(prompts(2)) as results:
            with pytest.raises(RuntimeError, match="already running"):
                await runner.run(prompts(1))
            assert len([o async for o in results]) == 2
        # Once it is done, it runs again.
        assert len(await runner.run(prompts(1))) == 1
        # Two runners on one client may run at once.
        async with anyio.create_task_group() as group:
            for prefix in ("x", "y"):
                group.start_soon(BatchRunner(client).run, prompts(3, prefix))
    assert fake.stats.tasks_created == 2 + 1 + 6


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"tier": "gold"}, "tier"),
        ({"max_active": 0}, "max_active"),
        ({"max_active": -3}, "max_active"),
        ({"task_timeout": 0}, "task_timeout"),
        ({"task_timeout": -1.0}, "task_timeout"),
        ({"task_timeout": float("nan")}, "task_timeout"),
    ],
)
async def test_invalid_settings_are_refused(kwargs: dict[str, Any], field: str) -> None:
    fake = fake_provider()
    async with client_for(fake) as client:
        with pytest.raises(InvalidRequestError) as caught:
            BatchRunner(client, **kwargs)
    assert caught.value.field == field
    assert isinstance(caught.value, ValueError)


async def test_image_to_image_requests_run_too() -> None:
    fake = fake_provider()
    requests = [
        ImageToImage(prompt="make it blue", image_urls=["https://example.com/a.png"]),
        TextToImage(prompt="a banana", output_format="jpeg"),
    ]
    async with client_for(fake) as client:
        outcomes = await BatchRunner(client).run(requests)
    assert all(o.ok for o in outcomes)
    assert fake.tasks[outcomes[0].task_id or ""].model == "nano-banana-image-to-image"


async def test_statistics_carry_the_total_and_split_running_into_provider_and_waiting() -> None:
    seen: list[BatchStatistics] = []
    fake = fake_provider(max_active=2)
    async with client_for(fake) as client:
        runner = BatchRunner(client, max_active=2)

        async def sample() -> None:
            while True:
                seen.append(runner.statistics())
                await anyio.sleep(0.001)

        async with anyio.create_task_group() as group:
            group.start_soon(sample)
            await runner.run(prompts(6))
            group.cancel_scope.cancel()
        assert runner.statistics().total == 6
        during = [stats for stats in seen if stats.submitted]
        assert all(stats.total == 6 for stats in during)
        # Never more tasks on the provider than the cap; the rest read wait, and it adds up.
        assert all(stats.on_provider <= 2 for stats in during)
        assert max(stats.on_provider for stats in during) == 2
        assert max(stats.waiting for stats in during) >= 1
        assert all(stats.done + stats.on_provider + stats.waiting <= 6 for stats in during)
        final = runner.statistics()
        assert (final.on_provider, final.waiting, final.running) == (0, 0, 0)

        def lazy() -> Iterator[TextToImage]:
            yield from prompts(3, prefix="lazy")

        await runner.run(lazy())
        assert runner.statistics().total is None
        await runner.run(lazy(), total=3)
        assert runner.statistics().total == 3
