"""The live progress of a batch: two lines that add up, readable at 80 columns.

The first line counts the requests: done of the total (when known), how many succeeded and
failed, how many tasks are running on the provider, how many were read but wait to be created
(for a slot, the pacing, a 409 or a retry), how many are queued (not yet read), and
an ETA (parts are dropped from the end first, so queued and elapsed go before the ETA). The
second line says what the client has learned of the key's limits. Parts are
dropped from the end of a line, never cut in the middle, when the terminal is narrow.
"""

from rich.console import Console, ConsoleOptions, RenderResult
from rich.text import Text

from .. import BatchStatistics

__all__ = ["BatchProgress", "eta_seconds", "limits_line", "progress_line"]

_BAR = 12


def eta_seconds(stats: BatchStatistics) -> float | None:
    """Seconds left at the pace of this run so far, or None if it cannot be told yet."""
    finished_here = stats.done - stats.resumed  # outcomes that took time in this run
    if stats.total is None or finished_here <= 0 or stats.elapsed <= 0:
        return None
    left = max(stats.total - stats.done, 0)
    return left * stats.elapsed / finished_here


def _clock(seconds: float) -> str:
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def progress_line(stats: BatchStatistics, *, not_saved: int = 0, width: int = 80) -> Text:
    """The counts of a batch as one line of at most ``width`` cells."""
    failed = stats.failed + not_saved
    total = "?" if stats.total is None else str(stats.total)
    eta = eta_seconds(stats)
    parts: list[tuple[str, str]] = [
        (f"{stats.done}/{total}", "bold"),
        (f"{stats.succeeded} ok", "green"),
        (f"{failed} failed", "red" if failed else ""),
        (f"{stats.on_provider} on provider", "cyan"),
        (f"{stats.waiting} waiting", "yellow" if stats.waiting else ""),
    ]
    parts.append((f"ETA {_clock(eta)}" if eta is not None else "ETA -", "magenta"))
    if stats.total is not None:
        queued = max(stats.total - stats.submitted, 0)
        parts.append((f"{queued} queued", ""))
    parts.append((f"{_clock(stats.elapsed)} elapsed", "dim"))
    line = Text()
    if stats.total:
        filled = min(_BAR, _BAR * stats.done // stats.total)
        bar = Text("━" * filled, style="green") + Text("━" * (_BAR - filled), style="grey37")
        if len(bar) + 1 + sum(len(text) + 2 for text, _ in parts[:7]) <= width:
            line = bar + Text(" ")
    for text, style in parts:
        piece = ("  " if len(line) and not line.plain.endswith(" ") else "") + text
        if len(line) + len(piece) > width:
            break
        line.append(piece, style=style or None)
    return line


def _probed(ago: float | None) -> str:
    """When an estimate was last probed upward, compactly (nothing if it never was)."""
    return "" if ago is None else f" (probed {ago:.0f}s ago)"


def limits_line(stats: BatchStatistics, *, width: int = 80) -> Text:
    """What the client knows of the key's limits, as one dim line of at most ``width``."""
    active = f"{stats.max_active}" + ("" if stats.max_active_known else "+ (probing)")
    if stats.max_active_neighbours:
        active += f", {stats.max_active_neighbours} to neighbours"
    parts = [f"limits: max active {active}{_probed(stats.max_active_probed_ago)}"]
    if stats.create_rate:
        parts.append(f"create {stats.create_rate:.3g}/s{_probed(stats.create_probed_ago)}")
    if stats.query_rate:
        parts.append(f"poll {stats.query_rate:.3g}/s{_probed(stats.query_probed_ago)}")
    if stats.conflicts or stats.rate_limited:
        parts.append(f"409s {stats.conflicts}, 429s {stats.rate_limited}")
    text = parts[0]
    for part in parts[1:]:
        if len(text) + 2 + len(part) > width:
            break
        text += ", " + part
    return Text(text[:width], style="dim")


class BatchProgress:
    """The two lines, drawn with the statistics last given to `update` (a rich renderable)."""

    def __init__(self) -> None:
        self.stats: BatchStatistics | None = None
        self.not_saved = 0

    def update(self, stats: BatchStatistics, *, not_saved: int) -> None:
        """Take fresh statistics; the next refresh draws them."""
        self.stats, self.not_saved = stats, not_saved

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        if self.stats is None:
            yield Text("starting...", style="dim")
            return
        width = options.max_width
        yield progress_line(self.stats, not_saved=self.not_saved, width=width)
        yield limits_line(self.stats, width=width)
