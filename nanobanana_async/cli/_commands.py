"""The commands on one task: ``generate`` and ``edit``, ``status``, ``download``.

Each takes the `Ui` and the global `Settings`, prints its results, and returns an exit code or
raises (a `CliError`, or a library error that `execute` words for the shell).
"""

import contextlib
import json
import os
from collections.abc import AsyncGenerator, Callable
from pathlib import Path
from typing import Any

import anyio
import attrs
from rich.status import Status
from rich.table import Table

from .. import (
    AsyncNanoBanana,
    ConfigurationError,
    ImageHost,
    ImageRequest,
    ImageToImage,
    NanoBananaError,
    S3ImageHost,
    Task,
    TaskFailedError,
    TaskNotFoundError,
    TaskResult,
    TaskState,
    WaitTimeoutError,
)
from ._exit import EXIT_AUTH, EXIT_FAILURE, EXIT_OK, CliError, describe, os_error
from ._names import file_stem
from ._ui import Ui

__all__ = [
    "API_KEY_VARIABLE",
    "IMAGE_HOST_VARIABLE",
    "Settings",
    "Started",
    "api_key_in_use",
    "download_task",
    "generate_image",
    "needs_image_host",
    "open_client",
    "open_image_host",
    "show_status",
]

API_KEY_VARIABLE = "NANOBANANA_API_KEY"
IMAGE_HOST_VARIABLE = "NANOBANANA_IMAGE_HOST"


@attrs.define
class Settings:
    """The global options."""

    api_key: str | None = None
    base_url: str | None = None
    verbose: bool = False


def api_key_in_use(settings: Settings) -> str | None:
    """The key the commands send: ``--api-key``, else the environment's (None if neither)."""
    return settings.api_key or os.environ.get(API_KEY_VARIABLE) or None


def open_client(settings: Settings, **kwargs: Any) -> AsyncNanoBanana:
    """The client of the global options.

    Raises:
        CliError: No API key was given or found in the environment (exit code 3).
    """
    key = api_key_in_use(settings)
    if not key or not key.strip():
        raise CliError(f"no API key: pass --api-key or set {API_KEY_VARIABLE}", EXIT_AUTH)
    return AsyncNanoBanana(api_key=key, base_url=settings.base_url or None, **kwargs)


@contextlib.asynccontextmanager
async def open_image_host(url: str | None) -> AsyncGenerator[ImageHost | None, None]:
    """The image host ``--image-host`` names (``s3://bucket/prefix``), or None.

    Raises:
        CliError: The URL is not an s3:// URL, or the host's settings are refused (exit 2).
    """
    if not url:
        yield None
        return
    if not url.startswith("s3://"):
        raise CliError(f"--image-host must be an s3://bucket/prefix URL, got {url!r}")
    try:
        host = S3ImageHost(url)
    except ConfigurationError as exc:
        raise CliError(f"--image-host: {exc}") from None
    async with host:
        yield host


def needs_image_host(request: ImageRequest, image_host: str | None) -> None:
    """Refuse, with the CLI's words, an edit of local files without ``--image-host``."""
    if isinstance(request, ImageToImage) and request.local_images and not image_host:
        raise CliError(
            "local images need an image host the provider can fetch them from: pass "
            f"--image-host s3://bucket/prefix or set {IMAGE_HOST_VARIABLE} "
            "(see docs/how-to/local-images.md)"
        )


@attrs.define
class Started:
    """The task a command created, once it has: what Ctrl-C names for a later ``download``."""

    task_id: str | None = None


def _on_update(ui: Ui, status: Status, task_id: str) -> Callable[[Task], None]:
    def update(task: Task) -> None:
        status.update(ui.clean(f"task {task_id}: {task.raw_state or task.state.value}"))

    return update


