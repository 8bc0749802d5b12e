"""The ``nanobanana`` command line, against a fake provider on loopback.

Commands reach a `FakeNanoBanana` served on loopback from a background thread of this process
(a fresh one per test) through ``NANOBANANA_API_KEY`` and ``NANOBANANA_BASE_URL``, so the tests
can look at what the fake received. Most run `main` in this process (`InProcess`: the
environment and folder patched, stdout and stderr captured, and no file of the folder left
open); the suite turns a resource left open into an error there, as a subprocess's stderr shows
it. Importing the command line under coverage costs a second of CPU per process, so only what
needs a real process runs as ``python -m nanobanana_async ...``:

* ``--help``, one ``generate`` end to end, and the ``demo``: the real entry point
  (``__main__``, ``sys.argv``), each process ending with no ``ResourceWarning`` on its stderr;
* Ctrl-C in a batch: a real SIGINT, the journal kept, the rerun paying nothing twice;
* importing the library imports no command-line dependency: a fresh interpreter's modules.

The batch-file readers are also tested on their own, for the corner cases of CSV and JSONL.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import signal
import sqlite3
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from support import files_open_in

from nanobanana_async import (
    IMAGE_SIZES,
    AsyncNanoBanana,
    ImageToImage,
    LocalImage,
    PollPolicy,
    RetryPolicy,
    TextToImage,
)
from nanobanana_async.cli import _app, _batch, _commands, main
from nanobanana_async.cli._exit import CliError, leaf, redact
from nanobanana_async.cli._progress import limits_line
from nanobanana_async.cli._rows import (
    BadRow,
    count_rows,
    csv_rows,
    image_item,
    jsonl_rows,
    open_batch_file,
    request_from_fields,
)
from nanobanana_async.testing import FakeNanoBanana, FakeStats
from nanobanana_async.testing._images import jpeg_bytes, png_bytes

KEY = "sk-test"
Popen = subprocess.Popen[str]
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


@pytest.fixture
def served(portal: BlockingPortal) -> Iterator[Served]:
    """The fake of the 'basic' tier, 100 times faster than the real service."""
    with serve(portal, FakeNanoBanana(api_key=KEY, time_scale=0.01)) as served:
        yield served


def env_for(served: Served | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NANOBANANA_")}
    env.update(COLUMNS="200", TERM="dumb", PYTHONIOENCODING="utf-8")
    # A resource the command leaves open is shown on its stderr, which `finish` checks.
    env.update(PYTHONWARNINGS="always::ResourceWarning")
    if served is not None:
        env.update(NANOBANANA_API_KEY=KEY, NANOBANANA_BASE_URL=served.base_url)
    env.update(extra)
    return env


Result = subprocess.CompletedProcess[str]


def images_in(folder: Path) -> list[Path]:
    """The images saved in ``folder`` (not its gallery page nor its journal)."""
    return sorted(path for path in folder.iterdir() if path.suffix in (".png", ".jpg", ".webp"))


def start(args: Sequence[str | Path], served: Served | None, cwd: Path, **env: str) -> Popen:
    return subprocess.Popen(
        [*PYTHON, *map(str, args)],
        env=env_for(served, **env),
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: Popen) -> Result:
    stdout, stderr = process.communicate(timeout=60)
    assert "ResourceWarning" not in stderr, stderr
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def nanobanana(*args: str | Path, served: Served | None, cwd: Path, **env: str) -> Result:
    """Run one command to its end."""
    return finish(start(args, served, cwd, **env))


@contextlib.contextmanager
def logging_restored() -> Iterator[None]:
    """Put back the logging set up by ``--verbose`` (`logging.basicConfig` with ``force``).

    Left in place, the next command in this process would log its requests to its stderr.
    """
    root, ours = logging.getLogger(), logging.getLogger("nanobanana_async")
    handlers, level, our_level = root.handlers[:], root.level, ours.level
    try:
        yield
    finally:
        for handler in root.handlers:
            if handler not in handlers:
                handler.close()
        root.handlers[:] = handlers
        root.setLevel(level)
        ours.setLevel(our_level)


@attrs.define
class InProcess:
    """Runs `main` in this process, as `nanobanana` runs it in a subprocess, without the
    imports a new interpreter pays for: the environment of `env_for` (``NANOBANANA_*``,
    ``COLUMNS`` and ``env``) and the folder patched, stdout and stderr captured, the logging
    of ``--verbose`` undone.

    The command's client polls and backs off on the fake's time scale (a hundredth of the
    provider's without a fake), as the demo's does: with the default policies the first poll
    waits a real second for tasks the fake ends in a hundredth of that, and a refused
    connection is tried again seconds later. The commands run in processes keep the defaults."""

    monkeypatch: pytest.MonkeyPatch
    capsys: pytest.CaptureFixture[str]

    def __call__(self, *args: str | Path, served: Served | None, cwd: Path, **env: str) -> Result:
        with self.monkeypatch.context() as patch, logging_restored():
            scale = 0.01 if served is None else served.fake.time_scale
            client = partial(
                AsyncNanoBanana,
                poll=PollPolicy().scaled(scale),
                retry=RetryPolicy().scaled(scale),
            )
            patch.setattr(_commands, "AsyncNanoBanana", client)
            for name in [name for name in os.environ if name.startswith("NANOBANANA_")]:
                patch.delenv(name)
            for name, value in env_for(served, **env).items():
                if name.startswith("NANOBANANA_") or name == "COLUMNS" or name in env:
                    patch.setenv(name, value)
            patch.chdir(cwd)
            code = main([str(arg) for arg in args])
        # Whatever became of the command (refused rows, errors, Ctrl-C), it closed every file
        # it opened in its folder (the batch file, the journal, images): none is left to the
        # collector.
        assert files_open_in(cwd) == []
        out, err = self.capsys.readouterr()
        return subprocess.CompletedProcess([str(arg) for arg in args], code, out, err)


@pytest.fixture
def in_process(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> InProcess:
    return InProcess(monkeypatch, capsys)


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
        "import nanobanana_async, nanobanana_async.testing, nanobanana_async.__main__; "
        "print(sorted((cli & set(sys.modules)) - before))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path
    )
    assert result.stdout.strip() == "[]"


def test_without_the_cli_extra_main_says_what_to_install(
    tmp_path: Path, in_process: InProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "typer", None)  # `import typer` raises ImportError
    result = in_process("demo", served=None, cwd=tmp_path)
    assert result.returncode == 1
    assert "pip install 'nanobanana-async[cli]'" in one_error_line(result)


def test_help_version_and_usage_errors(tmp_path: Path, in_process: InProcess) -> None:
    helped = nanobanana("--help", served=None, cwd=tmp_path)
    assert helped.returncode == 0
    for command in ("generate", "edit", "batch", "status", "download", "demo"):
        assert command in helped.stdout
    version = in_process("--version", served=None, cwd=tmp_path)
    assert version.returncode == 0
    assert version.stdout.startswith("nanobanana-async ")
    unknown = in_process("generate", "a banana", "--colour", "red", served=None, cwd=tmp_path)
    assert unknown.returncode == 2
    assert "--colour" in unknown.stderr


# -- generate, edit, status, download ---------------------------------------------------------


def test_generate_and_edit_save_the_images_asked_for(
    served: Served, tmp_path: Path, in_process: InProcess
) -> None:
    urls = ["https://example.com/a.png", "https://example.com/b.png"]
    # The one command run end to end in a process of its own: the real entry point.
    plain = nanobanana("generate", "a banana", "--out", "images", served=served, cwd=tmp_path)
    wide = in_process(
        "generate", "a wide banana", "--size", "16:9", "--format", "jpeg", "--no-nsfw-checker",
        served=served, cwd=tmp_path,
    )  # fmt: skip
    edited = in_process(
        "edit", "make it gold", "--image", urls[0], "-i", urls[1], "-o", "edits",
        served=served, cwd=tmp_path,
    )  # fmt: skip
    for result in (plain, wide, edited):
        assert result.returncode == 0, result.stderr
        assert "succeeded" in result.stderr
    assert served.stats().tasks_created == 3

    [printed] = plain.stdout.splitlines()
    path = tmp_path / printed
    assert path.parent == tmp_path / "images"
    assert path.suffix == ".png"
    assert_image(path)

    path = tmp_path / wide.stdout.strip()
    assert path.suffix == ".jpg"
    assert_image(path)
    task = served.portal.call(lambda: served.fake.tasks[path.stem])
    assert task.body["input"] == {
        "prompt": "a wide banana",
        "image_size": "16:9",
        "output_format": "jpeg",
        "nsfw_checker": False,
    }

    path = tmp_path / edited.stdout.strip()
    assert path.parent == tmp_path / "edits"
    assert_image(path)
    task = served.portal.call(lambda: served.fake.tasks[path.stem])
    assert task.model == "nano-banana-image-to-image"
    assert task.body["input"]["image_urls"] == urls


INVALID = [
    (["generate", "a banana", "--size", "7:3"], "image_size: must be one of"),
    (["generate", "a banana", "--format", "jpg"], "write 'jpeg'"),
    (["generate", "   "], "prompt: is required"),
    (["generate", "a banana", "--timeout", "0"], "--timeout must be more than 0"),
    (["edit", "gold", "--image", "http://example.com/a.png"], "image_urls[0]"),
    (["edit", "gold", "--image", "/home/me/a.png"], "no such file"),
    (["edit", "gold", "--image", "notes.png"], "not a JPEG, PNG or WEBP"),
    (["edit", "gold", "--image", "photo.png"], "--image-host s3://bucket/prefix"),
    (["edit", "gold", "--image", "photo.png", "--image-host", "gs://b"], "s3://bucket/prefix"),
]


def test_invalid_requests_are_one_line_exit_2_and_send_nothing(
    served: Served, tmp_path: Path, in_process: InProcess
) -> None:
    (tmp_path / "notes.png").write_text("not a picture")
    (tmp_path / "photo.png").write_bytes(png_bytes((1, 2, 3)))
    for args, message in INVALID:
        result = in_process(*args, served=served, cwd=tmp_path)
        assert result.returncode == 2, args
        assert message in one_error_line(result)
    assert served.stats().create_requests == 0


def test_key_and_connection_errors_are_one_line(
    served: Served, tmp_path: Path, in_process: InProcess
) -> None:
    wrong = "sk-WRONG-0xDEADBEEF"
    bad_generate = in_process(
        "--api-key", wrong, "generate", "a banana", served=served, cwd=tmp_path
    )
    missing = in_process("generate", "a banana", served=None, cwd=tmp_path)
    unreachable = in_process(
        "--api-key", KEY, "--base-url", "http://127.0.0.1:9", "status", "task_1",
        served=None, cwd=tmp_path,
    )  # fmt: skip
    bad_status = in_process("--api-key", wrong, "status", "task_1", served=served, cwd=tmp_path)
    assert missing.returncode == 3
    line = one_error_line(missing)
    assert "no API key" in line
    assert "--api-key" in line
    assert "NANOBANANA_API_KEY" in line
    for refused in (bad_generate, bad_status):
        assert refused.returncode == 3
        assert "API key was refused" in one_error_line(refused)
        assert wrong not in refused.stderr + refused.stdout
    assert served.stats().tasks_created == 0
    assert unreachable.returncode == 1
    assert "could not reach the API" in one_error_line(unreachable)


def test_unknown_tasks_are_exit_1_and_verbose_never_logs_the_key(
    served: Served, tmp_path: Path, in_process: InProcess
) -> None:
    status = in_process("status", "task_does_not_exist", served=served, cwd=tmp_path)
    verbose = in_process("--verbose", "status", "task_nope", served=served, cwd=tmp_path)
    download = in_process("download", "task_does_not_exist", served=served, cwd=tmp_path)
    for result in (status, download):
        assert result.returncode == 1
        assert "task 'task_does_not_exist' not found" in one_error_line(result)
    assert verbose.returncode == 1
    assert "recordInfo" in verbose.stderr
    assert "error: task 'task_nope' not found" in verbose.stderr
    assert KEY not in verbose.stderr + verbose.stdout


def test_no_wait_then_download_and_status(
    served: Served, tmp_path: Path, in_process: InProcess
) -> None:
    created = in_process("generate", "a banana later", "--no-wait", served=served, cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    task_id = created.stdout.strip()
    assert task_id in served.portal.call(lambda: list(served.fake.tasks))

    waited = in_process("download", task_id, "--wait", "--out", "dl", served=served, cwd=tmp_path)
    status = in_process("status", task_id, served=served, cwd=tmp_path)
    assert waited.returncode == 0, waited.stderr
    path = tmp_path / waited.stdout.strip()
    assert path == tmp_path / "dl" / f"{task_id}.png"
    assert_image(path)
    url = f"{served.base_url}/files/{task_id}/0.png"
    assert status.returncode == 0, status.stderr
    assert "success" in status.stdout
    assert url in status.stdout

    again = in_process("download", task_id, "--out", "dl2", served=served, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert_image(tmp_path / again.stdout.strip())
    as_json = in_process("status", task_id, "--json", served=served, cwd=tmp_path)
    record = json.loads(as_json.stdout)
    assert record["task_id"] == task_id
    assert record["state"] == "success"
    assert record["urls"] == [url]
    assert served.stats().tasks_created == 1


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

CSV = (
    "prompt,image_urls,image_size,nsfw_checker\n"
    '"a cat, sitting",,1:1,yes\n'
    "gold,https://example.com/a.png | https://example.com/b.png,4:3,\n"
    "a bad size,,7:3,\n"
    '"two\nlines",https://example.com/a.png https://example.com/c.png,,false\n'
    "not sure,,,maybe\n"
)


def test_batch_files_name_bad_rows_by_line_and_never_send_them(
    served: Served, tmp_path: Path, in_process: InProcess
) -> None:
    (tmp_path / "requests.jsonl").write_text(JSONL, encoding="utf-8")
    (tmp_path / "requests.csv").write_text(CSV, encoding="utf-8")
    jsonl = in_process("batch", "requests.jsonl", "--out", "out", served=served, cwd=tmp_path)
    csv = in_process("batch", "requests.csv", "--out", "out-csv", served=served, cwd=tmp_path)
    assert jsonl.returncode == 2, jsonl.stderr
    assert "line 4  invalid: is not valid JSON" in jsonl.stderr
    assert "line 5  invalid: image_size: must be one of" in jsonl.stderr
    assert 'line 7  invalid: must be a JSON object with a "prompt"' in jsonl.stderr
    assert "line 8  invalid: unknown field 'size'" in jsonl.stderr
    assert "Batch summary" in jsonl.stdout
    assert "4 invalid" in jsonl.stdout
    saved = sorted(path.name for path in images_in(tmp_path / "out"))
    assert saved == ["line-0001.png", "line-0006.png", "wide.jpg"]

    assert csv.returncode == 2, csv.stderr
    assert "line 4  invalid: image_size: must be one of" in csv.stderr
    assert "line 7  invalid: nsfw_checker: must be true or false, got 'maybe'" in csv.stderr
    saved_csv = sorted(path.name for path in images_in(tmp_path / "out-csv"))
    assert saved_csv == ["line-0002.png", "line-0003.png", "line-0005.png"]

    for path in [*images_in(tmp_path / "out"), *images_in(tmp_path / "out-csv")]:
        assert_image(path)
    for result in (jsonl, csv):
        assert "Traceback" not in result.stderr
    stats = served.stats()
    assert stats.tasks_created == 6
    assert stats.invalid == 0  # nothing invalid reached the provider
    edits = served.portal.call(
        lambda: sorted(
            tuple(task.body["input"]["image_urls"])
            for task in served.fake.tasks.values()
            if "image_urls" in task.body["input"]
        )
    )
    assert edits == [
        ("https://example.com/a.png",),
        ("https://example.com/a.png", "https://example.com/b.png"),
        ("https://example.com/a.png", "https://example.com/c.png"),
    ]


def test_a_csv_quote_never_closed_stops_the_batch_before_anything_is_sent(
    served: Served, tmp_path: Path, in_process: InProcess
) -> None:
    rows = "".join(f"banana {i},1:1\n" for i in range(5))
    (tmp_path / "r.csv").write_text(
        f'prompt,aspect_ratio\n{rows}"a banana, at sunset,16:9\n{rows}', encoding="utf-8"
    )
    result = in_process("batch", "r.csv", served=served, cwd=tmp_path)
    assert result.returncode == 2
    assert one_error_line(result) == (
        "error: r.csv: line 7: the row starting here has a quote that is never closed, "
        "so no row after it can be read; nothing was sent"
    )
    assert served.stats().create_requests == 0


def test_ragged_and_nul_csv_rows_are_invalid_and_the_others_run(
    served: Served, tmp_path: Path, in_process: InProcess
) -> None:
    (tmp_path / "r.csv").write_bytes(
        b"prompt,aspect_ratio\nfine,16:9\nshort\nlong,1:1,extra\nnul\x00,1:1\nend,1:1\n"
    )
    result = in_process("batch", "r.csv", served=served, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "line 3  invalid: has 1 field but the header has 2" in result.stderr
    assert "line 4  invalid: has 3 fields but the header has 2" in result.stderr
    assert "line 5  invalid: contains a NUL byte" in result.stderr
    assert "3 invalid" in result.stdout
    prompts = served.portal.call(
        lambda: sorted(task.body["input"]["prompt"] for task in served.fake.tasks.values())
    )
    assert prompts == ["end", "fine"]


def test_batch_saves_and_journals_by_default_and_the_same_command_resumes(
    served: Served, tmp_path: Path, in_process: InProcess
) -> None:
    (tmp_path / "r.jsonl").write_text('{"prompt": "one"}\n{"prompt": "two"}\n', encoding="utf-8")
    first = in_process("batch", "r.jsonl", served=served, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    out = tmp_path / "r-out"
    assert [path.name for path in images_in(out)] == ["line-0001.png", "line-0002.png"]
    assert (out / "journal.sqlite").is_file()
    assert "Gallery: r-out/index.html" in first.stderr
    page = (out / "index.html").read_text(encoding="utf-8")
    assert 'src="line-0001.png"' in page
    assert ">two</p>" in page
    for task_id in journal_task_ids(out / "journal.sqlite").values():
        assert task_id in page

    again = in_process("batch", "r.jsonl", "--quiet", served=served, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert served.stats().create_requests == 2  # nothing created twice
    assert "from the journal" in again.stdout
    assert len(images_in(out)) == 2

    urls = in_process("batch", "r.jsonl", "--no-save", "--no-journal", served=served, cwd=tmp_path)
    assert urls.returncode == 0, urls.stderr
    assert urls.stderr.count(f"{served.base_url}/files/") == 2
    assert served.stats().create_requests == 4
    assert not (tmp_path / "r.journal").exists()


def test_batch_input_errors_are_one_line_and_send_nothing(
    served: Served, tmp_path: Path, in_process: InProcess
) -> None:
    missing = in_process("batch", "missing.jsonl", served=served, cwd=tmp_path)
    assert missing.returncode == 2
    assert "cannot read missing.jsonl: No such file or directory" in one_error_line(missing)

    (tmp_path / "folder.jsonl").mkdir()
    (tmp_path / "empty.jsonl").write_text("\n\n", encoding="utf-8")
    (tmp_path / "r.csv").write_text("prompt,size\na banana,1:1\n", encoding="utf-8")
    (tmp_path / "r.jsonl").write_text('{"prompt": "a"}\n{"prompt": "b"}\n', encoding="utf-8")
    for args, message in [
        (["folder.jsonl"], "cannot read folder.jsonl: Is a directory"),
        (["empty.jsonl"], "empty.jsonl holds no requests"),
        (["r.csv"], "r.csv: line 1: unknown column 'size'"),
        (["r.jsonl", "--journal", "r.csv"], "cannot use the journal r.csv"),
        (["r.jsonl", "--tier", "platinum"], "tier: unknown tier 'platinum'"),
    ]:
        result = in_process("batch", *args, served=served, cwd=tmp_path)
        assert result.returncode == 2, args
        assert message in one_error_line(result)
    assert served.stats().create_requests == 0

    refused = in_process("--api-key", "sk-nope", "batch", "r.jsonl", served=served, cwd=tmp_path)
    assert refused.returncode == 3
    line = one_error_line(refused)
    assert "API key was refused" in line
    assert "2 requests were not sent" in line


def test_batch_with_a_journal_resumes_without_creating_again(
    served: Served, tmp_path: Path, in_process: InProcess
) -> None:
    lines = "".join(json.dumps({"prompt": f"banana {i}"}) + "\n" for i in range(6))
    (tmp_path / "r.jsonl").write_text(lines, encoding="utf-8")
    args = ("batch", "r.jsonl", "--journal", "j.db", "--out", "out", "--tier", "basic")
    first = in_process(*args, served=served, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    (tmp_path / "out" / "line-0003.png").unlink()
    second = in_process(*args, served=served, cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert served.stats().create_requests == 6
    assert second.stderr.count("(from the journal)") == 6
    assert len(images_in(tmp_path / "out")) == 6
    assert_image(tmp_path / "out" / "line-0003.png")


def test_local_images_go_through_the_image_host(
    served: Served, tmp_path: Path, s3_endpoint: str, in_process: InProcess
) -> None:
    aws = {
        "AWS_ENDPOINT_URL": s3_endpoint,
        "AWS_ACCESS_KEY_ID": "test-access-key",
        "AWS_SECRET_ACCESS_KEY": "test-secret-key",
        "AWS_REGION": "us-east-1",
    }
    (tmp_path / "photo.png").write_bytes(png_bytes((200, 100, 0)))
    rows = tmp_path / "rows"
    rows.mkdir()
    (rows / "pics").mkdir()
    (rows / "pics" / "cat.jpg").write_bytes(jpeg_bytes((10, 200, 30)))
    lines = [{"prompt": f"cat {i}", "image_urls": ["pics/cat.jpg"]} for i in range(2)]
    (rows / "r.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    env = {"NANOBANANA_IMAGE_HOST": "s3://pictures/cli-batch", **aws}
    edited = in_process(
        "edit", "gold", "--image", "./photo.png", "--image-host", "s3://pictures/cli",
        served=served, cwd=tmp_path, **env,
    )  # fmt: skip
    batch = in_process("batch", "rows/r.jsonl", "--out", "out", served=served, cwd=tmp_path, **env)
    assert edited.returncode == 0, edited.stderr
    assert batch.returncode == 0, batch.stderr
    assert_image(tmp_path / edited.stdout.strip())
    tasks = served.portal.call(lambda: [t.body["input"] for t in served.fake.tasks.values()])
    sent = sorted(url for task in tasks for url in task["image_urls"])
    assert len(sent) == 3
    assert all(url.startswith(f"{s3_endpoint}/pictures/cli") for url in sent)
    assert served.stats().images_fetched == 3
    assert served.stats().images_refused == 0


class Throttle:
    """A monotonic clock running at ``speed`` times real time; the speed may change."""

    def __init__(self, speed: float) -> None:
        self._speed = speed
        self._lock = threading.Lock()
        self._at = time.monotonic()
        self._value = 0.0

    def __call__(self) -> float:
        with self._lock:
            now = time.monotonic()
            self._value += (now - self._at) * self._speed
            self._at = now
            return self._value

    @property
    def speed(self) -> float:
        return self._speed

    @speed.setter
    def speed(self, speed: float) -> None:
        self()  # the time so far at the old speed
        with self._lock:
            self._speed = speed


def journal_task_ids(path: Path) -> dict[int, str]:
    if not path.exists():
        return {}
    with contextlib.closing(sqlite3.connect(path)) as db:
        try:
            rows = db.execute("SELECT idx, task_id FROM jobs WHERE task_id IS NOT NULL")
            return dict(rows.fetchall())
        except sqlite3.OperationalError:  # created, but the schema not yet committed
            return {}


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT is a POSIX signal")
@pytest.mark.usefixtures("interruptible")
def test_ctrl_c_keeps_the_journal_and_the_rerun_pays_nothing_twice(
    portal: BlockingPortal, tmp_path: Path, in_process: InProcess
) -> None:
    # The fake's time stands almost still until Ctrl-C, so no task can end before it, however
    # slow the machine; then it runs as at time_scale=0.1, for the rerun.
    clock = Throttle(speed=0.001)
    fake = FakeNanoBanana(api_key=KEY, time_scale=0.1, seed=3, clock=clock)
    with serve(portal, fake) as slow:
        lines = "".join(json.dumps({"prompt": f"slow banana {i}"}) + "\n" for i in range(10))
        (tmp_path / "r.jsonl").write_text(lines, encoding="utf-8")
        args = ["batch", "r.jsonl"]  # saved in r-out/, journaled there, by default
        process = start(args, slow, tmp_path)
        deadline = time.monotonic() + 60
        while (
            not journal_task_ids(tmp_path / "r-out" / "journal.sqlite")
            and time.monotonic() < deadline
        ):
            time.sleep(0.02)
        process.send_signal(signal.SIGINT)
        interrupted = finish(process)
        assert interrupted.returncode == 130, interrupted.stderr
        assert "interrupted:" in interrupted.stderr
        assert "run the same command again: nanobanana batch r.jsonl" in (interrupted.stderr)
        assert "Traceback" not in interrupted.stderr
        kept = journal_task_ids(tmp_path / "r-out" / "journal.sqlite")
        assert kept
        assert slow.stats().tasks_created < 10

        clock.speed = 1.0
        resumed = in_process(*args, served=slow, cwd=tmp_path)
        assert resumed.returncode == 0, resumed.stderr
        stats = slow.stats()
        assert stats.tasks_created == 10
        assert stats.duplicates == 0
        final = journal_task_ids(tmp_path / "r-out" / "journal.sqlite")
        assert final.items() >= kept.items()  # the tasks created before Ctrl-C were resumed
        assert len(list((tmp_path / "r-out").glob("line-*.png"))) == 10


# -- demo ----------------------------------------------------------------------------------


def test_demo_writes_real_images_without_a_key_or_network(tmp_path: Path) -> None:
    result = nanobanana("demo", served=None, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    images = images_in(tmp_path / "nanobanana-demo")
    assert len(images) >= 10
    for image in images:
        assert_image(image)
    assert "Batch summary" in result.stdout
    assert "active-task limit" in result.stdout
    assert "fake provider on http://127.0.0.1:" in result.stderr


# -- failures and interruptions, in-process ---------------------------------------------------


def outcome_by_prompt(body: dict[str, Any]) -> float:
    """Tasks whose prompt says "slow" take a long while; the others a moment."""
    return 10_000.0 if "slow" in body["input"]["prompt"] else 1.0


@pytest.fixture
def moody(portal: BlockingPortal) -> Iterator[Served]:
    """A fake whose tasks fail or hang when their prompt says so, with one credit left."""
    fake = FakeNanoBanana(
        api_key=KEY,
        time_scale=0.01,
        duration=outcome_by_prompt,
        fail_rate=lambda body: "fail" in body["input"]["prompt"],
        fail_codes=[("500", "Internal error, please try again later.")],
    )
    with serve(portal, fake) as served:
        yield served


def test_failed_and_unfinished_tasks_are_exit_1(
    moody: Served, tmp_path: Path, in_process: InProcess
) -> None:
    failing = in_process("generate", "fail me", "--no-wait", served=moody, cwd=tmp_path)
    slow = in_process("generate", "slow me", "--no-wait", served=moody, cwd=tmp_path)
    failed_id, slow_id = failing.stdout.strip(), slow.stdout.strip()
    time.sleep(0.1)

    result = in_process("download", failed_id, served=moody, cwd=tmp_path)
    assert result.returncode == 1
    assert f"task {failed_id} failed [500]: Internal error" in one_error_line(result)
    result = in_process("status", failed_id, served=moody, cwd=tmp_path)
    assert result.returncode == 0
    assert "fail code" in result.stdout
    assert "Internal error" in result.stdout
    result = in_process("download", slow_id, served=moody, cwd=tmp_path)
    assert result.returncode == 1
    assert "is not finished yet (" in one_error_line(result)
    assert "pass --wait" in result.stderr
    result = in_process("generate", "slow again", "--timeout", "0.2", served=moody, cwd=tmp_path)
    assert result.returncode == 1
    line = result.stderr.splitlines()[-1]
    assert "did not finish within 0.2 s" in line
    assert "it may still finish: nanobanana download task_" in line


def test_a_batch_with_failed_and_timed_out_tasks_is_exit_1(
    moody: Served, tmp_path: Path, in_process: InProcess
) -> None:
    rows = ["a banana", "fail this banana", "a slow banana"]
    (tmp_path / "r.jsonl").write_text(
        "".join(json.dumps({"prompt": prompt}) + "\n" for prompt in rows), encoding="utf-8"
    )
    (tmp_path / "out" / "line-0001.png").mkdir(parents=True)  # in the way of the image
    result = in_process(
        "batch", "r.jsonl", "--out", "out", "--timeout", "1.6", served=moody, cwd=tmp_path
    )
    assert result.returncode == 1
    assert "line 1  task_" in result.stderr
    assert "not saved:" in result.stderr
    assert "task failed [500]: Internal error" in result.stderr
    assert "did not finish within 1.6 s" in result.stderr
    assert "1 not saved" in result.stdout


def test_a_batch_that_runs_out_of_credits_stops_creating_exit_3(
    moody: Served, tmp_path: Path, in_process: InProcess
) -> None:
    moody.portal.call(setattr, moody.fake, "credits", 1)
    lines = "".join(json.dumps({"prompt": f"banana {i}"}) + "\n" for i in range(4))
    (tmp_path / "r.jsonl").write_text(lines, encoding="utf-8")
    result = in_process("batch", "r.jsonl", "--max-active", "1", served=moody, cwd=tmp_path)
    assert result.returncode == 3
    assert result.stderr.count("error: ") == 1
    assert "error: the account is out of credits (402: Insufficient credits)" in result.stderr
    assert "3 requests were not sent" in result.stderr
    assert moody.stats().tasks_created == 1


def test_many_invalid_rows_are_listed_up_to_twenty(
    served: Served, tmp_path: Path, in_process: InProcess
) -> None:
    (tmp_path / "r.jsonl").write_text('{"prompt": ""}\n' * 23, encoding="utf-8")
    result = in_process("batch", "r.jsonl", "--quiet", served=served, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout.count("prompt: is required") == 20
    assert "and 3 more" in result.stdout
    assert served.stats().create_requests == 0


def test_an_os_error_is_one_line_exit_1(
    served: Served, tmp_path: Path, in_process: InProcess
) -> None:
    (tmp_path / "taken").write_text("not a folder")
    (tmp_path / "r.jsonl").write_text('{"prompt": "a banana"}\n', encoding="utf-8")
    result = in_process("batch", "r.jsonl", "--out", "taken", served=served, cwd=tmp_path)
    assert result.returncode == 1
    assert one_error_line(result) == "error: File exists: taken"
    result = in_process("generate", "a banana", "--out", "taken", served=served, cwd=tmp_path)
    assert result.returncode == 1
    [task_id] = served.portal.call(lambda: list(served.fake.tasks))
    assert result.stderr.splitlines()[-1] == (
        f"error: task {task_id} succeeded but its image was not saved (File exists: taken); "
        f"try again: nanobanana download {task_id} --out DIR"
    )


def test_unexpected_errors_are_one_line_unless_verbose(
    served: Served, tmp_path: Path, in_process: InProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: object, **kwargs: object) -> int:
        raise RuntimeError("a bug")

    monkeypatch.setattr(_app, "show_status", broken)
    monkeypatch.setattr(_app, "setup_logging", lambda *args: None)
    result = in_process("status", "task_1", served=served, cwd=tmp_path)
    assert result.returncode == 1
    assert one_error_line(result) == (
        "error: unexpected RuntimeError: a bug (run with --verbose for the traceback)"
    )
    with pytest.raises(RuntimeError, match="a bug"):
        in_process("--verbose", "status", "task_1", served=served, cwd=tmp_path)

    async def leaves(*args: object, **kwargs: object) -> int:
        raise SystemExit(5)

    monkeypatch.setattr(_app, "show_status", leaves)
    assert in_process("status", "task_1", served=served, cwd=tmp_path).returncode == 5


def test_exception_groups_are_reported_by_their_first_error() -> None:
    group = ExceptionGroup("outer", [ExceptionGroup("inner", [KeyError("k"), ValueError()])])
    assert isinstance(leaf(group), KeyError)
    assert leaf(ValueError("plain")).args == ("plain",)
    # A group of only interruptions and exits is reported by its first member.
    exits = BaseExceptionGroup("exits", [KeyboardInterrupt(), SystemExit(3)])
    assert isinstance(leaf(exits), KeyboardInterrupt)
    # A real error wins over an interruption beside it.
    mixed = BaseExceptionGroup("mixed", [KeyboardInterrupt(), OSError("disk")])
    assert isinstance(leaf(mixed), OSError)


def interrupt(*args: object, **kwargs: object) -> Any:
    raise KeyboardInterrupt


def test_ctrl_c_in_generate_names_the_task_to_fetch_later(
    served: Served, tmp_path: Path, in_process: InProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(AsyncNanoBanana, "wait_for_result", interrupt)
    result = in_process("generate", "a banana", served=served, cwd=tmp_path)
    assert result.returncode == 130
    [task_id] = served.portal.call(lambda: list(served.fake.tasks))
    assert result.stderr.splitlines()[-1] == (
        f"error: interrupted; task {task_id} goes on at the provider: "
        f"nanobanana download {task_id} --wait"
    )
    monkeypatch.setattr(AsyncNanoBanana, "create_task", interrupt)
    result = in_process("generate", "a banana", served=served, cwd=tmp_path)
    assert result.returncode == 130
    assert one_error_line(result) == "error: interrupted; no task was created"
    monkeypatch.setattr(AsyncNanoBanana, "get_task", interrupt)
    result = in_process("status", "task_1", served=served, cwd=tmp_path)
    assert result.returncode == 130
    assert one_error_line(result) == "error: interrupted"


def test_ctrl_c_in_a_batch_without_a_journal_says_a_rerun_pays_again(
    served: Served, tmp_path: Path, in_process: InProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_batch._BatchView, "take", interrupt)
    (tmp_path / "r.jsonl").write_text('{"prompt": "a"}\n{"prompt": "b"}\n', encoding="utf-8")
    result = in_process("batch", "r.jsonl", "--no-journal", served=served, cwd=tmp_path)
    assert result.returncode == 130
    # Both outcomes may be counted before the first is taken: the count says 1 or 2.
    assert re.search(r"error: interrupted: [12] of 2 done", result.stderr), result.stderr
    assert "No journal was kept (--no-journal)" in result.stderr
    assert "leave --no-journal out" in result.stderr


@pytest.mark.parametrize("key_args", [["--api-key", KEY], [f"--api-key={KEY}"]])
def test_ctrl_c_in_a_batch_never_repeats_the_key_in_the_resume_hint(
    served: Served,
    tmp_path: Path,
    in_process: InProcess,
    monkeypatch: pytest.MonkeyPatch,
    key_args: list[str],
) -> None:
    monkeypatch.setattr(_batch._BatchView, "take", interrupt)
    (tmp_path / "r.jsonl").write_text('{"prompt": "a"}\n{"prompt": "b"}\n', encoding="utf-8")
    args = [*key_args, "batch", "r.jsonl", "--journal", "j.db"]
    monkeypatch.setattr(sys, "argv", ["nanobanana", *args])  # as the shell would run it
    result = in_process(*args, served=served, cwd=tmp_path)
    assert result.returncode == 130
    assert KEY not in result.stderr + result.stdout
    hint = result.stderr.splitlines()[-1]
    assert "set NANOBANANA_API_KEY to your key" in hint
    assert hint.endswith("without --api-key: nanobanana batch r.jsonl --journal j.db")


def test_the_resume_command_leaves_out_every_api_key_option() -> None:
    assert _batch.resume_command(["--api-key", "k1", "-v", "--api-key=k2", "batch", "f"]) == (
        "nanobanana -v batch f",
        True,
    )
    assert _batch.resume_command(["batch", "my file.csv", "--", "--api-key"]) == (
        "nanobanana batch 'my file.csv' -- --api-key",
        False,
    )


@pytest.fixture
def echoing(portal: BlockingPortal) -> Iterator[Served]:
    """A fake whose tasks all fail with a message that echoes the key, as a careless server."""
    fake = FakeNanoBanana(
        api_key=KEY,
        time_scale=0.01,
        duration=1.0,
        fail_rate=1.0,
        fail_codes=[("401", f"Invalid API key provided: Bearer {KEY}")],
    )
    with serve(portal, fake) as served:
        yield served


def test_a_key_echoed_by_the_server_is_never_printed(
    echoing: Served, tmp_path: Path, in_process: InProcess
) -> None:
    generated = in_process("generate", "a banana", served=echoing, cwd=tmp_path)
    assert generated.returncode == 1
    line = generated.stderr.splitlines()[-1]
    assert line.startswith("error: task task_")
    assert line.endswith(" failed [401]: Invalid API key provided: Bearer ***")
    (tmp_path / "r.jsonl").write_text('{"prompt": "a"}\n', encoding="utf-8")
    batch = in_process("--api-key", KEY, "batch", "r.jsonl", served=echoing, cwd=tmp_path)
    assert batch.returncode == 1
    assert "Invalid API key provided: Bearer ***" in batch.stderr  # the line of the request
    assert "Bearer ***" in batch.stdout  # the failures table
    [task_id] = echoing.portal.call(lambda: list(echoing.fake.tasks)[:1])
    status = in_process("--verbose", "status", task_id, served=echoing, cwd=tmp_path)
    as_json = in_process("status", task_id, "--json", served=echoing, cwd=tmp_path)
    assert "Bearer ***" in status.stdout
    assert json.loads(as_json.stdout)["fail_message"] == "Invalid API key provided: Bearer ***"
    for result in (generated, batch, status, as_json):
        assert KEY not in result.stdout + result.stderr


def test_redact_replaces_the_key_as_typed_and_as_sent() -> None:
    assert redact("key sk-1 and sk-1 again", "sk-1") == "key *** and *** again"
    assert redact("Bearer sk-1.", " sk-1 ") == "Bearer ***."
    assert redact("nothing to hide", None) == "nothing to hide"
    assert redact("nothing to hide", "") == "nothing to hide"


@pytest.mark.skipif(not Path("/proc/self/mem").exists(), reason="needs Linux's /proc")
def test_a_file_that_opens_but_cannot_be_read_is_an_input_error() -> None:
    with pytest.raises(CliError, match="cannot read /proc/self/mem"):
        open_batch_file(Path("/proc/self/mem"))


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
        (6, BadRow(6, "has 4 fields but the header has 2")),
        (7, BadRow(7, "is not valid UTF-8")),
    ]


def test_malformed_csv_rows_are_named_by_line_and_never_become_a_prompt() -> None:
    text = (
        b"prompt,aspect_ratio,name\n"
        b"fine,16:9,ok\n"
        b"short,16:9\n"  # one cell too few: the values may sit under the wrong columns
        b"nul\x00byte,1:1,\n"
        b'"a 12" screen,1:1,\n'  # a closing quote followed by more text
        b"after,1:1,\n"
        b'"never closed,1:1,\nlost,1:1,\nlost too,1:1,\n'
    )
    rows = rows_of(text, is_csv=True)
    assert rows[:3] == [
        (2, TextToImage(prompt="fine", image_size="16:9")),
        (3, BadRow(3, "has 2 fields but the header has 3")),
        (4, BadRow(4, "contains a NUL byte")),
    ]
    assert rows[3][0] == 5
    assert isinstance(rows[3][1], BadRow)
    assert "a closing quote must be followed by a comma" in rows[3][1].reason
    assert rows[4] == (6, TextToImage(prompt="after", image_size="1:1"))
    assert rows[5:] == [
        (7, BadRow(7, "has a quote that is never closed (lines 7 to 9, the end of the file)"))
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


def test_rows_and_image_options_take_paths_the_library_takes_only_as_paths(
    tmp_path: Path,
) -> None:
    """The library reads files only from `Path`s: the command line makes its strings such."""
    (tmp_path / "pics").mkdir()
    (tmp_path / "pics" / "cat.png").write_bytes(png_bytes((1, 2, 3)))
    url = "https://a.example/x.png"
    assert image_item(url, tmp_path) == url
    assert image_item("pics/cat.png") == Path("pics/cat.png")
    assert image_item("pics/cat.png", tmp_path) == tmp_path / "pics" / "cat.png"
    request, _ = request_from_fields(
        {"prompt": "p", "image_urls": ["pics/cat.png", url]}, from_csv=False, base=tmp_path
    )
    assert isinstance(request, ImageToImage)
    image, sent = request.image_urls
    assert isinstance(image, LocalImage)
    assert (image.path, sent) == (tmp_path / "pics" / "cat.png", url)


def test_counting_rows_leaves_the_file_at_its_start(tmp_path: Path) -> None:
    path = tmp_path / "requests.data"  # no telling suffix: sniffed from the first line
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
        assert count_rows(broken, is_csv=True) == 1  # csv_rows reports that row as invalid
        assert broken.tell() == 0


def test_the_progress_line_shows_the_estimates_and_their_probes() -> None:
    from nanobanana_async import BatchStatistics

    stats = BatchStatistics(
        submitted=10,
        created=8,
        running=4,
        succeeded=4,
        failed=0,
        resumed=0,
        polls=20,
        polls_per_task=5.0,
        conflicts=3,
        rate_limited=1,
        max_active=4,
        max_active_known=True,
        create_rate=5.0,
        query_rate=None,
        elapsed=12.0,
        max_active_neighbours=6,
        max_active_probed_ago=2.4,
        create_probed_ago=None,
    )
    text = limits_line(stats, width=200).plain
    assert text == (
        "limits: max active 4, 6 to neighbours (probed 2s ago), create 5/s, 409s 3, 429s 1"
    )
    quiet = attrs.evolve(stats, max_active_neighbours=0, max_active_probed_ago=None)
    assert limits_line(quiet).plain.startswith("limits: max active 4, create 5/s")
