"""The wire format: everything that knows how the provider spells things.

* Requests unstructure (once per create, into `CreateBody`) into the provider's
  ``{"model": ..., "input": {...}}`` body.
* Answers arrive in the envelope ``{"code": C, "msg": "...", "data": ...}`` (some servers
  write ``message``). `answer_data` returns ``data`` of a success and raises the error any
  other answer means, whether the code came as the HTTP status or in the body; a 429's wait
  comes from ``data.retryAfter`` or ``Retry-After``, and `limit_hints` reads the limits a
  refusal's body teaches.
* ``recordInfo``'s ``data`` structures into `Task`, surviving every variation seen in the
  field: ``resultJson`` as null, ``""``, a JSON string or an object; ``param`` double-encoded;
  ``failCode`` as string, number or null; numeric ids; missing times.

The cattrs converter earns its place for the request body (one unstructure hook per request
class) and as the one entry point for `Task`; the answer side is hand-written hooks because
every field needs its own tolerance of what the field has been seen to hold, which cattrs'
generated structuring would reject. Anything that cannot be understood raises `DecodeError`,
never another exception.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, cast

import attrs
from cattrs.preconf.json import make_converter

from ._errors import APIStatusError, DecodeError, InvalidRequestError, error_for_status
from ._images import LocalImage
from ._models import ImageToImage, Task, TaskState, TextToImage
from .limits import TIERS

__all__ = [
    "CREATE_PATH",
    "LOCAL_IMAGE_PREFIX",
    "QUERY_PATH",
    "CreateBody",
    "Envelope",
    "LimitHints",
    "answer_data",
    "as_mapping",
    "converter",
    "create_body",
    "limit_hints",
    "opt_number",
    "parse_envelope",
    "request_body",
    "retry_after_seconds",
    "structure_task",
    "structure_task_id",
]

CREATE_PATH = "/api/v1/jobs/createTask"
QUERY_PATH = "/api/v1/jobs/recordInfo"
LOCAL_IMAGE_PREFIX = "local-image:sha256:"
"""How a local image stands in a body until it is published (never sent)."""

converter = make_converter()
"""The private converter; never the global one."""

_TIME_MAX_MS = 253402300799999  # 9999-12-31T23:59:59.999Z, datetime's upper bound
_MAX_RETRY_AFTER = 3600.0  # a larger value is a server bug; never sleep for hours on it
# The most a refusal's body may teach: larger limits and windows are not believed.
_MAX_LEARNED_LIMIT = 1_000_000
_MAX_LEARNED_WINDOW = 86_400.0


@attrs.frozen
class Envelope:
    """The provider's answer envelope."""

    code: int | None
    message: str
    data: Any


def _unstructure_request(request: TextToImage | ImageToImage) -> dict[str, Any]:
    fields: dict[str, Any] = {"prompt": request.prompt}
    if isinstance(request, ImageToImage):
        # A local image stands as its digest until published: a journal's fingerprint (and
        # so a resumed batch's X-Request-ID) depends on the picture, not on a temporary URL.
        fields["image_urls"] = [
            f"{LOCAL_IMAGE_PREFIX}{item.sha256}" if isinstance(item, LocalImage) else item
            for item in request.image_urls
        ]
    fields["image_size"] = request.image_size
    fields["output_format"] = request.output_format
    fields["nsfw_checker"] = request.nsfw_checker
    return {"model": request.model, "input": fields}


converter.register_unstructure_hook(TextToImage, _unstructure_request)
converter.register_unstructure_hook(ImageToImage, _unstructure_request)
# Looked up once: the converter's dispatch on every create costs more than the hook itself.
_UNSTRUCTURE = {cls: converter.get_unstructure_hook(cls) for cls in (TextToImage, ImageToImage)}
# One encoder: `json.dumps` with any option builds a new `JSONEncoder` on every call.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def request_body(request: TextToImage | ImageToImage) -> dict[str, Any]:
    """The JSON body of ``createTask`` for a request."""
    hook = _UNSTRUCTURE.get(type(request))
    body: dict[str, Any] = converter.unstructure(request) if hook is None else hook(request)
    return body


def _dumps(body: dict[str, Any]) -> bytes:
    return _ENCODER.encode(body).encode()


@attrs.frozen
class CreateBody:
    """A create's body, serialised once: the JSON object and the bytes that are sent.

    A body with local ``images`` stands for a request not yet sendable: its ``body`` names
    them by digest (the fingerprint a journal keys on) and `published` makes the body sent.
    """

    request: TextToImage | ImageToImage
    body: dict[str, Any]
    content: bytes
    images: tuple[LocalImage, ...] = ()

    def published(self, urls: Mapping[str, str]) -> CreateBody:
        """The body to send, each local image replaced by its URL (``urls`` by digest)."""
        fields = dict(self.body["input"])
        fields["image_urls"] = [
            urls[url[len(LOCAL_IMAGE_PREFIX) :]] if url.startswith(LOCAL_IMAGE_PREFIX) else url
            for url in fields["image_urls"]
        ]
        body = {**self.body, "input": fields}
        return CreateBody(self.request, body, _dumps(body))


