"""A FastAPI app that makes images with nanobanana-async: one image, or a whole batch.

Run it (``pip install fastapi uvicorn``)::

    NANOBANANA_API_KEY=... uvicorn examples.fastapi_app:app

    curl -X POST localhost:8000/images -H 'content-type: application/json' \\
         -d '{"prompt": "a banana in space"}'
    curl -X POST localhost:8000/batches -H 'content-type: application/json' \\
         -d '{"requests": [{"prompt": "a banana"}, {"prompt": "two bananas"}]}'
    curl localhost:8000/batches/<batch_id>
    curl -X POST localhost:8000/edits -F prompt='make it gold' -F image=@photo.jpg

Uploaded images (``POST /edits``) are published for the provider through an image host:
set ``NANOBANANA_IMAGE_HOST=s3://bucket/prefix`` (and the usual ``AWS_*`` variables; ``pip
install 'nanobanana-async[s3]' python-multipart``). See docs/how-to/local-images.md.

Traces and metrics (OpenTelemetry; ``pip install 'nanobanana-async[otel]' opentelemetry-sdk``)
go to the console with ``OTEL_TRACES_EXPORTER=console OTEL_METRICS_EXPORTER=console``, or to an
OpenTelemetry collector with ``otlp`` (and ``pip install opentelemetry-exporter-otlp-proto-http``;
``OTEL_EXPORTER_OTLP_ENDPOINT`` says where). Each request's span (FastAPI's own since 0.142, a
small middleware's before) is the parent of the client's spans; see
docs/how-to/observability.md.

The client lives in the app's lifespan: one connection pool, and one view of the key's limits
shared by every request and every batch. Batches run in a task group that the lifespan owns,
so shutting the app down cancels them cleanly (add ``journal=`` to `BatchRunner` to resume them
after a restart). ``NANOBANANA_API_KEY``, ``NANOBANANA_BASE_URL`` and ``NANOBANANA_IMAGE_HOST``
are read when the app starts, which is how the tests point it at the fake provider and at an
S3 server of their own.
"""

import importlib.util
import os
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, MutableMapping
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Annotated, Any, Literal

import anyio
import anyio.abc
import attrs
from fastapi import Depends, FastAPI, Form, Header, HTTPException, Request, UploadFile
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from nanobanana_async import (
    AsyncNanoBanana,
    BatchOutcome,
    BatchRunner,
    ImageRequest,
    ImageSize,
    ImageToImage,
    InvalidRequestError,
    NanoBananaError,
    OutputFormat,
    RequestConflictError,
    S3ImageHost,
    TaskFailedError,
    TextToImage,
    WaitTimeoutError,
)

MAX_BATCHES = 100
"""Finished batches kept in memory for ``GET /batches/{id}``; a real app would use a store."""

MAX_UPLOAD_BYTES = 10 * 1024 * 1024
"""The provider's limit per input image: a larger upload is refused unread past this."""

try:  # OpenTelemetry is optional: the app runs the same without it
    from opentelemetry import propagate, trace
except ImportError:
    trace = None

FASTAPI_TRACES_REQUESTS = importlib.util.find_spec("fastapi.telemetry") is not None
"""FastAPI 0.142 and later trace each request themselves once an SDK is configured: a server
span, then ``fastapi.endpoint`` around the handler, the parent of the client's spans."""


# -- traces and metrics (optional) ----------------------------------------------------------------

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class TraceRequests:
    """A server span for each HTTP request: the parent of the spans of what its handler awaits.

    For FastAPI before 0.142, which does not trace its requests itself. A plain ASGI middleware,
    so that it adds no dependency (``opentelemetry-instrumentation-fastapi``'s
    ``FastAPIInstrumentor.instrument_app(app)`` does the same and more). The caller's
    ``traceparent`` header, if any, is continued.
    """

    def __init__(
        self,
        app: Callable[[Scope, Receive, Send], Awaitable[None]],
        tracer_provider: Any = None,
    ) -> None:
        self.app = app
        self.tracer_provider = tracer_provider  # None: the global one

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or trace is None:
            await self.app(scope, receive, send)
            return
        headers = {
            key.decode("latin-1"): value.decode("latin-1") for key, value in scope["headers"]
        }
        method = scope["method"]
        tracer = trace.get_tracer("examples.fastapi_app", tracer_provider=self.tracer_provider)
        with tracer.start_as_current_span(
            f"{method} {scope['path']}",
            context=propagate.extract(headers),
            kind=trace.SpanKind.SERVER,
            attributes={"http.request.method": method, "url.path": scope["path"]},
        ) as span:

            async def send_and_tell(message: Message) -> None:
                if message["type"] == "http.response.start":
                    span.set_attribute("http.response.status_code", message["status"])
                await send(message)

            await self.app(scope, receive, send_and_tell)
            route = getattr(scope.get("route"), "path", None)
            if route is not None:  # the route's template, not the path: few distinct names
                span.update_name(f"{method} {route}")
                span.set_attribute("http.route", route)


