"""``batch`` (and the demo's batch): a `BatchRunner` with a live progress view and a summary.

Each outcome is printed as it comes (one line on stderr), its images are saved while the batch
goes on, and a `BatchReport` keeps what the summary table, the gallery (`_gallery`) and the
exit code need. After Ctrl-C, `interrupted_batch` says how to resume, never repeating the key.
"""

import contextlib
import re
import shlex
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, cast

import anyio
import anyio.abc
import attrs
from rich.live import Live
from rich.table import Table
from rich.text import Text

from .. import (
    AsyncNanoBanana,
    AuthenticationError,
    BatchOutcome,
    BatchRunner,
    BatchStatistics,
    ImageRequest,
    InsufficientCreditsError,
    JournalError,
    NanoBananaError,
    TaskFailedError,
    TaskResult,
    TierName,
)
from .._journal import Journal
from ._commands import API_KEY_VARIABLE
from ._exit import EXIT_AUTH, EXIT_FAILURE, EXIT_OK, EXIT_USAGE, CliError, describe
from ._gallery import GalleryEntry
from ._names import file_stem
from ._progress import BatchProgress
from ._rows import BadRow, Row
from ._ui import Ui

__all__ = ["BatchReport", "interrupted_batch", "print_summary", "resume_command", "run_batch"]

_SAVE_CONCURRENCY = 8
_MAX_LISTED_FAILURES = 20
_IMAGE_SUFFIXES = (".png", ".jpg", ".webp")
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")


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
    name_template: str | None = None
    entries: list[GalleryEntry] = attrs.field(factory=list[GalleryEntry])

    def record(
        self,
        row: Row,
        where: str,
        *,
        task_id: str | None = None,
        images: tuple[Path, ...] = (),
        urls: tuple[str, ...] = (),
        error: str | None = None,
    ) -> None:
        """Note what became of ``row``, for the gallery."""
        prompt = "" if isinstance(row.item, BadRow) else row.item.prompt
        entry = GalleryEntry(
            where=where,
            prompt=prompt,
            task_id=task_id,
            images=images,
            urls=urls,
            error=error,
            order=row.line,
        )
        self.entries.append(entry)

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


def _stem(row: Row, what: str, template: str | None, task_id: str, index: int) -> str:
    if template is not None:
        prompt = "" if isinstance(row.item, BadRow) else row.item.prompt
        return file_stem(
            template, index=index, line=row.line, prompt=prompt, task_id=task_id, name=row.name
        )
    stem = row.name or f"{what}-{row.line:04d}"
    return _UNSAFE_NAME.sub("_", stem) or f"{what}-{row.line:04d}"


async def _existing_file(out: Path, stem: str) -> Path | None:
    for suffix in _IMAGE_SUFFIXES:
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
        runner: BatchRunner,
        client: AsyncNanoBanana,
        *,
        what: str,
        quiet: bool,
    ) -> None:
        self._ui = ui
        self._report = report
        self._runner = runner
        self._client = client
        self._what = what
        self._quiet = quiet
        self._saves = anyio.Semaphore(_SAVE_CONCURRENCY)
        self.progress = BatchProgress()

    def line(self, ok: bool, row: Row, text: str) -> None:
        if self._quiet:
            return
        ui = self._ui
        mark = Text(ui.ok_mark if ok else ui.fail_mark, style="green" if ok else "red")
        ui.err.print(
            Text.assemble(mark, f" {self._what} {row.line}  ", ui.clean(text)), soft_wrap=True
        )

    def refresh(self) -> None:
        report = self._report
        stats = self._runner.statistics()
        report.last_running = stats.running
        self.progress.update(stats, not_saved=report.save_failed)

    async def ticker(self) -> None:
        while True:
            self.refresh()
            await anyio.sleep(0.1)

    def _failed(self, row: Row, task_id: str | None, message: str) -> None:
        where = f"{self._what} {row.line}"
        self._report.fail(where, task_id, message)
        self._report.record(row, where, task_id=task_id, error=message)
        invalid = isinstance(row.item, BadRow)
        self.line(False, row, message if invalid else f"{task_id or '-'}  {message}")

    async def take(self, outcome: BatchOutcome[Any], row: Row, saves: anyio.abc.TaskGroup) -> None:
        report = self._report
        if isinstance(row.item, BadRow):
            report.invalid += 1
            self._failed(row, None, f"invalid: {row.item.reason}")
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
            self._failed(row, outcome.task_id, _failure_message(error))
            return
        journal = "  (from the journal)" if outcome.resumed else ""
        if report.out is None:
            urls = outcome.result.urls
            report.record(row, f"{self._what} {row.line}", task_id=outcome.task_id, urls=urls)
            self.line(True, row, f"{outcome.task_id}  {' '.join(urls)}{journal}")
            return
        await self._saves.acquire()
        index = outcome.index + 1
        saves.start_soon(self._save, outcome.result, row, journal, report.out, index)

    async def _save(
        self, result: TaskResult, row: Row, journal: str, out: Path, index: int
    ) -> None:
        report = self._report
        try:
            stem = _stem(row, self._what, report.name_template, result.task_id, index)
            existing = await _existing_file(out, stem) if journal else None
            try:
                paths = (
                    [existing]
                    if existing
                    else await self._client.save_result(result, out, stem=stem)
                )
            except (NanoBananaError, OSError) as exc:
                report.save_failed += 1
                self._failed(row, result.task_id, f"not saved: {describe(exc)}")
                return
            report.saved += 1
            where = f"{self._what} {row.line}"
            report.record(row, where, task_id=result.task_id, images=tuple(paths))
            shown = ", ".join(str(path) for path in paths)
            self.line(True, row, f"{result.task_id}  -> {shown}{journal}")
        finally:
            self._saves.release()


