"""The public API's types, as a user's code sees them. Type-checked only, never run.

mypy (strict, with ``warn_unused_ignores``) and pyright check this file: an ``assert_type`` that
no longer holds, or a ``type: ignore`` that is no longer needed because a wrong call became
accepted, fails the typecheck session.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, assert_type

import httpx

import nanobanana_async as nb
from nanobanana_async import (
    DEFAULT_BASE_URL,
    IMAGE_SIZES,
    TIERS,
    APIStatusError,
    AsyncNanoBanana,
    BatchOutcome,
    BatchRunner,
    DownloadError,
    ImageRequest,
    ImageSize,
    ImageToImage,
    InvalidRequestError,
    LimitsSnapshot,
    OutputFormat,
    PollPolicy,
    RateLimitError,
    RetryPolicy,
    Task,
    TaskFailedError,
    TaskResult,
    TaskState,
    TextToImage,
    TierLimits,
    WaitTimeoutError,
)
from nanobanana_async.limits import ConnectedLimits


def requests() -> list[ImageRequest]:
    size: ImageSize = "16:9"
    fmt: OutputFormat = "jpeg"
    text = TextToImage(prompt="a banana", image_size=size, output_format=fmt, nsfw_checker=False)
    assert_type(text.prompt, str)
    assert_type(text.image_size, ImageSize)
    assert_type(text.aspect_ratio, ImageSize)
    assert_type(text.output_format, OutputFormat)
    assert_type(text.nsfw_checker, bool)
    edit = ImageToImage(prompt="gold", image_urls=("https://cdn.example.com/in.png",))
    assert_type(edit.image_urls, tuple[str | nb.LocalImage, ...])
    assert_type(edit.local_images, tuple[nb.LocalImage, ...])
    ImageToImage(
        prompt="gold", image_urls=[Path("in.png"), b"\x89PNG", "https://cdn.example.com/in.jpg"]
    )
    ImageToImage(prompt="gold", image_urls=[1])  # type: ignore[list-item]
    ImageToImage(prompt="gold", image_urls=["https://a.example/1.png"], aspect_ratio="auto")
    TextToImage(prompt="x", image_size="2:1")  # type: ignore[arg-type]
    TextToImage(prompt="x", output_format="gif")  # type: ignore[arg-type]
    TextToImage("positional")  # type: ignore[call-arg]
    ImageToImage(prompt="x")  # type: ignore[call-arg]
    return [text, edit]


def on_update(task: Task) -> None:
    assert_type(task.state, TaskState)


async def on_update_async(task: Task) -> None:
    assert_type(task.raw_state, str)


async def client_calls(http: httpx.AsyncClient) -> None:
    async with AsyncNanoBanana(
        api_key="key",
        base_url="https://aigptimage.com",
        timeout=30.0,
        max_retries=2,
        http_client=http,
        download_client=http,
        tier="basic",
        max_active=5,
        retry=RetryPolicy(max_retries=5, backoff_base=0.25),
        poll=PollPolicy(initial=0.5, maximum=5.0),
        max_download_bytes=10_000_000,
    ) as client:
        assert_type(client, AsyncNanoBanana)
        AsyncNanoBanana(timeout=httpx.Timeout(10.0), base_url=httpx.URL(DEFAULT_BASE_URL))

        task_id = await client.create_task(TextToImage(prompt="a"), request_id=None)
        assert_type(task_id, str)
        await client.create_task(TextToImage(prompt="a"), request_id="job-1", timeout=10)
        await client.create_task({"prompt": "a"})  # type: ignore[arg-type]

        task = await client.get_task(task_id)
        assert_type(task, Task)
        assert_type(task.task_id, str)
        assert_type(task.model, str)
        assert_type(task.urls, tuple[str, ...])
        assert_type(task.fail_code, str | None)
        assert_type(task.fail_message, str | None)
        assert_type(task.cost_time, float | None)
        assert_type(task.create_time, datetime | None)
        assert_type(task.complete_time, datetime | None)
        assert_type(task.elapsed, float | None)
        assert_type(task.is_finished, bool)
        assert_type(task.param, Mapping[str, Any] | None)
        assert_type(task.state.is_finished, bool)

        result = await client.wait_for_result(task_id, timeout=600, on_update=on_update)
        assert_type(result, TaskResult)
        assert_type(result.urls, tuple[str, ...])
        assert_type(result.task, Task)
        await client.wait_for_result(task_id, on_update=on_update_async)
        await client.wait_for_result(task_id, on_update=lambda task: print(task.state))

        result = await client.generate(
            ImageToImage(prompt="x", image_urls=["https://cdn.example.com/in.png"]),
            request_id="r",
            timeout=120,
            on_update=on_update,
        )
        data = await client.download(result.urls[0], max_bytes=1024)
        assert_type(data, bytes)
        paths = await client.save_result(result, Path("out"), stem="banana", max_bytes=None)
        assert_type(paths, list[Path])
        await client.save_result(result, "out")

        assert_type(client.base_url, httpx.URL)
        snapshot = client.limits_snapshot()
        assert_type(snapshot, LimitsSnapshot)
        assert_type(snapshot.max_active, int)
        assert_type(snapshot.create_rate, float | None)
        assert_type(client.poll_policy, PollPolicy)
        quick = client.with_options(timeout=5.0, max_retries=0)
        assert_type(quick, AsyncNanoBanana)
        raw = await client.with_raw_response.create_task(TextToImage(prompt="x"))
        assert_type(raw, nb.RawResponse[str])
        assert_type(raw.http_status, int)
        assert_type(raw.headers, httpx.Headers)
        assert_type(raw.request_id, str | None)
        assert_type((await client.with_raw_response.get_task("t")).parse(), Task)
        await client.aclose()


async def batches(client: AsyncNanoBanana) -> None:
    runner = BatchRunner(client, max_active=5, tier="basic", journal=Path("batch.sqlite"))
    outcomes = await runner.run(requests())
    assert_type(outcomes, list[BatchOutcome[ImageRequest]])
    texts = await runner.run([TextToImage(prompt="one")], total=1)
    assert_type(texts, list[BatchOutcome[TextToImage]])
    assert_type(texts[0].request, TextToImage)
    assert_type(runner.statistics().total, int | None)
    assert_type(runner.statistics().on_provider, int)
    assert_type(runner.statistics().waiting, int)
    tier: nb.TierName = "pro"
    BatchRunner(client, tier=tier)
    BatchRunner(client, tier="platinum")  # type: ignore[arg-type]  # a typo is caught

    async def lazy() -> AsyncIterator[ImageRequest]:
        yield TextToImage(prompt="one")

    async with runner.stream(lazy()) as results:
        async for outcome in results:
            assert_type(outcome, BatchOutcome[ImageRequest])
            assert_type(outcome.index, int)
            assert_type(outcome.task_id, str | None)
            assert_type(outcome.result, TaskResult | None)
            assert_type(outcome.error, nb.NanoBananaError | None)


def errors(exc: Exception) -> None:
    if isinstance(exc, APIStatusError):
        assert_type(exc.code, int)
        assert_type(exc.message, str)
        assert_type(exc.data, Any)
        assert_type(exc.http_status, int)
        assert_type(exc.request_id, str | None)
    if isinstance(exc, RateLimitError):
        assert_type(exc.retry_after, float | None)
    if isinstance(exc, TaskFailedError):
        assert_type(exc.task, Task)
        assert_type(exc.fail_code, str | None)
        assert_type(exc.fail_message, str | None)
    if isinstance(exc, WaitTimeoutError):
        assert_type(exc.task_id, str)
        assert_type(exc.task, Task | None)
    if isinstance(exc, InvalidRequestError):
        assert_type(exc.field, str)
    if isinstance(exc, DownloadError):
        assert_type(exc.status, int | None)


def constants() -> None:
    assert_type(nb.__version__, str)
    base_url: str = DEFAULT_BASE_URL
    assert_type(AsyncNanoBanana(base_url=base_url).base_url, httpx.URL)
    assert_type(IMAGE_SIZES, tuple[str, ...])
    assert_type(TIERS, Mapping[str, TierLimits])
    assert_type(TIERS["free"].create, tuple[int, int])
    assert_type(RetryPolicy().max_retries, int)
    assert_type(PollPolicy().initial, float)


async def shared_limits() -> None:
    limits: nb.LimitsBackend = nb.Limits(tier="basic")
    async with nb.RedisLimits("redis://localhost:6379/0", key="k", lease=10.0) as shared:
        assert_type(shared, nb.RedisLimits)
        limits = shared
        async with AsyncNanoBanana("sk", limits=limits) as client:
            assert_type(client.limits, nb.LimitsBackend)
            assert_type(client.limits.snapshot(), LimitsSnapshot)
        async with AsyncNanoBanana("sk", limits=nb.Limits()):
            pass
        AsyncNanoBanana("sk", limits="redis://")  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
    # Not entered: the client enters it for its own lifetime.
    unentered = nb.RedisLimits("redis://localhost:6379/0")
    assert_type(unentered.entered, bool)
    connected: ConnectedLimits = unentered
    async with AsyncNanoBanana("sk", limits=unentered):
        assert connected.entered


class MyHost:
    async def publish(self, data: bytes, *, name: str, content_type: str, valid_for: float) -> str:
        return f"https://img.example.com/{name}"


async def image_hosts() -> None:
    host: nb.ImageHost = MyHost()
    async with AsyncNanoBanana("sk", image_host=host) as client:
        assert_type(client.image_host, nb.ImageHost | None)
    async with nb.S3ImageHost("s3://bucket/prefix", region="auto", expires_in=3600) as s3:
        assert_type(
            await s3.publish(b"", name="x.png", content_type="image/png", valid_for=60), str
        )
        AsyncNanoBanana("sk", image_host=s3)
    AsyncNanoBanana("sk", image_host=object())  # type: ignore[arg-type]