def export_telemetry(stack: AsyncExitStack) -> None:
    """Export traces and metrics as ``OTEL_TRACES_EXPORTER`` / ``OTEL_METRICS_EXPORTER`` say.

    ``console`` prints them, ``otlp`` sends them to a collector; unset, nothing is set up and
    the client records nothing. The SDK reads ``OTEL_SERVICE_NAME`` and the OTLP endpoint
    from the environment itself.
    """
    traces = os.environ.get("OTEL_TRACES_EXPORTER", "none")
    metrics = os.environ.get("OTEL_METRICS_EXPORTER", "none")
    if trace is None or (traces == "none" and metrics == "none"):
        return
    from opentelemetry import metrics as otel_metrics
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import (
        ConsoleMetricExporter,
        PeriodicExportingMetricReader,
    )
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    if traces != "none":
        tracer_provider = TracerProvider()
        if traces == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        else:
            tracer_provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
        trace.set_tracer_provider(tracer_provider)
        stack.callback(tracer_provider.shutdown)  # exports what is left when the app stops
    if metrics != "none":
        if metrics == "otlp":
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

            exporter: Any = OTLPMetricExporter()
        else:
            exporter = ConsoleMetricExporter()
        meter_provider = MeterProvider(metric_readers=[PeriodicExportingMetricReader(exporter)])
        otel_metrics.set_meter_provider(meter_provider)
        stack.callback(meter_provider.shutdown)


# -- what the API takes and returns --------------------------------------------------------------


class ImageIn(BaseModel):
    prompt: str
    image_urls: list[str] = Field(default_factory=list, max_length=10)
    image_size: ImageSize = "1:1"
    output_format: OutputFormat = "png"

    def to_request(self) -> ImageRequest:
        """The library's request; raises `InvalidRequestError` for a rule pydantic missed."""
        for i, url in enumerate(self.image_urls):
            # A string that is not a URL would be read as a file of this server: never let
            # a caller name one. Uploads go through POST /edits instead.
            if not url.startswith("https://"):
                raise InvalidRequestError(f"image_urls[{i}]", "must be an https:// URL")
        if self.image_urls:
            return ImageToImage(
                prompt=self.prompt,
                image_urls=self.image_urls,
                image_size=self.image_size,
                output_format=self.output_format,
            )
        return TextToImage(
            prompt=self.prompt, image_size=self.image_size, output_format=self.output_format
        )


class ImageOut(BaseModel):
    task_id: str
    urls: list[str]


class BatchIn(BaseModel):
    requests: list[ImageIn] = Field(min_length=1, max_length=1000)


class BatchCreated(BaseModel):
    batch_id: str


class OutcomeOut(BaseModel):
    index: int
    task_id: str | None
    urls: list[str]
    error: str | None


class BatchOut(BaseModel):
    batch_id: str
    state: Literal["running", "finished", "cancelled"]
    total: int
    statistics: dict[str, Any]
    outcomes: list[OutcomeOut]


# -- batches running in the background -----------------------------------------------------------


class Batch:
    """One batch: its runner, and the outcomes seen so far."""

    def __init__(self, client: AsyncNanoBanana, requests: list[ImageRequest]) -> None:
        self.id = uuid.uuid4().hex
        self.requests = requests
        self.runner = BatchRunner(client)
        self.outcomes: list[BatchOutcome] = []
        self.state: Literal["running", "finished", "cancelled"] = "running"

    async def run(self) -> None:
        """Run to the end (failed jobs are outcomes, not exceptions)."""
        try:
            async with self.runner.stream(self.requests) as results:
                async for outcome in results:
                    self.outcomes.append(outcome)
        except BaseException:
            self.state = "cancelled"  # the app is shutting down
            raise
        self.state = "finished"

    def report(self) -> BatchOut:
        stats = self.runner.statistics()
        return BatchOut(
            batch_id=self.id,
            state=self.state,
            total=len(self.requests),
            statistics={**attrs.asdict(stats), "done": stats.done},
            outcomes=[
                OutcomeOut(
                    index=outcome.index,
                    task_id=outcome.task_id,
                    urls=list(outcome.result.urls) if outcome.result else [],
                    error=None if outcome.error is None else str(outcome.error),
                )
                for outcome in sorted(self.outcomes, key=lambda outcome: outcome.index)
            ],
        )


