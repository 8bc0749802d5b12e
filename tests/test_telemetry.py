"""OpenTelemetry: spans and metrics that add up to what the provider saw, on asyncio and trio.

Each test gives the client its own SDK providers (`Telemetry(tracer_provider=...,
meter_provider=...)`) with the SDK's in-memory span exporter and metric reader, so nothing
global is touched and each test reads only its own spans and numbers. What the spans and the
counters say is checked against the fake provider's own counts (`fake.stats`), and never
against elapsed time.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import anyio
import attrs
import httpx
import pytest
from support import KEY, client_for, envelope, fake_provider, prompts, wait_until

from nanobanana_async import (
    APITimeoutError,
    AsyncNanoBanana,
    BatchRunner,
    ConfigurationError,
    DownloadError,
    ImageToImage,
    InvalidRequestError,
    Limits,
    PollPolicy,
    TaskFailedError,
    Telemetry,
    TextToImage,
)
from nanobanana_async._telemetry import NO_RECORDER, NULL_SCOPE
from nanobanana_async.limits import EndpointLimiter

pytest.importorskip("opentelemetry.sdk")

from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import StatusCode

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[1]


@attrs.define
class Otel:
    """An SDK of the test's own: its spans and its metrics, in memory."""

    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    exporter: InMemorySpanExporter
    reader: InMemoryMetricReader

    def telemetry(self, **kwargs: Any) -> Telemetry:
        return Telemetry(
            tracer_provider=self.tracer_provider, meter_provider=self.meter_provider, **kwargs
        )

    def spans(self, name: str | None = None) -> list[ReadableSpan]:
        found = self.exporter.get_finished_spans()
        return [span for span in found if name is None or span.name == name]

    def only(self, name: str) -> ReadableSpan:
        (span,) = self.spans(name)
        return span

    def points(self, metric: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        if data is None:
            return []
        return [
            point
            for resource in data.resource_metrics
            for scope in resource.scope_metrics
            for found in scope.metrics
            if found.name == metric
            for point in found.data.data_points
        ]

    def total(self, metric: str, where: Mapping[str, object] | None = None) -> float:
        """A counter's sum (or a histogram's count) over the points whose attributes match."""
        return sum(
            point.count if hasattr(point, "count") else point.value
            for point in self.points(metric)
            if all(point.attributes.get(key) == value for key, value in (where or {}).items())
        )


@pytest.fixture
def otel() -> Iterator[Otel]:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider(shutdown_on_exit=False)
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    yield Otel(tracer_provider, meter_provider, exporter, reader)
    tracer_provider.shutdown()
    meter_provider.shutdown()


def attributes(span: ReadableSpan) -> Mapping[str, Any]:
    return span.attributes or {}


def parent_id(span: ReadableSpan) -> int | None:
    return None if span.parent is None else span.parent.span_id


def span_id(span: ReadableSpan) -> int:
    context = span.context
    assert context is not None
    return context.span_id


def children(otel: Otel, parent: ReadableSpan, name: str) -> list[ReadableSpan]:
    return [span for span in otel.spans(name) if parent_id(span) == span_id(parent)]


# -- a batch with faults: the spans and counters add up to what the fake saw -------------------


async def test_a_faulty_batch_adds_up_to_what_the_fake_saw(otel: Otel) -> None:
    # The runner is told nothing: it meets 409s learning the cap of 5, 429s from a create
    # window of 30 a (scaled) minute that 50 jobs must outrun, and the scripted 5xx below.
    fake = fake_provider(
        tier="basic",
        max_active=5,
        create_per_minute=30,
        duration=(3.0, 6.0),
        time_scale=0.02,
    )
    fake.script("create", ["ok", "500", "ok", "200_500", "ok", "drop_before", "500"])
    fake.script("query", ["ok", "500", "ok", "ok", "502_html", "500"])
    async with client_for(fake, telemetry=otel.telemetry()) as client:
        runner = BatchRunner(client)
        outcomes = await runner.run(prompts(50))
    assert all(outcome.ok for outcome in outcomes), [o.error for o in outcomes if not o.ok]
    stats = fake.stats
    assert stats.tasks_created == 50
    assert stats.active_limited >= 1
    assert stats.rate_limited_create >= 1

    # One span per job, all of them under the batch's span, whichever task ran them.
    batch = otel.only("nanobanana.batch")
    jobs = otel.spans("nanobanana.batch.job")
    assert len(jobs) == 50
    assert all(parent_id(job) == span_id(batch) for job in jobs)
    assert sorted(attributes(job)["nanobanana.batch.index"] for job in jobs) == list(range(50))
    assert {attributes(job)["nanobanana.task_id"] for job in jobs} == set(fake.tasks)
    assert all(attributes(job)["nanobanana.task.state"] == "success" for job in jobs)

    # Every create request sent is a span under its job; every poll is counted in its job.
    creates = otel.spans("nanobanana.create")
    job_ids = {span_id(job) for job in jobs}
    assert all(parent_id(create) in job_ids for create in creates)
    assert len(creates) == stats.create_requests
    statuses = Counter(attributes(create).get("http.response.status_code") for create in creates)
    assert statuses[409] == stats.active_limited
    assert statuses[429] == stats.rate_limited_create
    assert statuses[500] == 2
    assert statuses[None] == 1  # the dropped connection: no answer
    assert sum(attributes(job)["nanobanana.attempts"] for job in jobs) == stats.create_requests
    assert sum(attributes(job)["nanobanana.polls"] for job in jobs) == stats.query_requests
    assert attributes(batch)["nanobanana.attempts"] == stats.create_requests
    assert attributes(batch)["nanobanana.polls"] == stats.query_requests
    assert attributes(batch)["nanobanana.batch.succeeded"] == 50
    assert attributes(batch)["nanobanana.batch.conflicts"] == stats.active_limited
    waits = otel.spans("nanobanana.wait")
    assert len(waits) == 50
    assert sum(attributes(wait)["nanobanana.polls"] for wait in waits) == stats.query_requests

    # The counters say the same.
    requests = "nanobanana.client.requests"
    assert otel.total(requests, {"nanobanana.endpoint": "create"}) == stats.create_requests
    assert otel.total(requests, {"nanobanana.endpoint": "query"}) == stats.query_requests
    assert otel.total(requests, {"http.response.status_code": 409}) == stats.active_limited
    assert otel.total(requests, {"http.response.status_code": 429}) == stats.rate_limited
    assert (
        otel.total(requests, {"nanobanana.endpoint": "create", "http.response.status_code": 500})
        == 2
    )
    assert (
        otel.total(requests, {"nanobanana.endpoint": "query", "http.response.status_code": 500})
        == 2
    )
    assert (
        otel.total(requests, {"nanobanana.endpoint": "query", "http.response.status_code": 502})
        == 1
    )
    # An error in a 200 envelope is told by its code; a dropped connection by its type.
    assert (
        otel.total(requests, {"http.response.status_code": 200, "nanobanana.response.code": 500})
        == 1
    )
    assert otel.total(requests, {"error.type": "APIConnectionError"}) == 1
    # Each job waited for a slot once before its create, and once after each 409.
    slot_waits = "nanobanana.slot.wait.duration"
    assert otel.total(slot_waits, {"nanobanana.slot.reason": "before_create"}) == 50
    assert (
        otel.total(slot_waits, {"nanobanana.slot.reason": "after_conflict"}) == stats.active_limited
    )
    # A batch's jobs are background work, on the key's pacers too.
    assert otel.total(slot_waits, {"nanobanana.priority": "interactive"}) == 0
    assert attributes(batch)["nanobanana.priority"] == "background"
    background = {"nanobanana.endpoint": "query", "nanobanana.priority": "background"}
    assert otel.total("nanobanana.pacer.wait.duration", background) >= stats.query_requests
    assert otel.total("nanobanana.pacer.wait.duration", {"nanobanana.endpoint": "create"}) >= (
        stats.create_requests
    )
    assert otel.total("nanobanana.task.duration", {"nanobanana.task.state": "success"}) == 50
    assert otel.total("nanobanana.task.detection_delay") == 50
    # The gauges: the cap learned, and no slot held once the batch is over.
    learned = runner.statistics()
    (cap,) = otel.points("nanobanana.limits.max_active")
    assert cap.value == learned.max_active
    (held,) = otel.points("nanobanana.client.active_tasks")
    assert held.value == 0
    rates = {
        p.attributes["nanobanana.endpoint"]: p.value for p in otel.points("nanobanana.limits.rate")
    }
    assert rates["create"] == learned.create_rate


# -- one call: its children, and an application's span as its parent ---------------------------


async def test_generate_is_a_child_of_the_apps_span_and_shows_where_time_went(otel: Otel) -> None:
    fake = fake_provider()
    fake.script("create", ["500"])
    tracer = otel.tracer_provider.get_tracer("the app")
    async with client_for(fake, telemetry=otel.telemetry()) as client:
        with tracer.start_as_current_span("POST /images") as request_span:
            result = await client.generate(TextToImage(prompt="a banana", image_size="16:9"))
            assert trace.get_current_span() is request_span  # ours were all detached

    app = otel.only("POST /images")
    generate = otel.only("nanobanana.generate")
    assert parent_id(generate) == span_id(app)
    assert generate.context is not None
    assert app.context is not None
    assert generate.context.trace_id == app.context.trace_id
    assert dict(attributes(generate)) == {
        "nanobanana.model": "nano-banana-text-to-image",
        "nanobanana.image_size": "16:9",
        "nanobanana.output_format": "png",
        "nanobanana.request_id": attributes(generate)["nanobanana.request_id"],
        "nanobanana.task_id": result.task_id,
        "nanobanana.task.state": "success",
        "nanobanana.attempts": 2,
        "nanobanana.polls": fake.stats.query_requests,
        "nanobanana.priority": "interactive",
    }
    assert fake.tasks[result.task_id].request_id == attributes(generate)["nanobanana.request_id"]
    (slot_wait,) = children(otel, generate, "nanobanana.slot_wait")
    assert attributes(slot_wait)["nanobanana.slot.reason"] == "before_create"
    assert attributes(slot_wait)["nanobanana.priority"] == "interactive"
    first, second = sorted(
        children(otel, generate, "nanobanana.create"), key=lambda s: s.start_time or 0
    )
    assert first.kind is trace.SpanKind.CLIENT
    assert attributes(first)["nanobanana.attempt"] == 1
    assert attributes(first)["error.type"] == "ServerError"
    assert first.status.status_code is StatusCode.ERROR
    assert attributes(second)["nanobanana.attempt"] == 2
    assert attributes(second)["http.response.status_code"] == 200
    assert second.status.status_code is StatusCode.UNSET
    (wait,) = children(otel, generate, "nanobanana.wait")
    polls = [event for event in wait.events if event.name == "nanobanana.poll"]
    assert len(polls) == fake.stats.query_requests == attributes(wait)["nanobanana.polls"]
    assert (polls[-1].attributes or {})["nanobanana.task.state"] == "success"
    delay = attributes(wait)["nanobanana.task.detection_delay"]
    assert 0 <= delay < attributes(wait)["nanobanana.task.duration"]


async def test_the_detection_delay_does_not_bend_to_the_providers_clock(otel: Otel) -> None:
    hour_ms = 3_600_000

    def an_hour_behind(request: httpx.Request, response: httpx.Response) -> httpx.Response | None:
        if request.method != "GET" or "recordInfo" not in request.url.path:
            return None
        body = json.loads(response.content)
        for name in ("createTime", "completeTime"):
            if body["data"].get(name) is not None:
                body["data"][name] -= hour_ms
        return httpx.Response(response.status_code, json=body)

    fake = fake_provider(duration=30.0, time_scale=1.0)  # the provider's own speed: virtual
    # Polled every second or two, for a task of the provider's own length: not every few ms.
    poll = PollPolicy(initial=1.0, maximum=2.0)
    async with client_for(fake, an_hour_behind, telemetry=otel.telemetry(), poll=poll) as client:
        await client.generate(TextToImage(prompt="a banana"))
    wait = otel.only("nanobanana.wait")
    # Seen 30 s and some after the create, ended 30 s after it by the provider's clock.
    assert attributes(wait)["nanobanana.task.duration"] >= 30
    assert 0 <= attributes(wait)["nanobanana.task.detection_delay"] < 5


async def test_a_poll_that_fails_is_an_event_and_the_wait_goes_on(otel: Otel) -> None:
    fake = fake_provider()
    fake.script("query", ["500", "502_html"])
    async with client_for(fake, telemetry=otel.telemetry(), max_retries=0) as client:
        await client.generate(
            ImageToImage(prompt="make it gold", image_urls=["https://example.com/a.png"])
        )
    generate = otel.only("nanobanana.generate")
    assert attributes(generate)["nanobanana.model"] == "nano-banana-image-to-image"
    assert attributes(generate)["nanobanana.input_images"] == 1
    wait = otel.only("nanobanana.wait")
    polls = [dict(event.attributes or {}) for event in wait.events]
    assert polls[:2] == [{"error.type": "ServerError"}, {"error.type": "ServerError"}]
    assert polls[-1] == {"nanobanana.task.state": "success"}
    assert wait.status.status_code is StatusCode.UNSET


async def test_a_sampled_out_call_records_its_metrics_only(otel: Otel) -> None:
    sampled_out = TracerProvider(sampler=ALWAYS_OFF, shutdown_on_exit=False)
    sampled_out.add_span_processor(SimpleSpanProcessor(otel.exporter))
    telemetry = Telemetry(tracer_provider=sampled_out, meter_provider=otel.meter_provider)
    fake = fake_provider()
    async with client_for(fake, telemetry=telemetry) as client:
        result = await client.generate(TextToImage(prompt="a banana"))
        await client.download(result.urls[0])
    assert otel.spans() == []
    created = {"nanobanana.endpoint": "create", "http.response.status_code": 200}
    assert otel.total("nanobanana.client.requests", created) == 1
    assert otel.total("nanobanana.slot.wait.duration") == 1


async def test_a_download_refused_before_sending_is_a_failed_span(otel: Otel) -> None:
    async with client_for(fake_provider(), telemetry=otel.telemetry()) as client:
        with pytest.raises(DownloadError):
            await client.download("https://example.com:port/a.png")
    download = otel.only("nanobanana.download")
    assert attributes(download)["server.address"] == ""
    assert attributes(download)["error.type"] == "DownloadError"


async def test_a_failed_task_fails_the_span_with_its_code(otel: Otel) -> None:
    fake = fake_provider(fail_rate=1.0, fail_codes=[("501", "the model refused")])
    async with client_for(fake, telemetry=otel.telemetry()) as client:
        with pytest.raises(TaskFailedError):
            await client.generate(TextToImage(prompt="a banana"))
    generate = otel.only("nanobanana.generate")
    assert generate.status.status_code is StatusCode.ERROR
    assert attributes(generate)["error.type"] == "TaskFailedError"
    assert attributes(generate)["nanobanana.task.state"] == "fail"
    assert attributes(generate)["nanobanana.task.fail_code"] == "501"
    assert [event.name for event in generate.events] == ["exception"]
    assert otel.total("nanobanana.task.duration", {"nanobanana.task.state": "fail"}) == 1


async def test_create_then_wait_then_save_each_have_their_span(otel: Otel, tmp_path: Path) -> None:
    fake = fake_provider()
    async with client_for(fake, telemetry=otel.telemetry()) as client:
        task_id = await client.create_task(TextToImage(prompt="a banana"), request_id="req-1")
        task = await client.get_task(task_id)
        result = await client.wait_for_result(task_id)
        paths = await client.save_result(result, tmp_path)
        data = await client.download(result.urls[0])
        raw = await client.with_raw_response.create_task(TextToImage(prompt="two bananas"))
        await client.with_raw_response.get_task(raw.value)

    create_task, raw_create = otel.spans("nanobanana.create_task")
    assert attributes(create_task)["nanobanana.request_id"] == "req-1"
    assert attributes(create_task)["nanobanana.task_id"] == task_id
    assert attributes(create_task)["nanobanana.attempts"] == 1
    assert attributes(raw_create)["nanobanana.task_id"] == raw.value
    get_task, raw_get = otel.spans("nanobanana.get_task")
    assert attributes(get_task)["nanobanana.task_id"] == task_id
    assert attributes(get_task)["nanobanana.polls"] == 1
    assert attributes(raw_get)["nanobanana.task_id"] == raw.value
    wait = otel.only("nanobanana.wait_for_result")
    assert attributes(wait)["nanobanana.task.state"] == "success"
    assert children(otel, wait, "nanobanana.wait")
    save = otel.only("nanobanana.save_result")
    (saved,) = children(otel, save, "nanobanana.download")
    assert attributes(saved)["http.response.body.size"] == paths[0].stat().st_size
    assert attributes(saved)["server.address"] == httpx.URL(result.urls[0]).host
    (fetched,) = [span for span in otel.spans("nanobanana.download") if span.parent is None]
    assert attributes(fetched)["http.response.body.size"] == len(data)
    assert task.task_id == task_id


async def test_a_cancelled_call_ends_its_spans_and_is_no_error(otel: Otel) -> None:
    fake = fake_provider(duration=1000.0)
    fake.script("query", ["slow"])  # the first poll is still out when the call is cancelled
    async with (
        client_for(fake, telemetry=otel.telemetry()) as client,
        anyio.create_task_group() as group,
    ):
        group.start_soon(client.generate, TextToImage(prompt="a banana"))
        await wait_until(lambda: fake.stats.query_requests >= 1)
        group.cancel_scope.cancel()
    polls = {"nanobanana.endpoint": "query", "error.type": "cancelled"}
    assert otel.total("nanobanana.client.requests", polls) == 1
    generate = otel.only("nanobanana.generate")
    wait = otel.only("nanobanana.wait")
    for span in (generate, wait):
        assert attributes(span)["nanobanana.cancelled"] is True
        assert span.status.status_code is StatusCode.UNSET
    assert parent_id(wait) == span_id(generate)


async def test_a_cancelled_batch_ends_every_job_span(otel: Otel) -> None:
    fake = fake_provider(duration=1000.0, max_active=2)
    async with (
        client_for(fake, telemetry=otel.telemetry()) as client,
        anyio.create_task_group() as group,
    ):
        group.start_soon(BatchRunner(client, max_active=2).run, prompts(4))
        await wait_until(lambda: fake.stats.query_requests >= 2)  # both slots' tasks polled
        group.cancel_scope.cancel()
    batch = otel.only("nanobanana.batch")
    jobs = otel.spans("nanobanana.batch.job")
    assert len(jobs) == 3  # two running, one waiting for a slot; the last never read
    assert all(attributes(job)["nanobanana.cancelled"] for job in jobs)
    assert attributes(batch)["nanobanana.cancelled"] is True
    assert len(otel.spans("nanobanana.slot_wait")) == 3


async def test_creates_a_stopped_batch_holds_back_are_no_requests(otel: Otel) -> None:
    fake = fake_provider(credits=2)
    async with client_for(fake, telemetry=otel.telemetry()) as client:
        outcomes = await BatchRunner(client, max_active=1).run(prompts(5))
    assert [outcome.ok for outcome in outcomes] == [True, True, False, False, False]
    jobs = otel.spans("nanobanana.batch.job")
    assert len(jobs) == 5
    failed = [job for job in jobs if job.status.status_code is StatusCode.ERROR]
    assert {attributes(job)["error.type"] for job in failed} == {"InsufficientCreditsError"}
    assert len(otel.spans("nanobanana.create")) == fake.stats.create_requests == 3
    assert otel.total("nanobanana.client.requests", {"nanobanana.endpoint": "create"}) == 3


async def test_a_create_the_pacer_held_past_its_deadline_is_no_request(otel: Otel) -> None:
    fake = fake_provider()
    async with client_for(fake, telemetry=otel.telemetry()) as client:
        client.limits.endpoint("create").on_rate_limited(None, limit=1, window=60.0, sent_at=0.0)
        await client.create_task(TextToImage(prompt="a banana"))
        with pytest.raises(APITimeoutError, match="nothing was sent"):
            await client.create_task(TextToImage(prompt="two bananas"), timeout=0.05)
    first, second = otel.spans("nanobanana.create_task")
    assert attributes(first)["nanobanana.attempts"] == 1
    assert attributes(second)["nanobanana.attempts"] == 0
    assert attributes(second)["error.type"] == "APITimeoutError"
    assert len(otel.spans("nanobanana.create")) == fake.stats.create_requests == 1
    assert otel.total("nanobanana.client.requests") == 1
    held = otel.points("nanobanana.pacer.wait.duration")
    assert [point.count for point in held] == [2]  # both went to the pacer; it held one


async def test_jobs_answered_without_a_create_have_spans_too(otel: Otel, tmp_path: Path) -> None:
    fake = fake_provider()
    journal = tmp_path / "run.sqlite"
    items: list[Any] = [*prompts(2), "not a request"]
    async with client_for(fake, telemetry=otel.telemetry()) as client:
        await BatchRunner(client, journal=journal).run(items)
        otel.exporter.clear()
        await BatchRunner(client, journal=journal).run(items)
    jobs = sorted(
        otel.spans("nanobanana.batch.job"), key=lambda s: attributes(s)["nanobanana.batch.index"]
    )
    assert [attributes(job).get("nanobanana.batch.resumed") for job in jobs] == [True, True, None]
    assert [attributes(job)["nanobanana.attempts"] for job in jobs] == [0, 0, 0]
    assert attributes(jobs[2])["error.type"] == InvalidRequestError.__name__
    assert jobs[0].status.status_code is StatusCode.UNSET


# -- what is recorded, and what never is ----------------------------------------------------------


async def test_the_prompt_is_recorded_only_when_asked(otel: Otel) -> None:
    fake = fake_provider()
    async with client_for(fake, telemetry=otel.telemetry()) as client:
        await client.generate(TextToImage(prompt="a private banana"))
    async with client_for(fake, telemetry=otel.telemetry(record_prompts=True)) as client:
        await client.generate(TextToImage(prompt="a public banana"))
    first, second = otel.spans("nanobanana.generate")
    assert "nanobanana.prompt" not in attributes(first)
    assert attributes(second)["nanobanana.prompt"] == "a public banana"
    assert "a private banana" not in json.dumps([json.loads(s.to_json()) for s in otel.spans()])


async def test_the_key_is_in_no_span_and_no_metric_even_when_a_server_echoes_it(
    otel: Otel,
) -> None:
    def echo(request: httpx.Request, response: httpx.Response) -> httpx.Response | None:
        if request.method == "POST":
            return envelope(500, f"bad key {request.headers['authorization']}")
        return None

    fake = fake_provider()
    async with client_for(fake, echo, telemetry=otel.telemetry(record_prompts=True)) as client:
        with pytest.raises(Exception, match="bad key"):
            await client.generate(TextToImage(prompt="a banana"), timeout=5)
    exported = json.dumps([json.loads(span.to_json()) for span in otel.spans()])
    assert "ServerError" in exported
    assert KEY not in exported
    metrics = otel.reader.get_metrics_data()
    assert metrics is not None
    assert KEY not in metrics.to_json()


async def test_gauges_name_each_client_and_follow_the_limits(otel: Otel) -> None:
    fake = fake_provider()
    async with (
        client_for(fake, telemetry=otel.telemetry(name="web"), tier="basic") as web,
        client_for(fake, telemetry=otel.telemetry(name="batch"), max_active=3) as batch,
    ):
        caps = {
            p.attributes["nanobanana.client.name"]: p.value
            for p in otel.points("nanobanana.limits.max_active")
        }
        assert caps == {"web": 5, "batch": 3}
        rates = {
            (p.attributes["nanobanana.client.name"], p.attributes["nanobanana.endpoint"]): p.value
            for p in otel.points("nanobanana.limits.rate")
        }
        assert rates == {
            ("web", "create"): web.limits.endpoint("create").rate,
            ("web", "query"): web.limits.query.rate,
        }
        batch.limits.active.on_conflict(2)
        caps = {
            p.attributes["nanobanana.client.name"]: p.value
            for p in otel.points("nanobanana.limits.max_active")
        }
        assert caps["batch"] == 2
        # A derived client shares its original's limits: it adds no second series.
        derived = web.with_options(timeout=5)
        await derived.generate(TextToImage(prompt="a banana"))
        held = [
            p
            for p in otel.points("nanobanana.client.active_tasks")
            if p.attributes["nanobanana.client.name"] == "web"
        ]
        assert [p.value for p in held] == [0]
    assert {
        p.attributes["server.address"] for p in otel.points("nanobanana.limits.max_active")
    } == {httpx.URL(web.base_url).host}


async def test_a_task_without_completetime_has_no_detection_delay(otel: Otel) -> None:
    def no_complete_time(request: httpx.Request, response: httpx.Response) -> httpx.Response | None:
        if request.method != "GET" or "recordInfo" not in request.url.path:
            return None
        body = json.loads(response.content)
        if body.get("data"):
            body["data"]["completeTime"] = None
        return httpx.Response(response.status_code, json=body)

    fake = fake_provider()
    async with client_for(fake, no_complete_time, telemetry=otel.telemetry()) as client:
        result = await client.generate(TextToImage(prompt="a banana"))
    assert otel.total("nanobanana.task.duration") == 1  # from our create to its end seen
    assert otel.total("nanobanana.task.detection_delay") == 0
    assert "nanobanana.task.detection_delay" not in attributes(otel.only("nanobanana.wait"))
    # A client that did not create the task has only the provider's times: none here.
    async with client_for(fake, no_complete_time, telemetry=otel.telemetry()) as other:
        await other.wait_for_result(result.task_id)
    assert otel.total("nanobanana.task.duration") == 1
    (_, wait) = otel.spans("nanobanana.wait")
    assert "nanobanana.task.duration" not in attributes(wait)
    # With them, it has the provider's duration, and the end against the wall clock.
    async with client_for(fake, telemetry=otel.telemetry()) as third:
        await third.wait_for_result(result.task_id)
    assert otel.total("nanobanana.task.duration") == 2
    assert otel.total("nanobanana.task.detection_delay") == 1


async def test_disabled_telemetry_records_nothing(otel: Otel) -> None:
    fake = fake_provider()
    async with client_for(fake, telemetry=otel.telemetry(enabled=False)) as client:
        assert client.engine.telemetry is NO_RECORDER
        result = await client.generate(TextToImage(prompt="a banana"))
        await client.download(result.urls[0])
    assert otel.spans() == []
    assert otel.points("nanobanana.client.requests") == []


async def test_a_gauge_read_while_the_limits_change_skips_that_number(otel: Otel) -> None:
    class Racing(EndpointLimiter):
        @property
        def rate(self) -> float | None:
            raise RuntimeError("dictionary changed size during iteration")

    limits = Limits(tier="basic")
    limits.create = Racing("create")
    async with client_for(fake_provider(), telemetry=otel.telemetry(), limits=limits):
        rates = otel.points("nanobanana.limits.rate")
    assert [point.attributes["nanobanana.endpoint"] for point in rates] == ["query"]


def test_a_broken_recorder_module_is_not_taken_for_a_missing_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "nanobanana_async._otel", None)
    with pytest.raises(ModuleNotFoundError):
        AsyncNanoBanana("sk-test")


