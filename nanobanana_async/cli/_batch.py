"""``batch`` (and the demo's batch): a `BatchRunner` with a live progress view and a summary.

Each outcome is printed as it comes (one line on stderr), its images are saved while the batch
goes on, and a `BatchReport` keeps what the summary table and the exit code need. After Ctrl-C,
`interrupted_batch` says how to resume, never repeating the key.
"""

import re
import shlex
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import cast

import anyio
import anyio.abc
import attrs
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from .. import (
    AsyncNanoBanana,
    AuthenticationError,
    BatchOutcome,
    BatchRunner,
    BatchStatistics,
    InsufficientCreditsError,
    JournalError,
    NanoBananaError,
    Request,
    TaskFailedError,
    TaskResult,
)
from .._journal import Journal
from ._commands import API_KEY_VARIABLE
from ._exit import EXIT_AUTH, EXIT_FAILURE, EXIT_OK, EXIT_USAGE, CliError, describe
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


def _probed(ago: float | None) -> str:
    """When an estimate was last probed upward, compactly (nothing if it never was)."""
    return "" if ago is None else f" (probed {ago:.0f}s ago)"


def _limits_text(stats: BatchStatistics) -> str:
    active = f"{stats.max_active}" + ("" if stats.max_active_known else "+")
    if stats.max_active_neighbours:
        active += f", {stats.max_active_neighbours} to neighbours"
    parts = [f"max active {active}{_probed(stats.max_active_probed_ago)}"]
    if stats.create_rate:
        parts.append(f"create {stats.create_rate:.3g}/s{_probed(stats.create_probed_ago)}")
    if stats.query_rate:
        parts.append(f"poll {stats.query_rate:.3g}/s{_probed(stats.query_probed_ago)}")
    if stats.conflicts or stats.rate_limited:
        parts.append(f"409s {stats.conflicts}, 429s {stats.rate_limited}")
    return "limits: " + ", ".join(parts)


def _progress(ui: Ui) -> Progress:
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
        progress: Progress,
        bar: TaskID,
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
        ui = self._ui
        mark = Text(ui.ok_mark if ok else ui.fail_mark, style="green" if ok else "red")
        self._progress.console.print(
            Text.assemble(mark, f" {self._what} {row.line}  ", ui.clean(text)), soft_wrap=True
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
        except (JournalError, ValueError, OSError) as exc:
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
            "No journal was kept, so running the batch again creates every unfinished task "
            "again: pass --journal PATH to make a batch resumable."
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
