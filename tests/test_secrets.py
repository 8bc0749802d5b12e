"""Secrets: the API key shows nowhere, and never travels to a result host.

The client, its limits, a batch runner, its statistics and outcomes, every exception of the
fault scenarios (with their causes, contexts and tracebacks, locals included), every log record
at DEBUG (httpx and httpcore included) and the journal file are searched for the key, after a
run through the fake over HTTP with faults on every endpoint.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from memory_network import MemoryNetwork, MemoryStream, memory_network
from support import (
    KEY,
    RawRequest,
    fake_provider,
    frames_of,
    holders_of,
    http_response,
    over_http,
    prompts,
    raw_server,
    texts_of,
)

from nanobanana_async import (
    APIConnectionError,
    APITimeoutError,
    AsyncNanoBanana,
    AuthenticationError,
    BatchRunner,
    DownloadError,
    ImageToImage,
    NanoBananaError,
    ServerError,
    TaskFailedError,
    TextToImage,
    WaitTimeoutError,
)
from nanobanana_async._http import redacted_headers
from nanobanana_async._secret import Secret
from nanobanana_async.testing import Faults
from nanobanana_async.testing._images import png_bytes

pytestmark = pytest.mark.anyio

WRONG_KEY = "sk-SECRET-wrong-key-0b9e27d1c4a8"
ODD_KEY = 'sk-odd/"key"\\with-escapes'  # characters JSON escapes: a slash, quotes, a backslash
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32
PNG_IMAGE = png_bytes((200, 150, 20))


async def test_the_key_shows_nowhere_after_a_faulty_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for name in ("httpx", "httpcore", "nanobanana_async", "nanobanana_async.testing"):
        caplog.set_level(logging.DEBUG, logger=name)
    fake = fake_provider(
        seed=4,
        fail_rate=lambda body: "doomed" in body["input"]["prompt"],
        faults=Faults(
            create={"500": 0.1, "drop_after": 0.1, "200_429": 0.05},
            query={"500": 0.1, "drop_before": 0.05, "502_html": 0.05, "record_null": 0.05},
        ),
    )
    journal = tmp_path / "batch.sqlite"
    errors: list[BaseException] = []
    texts: list[str] = []
    async with over_http(fake, timeout=0.2) as client:
        runner = BatchRunner(client, journal=journal)
        outcomes = await runner.run([*prompts(12, "secret"), TextToImage(prompt="doomed")])
        errors += [o.error for o in outcomes if o.error is not None]
        texts += [repr(client), str(client), repr(client.limits), repr(client.limits_snapshot())]
        texts += [repr(runner), repr(runner.statistics()), *map(repr, outcomes)]
        result = outcomes[0].result
        assert result is not None
        await client.save_result(result, tmp_path / "images")

        fake.faults = Faults(slow_seconds=None)
        fake.script("create", ["slow"] * 2 + ["502_html"] * 20)
        scenarios = [
            lambda: client.create_task(TextToImage(prompt="slow"), timeout=0.3),
            lambda: client.create_task(TextToImage(prompt="proxy")),
            lambda: client.wait_for_result(outcomes[0].task_id or "", timeout=1e-9),
            lambda: client.get_task("no-such-task"),
            lambda: client.download("file:///etc/passwd"),
            lambda: client.generate(TextToImage(prompt="doomed again"), timeout=0.0001),
        ]
        for call in scenarios:
            with pytest.raises(NanoBananaError) as info:
                await call()
            errors.append(info.value)
    async with over_http(fake_provider(), api_key=WRONG_KEY) as wrong:
        texts.append(repr(wrong))
        with pytest.raises(AuthenticationError) as refused:
            await wrong.create_task(TextToImage(prompt="wrong key"))
        errors.append(refused.value)

    kinds = {type(error) for error in errors}
    assert {TaskFailedError, APITimeoutError, ServerError, AuthenticationError} <= kinds
    assert {WaitTimeoutError, DownloadError} <= kinds
    for error in errors:
        texts += texts_of(error, with_locals=True)
    texts.append(caplog.text)
    texts += [repr(record.args) for record in caplog.records]
    texts += [repr(vars(record)) for record in caplog.records]
    assert {record.name.split(".")[0] for record in caplog.records} >= {"httpx", "httpcore"}
    assert any("retrying" in record.getMessage() for record in caplog.records)
    for text in texts:
        assert KEY not in text
        assert WRONG_KEY not in text
    for file in journal.parent.glob(journal.name + "*"):
        assert KEY.encode() not in file.read_bytes()
    assert fake.stats.authorization_sent_to_result_host is False


async def test_result_hosts_never_see_the_key_not_even_the_api_host() -> None:
    fake = fake_provider()
    # Over its own HTTP server the fake's result files live on the API's own host and port.
    async with over_http(fake) as client:
        result = await client.generate(TextToImage(prompt="same host"), timeout=30)
        assert result.urls[0].startswith(str(client.base_url))
        assert (await client.download(result.urls[0])).startswith(b"\x89PNG")
    assert fake.stats.result_requests == 1
    assert fake.stats.authorization_sent_to_result_host is False


@pytest.mark.parametrize("own_download_client", [False, True])
async def test_no_key_across_a_redirect_to_another_host(own_download_client: bool) -> None:
    def final(_request: RawRequest) -> bytes:
        return http_response(200, PNG, content_type="image/png")

    async with (
        memory_network() as network,
        raw_server(final, network, host="127.0.0.2") as (other_host, at_other),
    ):

        def hop(_request: RawRequest) -> bytes:
            return http_response(302, headers={"Location": f"{other_host}/real.png"})

        async with raw_server(hop, network) as (first_host, at_first):
            # A download client that carries the key by mistake is stripped of it, too.
            headers = {"Authorization": f"Bearer {KEY}"} if own_download_client else None
            async with (
                network.http_client(headers=headers) as download,
                network.client(first_host, api_key=KEY, download_client=download) as client,
            ):
                assert await client.download(f"{first_host}/files/task_1/0.png") == PNG
    assert [r.target for r in at_first] == ["/files/task_1/0.png"]
    assert [r.target for r in at_other] == ["/real.png"]
    for request in [*at_first, *at_other]:
        assert "authorization" not in request.headers
        assert KEY not in repr(request)


class _BreaksWhileWriting(httpx.AsyncBaseTransport):
    """Breaks while writing the request, as httpcore's HTTP/2 connection can: its frame holds
    the headers it is writing (``headers``, a list, the ``Authorization`` pair in it)."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        headers = [(name.lower(), value) for name, value in request.headers.raw]
        raise httpx.WriteError(f"connection lost after writing {len(headers)} headers")