def test_a_provider_that_is_not_opentelemetrys_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="TracerProvider"):
        AsyncNanoBanana("sk-test", telemetry=Telemetry(tracer_provider=object()))
    with pytest.raises(ConfigurationError, match="MeterProvider"):
        AsyncNanoBanana("sk-test", telemetry=Telemetry(meter_provider=object()))


async def test_without_an_sdk_nothing_reaches_opentelemetry() -> None:
    # The process's global providers are OpenTelemetry's proxies: no SDK was configured.
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    fake = fake_provider()
    async with client_for(fake) as client:
        recorder = client.engine.telemetry
        assert recorder is not NO_RECORDER
        assert recorder.operation("generate") is NULL_SCOPE
        assert recorder.download("https://example.com/a.png") is NULL_SCOPE
        assert recorder.exchange("create") is NULL_SCOPE
        assert recorder.slot_wait("before_create", "interactive") is NULL_SCOPE
        result = await client.generate(TextToImage(prompt="a banana"))
    assert result.urls


def test_the_api_still_keeps_its_providers_where_the_client_looks() -> None:
    # The client tells "no provider set" from the API's module globals, as cheap as a read;
    # without them it would record through the API's proxies always (correct, slower).
    assert trace._TRACER_PROVIDER is None  # type: ignore[attr-defined]
    from opentelemetry.metrics import _internal as metrics_api

    assert metrics_api._METER_PROVIDER is None