# -- the app ----------------------------------------------------------------------------------


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncGenerator[None, None]:
    # Leaving the block cancels the task group first (running batches stop, their tasks keep
    # their ids in the outcomes), then closes the client.
    async with AsyncExitStack() as stack:
        export_telemetry(stack)  # first: it stops last, exporting what the rest did
        host_url = os.environ.get("NANOBANANA_IMAGE_HOST")
        host = await stack.enter_async_context(S3ImageHost(host_url)) if host_url else None
        client = await stack.enter_async_context(AsyncNanoBanana(image_host=host))
        background = await stack.enter_async_context(anyio.create_task_group())
        app.state.client = client
        app.state.background = background
        app.state.batches = {}
        yield
        background.cancel_scope.cancel()


app = FastAPI(title="nanobanana-async example", lifespan=lifespan)
if trace is not None and not FASTAPI_TRACES_REQUESTS:
    app.add_middleware(TraceRequests)


def get_client(request: Request) -> AsyncNanoBanana:
    client: AsyncNanoBanana = request.app.state.client
    return client


Client = Annotated[AsyncNanoBanana, Depends(get_client)]


@app.exception_handler(InvalidRequestError)
async def invalid_request(request: Request, exc: InvalidRequestError) -> JSONResponse:
    return JSONResponse({"detail": str(exc), "field": exc.field}, status_code=422)


@app.exception_handler(RequestConflictError)
async def conflict(request: Request, exc: RequestConflictError) -> JSONResponse:
    # The Idempotency-Key was already used for a different image: the caller's mistake.
    detail = "this Idempotency-Key was already used for a different request"
    return JSONResponse({"detail": detail}, status_code=409)


@app.exception_handler(WaitTimeoutError)
async def still_running(request: Request, exc: WaitTimeoutError) -> JSONResponse:
    return JSONResponse({"task_id": exc.task_id}, status_code=202)


@app.exception_handler(TaskFailedError)
async def task_failed(request: Request, exc: TaskFailedError) -> JSONResponse:
    detail = exc.fail_message or "the image could not be generated"
    return JSONResponse({"detail": detail, "fail_code": exc.fail_code}, status_code=502)


@app.exception_handler(NanoBananaError)
async def provider_error(request: Request, exc: NanoBananaError) -> JSONResponse:
    return JSONResponse({"detail": "the image service is unavailable"}, status_code=502)


@app.post("/images")
async def create_image(
    body: ImageIn,
    client: Client,
    idempotency_key: Annotated[str | None, Header()] = None,
) -> ImageOut:
    """Generate one image and return its URLs (they expire within hours)."""
    result = await client.generate(body.to_request(), request_id=idempotency_key, timeout=90)
    return ImageOut(task_id=result.task_id, urls=list(result.urls))


@app.post("/edits")
async def edit_upload(
    prompt: Annotated[str, Form()],
    image: UploadFile,
    client: Client,
    idempotency_key: Annotated[str | None, Header()] = None,
) -> ImageOut:
    """Edit an uploaded image (multipart form: ``prompt``, ``image``); returns the result's URLs.

    The upload is checked (JPEG, PNG or WEBP, at most 10 MB) before anything is sent, then
    published through the client's image host, which gives the provider a presigned URL.
    """
    data = await image.read(MAX_UPLOAD_BYTES + 1)  # one byte over: too large, not cut short
    request = ImageToImage(prompt=prompt, image_urls=[data])
    result = await client.generate(request, request_id=idempotency_key, timeout=90)
    return ImageOut(task_id=result.task_id, urls=list(result.urls))


@app.post("/batches", status_code=202)
async def start_batch(body: BatchIn, request: Request, client: Client) -> BatchCreated:
    """Start a batch in the background; poll ``GET /batches/{batch_id}`` for its progress."""
    requests = [item.to_request() for item in body.requests]  # all valid before any is sent
    batch = Batch(client, requests)
    batches: dict[str, Batch] = request.app.state.batches
    if len(batches) >= MAX_BATCHES:
        oldest = next((key for key, old in batches.items() if old.state != "running"), None)
        if oldest is None:
            raise HTTPException(503, "too many batches running")
        del batches[oldest]
    batches[batch.id] = batch
    background: anyio.abc.TaskGroup = request.app.state.background
    background.start_soon(batch.run)
    return BatchCreated(batch_id=batch.id)


@app.get("/batches/{batch_id}")
async def read_batch(batch_id: str, request: Request) -> BatchOut:
    """A batch's progress (the runner's statistics) and the outcomes finished so far."""
    batch: Batch | None = request.app.state.batches.get(batch_id)
    if batch is None:
        raise HTTPException(404, "no such batch")
    return batch.report()
