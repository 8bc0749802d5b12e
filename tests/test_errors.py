"""The exception tree and the choice of class from an error code."""

from __future__ import annotations

import re

import pytest

import nanobanana_async as nb
from nanobanana_async import (
    ActiveTaskLimitError,
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    DecodeError,
    DownloadError,
    InsufficientCreditsError,
    InvalidRequestError,
    NanoBananaError,
    RateLimitError,
    ServerError,
    Task,
    TaskFailedError,
    TaskNotFoundError,
    TaskState,
    UnprocessableEntityError,
    WaitTimeoutError,
)
from nanobanana_async._errors import error_for_status


def test_the_tree() -> None:
    assert issubclass(InvalidRequestError, ValueError)
    assert issubclass(APITimeoutError, APIConnectionError)
    assert issubclass(WaitTimeoutError, TimeoutError)
    status_errors = [
        BadRequestError, AuthenticationError, InsufficientCreditsError, TaskNotFoundError,
        ActiveTaskLimitError, UnprocessableEntityError, RateLimitError, ServerError,
    ]  # fmt: skip
    for cls in status_errors:
        assert issubclass(cls, APIStatusError)
    roots = [
        InvalidRequestError, APIConnectionError, APIStatusError, TaskFailedError,
        WaitTimeoutError, DownloadError, DecodeError,
    ]  # fmt: skip
    for cls in roots:
        assert cls.__bases__[0] is NanoBananaError


def test_every_error_class_is_exported_and_named_error() -> None:
    exported = {name for name in nb.__all__ if isinstance(getattr(nb, name), type)}
    errors = {n for n in exported if issubclass(getattr(nb, n), BaseException)}
    assert all(name.endswith("Error") for name in errors)
    assert {cls.__name__ for cls in NanoBananaError.__subclasses__()} <= errors
    assert {cls.__name__ for cls in APIStatusError.__subclasses__()} <= errors
    import builtins

    assert not errors & set(dir(builtins))


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        (400, BadRequestError),
        (401, AuthenticationError),
        (402, InsufficientCreditsError),
        (404, TaskNotFoundError),
        (409, ActiveTaskLimitError),
        (422, UnprocessableEntityError),
        (429, RateLimitError),
        (500, ServerError),
        (502, ServerError),
        (504, ServerError),
        (418, APIStatusError),
        (403, APIStatusError),
    ],
)
def test_error_for_status_picks_the_class(code: int, cls: type[APIStatusError]) -> None:
    error = error_for_status(code, "msg", http_status=code, data={"x": 1}, request_id="r-1")
    assert type(error) is cls
    assert error.code == code
    assert error.message == "msg"
    assert error.data == {"x": 1}
    assert error.http_status == code
    assert error.request_id == "r-1"
    assert str(error) == f"{code}: msg"


def test_error_in_a_200_envelope_keeps_both_numbers() -> None:
    error = error_for_status(402, "Insufficient credits", http_status=200)
    assert isinstance(error, InsufficientCreditsError)
    assert (error.code, error.http_status) == (402, 200)


def test_rate_limit_error_carries_retry_after() -> None:
    data = {"retryAfter": 3, "limit": 5, "tier": "basic", "windowSeconds": 1}
    error = error_for_status(429, "slow down", http_status=429, data=data, retry_after=3.0)
    assert isinstance(error, RateLimitError)
    assert error.retry_after == 3.0
    assert error.data == data
    assert RateLimitError("x", code=429, http_status=429).retry_after is None


def test_status_error_without_message() -> None:
    error = APIStatusError("", code=503, http_status=503)
    assert str(error) == "503"


def test_status_error_repr_names_what_matters() -> None:
    error = BadRequestError("bad prompt", code=400, http_status=400, request_id="rid")
    assert repr(error) == (
        "BadRequestError(code=400, message='bad prompt', http_status=400, request_id='rid')"
    )


def test_invalid_request_error_names_the_field() -> None:
    error = InvalidRequestError("image_urls[2]", "must be https")
    assert error.field == "image_urls[2]"
    assert str(error) == "image_urls[2]: must be https"


def test_task_failed_error() -> None:
    task = Task(task_id="t1", state=TaskState.FAIL, fail_code="500", fail_message="NSFW")
    error = TaskFailedError(task)
    assert error.task is task
    assert (error.fail_code, error.fail_message) == ("500", "NSFW")
    assert str(error) == "task t1 failed [500]: NSFW"
    bare = TaskFailedError(Task(task_id="t2", state=TaskState.FAIL))
    assert bare.fail_code is None
    assert str(bare) == "task t2 failed: no reason given"


def test_wait_timeout_error() -> None:
    error = WaitTimeoutError("t1", 2.5)
    assert error.task_id == "t1"
    assert error.task is None
    assert str(error) == "task t1 did not finish within 2.5 s"
    task = Task(task_id="t1", state=TaskState.QUEUING, raw_state="queuing")
    with_task = WaitTimeoutError("t1", 600.0, task)
    assert with_task.task is task
    assert str(with_task) == "task t1 did not finish within 600 s (last state: queuing)"


def test_download_error_status() -> None:
    assert DownloadError("gone", status=404).status == 404
    assert DownloadError("refused").status is None


def test_the_docs_page_draws_the_same_tree_as_the_docstring() -> None:
    """docs/reference/errors.md and _errors.py's docstring show one tree."""
    import pathlib

    from nanobanana_async import _errors

    doc = _errors.__doc__ or ""
    start = doc.index("    NanoBananaError\n")
    tree = [line[4:] for line in doc[start : doc.index("\n\n", start)].splitlines()]
    page = (pathlib.Path(__file__).parent.parent / "docs/reference/errors.md").read_text()
    block = page[page.index("```text\n") + 8 :]
    drawn = block[: block.index("```")].splitlines()
    assert [line.replace('"fail"', "``fail``") for line in drawn] == tree


def test_the_tree_names_every_error_class_and_its_true_parent() -> None:
    """Every exception class of the package is in the tree, under its real base class."""
    import nanobanana_async as nb
    from nanobanana_async import _errors

    doc = _errors.__doc__ or ""
    lines = doc[doc.index("    NanoBananaError\n") :].split("\n\n")[0].splitlines()
    depth_of: dict[str, int] = {}
    parent_of: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    for line in lines:
        match = re.search(r"([A-Z][A-Za-z]+Error)", line)
        if match is None:
            continue
        name, depth = match.group(1), match.start()
        while stack and stack[-1][0] >= depth:
            stack.pop()
        if stack:
            parent_of[name] = stack[-1][1]
        depth_of[name] = depth
        stack.append((depth, name))
    classes = {
        name for name in nb.__all__
        if isinstance(getattr(nb, name), type) and issubclass(getattr(nb, name), nb.NanoBananaError)
    }  # fmt: skip
    assert classes == set(depth_of)
    for name, parent in parent_of.items():
        assert getattr(nb, parent) in getattr(nb, name).__mro__[1:], (name, parent)
