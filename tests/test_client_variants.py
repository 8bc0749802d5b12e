"""`AsyncNanoBanana.with_options` and `with_raw_response`: per-call options and answer metadata."""

from __future__ import annotations

import pytest

from nanobanana_async import RawResponse, ServerError, Task, TextToImage
from nanobanana_async.testing import FakeNanoBanana

pytestmark = pytest.mark.anyio


async def test_with_options_shares_the_pool_the_limits_and_the_poll_planner() -> None:
    fake = FakeNanoBanana(time_scale=0.01)
    async with fake.client() as client:
        derived = client.with_options(timeout=5.0, max_retries=0)
        assert derived.limits is client.limits
        assert derived.engine.planner is client.engine.planner
        assert derived.engine.caller.created is client.engine.caller.created
        task_id = await derived.create_task(TextToImage(prompt="a banana"))
        result = await derived.wait_for_result(task_id, timeout=10)
        assert result.task_id == task_id
        await derived.aclose()
        # Closing the derived client closed nothing shared: the original goes on.
        assert (await client.get_task(task_id)).task_id == task_id
        assert "***" in repr(derived)
        other_poll = client.with_options(poll=client.poll_policy)
        assert other_poll.engine.planner is not client.engine.planner
        assert other_poll.durations is client.durations
    assert fake.stats.tasks_created == 1


async def test_with_options_changes_only_what_it_is_given() -> None:
    fake = FakeNanoBanana(time_scale=0.01)
    async with fake.client(max_retries=3) as client:
        fake.script("create", ["500"])
        with pytest.raises(ServerError):
            await client.with_options(max_retries=0).create_task(TextToImage(prompt="one"))
        fake.script("create", ["500"])
        # The original keeps its retries: the 500 is retried with the same request id.
        assert await client.create_task(TextToImage(prompt="two"))
        fake.script("create", ["500"])
        assert await client.with_options(timeout=30).create_task(TextToImage(prompt="three"))


async def test_raw_responses_carry_the_status_headers_and_request_id() -> None:
    fake = FakeNanoBanana(time_scale=0.01)
    async with fake.client() as client:
        created = await client.with_raw_response.create_task(
            TextToImage(prompt="a banana"), request_id="req-123"
        )
        assert isinstance(created, RawResponse)
        assert created.http_status == 200
        assert created.request_id == "req-123"
        assert created.headers["content-type"].startswith("application/json")
        assert created.parse() == created.value
        read = await client.with_raw_response.get_task(created.value)
        task: Task = read.parse()
        assert task.task_id == created.value
        assert read.http_status == 200
        fake.script("create", ["500"])
        retried = await client.with_raw_response.create_task(TextToImage(prompt="again"))
        assert retried.http_status == 200  # the answer the value came from, not the 500
