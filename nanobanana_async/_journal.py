"""The batch journal: an SQLite file that lets an interrupted batch resume without paying twice.

One row per job, keyed by the job's index in the batch, with a fingerprint of its request:

* ``created``: the provider accepted the job; its task id is known. On resume the task is
  polled, never created again.
* ``succeeded`` / ``failed`` / ``rejected``: the job is finished (the task ended, or the
  provider refused the request as invalid). On resume it is skipped, and its outcome is
  rebuilt from the row.

A second table holds the URL each local input image was published at (by its SHA-256, with
how long the URL stays valid), so a rerun publishes nothing again and sends a create the body
it sent before. Older journals get the table when they are opened.

Each job's ``X-Request-ID`` is derived from the journal's own id and the job, so a create that
was sent but whose row never reached the disk (the process died in between) is sent again with
the same id, and the provider answers with the task it already made. That is why writes can be
grouped and committed every fraction of a second instead of once per request.

The two meta rows (the format and the journal's id) are written in one transaction with the
schema, so a kill while a journal is being created leaves either no journal or a whole one. A
file left by an older version killed between those rows (a meta without its batch id) is
finished on the next open, as long as it holds no job rows: no request can have been sent
with an id derived from a batch id that was never written.

sqlite3 is blocking; every call runs in a worker thread through `anyio.to_thread`, one at a
time under a lock. Opening, writing and closing run to their end even when the caller is
cancelled (`run_shielded`), so a cancelled batch loses no row and leaves no connection open.
Every failure of the file is raised as `JournalError`, naming the file.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import anyio
import anyio.to_thread
import attrs

from ._errors import (
    APIStatusError,
    BadRequestError,
    JournalError,
    NanoBananaError,
    TaskFailedError,
    UnprocessableEntityError,
)
from ._models import Task, TaskResult, TaskState
from ._outcomes import BatchOutcome
from ._shielded import run_shielded

__all__ = ["Journal", "JournalRow", "error_columns", "fingerprint", "outcome_from_row"]

Status = Literal["created", "succeeded", "failed", "rejected"]
FINISHED: frozenset[str] = frozenset({"succeeded", "failed", "rejected"})

# Separate statements, not one script: `executescript` would commit the open transaction.
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """
    CREATE TABLE IF NOT EXISTS jobs (
        idx INTEGER PRIMARY KEY,
        fingerprint TEXT NOT NULL,
        request_id TEXT NOT NULL,
        task_id TEXT,
        status TEXT NOT NULL,
        urls TEXT,
        error_type TEXT,
        error_message TEXT,
        error_code TEXT,
        updated_at REAL NOT NULL
    )
    """,
    # Added with local images; created in older journals when they are opened.
    """
    CREATE TABLE IF NOT EXISTS images (
        sha256 TEXT PRIMARY KEY,
        url TEXT NOT NULL,
        valid_until REAL NOT NULL
    )
    """,
)
_TABLES = frozenset({"meta", "jobs", "images"})
_NOT_A_JOURNAL = "is not a nanobanana-async batch journal"
_FORMAT = "1"
_UPSERT = """
INSERT INTO jobs (idx, fingerprint, request_id, task_id, status, urls, error_type,
                  error_message, error_code, updated_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (idx) DO UPDATE SET
    fingerprint = excluded.fingerprint, request_id = excluded.request_id,
    task_id = COALESCE(excluded.task_id, jobs.task_id), status = excluded.status,
    urls = excluded.urls, error_type = excluded.error_type,
    error_message = excluded.error_message, error_code = excluded.error_code,
    updated_at = excluded.updated_at
"""


def fingerprint(body: dict[str, Any]) -> str:
    """A short, stable digest of a request body."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


#: Waits (seconds) before each new try to switch a journal to write-ahead logging.
_WAL_RETRIES = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0)


