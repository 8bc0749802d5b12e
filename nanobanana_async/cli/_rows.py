"""Batch files: JSONL, CSV and plain text rows, read lazily, each a request or why it is none.

Which kind a file is: ``.jsonl``/``.ndjson``/``.json`` is JSONL, ``.csv`` is CSV, ``.txt`` is
one prompt per line. Any other name is looked at: a first line that starts with ``{`` is JSONL,
one that is a CSV header of known columns is CSV, and anything else is one prompt per line,
since that is what a newcomer's list of prompts is (reading it as CSV would take its first
prompt for a header and fail on it).

A row that cannot be read or that breaks a rule of the provider becomes a `BadRow` naming its
line and the reason; nothing is sent for it and the other rows go on. Rows keep their place in
the batch (an invalid row still takes its index), so a journal stays valid after you fix a row
and re-run.

One CSV fault is not a row's: a quote that is never closed turns the rest of the file into one
field, so no row after it can be read. `open_batch_file` finds it while counting the rows and
stops before anything is sent; `csv_rows`, read on its own, makes that field a `BadRow`.
"""

import csv
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO, Literal, cast

import attrs

from .. import ImageInput, ImageRequest, ImageToImage, InvalidRequestError, TextToImage
from .._images import is_url_like
from ._exit import CliError

__all__ = [
    "FIELDS",
    "BadRow",
    "Row",
    "count_rows",
    "csv_rows",
    "image_item",
    "jsonl_rows",
    "text_rows",
    "open_batch_file",
    "request_from_fields",
    "split_urls",
]

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

_URL_SEPARATORS = re.compile(r"[\s|]+")
_TRUE = {"true", "yes", "y", "1", "on"}
_FALSE = {"false", "no", "n", "0", "off"}
# What CPython's csv module says, in strict mode, of a quoted field still open at the end.
_UNCLOSED = "unexpected end of data"


@attrs.frozen
class BadRow:
    """A row of a batch file that could not become a request; nothing is sent for it."""

    line: int
    reason: str


@attrs.frozen
class Row:
    """One row of a batch: its line, the request (or why there is none), a file name."""

    line: int
    item: "ImageRequest | BadRow"
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


def image_item(item: str, base: Path | None = None) -> str | Path:
    """An image named on the command line or in a batch row, as the library takes it.

    A URL stays a ``str`` (a URL to the library); anything else is a local file, a `Path`
    (relative to ``base`` if given). The library reads files only from paths, never from
    strings: the command line is where a string becomes a path, since its user types paths.
    """
    if not item or is_url_like(item):
        return item
    return Path(item) if base is None else base / item


def _local_paths(urls: object, base: Path | None) -> object:
    """Image items that are not URLs, taken as files relative to ``base`` (the batch file's)."""
    if isinstance(urls, (str, bytes)) or not isinstance(urls, list):
        return urls
    return [
        image_item(item, base) if isinstance(item, str) else item
        for item in cast("list[object]", urls)
    ]


def request_from_fields(
    fields: Mapping[str, object], *, from_csv: bool, base: Path | None = None
) -> tuple[ImageRequest, str | None]:
    """Build the request of one batch row; raises `InvalidRequestError` or ValueError.

    An ``image_urls`` item that is not a URL is a local file (a `Path`), relative to ``base``.

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
    urls = _local_paths(urls, base)
    request: ImageRequest
    if urls is None:
        request = TextToImage(prompt=cast("str", prompt), **options)
    else:
        request = ImageToImage(
            prompt=cast("str", prompt), image_urls=cast("Iterable[ImageInput]", urls), **options
        )
    return request, (name or None)


def _row(
    line: int, fields: Mapping[str, object], *, from_csv: bool, base: Path | None = None
) -> Row:
    try:
        request, name = request_from_fields(fields, from_csv=from_csv, base=base)
    except ValueError as exc:  # InvalidRequestError is a ValueError too
        return Row(line, BadRow(line, str(exc)))
    return Row(line, request, name)


def _utf8_lines(lines: Iterable[bytes]) -> Iterator[tuple[int, str | None]]:
    """Each line's number (1-based) and text, None for a line that is not valid UTF-8."""
    for number, raw in enumerate(lines, 1):
        try:
            yield number, raw.decode("utf-8")
        except UnicodeDecodeError:
            yield number, None


def jsonl_rows(lines: Iterable[bytes], base: Path | None = None) -> Iterator[Row]:
    """Rows of a JSONL file, one JSON object per non-blank line, read lazily.

    Local image paths in the rows are relative to ``base``.
    """
    for number, text in _utf8_lines(lines):
        if text is None:
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
        yield _row(number, cast("dict[str, object]", value), from_csv=False, base=base)


def _decoded(lines: Iterable[bytes], bad: dict[int, str] | None = None) -> Iterator[str]:
    """Decode lines for the csv module, noting in ``bad`` (by line) those that cannot be sent.

    Undecodable bytes are replaced, so the csv module reads on, and the row they are in is
    reported by its line instead; so is a row with a NUL byte, which no prompt or URL holds.
    """
    for number, raw in enumerate(lines, 1):
        reason = None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            reason = "is not valid UTF-8"
            text = raw.decode("utf-8", "replace")
        if "\x00" in text:
            reason = reason or "contains a NUL byte"
        if reason is not None and bad is not None:
            bad[number] = reason
        yield text.removeprefix("\ufeff") if number == 1 else text


def _reader(lines: Iterable[str]) -> "Any":
    # Strict: a character after a closing quote, or a quote still open at the end of the file,
    # is an error rather than text glued into a field (which would then be sent as a prompt).
    return csv.reader(lines, strict=True)


