"""Downloads: no key to result hosts, https only, no internal hosts, size caps, atomic files."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import httpx
import pytest

from nanobanana_async import (
    APIConnectionError,
    APITimeoutError,
    DownloadError,
    Task,
    TaskNotFoundError,
    TaskResult,
    TaskState,
    __version__,
)

if TYPE_CHECKING:
    from conftest import Api

pytestmark = pytest.mark.anyio

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
JPEG = b"\xff\xd8\xff\xe0" + b"\x01" * 64
URL = "https://cdn.example.com/results/task_1.png"


# Leaving a body early (the size cap) leaves httpx's nested stream generators for the GC, and
# trio warns about each (encode/httpx#3686). The client closes its own; httpx's inner ones it
# cannot reach.
httpx_inner_generators = pytest.mark.filterwarnings(
    r"ignore:Exception ignored in. <async_generator object "
    r"(Response\.aiter_raw|BoundAsyncStream\.__aiter__|AsyncIteratorByteStream\.__aiter__) "
    r":pytest.PytestUnraisableExceptionWarning"
)


def image(content: bytes = PNG, kind: str = "image/png") -> httpx.Response:
    return httpx.Response(200, content=content, headers={"content-type": kind})


def redirect(location: str, status: int = 302) -> httpx.Response:
    return httpx.Response(status, headers={"location": location})


def streamed(chunks: list[bytes], kind: str = "image/png") -> httpx.Response:
    """An answer without Content-Length, as a chunked stream."""

    async def body() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    return httpx.Response(200, content=body(), headers={"content-type": kind})


def result(*urls: str, task_id: str = "task_1") -> TaskResult:
    task = Task(task_id=task_id, state=TaskState.SUCCESS, urls=urls)
    return TaskResult(task_id=task_id, urls=urls, task=task)


def files(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir())


class TestDownload:
    async def test_bytes_without_the_key(self, api: Api) -> None:
        route = api.router.get(URL).mock(return_value=image())
        # Even a download client that carries credentials does not send them.
        download = api.http(headers={"Authorization": "Bearer should-not-leak"})
        async with api.client(download_client=download) as client:
            assert await client.download(URL) == PNG
        request = route.calls.last.request
        assert "Authorization" not in request.headers
        assert api.key not in str(request.headers.raw)
        assert request.headers["User-Agent"] == f"nanobanana-async/{__version__}"
        assert not download.is_closed

    async def test_the_api_client_is_not_used_for_downloads(self, api: Api) -> None:
        api.router.get(URL).mock(return_value=image())
        seen: list[httpx.Request] = []

        async def spy(request: httpx.Request) -> httpx.Response:
            seen.append(request)
            return await api.router.async_handler(request)

        api_http = httpx.AsyncClient(transport=httpx.MockTransport(spy))
        async with api.client(http_client=api_http) as client:
            await client.download(URL)
        assert not seen

    @pytest.mark.parametrize(
        "url",
        [
            "http://cdn.example.com/a.png",
            "ftp://cdn.example.com/a.png",
            "file:///etc/passwd",
            "data:image/png;base64,iVBORw0KGgo=",
            "/results/a.png",
            "https://",
        ],
    )
    async def test_https_only(self, api: Api, url: str) -> None:
        async with api.client() as client:
            with pytest.raises(DownloadError, match="https only") as info:
                await client.download(url)
        assert info.value.status is None
        assert not api.router.calls

    async def test_not_a_url(self, api: Api) -> None:
        async with api.client() as client:
            with pytest.raises(DownloadError, match="not a URL"):
                await client.download("https://[::1")

    @pytest.mark.parametrize(
        "host",
        [
            "127.0.0.1", "localhost", "LOCALHOST.", "api.localhost", "[::1]", "10.0.0.8",
            "172.16.5.4", "192.168.1.20", "169.254.169.254", "[fe80::1]", "[fd00::1]",
            "0.0.0.0", "224.0.0.1", "[::ffff:127.0.0.1]", "10.0.0.1.",
            # Legacy IPv4 spellings a resolver still maps to loopback or private addresses.
            "127.1", "2130706433", "0x7f000001", "0x7f.1", "167772161",
        ],
    )  # fmt: skip
    async def test_internal_hosts_are_refused_for_a_public_api(self, api: Api, host: str) -> None:
        async with api.client() as client:
            with pytest.raises(DownloadError, match="internal address"):
                await client.download(f"https://{host}/a.png")
        assert not api.router.calls

    @pytest.mark.parametrize(
        "url",
        ["https://8.8.8.8/a.png", "https://[2606:4700::1111]/a.png", "https://1e100.net/a.png",
         "https://0xcdn.example.com/a.png", "https://123.example.com/a.png",
         "https://99999999999/a.png"],
    )  # fmt: skip
    async def test_public_hosts_are_fine(self, api: Api, url: str) -> None:
        api.router.get(url).mock(return_value=image())
        async with api.client() as client:
            assert await client.download(url) == PNG

    async def test_plain_http_and_loopback_with_a_loopback_api(self, api: Api) -> None:
        url = "http://127.0.0.1:8123/files/task_1.png"
        api.router.get(url).mock(return_value=image())
        api.router.get("http://localhost:8123/x.png").mock(return_value=image(JPEG))
        async with api.client(base_url="http://127.0.0.1:8123") as client:
            assert await client.download(url) == PNG
            assert await client.download("http://localhost:8123/x.png") == JPEG

    async def test_error_status(self, api: Api) -> None:
        api.router.get(URL).mock(return_value=httpx.Response(404, text="gone"))
        async with api.client() as client:
            with pytest.raises(DownloadError, match="answered 404") as info:
                await client.download(URL)
        assert info.value.status == 404

    async def test_signed_query_is_not_in_the_error(self, api: Api) -> None:
        url = URL + "?X-Amz-Signature=deadbeefcafe"
        api.router.get(url).mock(return_value=httpx.Response(403))
        async with api.client() as client:
            with pytest.raises(DownloadError) as info:
                await client.download(url)
        assert "deadbeefcafe" not in str(info.value)

    async def test_connection_error(self, api: Api) -> None:
        api.router.get(URL).mock(side_effect=httpx.ConnectError("refused"))
        async with api.client() as client:
            with pytest.raises(APIConnectionError, match="download failed") as info:
                await client.download(URL)
        assert not isinstance(info.value, APITimeoutError)

    async def test_timeout(self, api: Api) -> None:
        api.router.get(URL).mock(side_effect=httpx.ReadTimeout("slow"))
        async with api.client() as client:
            with pytest.raises(APITimeoutError, match="download timed out"):
                await client.download(URL)


class TestRedirects:
    async def test_followed_and_rechecked(self, api: Api) -> None:
        api.router.get(URL).mock(return_value=redirect("https://cdn2.example.com/real.png"))
        final = api.router.get("https://cdn2.example.com/real.png").mock(return_value=image())
        async with api.client() as client:
            assert await client.download(URL) == PNG
        assert "Authorization" not in final.calls.last.request.headers

    async def test_relative_location(self, api: Api) -> None:
        api.router.get(URL).mock(return_value=redirect("/results/v2/task_1.png", 307))
        api.router.get("https://cdn.example.com/results/v2/task_1.png").mock(return_value=image())
        async with api.client() as client:
            assert await client.download(URL) == PNG

    @pytest.mark.parametrize(
        ("location", "match"),
        [
            ("http://cdn.example.com/a.png", "plain-http"),
            ("https://169.254.169.254/latest/meta-data/", "internal address"),
            ("https://127.1/a.png", "internal address"),
            ("file:///etc/passwd", "https only"),
        ],
    )
    async def test_redirect_to_a_refused_url(self, api: Api, location: str, match: str) -> None:
        api.router.get(URL).mock(return_value=redirect(location))
        async with api.client() as client:
            with pytest.raises(DownloadError, match=match):
                await client.download(URL)
        assert len(api.router.calls) == 1

    async def test_too_many_redirects(self, api: Api) -> None:
        route = api.router.get(url__regex=r"https://cdn\.example\.com/hop/\d+")

        def hop(request: httpx.Request) -> httpx.Response:
            n = int(request.url.path.rsplit("/", 1)[1])
            return redirect(f"/hop/{n + 1}")

        route.mock(side_effect=hop)
        async with api.client() as client:
            with pytest.raises(DownloadError, match="more than 5 redirects"):
                await client.download("https://cdn.example.com/hop/0")
        assert route.call_count == 6

    async def test_redirect_without_location_is_an_error_status(self, api: Api) -> None:
        api.router.get(URL).mock(return_value=httpx.Response(302))
        async with api.client() as client:
            with pytest.raises(DownloadError) as info:
                await client.download(URL)
        assert info.value.status == 302


class TestSizeCap:
    async def test_declared_length_over_the_cap(self, api: Api) -> None:
        api.router.get(URL).mock(return_value=image(b"x" * 101))
        async with api.client(max_download_bytes=100) as client:
            with pytest.raises(DownloadError, match="101 bytes, more than 100"):
                await client.download(URL)
            assert await client.download(URL, max_bytes=101) == b"x" * 101

    @httpx_inner_generators
    async def test_streamed_body_over_the_cap(self, api: Api) -> None:
        api.router.get(URL).mock(side_effect=lambda request: streamed([b"x" * 60] * 3))
        async with api.client(max_download_bytes=1000) as client:
            with pytest.raises(DownloadError, match="larger than 100 bytes"):
                await client.download(URL, max_bytes=100)
            assert await client.download(URL) == b"x" * 180

    @httpx_inner_generators
    async def test_a_lying_content_length_does_not_help(self, api: Api) -> None:
        def lying(request: httpx.Request) -> httpx.Response:
            response = streamed([b"x" * 80] * 2)
            response.headers["content-length"] = "10"
            return response

        api.router.get(URL).mock(side_effect=lying)
        async with api.client() as client:
            with pytest.raises(DownloadError, match="larger than 100 bytes"):
                await client.download(URL, max_bytes=100)

    async def test_exactly_the_cap_is_fine(self, api: Api) -> None:
        api.router.get(URL).mock(return_value=image(b"y" * 100))
        async with api.client(max_download_bytes=100) as client:
            assert await client.download(URL) == b"y" * 100


class TestSaveResult:
    async def test_one_image_is_named_after_the_task(self, api: Api, tmp_path: Path) -> None:
        api.router.get(URL).mock(return_value=image())
        target = tmp_path / "out" / "nested"
        async with api.client() as client:
            paths = await client.save_result(result(URL), target)
        assert paths == [target / "task_1.png"]
        assert paths[0].read_bytes() == PNG
        assert files(target) == ["task_1.png"]  # no temporary file left behind

    async def test_several_images_keep_their_order(self, api: Api, tmp_path: Path) -> None:
        urls = [f"https://cdn.example.com/r/{n}" for n in range(3)]
        kinds = ["image/jpeg", "image/webp; charset=binary", "IMAGE/PNG"]
        for n, (url, kind) in enumerate(zip(urls, kinds, strict=True)):
            api.router.get(url).mock(return_value=image(bytes([n]) * 10, kind))
        async with api.client() as client:
            paths = await client.save_result(result(*urls), tmp_path, stem="banana")
        assert [p.name for p in paths] == ["banana-1.jpg", "banana-2.webp", "banana-3.png"]
        assert [p.read_bytes() for p in paths] == [bytes([n]) * 10 for n in range(3)]

    @pytest.mark.parametrize(
        ("path", "kind", "name"),
        [
            ("/r/x.JPEG", "application/octet-stream", "task_1.jpg"),
            ("/r/x.jpg", "", "task_1.jpg"),
            ("/r/x.webp", "binary/octet-stream", "task_1.webp"),
            ("/r/x.png", "", "task_1.png"),
            ("/r/x", "", "task_1.png"),
            ("/r/x.gif", "image/jpeg", "task_1.jpg"),
        ],
    )
    async def test_suffix(self, api: Api, tmp_path: Path, path: str, kind: str, name: str) -> None:
        url = "https://cdn.example.com" + path
        headers = {"content-type": kind} if kind else {}
        api.router.get(url).mock(return_value=httpx.Response(200, content=PNG, headers=headers))
        async with api.client() as client:
            (saved,) = await client.save_result(result(url), tmp_path)
        assert saved.name == name

    async def test_the_suffix_follows_the_final_url(self, api: Api, tmp_path: Path) -> None:
        api.router.get(URL).mock(return_value=redirect("https://cdn.example.com/r/final.webp"))
        api.router.get("https://cdn.example.com/r/final.webp").mock(
            return_value=httpx.Response(200, content=PNG)
        )
        async with api.client() as client:
            (saved,) = await client.save_result(result(URL), tmp_path)
        assert saved.name == "task_1.webp"

    async def test_unsafe_names_are_cleaned(self, api: Api, tmp_path: Path) -> None:
        api.router.get(URL).mock(return_value=image())
        async with api.client() as client:
            (saved,) = await client.save_result(result(URL, task_id="../../etc/pass wd"), tmp_path)
            (empty,) = await client.save_result(result(URL), tmp_path, stem="")
        assert saved.parent == tmp_path
        assert saved.name == ".._.._etc_pass_wd.png"
        assert empty.name == "task_1.png"

    async def test_an_existing_file_is_replaced_whole(self, api: Api, tmp_path: Path) -> None:
        (tmp_path / "task_1.png").write_bytes(b"old and longer than the new one" * 10)
        api.router.get(URL).mock(return_value=image())
        async with api.client() as client:
            (saved,) = await client.save_result(result(URL), tmp_path)
        assert saved.read_bytes() == PNG

    @httpx_inner_generators
    async def test_too_large_leaves_no_file(self, api: Api, tmp_path: Path) -> None:
        api.router.get(URL).mock(side_effect=lambda request: streamed([b"x" * 60] * 5))
        async with api.client() as client:
            with pytest.raises(DownloadError, match="larger than 100"):
                await client.save_result(result(URL), tmp_path, max_bytes=100)
        assert files(tmp_path) == []

    async def test_declared_too_large_leaves_no_file(self, api: Api, tmp_path: Path) -> None:
        api.router.get(URL).mock(return_value=image(b"x" * 500))
        async with api.client(max_download_bytes=100) as client:
            with pytest.raises(DownloadError, match="more than 100"):
                await client.save_result(result(URL), tmp_path)
        assert files(tmp_path) == []

    async def test_cancelled_download_leaves_no_file(self, api: Api, tmp_path: Path) -> None:
        first_chunk = anyio.Event()

        async def body() -> AsyncIterator[bytes]:
            yield b"x" * 10
            first_chunk.set()
            await anyio.sleep_forever()
            yield b""  # pragma: no cover

        api.router.get(URL).mock(side_effect=lambda request: httpx.Response(200, content=body()))
        async with api.client() as client, anyio.create_task_group() as tg:
            tg.start_soon(client.save_result, result(URL), tmp_path)
            await first_chunk.wait()
            await anyio.wait_all_tasks_blocked()
            assert len(files(tmp_path)) == 1  # the partial file, under a hidden temporary name
            assert files(tmp_path)[0].startswith(".task_1.png.")
            tg.cancel_scope.cancel()
        assert files(tmp_path) == []

    async def test_expired_url_is_refreshed_once(self, api: Api, tmp_path: Path) -> None:
        fresh = "https://cdn.example.com/results/task_1-fresh.png"
        old = api.router.get(URL).mock(return_value=httpx.Response(403))
        api.router.get(fresh).mock(return_value=image())
        api.query.mock(return_value=api.task(urls=[fresh]))
        async with api.client() as client:
            (saved,) = await client.save_result(result(URL), tmp_path)
        assert saved.read_bytes() == PNG
        assert old.call_count == 1
        assert api.query.call_count == 1
        assert api.query.calls.last.request.url.params["taskId"] == "task_1"
        assert files(tmp_path) == ["task_1.png"]

    async def test_refresh_serves_later_images_too(self, api: Api, tmp_path: Path) -> None:
        old = [f"https://cdn.example.com/old/{n}.png" for n in range(2)]
        new = [f"https://cdn.example.com/new/{n}.png" for n in range(2)]
        api.router.get(old[0]).mock(return_value=image(b"0"))
        api.router.get(old[1]).mock(return_value=httpx.Response(404))
        api.router.get(new[1]).mock(return_value=image(b"1"))
        api.query.mock(return_value=api.task(urls=new))
        async with api.client() as client:
            paths = await client.save_result(result(*old), tmp_path)
        assert [p.read_bytes() for p in paths] == [b"0", b"1"]
        assert api.query.call_count == 1

    async def test_only_one_refresh(self, api: Api, tmp_path: Path) -> None:
        old = [f"https://cdn.example.com/old/{n}.png" for n in range(2)]
        new = [f"https://cdn.example.com/new/{n}.png" for n in range(2)]
        api.router.get(old[0]).mock(return_value=httpx.Response(403))
        api.router.get(new[0]).mock(return_value=image())
        api.router.get(new[1]).mock(return_value=httpx.Response(404))
        api.query.mock(return_value=api.task(urls=new))
        async with api.client() as client:
            with pytest.raises(DownloadError) as info:
                await client.save_result(result(*old), tmp_path)
        assert info.value.status == 404
        assert api.query.call_count == 1

    async def test_same_urls_after_refresh_means_expired(self, api: Api, tmp_path: Path) -> None:
        api.router.get(URL).mock(return_value=httpx.Response(404))
        api.query.mock(return_value=api.task(urls=[URL]))
        async with api.client() as client:
            with pytest.raises(DownloadError, match="expired") as info:
                await client.save_result(result(URL), tmp_path)
        assert info.value.status == 404
        assert isinstance(info.value.__cause__, DownloadError)

    async def test_refreshed_task_with_other_urls_means_expired(
        self, api: Api, tmp_path: Path
    ) -> None:
        api.router.get(URL).mock(return_value=httpx.Response(403))
        api.query.mock(return_value=api.task(urls=[URL + "?a", URL + "?b"]))
        async with api.client() as client:
            with pytest.raises(DownloadError, match="expired"):
                await client.save_result(result(URL), tmp_path)

    async def test_other_errors_do_not_refresh(self, api: Api, tmp_path: Path) -> None:
        api.router.get(URL).mock(return_value=httpx.Response(500))
        async with api.client() as client:
            with pytest.raises(DownloadError) as info:
                await client.save_result(result(URL), tmp_path)
        assert info.value.status == 500
        assert not api.query.called

    async def test_a_refused_url_does_not_refresh(self, api: Api, tmp_path: Path) -> None:
        async with api.client() as client:
            with pytest.raises(DownloadError, match="https only"):
                await client.save_result(result("http://cdn.example.com/x.png"), tmp_path)
        assert not api.router.calls

    async def test_refresh_of_a_vanished_task(self, api: Api, tmp_path: Path) -> None:
        api.router.get(URL).mock(return_value=httpx.Response(404))
        api.query.mock(return_value=api.error(404, "Task not found"))
        async with api.client() as client:
            with pytest.raises(TaskNotFoundError):
                await client.save_result(result(URL), tmp_path)
