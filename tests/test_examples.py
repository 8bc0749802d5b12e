"""The FastAPI recipe in ``examples/``, served by a real uvicorn on loopback.

The app reaches a `FakeNanoBanana` (the 'basic' tier: at most 5 active tasks) served on
loopback from another thread, through ``NANOBANANA_BASE_URL``: the same code a user runs, the
same HTTP on both sides. One app (`stack`) serves the tests of this module that need no image
host, as one app serves its users: each test counts what it sent by the difference of the
fake's statistics (`Stack.sent`).

Only the traced test runs a process of its own (``python -m uvicorn``): OpenTelemetry's global
providers, set from ``OTEL_*`` variables, can be set once per process. The guides' scripts run
in this process; ``test_docs_run`` runs them in fresh interpreters too.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
import httpx
import pytest
from anyio.from_thread import start_blocking_portal

from nanobanana_async.testing import FakeNanoBanana, FakeStats
from nanobanana_async.testing._images import png_bytes

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "fastapi_app.py"
KEY = "sk-example"


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fastapi_app_example", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


class Stack:
    """The fake provider and the app, each on loopback in a thread of its own."""

    def __init__(self, fake: FakeNanoBanana, app_url: str, stats: Any) -> None:
        self.fake = fake
        self.app_url = app_url
        self._stats = stats

    def stats(self) -> FakeStats:
        result: FakeStats = self._stats()
        return result

    @contextlib.contextmanager
    def sent(self) -> Iterator[dict[str, int]]:
        """What the fake received within the block: tasks created, create requests."""
        before = self.stats()
        counts: dict[str, int] = {}
        yield counts
        after = self.stats()
        counts["tasks_created"] = after.tasks_created - before.tasks_created
        counts["create_requests"] = after.create_requests - before.create_requests


@contextlib.contextmanager
def serve_stack(monkeypatch: pytest.MonkeyPatch, **env: str) -> Iterator[Stack]:
    fake = FakeNanoBanana(api_key=KEY, time_scale=0.01)
    with (
        start_blocking_portal() as portal,
        portal.wrap_async_context_manager(fake.serve()) as base_url,
    ):
        monkeypatch.setenv("NANOBANANA_API_KEY", KEY)
        monkeypatch.setenv("NANOBANANA_BASE_URL", base_url)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        config = uvicorn.Config(
            load_example().app, host="127.0.0.1", port=0, log_level="warning", ws="none"
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            assert thread.is_alive(), "uvicorn did not start"
            assert time.monotonic() < deadline, "uvicorn did not start in time"
            time.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        try:
            yield Stack(fake, f"http://127.0.0.1:{port}", lambda: portal.call(lambda: fake.stats))
        finally:
            server.should_exit = True
            thread.join(timeout=10)
    assert not thread.is_alive()


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    """The app without an image host, shared by the tests of this module."""
    with pytest.MonkeyPatch.context() as monkeypatch, serve_stack(monkeypatch) as served:
        yield served


@pytest.fixture
def stack_with_host(monkeypatch: pytest.MonkeyPatch, s3_endpoint: str) -> Iterator[Stack]:
    """The app with an image host: moto's S3 server on loopback."""
    pytest.importorskip("multipart")
    with serve_stack(
        monkeypatch,
        NANOBANANA_IMAGE_HOST="s3://pictures/uploads",
        AWS_ENDPOINT_URL=s3_endpoint,
        AWS_ACCESS_KEY_ID="test-access-key",
        AWS_SECRET_ACCESS_KEY="test-secret-key",
        AWS_REGION="us-east-1",
    ) as served:
        yield served


def test_concurrent_images_share_the_keys_limits(stack: Stack) -> None:
    answers: list[httpx.Response] = []

    async def post(client: httpx.AsyncClient, i: int) -> None:
        body = {"prompt": f"banana {i}", "image_size": "16:9"}
        answers.append(await client.post("/images", json=body))

    async def main() -> None:
        async with (
            httpx.AsyncClient(base_url=stack.app_url, timeout=30) as client,
            anyio.create_task_group() as group,
        ):
            for i in range(10):
                group.start_soon(post, client, i)

    with stack.sent() as sent:
        anyio.run(main)
    assert [answer.status_code for answer in answers] == [200] * 10
    task_ids = {answer.json()["task_id"] for answer in answers}
    assert len(task_ids) == 10
    for answer in answers:
        [url] = answer.json()["urls"]
        assert url.startswith(stack.fake.result_base_url or "http://127.0.0.1:")
    assert sent["tasks_created"] == 10
    stats = stack.stats()
    assert stats.duplicates == 0
    assert stats.max_active <= 5  # the 'basic' tier's limit, shared by the ten requests


