"""The ``nanobanana`` command line, driven through its real entry point in a subprocess.

Every command runs as ``python -m nanobanana_async ...`` with ``NANOBANANA_API_KEY`` and
``NANOBANANA_BASE_URL`` pointing at a `FakeNanoBanana` served on loopback from a background
thread of this process, so the tests can look at what the fake received. The batch-file readers
are also tested in-process, for the corner cases of CSV and JSONL.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import sqlite3
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal

from nanobanana_async import IMAGE_SIZES, ImageToImage, TextToImage
from nanobanana_async._cli import (
    BadRow,
    CliError,
    count_rows,
    csv_rows,
    jsonl_rows,
    open_batch_file,
    request_from_fields,
)
from nanobanana_async.testing import FakeNanoBanana, FakeStats

KEY = "sk-test"
PYTHON = [sys.executable, "-m", "nanobanana_async"]


@attrs.define
class Served:
    """A fake provider on loopback, run by a portal's event loop in another thread."""

    fake: FakeNanoBanana
    base_url: str
    portal: BlockingPortal

    def stats(self) -> FakeStats:
        return self.portal.call(lambda: self.fake.stats)


@pytest.fixture(scope="module")
def portal() -> Iterator[BlockingPortal]:
    with start_blocking_portal() as portal:
        yield portal


@contextlib.contextmanager
def serve(portal: BlockingPortal, fake: FakeNanoBanana) -> Iterator[Served]:
    with portal.wrap_async_context_manager(fake.serve()) as base_url:
        yield Served(fake, base_url, portal)


@pytest.fixture(scope="module")
def served(portal: BlockingPortal) -> Iterator[Served]:
    """The fake of the 'basic' tier, 100 times faster than the real service."""
    with serve(portal, FakeNanoBanana(api_key=KEY, time_scale=0.01)) as served:
        yield served


