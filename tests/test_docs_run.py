"""Every Python block of the README and the docs runs as written, unless marked as not run.

A block is a complete program, run as ``__main__`` in a namespace of its own with
``NANOBANANA_API_KEY`` and ``NANOBANANA_BASE_URL`` pointing at a fake provider on loopback (100
times faster than the real service), in a fresh folder holding a ``prompts.txt``. A block that
is only a fragment (or needs a server, Redis, or a key of its own) says so with an HTML comment
on the line before its fence, which the rendered page hides::

    <!-- not run: a fragment of the example above -->

``docs/testing.md`` is not read here: its blocks are pytest files, run by
``tests/testing/test_fake_docs.py``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest
from anyio.from_thread import start_blocking_portal

from nanobanana_async.testing import FakeNanoBanana

ROOT = Path(__file__).resolve().parents[1]
KEY = "sk-docs"
PAGES = [
    ROOT / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
    *sorted((ROOT / "docs" / "how-to").glob("*.md")),
]
SKIPPED_PAGES = {ROOT / "docs" / "testing.md"}
_NOT_RUN = re.compile(r"<!--\s*not run\b[^>]*-->\s*$")


@attrs.frozen
class Block:
    page: Path
    line: int
    code: str
    run: bool

    def __str__(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks_of(page: Path) -> Iterator[Block]:
    text = page.read_text(encoding="utf-8")
    for match in re.finditer(r"^```python\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE):
        before = text[: max(match.start() - 1, 0)].rsplit("\n", 1)[-1]  # the line before
        line = text.count("\n", 0, match.start()) + 1
        yield Block(page, line, match.group(1), run=not _NOT_RUN.search(before))


def all_blocks() -> list[Block]:
    return [block for page in PAGES if page not in SKIPPED_PAGES for block in blocks_of(page)]


def test_blocks_marked_not_run_are_few_and_the_rest_are_many() -> None:
    blocks = all_blocks()
    run = [block for block in blocks if block.run]
    assert len(run) >= 15, [str(block) for block in run]
    assert len(run) > len(blocks) // 2


def test_a_marker_only_counts_right_before_its_fence(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "<!-- not run -->\n\n```python\nprint(1)\n```\n"
        "<!-- not run: a fragment -->\n```python\nx\n```\n",
        encoding="utf-8",
    )
    assert [block.run for block in blocks_of(page)] == [True, False]


#: Run in each interpreter: every block it is given, one after the other, each in a namespace
#: and a folder of its own, with the ResourceWarnings it causes; the failures as JSON lines.
_RUNNER = """
import contextlib, gc, io, json, os, sys, traceback, warnings
for folder, name, code in json.loads(sys.stdin.read()):
    os.chdir(folder)
    failure = None
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("always", ResourceWarning)
        warnings.simplefilter("error", DeprecationWarning)
        try:
            exec(compile(code, name, "exec"), {"__name__": "__main__"})
        except BaseException:
            failure = traceback.format_exc().strip().splitlines()[-2:]
        gc.collect()
    left_open = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    if failure or left_open:
        print(json.dumps([name, failure or left_open]), flush=True)
"""

#: Interpreters running blocks side by side: each block mostly waits on the fake.
_INTERPRETERS = 3


def test_every_block_that_claims_to_run_runs(tmp_path: Path) -> None:
    """Each block runs as a program (``__main__``, a namespace of its own, a fresh folder).

    A few interpreters run them all, rather than one interpreter per block, which would spend
    most of the test importing the library again: a block gets a fresh namespace and folder,
    not a fresh interpreter, so what it imports is its own business, but a module another
    block imported is already loaded.
    """
    blocks = [block for block in all_blocks() if block.run]
    fake = FakeNanoBanana(api_key=KEY, time_scale=0.01)
    with (
        start_blocking_portal() as portal,
        portal.wrap_async_context_manager(fake.serve()) as base_url,
    ):
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("NANOBANANA_")},
            "NANOBANANA_API_KEY": KEY,
            "NANOBANANA_BASE_URL": base_url,
            "PYTHONPATH": os.pathsep.join(
                [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
            ),
        }
        work = []
        for number, block in enumerate(blocks):
            folder = tmp_path / f"block-{number}"
            folder.mkdir()
            (folder / "prompts.txt").write_text("a banana\n\ntwo bananas\nthree bananas\n")
            work.append((str(folder), str(block), block.code))
        running = [
            subprocess.Popen(
                [sys.executable, "-c", _RUNNER],
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(_INTERPRETERS)
        ]
        failures: list[str] = []
        for share, process in enumerate(running):
            try:
                stdout, stderr = process.communicate(
                    json.dumps(work[share::_INTERPRETERS]), timeout=300
                )
            except subprocess.TimeoutExpired:  # pragma: no cover - a failure's detail
                process.kill()
                stdout, stderr = process.communicate()
            failures += [": ".join(map(str, json.loads(line))) for line in stdout.splitlines()]
            if process.returncode != 0:  # pragma: no cover - a failure's detail
                failures.append(f"an interpreter ended with {process.returncode}: {stderr}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_fences_are_balanced(page: Path) -> None:
    assert page.read_text(encoding="utf-8").count("\n```") % 2 == 0
