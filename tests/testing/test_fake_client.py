"""End to end: the real `AsyncNanoBanana` against the fake, in-process and over loopback."""

from __future__ import annotations

import anyio
import pytest

from nanobanana_async import (
    AsyncNanoBanana,
    AuthenticationError,
    InsufficientCreditsError,
    PollPolicy,
    RetryPolicy,
    ServerError,
    TaskFailedError,
    TextToImage,
)
from nanobanana_async.testing import FakeNanoBanana

pytestmark = pytest.mark.anyio

FAST_RETRIES = RetryPolicy(backoff_base=0.01, backoff_max=0.05)


async def test_generate_and_download_in_process() -> None:
    fake = FakeNanoBanana(tier="basic", time_scale=0.01)
    async with fake.client() as client:
        result = await client.generate(TextToImage(prompt="a banana"), timeout=30)
        image = await client.download(result.urls[0])
    assert image.startswith(b"\x89PNG")
    assert result.urls[0].startswith("https://results.fake-nanobanana.test/files/")
    stats = fake.stats
    assert stats.tasks_created == 1
    assert stats.duplicates == 0
    assert stats.result_requests == 1
    assert stats.authorization_sent_to_result_host is False
    assert fake.tasks[result.task_id].request_id  # the client sent an X-Request-ID


async def test_client_kwargs_are_passed_through() -> None:
    fake = FakeNanoBanana(tier=None)
    fake.script("create", ["500"])
    async with fake.client(max_retries=0) as client:
        with pytest.raises(ServerError):
            await client.create_task(TextToImage(prompt="x"))
    async with fake.client(api_key="sk-wrong") as client:
        with pytest.raises(AuthenticationError):
            await client.create_task(TextToImage(prompt="x"))


async def test_faults_on_create_never_make_the_client_pay_twice() -> None:
    fake = FakeNanoBanana(tier=None, time_scale=0.01)
    fake.script("create", ["drop_after", "500", "200_500", "drop_before", "503_html", "slow"])
    async with fake.client(retry=FAST_RETRIES, max_retries=6, timeout=0.2) as client:
        task_id = await client.create_task(TextToImage(prompt="only once"))
    stats = fake.stats
    assert stats.create_requests == 7
    assert stats.tasks_created == 1
    assert stats.duplicates == 0
    assert stats.idempotent_replays >= 1
    assert list(fake.tasks) == [task_id]


async def test_credits_and_failures_surface_as_errors() -> None:
    fake = FakeNanoBanana(tier=None, time_scale=0.01, credits=0)
    async with fake.client() as client:
        with pytest.raises(InsufficientCreditsError):
            await client.create_task(TextToImage(prompt="x"))
    fake = FakeNanoBanana(tier=None, time_scale=0.01, fail_rate=1.0)
    async with fake.client() as client:
        with pytest.raises(TaskFailedError) as caught:
            await client.generate(TextToImage(prompt="x"), timeout=30)
    assert caught.value.fail_code == "500"


async def test_the_client_respects_a_free_tier() -> None:
    fake = FakeNanoBanana(tier="free", time_scale=0.01)
    async with fake.client() as client:  # it learns the limits from 429s and 409s
        with anyio.fail_after(30):
            for index in range(3):
                await client.generate(TextToImage(prompt=f"banana {index}"))
    stats = fake.stats
    assert stats.tasks_created == 3
    assert stats.duplicates == 0
    assert stats.max_active == 1


@pytest.mark.real_time
async def test_generate_and_download_over_loopback() -> None:
    fake = FakeNanoBanana(tier="basic", time_scale=0.01)
    async with (
        fake.serve() as base_url,
        AsyncNanoBanana(
            api_key=fake.api_key, base_url=base_url, poll=PollPolicy(initial=0.02)
        ) as client,
    ):
        result = await client.generate(TextToImage(prompt="a banana", output_format="jpeg"))
        image = await client.download(result.urls[0])
    assert result.urls[0].startswith(f"{base_url}/files/")
    assert result.urls[0].endswith(".jpg")
    assert image.startswith(b"\xff\xd8")
    assert fake.stats.authorization_sent_to_result_host is False
