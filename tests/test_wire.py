"""The wire format survives every variation the provider's family sends."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from support import SEED_RECORD

from nanobanana_async import DecodeError, ImageToImage, Task, TaskState, TextToImage
from nanobanana_async._wire import (
    Envelope,
    _structure_task,
    parse_envelope,
    request_body,
    structure_task,
    structure_task_id,
)

URL = "https://cdn.example.com/result.png"


def record(**fields: Any) -> dict[str, Any]:
    return {**SEED_RECORD, **fields}


class TestRequestBody:
    def test_text_to_image_matches_the_seed_example(self) -> None:
        body = request_body(TextToImage(prompt="a banana", image_size="16:9"))
        assert body == {
            "model": "nano-banana-text-to-image",
            "input": {
                "prompt": "a banana",
                "image_size": "16:9",
                "output_format": "png",
                "nsfw_checker": True,
            },
        }
        json.dumps(body)  # JSON-ready

    def test_image_to_image_sends_a_list_of_urls(self) -> None:
        body = request_body(
            ImageToImage(prompt="gold", image_urls=[URL], output_format="jpeg", nsfw_checker=False)
        )
        assert body["model"] == "nano-banana-image-to-image"
        assert body["input"] == {
            "prompt": "gold",
            "image_urls": [URL],
            "image_size": "1:1",
            "output_format": "jpeg",
            "nsfw_checker": False,
        }


class TestEnvelope:
    def test_msg(self) -> None:
        envelope = parse_envelope(b'{"code": 200, "msg": "success", "data": {"taskId": "t"}}')
        assert envelope == Envelope(code=200, message="success", data={"taskId": "t"})

    def test_message_instead_of_msg(self) -> None:
        envelope = parse_envelope(b'{"code": 401, "message": "bad key"}')
        assert envelope == Envelope(code=401, message="bad key", data=None)

    def test_msg_wins_when_both(self) -> None:
        envelope = parse_envelope(b'{"code": 400, "msg": "a", "message": "b"}')
        assert envelope is not None
        assert envelope.message == "a"

    def test_non_string_message_is_dropped(self) -> None:
        envelope = parse_envelope(b'{"code": 400, "msg": 5, "message": null}')
        assert envelope is not None
        assert envelope.message == ""

    @pytest.mark.parametrize(
        ("raw", "code"),
        [("200", 200), ('"429"', 429), (' " 500 " ', 500), ("404.0", 404), ("true", None),
         ('"abc"', None), ("1.5", None), ("null", None), ("[]", None)],
    )  # fmt: skip
    def test_code_forms(self, raw: str, code: int | None) -> None:
        envelope = parse_envelope(f'{{"code": {raw}}}'.encode())
        assert envelope is not None
        assert envelope.code == code

    @pytest.mark.parametrize(
        "content",
        [b"", b"<html>502 Bad Gateway</html>", b"[1, 2]", b'"text"', b"\xff\xfe", b"[" * 100_000],
    )
    def test_not_a_json_object(self, content: bytes) -> None:
        assert parse_envelope(content) is None


class TestStructureTask:
    def test_the_seed_example(self) -> None:
        task = structure_task(SEED_RECORD)
        assert task.task_id == "task_xxxxxxxxxxxxx"
        assert task.model == "nano-banana-image-to-image"
        assert task.state is TaskState.SUCCESS
        assert task.raw_state == "success"
        assert task.urls == (URL,)
        assert task.fail_code is None
        assert task.fail_message is None
        assert task.cost_time == 12000.0
        assert task.create_time == datetime(2025, 9, 11, 9, 49, 24, 490000, tzinfo=UTC)
        assert task.elapsed == 12.0
        assert task.param is not None
        assert task.param["input"]["image_urls"] == ["https://cdn.example.com/input.png"]

    @pytest.mark.parametrize("result_json", [None, "", "   "])
    def test_unfinished_result_json(self, result_json: Any) -> None:
        task = structure_task(record(state="generating", resultJson=result_json))
        assert task.state is TaskState.GENERATING
        assert task.urls == ()

    def test_result_json_as_an_object(self) -> None:
        assert structure_task(record(resultJson={"resultUrls": [URL]})).urls == (URL,)

    def test_result_json_double_encoded(self) -> None:
        twice = json.dumps(json.dumps({"resultUrls": [URL, URL + "?2"]}))
        assert structure_task(record(resultJson=twice)).urls == (URL, URL + "?2")

    def test_a_single_url_string(self) -> None:
        assert structure_task(record(resultJson={"resultUrls": URL})).urls == (URL,)

    def test_no_result_urls_member(self) -> None:
        assert structure_task(record(resultJson="{}")).urls == ()

    def test_garbage_result_json_is_no_urls(self) -> None:
        # Not JSON at all: the task reads as having no URLs (the client then reports it).
        assert structure_task(record(resultJson="{not json")).urls == ()

    @pytest.mark.parametrize(
        ("result_json", "match"),
        [
            ("[1, 2]", "resultJson is not an object"),
            ("42", "resultJson is not an object"),
            ({"resultUrls": {"a": URL}}, "resultUrls is not a list"),
            ({"resultUrls": [URL, 7]}, "a result URL is not a string"),
        ],
    )
    def test_unreadable_success(self, result_json: Any, match: str) -> None:
        with pytest.raises(DecodeError, match=match):
            structure_task(record(resultJson=result_json))

    def test_odd_result_json_is_ignored_before_success(self) -> None:
        assert structure_task(record(state="queuing", resultJson="[1]")).urls == ()

    def test_param_with_a_double_encoded_input(self) -> None:
        param = json.dumps({"model": "m", "input": json.dumps({"prompt": "p"})})
        task = structure_task(record(param=param))
        assert task.param == {"model": "m", "input": {"prompt": "p"}}

    @pytest.mark.parametrize("param", [None, "", "not json", "[1]", 3])
    def test_param_that_is_not_an_object(self, param: Any) -> None:
        assert structure_task(record(param=param)).param is None

    def test_param_without_input(self) -> None:
        assert structure_task(record(param='{"model": "m"}')).param == {"model": "m"}

    def test_uuid_and_numeric_task_ids(self) -> None:
        task_id = str(uuid.uuid4())
        assert structure_task(record(taskId=task_id)).task_id == task_id
        assert structure_task(record(taskId=12345)).task_id == "12345"

    def test_missing_task_id_uses_the_one_asked_for(self) -> None:
        data = record()
        del data["taskId"]
        assert structure_task(data, task_id="asked").task_id == "asked"
        assert structure_task(record(taskId=""), task_id="asked").task_id == "asked"
        assert structure_task(record(taskId="own"), task_id="asked").task_id == "own"

    @pytest.mark.parametrize("task_id", [None, "", True, [1], {"a": 1}])
    def test_no_usable_task_id(self, task_id: Any) -> None:
        with pytest.raises(DecodeError, match="no taskId"):
            structure_task(record(taskId=task_id))

    @pytest.mark.parametrize("data", [None, [], "task", 3])
    def test_data_that_is_not_an_object(self, data: Any) -> None:
        with pytest.raises(DecodeError, match="not an object"):
            structure_task(data, task_id="t")

    @pytest.mark.parametrize(
        ("raw", "state"),
        [("waiting", TaskState.WAITING), ("queuing", TaskState.QUEUING),
         ("generating", TaskState.GENERATING), ("SUCCESS", TaskState.SUCCESS),
         ("fail", TaskState.FAIL), ("paused", TaskState.UNKNOWN), ("", TaskState.UNKNOWN),
         (None, TaskState.UNKNOWN), (3, TaskState.UNKNOWN)],
    )  # fmt: skip
    def test_states(self, raw: Any, state: TaskState) -> None:
        task = structure_task(record(state=raw, resultJson=None))
        assert task.state is state
        assert task.raw_state == ("" if raw is None else str(raw))

    def test_unknown_state_keeps_the_raw_value(self) -> None:
        task = structure_task(record(state="moderating", resultJson=None))
        assert task.state is TaskState.UNKNOWN
        assert task.raw_state == "moderating"
        assert not task.is_finished

    def test_fail_with_code_and_message(self) -> None:
        task = structure_task(
            record(state="fail", resultJson=None, failCode="500", failMsg="NSFW", completeTime=None)
        )
        assert task.state is TaskState.FAIL
        assert (task.fail_code, task.fail_message) == ("500", "NSFW")
        assert task.complete_time is None
        assert task.elapsed is None

    @pytest.mark.parametrize(
        ("fail_code", "expected"),
        [(None, None), ("", None), (422, "422"), (True, None), ({"x": 1}, None)],
    )
    def test_fail_code_forms(self, fail_code: Any, expected: str | None) -> None:
        assert structure_task(record(failCode=fail_code)).fail_code == expected

    @pytest.mark.parametrize(
        ("cost", "expected"),
        [(12000, 12000.0), (12.5, 12.5), ("12", 12.0), ("fast", None), (None, None),
         (False, None), (float("inf"), None), ([1], None)],
    )  # fmt: skip
    def test_cost_time_forms(self, cost: Any, expected: float | None) -> None:
        assert structure_task(record(costTime=cost)).cost_time == expected

    @pytest.mark.parametrize("when", [None, 0, -5, "soon", 10**20, float("nan")])
    def test_missing_or_absurd_times(self, when: Any) -> None:
        task = structure_task(record(createTime=when, completeTime=when))
        assert task.create_time is None
        assert task.complete_time is None

    def test_time_as_a_string(self) -> None:
        task = structure_task(record(createTime="1757584164490"))
        assert task.create_time == datetime.fromtimestamp(1757584164.49, tz=UTC)

    def test_a_surprise_inside_the_data_still_surfaces_as_decode_error(self) -> None:
        class Exploding(Mapping[str, Any]):
            def __getitem__(self, key: str) -> Any:
                raise RuntimeError("boom")

            def __iter__(self) -> Iterator[str]:
                return iter(["taskId"])

            def __len__(self) -> int:
                return 1

        with pytest.raises(DecodeError, match="cannot read task data: boom") as info:
            structure_task(Exploding())
        assert isinstance(info.value.__cause__, RuntimeError)

    def test_only_the_task_id_is_required(self) -> None:
        task = structure_task({"taskId": "t"})
        assert task == Task(task_id="t")


class TestStructureTaskId:
    def test_reads_task_id(self) -> None:
        assert structure_task_id({"taskId": "task_1"}) == "task_1"
        assert structure_task_id({"taskId": 7}) == "7"

    @pytest.mark.parametrize("data", [None, {}, {"taskId": None}, {"taskId": ""}, [], "t"])
    def test_no_task_id(self, data: Any) -> None:
        with pytest.raises(DecodeError, match="without a taskId"):
            structure_task_id(data)


# -- property-based: any JSON value as data yields a Task or a DecodeError ---------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
field_values = json_values | st.builds(json.dumps, json_values)
records = st.fixed_dictionaries(
    {},
    optional=dict.fromkeys(
        ("taskId", "model", "state", "param", "resultJson", "failCode", "failMsg", "costTime",
         "completeTime", "createTime"),
        field_values,
    ),
)  # fmt: skip


@given(data=json_values | records, task_id=st.none() | st.text(min_size=1, max_size=8))
def test_any_json_data_yields_a_task_or_decode_error(data: Any, task_id: str | None) -> None:
    try:
        task = structure_task(data, task_id=task_id)
    except DecodeError:
        return
    assert isinstance(task, Task)
    assert task.task_id
    assert isinstance(task.state, TaskState)
    assert all(isinstance(url, str) for url in task.urls)


@given(data=json_values | records)
def test_the_task_hook_itself_raises_nothing_but_decode_error(data: Any) -> None:
    # structure_task turns any surprise into a DecodeError as a last resort; the hook must
    # not need that net.
    with contextlib.suppress(DecodeError):
        _structure_task(data)


@given(data=json_values)
def test_any_json_data_yields_a_task_id_or_decode_error(data: Any) -> None:
    try:
        task_id = structure_task_id(data)
    except DecodeError:
        return
    assert isinstance(task_id, str)
    assert task_id


@given(content=st.binary(max_size=64) | st.builds(lambda v: json.dumps(v).encode(), json_values))
def test_any_body_yields_an_envelope_or_none(content: bytes) -> None:
    envelope = parse_envelope(content)
    assert envelope is None or isinstance(envelope, Envelope)
    if envelope is not None:
        assert isinstance(envelope.message, str)
        assert envelope.code is None or isinstance(envelope.code, int)