def create_body(request: object) -> CreateBody:
    """Check that ``request`` is a request and serialise it for ``createTask``.

    Raises:
        InvalidRequestError: ``request`` is not a `TextToImage` or `ImageToImage`.
    """
    if not isinstance(request, (TextToImage, ImageToImage)):
        raise InvalidRequestError(
            "request", f"must be a TextToImage or ImageToImage, not {type(request).__name__}"
        )
    body = request_body(request)
    if isinstance(request, ImageToImage) and (images := request.local_images):
        return CreateBody(request, body, b"", images)
    return CreateBody(request, body, _dumps(body))


def as_mapping(value: object) -> Mapping[str, Any] | None:
    """``value`` as a JSON object, or None if it is not one."""
    # A dict first: what JSON decodes to, checked without the ABC's slower isinstance.
    if type(value) is dict or isinstance(value, Mapping):
        return cast("Mapping[str, Any]", value)
    return None


def _as_int_code(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    # isascii: str.isdigit also accepts digits int() refuses ("²"); the length keeps int()
    # within its digit limit. A code is three digits.
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        text = value.strip()
        return int(text) if len(text) <= 9 else None
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _json_object(content: bytes) -> Mapping[str, Any] | None:
    """A body as a JSON object; None when it is not one."""
    try:
        payload = json.loads(content)
    except (ValueError, RecursionError):
        return None
    return as_mapping(payload)


def parse_envelope(content: bytes) -> Envelope | None:
    """Read the envelope from a body; None when the body is not a JSON object."""
    body = _json_object(content)
    return None if body is None else _envelope(body)


def _envelope(body: Mapping[str, Any]) -> Envelope:
    message = body.get("msg")
    if not isinstance(message, str):
        message = body.get("message")
    return Envelope(
        code=_as_int_code(body.get("code")),
        message=message if isinstance(message, str) else "",
        data=body.get("data"),
    )


def answer_data(
    status: int,
    headers: Mapping[str, str],
    content: bytes,
    *,
    reason: str = "",
    request_id: str | None = None,
) -> Any:
    """The ``data`` of a successful answer; raises the error any other answer means.

    Args:
        status: The HTTP status.
        headers: The answer's headers (``content-type`` and ``retry-after`` are read).
        content: The body, already redacted of secrets.
        reason: The HTTP reason phrase, for a message when the body has none.
        request_id: The ``X-Request-ID`` the request carried, kept on the error.

    Raises:
        APIStatusError: The answer is an error (see `error_for_status` for the class).
        DecodeError: A success whose body is not a JSON object.
    """
    body = _json_object(content)
    if body is not None and status < 400:
        # The common answer, a success whose code is a plain number or absent, read without
        # building its `Envelope` (the general path below gives the same data).
        code = body.get("code")
        if code is None or (type(code) is int and (code == 0 or 200 <= code < 300)):
            return body.get("data")
    envelope = None if body is None else _envelope(body)
    code = envelope.code if envelope is not None else None
    if status < 400 and (code is None or code == 0 or 200 <= code < 300):
        if envelope is None:
            raise DecodeError(
                f"HTTP {status} answer is not a JSON object: {content[:200]!r}",
                request_id=request_id,
            )
        return envelope.data
    if code is None or code < 400:
        code = status
    message = envelope.message if envelope is not None else ""
    if not message:
        kind = headers.get("content-type", "").split(";")[0].strip()
        message = reason or f"HTTP {status}"
        message += f" ({kind} body)" if kind else ""
    data = envelope.data if envelope is not None else None
    raise error_for_status(
        code,
        message,
        http_status=status,
        data=data,
        request_id=request_id,
        retry_after=retry_after_seconds(data, headers) if code == 429 else None,
    )


def retry_after_seconds(data: object, headers: Mapping[str, str]) -> float | None:
    """Read how long a 429 asks to wait: ``data.retryAfter``, else ``Retry-After``."""
    body = as_mapping(data)
    if body is not None:
        seconds = _seconds(body.get("retryAfter"))
        if seconds is not None:
            return seconds
    header = headers.get("retry-after")
    if header is None:
        return None
    seconds = _seconds(header)
    if seconds is not None:
        return seconds
    try:
        when = parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _seconds(value: object) -> float | None:
    if isinstance(value, int) and not isinstance(value, bool):
        # An int beyond any float is as absurd as a large one: cap it like the others.
        value = max(-1, min(value, 10**9))
    seconds = opt_number(value)
    if seconds is None or seconds < 0:
        return None
    return min(seconds, _MAX_RETRY_AFTER)


@attrs.frozen
class LimitHints:
    """What a 409's or 429's body says of the key's limits (None where it says nothing).

    Attributes:
        limit: Requests per window (429) or active tasks (409).
        window: The window's length in seconds (429 only).
        active: The key's active tasks, every consumer's (409 only).
        tier: The key's tier, if the body names one of the provider's table (429 only).
    """

    limit: int | None = None
    window: float | None = None
    active: int | None = None
    tier: str | None = None


def limit_hints(error: APIStatusError) -> LimitHints:
    """The limits a refusal teaches, if believable.

    Bigger values than any tier's are a server bug (or hostile), and learning them would
    break the pacing: ``1e400`` is infinite and ``10**400`` does not even convert to a float.
    """
    body = as_mapping(error.data)
    if body is None:
        return LimitHints()
    limit = _positive(body.get("limit"), _MAX_LEARNED_LIMIT)
    window = _positive(body.get("windowSeconds"), _MAX_LEARNED_WINDOW)
    active = _positive(body.get("active"), _MAX_LEARNED_LIMIT)
    tier = body.get("tier")
    return LimitHints(
        None if limit is None else int(limit),
        window,
        None if active is None else int(active),
        tier if isinstance(tier, str) and tier in TIERS else None,
    )


def _positive(value: object, maximum: float) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if 0 < value <= maximum else None


def _json_field(value: object) -> Any:
    """A field the provider sends as a JSON string: decode it once (or twice) if needed."""
    for _ in range(2):
        if not isinstance(value, str):
            return value
        if not value.strip():
            return None
        try:
            value = json.loads(value)
        except (ValueError, RecursionError):
            return None
    return value


def _opt_str(value: object) -> str | None:
    if type(value) is str:  # the usual case, first
        return value or None
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (str, int, float)):
        text = str(value)
        return text or None
    return None