async def test_a_connection_that_breaks_while_the_request_is_written_leaks_no_key() -> None:
    """The frames below the client keep their place in the traceback, not their locals."""
    async with (
        httpx.AsyncClient(transport=_BreaksWhileWriting()) as http,
        AsyncNanoBanana(api_key=KEY, http_client=http, max_retries=0) as client,
    ):
        with pytest.raises(APIConnectionError) as info:
            await client.create_task(TextToImage(prompt="a banana"))
    error = info.value
    assert isinstance(error.__cause__, httpx.WriteError)
    frames = {frame.f_code.co_name for frame in frames_of(error)}
    assert "handle_async_request" in frames  # where the request was being written: shown
    for text in texts_of(error, with_locals=True):
        assert KEY not in text


async def test_a_redirect_that_names_the_key_is_neither_followed_with_it_nor_shown() -> None:
    """A result host that learnt the key elsewhere and puts it in a redirect."""

    def gone(_request: RawRequest) -> bytes:
        return http_response(404)

    async with (
        memory_network() as network,
        raw_server(gone, network, host="127.0.0.2") as (other, at_other),
    ):

        def hop(_request: RawRequest) -> bytes:
            return http_response(302, headers={"Location": f"{other}/{KEY}/x.png?k={KEY}"})

        async with (
            raw_server(hop, network) as (first, _),
            network.client(first, api_key=KEY) as client,
        ):
            with pytest.raises(DownloadError) as info:
                await client.download(f"{first}/files/task_1/0.png")
    assert info.value.status == 404
    assert [request.target for request in at_other] == ["/***/x.png?k=***"]
    for text in texts_of(info.value, with_locals=True):
        assert KEY not in text


