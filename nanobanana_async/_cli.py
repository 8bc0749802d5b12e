"""The ``nanobanana`` command line: generate, edit, batch, status, download and demo.

typer and rich come with the ``[cli]`` extra. This module imports them only once `main` runs, so
``import nanobanana_async`` never does, and a missing extra is one line of advice, not a
traceback. Everything else runs on anyio (``anyio.run``), like the library.

Results go to stdout (saved paths, summaries, ``status``); progress, per-job lines and errors
go to stderr, so ``nanobanana generate "..." > paths.txt`` keeps only the paths. An error is one
line, ``error: ...``, and the exit code says what kind it was:

* 0 — everything asked for was done;
* 1 — an API or task failure (a task failed, a wait timed out, the API was unreachable, a
  result could not be saved);
* 2 — bad usage or input (a bad option, an unreadable file, an invalid row or request):
  nothing was sent for it;
* 3 — the API key is missing or was refused, or the account is out of credits;
* 130 — interrupted (Ctrl-C).

Batch files are read lazily, a row at a time, as slots free up. A row that cannot be read or
that breaks a rule of the provider becomes a failed outcome naming its line and the reason,
and nothing is sent for it; the other rows go on. Rows keep their place in the batch (an
invalid row still takes its index), so a journal stays valid after you fix a row and re-run.
"""

# No `from __future__ import annotations` here: typer reads the annotations of the commands
# at run time, and those refer to typer itself, which is imported inside `_build_app`.

import csv
import json
import logging
import os
import re
import shlex
import sys
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, BinaryIO, cast

import anyio
import attrs

from ._batch import BatchRunner
from ._client import AsyncNanoBanana
from ._errors import (
    APIConnectionError,
    AuthenticationError,
    InsufficientCreditsError,
    InvalidRequestError,
    NanoBananaError,
    TaskFailedError,
    TaskNotFoundError,
    WaitTimeoutError,
)
from ._journal import Journal
from ._models import (
    IMAGE_SIZES,
    ImageToImage,
    Request,
    Task,
    TaskResult,
    TaskState,
    TextToImage,
)
from ._outcomes import BatchOutcome, BatchStatistics
from ._polling import PollPolicy
from ._retry import RetryPolicy
from ._version import __version__

if TYPE_CHECKING:
    import typer
    from rich.console import Console
    from rich.progress import Progress, TaskID
    from rich.status import Status

    from .testing import FakeNanoBanana