def opt_number(value: object) -> float | None:
    """A finite number from a JSON value (a number or a numeric string), else None."""
    if isinstance(value, bool):
        return None
    try:
        if isinstance(value, (int, float, str)):
            number = float(value)
        else:
            return None
    except (ValueError, OverflowError):  # OverflowError: an int beyond any float
        return None
    return number if math.isfinite(number) else None


def _opt_time(value: object) -> datetime | None:
    millis = opt_number(value)
    if millis is None or not 0 < millis <= _TIME_MAX_MS:
        return None
    return datetime.fromtimestamp(millis / 1000, tz=UTC)


def _result_urls(result: object, state: TaskState) -> tuple[str, ...]:
    mapping = as_mapping(result)
    if mapping is None:
        if state is TaskState.SUCCESS and result is not None:
            raise DecodeError(f"resultJson is not an object: {result!r:.200}")
        return ()
    urls: object = mapping.get("resultUrls")
    if urls is None:
        return ()
    if isinstance(urls, str):
        urls = [urls]
    if not isinstance(urls, list):
        raise DecodeError(f"resultUrls is not a list: {urls!r:.200}")
    checked: list[str] = []
    for url in cast("list[object]", urls):
        if not isinstance(url, str):
            raise DecodeError(f"a result URL is not a string: {url!r:.200}")
        checked.append(url)
    return tuple(checked)


_STATES = {state.value: state for state in TaskState}


def _structure_task(data: object, _cls: object = Task) -> Task:
    record = as_mapping(data)
    if record is None:
        raise DecodeError(f"task data is not an object: {data!r:.200}")
    task_id = _opt_str(record.get("taskId"))
    if task_id is None:
        raise DecodeError("task data carries no taskId")
    raw_state = _opt_str(record.get("state")) or ""
    state = _STATES.get(raw_state.lower(), TaskState.UNKNOWN)
    result = _json_field(record.get("resultJson"))
    param = as_mapping(_json_field(record.get("param")))
    if param is not None and "input" in param:
        param = {**param, "input": _json_field(param["input"])}
    return Task(
        task_id=task_id,
        model=_opt_str(record.get("model")) or "",
        state=state,
        raw_state=raw_state,
        urls=_result_urls(result, state),
        fail_code=_opt_str(record.get("failCode")),
        fail_message=_opt_str(record.get("failMsg")),
        cost_time=opt_number(record.get("costTime")),
        create_time=_opt_time(record.get("createTime")),
        complete_time=_opt_time(record.get("completeTime")),
        param=param,
    )


converter.register_structure_hook(Task, _structure_task)
_STRUCTURE_TASK = converter.get_structure_hook(Task)
"""The converter's hook for `Task`, looked up once (a lookup per answer costs more)."""


def structure_task(data: object, *, task_id: str | None = None) -> Task:
    """Structure ``recordInfo``'s ``data`` into a `Task`.

    Args:
        data: The envelope's ``data`` member.
        task_id: The id that was asked for, used when the answer leaves ``taskId`` out.

    Raises:
        DecodeError: The data cannot be understood.
    """
    mapping = as_mapping(data)
    if task_id is not None and mapping is not None and mapping.get("taskId") in (None, ""):
        data = {**mapping, "taskId": task_id}
    try:
        task: Task = _STRUCTURE_TASK(data, Task)
        return task
    except DecodeError:
        raise
    except Exception as exc:  # a hook bug must still surface as a DecodeError
        raise DecodeError(f"cannot read task data: {exc}") from exc


def structure_task_id(data: object) -> str:
    """Read ``createTask``'s ``data.taskId``.

    Raises:
        DecodeError: There is no usable task id.
    """
    mapping = as_mapping(data)
    task_id = _opt_str(mapping.get("taskId")) if mapping is not None else None
    if task_id is None:
        raise DecodeError(f"createTask answered without a taskId: {data!r:.200}")
    return task_id