@pytest.mark.parametrize(
    "escape",
    [
        lambda text: json.dumps(text),
        lambda text: json.dumps(text).replace("/", "\\/"),  # as PHP's json_encode writes it
    ],
    ids=["json", "json-escaped-slashes"],
)
async def test_a_key_echoed_json_escaped_is_redacted_too(escape: Callable[[str], str]) -> None:
    """A key with characters JSON escapes (a quote, a backslash, a slash), echoed escaped."""

    def echo(request: httpx.Request) -> httpx.Response:
        said = escape(f"Invalid API key provided: {request.headers['authorization']}")
        return httpx.Response(401, content=f'{{"code": 401, "msg": {said}}}'.encode())

    async with (
        httpx.AsyncClient(transport=httpx.MockTransport(echo)) as http,
        AsyncNanoBanana(api_key=ODD_KEY, http_client=http) as client,
    ):
        with pytest.raises(AuthenticationError) as info:
            await client.create_task(TextToImage(prompt="a banana"))
    assert info.value.message == "Invalid API key provided: Bearer ***"
    for text in texts_of(info.value, with_locals=True):
        assert ODD_KEY not in text
        assert escape(ODD_KEY)[1:-1] not in text


class _Host:
    """An image host that hands out made-up URLs (the fake does not fetch them)."""

    async def publish(self, data: bytes, *, name: str, content_type: str, valid_for: float) -> str:
        return f"https://images.example/{name}"


def test_the_walk_finds_a_key_held_in_an_httpx_header_object() -> None:
    """The walk below reaches into httpx's internals (``Headers._list``): it can fail."""
    headers = httpx.Headers({"Authorization": f"Bearer {KEY}"})
    found, _ = holders_of(KEY, {"holder": {"deep": [(headers,)]}})
    assert found == ["holder['deep'][0][0]._list[0][2]"]


async def test_the_key_lives_only_in_its_secret(tmp_path: Path) -> None:
    """No attribute of the client, its engine, limits, runner or publisher holds the key in
    clear, after real traffic (the connection pool alive), a variant and a batch."""
    fake = fake_provider()
    async with over_http(fake, image_host=_Host()) as client:
        runner = BatchRunner(client, journal=tmp_path / "batch.sqlite")
        edit = ImageToImage(prompt="an edit", image_urls=[PNG_IMAGE])
        outcomes = await runner.run([*prompts(3, "walk"), edit])
        assert all(outcome.ok for outcome in outcomes)
        variant = client.with_options(timeout=5)
        await variant.get_task(outcomes[0].task_id or "")
        raw = await client.with_raw_response.create_task(TextToImage(prompt="raw"))
        roots: dict[str, object] = {
            "client": client,
            "engine": client.engine,
            "limits": client.limits,
            "publisher": client.engine.publisher,
            "runner": runner,
            "variant": variant,
            "outcomes": outcomes,
            "raw": raw,
        }
        # The in-memory network stands for the kernel's sockets: not the client's to hold.
        found, secrets = holders_of(KEY, roots, stop_at=(MemoryNetwork, MemoryStream))
    assert found == []
    # The walk reached where the key belongs: it went deep enough to find it elsewhere.
    assert any(path.endswith("caller._secret") for path in secrets)


def test_headers_are_redacted_in_names_and_values_and_left_alone_without_the_key() -> None:
    plain = httpx.Headers({"content-type": "application/json", "content-length": "2"})
    assert redacted_headers(plain, Secret(KEY)) is plain  # nothing to redact: not copied
    echoed = httpx.Headers([("x-echo", f"Bearer {KEY}"), (f"x-{KEY}", "1"), ("x-ok", "2")])
    assert list(redacted_headers(echoed, Secret(KEY)).items()) == [
        ("x-echo", "Bearer ***"),
        ("x-***", "1"),
        ("x-ok", "2"),
    ]
    escaped = json.dumps(ODD_KEY)[1:-1].replace("/", "\\/")
    odd = httpx.Headers([("x-echo", f"Bearer {escaped}")])
    assert dict(redacted_headers(odd, Secret(ODD_KEY))) == {"x-echo": "Bearer ***"}