def _write_ahead(db: sqlite3.Connection) -> None:
    """Switch ``db`` to write-ahead logging, waiting while another opener holds the file.

    SQLite answers "database is locked" at once, without its busy timeout, when the switch
    meets another connection switching the same new file: two batches (or processes) opening
    one journal at the same moment. Tried again a few times over about four seconds.
    """
    for delay in _WAL_RETRIES:
        try:
            db.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc):
                raise
            time.sleep(delay)  # in the worker thread that opens the journal
        else:
            return
    db.execute("PRAGMA journal_mode=WAL")


@attrs.frozen(kw_only=True)
class JournalRow:
    """What the journal knows of one job."""

    index: int
    fingerprint: str
    request_id: str
    task_id: str | None
    status: Status
    urls: tuple[str, ...] = ()
    error_type: str | None = None
    error_message: str | None = None
    error_code: str | None = None

    @property
    def finished(self) -> bool:
        """Whether the job needs nothing more."""
        return self.status in FINISHED


class Journal:
    """An open batch journal. Use `Journal.open`, then `aclose` (which flushes)."""

    def __init__(self, path: Path, connection: sqlite3.Connection, batch_id: str) -> None:
        self.path = path
        self.batch_id = batch_id
        self._db = connection
        self._lock = anyio.Lock()
        self._pending: list[tuple[Any, ...]] = []
        self._closed = False

    @classmethod
    async def open(cls, path: str | os.PathLike[str]) -> Journal:
        """Open (or create) the journal at ``path``.

        Raises:
            JournalError: The file cannot be opened, is not a journal of this library (it is
                then left untouched), is of another format, or lost the id its job rows
                were sent with.
        """
        target = Path(path)
        # To its end, and closed again if the caller is cancelled before it takes the journal.
        return await run_shielded(
            lambda: anyio.to_thread.run_sync(cls._open_sync, target), undo=Journal.aclose
        )

    @classmethod
    def _open_sync(cls, path: Path) -> Journal:
        if path.is_dir():
            raise JournalError(f"cannot open the batch journal {path}: it is a folder")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise JournalError(f"cannot open the batch journal {path}: {exc}") from exc
        try:
            # Read before anything is written: a file that is not ours is left as it was.
            _check_tables(db, path)
            _write_ahead(db)
            db.execute("PRAGMA synchronous=NORMAL")
            # IMMEDIATE: two processes opening one new file agree on a single batch id.
            db.execute("BEGIN IMMEDIATE")
            try:
                batch_id = _settle_meta(db, path)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        except sqlite3.OperationalError as exc:  # locked, read-only, out of space...
            db.close()
            raise JournalError(f"cannot open the batch journal {path}: {exc}") from exc
        except sqlite3.DatabaseError as exc:  # "file is not a database"
            db.close()
            raise JournalError(f"{path} {_NOT_A_JOURNAL}: {exc}") from exc
        except BaseException:
            db.close()
            raise
        return cls(path, db, batch_id)

    def request_id(self, index: int, job_fingerprint: str) -> str:
        """The X-Request-ID of a job: the same on every run of this journal."""
        return str(
            uuid.uuid5(uuid.NAMESPACE_URL, f"nanobanana:{self.batch_id}:{index}:{job_fingerprint}")
        )

    async def rows(self, start: int, count: int) -> list[JournalRow]:
        """Rows with ``start <= index``, in index order, at most ``count`` of them.

        Raises:
            JournalError: The file cannot be read.
        """
        async with self._lock:
            found = await anyio.to_thread.run_sync(self._rows_sync, start, count)
        return [_row(record) for record in found]

    def _rows_sync(self, start: int, count: int) -> list[tuple[Any, ...]]:
        try:
            cursor = self._db.execute(
                "SELECT idx, fingerprint, request_id, task_id, status, urls, error_type, "
                "error_message, error_code FROM jobs WHERE idx >= ? ORDER BY idx LIMIT ?",
                (start, count),
            )
            return cursor.fetchall()
        except sqlite3.Error as exc:
            raise JournalError(f"cannot read the batch journal {self.path}: {exc}") from exc

    async def published_url(self, sha256: str, valid_until: float) -> str | None:
        """The URL an image was published at, if it stays valid until ``valid_until``.

        Raises:
            JournalError: The file cannot be read.
        """
        async with self._lock:
            return await anyio.to_thread.run_sync(self._published_sync, sha256, valid_until)

    def _published_sync(self, sha256: str, valid_until: float) -> str | None:
        try:
            found = self._db.execute(
                "SELECT url FROM images WHERE sha256 = ? AND valid_until >= ?",
                (sha256, valid_until),
            ).fetchone()
        except sqlite3.Error as exc:
            raise JournalError(f"cannot read the batch journal {self.path}: {exc}") from exc
        return None if found is None else str(found[0])

    async def record_published(self, sha256: str, url: str, valid_until: float) -> None:
        """Record an image's URL at once, not at the next flush.

        A create sent with the URL may be sent again after a crash, and must then carry the
        same body.

        Raises:
            JournalError: The file cannot be written.
        """
        statement = "INSERT OR REPLACE INTO images (sha256, url, valid_until) VALUES (?, ?, ?)"
        values = (sha256, url, valid_until)
        async with self._lock:
            await run_shielded(
                lambda: anyio.to_thread.run_sync(self._execute_sync, statement, values)
            )

    def _execute_sync(self, statement: str, values: tuple[Any, ...]) -> None:
        try:
            self._db.execute(statement, values)
        except sqlite3.Error as exc:
            raise JournalError(f"cannot write the batch journal {self.path}: {exc}") from exc

    def record(
        self,
        index: int,
        job_fingerprint: str,
        request_id: str,
        *,
        status: Status,
        task_id: str | None = None,
        urls: Sequence[str] = (),
        error_type: str | None = None,
        error_message: str | None = None,
        error_code: str | None = None,
    ) -> None:
        """Queue a row for the next `flush`."""
        self._pending.append(
            (
                index,
                job_fingerprint,
                request_id,
                task_id,
                status,
                json.dumps(list(urls)) if urls else None,
                error_type,
                error_message,
                error_code,
                time.time(),
            )
        )

    @property
    def pending(self) -> int:
        """Rows waiting for the next flush."""
        return len(self._pending)

    async def flush(self) -> None:
        """Write every queued row in one transaction.

        Raises:
            JournalError: The file cannot be written; none of the queued rows was.
        """
        if not self._pending:
            return
        async with self._lock:
            # Taken inside the lock, written to the end: a flush cancelled while it waits for
            # the lock, or for a worker thread, loses no row.
            batch, self._pending = self._pending, []
            if batch:
                await run_shielded(lambda: anyio.to_thread.run_sync(self._write_sync, batch))

    def _write_sync(self, batch: list[tuple[Any, ...]]) -> None:
        try:
            self._db.execute("BEGIN")
            try:
                self._db.executemany(_UPSERT, batch)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise JournalError(f"cannot write the batch journal {self.path}: {exc}") from exc

    async def run_flusher(self, interval: float = 0.2) -> None:
        """Flush every ``interval`` seconds until cancelled."""
        while True:
            await anyio.sleep(interval)
            await self.flush()

    async def aclose(self) -> None:
        """Flush and close; safe to call more than once, and run to its end when cancelled."""
        if self._closed:
            return
        self._closed = True
        await run_shielded(self._flush_and_close)

    async def _flush_and_close(self) -> None:
        try:
            await self.flush()
        finally:
            async with self._lock:
                await anyio.to_thread.run_sync(self._db.close)