def _csv_error_reason(exc: csv.Error, start: int, end: int) -> str:
    message = str(exc)
    if message == _UNCLOSED:
        return f"has a quote that is never closed (lines {start} to {end}, the end of the file)"
    if "expected after" in message:
        message = "a closing quote must be followed by a comma or the end of the line"
    span = f" (lines {start} to {end})" if end > start else ""
    return f"is not valid CSV: {message}{span}"


def csv_rows(lines: Iterable[bytes], source: str, base: Path | None = None) -> Iterator[Row]:
    """Rows of a CSV file with a header; the header is checked now, the rows read lazily.

    Local image paths in the rows are relative to ``base``.

    Raises:
        CliError: The header is missing, lacks ``prompt`` or names an unknown column.
    """
    bad: dict[int, str] = {}
    reader = _reader(_decoded(lines, bad))
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
            f"the columns are {', '.join(FIELDS)} (the file was read as CSV because its name "
            "ends in .csv; for a plain list of prompts, one per line, name it .txt)"
        )
    if "prompt" not in columns:
        raise CliError(f"{source}: line {reader.line_num}: the header has no 'prompt' column")
    return _csv_records(reader, columns, bad, base)


def _csv_records(
    reader: Any, columns: list[str], bad: dict[int, str], base: Path | None
) -> Iterator[Row]:
    previous = int(reader.line_num)
    while True:
        start = previous + 1
        try:
            record: list[str] = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            previous = int(reader.line_num)
            yield Row(start, BadRow(start, _csv_error_reason(exc, start, previous)))
            continue
        previous = int(reader.line_num)
        if not record:
            continue
        spanned = [bad.pop(number) for number in range(start, previous + 1) if number in bad]
        if spanned:
            yield Row(start, BadRow(start, spanned[0]))
            continue
        if len(record) != len(columns):
            # A cell too many or too few puts values under the wrong columns.
            noun = "field" if len(record) == 1 else "fields"
            reason = f"has {len(record)} {noun} but the header has {len(columns)}"
            yield Row(start, BadRow(start, reason))
            continue
        cells = {
            column: value.strip()
            for column, value in zip(columns, record, strict=True)
            if value.strip()
        }
        yield _row(start, cells, from_csv=True, base=base)


@attrs.frozen
class _CsvScan:
    rows: int
    unclosed: int | None  # the line where a quote that is never closed opens


def _scan_csv(file: BinaryIO) -> _CsvScan:
    """Count the rows of a CSV file (header excepted) and find a quote that is never closed."""
    reader = _reader(_decoded(file))
    records = 0
    previous = 0
    try:
        while True:
            start = previous + 1
            try:
                record = next(reader)
            except csv.Error as exc:
                previous = int(reader.line_num)
                if str(exc) == _UNCLOSED:
                    return _CsvScan(max(records - 1, 0), start)
                records += 1  # csv_rows makes it a BadRow, which is a row of the batch
                continue
            previous = int(reader.line_num)
            records += 1 if record else 0
    except StopIteration:
        return _CsvScan(max(records - 1, 0), None)
    finally:
        file.seek(0)


FileKind = Literal["jsonl", "csv", "text"]


def _kind(path: Path, file: BinaryIO) -> FileKind:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    if suffix == ".txt":
        return "text"
    head = file.read(4096)
    file.seek(0)
    first = head.lstrip(b"\xef\xbb\xbf \t\r\n").split(b"\n", 1)[0]
    if first.startswith(b"{"):
        return "jsonl"
    columns = {column.strip().strip('"') for column in first.decode("utf-8", "replace").split(",")}
    return "csv" if "prompt" in columns and columns <= set(FIELDS) else "text"


def text_rows(lines: Iterable[bytes]) -> Iterator[Row]:
    """Rows of a plain text file: each non-blank line is the prompt of a `TextToImage`."""
    for number, text in _utf8_lines(lines):
        if text is None:
            yield Row(number, BadRow(number, "is not valid UTF-8"))
            continue
        prompt = (text.removeprefix("\ufeff") if number == 1 else text).strip()
        if prompt:
            yield _row(number, {"prompt": prompt}, from_csv=False)


def count_rows(file: BinaryIO, *, is_csv: bool) -> int:
    """How many rows a batch file holds (for the progress bar), without checking them."""
    if is_csv:
        return _scan_csv(file).rows
    total = sum(1 for line in file if line.strip())
    file.seek(0)
    return total


def open_batch_file(path: Path) -> tuple[BinaryIO, Iterator[Row], int]:
    """Open a JSONL or CSV batch file: the open file, its rows (lazy) and how many there are.

    Raises:
        CliError: The file cannot be read, a CSV header is wrong, or a CSV quote is never
            closed (then no row after it can be read, and nothing is sent).
    """
    try:
        file = path.open("rb")
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        kind = _kind(path, file)
        if kind == "csv":
            scan = _scan_csv(file)
            if scan.unclosed is not None:
                raise CliError(
                    f"{path}: line {scan.unclosed}: the row starting here has a quote that is "
                    "never closed, so no row after it can be read; nothing was sent"
                )
            total, rows = scan.rows, csv_rows(file, str(path), path.parent)
        elif kind == "jsonl":
            total, rows = count_rows(file, is_csv=False), jsonl_rows(file, path.parent)
        else:
            total, rows = count_rows(file, is_csv=False), text_rows(file)
    except OSError as exc:
        file.close()
        raise CliError(f"cannot read {path}: {exc.strerror or exc}") from None
    except BaseException:
        file.close()
        raise
    return file, rows, total
