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

The client lives in the app's lifespan: one connection pool, and one view of the key's limits
shared by every request and every batch. Batches run in a task group that the lifespan owns,
so shutting the app down cancels them cleanly (add ``journal=`` to `BatchRunner` to resume them
after a restart). ``NANOBANANA_API_KEY``, ``NANOBANANA_BASE_URL`` and ``NANOBANANA_IMAGE_HOST``
are read when the app starts, which is how the tests point it at the fake provider and at an
S3 server of their own.
"""

import os
import uuid
from collections.abc import AsyncGenerator
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


# -- what the API takes and returns --------------------------------------------------------------


class ImageIn(BaseModel):
    prompt: str
    image_urls: list[str] = Field(default_factory=list, max_length=10)
    image_size: ImageSize = "1:1"
    output_format: OutputFormat = "png"

    def to_request(self) -> ImageRequest:
        """The library's request; raises `InvalidRequestError` for a rule pydantic missed.

        The caller's strings go straight into ``image_urls``: to the library a ``str`` is
        always a URL, never a file of this server, and anything but ``https://`` is refused
        (a 422 here). Uploads go through ``POST /edits``.
        """
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
