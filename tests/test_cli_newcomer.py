"""A newcomer's first hour with the command line: the demo's gallery, ``fake-server``,
``batch --check``, ``--name`` templates, plain lists of prompts, global options anywhere, and
a progress line that adds up at 80 columns.

The fixtures and helpers are those of ``test_cli`` (a fake provider on loopback per test).
Commands run in this process (``test_cli.InProcess``), except ``fake-server``'s: it is stopped
by a real SIGINT, and must close its sockets before its process ends (no ``ResourceWarning`` on
its stderr). ``test_cli`` runs the demo and a ``generate`` as real processes too.
"""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import test_cli
from rich.console import Console
from test_cli import KEY, PYTHON, InProcess, Served, env_for, images_in, one_error_line

from nanobanana_async import BatchStatistics
from nanobanana_async.cli._args import hoist_global_options
from nanobanana_async.cli._exit import CliError
from nanobanana_async.cli._names import check_template, file_stem
from nanobanana_async.cli._progress import eta_seconds, limits_line, progress_line

# The fixtures of test_cli, used here by name.
portal = test_cli.portal
served = test_cli.served
in_process = test_cli.in_process

# -- the demo's gallery ----------------------------------------------------------------------


def test_the_demo_prints_its_gallery_which_shows_every_request(
    tmp_path: Path, in_process: InProcess
) -> None:
    result = in_process("demo", "--count", "12", served=None, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    gallery = tmp_path / "nanobanana-demo" / "index.html"
    assert str(gallery.relative_to(tmp_path)) in result.stdout
    page = gallery.read_text(encoding="utf-8")
    images = images_in(tmp_path / "nanobanana-demo")
    assert len(images) == 11  # one of the twelve fails on purpose
    for image in images:
        assert f'src="{image.name}"' in page
    assert "a banana surfing a wave at sunset" in page
    assert page.count('class="card failed"') == 1
    assert "task failed [500]" in page
    assert "<b>12</b> requests" in page


# -- fake-server -----------------------------------------------------------------------------


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT is a POSIX signal")
@pytest.mark.usefixtures("interruptible")
def test_fake_server_answers_on_the_printed_url_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [*PYTHON, "fake-server", "--port", "0", "--time-scale", "0.01", "--tier", "free"],
        env=env_for(None),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        settings = dict(process.stdout.readline().strip().split("=", 1) for _ in range(2))
        base_url = settings["NANOBANANA_BASE_URL"]
        key = settings["NANOBANANA_API_KEY"]
        assert base_url.startswith("http://127.0.0.1:")
        headers = {"Authorization": f"Bearer {key}"}
        body = {"model": "nano-banana-text-to-image", "input": {"prompt": "a banana"}}
        created = httpx.post(f"{base_url}/api/v1/jobs/createTask", json=body, headers=headers)
        assert created.status_code == 200
        task_id = created.json()["data"]["taskId"]
        info = httpx.get(
            f"{base_url}/api/v1/jobs/recordInfo", params={"taskId": task_id}, headers=headers
        )
        assert info.json()["data"]["taskId"] == task_id
        refused = httpx.post(f"{base_url}/api/v1/jobs/createTask", json=body)
        assert refused.json()["code"] == 401
    finally:
        process.send_signal(signal.SIGINT)
        _stdout, stderr = process.communicate(timeout=30)
    assert process.returncode in (0, 130), stderr
    assert "Traceback" not in stderr
    assert "ResourceWarning" not in stderr  # the server's sockets are closed, not collected
    assert "fake provider stopped" in stderr


def test_fake_server_refuses_impossible_options(tmp_path: Path, in_process: InProcess) -> None:
    for args, message in [
        (["--tier", "gold"], "--tier: unknown tier 'gold'"),
        (["--fault-rate", "2"], "--fault-rate: must be between 0 and 1, got 2"),
        (["--time-scale", "0"], "--time-scale: must be more than 0"),
    ]:
        result = in_process("fake-server", *args, served=None, cwd=tmp_path)
        assert result.returncode == 2
        assert message in one_error_line(result)


# -- batch --check ---------------------------------------------------------------------------


def test_batch_check_names_the_bad_row_and_sends_nothing(
    served: Served, tmp_path: Path, in_process: InProcess
) -> None:
    rows = [
        {"prompt": "a banana"},
        {"prompt": "two bananas", "image_urls": ["https://example.com/a.png"]},
        {"prompt": "three", "image_size": "7:7"},
        {"prompt": "four"},
    ]
    (tmp_path / "r.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    # No key at all: checking needs none.
    result = in_process("batch", "--check", "r.jsonl", served=None, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout.strip() == (
        "r.jsonl: 3 requests would be sent (1 image-to-image (edit), 2 text-to-image); "
        "1 invalid row. Nothing was sent."
    )
    assert "error: r.jsonl: line 3: image_size: must be one of" in result.stderr
    good = in_process("batch", "r.jsonl", "--check", served=served, cwd=tmp_path)
    assert good.returncode == 2
    assert served.stats().create_requests == 0
    assert not (tmp_path / "r-out").exists()

    (tmp_path / "ok.txt").write_text("a banana\n\nan apple\n", encoding="utf-8")
    fine = in_process("batch", "--check", "ok.txt", served=None, cwd=tmp_path)
    assert fine.returncode == 0, fine.stderr
    assert "ok.txt: 2 requests would be sent (2 text-to-image); 0 invalid rows." in fine.stdout


# -- plain lists of prompts, --name, global options after the command ------------------------


def test_a_text_file_is_one_prompt_per_line_and_name_templates_name_the_files(
    served: Served, tmp_path: Path, in_process: InProcess
) -> None:
    (tmp_path / "prompts").write_text("A banana, surfing!\n\nan apple pie\n", encoding="utf-8")
    result = in_process(
        "batch", "prompts", "--name", "{index:02d}-{slug}", served=served, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    names = [path.name for path in images_in(tmp_path / "prompts-out")]
    assert names == ["01-banana-surfing.png", "02-apple-pie.png"]
    prompts = served.portal.call(
        lambda: sorted(task.body["input"]["prompt"] for task in served.fake.tasks.values())
    )
    assert prompts == ["A banana, surfing!", "an apple pie"]


def test_generate_takes_a_name_and_global_options_after_the_command(
    served: Served, tmp_path: Path, in_process: InProcess
) -> None:
    # The key from the environment, the base URL only from the option after the command.
    result = in_process(
        "generate", "a red fox", "--name", "{slug}-{task_id}", "--base-url", served.base_url, "-v",
        served=None, cwd=tmp_path, NANOBANANA_API_KEY=KEY,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    [task_id] = served.portal.call(lambda: list(served.fake.tasks))
    assert result.stdout.strip() == str(Path(f"red-fox-{task_id}.png"))
    assert "POST /api/v1/jobs/createTask" in result.stderr  # --verbose, after the command
    bad = in_process("generate", "x", "--name", "{prompt}", served=served, cwd=tmp_path)
    assert bad.returncode == 2
    assert "--name: unknown field {prompt}" in one_error_line(bad)


def test_global_options_are_hoisted_before_the_command_but_not_after_a_double_dash() -> None:
    assert hoist_global_options(["generate", "x", "--base-url", "U", "-v", "--api-key=K"]) == [
        "--base-url", "U", "-v", "--api-key=K", "generate", "x",
    ]  # fmt: skip
    assert hoist_global_options(["generate", "--", "-v"]) == ["generate", "--", "-v"]
    assert hoist_global_options(["status", "--base-url"]) == ["status", "--base-url"]


def test_name_templates_are_checked_and_made_safe() -> None:
    assert file_stem("{index:03d}-{slug}", index=7, line=9, prompt="The Cat/Dog", task_id="t")
    assert (
        file_stem("{line}_{name}", index=1, line=9, prompt="a b", task_id="t", name="x/y")
        == "9_x_y"
    )
    assert file_stem("{task_id}", index=1, line=1, prompt="", task_id="../t") == "_t"
    for template, message in [
        ("{nope}", "unknown field {nope}"),
        ("{index", "not a valid template"),
        ("{index:q}", "not a valid template"),
        ("///", "an empty file name"),
    ]:
        with pytest.raises(CliError, match=message.replace("{", r"\{").replace("}", r"\}")):
            check_template(template)


# -- progress ---------------------------------------------------------------------------------


def stats(**changes: object) -> BatchStatistics:
    values: dict[str, object] = {
        "submitted": 160, "created": 150, "running": 9, "succeeded": 118, "failed": 22,
        "resumed": 0, "polls": 900, "polls_per_task": 6.0, "conflicts": 12, "rate_limited": 3,
        "max_active": 5, "max_active_known": True, "create_rate": 4.5, "query_rate": 19.0,
        "elapsed": 280.0, "total": 12000, "on_provider": 5, "waiting": 4,
    }  # fmt: skip
    values.update(changes)
    return BatchStatistics(**values)  # type: ignore[arg-type]


def rendered(width: int, batch: BatchStatistics) -> list[str]:
    console = Console(width=width, file=io.StringIO(), record=True, color_system=None)
    console.print(progress_line(batch, not_saved=1, width=width))
    console.print(limits_line(batch, width=width))
    return console.export_text().splitlines()


def test_the_progress_line_adds_up_and_fits_80_columns() -> None:
    count, limits = rendered(80, stats())
    assert len(count) <= 80
    assert len(limits) <= 80
    assert "140/12000" in count
    assert "118 ok" in count
    assert "23 failed" in count
    assert "5 on provider" in count
    assert "4 waiting" in count
    assert "ETA 6:35:20" in count  # 11860 left at 2 s each
    assert limits.startswith("limits: max active 5, create 4.5/s, poll 19/s")
    wide, _ = rendered(160, stats())
    assert "━" in wide
    assert "11840 queued" in wide
    assert "elapsed" in wide
    narrow, _ = rendered(40, stats())
    assert len(narrow) <= 40
    assert narrow.startswith("140/12000")


def test_eta_needs_a_total_and_something_finished_in_this_run() -> None:
    assert eta_seconds(stats(total=None)) is None
    assert eta_seconds(stats(succeeded=10, failed=0, resumed=10)) is None
    assert eta_seconds(stats(succeeded=10, failed=0, resumed=0, total=20, elapsed=5.0)) == 5.0
    unknown, _ = rendered(80, stats(total=None))
    assert "140/?" in unknown
    assert "ETA -" in unknown
    assert "queued" not in unknown