def test_an_idempotency_key_returns_the_task_already_made(stack: Stack) -> None:
    with stack.sent() as sent, httpx.Client(base_url=stack.app_url, timeout=30) as client:
        headers = {"Idempotency-Key": "order-42"}
        first = client.post("/images", json={"prompt": "a banana"}, headers=headers)
        again = client.post("/images", json={"prompt": "a banana"}, headers=headers)
    assert first.status_code == again.status_code == 200
    assert first.json()["task_id"] == again.json()["task_id"]
    assert sent["tasks_created"] == 1


def test_an_idempotency_key_reused_for_another_image_is_409_at_once(stack: Stack) -> None:
    with stack.sent() as sent, httpx.Client(base_url=stack.app_url, timeout=30) as client:
        headers = {"Idempotency-Key": "order-43"}
        first = client.post("/images", json={"prompt": "a banana"}, headers=headers)
        other = client.post("/images", json={"prompt": "a cherry"}, headers=headers)
    assert first.status_code == 200
    assert other.status_code == 409
    assert "already used" in other.json()["detail"]
    # An error at once: refused once, not retried as a 409 that waits for an active-task slot.
    assert sent["create_requests"] == 2
    assert sent["tasks_created"] == 1


def test_invalid_requests_are_422_and_send_nothing(stack: Stack) -> None:
    with stack.sent() as sent, httpx.Client(base_url=stack.app_url, timeout=30) as client:
        http_url = client.post(
            "/images", json={"prompt": "gold", "image_urls": ["http://example.com/a.png"]}
        )
        bad_size = client.post("/images", json={"prompt": "a banana", "image_size": "7:3"})
        bad_batch = client.post(
            "/batches", json={"requests": [{"prompt": "ok"}, {"prompt": "   "}]}
        )
        missing = client.get("/batches/nope")
    assert http_url.status_code == 422
    assert http_url.json()["field"] == "image_urls[0]"
    assert bad_size.status_code == 422
    assert bad_batch.status_code == 422
    assert bad_batch.json()["field"] == "prompt"
    assert missing.status_code == 404
    assert sent["create_requests"] == 0


def test_a_batch_runs_in_the_background_and_reports_progress(stack: Stack) -> None:
    requests = [{"prompt": f"banana {i}"} for i in range(7)]
    requests.append({"prompt": "edit", "image_urls": ["https://example.com/a.png"]})
    with stack.sent() as sent, httpx.Client(base_url=stack.app_url, timeout=30) as client:
        started = client.post("/batches", json={"requests": requests})
        assert started.status_code == 202
        batch_id = started.json()["batch_id"]
        seen_running = False
        deadline = time.monotonic() + 30
        while True:
            report = client.get(f"/batches/{batch_id}").json()
            if report["state"] != "running":
                break
            seen_running = True
            # An outcome is counted when the runner emits it, a moment before the app reads it.
            assert report["statistics"]["done"] >= len(report["outcomes"])
            assert time.monotonic() < deadline, report
            time.sleep(0.1)
    assert seen_running
    assert report["state"] == "finished"
    assert report["total"] == 8
    assert [outcome["index"] for outcome in report["outcomes"]] == list(range(8))
    assert all(outcome["error"] is None for outcome in report["outcomes"])
    assert all(len(outcome["urls"]) == 1 for outcome in report["outcomes"])
    statistics = report["statistics"]
    assert statistics["succeeded"] == statistics["created"] == statistics["done"] == 8
    assert statistics["max_active"] >= 1
    assert sent["tasks_created"] == 8


def test_an_uploaded_image_is_edited_through_the_image_host(stack_with_host: Stack) -> None:
    photo = png_bytes((250, 200, 30))
    with httpx.Client(base_url=stack_with_host.app_url, timeout=30) as client:
        files = {"image": ("photo.png", photo, "image/png")}
        edited = client.post("/edits", data={"prompt": "make it gold"}, files=files)
        again = client.post("/edits", data={"prompt": "make it silver"}, files=files)
        text = client.post(
            "/edits", data={"prompt": "x"}, files={"image": ("a.png", b"hello", "image/png")}
        )
        huge = client.post(
            "/edits",
            data={"prompt": "x"},
            files={"image": ("big.png", photo.ljust(13 * 1024 * 1024, b"\0"), "image/png")},
        )
        # A caller's string is a URL, never a file of the server, in the same words whether
        # the file exists or not; a NUL byte is a 422 too, not a 500.
        paths = [
            client.post("/images", json={"prompt": "x", "image_urls": [name]})
            for name in ("/etc/hosts", "/no/such/file.png", "\x00")
        ]
    assert edited.status_code == again.status_code == 200, edited.text
    assert len(edited.json()["urls"]) == 1
    assert (text.status_code, text.json()["field"]) == (422, "image_urls[0]")
    assert "not a JPEG, PNG or WEBP" in text.json()["detail"]
    assert (huge.status_code, huge.json()["field"]) == (422, "image_urls[0]")
    for path, name in zip(paths, ("/etc/hosts", "/no/such/file.png", "\x00"), strict=True):
        assert (path.status_code, path.json()["field"]) == (422, "image_urls[0]")
        detail = path.json()["detail"].replace(repr(name), "<name>")
        assert detail == paths[0].json()["detail"].replace(repr("/etc/hosts"), "<name>")
        assert "pathlib.Path" in detail
    task = stack_with_host.fake.tasks[edited.json()["task_id"]]
    [url] = task.body["input"]["image_urls"]
    assert "/pictures/uploads/" in url
    stats = stack_with_host.stats()
    assert stats.tasks_created == 2
    assert stats.images_fetched == 2
    assert stats.images_refused == 0


