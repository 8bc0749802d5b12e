"""Reading a task: its ``recordInfo`` record as time passes, and its result file once done.

Authentication and the rate windows of ``recordInfo`` are checked before (see `_routing`).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote_plus

from ._images import render_image
from ._reply import Reply, dumps
from ._tasks import FakeTask, TaskTable

__all__ = ["FILES_PREFIX", "TaskReader"]

FILES_PREFIX = "/files/"


def _query_value(query: str, name: str) -> str:
    """The first value of ``name`` in a query string ("" if absent); cheaper than parse_qs."""
    for part in query.split("&"):
        key, _, value = part.partition("=")
        if unquote_plus(key) == name:
            return unquote_plus(value)
    return ""


def _extension(output_format: str) -> str:
    return "jpg" if output_format == "jpeg" else "png"


class TaskReader:
    """Answers ``recordInfo`` queries and result-file downloads from the task table.

    Args:
        tasks: The tasks.
        epoch_ms: The wall-clock time, in Unix milliseconds, when the fake started (records
            report ``createTime`` and ``completeTime`` as Unix milliseconds).
    """

    __slots__ = ("_epoch_ms", "_tasks")

    def __init__(self, tasks: TaskTable, *, epoch_ms: float) -> None:
        self._tasks = tasks
        self._epoch_ms = epoch_ms

    def query(self, now: float, query: str, base_url: str) -> tuple[Reply, str | None]:
        """Answer a ``recordInfo`` at ``now``; result URLs start with ``base_url``."""
        task_id = _query_value(query, "taskId").strip()
        if not task_id:
            return Reply.envelope(400, "taskId is required"), None
        index = self._tasks.find(task_id)
        if index is None:
            return Reply.envelope(404, "Task not found"), None
        record = self._record(index, now, base_url)
        return Reply.envelope(200, "success", record), task_id

    def _record(self, index: int, now: float, base_url: str) -> dict[str, Any]:
        tasks = self._tasks
        task_id = tasks.task_id(index)
        state = tasks.state_at(index, now)
        create_time = round(self._epoch_ms + tasks.created[index] * 1000)
        cost_time = complete_time = result_json = fail_code = fail_msg = None
        if state == "generating":
            result_json = ""
        elif state in ("success", "fail"):
            cost_time = round(tasks.duration[index] * 1000)
            complete_time = create_time + cost_time
            if state == "success":
                extension = _extension(tasks.output_format(index))
                url = f"{base_url.rstrip('/')}{FILES_PREFIX}{task_id}/0.{extension}"
                result_json = dumps({"resultUrls": [url]})
            else:
                fail_code, fail_msg = tasks.fail_codes[tasks.fail[index]]
                if tasks.complete_time_missing(index):
                    complete_time = None
        return {
            "taskId": task_id,
            "model": tasks.model(index),
            "state": state,
            "param": tasks.params[index],
            "resultJson": result_json,
            "failCode": fail_code,
            "failMsg": fail_msg,
            "costTime": cost_time,
            "completeTime": complete_time,
            "createTime": create_time,
        }

    def result(self, now: float, path: str) -> tuple[Reply, str | None]:
        """Serve the file at ``path`` (``/files/<task id>/0.png``) if it exists at ``now``."""
        parts = path[len(FILES_PREFIX) :].split("/")
        index = self._tasks.find(parts[0]) if len(parts) == 2 else None
        if index is None or self._tasks.state_at(index, now) != "success":
            return Reply.envelope(404, "File not found"), None
        task = FakeTask(self._tasks, index)
        if parts[1] != f"0.{_extension(task.output_format)}":
            return Reply.envelope(404, "File not found"), task.task_id
        data = render_image(task.prompt, task.output_format)
        content_type = "image/jpeg" if task.output_format == "jpeg" else "image/png"
        return Reply(200, data, content_type=content_type), task.task_id