def _live(ui: Ui, view: _BatchView) -> contextlib.AbstractContextManager[object]:
    """The progress lines, redrawn below the per-request lines (on a terminal only)."""
    if not ui.err.is_terminal:
        return contextlib.nullcontext()
    return Live(view.progress, console=ui.err, refresh_per_second=8, transient=False)


async def run_batch(
    ui: Ui,
    client: AsyncNanoBanana,
    rows: Iterable[Row],
    report: BatchReport,
    *,
    journal: Path | None = None,
    tier: TierName | None = None,
    max_active: int | None = None,
    task_timeout: float = 3600.0,
    quiet: bool = False,
    what: str = "line",
) -> None:
    """Run the rows of a batch through a `BatchRunner`, showing progress and saving images."""
    if report.out is not None:
        await anyio.Path(report.out).mkdir(parents=True, exist_ok=True)
    if journal is not None:
        try:
            await anyio.Path(journal).parent.mkdir(parents=True, exist_ok=True)
            await (await Journal.open(journal)).aclose()
        except (JournalError, ValueError, OSError) as exc:
            raise CliError(f"cannot use the journal {journal}: {exc}") from None
    runner = BatchRunner(
        client, tier=tier, max_active=max_active, journal=journal, task_timeout=task_timeout
    )
    pending: dict[int, Row] = {}

    def requests() -> Iterator[object]:
        for index, row in enumerate(rows):
            pending[index] = row
            yield row.item

    view = _BatchView(ui, report, runner, client, what=what, quiet=quiet)
    try:
        with _live(ui, view):
            async with anyio.create_task_group() as background:
                background.start_soon(view.ticker)
                async with anyio.create_task_group() as saves:
                    # A BadRow is not a request: the runner makes it a failed outcome at its
                    # own index without sending anything, so rows keep their journal places.
                    batch = cast("Iterable[ImageRequest]", requests())
                    async with runner.stream(batch, total=report.total) as results:
                        async for outcome in results:
                            await view.take(outcome, pending.pop(outcome.index), saves)
                background.cancel_scope.cancel()
            view.refresh()
    finally:
        # Read now: after an interrupt the summary is printed outside the event loop.
        report.final = runner.statistics()


def _counts_table(report: BatchReport, stats: BatchStatistics) -> Table:
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
    if stats.max_active_neighbours:
        known += f", {stats.max_active_neighbours} more held by other consumers"
    table.add_row("active-task limit", f"{stats.max_active} ({known})")
    if stats.create_rate:
        table.add_row("create rate", f"{stats.create_rate:.3g}/s")
    if stats.query_rate:
        table.add_row("poll rate", f"{stats.query_rate:.3g}/s")
    table.add_row("elapsed", f"{stats.elapsed:.1f} s")
    return table


def print_summary(ui: Ui, report: BatchReport, *, what: str = "line") -> None:
    """The summary table (stdout) and the one-line error of a stopped batch (stderr)."""
    stats = report.final
    assert stats is not None, "print_summary comes after run_batch"
    ui.out.print(_counts_table(report, stats))
    if report.failures:
        failures = Table(title="Failures", title_justify="left")
        failures.add_column(what)
        failures.add_column("task")
        failures.add_column("error", overflow="fold")
        for where, task_id, message in report.failures:
            failures.add_row(where.split()[-1], task_id, ui.clean(message))
        if report.unlisted_failures:
            failures.add_row("...", "", f"and {report.unlisted_failures} more")
        ui.out.print(failures)
    if report.stop is not None:
        ui.error(f"{describe(report.stop)}: {report.not_sent} requests were not sent")


def resume_command(argv: Sequence[str]) -> tuple[str, bool]:
    """The command line to run again, without ``--api-key VALUE`` or ``--api-key=VALUE``.

    Args:
        argv: The arguments the command was run with, without the program name.

    Returns:
        The command, quoted for a POSIX shell, and whether a key was left out of it.
    """
    kept: list[str] = []
    dropped = False
    args = iter(argv)
    for arg in args:
        if arg == "--":  # what follows is arguments, not options
            kept.append(arg)
            kept.extend(args)
        elif arg == "--api-key":
            dropped = True
            next(args, None)
        elif arg.startswith("--api-key="):
            dropped = True
        else:
            kept.append(arg)
    return shlex.join(["nanobanana", *kept]), dropped


def interrupted_batch(
    ui: Ui, report: BatchReport, journal: Path | None, argv: Sequence[str]
) -> None:
    """After Ctrl-C: how far the batch got, and how to resume it (never with the key)."""
    stats = report.final
    done = 0 if stats is None else stats.done
    total = "?" if report.total is None else str(report.total)
    ui.error(
        f"interrupted: {done} of {total} done, {report.last_running} in flight "
        "(tasks already created go on at the provider)"
    )
    if journal is None:
        ui.info(
            "No journal was kept (--no-journal), so running the batch again creates every "
            "unfinished task again: leave --no-journal out to make a batch resumable."
        )
        return
    command, dropped = resume_command(argv)
    how = (
        f"set {API_KEY_VARIABLE} to your key and run the same command again, without --api-key"
        if dropped
        else "run the same command again"
    )
    ui.info(
        f"The journal {journal} holds every task id created so far. "
        f"To resume without paying twice, {how}: {command}"
    )
