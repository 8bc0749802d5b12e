"""The ``index.html`` gallery a batch writes beside its images: what each row became.

One static page, no scripts and no network: the run's summary, then one card per row in input
order, a thumbnail with its prompt and task id, or the reason it failed. Everything that came
from the input or the provider is escaped.
"""

import html
import os
from pathlib import Path

import attrs

from .. import BatchStatistics

__all__ = ["GALLERY_NAME", "MAX_CARDS", "GalleryEntry", "write_gallery"]

GALLERY_NAME = "index.html"
MAX_CARDS = 2000  # past this a page is too heavy to open; the summary still counts every row

_STYLE = """
body { font: 15px/1.4 system-ui, sans-serif; margin: 24px; background: #f6f5f0; color: #222; }
h1 { font-size: 22px; margin: 0 0 4px; }
.note { color: #666; margin: 0 0 16px; }
.summary { display: flex; flex-wrap: wrap; gap: 8px 20px; margin: 0 0 20px; padding: 0; }
.summary li { list-style: none; } .summary b { font-size: 18px; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(200px, 1fr)); gap: 14px; }
.card { background: #fff; border-radius: 8px; box-shadow: 0 1px 3px #0002; overflow: hidden; }
.card img { display: block; width: 100%; aspect-ratio: 1; object-fit: cover; }
.card .text { padding: 8px 10px; }
.card .prompt { margin: 0 0 4px; }
.card .meta { color: #777; font: 12px ui-monospace, monospace; word-break: break-all; }
.failed { border-left: 5px solid #c62828; }
.failed .reason { color: #c62828; margin: 0 0 4px; }
"""


@attrs.frozen(kw_only=True)
class GalleryEntry:
    """One row of the batch as the gallery shows it."""

    where: str
    prompt: str
    task_id: str | None = None
    images: tuple[Path, ...] = ()
    urls: tuple[str, ...] = ()
    error: str | None = None
    order: int = 0


def _summary(stats: BatchStatistics | None, extra: dict[str, str]) -> str:
    items: dict[str, str] = {}
    if stats is not None:
        items |= {
            "requests": str(stats.submitted),
            "succeeded": str(stats.succeeded),
            "failed": str(stats.failed),
            "tasks created": str(stats.created),
            "from the journal": str(stats.resumed),
            "elapsed": f"{stats.elapsed:.1f} s",
        }
    items |= extra
    return "".join(
        f"<li><b>{html.escape(value)}</b> {html.escape(name)}</li>" for name, value in items.items()
    )


def _card(entry: GalleryEntry, folder: Path) -> str:
    meta = html.escape(entry.where + (f" · task {entry.task_id}" if entry.task_id else ""))
    prompt = f'<p class="prompt">{html.escape(entry.prompt)}</p>'
    if entry.error is not None:
        reason = f'<p class="reason">{html.escape(entry.error)}</p>'
        return (
            f'<div class="card failed"><div class="text">{reason}{prompt}'
            f'<div class="meta">{meta}</div></div></div>'
        )
    sources = [os.path.relpath(path, folder).replace(os.sep, "/") for path in entry.images]
    sources = sources or list(entry.urls)
    images = "".join(
        f'<a href="{html.escape(src, quote=True)}"><img src="{html.escape(src, quote=True)}" '
        f'alt="{html.escape(entry.prompt, quote=True)}" loading="lazy"></a>'
        for src in sources[:1]
    )
    return (
        f'<div class="card">{images}<div class="text">{prompt}'
        f'<div class="meta">{meta}</div></div></div>'
    )


def write_gallery(
    folder: Path,
    entries: list[GalleryEntry],
    stats: BatchStatistics | None,
    *,
    title: str,
    note: str = "",
    extra: dict[str, str] | None = None,
) -> Path:
    """Write ``folder/index.html`` for ``entries`` (input order) and return its path."""
    ordered = sorted(entries, key=lambda entry: entry.order)
    cards = "\n".join(_card(entry, folder) for entry in ordered[:MAX_CARDS])
    more = len(ordered) - MAX_CARDS
    if more > 0:
        cards += f'\n<p class="note">and {more} more rows, not shown</p>'
    page = (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>\n"
        f"<h1>{html.escape(title)}</h1>\n"
        + (f'<p class="note">{html.escape(note)}</p>\n' if note else "")
        + f'<ul class="summary">{_summary(stats, extra or {})}</ul>\n'
        f'<div class="grid">\n{cards}\n</div>\n</body></html>\n'
    )
    path = folder / GALLERY_NAME
    path.write_text(page, encoding="utf-8")
    return path
