"""The SQLite batch journal on its own: rows, ids, flushing, and files that are not journals."""

from __future__ import annotations

import asyncio
import contextlib
import re
import sqlite3
from pathlib import Path

import anyio
import pytest
from support import files_open_in, wait_until, write_locked

from nanobanana_async import JournalError, _journal
from nanobanana_async._journal import Journal, JournalRow, fingerprint

pytestmark = pytest.mark.anyio

BODY = {"model": "nano-banana-text-to-image", "input": {"prompt": "a banana"}}


async def reopen_rows(path: Path) -> list[JournalRow]:
    journal = await Journal.open(path)
    try:
        return await journal.rows(0, 1000)
    finally:
        await journal.aclose()


def test_fingerprint_is_stable_and_ignores_key_order() -> None:
    same = {"input": {"prompt": "a banana"}, "model": "nano-banana-text-to-image"}
    assert fingerprint(BODY) == fingerprint(same)
    assert len(fingerprint(BODY)) == 32
    other = {"model": "nano-banana-text-to-image", "input": {"prompt": "a banana!"}}
    assert fingerprint(other) != fingerprint(BODY)
    # Non-ASCII text is part of the digest, not dropped or folded.
    assert fingerprint({"input": {"prompt": "plátano"}}) != fingerprint(
        {"input": {"prompt": "platano"}}
    )


