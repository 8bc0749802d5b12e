"""`AsyncNanoBanana.with_options` and `with_raw_response`: per-call options and answer metadata."""

from __future__ import annotations

import pytest

from nanobanana_async import (
    ImageToImage,
    InvalidRequestError,
    RawResponse,
    ServerError,
    Task,
    TextToImage,
)
from nanobanana_async.testing import FakeNanoBanana

pytestmark = pytest.mark.anyio

PNG = b"\x89PNG\r\n\x1a\n" + bytes(32)  # a picture's bytes, as far as the checks go


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


class _Host:
    """An image host that hands out made-up URLs and counts what it was given."""

    def __init__(self) -> None:
        self.names: list[str] = []

    async def publish(self, data: bytes, *, name: str, content_type: str, valid_for: float) -> str:
        self.names.append(name)
        return f"https://images.example/{name}"


async def test_a_raw_create_publishes_local_images_as_create_task_does() -> None:
    fake = FakeNanoBanana(time_scale=0.01)
    request = ImageToImage(prompt="edit", image_urls=[PNG])
    host = _Host()
    async with fake.client(image_host=host) as client:
        raw = await client.with_raw_response.create_task(request)
    assert len(host.names) == 1
    sent = fake.tasks[raw.value].body["input"]["image_urls"]
    assert sent == [f"https://images.example/{host.names[0]}"]


async def test_a_raw_create_with_local_images_and_no_host_sends_nothing() -> None:
    fake = FakeNanoBanana(time_scale=0.01)
    async with fake.client() as client:
        with pytest.raises(InvalidRequestError, match="image host") as info:
            await client.with_raw_response.create_task(
                ImageToImage(prompt="edit", image_urls=[PNG])
            )
    assert info.value.field == "image_urls"
    assert fake.stats.create_requests == 0