def test_without_an_image_host_an_upload_is_422_and_sends_nothing(stack: Stack) -> None:
    pytest.importorskip("multipart")
    with stack.sent() as sent, httpx.Client(base_url=stack.app_url, timeout=30) as client:
        files = {"image": ("photo.png", png_bytes((1, 2, 3)), "image/png")}
        answer = client.post("/edits", data={"prompt": "gold"}, files=files)
    assert answer.status_code == 422
    assert "image_host" in answer.json()["detail"]
    assert sent["create_requests"] == 0


# -- the scripts of the how-to guides ---------------------------------------------------------

DOCS = Path(__file__).resolve().parents[1] / "docs" / "how-to"


def scripts_of(page: str) -> list[str]:
    """The complete programs of a page: its Python blocks that call ``anyio.run``."""
    text = (DOCS / page).read_text(encoding="utf-8")
    blocks = re.findall(r"^```python\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE)
    return [block for block in blocks if "anyio.run(" in block]


def test_the_batch_and_resume_guides_run_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    run_all, stream, fewer_polls = scripts_of("batches.md")
    [resume] = scripts_of("resume.md")
    fake = FakeNanoBanana(api_key=KEY, time_scale=0.01)

    def run(script: str, name: str) -> str:
        """Run ``script`` as ``python -c`` would, in a folder of its own; what it printed."""
        folder = tmp_path / name
        folder.mkdir(exist_ok=True)
        (folder / "prompts.txt").write_text("a banana\n\ntwo bananas\nthree bananas\n")
        with monkeypatch.context() as patch:
            patch.chdir(folder)
            exec(compile(script, f"<{name}>", "exec"), {"__name__": "__main__"})
        return capsys.readouterr().out

    with (
        start_blocking_portal() as portal,
        portal.wrap_async_context_manager(fake.serve()) as base_url,
    ):
        monkeypatch.setenv("NANOBANANA_API_KEY", KEY)
        monkeypatch.setenv("NANOBANANA_BASE_URL", base_url)
        printed_run = run(run_all, "run")
        printed_stream = run(stream, "stream")
        printed_fewer = run(fewer_polls, "fewer")
        first = run(resume, "resume")
        second = run(resume, "resume")
        stats = portal.call(lambda: fake.stats)

    assert [line.split()[0] for line in printed_run.splitlines()] == ["0", "1", "2", "3"]
    assert "3 done (3 ok, 0 failed)" in printed_stream
    assert printed_fewer.startswith("8 done, ")
    assert sorted(path.name for path in (tmp_path / "stream" / "images").iterdir()) == [
        "00000.png",
        "00001.png",
        "00002.png",
    ]
    assert first.strip() == "0 outcomes from the journal, 8 tasks created now"
    assert second.strip() == "8 outcomes from the journal, 0 tasks created now"
    assert stats.tasks_created == 4 + 3 + 8 + 8
    assert stats.duplicates == 0


# -- traced end to end ---------------------------------------------------------------------------

UPSTREAM_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
UPSTREAM_SPAN = "00f067aa0ba902b7"


def exported(console: str) -> list[dict[str, Any]]:
    """The JSON objects the console exporters printed, one after the other."""
    decoder = json.JSONDecoder()
    found: list[dict[str, Any]] = []
    at = console.find("{")
    while at != -1:
        value, end = decoder.raw_decode(console, at)
        found.append(value)
        at = console.find("{", end)
    return found


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def test_a_request_is_traced_end_to_end_by_the_apps_span(tmp_path: Path) -> None:
    """The example under uvicorn, exporting to the console: the caller's trace goes on in the
    app's span, and the app's span is the parent of ``generate``'s."""
    pytest.importorskip("opentelemetry.sdk")
    fake = FakeNanoBanana(api_key=KEY, time_scale=0.01)
    with (
        start_blocking_portal() as portal,
        portal.wrap_async_context_manager(fake.serve()) as base_url,
    ):
        port = free_port()
        env = {
            **os.environ,
            "NANOBANANA_API_KEY": KEY,
            "NANOBANANA_BASE_URL": base_url,
            "OTEL_TRACES_EXPORTER": "console",
            "OTEL_METRICS_EXPORTER": "console",
            "OTEL_SERVICE_NAME": "images-api",
        }
        command = [sys.executable, "-m", "uvicorn", "fastapi_app:app", "--port", str(port)]
        server = subprocess.Popen(
            [*command, "--app-dir", str(EXAMPLE.parent), "--log-level", "warning"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while True:
                assert server.poll() is None, server.communicate()[1]
                assert time.monotonic() < deadline, "uvicorn did not start in time"
                with contextlib.suppress(httpx.TransportError):
                    httpx.get(f"{url}/openapi.json").raise_for_status()
                    break
                time.sleep(0.05)
            answer = httpx.post(
                f"{url}/images",
                json={"prompt": "a banana in space"},
                headers={"traceparent": f"00-{UPSTREAM_TRACE}-{UPSTREAM_SPAN}-01"},
                timeout=30,
            )
        finally:
            server.terminate()  # uvicorn stops cleanly: the exporters flush what is left
            console, errors = server.communicate(timeout=30)
    assert answer.status_code == 200, answer.text
    # A clean stop: uvicorn shuts the app down, then re-raises the SIGTERM it caught.
    assert server.returncode in (0, -signal.SIGTERM), errors
    printed = exported(console)
    found = [span for span in printed if "span_id" in span.get("context", {})]
    spans = {span["name"]: span for span in found}
    by_id = {span["context"]["span_id"]: span for span in found}
    (request,) = [span for span in found if span["name"] == "POST /images"]
    generate = spans["nanobanana.generate"]
    assert request["context"]["trace_id"] == f"0x{UPSTREAM_TRACE}"
    assert request["parent_id"] == f"0x{UPSTREAM_SPAN}"
    assert request["kind"] == "SpanKind.SERVER"
    assert request["attributes"]["http.route"] == "/images"
    assert request["attributes"]["http.response.status_code"] == 200
    # The request's span is generate's parent: directly (the example's middleware, before
    # FastAPI 0.142), or through FastAPI's own span of the handler.
    above = [generate["parent_id"]]
    while above[-1] in by_id and above[-1] != request["context"]["span_id"]:
        above.append(by_id[above[-1]]["parent_id"])
    assert above[-1] == request["context"]["span_id"]
    assert [by_id[span_id]["name"] for span_id in above[:-1]] in ([], ["fastapi.endpoint"])
    assert generate["context"]["trace_id"] == f"0x{UPSTREAM_TRACE}"
    assert generate["attributes"]["nanobanana.task_id"] == answer.json()["task_id"]
    for child in ("nanobanana.slot_wait", "nanobanana.create", "nanobanana.wait"):
        assert spans[child]["parent_id"] == generate["context"]["span_id"]
    (metrics,) = [found for found in printed if "resource_metrics" in found]
    (resource,) = metrics["resource_metrics"]
    assert resource["resource"]["attributes"]["service.name"] == "images-api"
    names = {metric["name"] for scope in resource["scope_metrics"] for metric in scope["metrics"]}
    assert {"nanobanana.client.requests", "nanobanana.task.duration"} <= names
    assert KEY not in console


@pytest.mark.anyio
async def test_the_middleware_of_older_fastapi_makes_the_request_the_parent_of_generate() -> None:
    """`TraceRequests`, for FastAPI before 0.142: its span is the current one in the handler."""
    sdk = pytest.importorskip("opentelemetry.sdk.trace")
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from nanobanana_async import Telemetry, TextToImage

    exporter = InMemorySpanExporter()
    provider = sdk.TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    example = load_example()
    fake = FakeNanoBanana(api_key=KEY, time_scale=0.01)
    async with fake.client(telemetry=Telemetry(tracer_provider=provider)) as client:

        async def handler(scope: Any, receive: Any, send: Any) -> None:
            await client.generate(TextToImage(prompt="a banana"))
            await send({"type": "http.response.start", "status": 201, "headers": []})
            await send({"type": "http.response.body", "body": b""})

        app = example.TraceRequests(handler, tracer_provider=provider)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
            traceparent = f"00-{UPSTREAM_TRACE}-{UPSTREAM_SPAN}-01"
            answer = await http.post("/images", headers={"traceparent": traceparent})
    assert answer.status_code == 201
    spans = {span.name: span for span in exporter.get_finished_spans()}
    request, generate = spans["POST /images"], spans["nanobanana.generate"]
    assert request.context is not None
    assert request.parent is not None
    assert (request.parent.trace_id, request.parent.span_id) == (
        int(UPSTREAM_TRACE, 16),
        int(UPSTREAM_SPAN, 16),
    )
    assert (request.attributes or {})["http.response.status_code"] == 201
    assert generate.parent is not None
    assert generate.parent.span_id == request.context.span_id