async def test_open_creates_the_file_and_its_folders(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "batch.sqlite"
    journal = await Journal.open(path)
    await journal.aclose()
    assert path.is_file()
    assert journal.path == path


async def test_batch_id_and_request_ids_survive_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "batch.sqlite"
    fp = fingerprint(BODY)
    first = await Journal.open(str(path))
    ids = [first.request_id(i, fp) for i in range(3)]
    batch_id = first.batch_id
    await first.aclose()

    second = await Journal.open(path)
    assert second.batch_id == batch_id
    assert [second.request_id(i, fp) for i in range(3)] == ids
    await second.aclose()

    assert len(set(ids)) == 3  # one id per job
    assert first.request_id(0, fingerprint({"other": 1})) != ids[0]  # and per request
    elsewhere = await Journal.open(tmp_path / "other.sqlite")
    assert elsewhere.batch_id != batch_id
    assert elsewhere.request_id(0, fp) != ids[0]  # and per journal
    await elsewhere.aclose()
    for request_id in ids:
        assert 1 <= len(request_id) <= 128
        assert request_id.isascii()
        assert " " not in request_id


async def test_rows_round_trip_in_index_order(tmp_path: Path) -> None:
    path = tmp_path / "batch.sqlite"
    journal = await Journal.open(path)
    fp = fingerprint(BODY)
    journal.record(5, fp, "rid-5", status="created", task_id="task_5")
    journal.record(
        2, fp, "rid-2", status="succeeded", task_id="task_2", urls=["https://x/1", "https://x/2"]
    )
    journal.record(
        7,
        fp,
        "rid-7",
        status="failed",
        task_id="task_7",
        error_type="TaskFailedError",
        error_message="nsfw",
        error_code="501",
    )
    journal.record(9, fp, "rid-9", status="rejected", error_message="bad", error_code="400")
    assert journal.pending == 4
    await journal.flush()
    assert journal.pending == 0

    rows = await journal.rows(0, 100)
    assert [row.index for row in rows] == [2, 5, 7, 9]
    by_index = {row.index: row for row in rows}
    assert by_index[2] == JournalRow(
        index=2,
        fingerprint=fp,
        request_id="rid-2",
        task_id="task_2",
        status="succeeded",
        urls=("https://x/1", "https://x/2"),
    )
    assert by_index[5].urls == ()
    assert not by_index[5].finished
    assert by_index[7].finished
    assert (by_index[7].error_type, by_index[7].error_message, by_index[7].error_code) == (
        "TaskFailedError",
        "nsfw",
        "501",
    )
    assert by_index[9].task_id is None
    assert by_index[9].finished
    assert [row.index for row in await journal.rows(6, 100)] == [7, 9]
    assert [row.index for row in await journal.rows(0, 2)] == [2, 5]
    assert await journal.rows(10, 100) == []
    await journal.aclose()


async def test_a_later_row_replaces_the_earlier_but_keeps_the_task_id(tmp_path: Path) -> None:
    path = tmp_path / "batch.sqlite"
    journal = await Journal.open(path)
    fp = fingerprint(BODY)
    journal.record(0, fp, "rid", status="created", task_id="task_0")
    await journal.flush()
    journal.record(0, fp, "rid", status="rejected", error_message="later")
    await journal.flush()
    await journal.aclose()
    (row,) = await reopen_rows(path)
    assert row.status == "rejected"
    assert row.task_id == "task_0"
    assert row.error_message == "later"


async def test_aclose_flushes_and_can_be_called_twice(tmp_path: Path) -> None:
    path = tmp_path / "batch.sqlite"
    journal = await Journal.open(path)
    journal.record(0, "fp", "rid", status="created", task_id="t")
    await journal.aclose()
    await journal.aclose()
    assert [row.task_id for row in await reopen_rows(path)] == ["t"]


async def test_aclose_flushes_even_when_cancelled(tmp_path: Path) -> None:
    path = tmp_path / "batch.sqlite"
    journal = await Journal.open(path)
    journal.record(0, "fp", "rid", status="created", task_id="t")
    with anyio.CancelScope() as scope:
        scope.cancel()
        await journal.aclose()
    assert [row.task_id for row in await reopen_rows(path)] == ["t"]


async def test_a_cancelled_flush_loses_no_row(tmp_path: Path) -> None:
    path = tmp_path / "batch.sqlite"
    journal = await Journal.open(path)
    journal.record(0, "fp", "rid", status="created", task_id="t")
    with anyio.CancelScope() as scope:
        scope.cancel()
        await journal.flush()
    await journal.aclose()  # flushes whatever is still queued
    assert [row.task_id for row in await reopen_rows(path)] == ["t"]


async def test_flush_with_nothing_pending_writes_nothing(tmp_path: Path) -> None:
    journal = await Journal.open(tmp_path / "batch.sqlite")
    await journal.flush()
    assert await journal.rows(0, 10) == []
    await journal.aclose()


async def test_the_flusher_writes_rows_in_the_background(tmp_path: Path) -> None:
    path = tmp_path / "batch.sqlite"
    journal = await Journal.open(path)
    async with anyio.create_task_group() as group:
        group.start_soon(journal.run_flusher, 0.001)
        journal.record(0, "fp", "rid", status="created", task_id="t")
        with anyio.fail_after(20):
            while journal.pending:  # noqa: ASYNC110 - the journal has no event to wait on
                await anyio.sleep(0.001)
        assert [row.task_id for row in await journal.rows(0, 10)] == ["t"]
        group.cancel_scope.cancel()
    await journal.aclose()


async def test_a_failed_write_rolls_back_and_keeps_earlier_rows(tmp_path: Path) -> None:
    path = tmp_path / "batch.sqlite"
    journal = await Journal.open(path)
    journal.record(0, "fp", "rid", status="created", task_id="t")
    await journal.flush()
    journal.record(1, "fp", "rid-1", status="created", task_id="t1")
    journal.record("not an index", "fp", "rid", status="created")  # type: ignore[arg-type]
    with pytest.raises(
        JournalError, match=f"cannot write the batch journal {re.escape(str(path))}"
    ):
        await journal.flush()
    assert [row.index for row in await journal.rows(0, 10)] == [0]  # the whole batch rolled back
    journal.record(1, "fp", "rid-1", status="created", task_id="t1")
    await journal.flush()
    await journal.aclose()
    assert [row.index for row in await reopen_rows(path)] == [0, 1]


async def test_a_file_that_is_not_a_database_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    text = "these are my notes\n" * 200
    path.write_text(text)
    with pytest.raises(JournalError, match=f"{re.escape(str(path))} is not a nanobanana-async"):
        await Journal.open(path)
    assert path.read_text() == text


async def test_an_sqlite_database_of_another_program_is_refused_untouched(
    tmp_path: Path,
) -> None:
    path = tmp_path / "app.sqlite"
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE users (name TEXT)")
        db.commit()
    with pytest.raises(JournalError, match=f"{re.escape(str(path))} is not a nanobanana-async"):
        await Journal.open(path)
    with contextlib.closing(sqlite3.connect(path)) as db:
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master")}
    assert tables == {"users"}


async def test_an_empty_file_becomes_a_journal(tmp_path: Path) -> None:
    path = tmp_path / "batch.sqlite"
    path.touch()
    journal = await Journal.open(path)
    assert journal.batch_id
    await journal.aclose()


async def test_a_journal_of_another_format_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "batch.sqlite"
    journal = await Journal.open(path)
    await journal.aclose()
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("UPDATE meta SET value = '99' WHERE key = 'format'")
        db.commit()
    with pytest.raises(JournalError, match="batch journal of format '99'") as caught:
        await Journal.open(path)
    assert str(path) in str(caught.value)


def leave_as_a_kill_did(path: Path, *, tables: tuple[str, ...], meta: dict[str, str]) -> None:
    """A journal as an older version left it when killed while writing its meta.

    That version created each table and wrote each meta row in a transaction of its own.
    """
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.execute("PRAGMA journal_mode=WAL")
        if "meta" in tables:
            db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        if "jobs" in tables:
            db.execute(
                "CREATE TABLE jobs (idx INTEGER PRIMARY KEY, fingerprint TEXT NOT NULL, "
                "request_id TEXT NOT NULL, task_id TEXT, status TEXT NOT NULL, urls TEXT, "
                "error_type TEXT, error_message TEXT, error_code TEXT, updated_at REAL NOT NULL)"
            )
        db.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", meta.items())


@pytest.mark.parametrize(
    ("tables", "meta"),
    [
        (("meta", "jobs"), {"format": "1"}),  # killed between the two meta rows
        (("meta", "jobs"), {}),  # killed before the first
        (("meta",), {}),  # killed between the two tables
    ],
    ids=["format-only", "empty-meta", "no-jobs-table"],
)
async def test_a_journal_killed_while_writing_its_meta_opens_as_new(
    tmp_path: Path, tables: tuple[str, ...], meta: dict[str, str]
) -> None:
    path = tmp_path / "batch.sqlite"
    leave_as_a_kill_did(path, tables=tables, meta=meta)
    journal = await Journal.open(path)
    batch_id = journal.batch_id
    journal.record(0, "fp", journal.request_id(0, "fp"), status="created", task_id="t")
    await journal.aclose()
    assert batch_id
    reopened = await Journal.open(path)
    assert reopened.batch_id == batch_id  # the meta is whole now, and kept
    assert [row.task_id for row in await reopened.rows(0, 10)] == ["t"]
    await reopened.aclose()


async def test_a_journal_that_lost_its_batch_id_but_holds_jobs_is_refused(
    tmp_path: Path,
) -> None:
    """A new batch id would give its jobs new request ids: each would be created, and paid,
    again. The file is refused, and left as it was."""
    path = tmp_path / "batch.sqlite"
    journal = await Journal.open(path)
    journal.record(0, "fp", journal.request_id(0, "fp"), status="created", task_id="t")
    await journal.aclose()
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("DELETE FROM meta WHERE key = 'batch_id'")
        db.commit()
    with pytest.raises(JournalError, match="damaged batch journal: it holds 1 job row") as caught:
        await Journal.open(path)
    assert str(path) in str(caught.value)
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert dict(db.execute("SELECT key, value FROM meta")) == {"format": "1"}
        assert db.execute("SELECT task_id FROM jobs").fetchall() == [("t",)]


async def test_a_meta_with_a_batch_id_but_no_format_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "batch.sqlite"
    leave_as_a_kill_did(path, tables=("meta", "jobs"), meta={"batch_id": "b"})
    with pytest.raises(JournalError, match="names no format"):
        await Journal.open(path)


async def test_an_empty_meta_beside_tables_of_another_program_is_refused(
    tmp_path: Path,
) -> None:
    path = tmp_path / "app.sqlite"
    leave_as_a_kill_did(path, tables=("meta",), meta={})
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE users (name TEXT)")
        db.commit()
    with pytest.raises(JournalError, match=f"{re.escape(str(path))} is not a nanobanana-async"):
        await Journal.open(path)
    with contextlib.closing(sqlite3.connect(path)) as db:
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master")}
    assert tables == {"meta", "users", "sqlite_autoindex_meta_1"}


async def test_a_meta_table_of_another_shape_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "app.sqlite"
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE meta (name TEXT, data BLOB)")
        db.commit()
    with pytest.raises(JournalError, match=f"{re.escape(str(path))} is not a nanobanana-async"):
        await Journal.open(path)


async def test_journals_opened_at_once_agree_on_one_batch_id(tmp_path: Path) -> None:
    path = tmp_path / "batch.sqlite"
    opened: list[Journal] = []

    async def open_one() -> None:
        opened.append(await Journal.open(path))

    async with anyio.create_task_group() as group:
        for _ in range(20):
            group.start_soon(open_one)
    assert len({journal.batch_id for journal in opened}) == 1
    for journal in opened:
        await journal.aclose()


async def test_a_folder_gives_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(JournalError, match=f"{re.escape(str(tmp_path))}: it is a folder"):
        await Journal.open(tmp_path)


async def test_a_path_under_a_file_gives_an_error_naming_it(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    path = tmp_path / "file" / "batch.sqlite"
    with pytest.raises(JournalError, match=f"cannot open the batch journal {re.escape(str(path))}"):
        await Journal.open(path)


async def test_a_read_failure_is_a_journal_error(tmp_path: Path) -> None:
    path = tmp_path / "batch.sqlite"
    journal = await Journal.open(path)
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("DROP TABLE jobs")
        db.commit()
    with pytest.raises(JournalError, match=f"cannot read the batch journal {re.escape(str(path))}"):
        await journal.rows(0, 10)
    await journal.aclose()


# -- cancelled by asyncio itself ------------------------------------------------------------------
# ``task.cancel()``, ``asyncio.timeout`` and `asyncio.run` on Ctrl-C cancel a task natively,
# through anyio's shields: the journal must still not leave its file open, nor a row unwritten.


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # asyncio's own, on the real clock
async def test_an_open_cancelled_by_asyncio_closes_the_journal_it_opened(tmp_path: Path) -> None:
    path = tmp_path / "batch.sqlite"
    await (await Journal.open(path)).aclose()
    with write_locked(path):
        held = len(files_open_in(tmp_path))
        opening = asyncio.ensure_future(Journal.open(path))
        # Cancelled once the open has the file, while it waits for the write lock.
        await wait_until(lambda: len(files_open_in(tmp_path)) > held)
        opening.cancel()
    with pytest.raises(asyncio.CancelledError):
        await opening
    assert files_open_in(tmp_path) == []


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize("steps", range(1, 7))
async def test_a_close_cancelled_by_asyncio_still_writes_and_closes(
    tmp_path: Path, steps: int
) -> None:
    path = tmp_path / "batch.sqlite"
    journal = await Journal.open(path)
    journal.record(0, "fp", "rid", status="created", task_id="t")
    closing = asyncio.ensure_future(journal.aclose())
    for _ in range(steps):  # cancelled at each of its first await points in turn
        await asyncio.sleep(0)
    closing.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await closing
    assert files_open_in(tmp_path) == []
    assert [row.task_id for row in await reopen_rows(path)] == ["t"]


class _Switch:
    """A connection whose switch to write-ahead logging fails with ``errors``, then works."""

    def __init__(self, *errors: str) -> None:
        self.errors = list(errors)
        self.tries = 0

    def execute(self, sql: str) -> None:
        assert sql == "PRAGMA journal_mode=WAL"
        self.tries += 1
        if self.errors:
            raise sqlite3.OperationalError(self.errors.pop(0))


def test_a_journal_locked_by_another_opener_is_switched_to_wal_on_a_later_try(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_journal, "_WAL_RETRIES", (0.0, 0.0, 0.0))
    db = _Switch("database is locked", "database is locked")
    _journal._write_ahead(db)  # type: ignore[arg-type]
    assert db.tries == 3
    # Locked on every try: the last one's error is the caller's.
    db = _Switch(*["database is locked"] * 4)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        _journal._write_ahead(db)  # type: ignore[arg-type]
    assert db.tries == 4
    # Anything else is not waited for.
    db = _Switch("disk I/O error")
    with pytest.raises(sqlite3.OperationalError, match="disk I/O"):
        _journal._write_ahead(db)  # type: ignore[arg-type]
    assert db.tries == 1
