"""Local images for image-to-image: files and bytes, published to an S3 store the test starts.

The store is moto's S3 server on loopback (a real S3 protocol over HTTP), the provider is the
fake served over HTTP (`support.over_http`), which fetches every loopback image it is given, as
the provider fetches image URLs: so each test sees a picture travel from disk (or memory) to
the store and from the store to the provider.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import httpx
import pytest
from support import fake_provider, over_http

from nanobanana_async import (
    APITimeoutError,
    AsyncNanoBanana,
    BatchRunner,
    ConfigurationError,
    ImageHostError,
    ImageToImage,
    InsufficientCreditsError,
    InvalidRequestError,
    LocalImage,
    S3ImageHost,
    TaskFailedError,
)
from nanobanana_async._journal import Journal
from nanobanana_async.testing import FakeNanoBanana
from nanobanana_async.testing._images import jpeg_bytes, png_bytes

BUCKET = "pictures"  # made by the s3_endpoint fixture (conftest)
MB = 1024 * 1024


def webp_bytes() -> bytes:
    """The smallest WEBP header the magic-byte check needs (a RIFF WEBP container)."""
    return b"RIFF\x1a\x00\x00\x00WEBPVP8L\x0d\x00\x00\x00/\x00\x00\x00" + bytes(14)


@pytest.fixture
def s3_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test-access-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test-secret-key")
    monkeypatch.setenv("AWS_REGION", "us-east-1")


@pytest.fixture
async def host(s3_endpoint: str, s3_credentials: None, request: Any) -> AsyncIterator[S3ImageHost]:
    # A prefix per test: uploads once per picture is counted against an empty prefix.
    prefix = hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:12]
    async with S3ImageHost(f"s3://{BUCKET}/{prefix}", endpoint_url=s3_endpoint) as s3:
        yield s3


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    path = tmp_path / "photo.png"
    path.write_bytes(png_bytes((200, 150, 20)))
    return path


def fake() -> FakeNanoBanana:
    return fake_provider()


# -- checked when built, before anything is sent ---------------------------------------------


class TestChecks:
    def test_a_file_and_bytes_become_local_images(self, photo: Path) -> None:
        data = jpeg_bytes((10, 20, 30))
        request = ImageToImage(
            prompt="gold", image_urls=[str(photo), data, "https://cdn.example.com/a.png"]
        )
        by_file, by_bytes, url = request.image_urls
        assert isinstance(by_file, LocalImage)
        assert by_file.path == photo
        assert by_file.content_type == "image/png"
        assert by_file.sha256 == hashlib.sha256(photo.read_bytes()).hexdigest()
        assert by_file.name == f"{by_file.sha256}.png"
        assert isinstance(by_bytes, LocalImage)
        assert (by_bytes.content_type, by_bytes.path, by_bytes.size) == (
            "image/jpeg",
            None,
            len(data),
        )
        assert url == "https://cdn.example.com/a.png"
        assert request.local_images == (by_file, by_bytes)

    def test_a_path_object_and_webp(self, tmp_path: Path) -> None:
        path = tmp_path / "in.webp"
        path.write_bytes(webp_bytes())
        (image,) = ImageToImage(prompt="x", image_urls=[path]).image_urls
        assert isinstance(image, LocalImage)
        assert image.content_type == "image/webp"
        assert image.name.endswith(".webp")

    def test_the_same_picture_twice_is_one_local_image(self, photo: Path) -> None:
        request = ImageToImage(prompt="x", image_urls=[photo, photo.read_bytes()])
        assert len(request.image_urls) == 2
        assert len(request.local_images) == 1

    def test_a_13_mb_file_is_refused_without_reading_it(self, tmp_path: Path) -> None:
        path = tmp_path / "huge.png"
        with path.open("wb") as file:
            file.write(png_bytes((1, 2, 3)))
            file.truncate(13 * MB)
        with pytest.raises(InvalidRequestError, match="at most 10 MB") as info:
            ImageToImage(prompt="x", image_urls=[path])
        assert info.value.field == "image_urls[0]"

    def test_13_mb_of_bytes_are_refused(self) -> None:
        data = png_bytes((1, 2, 3)).ljust(13 * MB, b"\0")
        with pytest.raises(InvalidRequestError, match="at most 10 MB"):
            ImageToImage(prompt="x", image_urls=[data])

    def test_a_text_file_named_png_is_refused(self, tmp_path: Path) -> None:
        path = tmp_path / "notes.png"
        path.write_text("not a picture at all")
        with pytest.raises(InvalidRequestError, match="not a JPEG, PNG or WEBP") as info:
            ImageToImage(prompt="x", image_urls=["https://cdn.example.com/a.png", path])
        assert info.value.field == "image_urls[1]"

    def test_eleven_images_are_refused(self, tmp_path: Path) -> None:
        paths = []
        for i in range(11):
            paths.append(tmp_path / f"{i}.png")
            paths[-1].write_bytes(png_bytes((i, i, i)))
        assert len(ImageToImage(prompt="x", image_urls=paths[:10]).image_urls) == 10
        with pytest.raises(InvalidRequestError, match="1 to 10 images, got 11"):
            ImageToImage(prompt="x", image_urls=paths)

    def test_a_folder_and_a_missing_file(self, tmp_path: Path) -> None:
        with pytest.raises(InvalidRequestError, match="is a folder"):
            ImageToImage(prompt="x", image_urls=[tmp_path])
        with pytest.raises(InvalidRequestError, match="no such file"):
            ImageToImage(prompt="x", image_urls=[tmp_path / "gone.png"])


@pytest.mark.anyio
async def test_refused_requests_send_nothing(tmp_path: Path, host: S3ImageHost) -> None:
    text = tmp_path / "a.png"
    text.write_text("hello")
    provider = fake()
    async with over_http(provider, image_host=host) as client:
        for bad in ([text], [b"x" * 100], [png_bytes((1, 1, 1))] * 11):
            with pytest.raises(InvalidRequestError):
                await client.generate(ImageToImage(prompt="x", image_urls=bad))
    assert provider.stats.create_requests == 0
    assert host.uploads == 0


@pytest.mark.anyio
async def test_without_an_image_host_nothing_is_sent(photo: Path) -> None:
    provider = fake()
    async with over_http(provider) as client:
        request = ImageToImage(prompt="x", image_urls=[photo])
        with pytest.raises(InvalidRequestError, match="image_host=S3ImageHost") as info:
            await client.generate(request)
        assert info.value.field == "image_urls"
        with pytest.raises(InvalidRequestError, match="image host"):
            await client.create_task(request)
        (outcome,) = await BatchRunner(client).run([request])
        assert isinstance(outcome.error, InvalidRequestError)
    assert provider.stats.create_requests == 0


# -- the whole path ------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_file_and_bytes_reach_the_provider_through_the_store(
    photo: Path, host: S3ImageHost, s3_endpoint: str
) -> None:
    provider = fake()
    data = jpeg_bytes((90, 20, 200))
    picture = await anyio.Path(photo).read_bytes()
    async with over_http(provider, image_host=host) as client:
        result = await client.generate(ImageToImage(prompt="gold", image_urls=[photo, data]))
    sent = provider.tasks[result.task_id].body["input"]["image_urls"]
    names = [
        f"{hashlib.sha256(picture).hexdigest()}.png",
        f"{hashlib.sha256(data).hexdigest()}.jpg",
    ]
    for url, name in zip(sent, names, strict=True):
        assert url.startswith(f"{s3_endpoint}/{BUCKET}/")
        assert url.split("?")[0].endswith(f"/{name}")  # named by content
    assert all("X-Amz-Signature=" in url for url in sent)  # presigned: the bucket is private
    assert provider.stats.images_fetched == 2
    assert provider.stats.images_refused == 0
    assert host.uploads == 2
    async with httpx.AsyncClient() as http:  # what the provider fetched is the picture itself
        assert [(await http.get(url)).content for url in sent] == [picture, data]
        assert (await http.get(sent[0].split("?")[0])).status_code == 403  # not public


@pytest.mark.anyio
async def test_the_same_file_in_two_jobs_is_uploaded_once(photo: Path, host: S3ImageHost) -> None:
    provider = fake()
    async with over_http(provider, image_host=host) as client:
        async with anyio.create_task_group() as group:
            for prompt in ("gold", "silver"):
                group.start_soon(
                    client.generate, ImageToImage(prompt=prompt, image_urls=[str(photo)])
                )
        outcomes = await BatchRunner(client).run(
            ImageToImage(prompt=f"bronze {i}", image_urls=[photo]) for i in range(3)
        )
    assert all(outcome.ok for outcome in outcomes)
    assert host.uploads == 1
    assert provider.stats.images_fetched == 5
    assert len(provider.tasks) == 5


@pytest.mark.anyio
async def test_a_new_process_finds_the_picture_in_the_bucket(
    photo: Path, host: S3ImageHost, s3_endpoint: str, request: Any
) -> None:
    provider = fake()
    async with over_http(provider, image_host=host) as client:
        await client.generate(ImageToImage(prompt="gold", image_urls=[photo]))
    prefix = hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:12]
    async with (
        S3ImageHost(f"s3://{BUCKET}/{prefix}", endpoint_url=s3_endpoint) as again,
        over_http(provider, image_host=again) as client,
    ):
        await client.generate(ImageToImage(prompt="silver", image_urls=[photo]))
    assert (host.uploads, again.uploads) == (1, 0)


@pytest.mark.anyio
async def test_a_resumed_batch_uploads_nothing_again(
    tmp_path: Path, s3_endpoint: str, s3_credentials: None, request: Any
) -> None:
    pictures = [png_bytes((i * 40, 100, 200)) for i in range(3)]
    requests = [ImageToImage(prompt=f"edit {i}", image_urls=[p]) for i, p in enumerate(pictures)]
    journal = tmp_path / "run.sqlite"
    provider = fake()
    provider.credits = 0  # the first run publishes, then cannot create: the batch stops
    where = f"s3://{BUCKET}/{hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:12]}"
    async with (
        S3ImageHost(where, endpoint_url=s3_endpoint) as first,
        over_http(provider, image_host=first) as client,
    ):
        outcomes = await BatchRunner(client, journal=journal).run(requests)
    assert all(isinstance(o.error, InsufficientCreditsError) for o in outcomes)
    assert first.uploads >= 1
    assert provider.stats.tasks_created == 0
    provider.credits = None
    async with (
        S3ImageHost(where, endpoint_url=s3_endpoint) as second,
        over_http(provider, image_host=second) as client,
    ):
        outcomes = await BatchRunner(client, journal=journal).run(requests)
        publisher = client.engine.publisher
        assert publisher is not None
    assert all(o.ok for o in outcomes)
    # Only the pictures the first run never reached are uploaded; the others' URLs come from
    # the journal, without even a look at the bucket.
    assert second.uploads == publisher.published == len(pictures) - first.uploads
    assert provider.stats.images_fetched == len(pictures)
    assert provider.stats.images_refused == 0


@pytest.mark.anyio
async def test_the_fake_fails_a_task_whose_image_is_gone_or_not_an_image(
    s3_endpoint: str, photo: Path, host: S3ImageHost
) -> None:
    # The store takes anything it is given: the text is checked by no one but the provider.
    text = await host.publish(
        b"plain text", name="text.png", content_type="image/png", valid_for=600
    )

    class Liar:
        def __init__(self, url: str) -> None:
            self.url = url

        async def publish(
            self, data: bytes, *, name: str, content_type: str, valid_for: float
        ) -> str:
            return self.url

    provider = fake()
    for url, message in (
        (f"{s3_endpoint}/{BUCKET}/missing.png", "could not be fetched"),
        (text, "not a JPEG, PNG or WEBP"),
    ):
        async with over_http(provider, image_host=Liar(url)) as client:
            with pytest.raises(TaskFailedError) as info:
                await client.generate(ImageToImage(prompt=message, image_urls=[photo]))
        assert info.value.fail_code == "400"
        assert message in (info.value.task.fail_message or "")
    assert provider.stats.images_refused == 2


# -- hosts, deadlines and settings -------------------------------------------------------------


@pytest.mark.anyio
async def test_publishing_ends_by_the_deadline(photo: Path) -> None:
    class Stuck:
        async def publish(
            self, data: bytes, *, name: str, content_type: str, valid_for: float
        ) -> str:
            await anyio.sleep_forever()
            raise AssertionError

    provider = fake()
    async with over_http(provider, image_host=Stuck()) as client:
        with anyio.fail_after(10):
            with pytest.raises(APITimeoutError, match="publishing"):
                await client.generate(ImageToImage(prompt="x", image_urls=[photo]), timeout=0.2)
    assert provider.stats.create_requests == 0


@pytest.mark.anyio
@pytest.mark.parametrize(
    "url", ["http://images.example.com/a.png", "ftp://127.0.0.1/a.png", "not a url", 5]
)
async def test_a_host_must_return_https(photo: Path, url: object) -> None:
    class Odd:
        async def publish(
            self, data: bytes, *, name: str, content_type: str, valid_for: float
        ) -> object:
            return url

    provider = fake()
    async with over_http(provider, image_host=Odd()) as client:  # type: ignore[arg-type]
        with pytest.raises(ImageHostError):
            await client.generate(ImageToImage(prompt="x", image_urls=[photo]))
    assert provider.stats.create_requests == 0


@pytest.mark.anyio
async def test_a_file_changed_after_the_request_was_built_is_refused(
    photo: Path, host: S3ImageHost
) -> None:
    request = ImageToImage(prompt="x", image_urls=[photo])
    await anyio.Path(photo).write_bytes(png_bytes((0, 0, 0)))
    provider = fake()
    async with over_http(provider, image_host=host) as client:
        with pytest.raises(InvalidRequestError, match="changed after the request was built"):
            await client.generate(request)
    assert provider.stats.create_requests == 0


@pytest.mark.anyio
async def test_an_unreachable_store_is_an_image_host_error(
    photo: Path, s3_credentials: None
) -> None:
    with anyio.CancelScope() as scope:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        await listener.aclose()  # a port nobody listens on
        scope.cancel()
    provider = fake()
    async with (
        S3ImageHost("s3://b", endpoint_url=f"http://127.0.0.1:{port}") as host,
        over_http(provider, image_host=host) as client,
    ):
        with pytest.raises(ImageHostError, match="cannot reach the image store") as info:
            await client.generate(ImageToImage(prompt="x", image_urls=[photo]))
    assert "Signature" not in str(info.value)
    assert provider.stats.create_requests == 0


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ({"url": "https://bucket/prefix"}, "url"),
        ({"url": "s3://"}, "url"),
        ({"url": "s3://b", "endpoint_url": "http://minio.example.com"}, "endpoint_url"),
        ({"url": "s3://b", "endpoint_url": "minio:9000"}, "endpoint_url"),
        ({"url": "s3://b", "expires_in": 8 * 24 * 3600}, "expires_in"),
        ({"url": "s3://b", "expires_in": 1}, "expires_in"),
    ],
)
def test_s3_settings_are_checked(args: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        S3ImageHost(**args)
    assert info.value.field == field


def test_the_endpoint_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://storage.example.com")
    with pytest.raises(ConfigurationError, match="only on loopback"):
        S3ImageHost("s3://b")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "https://r2.example.com")
    assert "r2.example.com" in repr(S3ImageHost("s3://b/p"))


# -- the journal -------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_an_older_journal_gains_the_images_table(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    journal = await Journal.open(path)
    await journal.aclose()
    with sqlite3.connect(path) as db:
        db.execute("DROP TABLE images")
    journal = await Journal.open(path)
    try:
        assert await journal.published_url("abc", 0.0) is None
        await journal.record_published("abc", "https://img.example.com/abc.png", 2e9)
        assert await journal.published_url("abc", 1e9) == "https://img.example.com/abc.png"
        assert await journal.published_url("abc", 3e9) is None  # expired by then
    finally:
        await journal.aclose()


@pytest.mark.anyio
async def test_the_fake_refuses_an_image_over_10_mb_and_an_unreachable_one(
    host: S3ImageHost, photo: Path
) -> None:
    big = await host.publish(
        png_bytes((1, 2, 3)).ljust(11 * MB, b"\0"),
        name="big.png",
        content_type="image/png",
        valid_for=600,
    )
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    await listener.aclose()  # a port nobody listens on

    class Fixed:
        def __init__(self, url: str) -> None:
            self.url = url

        async def publish(
            self, data: bytes, *, name: str, content_type: str, valid_for: float
        ) -> str:
            return self.url

    provider = fake()
    for url, message in ((big, "not a JPEG"), (f"http://127.0.0.1:{port}/a.png", "fetched")):
        async with over_http(provider, image_host=Fixed(url)) as client:
            with pytest.raises(TaskFailedError, match=message):
                await client.generate(ImageToImage(prompt=message, image_urls=[photo]))
    assert provider.stats.images_refused == 2


@pytest.mark.anyio
async def test_a_refused_upload_is_an_image_host_error(
    s3_endpoint: str, photo: Path, s3_credentials: None
) -> None:
    provider = fake()
    async with (
        S3ImageHost(
            "s3://no-such-bucket/x",
            endpoint_url=s3_endpoint,
            region="us-east-1",
            access_key_id="id",
            secret_access_key="secret",
            session_token="token",
        ) as host,
        over_http(provider, image_host=host) as client,
    ):
        with pytest.raises(ImageHostError, match="refused the upload") as info:
            await client.generate(ImageToImage(prompt="x", image_urls=[photo]))
        assert info.value.status == 404
        with pytest.raises(ImageHostError, match="at most 7 days"):
            await host.publish(b"", name="x.png", content_type="image/png", valid_for=8 * 86400)
    assert provider.stats.create_requests == 0


def test_an_image_host_must_have_publish() -> None:
    with pytest.raises(InvalidRequestError, match="publish") as info:
        AsyncNanoBanana(api_key="sk", image_host=object())  # type: ignore[arg-type]
    assert info.value.field == "image_host"
