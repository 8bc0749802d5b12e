"""The fake's tasks, stored in columns so that 100 000 of them cost a few megabytes."""

from __future__ import annotations

import json
from array import array
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Literal

from ._validation import IMAGE_TO_IMAGE, TEXT_TO_IMAGE

__all__ = [
    "IMAGE_FAIL_CODES",
    "WAITING_FRACTION",
    "FakeTask",
    "FakeTaskState",
    "TaskTable",
    "TaskView",
]

FakeTaskState = Literal["waiting", "generating", "success", "fail"]
"""The states the fake's tasks go through, in order (``success`` or ``fail`` last)."""

WAITING_FRACTION = 0.25
"""The first part of a task's duration is spent ``waiting``, the rest ``generating``."""

IMAGE_FAIL_CODES: tuple[tuple[str, str], ...] = (
    ("400", "Image download failed: an image URL could not be fetched"),
    ("400", "Invalid image: an input image is not a JPEG, PNG or WEBP file of at most 10 MB"),
)
"""How a task fails when its input images cannot be fetched (first) or are not images."""

_IMAGE_TO_IMAGE = 1
_JPEG = 2
_NO_COMPLETE_TIME = 4


class TaskTable:
    """Every task's plan, one column per field; a task is its index.

    Times are seconds since the fake started, on its clock.
    """

    __slots__ = (
        "_elapsed",
        "by_request_id",
        "created",
        "drawn_fail_codes",
        "duration",
        "fail",
        "fail_codes",
        "flags",
        "id_prefix",
        "image_checks",
        "params",
        "params_seen",
        "request_ids",
    )

    def __init__(
        self,
        *,
        id_prefix: str,
        fail_codes: Sequence[tuple[str, str]],
        elapsed: Callable[[], float],
    ) -> None:
        self.id_prefix = id_prefix
        # The codes a failure is drawn from, then those of input images that fail.
        self.fail_codes = (*fail_codes, *IMAGE_FAIL_CODES)
        self.drawn_fail_codes = len(fail_codes)
        # Tasks whose loopback input images are still to be fetched.
        self.image_checks: list[int] = []
        self._elapsed = elapsed
        self.created = array("d")
        self.duration = array("d")
        self.fail = array("h")  # index into fail_codes, -1 for success
        self.flags = bytearray()
        self.params: list[str] = []
        self.request_ids: list[str | None] = []
        self.by_request_id: dict[str, int] = {}
        # The params of all tasks: the strings are shared with `params`, so this costs a slot.
        self.params_seen: set[str] = set()

    def __len__(self) -> int:
        return len(self.params)

    def add(
        self,
        *,
        request_id: str | None,
        param: str,
        model: str,
        output_format: str,
        created_at: float,
        duration: float,
        fail_index: int,
        complete_time_missing: bool,
    ) -> int:
        """Store a new task; return its index."""
        index = len(self.params)
        self.created.append(created_at)
        self.duration.append(duration)
        self.fail.append(fail_index)
        self.flags.append(
            (_IMAGE_TO_IMAGE if model == IMAGE_TO_IMAGE else 0)
            | (_JPEG if output_format == "jpeg" else 0)
            | (_NO_COMPLETE_TIME if complete_time_missing else 0)
        )
        self.params.append(param)
        self.request_ids.append(request_id)
        if request_id:
            self.by_request_id[request_id] = index
        self.params_seen.add(param)
        return index

    def fail_with_image(self, index: int, which: int) -> None:
        """Make the task at ``index`` end in ``fail`` with ``IMAGE_FAIL_CODES[which]``."""
        self.fail[index] = self.drawn_fail_codes + which

    def task_id(self, index: int) -> str:
        """The id of the task at ``index``."""
        return f"{self.id_prefix}{index:08x}"

    def find(self, task_id: str) -> int | None:
        """The index of the task ``task_id``, or ``None`` if there is no such task."""
        suffix = task_id[len(self.id_prefix) :]
        if not task_id.startswith(self.id_prefix) or len(suffix) != 8:
            return None
        try:
            index = int(suffix, 16)
        except ValueError:
            return None
        if index >= len(self.params) or self.task_id(index) != task_id:
            return None
        return index

    def state_at(self, index: int, at: float) -> FakeTaskState:
        """The state of the task at ``index``, ``at`` seconds since the start."""
        created, duration = self.created[index], self.duration[index]
        if at >= created + duration:
            return "fail" if self.fail[index] >= 0 else "success"
        if at >= created + duration * WAITING_FRACTION:
            return "generating"
        return "waiting"

    def now(self) -> float:
        """Seconds since the fake started, on its clock."""
        return self._elapsed()

    def model(self, index: int) -> str:
        """The model of the task at ``index``."""
        return IMAGE_TO_IMAGE if self.flags[index] & _IMAGE_TO_IMAGE else TEXT_TO_IMAGE

    def output_format(self, index: int) -> str:
        """``"png"`` or ``"jpeg"``."""
        return "jpeg" if self.flags[index] & _JPEG else "png"

    def complete_time_missing(self, index: int) -> bool:
        """Whether a failed task reports ``completeTime: null``."""
        return bool(self.flags[index] & _NO_COMPLETE_TIME)