async def generate_image(
    ui: Ui,
    settings: Settings,
    build: Callable[[], ImageRequest],
    *,
    out: Path,
    timeout: float,
    wait: bool,
    started: Started,
    image_host: str | None = None,
    name: str | None = None,
) -> int:
    """Create one task, wait for it and save its images; prints the saved paths.

    ``name`` is a ``--name`` template (`_names`), already checked.
    """
    request = build()
    needs_image_host(request, image_host)
    if not timeout > 0:
        raise CliError("--timeout must be more than 0 seconds")
    deadline = anyio.current_time() + timeout
    async with (
        open_image_host(image_host) as host,
        open_client(settings, image_host=host) as client,
    ):
        with ui.err.status("creating the task...") as status:
            task_id = await client.create_task(request, timeout=timeout)
            started.task_id = task_id
            if not wait:
                ui.result(task_id)
                return EXIT_OK
            ui.info(f"created task {task_id}")
            status.update(f"task {task_id}: waiting")
            remaining = max(deadline - anyio.current_time(), 0.001)
            try:
                result = await client.wait_for_result(
                    task_id, timeout=remaining, on_update=_on_update(ui, status, task_id)
                )
            except WaitTimeoutError as exc:
                state = f" (last state: {exc.task.raw_state})" if exc.task else ""
                raise CliError(
                    f"task {task_id} did not finish within {timeout:g} s{state}; "
                    f"it may still finish: nanobanana download {task_id} --wait",
                    EXIT_FAILURE,
                ) from None
            status.update(f"task {task_id}: saving")
            try:
                stem = None
                if name is not None:
                    stem = file_stem(name, index=1, line=1, prompt=request.prompt, task_id=task_id)
                paths = await client.save_result(result, out, stem=stem)
            except (OSError, NanoBananaError) as exc:
                detail = describe(exc) if isinstance(exc, NanoBananaError) else os_error(exc)
                raise CliError(
                    f"task {task_id} succeeded but its image was not saved ({detail}); "
                    f"try again: nanobanana download {task_id} --out DIR",
                    EXIT_FAILURE,
                ) from None
    ui.info(f"task {task_id} succeeded")
    for path in paths:
        ui.result(str(path))
    return EXIT_OK


def _task_as_dict(task: Task) -> dict[str, object]:
    return {
        "task_id": task.task_id,
        "state": task.raw_state or task.state.value,
        "model": task.model,
        "urls": list(task.urls),
        "fail_code": task.fail_code,
        "fail_message": task.fail_message,
        "cost_time": task.cost_time,
        "create_time": task.create_time.isoformat() if task.create_time else None,
        "complete_time": task.complete_time.isoformat() if task.complete_time else None,
    }


async def show_status(ui: Ui, settings: Settings, task_id: str, *, as_json: bool) -> int:
    """Read a task once and print what the provider says of it."""
    async with open_client(settings) as client:
        try:
            task = await client.get_task(task_id)
        except TaskNotFoundError as exc:
            raise CliError(f"task {task_id!r} not found ({exc})", EXIT_FAILURE) from None
    data = _task_as_dict(task)
    if as_json:
        ui.result(json.dumps(data, ensure_ascii=False))
        return EXIT_OK
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    for key, value in data.items():
        if key == "urls":
            for url in task.urls:
                table.add_row("url", ui.clean(url))
        elif key == "cost_time" and value is not None:
            # The docs say milliseconds; some servers send seconds: say what was sent.
            table.add_row("cost time", f"{value:g} (costTime, in ms per the API docs)")
        elif value is not None and value != "":
            table.add_row(key.replace("_", " "), ui.clean(str(value)))
    if task.create_time and task.complete_time:
        took = (task.complete_time - task.create_time).total_seconds()
        table.add_row("took", f"{took:.1f} s (from create to complete time)")
    ui.out.print(table)
    return EXIT_OK


async def download_task(
    ui: Ui, settings: Settings, task_id: str, *, out: Path, wait: bool, timeout: float
) -> int:
    """Save the images of a finished task (waiting for it first with ``wait``)."""
    async with open_client(settings) as client:
        try:
            if wait:
                with ui.err.status(f"task {task_id}: waiting") as status:
                    result = await client.wait_for_result(
                        task_id, timeout=timeout, on_update=_on_update(ui, status, task_id)
                    )
            else:
                task = await client.get_task(task_id)
                if task.state is TaskState.FAIL:
                    raise TaskFailedError(task)
                if not task.is_finished:
                    raise CliError(
                        f"task {task_id} is not finished yet ({task.raw_state}); "
                        "try again later or pass --wait",
                        EXIT_FAILURE,
                    )
                result = TaskResult(task_id=task.task_id, urls=task.urls, task=task)
        except TaskNotFoundError as exc:
            raise CliError(f"task {task_id!r} not found ({exc})", EXIT_FAILURE) from None
        paths = await client.save_result(result, out)
    for path in paths:
        ui.result(str(path))
    return EXIT_OK