# -- without OpenTelemetry installed -------------------------------------------------------------

_WITHOUT_OTEL = """
import sys
sys.modules["opentelemetry"] = None  # as if the [otel] extra were not installed
import anyio
from nanobanana_async import BatchRunner, TextToImage
from nanobanana_async._telemetry import NO_RECORDER
from nanobanana_async.testing import FakeNanoBanana

async def main():
    fake = FakeNanoBanana(time_scale=0.01)
    async with fake.client() as client:
        assert client.engine.telemetry is NO_RECORDER
        await client.generate(TextToImage(prompt="a banana"))
        outcomes = await BatchRunner(client).run([TextToImage(prompt=f"b{i}") for i in range(3)])
    assert all(outcome.ok for outcome in outcomes)
    print("ran without opentelemetry")

anyio.run(main)
"""


def test_without_opentelemetry_the_library_runs_as_before() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _WITHOUT_OTEL], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ran without opentelemetry"


def test_importing_the_library_imports_no_opentelemetry() -> None:
    code = (
        "import sys, nanobanana_async, nanobanana_async.testing; "
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


_GLOBAL_PROVIDERS = """
import anyio
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from nanobanana_async import Telemetry, TextToImage
from nanobanana_async._telemetry import NULL_SCOPE
from nanobanana_async.testing import FakeNanoBanana

async def main():
    fake = FakeNanoBanana(time_scale=0.01)
    async with fake.client(telemetry=Telemetry(name="early")) as early:
        assert early.engine.telemetry.exchange("create") is NULL_SCOPE  # nothing set yet
        # The application sets its providers after one client was built, before another.
        spans, reader = InMemorySpanExporter(), InMemoryMetricReader()
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
        trace.set_tracer_provider(tracer_provider)
        metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
        assert early.engine.telemetry.exchange("create") is not NULL_SCOPE
        async with fake.client(telemetry=Telemetry(name="late")) as late:
            await early.generate(TextToImage(prompt="a banana"))
            await late.generate(TextToImage(prompt="two bananas"))
            data = reader.get_metrics_data()
    points = {
        metric.name: sorted(
            (dict(point.attributes).get("nanobanana.client.name", ""), getattr(point, "value", 0))
            for point in metric.data.data_points
        )
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    }
    print(sorted(span.name for span in spans.get_finished_spans() if span.parent is None))
    print(points["nanobanana.limits.max_active"])
    stats = fake.stats
    counted = sum(value for _, value in points["nanobanana.client.requests"])
    print(counted, stats.create_requests + stats.query_requests)

anyio.run(main)
"""


def test_the_global_providers_serve_clients_built_before_and_after_they_are_set() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _GLOBAL_PROVIDERS],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    roots, caps, requests = done.stdout.strip().splitlines()
    assert roots == "['nanobanana.generate', 'nanobanana.generate']"
    assert caps == "[('early', 2), ('late', 2)]"
    counted, seen = requests.split()
    assert counted == seen