class FakeTask:
    """One task of the fake provider, as planned when it was created (a view, made on demand).

    Times are seconds since the fake started, on its clock (``time_scale`` already applied), so a
    benchmark can compare them with the wall clock.
    """

    __slots__ = ("_index", "_table")

    def __init__(self, table: TaskTable, index: int) -> None:
        self._table = table
        self._index = index

    @property
    def task_id(self) -> str:
        """The task's id."""
        return self._table.task_id(self._index)

    @property
    def request_id(self) -> str | None:
        """The ``X-Request-ID`` the task was created with, if any."""
        return self._table.request_ids[self._index]

    @property
    def param(self) -> str:
        """The create request's body, as the JSON string reported in ``param``."""
        return self._table.params[self._index]

    @property
    def body(self) -> dict[str, Any]:
        """The create request's body, parsed."""
        body: dict[str, Any] = json.loads(self.param)
        return body

    @property
    def prompt(self) -> str:
        """The prompt asked for."""
        prompt: str = self.body["input"]["prompt"]
        return prompt

    @property
    def model(self) -> str:
        """The model asked for."""
        return self._table.model(self._index)

    @property
    def output_format(self) -> str:
        """``"png"`` or ``"jpeg"``."""
        return self._table.output_format(self._index)

    @property
    def created_at(self) -> float:
        """When the task was created, in seconds since the fake started (on its clock)."""
        return self._table.created[self._index]

    @property
    def duration(self) -> float:
        """How long the task runs, in seconds on the fake's clock."""
        return self._table.duration[self._index]

    @property
    def finished_at(self) -> float:
        """When the task ends (``success`` or ``fail``), in seconds since the fake started."""
        return self.created_at + self.duration

    @property
    def failed(self) -> bool:
        """Whether the task ends in ``fail`` (planned when it was created)."""
        return self._table.fail[self._index] >= 0

    @property
    def fail_code(self) -> str | None:
        """The ``failCode`` it reports once it has failed (``None`` for a successful task)."""
        index = self._table.fail[self._index]
        return self._table.fail_codes[index][0] if index >= 0 else None

    @property
    def fail_msg(self) -> str | None:
        """The ``failMsg`` it reports once it has failed (``None`` for a successful task)."""
        index = self._table.fail[self._index]
        return self._table.fail_codes[index][1] if index >= 0 else None

    @property
    def state(self) -> FakeTaskState:
        """The task's state now."""
        return self._table.state_at(self._index, self._table.now())

    def state_at(self, at: float) -> FakeTaskState:
        """The task's state at ``at`` seconds since the fake started."""
        return self._table.state_at(self._index, at)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FakeTask):
            return NotImplemented
        return self._table is other._table and self._index == other._index

    def __hash__(self) -> int:
        return hash((id(self._table), self._index))

    def __repr__(self) -> str:
        return f"<FakeTask {self.task_id} {self.model} {self.state}>"


class TaskView(Mapping[str, FakeTask]):
    """The fake's tasks by id, read-only and live, in creation order."""

    __slots__ = ("_table",)

    def __init__(self, table: TaskTable) -> None:
        self._table = table

    def __getitem__(self, task_id: str) -> FakeTask:
        index = self._table.find(task_id)
        if index is None:
            raise KeyError(task_id)
        return FakeTask(self._table, index)

    def __contains__(self, task_id: object) -> bool:
        return isinstance(task_id, str) and self._table.find(task_id) is not None

    def __iter__(self) -> Iterator[str]:
        return (self._table.task_id(index) for index in range(len(self._table)))

    def __len__(self) -> int:
        return len(self._table)