def _tables(db: sqlite3.Connection) -> set[str]:
    query = "SELECT name FROM sqlite_master WHERE type = 'table'"
    return {name for (name,) in db.execute(query)}


def _check_tables(db: sqlite3.Connection, path: Path) -> None:
    """Refuse a database of another program: one with tables, but no meta table."""
    tables = _tables(db)
    if tables and "meta" not in tables:
        others = ", ".join(sorted(tables))
        raise JournalError(f"{path} {_NOT_A_JOURNAL}: it holds other tables ({others})")


def _settle_meta(db: sqlite3.Connection, path: Path) -> str:
    """Read the journal's meta, or write it whole; inside the caller's transaction.

    Returns:
        The journal's batch id.
    """
    _check_tables(db, path)  # again, now under the write lock
    extra = _tables(db) - _TABLES
    for statement in _SCHEMA:
        db.execute(statement)
    try:
        meta: dict[str, str] = dict(db.execute("SELECT key, value FROM meta").fetchall())
    except sqlite3.OperationalError as exc:  # a meta table of another program
        raise JournalError(f"{path} {_NOT_A_JOURNAL}: {exc}") from exc
    found_format, batch_id = meta.get("format"), meta.get("batch_id")
    if found_format is not None and found_format != _FORMAT:
        raise JournalError(
            f"{path} is a batch journal of format {found_format!r}; "
            f"this version reads format {_FORMAT!r} only"
        )
    if found_format is not None and batch_id is not None:
        return batch_id
    if batch_id is not None or extra:
        raise JournalError(f"{path} {_NOT_A_JOURNAL}: its meta table names no format")
    # New, or a meta cut short by a kill (an older version wrote the format first, then the
    # batch id). Safe to finish only while no job is journaled: a job's request id derives
    # from the lost batch id, and under a new one the job would be created, and paid, twice.
    (jobs,) = db.execute("SELECT COUNT(*) FROM jobs").fetchone()
    if jobs:
        raise JournalError(
            f"{path} is a damaged batch journal: it holds {jobs} job row(s) but no batch id, "
            "so their request ids cannot be rebuilt; move it aside to start a new journal"
        )
    batch_id = str(uuid.uuid4())
    db.executemany(
        "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
        [("format", _FORMAT), ("batch_id", batch_id)],
    )
    return batch_id