__all__ = ["main"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_AUTH = 3
EXIT_INTERRUPTED = 130

INSTALL_HINT = (
    "error: the nanobanana command line needs typer and rich: pip install 'nanobanana-async[cli]'"
)

FIELDS = (
    "prompt",
    "image_urls",
    "image_size",
    "aspect_ratio",
    "output_format",
    "nsfw_checker",
    "name",
)
"""The fields (JSONL) or columns (CSV) a batch row may have."""

_SAVE_CONCURRENCY = 8
_MAX_LISTED_FAILURES = 20
_URL_SEPARATORS = re.compile(r"[\s|]+")
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")
_TRUE = {"true", "yes", "y", "1", "on"}
_FALSE = {"false", "no", "n", "0", "off"}
_DEMO_TIME_SCALE = 0.1
_DEMO_EDIT_SOURCE = "https://example.com/photos/banana.png"
_DEMO_PROMPTS: tuple[tuple[str, str, str], ...] = (
    ("a banana surfing a wave at sunset", "16:9", "png"),
    ("a banana astronaut floating above the moon", "1:1", "png"),
    ("a watercolour of a banana market in Lisbon", "4:3", "jpeg"),
    ("a banana-shaped submarine in a coral reef", "16:9", "png"),
    ("a cubist still life with bananas and a teapot", "3:4", "png"),
    ("a banana reading a newspaper in a Paris cafe", "1:1", "jpeg"),
    ("a neon sign that says BANANA in the rain", "9:16", "png"),
    ("a banana knight guarding a castle of pineapples", "2:3", "png"),
    ("a banana tree on a tiny floating island", "1:1", "png"),
    ("an art deco poster of a banana airship", "2:3", "jpeg"),
    ("a banana detective with a magnifying glass", "4:5", "png"),
    ("a pixel-art banana jumping over a pipe", "1:1", "png"),
    ("a banana wearing sunglasses on a skateboard", "16:9", "png"),
    ("a banana lighthouse on a stormy night", "9:16", "jpeg"),
    ("a banana bread recipe card, hand-lettered", "3:2", "png"),
    ("a banana robot watering houseplants", "1:1", "png"),
    ("a ukiyo-e wave made of bananas", "21:9", "png"),
    ("a banana hot-air balloon over the Alps", "5:4", "jpeg"),
)
_DEMO_FAILING = frozenset(
    {"a banana reading a newspaper in a Paris cafe", "a banana lighthouse on a stormy night"}
)
_STOP = frozenset({"a", "an", "the", "of", "on", "in", "with", "at"})
_DEMO_EDITS: tuple[str, ...] = (
    "make the banana gold",
    "put the banana in a snow globe",
)


# -- errors ---------------------------------------------------------------------------------


class CliError(Exception):
    """An error the command line reports as one line, with its exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE) -> None:
        self.exit_code = exit_code
        super().__init__(message)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _leaf(exc: BaseException) -> BaseException:
    """The first real error inside (nested) exception groups, or ``exc`` itself."""
    while isinstance(group := getattr(exc, "exceptions", None), tuple) and group:
        members = cast("tuple[BaseException, ...]", group)
        exc = next((e for e in members if isinstance(e, Exception)), members[0])
    return exc


def describe(exc: BaseException) -> str:
    """A one-line message for an error, worded for a shell user."""
    if isinstance(exc, AuthenticationError):
        return f"the API key was refused ({exc}); check --api-key or NANOBANANA_API_KEY"
    if isinstance(exc, InsufficientCreditsError):
        return f"the account is out of credits ({exc})"
    if isinstance(exc, APIConnectionError):
        return f"could not reach the API: {exc}"
    return _one_line(str(exc)) or type(exc).__name__


def _os_error(exc: OSError) -> str:
    return f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")


def exit_code_for(exc: BaseException) -> int:
    """The exit code for an error that ended a command."""
    if isinstance(exc, CliError):
        return exc.exit_code
    if isinstance(exc, (AuthenticationError, InsufficientCreditsError)):
        return EXIT_AUTH
    if isinstance(exc, InvalidRequestError):
        return EXIT_USAGE
    return EXIT_FAILURE


# -- batch files ----------------------------------------------------------------------------


@attrs.frozen
class BadRow:
    """A row of a batch file that could not become a request; nothing is sent for it."""

    line: int
    reason: str


@attrs.frozen
class Row:
    """One row of a batch: its line, the request (or why there is none), a file name."""

    line: int
    item: "Request | BadRow"
    name: str | None = None


class _RowError(ValueError):
    pass


def _parse_bool(value: str, field: str) -> bool:
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise _RowError(f"{field}: must be true or false, got {value!r}")


def split_urls(value: str) -> list[str]:
    """Split a cell of image URLs, separated by spaces or ``|``."""
    return [url for url in _URL_SEPARATORS.split(value.strip()) if url]


def request_from_fields(
    fields: Mapping[str, object], *, from_csv: bool
) -> tuple[Request, str | None]:
    """Build the request of one batch row; raises `InvalidRequestError` or ValueError.

    Returns:
        The request, and the file name the row asks for (or None).
    """
    unknown = [key for key in fields if key not in FIELDS]
    if unknown:
        raise _RowError(f"unknown field {unknown[0]!r}; the fields are {', '.join(FIELDS)}")
    prompt = fields.get("prompt")
    if prompt is None or prompt == "":
        raise InvalidRequestError("prompt", "is required")
    options: dict[str, Any] = {}
    for key in ("image_size", "aspect_ratio", "output_format"):
        value = fields.get(key)
        if value is not None and value != "":
            options[key] = value
    nsfw = fields.get("nsfw_checker")
    if nsfw is not None and nsfw != "":
        options["nsfw_checker"] = (
            _parse_bool(nsfw, "nsfw_checker") if from_csv and isinstance(nsfw, str) else nsfw
        )
    name = fields.get("name")
    if name is not None and not isinstance(name, str):
        raise _RowError(f"name: must be a string, not {type(name).__name__}")
    urls = fields.get("image_urls")
    if isinstance(urls, str):
        urls = split_urls(urls) or None
    request: Request
    if urls is None:
        request = TextToImage(prompt=cast("str", prompt), **options)
    else:
        request = ImageToImage(
            prompt=cast("str", prompt), image_urls=cast("Iterable[str]", urls), **options
        )
    return request, (name or None)


def _row(line: int, fields: Mapping[str, object], *, from_csv: bool) -> Row:
    try:
        request, name = request_from_fields(fields, from_csv=from_csv)
    except ValueError as exc:  # InvalidRequestError is a ValueError too
        return Row(line, BadRow(line, str(exc)))
    return Row(line, request, name)


def jsonl_rows(lines: Iterable[bytes]) -> Iterator[Row]:
    """Rows of a JSONL file, one JSON object per non-blank line, read lazily."""
    for number, raw in enumerate(lines, 1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            yield Row(number, BadRow(number, "is not valid UTF-8"))
            continue
        if number == 1:
            text = text.removeprefix("\ufeff")
        if not text.strip():
            continue
        try:
            value: object = json.loads(text.rstrip())
        except ValueError as exc:
            reason = (
                f"{exc.msg} (column {exc.colno})" if isinstance(exc, json.JSONDecodeError) else exc
            )
            yield Row(number, BadRow(number, f"is not valid JSON: {reason}"))
            continue
        if not isinstance(value, dict):
            yield Row(number, BadRow(number, 'must be a JSON object with a "prompt"'))
            continue
        yield _row(number, cast("dict[str, object]", value), from_csv=False)


def _decoded(lines: Iterable[bytes], bad: set[int]) -> Iterator[str]:
    """Decode lines as UTF-8 for the csv module, noting (and replacing) undecodable ones."""
    for number, raw in enumerate(lines, 1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            bad.add(number)
            text = raw.decode("utf-8", "replace")
        yield text.removeprefix("\ufeff") if number == 1 else text


def csv_rows(lines: Iterable[bytes], source: str) -> Iterator[Row]:
    """Rows of a CSV file with a header; the header is checked now, the rows read lazily.

    Raises:
        CliError: The header is missing, lacks ``prompt`` or names an unknown column.
    """
    bad: set[int] = set()
    reader = csv.reader(_decoded(lines, bad))
    header: list[str] = []
    try:
        while not header:
            header = next(reader)
    except StopIteration:
        return iter(())
    except csv.Error as exc:
        raise CliError(f"{source}: line {reader.line_num}: {exc}") from None
    columns = [column.strip() for column in header]
    unknown = [column for column in columns if column not in FIELDS]
    if unknown:
        raise CliError(
            f"{source}: line {reader.line_num}: unknown column {unknown[0]!r}; "
            f"the columns are {', '.join(FIELDS)}"
        )
    if "prompt" not in columns:
        raise CliError(f"{source}: line {reader.line_num}: the header has no 'prompt' column")
    return _csv_records(reader, columns, bad)


def _csv_records(reader: Any, columns: list[str], bad: set[int]) -> Iterator[Row]:
    previous = int(reader.line_num)
    while True:
        try:
            record: list[str] = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            line = previous + 1
            previous = int(reader.line_num)
            yield Row(line, BadRow(line, f"is not valid CSV: {exc}"))
            continue
        start, previous = previous + 1, int(reader.line_num)
        spanned = range(start, previous + 1)
        if not record:
            continue
        if any(number in bad for number in spanned):
            bad.difference_update(spanned)
            yield Row(start, BadRow(start, "is not valid UTF-8"))
            continue
        if len(record) > len(columns) and any(cell.strip() for cell in record[len(columns) :]):
            reason = f"has {len(record)} fields but the header has {len(columns)}"
            yield Row(start, BadRow(start, reason))
            continue
        cells = {
            column: value.strip()
            for column, value in zip(columns, record, strict=False)
            if value.strip()
        }
        yield _row(start, cells, from_csv=True)


def _is_csv(path: Path, file: BinaryIO) -> bool:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return True
    if suffix in (".jsonl", ".ndjson", ".json"):
        return False
    head = file.read(4096)
    file.seek(0)
    return not head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"{")


def count_rows(file: BinaryIO, *, is_csv: bool) -> int:
    """How many rows a batch file holds (for the progress bar), without checking them."""
    if is_csv:
        records = csv.reader(line.decode("utf-8", "replace") for line in file)
        try:
            total = sum(1 for record in records if record) - 1
        except csv.Error:
            total = -1
    else:
        total = sum(1 for line in file if line.strip())
    file.seek(0)
    return max(total, 0)


def open_batch_file(path: Path) -> tuple[BinaryIO, Iterator[Row], int]:
    """Open a JSONL or CSV batch file: the open file, its rows (lazy) and how many there are.

    Raises:
        CliError: The file cannot be read, or a CSV header is wrong.
    """
    try:
        file = path.open("rb")
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        is_csv = _is_csv(path, file)
        total = count_rows(file, is_csv=is_csv)
        rows = csv_rows(file, str(path)) if is_csv else jsonl_rows(file)
    except OSError as exc:
        file.close()
        raise CliError(f"cannot read {path}: {exc.strerror or exc}") from None
    except BaseException:
        file.close()
        raise
    return file, rows, total


# -- the terminal ---------------------------------------------------------------------------


@attrs.define
class Settings:
    """The global options."""

    api_key: str | None = None
    base_url: str | None = None
    verbose: bool = False


class Ui:
    """The two consoles: results on stdout, progress and errors on stderr."""

    def __init__(self, *, verbose: bool) -> None:
        from rich.console import Console

        self.out: Console = Console(highlight=False, soft_wrap=True)
        self.err: Console = Console(stderr=True, highlight=False)
        self.verbose = verbose
        fancy = (self.err.encoding or "").lower().replace("-", "").startswith("utf")
        self.ok_mark = "✓" if fancy else "+"
        self.fail_mark = "✗" if fancy else "x"

    def error(self, message: str) -> None:
        """Print one ``error:`` line on stderr."""
        sys.stderr.write(f"error: {_one_line(message)}\n")
        sys.stderr.flush()

    def info(self, message: str) -> None:
        """Print a line of information on stderr (no markup)."""
        self.err.print(message, markup=False, soft_wrap=True)

    def result(self, message: str) -> None:
        """Print a line of result on stdout (no markup)."""
        self.out.print(message, markup=False, soft_wrap=True)


def _setup_logging(console: "Console") -> None:
    from rich.logging import RichHandler

    handler = RichHandler(console=console, show_path=False, markup=False, rich_tracebacks=False)
    logging.basicConfig(level=logging.INFO, format="%(message)s", handlers=[handler], force=True)
    logging.getLogger("nanobanana_async").setLevel(logging.DEBUG)


def execute(
    ui: Ui,
    work: Callable[[], Awaitable[int]],
    *,
    on_interrupt: Callable[[], None] | None = None,
) -> int:
    """Run ``work`` on anyio and turn what it raises into one line and an exit code."""
    try:
        return anyio.run(work)
    except BaseException as exc:
        # Errors from inside task groups arrive wrapped in exception groups.
        leaf = _leaf(exc)
        if not isinstance(leaf, (Exception, KeyboardInterrupt)):
            raise
        if isinstance(leaf, KeyboardInterrupt):
            if on_interrupt is not None:
                on_interrupt()
            else:
                ui.error("interrupted")
            return EXIT_INTERRUPTED
        if isinstance(leaf, (NanoBananaError, CliError)):
            ui.error(describe(leaf))
            return exit_code_for(leaf)
        if isinstance(leaf, OSError):
            ui.error(_os_error(leaf))
            return EXIT_FAILURE
        if ui.verbose:
            raise
        ui.error(
            f"unexpected {type(leaf).__name__}: {describe(leaf)} "
            "(run with --verbose for the traceback)"
        )
        return EXIT_FAILURE


def open_client(settings: Settings, **kwargs: Any) -> AsyncNanoBanana:
    """The client of the global options.

    Raises:
        CliError: No API key was given or found in the environment (exit code 3).
    """
    key = settings.api_key or os.environ.get("NANOBANANA_API_KEY")
    if not key or not key.strip():
        raise CliError("no API key: pass --api-key or set NANOBANANA_API_KEY", EXIT_AUTH)
    return AsyncNanoBanana(api_key=key, base_url=settings.base_url or None, **kwargs)


# -- single tasks ---------------------------------------------------------------------------


@attrs.define
class _Started:
    task_id: str | None = None


def _on_update(status: "Status", task_id: str) -> Callable[[Task], None]:
    def update(task: Task) -> None:
        status.update(f"task {task_id}: {task.raw_state or task.state.value}")

    return update


async def generate_image(
    ui: Ui,
    settings: Settings,
    build: Callable[[], Request],
    *,
    out: Path,
    timeout: float,
    wait: bool,
    started: _Started,
) -> int:
    """Create one task, wait for it and save its images; prints the saved paths."""
    request = build()
    if not timeout > 0:
        raise CliError("--timeout must be more than 0 seconds")
    deadline = anyio.current_time() + timeout
    async with open_client(settings) as client:
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
                    task_id, timeout=remaining, on_update=_on_update(status, task_id)
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
                paths = await client.save_result(result, out)
            except (OSError, NanoBananaError) as exc:
                detail = describe(exc) if isinstance(exc, NanoBananaError) else _os_error(exc)
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
    from rich.table import Table

    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    for key, value in data.items():
        if key == "urls":
            for url in task.urls:
                table.add_row("url", url)
        elif value is not None and value != "":
            table.add_row(key.replace("_", " "), str(value))
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
                        task_id, timeout=timeout, on_update=_on_update(status, task_id)
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


# -- batches --------------------------------------------------------------------------------


@attrs.define
class BatchReport:
    """What a batch did, as the command line saw it: for the summary and the exit code."""

    total: int | None = None
    out: Path | None = None
    saved: int = 0
    save_failed: int = 0
    invalid: int = 0
    not_sent: int = 0
    stop: NanoBananaError | None = None
    failures: list[tuple[str, str, str]] = attrs.field(factory=list["tuple[str, str, str]"])
    unlisted_failures: int = 0
    final: BatchStatistics | None = None
    last_running: int = 0

    def fail(self, where: str, task_id: str | None, message: str) -> None:
        """Note a failed job, keeping only the first few for the summary."""
        if len(self.failures) < _MAX_LISTED_FAILURES:
            self.failures.append((where, task_id or "", message))
        else:
            self.unlisted_failures += 1

    def exit_code(self) -> int:
        """3 if the key or credits stopped the batch, 2 for invalid rows, 1 for failures."""
        stats = self.final
        if self.stop is not None:
            return EXIT_AUTH
        if self.invalid:
            return EXIT_USAGE
        if self.save_failed or (stats is not None and stats.failed):
            return EXIT_FAILURE
        return EXIT_OK


def _limits_text(stats: BatchStatistics) -> str:
    active = f"{stats.max_active}" + ("" if stats.max_active_known else "+")
    parts = [f"max active {active}"]
    if stats.create_rate:
        parts.append(f"create {stats.create_rate:.3g}/s")
    if stats.query_rate:
        parts.append(f"poll {stats.query_rate:.3g}/s")
    if stats.conflicts or stats.rate_limited:
        parts.append(f"409s {stats.conflicts}, 429s {stats.rate_limited}")
    return "limits: " + ", ".join(parts)


def _progress(ui: Ui) -> "Progress":
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(
            "[green]{task.fields[ok]} ok[/] [red]{task.fields[failed]} failed[/] "
            "[cyan]{task.fields[running]} running[/]"
        ),
        TextColumn("{task.fields[limits]}", style="dim", markup=False),
        TimeElapsedColumn(),
        console=ui.err,
        disable=not ui.err.is_terminal,
        redirect_stdout=False,
        redirect_stderr=False,
    )


def _stem(row: Row, what: str) -> str:
    stem = row.name or f"{what}-{row.line:04d}"
    return _UNSAFE_NAME.sub("_", stem) or f"{what}-{row.line:04d}"


async def _existing_file(out: Path, stem: str) -> Path | None:
    for suffix in (".png", ".jpg", ".webp"):
        for name in (f"{stem}{suffix}", f"{stem}-1{suffix}"):
            if await anyio.Path(out / name).is_file():
                return out / name
    return None


def _failure_message(error: NanoBananaError | None) -> str:
    if isinstance(error, TaskFailedError):
        code = f" [{error.fail_code}]" if error.fail_code else ""
        return f"task failed{code}: {error.fail_message or 'no reason given'}"
    return describe(error) if error is not None else "no result"


class _BatchView:
    """Prints each outcome as it comes, saves images, and keeps the report."""

    def __init__(
        self,
        ui: Ui,
        report: BatchReport,
        progress: "Progress",
        bar: "TaskID",
        runner: BatchRunner,
        client: AsyncNanoBanana,
        *,
        what: str,
        quiet: bool,
    ) -> None:
        self._ui = ui
        self._report = report
        self._progress = progress
        self._bar = bar
        self._runner = runner
        self._client = client
        self._what = what
        self._quiet = quiet
        self._saves = anyio.Semaphore(_SAVE_CONCURRENCY)

    def line(self, ok: bool, row: Row, text: str) -> None:
        if self._quiet:
            return
        from rich.text import Text

        mark = Text(self._ui.ok_mark if ok else self._ui.fail_mark, style="green" if ok else "red")
        self._progress.console.print(
            Text.assemble(mark, f" {self._what} {row.line}  ", text), soft_wrap=True
        )

    def refresh(self) -> None:
        report = self._report
        stats = self._runner.statistics()
        report.last_running = stats.running
        self._progress.update(
            self._bar,
            completed=stats.done,
            ok=stats.succeeded,
            failed=stats.failed + report.save_failed,
            running=stats.running,
            limits=_limits_text(stats),
        )

    async def ticker(self) -> None:
        while True:
            self.refresh()
            await anyio.sleep(0.1)

    async def take(self, outcome: BatchOutcome, row: Row, saves: anyio.abc.TaskGroup) -> None:
        report = self._report
        where = f"{self._what} {row.line}"
        if isinstance(row.item, BadRow):
            report.invalid += 1
            report.fail(where, None, f"invalid: {row.item.reason}")
            self.line(False, row, f"invalid: {row.item.reason}")
            return
        error = outcome.error
        if isinstance(error, (AuthenticationError, InsufficientCreditsError)):
            # The batch stops creating: every later row gets the same error; say it once.
            if report.stop is None:
                report.stop = error
            if outcome.task_id is None:
                report.not_sent += 1
                return
        if outcome.result is None:
            message = _failure_message(error)
            report.fail(where, outcome.task_id, message)
            self.line(False, row, f"{outcome.task_id or '-'}  {message}")
            return
        journal = "  (from the journal)" if outcome.resumed else ""
        if report.out is None:
            self.line(True, row, f"{outcome.task_id}  {' '.join(outcome.result.urls)}{journal}")
            return
        await self._saves.acquire()
        saves.start_soon(self._save, outcome.result, row, journal, report.out)

    async def _save(self, result: TaskResult, row: Row, journal: str, out: Path) -> None:
        report = self._report
        try:
            stem = _stem(row, self._what)
            existing = await _existing_file(out, stem) if journal else None
            try:
                paths = (
                    [existing]
                    if existing
                    else await self._client.save_result(result, out, stem=stem)
                )
            except (NanoBananaError, OSError) as exc:
                report.save_failed += 1
                message = f"not saved: {describe(exc)}"
                report.fail(f"{self._what} {row.line}", result.task_id, message)
                self.line(False, row, f"{result.task_id}  {message}")
                return
            report.saved += 1
            shown = ", ".join(str(path) for path in paths)
            self.line(True, row, f"{result.task_id}  -> {shown}{journal}")
        finally:
            self._saves.release()


async def run_batch(
    ui: Ui,
    client: AsyncNanoBanana,
    rows: Iterable[Row],
    report: BatchReport,
    *,
    journal: Path | None = None,
    tier: str | None = None,
    max_active: int | None = None,
    task_timeout: float = 3600.0,
    quiet: bool = False,
    what: str = "line",
) -> None:
    """Run the rows of a batch through a `BatchRunner`, showing progress and saving images."""
    if journal is not None:
        try:
            await (await Journal.open(journal)).aclose()
        except (ValueError, OSError) as exc:
            raise CliError(f"cannot use the journal {journal}: {exc}") from None
    runner = BatchRunner(
        client, tier=tier, max_active=max_active, journal=journal, task_timeout=task_timeout
    )
    if report.out is not None:
        await anyio.Path(report.out).mkdir(parents=True, exist_ok=True)
    pending: dict[int, Row] = {}

    def requests() -> Iterator[object]:
        for index, row in enumerate(rows):
            pending[index] = row
            yield row.item

    try:
        with _progress(ui) as progress:
            bar = progress.add_task(
                "batch", total=report.total, ok=0, failed=0, running=0, limits="limits: learning"
            )
            view = _BatchView(ui, report, progress, bar, runner, client, what=what, quiet=quiet)
            async with anyio.create_task_group() as background:
                background.start_soon(view.ticker)
                async with anyio.create_task_group() as saves:
                    # A BadRow is not a request: the runner makes it a failed outcome at its
                    # own index without sending anything, so rows keep their journal places.
                    batch = cast("Iterable[Request]", requests())
                    async with runner.stream(batch) as results:
                        async for outcome in results:
                            await view.take(outcome, pending.pop(outcome.index), saves)
                background.cancel_scope.cancel()
            view.refresh()
    finally:
        # Read now: after an interrupt the summary is printed outside the event loop.
        report.final = runner.statistics()


def print_summary(ui: Ui, report: BatchReport, *, what: str = "line") -> None:
    """The summary table (stdout) and the one-line error of a stopped batch (stderr)."""
    from rich.table import Table

    stats = report.final
    assert stats is not None, "print_summary comes after run_batch"
    table = Table(title="Batch summary", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_row("requests", str(stats.submitted))
    table.add_row("succeeded", str(stats.succeeded))
    failed = str(stats.failed + report.save_failed)
    details: list[str] = []
    if report.invalid:
        details.append(f"{report.invalid} invalid")
    if report.not_sent:
        details.append(f"{report.not_sent} not sent")
    if report.save_failed:
        details.append(f"{report.save_failed} not saved")
    table.add_row("failed", failed + (f" ({', '.join(details)})" if details else ""))
    if stats.resumed:
        table.add_row("from the journal", str(stats.resumed))
    table.add_row("tasks created", str(stats.created))
    if report.out is not None:
        table.add_row("images saved", f"{report.saved} in {report.out}")
    table.add_row("polls per task", f"{stats.polls_per_task:.1f}")
    table.add_row("409s / 429s", f"{stats.conflicts} / {stats.rate_limited}")
    known = "learned" if stats.max_active_known else "still probing"
    table.add_row("active-task limit", f"{stats.max_active} ({known})")
    if stats.create_rate:
        table.add_row("create rate", f"{stats.create_rate:.3g}/s")
    if stats.query_rate:
        table.add_row("poll rate", f"{stats.query_rate:.3g}/s")
    table.add_row("elapsed", f"{stats.elapsed:.1f} s")
    ui.out.print(table)
    if report.failures:
        failures = Table(title="Failures", title_justify="left")
        failures.add_column(what)
        failures.add_column("task")
        failures.add_column("error", overflow="fold")
        for where, task_id, message in report.failures:
            failures.add_row(where.split()[-1], task_id, message)
        if report.unlisted_failures:
            failures.add_row("...", "", f"and {report.unlisted_failures} more")
        ui.out.print(failures)
    if report.stop is not None:
        ui.error(f"{describe(report.stop)}: {report.not_sent} requests were not sent")


def _interrupted_batch(ui: Ui, report: BatchReport, journal: Path | None) -> None:
    stats = report.final
    done = 0 if stats is None else stats.done
    total = "?" if report.total is None else str(report.total)
    ui.error(
        f"interrupted: {done} of {total} done, {report.last_running} in flight "
        "(tasks already created go on at the provider)"
    )
    command = shlex.join(["nanobanana", *sys.argv[1:]])
    if journal is not None:
        ui.info(
            f"The journal {journal} holds every task id created so far. "
            f"To resume without paying twice, run the same command again: {command}"
        )
    else:
        ui.info(
            "No journal was kept, so running the batch again creates every unfinished task "
            "again: pass --journal PATH to make a batch resumable."
        )


# -- the demo -------------------------------------------------------------------------------


def demo_rows(count: int) -> list[Row]:
    """The demo's requests: mostly text-to-image, a few edits, in several sizes and formats."""
    rows: list[Row] = []
    drawn = edits = 0
    for index in range(count):
        line = index + 1
        if index % 10 == 9:
            prompt = _DEMO_EDITS[edits % len(_DEMO_EDITS)]
            edits += 1
            request: Request = ImageToImage(prompt=prompt, image_urls=[_DEMO_EDIT_SOURCE])
        else:
            prompt, size, output_format = _DEMO_PROMPTS[drawn % len(_DEMO_PROMPTS)]
            drawn += 1
            request = TextToImage(
                prompt=prompt,
                image_size=cast("Any", size),
                output_format=cast("Any", output_format),
            )
        words = [word for word in re.findall(r"[a-z0-9]+", prompt.lower()) if word not in _STOP]
        rows.append(Row(line, request, f"{line:02d}-{'-'.join(words[:3])}"))
    return rows


def _demo_fails(body: Mapping[str, Any]) -> bool:
    """The fake fails the same two prompts on every run, to show how failures look."""
    return bool(body.get("input", {}).get("prompt") in _DEMO_FAILING)


def _demo_client(fake: "FakeNanoBanana", base_url: str) -> AsyncNanoBanana:
    """A client for the fake on loopback, its clocks scaled like ``fake.client()``'s."""
    scale = fake.time_scale
    poll = PollPolicy()
    retry = RetryPolicy()
    return AsyncNanoBanana(
        api_key=fake.api_key,
        base_url=base_url,
        poll=attrs.evolve(
            poll,
            initial=poll.initial * scale,
            maximum=poll.maximum * scale,
            min_interval=poll.min_interval * scale,
        ),
        retry=attrs.evolve(
            retry,
            backoff_base=retry.backoff_base * scale,
            backoff_max=retry.backoff_max * scale,
            max_rate_limit_wait=retry.max_rate_limit_wait * scale,
            not_found_grace=retry.not_found_grace * scale,
        ),
    )


async def run_demo(ui: Ui, report: BatchReport, *, count: int) -> int:
    """A batch against the fake provider served on loopback: no key, no network."""
    from .testing import FakeNanoBanana

    fake = FakeNanoBanana(tier="basic", time_scale=_DEMO_TIME_SCALE, fail_rate=_demo_fails)
    async with fake.serve() as base_url, _demo_client(fake, base_url) as client:
        ui.info(
            f"nanobanana demo: {count} images from a fake provider on {base_url} "
            f"(no API key, no network; {1 / _DEMO_TIME_SCALE:g}x faster than the real service)."
        )
        ui.info(
            "The client knows none of the fake's limits (the 'basic' tier) and learns them "
            "as it goes; two tasks fail on purpose, to show how failures are reported."
        )
        await run_batch(ui, client, demo_rows(count), report, what="request")
    print_summary(ui, report, what="request")
    ui.info(
        f"Images saved in {report.out}/. Next: set NANOBANANA_API_KEY and try "
        "`nanobanana generate`."
    )
    return EXIT_OK if report.saved else EXIT_FAILURE


# -- commands -------------------------------------------------------------------------------


def _build_app() -> "typer.Typer":
    import typer

    app = typer.Typer(
        name="nanobanana",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"]},
    )

    def show_version(value: bool) -> None:
        if value:
            print(f"nanobanana-async {__version__}")
            raise typer.Exit

    @app.callback()
    def root(
        ctx: typer.Context,
        api_key: Annotated[
            str | None,
            typer.Option(
                "--api-key",
                help="The API key (default: the NANOBANANA_API_KEY environment variable).",
                show_default=False,
            ),
        ] = None,
        base_url: Annotated[
            str | None,
            typer.Option(
                "--base-url",
                help="The API host (default: NANOBANANA_BASE_URL, else https://aigptimage.com).",
                show_default=False,
            ),
        ] = None,
        verbose: Annotated[
            bool, typer.Option("--verbose", "-v", help="Log requests and show tracebacks.")
        ] = False,
        version: Annotated[
            bool,
            typer.Option(
                "--version", callback=show_version, is_eager=True, help="Print the version."
            ),
        ] = False,
    ) -> None:
        """Generate and edit images with the Nano Banana API.

        Exit codes: 0 done, 1 API or task failure, 2 bad usage or input, 3 key refused or
        missing or out of credits, 130 interrupted.
        """
        ctx.obj = Settings(api_key=api_key, base_url=base_url, verbose=verbose)

    def ui_for(ctx: typer.Context) -> tuple[Ui, Settings]:
        settings = cast("Settings", ctx.obj)
        ui = Ui(verbose=settings.verbose)
        if settings.verbose:
            _setup_logging(ui.err)
        return ui, settings

    def finish(code: int) -> None:
        if code:
            raise typer.Exit(code)

    size_help = f"The output ratio: {', '.join(IMAGE_SIZES)}. [default: 1:1]"
    # Shared by several commands (typer copies them); Annotated metadata may be any object.
    size_option = typer.Option("--size", "--aspect-ratio", "-s", help=size_help, show_default=False)
    format_option = typer.Option("--format", "-f", help="The file format: png or jpeg.")
    out_option = typer.Option("--out", "-o", help="Where to save the images.")
    timeout_option = typer.Option("--timeout", help="The most seconds to wait for the image.")
    nsfw_option = typer.Option(
        "--nsfw-checker/--no-nsfw-checker", help="Whether the provider runs its safety checker."
    )
    wait_option = typer.Option(
        "--wait/--no-wait", help="Wait for the image, or print the task id at once."
    )

    def one_task(
        ctx: typer.Context,
        build: Callable[[], Request],
        out: Path,
        timeout: float,
        wait: bool,
    ) -> None:
        ui, settings = ui_for(ctx)
        started = _Started()

        def interrupted() -> None:
            if started.task_id is None:
                ui.error("interrupted; no task was created")
            else:
                ui.error(
                    f"interrupted; task {started.task_id} goes on at the provider: "
                    f"nanobanana download {started.task_id} --wait"
                )

        async def work() -> int:
            return await generate_image(
                ui, settings, build, out=out, timeout=timeout, wait=wait, started=started
            )

        finish(execute(ui, work, on_interrupt=interrupted))

    @app.command()
    def generate(
        ctx: typer.Context,
        prompt: Annotated[str, typer.Argument(help="What to draw.", show_default=False)],
        size: Annotated[str | None, size_option] = None,
        output_format: Annotated[str, format_option] = "png",
        out: Annotated[Path, out_option] = Path("."),
        timeout: Annotated[float, timeout_option] = 600.0,
        nsfw_checker: Annotated[bool, nsfw_option] = True,
        wait: Annotated[bool, wait_option] = True,
    ) -> None:
        """Draw an image from a prompt and save it (prints the saved paths)."""

        def build() -> Request:
            return TextToImage(
                prompt=prompt,
                image_size=cast("Any", size),
                output_format=cast("Any", output_format),
                nsfw_checker=nsfw_checker,
            )

        one_task(ctx, build, out, timeout, wait)

    @app.command()
    def edit(
        ctx: typer.Context,
        prompt: Annotated[str, typer.Argument(help="The edit to make.", show_default=False)],
        image: Annotated[
            list[str],
            typer.Option(
                "--image",
                "-i",
                help="A public https:// URL of an input image (1 to 10; repeat the option).",
                show_default=False,
            ),
        ],
        size: Annotated[str | None, size_option] = None,
        output_format: Annotated[str, format_option] = "png",
        out: Annotated[Path, out_option] = Path("."),
        timeout: Annotated[float, timeout_option] = 600.0,
        nsfw_checker: Annotated[bool, nsfw_option] = True,
        wait: Annotated[bool, wait_option] = True,
    ) -> None:
        """Edit images given by URL and save the result (prints the saved paths)."""

        def build() -> Request:
            return ImageToImage(
                prompt=prompt,
                image_urls=image,
                image_size=cast("Any", size),
                output_format=cast("Any", output_format),
                nsfw_checker=nsfw_checker,
            )

        one_task(ctx, build, out, timeout, wait)

    @app.command()
    def batch(
        ctx: typer.Context,
        file: Annotated[
            Path,
            typer.Argument(
                help="A JSONL file (one object per line) or a CSV file with a header.",
                show_default=False,
            ),
        ],
        out: Annotated[
            Path | None,
            typer.Option(
                "--out", "-o", help="Save the images here as they complete.", show_default=False
            ),
        ] = None,
        journal: Annotated[
            Path | None,
            typer.Option(
                "--journal",
                "-j",
                help="An SQLite journal: re-run with the same one to resume, never paying twice.",
                show_default=False,
            ),
        ] = None,
        tier: Annotated[
            str | None,
            typer.Option(help="Your key's tier (free, basic, ...), to start from its limits."),
        ] = None,
        max_active: Annotated[
            int | None, typer.Option(help="Your key's active-task limit, if you know it.")
        ] = None,
        timeout: Annotated[
            float, typer.Option("--timeout", help="The most seconds to follow one task.")
        ] = 3600.0,
        quiet: Annotated[
            bool, typer.Option("--quiet", "-q", help="No line per finished request.")
        ] = False,
    ) -> None:
        """Run a JSONL or CSV file of requests, with progress, a journal and a summary.

        Fields (JSONL) or columns (CSV): prompt, image_urls (CSV: separated by spaces or |),
        image_size or aspect_ratio, output_format, nsfw_checker, name (the file name).
        A row that cannot be read or breaks a rule becomes a failed outcome naming its line,
        and nothing is sent for it. Exit code 0 if every row succeeded, 3 if the key or
        credits stopped the batch, 2 if a row was invalid, else 1.
        """
        ui, settings = ui_for(ctx)
        report = BatchReport(out=out)
        try:
            handle, rows, total = open_batch_file(file)
        except CliError as exc:
            ui.error(str(exc))
            raise typer.Exit(exc.exit_code) from None
        report.total = total

        async def work() -> int:
            async with open_client(settings) as client:
                await run_batch(
                    ui,
                    client,
                    rows,
                    report,
                    journal=journal,
                    tier=tier,
                    max_active=max_active,
                    task_timeout=timeout,
                    quiet=quiet,
                )
            assert report.final is not None
            if report.final.submitted == 0:
                raise CliError(f"{file} holds no requests")
            print_summary(ui, report)
            return report.exit_code()

        with handle:
            code = execute(ui, work, on_interrupt=lambda: _interrupted_batch(ui, report, journal))
        finish(code)

    @app.command()
    def status(
        ctx: typer.Context,
        task_id: Annotated[str, typer.Argument(help="The task id.", show_default=False)],
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    ) -> None:
        """Print a task's state, result URLs or failure."""
        ui, settings = ui_for(ctx)

        async def work() -> int:
            return await show_status(ui, settings, task_id, as_json=as_json)

        finish(execute(ui, work))

    @app.command()
    def download(
        ctx: typer.Context,
        task_id: Annotated[str, typer.Argument(help="The task id.", show_default=False)],
        out: Annotated[Path, out_option] = Path("."),
        wait: Annotated[
            bool, typer.Option("--wait", help="Wait for the task to finish first.")
        ] = False,
        timeout: Annotated[float, timeout_option] = 600.0,
    ) -> None:
        """Save the images of a finished task (prints the saved paths)."""
        ui, settings = ui_for(ctx)

        async def work() -> int:
            return await download_task(ui, settings, task_id, out=out, wait=wait, timeout=timeout)

        finish(execute(ui, work))

    @app.command()
    def demo(
        ctx: typer.Context,
        out: Annotated[Path, typer.Option("--out", "-o", help="Where to save the images.")] = Path(
            "nanobanana-demo"
        ),
        count: Annotated[int, typer.Option(min=1, max=200, help="How many images to make.")] = 20,
    ) -> None:
        """Run a batch against a fake provider on this machine: no API key, no network."""
        ui, _ = ui_for(ctx)
        report = BatchReport(out=out, total=count)

        async def work() -> int:
            return await run_demo(ui, report, count=count)

        finish(execute(ui, work, on_interrupt=lambda: _interrupted_batch(ui, report, None)))

    return app


def main(argv: list[str] | None = None) -> int:
    """Run the ``nanobanana`` command line; returns the exit code.

    Args:
        argv: The arguments, without the program name; default ``sys.argv[1:]``.
    """
    try:
        import rich  # noqa: F401  # pyright: ignore[reportUnusedImport]
        import typer  # noqa: F401  # pyright: ignore[reportUnusedImport]
    except ImportError:
        sys.stderr.write(INSTALL_HINT + "\n")
        return EXIT_FAILURE
    app = _build_app()
    try:
        app(args=argv, prog_name="nanobanana")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_FAILURE
    return EXIT_OK  # pragma: no cover - typer always ends with SystemExit
