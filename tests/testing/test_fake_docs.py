"""The examples of docs/testing.md run as written, on asyncio and trio, in a fresh pytest."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "testing.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE)


def plugin_args() -> list[str]:
    """Load our pytest plugin the way a user's pytest would: by its entry point."""
    names = {ep.name: ep.value for ep in entry_points(group="pytest11")}
    autoload = not os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD")
    if names.get("nanobanana") == "nanobanana_async.testing._pytest_plugin" and autoload:
        return []
    return ["-p", "anyio", "-p", "nanobanana_async.testing._pytest_plugin"]  # pragma: no cover


def test_every_example_of_the_testing_guide_runs(tmp_path: Path) -> None:
    blocks = python_blocks(DOC.read_text(encoding="utf-8"))
    assert len(blocks) >= 8
    tests = 0
    # The guide's conftest (the block that only sets the backends) is the run's conftest.
    [conftest] = [b for b in blocks if "def anyio_backend" in b and "def test_" not in b]
    assert "virtual_time(request.param)" in conftest
    (tmp_path / "conftest.py").write_text(conftest, encoding="utf-8")
    for number, block in enumerate(blocks):
        if block is not conftest:
            (tmp_path / f"test_doc_example_{number}.py").write_text(block, encoding="utf-8")
        tests += len(re.findall(r"^(?:async )?def test_", block, flags=re.MULTILINE))
    path = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "error"]
    completed = subprocess.run(
        [*command, *plugin_args(), "--durations=5", str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output
    assert f"{tests * 2} passed" in output, output