def _row(record: tuple[Any, ...]) -> JournalRow:
    index, job_fingerprint, request_id, task_id, status, urls, etype, emessage, ecode = record
    return JournalRow(
        index=int(index),
        fingerprint=str(job_fingerprint),
        request_id=str(request_id),
        task_id=None if task_id is None else str(task_id),
        status=status,
        urls=tuple(json.loads(urls)) if urls else (),
        error_type=etype,
        error_message=emessage,
        error_code=ecode,
    )


# -- the codec between journal rows and outcomes -----------------------------------------------


def outcome_from_row(row: JournalRow, request: Any) -> BatchOutcome[Any]:
    """Rebuild the outcome of a finished job from its row, with no request sent."""
    outcome = BatchOutcome(
        index=row.index,
        request=request,
        task_id=row.task_id,
        request_id=row.request_id,
        resumed=True,
    )
    if row.status == "succeeded" and row.task_id is not None:
        task = Task(
            task_id=row.task_id, state=TaskState.SUCCESS, raw_state="success", urls=row.urls
        )
        return attrs.evolve(
            outcome, result=TaskResult(task_id=row.task_id, urls=row.urls, task=task)
        )
    if row.status == "failed" and row.task_id is not None:
        task = Task(
            task_id=row.task_id,
            state=TaskState.FAIL,
            raw_state="fail",
            fail_code=row.error_code,
            fail_message=row.error_message,
        )
        return attrs.evolve(outcome, error=TaskFailedError(task))
    code = int(row.error_code) if row.error_code and row.error_code.isdigit() else 400
    cls = UnprocessableEntityError if code == 422 else BadRequestError
    return attrs.evolve(
        outcome,
        error=cls(row.error_message or "rejected", code=code, http_status=code),
    )


def error_columns(exc: NanoBananaError | None) -> dict[str, str | None]:
    """The error columns of a finished job's row."""
    if exc is None:
        return {"error_type": None, "error_message": None, "error_code": None}
    code: str | None = None
    if isinstance(exc, TaskFailedError):
        code = exc.fail_code
    elif isinstance(exc, APIStatusError):
        code = str(exc.code)
    return {"error_type": type(exc).__name__, "error_message": str(exc), "error_code": code}
