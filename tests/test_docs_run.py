"""Every Python block of the README and the docs runs as written, unless marked as not run.

A block is a complete program, run in a fresh interpreter with ``NANOBANANA_API_KEY`` and
``NANOBANANA_BASE_URL`` pointing at a fake provider on loopback (100 times faster than the
real service), in a folder holding a ``prompts.txt``. A block that is only a fragment (or needs
a server, Redis, or a key of its own) says so with an HTML comment on the line before its
fence, which the rendered page hides::

    <!-- not run: a fragment of the example above -->

``docs/testing.md`` is not read here: its blocks are pytest files, run by
``tests/testing/test_fake_docs.py``.
"""

from __future__ import annotations

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


def test_every_block_that_claims_to_run_runs(tmp_path: Path) -> None:
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
        failures: list[str] = []
        # Four at a time: each is a fresh interpreter, mostly waiting on the fake.
        for start in range(0, len(blocks), 4):
            running = []
            for number, block in enumerate(blocks[start : start + 4], start):
                folder = tmp_path / f"block-{number}"
                folder.mkdir()
                (folder / "prompts.txt").write_text("a banana\n\ntwo bananas\nthree bananas\n")
                process = subprocess.Popen(
                    # A resource left open is shown on stderr, and fails the block.
                    [
                        *(sys.executable, "-W", "error::DeprecationWarning"),
                        *("-W", "always::ResourceWarning", "-c", block.code),
                    ],
                    cwd=folder,
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                running.append((block, process))
            for block, process in running:
                try:
                    _, stderr = process.communicate(timeout=120)
                except subprocess.TimeoutExpired:  # pragma: no cover - a failure's detail
                    process.kill()
                    _, stderr = process.communicate()
                if process.returncode != 0 or "ResourceWarning" in stderr:
                    failures.append(f"{block}: {stderr.strip().splitlines()[-2:]}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_fences_are_balanced(page: Path) -> None:
    assert page.read_text(encoding="utf-8").count("\n```") % 2 == 0