def env_for(served: Served | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NANOBANANA_")}
    env.update(COLUMNS="200", TERM="dumb", PYTHONIOENCODING="utf-8")
    if served is not None:
        env.update(NANOBANANA_API_KEY=KEY, NANOBANANA_BASE_URL=served.base_url)
    env.update(extra)
    return env


def nanobanana(
    *args: str | Path, served: Served | None, cwd: Path, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PYTHON, *map(str, args)],
        env=env_for(served, **env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The whole of stderr, which must be exactly one ``error:`` line."""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.stderr + result.stdout
    return lines[0]


def assert_image(path: Path) -> None:
    """The file is a PNG whose IHDR decodes, or a JPEG from SOI to EOI."""
    data = path.read_bytes()
    if path.suffix == ".png":
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        length, kind = struct.unpack(">I4s", data[8:16])
        width, height = struct.unpack(">II", data[16:24])
        assert (length, kind) == (13, b"IHDR")
        assert width > 0
        assert height > 0
    else:
        assert path.suffix == ".jpg"
        assert data[:2] == b"\xff\xd8"
        assert data.rstrip(b"\x00")[-2:] == b"\xff\xd9"


# -- the package and the entry point ---------------------------------------------------------


def test_importing_the_library_imports_no_cli_dependency(tmp_path: Path) -> None:
    # httpx imports its own command line (rich, click) when they are installed: only what
    # this package adds counts.
    code = (
        "import sys; cli = {'typer', 'rich', 'click', 'rich.progress'}; import httpx; "
        "before = cli & set(sys.modules); "
        "import nanobanana_async, nanobanana_async.testing, nanobanana_async._cli; "
        "print(sorted((cli & set(sys.modules)) - before))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path
    )
    assert result.stdout.strip() == "[]"


def test_without_the_cli_extra_main_says_what_to_install(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['typer'] = None; "
        "from nanobanana_async._cli import main; raise SystemExit(main(['demo']))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, cwd=tmp_path
    )
    assert result.returncode == 1
    assert "pip install 'nanobanana-async[cli]'" in one_error_line(result)


def test_help_lists_every_command_and_version_prints_the_version(tmp_path: Path) -> None:
    result = nanobanana("--help", served=None, cwd=tmp_path)
    assert result.returncode == 0
    for command in ("generate", "edit", "batch", "status", "download", "demo"):
        assert command in result.stdout
    version = nanobanana("--version", served=None, cwd=tmp_path)
    assert version.returncode == 0
    assert version.stdout.startswith("nanobanana-async ")


def test_an_unknown_option_is_a_usage_error(tmp_path: Path) -> None:
    result = nanobanana("generate", "a banana", "--colour", "red", served=None, cwd=tmp_path)
    assert result.returncode == 2
    assert "--colour" in result.stderr


# -- generate, edit, status, download ---------------------------------------------------------


def test_generate_saves_the_image_and_prints_its_path(served: Served, tmp_path: Path) -> None:
    before = served.stats().tasks_created
    result = nanobanana("generate", "a banana", "--out", "images", served=served, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    [printed] = result.stdout.splitlines()
    path = tmp_path / printed
    assert path.parent == tmp_path / "images"
    assert_image(path)
    assert served.stats().tasks_created == before + 1
    assert "succeeded" in result.stderr


def test_generate_sends_the_size_and_format_asked_for(served: Served, tmp_path: Path) -> None:
    result = nanobanana(
        "generate", "a wide banana", "--size", "16:9", "--format", "jpeg", "--no-nsfw-checker",
        served=served, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    path = tmp_path / result.stdout.strip()
    assert path.suffix == ".jpg"
    assert_image(path)
    task = served.portal.call(lambda: served.fake.tasks[path.stem])
    assert task.body["input"] == {
        "prompt": "a wide banana",
        "image_size": "16:9",
        "output_format": "jpeg",
        "nsfw_checker": False,
    }


def test_edit_sends_the_image_urls_and_saves_the_result(served: Served, tmp_path: Path) -> None:
    urls = ["https://example.com/a.png", "https://example.com/b.png"]
    result = nanobanana(
        "edit", "make it gold", "--image", urls[0], "-i", urls[1], "-o", "edits",
        served=served, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    path = tmp_path / result.stdout.strip()
    assert_image(path)
    task = served.portal.call(lambda: served.fake.tasks[path.stem])
    assert task.model == "nano-banana-image-to-image"
    assert task.body["input"]["image_urls"] == urls


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["generate", "a banana", "--size", "7:3"], "image_size: must be one of"),
        (["generate", "a banana", "--format", "jpg"], "write 'jpeg'"),
        (["generate", "   "], "prompt: is required"),
        (["generate", "a banana", "--timeout", "0"], "--timeout must be more than 0"),
        (["edit", "gold", "--image", "http://example.com/a.png"], "image_urls[0]"),
        (["edit", "gold", "--image", "/home/me/a.png"], "no local paths"),
    ],
)
def test_invalid_requests_are_one_line_exit_2_and_send_nothing(
    served: Served, tmp_path: Path, args: list[str], message: str
) -> None:
    before = served.stats().create_requests
    result = nanobanana(*args, served=served, cwd=tmp_path)
    assert result.returncode == 2
    assert message in one_error_line(result)
    assert served.stats().create_requests == before


def test_a_missing_key_is_one_line_exit_3(tmp_path: Path) -> None:
    result = nanobanana("generate", "a banana", served=None, cwd=tmp_path)
    assert result.returncode == 3
    line = one_error_line(result)
    assert "--api-key" in line
    assert "NANOBANANA_API_KEY" in line


def test_a_wrong_key_is_one_line_exit_3_that_never_shows_the_key(
    served: Served, tmp_path: Path
) -> None:
    wrong = "sk-WRONG-0xDEADBEEF"
    for args in (["generate", "a banana"], ["status", "task_1"]):
        result = nanobanana("--api-key", wrong, *args, served=served, cwd=tmp_path)
        assert result.returncode == 3
        assert "API key was refused" in one_error_line(result)
        assert wrong not in result.stderr + result.stdout


def test_an_unreachable_api_is_exit_1(tmp_path: Path) -> None:
    result = nanobanana(
        "status", "task_1", served=None, cwd=tmp_path,
        NANOBANANA_API_KEY=KEY, NANOBANANA_BASE_URL="http://127.0.0.1:9",
    )  # fmt: skip
    assert result.returncode == 1
    assert "could not reach the API" in one_error_line(result)


def test_no_wait_then_status_and_download(served: Served, tmp_path: Path) -> None:
    created = nanobanana("generate", "a banana later", "--no-wait", served=served, cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    task_id = created.stdout.strip()
    assert task_id in served.portal.call(lambda: list(served.fake.tasks))

    downloaded = nanobanana(
        "download", task_id, "--wait", "--out", "dl", served=served, cwd=tmp_path
    )
    assert downloaded.returncode == 0, downloaded.stderr
    path = tmp_path / downloaded.stdout.strip()
    assert path == tmp_path / "dl" / f"{task_id}.png"
    assert_image(path)

    again = nanobanana("download", task_id, "--out", "dl2", served=served, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert_image(tmp_path / again.stdout.strip())

    status = nanobanana("status", task_id, served=served, cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    assert "success" in status.stdout
    assert f"{served.base_url}/files/{task_id}/0.png" in status.stdout

    as_json = nanobanana("status", task_id, "--json", served=served, cwd=tmp_path)
    record = json.loads(as_json.stdout)
    assert record["task_id"] == task_id
    assert record["state"] == "success"
    assert record["urls"] == [f"{served.base_url}/files/{task_id}/0.png"]


def test_status_and_download_of_an_unknown_task_are_exit_1(served: Served, tmp_path: Path) -> None:
    for command in ("status", "download"):
        result = nanobanana(command, "task_does_not_exist", served=served, cwd=tmp_path)
        assert result.returncode == 1
        assert "task 'task_does_not_exist' not found" in one_error_line(result)


def test_verbose_logs_requests_but_never_the_key(served: Served, tmp_path: Path) -> None:
    result = nanobanana("--verbose", "status", "task_nope", served=served, cwd=tmp_path)
    assert result.returncode == 1
    assert "recordInfo" in result.stderr
    assert KEY not in result.stderr + result.stdout


# -- batch ---------------------------------------------------------------------------------

JSONL = """\
{"prompt": "a banana"}
{"prompt": "a wide banana", "image_size": "16:9", "output_format": "jpeg", "name": "wide"}

{"prompt": "unterminated"
{"prompt": "a bad size", "image_size": "7:3"}
{"prompt": "gold", "image_urls": ["https://example.com/a.png"], "nsfw_checker": false}
["not", "an", "object"]
{"prompt": "a typo", "size": "1:1"}
"""


def test_batch_jsonl_reports_bad_rows_by_line_and_never_sends_them(
    served: Served, tmp_path: Path
) -> None:
    (tmp_path / "requests.jsonl").write_text(JSONL, encoding="utf-8")
    before = served.stats()
    result = nanobanana("batch", "requests.jsonl", "--out", "out", served=served, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "line 4  invalid: is not valid JSON" in result.stderr
    assert "line 5  invalid: image_size: must be one of" in result.stderr
    assert 'line 7  invalid: must be a JSON object with a "prompt"' in result.stderr
    assert "line 8  invalid: unknown field 'size'" in result.stderr
    assert "Traceback" not in result.stderr
    after = served.stats()
    assert after.tasks_created - before.tasks_created == 3
    assert after.invalid == before.invalid  # nothing invalid reached the provider
    saved = sorted(path.name for path in (tmp_path / "out").iterdir())
    assert saved == ["line-0001.png", "line-0006.png", "wide.jpg"]
    for name in saved:
        assert_image(tmp_path / "out" / name)
    assert "Batch summary" in result.stdout
    assert "4 invalid" in result.stdout


def test_batch_csv_splits_image_urls_and_names_a_bad_size(served: Served, tmp_path: Path) -> None:
    (tmp_path / "requests.csv").write_text(
        "prompt,image_urls,image_size,nsfw_checker\n"
        '"a cat, sitting",,1:1,yes\n'
        "gold,https://example.com/a.png | https://example.com/b.png,4:3,\n"
        "a bad size,,7:3,\n"
        '"two\nlines",https://example.com/a.png https://example.com/c.png,,false\n'
        "not sure,,,maybe\n",
        encoding="utf-8",
    )
    before = served.stats().tasks_created
    result = nanobanana("batch", "requests.csv", "--out", "out", served=served, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "line 4  invalid: image_size: must be one of" in result.stderr
    assert "line 7  invalid: nsfw_checker: must be true or false, got 'maybe'" in result.stderr
    assert served.stats().tasks_created - before == 3
    saved = sorted(path.name for path in (tmp_path / "out").iterdir())
    assert saved == ["line-0002.png", "line-0003.png", "line-0005.png"]
    tasks = served.portal.call(lambda: list(served.fake.tasks.values())[-3:])
    urls = sorted(tuple(task.body["input"].get("image_urls", ())) for task in tasks)
    assert urls == [
        (),
        ("https://example.com/a.png", "https://example.com/b.png"),
        ("https://example.com/a.png", "https://example.com/c.png"),
    ]


def test_batch_without_out_prints_the_urls_and_exits_0(served: Served, tmp_path: Path) -> None:
    (tmp_path / "r.jsonl").write_text('{"prompt": "one"}\n{"prompt": "two"}\n', encoding="utf-8")
    result = nanobanana("batch", "r.jsonl", served=served, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count(f"{served.base_url}/files/") == 2
    quiet = nanobanana("batch", "r.jsonl", "--quiet", served=served, cwd=tmp_path)
    assert quiet.returncode == 0
    assert quiet.stderr == ""


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda d: None, "cannot read missing.jsonl: No such file or directory"),
        (lambda d: (d / "missing.jsonl").mkdir(), "cannot read missing.jsonl: Is a directory"),
        (
            lambda d: (d / "missing.jsonl").write_text(""),
            "missing.jsonl holds no requests",
        ),
    ],
)
def test_batch_of_an_unreadable_or_empty_file_is_exit_2(
    served: Served, tmp_path: Path, setup: Any, message: str
) -> None:
    setup(tmp_path)
    result = nanobanana("batch", "missing.jsonl", served=served, cwd=tmp_path)
    assert result.returncode == 2
    assert message in one_error_line(result)


def test_batch_csv_with_an_unknown_column_sends_nothing(served: Served, tmp_path: Path) -> None:
    (tmp_path / "r.csv").write_text("prompt,size\na banana,1:1\n", encoding="utf-8")
    before = served.stats().create_requests
    result = nanobanana("batch", "r.csv", served=served, cwd=tmp_path)
    assert result.returncode == 2
    assert "r.csv: line 1: unknown column 'size'" in one_error_line(result)
    assert served.stats().create_requests == before


def test_batch_with_a_wrong_key_stops_and_says_so_once(served: Served, tmp_path: Path) -> None:
    (tmp_path / "r.jsonl").write_text('{"prompt": "a"}\n{"prompt": "b"}\n', encoding="utf-8")
    result = nanobanana("--api-key", "sk-nope", "batch", "r.jsonl", served=served, cwd=tmp_path)
    assert result.returncode == 3
    line = one_error_line(result)
    assert "API key was refused" in line
    assert "2 requests were not sent" in line


def test_batch_rejects_a_file_that_is_not_a_journal(served: Served, tmp_path: Path) -> None:
    (tmp_path / "r.jsonl").write_text('{"prompt": "a"}\n', encoding="utf-8")
    result = nanobanana("batch", "r.jsonl", "--journal", "r.jsonl", served=served, cwd=tmp_path)
    assert result.returncode == 2
    assert "cannot use the journal r.jsonl" in one_error_line(result)


def test_batch_with_a_journal_resumes_without_creating_again(
    served: Served, tmp_path: Path
) -> None:
    lines = "".join(json.dumps({"prompt": f"banana {i}"}) + "\n" for i in range(6))
    (tmp_path / "r.jsonl").write_text(lines, encoding="utf-8")
    args = ("batch", "r.jsonl", "--journal", "j.db", "--out", "out", "--tier", "basic")
    first = nanobanana(*args, served=served, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    (tmp_path / "out" / "line-0003.png").unlink()
    before = served.stats()
    second = nanobanana(*args, served=served, cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    after = served.stats()
    assert after.create_requests == before.create_requests
    assert second.stderr.count("(from the journal)") == 6
    assert len(list((tmp_path / "out").iterdir())) == 6
    assert_image(tmp_path / "out" / "line-0003.png")


def journal_task_ids(path: Path) -> dict[int, str]:
    if not path.exists():
        return {}
    with sqlite3.connect(path) as db:
        try:
            rows = db.execute("SELECT idx, task_id FROM jobs WHERE task_id IS NOT NULL")
            return dict(rows.fetchall())
        except sqlite3.OperationalError:  # created, but the schema not yet committed
            return {}


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT is a POSIX signal")
def test_ctrl_c_keeps_the_journal_and_the_rerun_pays_nothing_twice(
    portal: BlockingPortal, tmp_path: Path
) -> None:
    fake = FakeNanoBanana(api_key=KEY, time_scale=0.15, seed=3)
    with serve(portal, fake) as slow:
        interrupt_and_resume(slow, tmp_path)


def interrupt_and_resume(slow: Served, tmp_path: Path) -> None:
    lines = "".join(json.dumps({"prompt": f"slow banana {i}"}) + "\n" for i in range(10))
    (tmp_path / "r.jsonl").write_text(lines, encoding="utf-8")
    command = [*PYTHON, "batch", "r.jsonl", "--journal", "j.db", "--out", "out"]
    process = subprocess.Popen(
        command,
        env=env_for(slow),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 20
    while not journal_task_ids(tmp_path / "j.db") and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130, stderr
    assert "interrupted:" in stderr
    assert "run the same command again: nanobanana batch r.jsonl --journal j.db" in stderr
    assert "Traceback" not in stderr
    kept = journal_task_ids(tmp_path / "j.db")
    assert kept
    assert slow.stats().tasks_created < 10

    resumed = subprocess.run(
        command, env=env_for(slow), cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert resumed.returncode == 0, resumed.stderr
    stats = slow.stats()
    assert stats.tasks_created == 10
    assert stats.duplicates == 0
    assert journal_task_ids(tmp_path / "j.db") | kept == journal_task_ids(tmp_path / "j.db")
    assert len(list((tmp_path / "out").glob("line-*.png"))) == 10


# -- demo ----------------------------------------------------------------------------------


def test_demo_writes_real_images_without_a_key_or_network(tmp_path: Path) -> None:
    result = nanobanana("demo", served=None, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    images = sorted((tmp_path / "nanobanana-demo").iterdir())
    assert len(images) >= 10
    for image in images:
        assert_image(image)
    assert "Batch summary" in result.stdout
    assert "active-task limit" in result.stdout
    assert "fake provider on http://127.0.0.1:" in result.stderr


# -- the batch-file readers, in-process ---------------------------------------------------------


def rows_of(text: bytes, *, is_csv: bool) -> list[tuple[int, object]]:
    lines = io.BytesIO(text)
    rows = csv_rows(lines, "f.csv") if is_csv else jsonl_rows(lines)
    return [(row.line, row.item) for row in rows]


def test_jsonl_rows_skip_blank_lines_and_a_bom_and_name_undecodable_lines() -> None:
    rows = rows_of(b'\xef\xbb\xbf{"prompt": "a"}\n\n  \n\xff\xfe\n{"prompt": 5}\n', is_csv=False)
    assert rows[0] == (1, TextToImage(prompt="a"))
    assert rows[1] == (4, BadRow(4, "is not valid UTF-8"))
    assert rows[2] == (5, BadRow(5, "prompt: must be a string, not int"))


def test_csv_rows_keep_their_first_line_and_catch_extra_fields_and_bad_bytes() -> None:
    text = b'\xef\xbb\xbfprompt,aspect_ratio\n"a\nb",16:9\n\nc,1:1,extra\nd,1:1,,\n\xff,1:1\n'
    rows = rows_of(text, is_csv=True)
    assert rows == [
        (2, TextToImage(prompt="a\nb", image_size="16:9")),
        (5, BadRow(5, "has 3 fields but the header has 2")),
        (6, TextToImage(prompt="d")),
        (7, BadRow(7, "is not valid UTF-8")),
    ]


def test_csv_header_must_name_a_prompt_and_an_empty_csv_has_no_rows() -> None:
    with pytest.raises(CliError, match="no 'prompt' column"):
        rows_of(b"image_size\n1:1\n", is_csv=True)
    assert rows_of(b"", is_csv=True) == []
    assert rows_of(b"\n\n", is_csv=True) == []


def test_csv_errors_name_their_line() -> None:
    huge = b"x" * 200_000  # more than the csv module's field size limit
    with pytest.raises(CliError, match=r"f\.csv: line 1: field larger than field limit"):
        rows_of(huge + b"\n", is_csv=True)
    rows = rows_of(b"prompt\nok\n" + huge + b"\nfine\n", is_csv=True)
    assert rows[0] == (2, TextToImage(prompt="ok"))
    assert isinstance(rows[1][1], BadRow)
    assert "is not valid CSV" in rows[1][1].reason
    assert rows[-1][1] == TextToImage(prompt="fine")


def test_fields_become_the_matching_request() -> None:
    request, name = request_from_fields(
        {"prompt": "p", "image_urls": "https://a.example/x.png|https://a.example/y.png"},
        from_csv=True,
    )
    assert request == ImageToImage(
        prompt="p", image_urls=["https://a.example/x.png", "https://a.example/y.png"]
    )
    assert name is None
    request, name = request_from_fields(
        {"prompt": "p", "nsfw_checker": "Off", "name": "cover", "image_urls": ""}, from_csv=True
    )
    assert request == TextToImage(prompt="p", nsfw_checker=False)
    assert name == "cover"
    with pytest.raises(ValueError, match="name: must be a string"):
        request_from_fields({"prompt": "p", "name": 3}, from_csv=False)
    with pytest.raises(ValueError, match="prompt: is required"):
        request_from_fields({"image_size": IMAGE_SIZES[0]}, from_csv=False)
    with pytest.raises(ValueError, match="image_urls: must hold 1 to 10"):
        request_from_fields({"prompt": "p", "image_urls": []}, from_csv=False)


def test_counting_rows_leaves_the_file_at_its_start(tmp_path: Path) -> None:
    path = tmp_path / "requests.txt"  # no telling suffix: sniffed from the first byte
    path.write_bytes(b'\n{"prompt": "a"}\n\n{"prompt": "b"}\n')
    file, rows, total = open_batch_file(path)
    with file:
        assert total == 2
        assert [row.line for row in rows] == [2, 4]
    path.write_bytes(b'prompt\n"a\nb"\nc\n')
    file, rows, total = open_batch_file(path)
    with file:
        assert total == 2
        assert [row.line for row in rows] == [2, 4]
    with io.BytesIO(b"prompt\n" + b"x" * 200_000 + b"\n") as broken:
        assert count_rows(broken, is_csv=True) == 0
        assert broken.tell() == 0
