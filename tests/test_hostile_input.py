"""Hostile or odd input: property tests over request building, answer parsing and result URLs.

`test_models.py` and `test_wire.py` hold the everyday cases; these push further: every field of
a request given any value, bodies with huge numbers, deep nesting and NaN-like text, error
bodies whose limits are absurd, and result URLs that name internal addresses in any spelling.
"""

from __future__ import annotations

import functools
import ipaddress
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from support import KEY, RETRY

from nanobanana_async import (
    AsyncNanoBanana,
    DecodeError,
    DownloadError,
    ImageToImage,
    InvalidRequestError,
    NanoBananaError,
    Task,
    TextToImage,
)
from nanobanana_async._download import Downloader
from nanobanana_async._models import IMAGE_SIZES
from nanobanana_async._wire import (
    answer_data,
    create_body,
    parse_envelope,
    structure_task,
    structure_task_id,
)
from nanobanana_async.testing._validation import validate_create

# -- request building: any value for any field -------------------------------------------------

# Text no encoder takes (lone surrogates), NULs, control and format characters, anywhere.
odd_text = st.text(
    st.characters(codec=None, exclude_categories=()) | st.sampled_from("\x00\ud800\udfff\u202e\n"),
    max_size=30,
)
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=30)
    | odd_text
    | st.builds(Path, odd_text)
    | st.builds(lambda text: f"https://cdn.example.com/{text}.png", odd_text)
    | st.sampled_from(
        ["1:1", "16:9", "auto", "png", "jpeg", "jpg", "https://cdn.example.com/a.png",
         "https://10.0.0.1/a.png", "http://cdn.example.com/a.png", "data:image/png;base64,AA",
         "HTTPS://CDN.EXAMPLE.COM/B.WEBP", " ", "\x00", "p" * 20_001, "\ud800 banana",
         "/etc/hostname", "https://cdn.example.com/a\x00.png", Path("a\x00b.png"),
         Path("/no/such/file.png"), b"\x89PNG\r\n\x1a\n", b""]
    )
)  # fmt: skip
anything = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=12) | st.tuples(inner) | st.sets(st.text()),
    max_leaves=15,
)


def _build(cls: type[Any], fields: dict[str, Any]) -> Any:
    try:
        return cls(**fields)
    except InvalidRequestError as exc:
        error = exc
    assert error.field
    assert str(error).startswith(error.field)
    return None


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(
    fields=st.fixed_dictionaries(
        {"prompt": st.text(min_size=1, max_size=50) | anything},
        optional={
            "image_size": st.sampled_from(IMAGE_SIZES) | anything,
            "aspect_ratio": st.sampled_from(IMAGE_SIZES) | anything,
            "output_format": st.sampled_from(["png", "jpeg"]) | anything,
            "nsfw_checker": st.booleans() | anything,
        },
    ),
    urls=anything
    | st.lists(
        st.sampled_from(["https://cdn.example.com/a.png", "https://img.example.org/b.webp?x=1"]),
        max_size=11,
    ),
    edit=st.booleans(),
)
# What a web app may be handed (the NUL byte, a lone surrogate), always tried.
@example(fields={"prompt": "p"}, urls=["\x00"], edit=True)
@example(fields={"prompt": "p"}, urls=[Path("photo\x00.png")], edit=True)
@example(fields={"prompt": "p"}, urls=["https://cdn.example.com/\ud800.png"], edit=True)
@example(fields={"prompt": "p"}, urls=["https://cdn.example.com/a\x00.png"], edit=True)
@example(fields={"prompt": "\ud800 banana"}, urls=None, edit=False)
def test_any_field_values_build_a_request_the_fake_accepts_or_raise_invalid_request(
    fields: dict[str, Any], urls: Any, edit: bool
) -> None:
    request = _build(ImageToImage, {**fields, "image_urls": urls}) if edit else None
    if not edit:
        request = _build(TextToImage, fields)
    if request is None:
        return
    event(f"built {type(request).__name__}")
    body = create_body(request)  # the bytes sent: a request that builds can be sent
    if body.images:
        body = body.published({i.sha256: f"https://images.example/{i.name}" for i in body.images})
    sent = json.loads(body.content)
    # What the library sends is what the provider (as the fake reads its pages) accepts...
    assert validate_create(sent) is None
    # ...and it survives a round trip through JSON unchanged.
    assert json.loads(json.dumps(sent, allow_nan=False)) == sent


# -- answers: hostile bodies --------------------------------------------------------------------

DEEP = "[" * 100_000 + "]" * 100_000
HOSTILE_BODIES = [
    b'{"code": "\xc2\xb2", "msg": "superscript two is a digit to str.isdigit"}',
    b'{"code": "\xd9\xa3\xd9\xa0\xd9\xa0", "msg": "arabic-indic 300"}',
    b'{"code": "' + b"9" * 5000 + b'", "msg": "more digits than int() takes"}',
    b'{"code": ' + b"1" * 4000 + b', "msg": "a very large code"}',
    b'{"code": ' + b"1" * 5000 + b', "msg": "more digits than json takes"}',
    b'{"code": NaN, "msg": "nan"}',
    b'{"code": -Infinity, "data": {"taskId": "t"}}',
    b'{"code": 1e400, "data": {"taskId": "t"}}',
    b'{"code": 200, "data": ' + DEEP.encode() + b"}",
    DEEP.encode(),
    b'{"code": 200, "data": {"taskId": "t", "state": "success", "costTime": 1'
    + b"0" * 400
    + b', "createTime": 1e400, "completeTime": -1'
    + b"0" * 400
    + b"}}",
    b'{"code": 200, "data": {"taskId": "t", "state": "success", "resultJson": "'
    + b"[" * 5000
    + b'"}}',
    b'{"code": 200, "data": {"taskId": "t", "state": "generating", "param": "{\\"input\\": \\"'
    + b"[" * 3000
    + b'\\"}"}}',
    b'{"code": 200, "data": {"taskId": ' + b"7" * 4000 + b', "state": "NaN"}}',
    b'{"code": "200", "data": {"taskId": "t", "state": "Infinity", "costTime": "1e999",'
    b' "failCode": -0.0, "createTime": "NaN"}}',
    b'{"code": 429, "data": {"retryAfter": 1' + b"0" * 400 + b', "limit": 1e400}}',
    b'\xff\xfe{"code": 200}',
    b'{"code": 200, "msg": "\\ud800", "data": {"taskId": "\\udfff"}}',
]


def _read(content: bytes, status: int = 200) -> Task | str | None:
    """What the client makes of an answer: a task, a task id, or a NanoBananaError."""
    response = httpx.Response(status, content=content, headers={"content-type": "application/json"})
    try:
        data = answer_data(response.status_code, response.headers, response.content)
    except NanoBananaError:
        return None
    try:
        return structure_task(data, task_id="asked")
    except DecodeError:
        pass
    try:
        return structure_task_id(data)
    except DecodeError:
        return None


@pytest.mark.parametrize("content", HOSTILE_BODIES, ids=range(len(HOSTILE_BODIES)))
@pytest.mark.parametrize("status", [200, 429, 500])
def test_hostile_bodies_yield_a_model_or_a_library_error(content: bytes, status: int) -> None:
    envelope = parse_envelope(content)
    assert envelope is None or envelope.code is None or isinstance(envelope.code, int)
    _read(content, status)


def test_huge_numbers_in_a_task_are_dropped_not_fatal() -> None:
    task = _read(HOSTILE_BODIES[10])
    assert isinstance(task, Task)
    assert (task.cost_time, task.create_time, task.complete_time) == (None, None, None)


hostile_leaves = (
    st.integers(min_value=-(10**400), max_value=10**400)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "\u00b2", "\u0663", "9" * 5000,
                       "", " ", "null", "[]", "{}", "success", "SUCCESS", "fail"])
    | st.text(max_size=10)
    | st.booleans()
    | st.none()
)  # fmt: skip
hostile_json = st.recursive(
    hostile_leaves,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=12,
)
members = ("code", "msg", "message", "data")
task_members = (
    "taskId", "model", "state", "param", "resultJson", "failCode", "failMsg", "costTime",
    "completeTime", "createTime", "retryAfter", "limit", "windowSeconds",
)  # fmt: skip


def _dumps(value: Any) -> bytes:
    # The stdlib refuses to write integers of more than 4300 digits; so does its reader.
    try:
        return json.dumps(value).encode()
    except ValueError:
        return b"{}"


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(
    envelope=st.fixed_dictionaries(
        {},
        optional={
            **dict.fromkeys(members, hostile_json),
            "data": st.fixed_dictionaries(
                {},
                optional=dict.fromkeys(
                    task_members,
                    hostile_json | st.builds(lambda v: _dumps(v).decode(), hostile_json),
                ),
            )
            | hostile_json,
        },
    ),
    status=st.sampled_from([200, 201, 400, 404, 409, 429, 500, 502]),
)
def test_any_envelope_yields_a_model_or_a_library_error(envelope: Any, status: int) -> None:
    _read(_dumps(envelope), status)


# -- hostile 429 and 409 bodies through the client ---------------------------------------------

ABSURD_LIMITS = [
    {"retryAfter": 0.001, "limit": 10**400, "windowSeconds": 1},
    {"retryAfter": 0.001, "limit": 1e300, "windowSeconds": 1},
    {"retryAfter": 0.001, "limit": 5, "windowSeconds": 1e300},
    {"retryAfter": 0.001, "limit": 5, "windowSeconds": 1e-300},
    {"retryAfter": 10**400, "limit": 2, "windowSeconds": 1},
    {"retryAfter": "0.001", "limit": "lots", "windowSeconds": [1]},
]


@pytest.mark.anyio
@pytest.mark.parametrize("data", ABSURD_LIMITS, ids=range(len(ABSURD_LIMITS)))
@pytest.mark.parametrize("code", [429, 409])
async def test_absurd_limits_in_refusals_are_survived(data: dict[str, Any], code: int) -> None:
    bodies = iter(
        [
            (code, {"code": code, "msg": "slow down", "data": data}),
            (200, {"code": 200, "msg": "success", "data": {"taskId": "task_1"}}),
            (200, {"code": 200, "msg": "success", "data": {"taskId": "task_2"}}),
        ]
    )

    def answer(_request: httpx.Request) -> httpx.Response:
        status, body = next(bodies)
        return httpx.Response(status, content=_dumps(body))

    async with (
        httpx.AsyncClient(transport=httpx.MockTransport(answer)) as http,
        AsyncNanoBanana(api_key=KEY, http_client=http, retry=RETRY, max_active=3) as client,
    ):
        try:
            assert await client.create_task(TextToImage(prompt="x"), timeout=5) == "task_1"
        except NanoBananaError:
            pass  # refusing to wait absurdly long is fine; crashing is not
        else:
            # What was learned does not stop the next request from going out.
            assert await client.create_task(TextToImage(prompt="y"), timeout=5) == "task_2"


# -- result URLs naming internal addresses, in any spelling -------------------------------------


def _spellings(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> list[str]:
    if address.version == 6:
        return [f"[{address}]", f"[{address.exploded}]"]
    number = int(address)
    return [str(address), f"{address}.", str(number), hex(number), f"[::ffff:{address}]"]


@functools.cache
def _public_downloader() -> Downloader:
    """The downloader of a client of the public API, built once; nothing is sent."""
    http = httpx.AsyncClient(transport=httpx.MockTransport(lambda _r: httpx.Response(500)))
    return Downloader(http, user_agent="x", allow_loopback=False, max_bytes=1)


internal = st.ip_addresses().filter(
    lambda a: a.is_private or a.is_loopback or a.is_link_local or a.is_reserved
    or a.is_multicast or a.is_unspecified
)  # fmt: skip


@given(address=internal, path=st.sampled_from(["/a.png", "/latest/meta-data/", ""]))
def test_internal_addresses_in_any_spelling_are_refused_for_a_public_api(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address, path: str
) -> None:
    downloader = _public_downloader()
    for host in _spellings(address):
        for scheme in ("https", "http"):
            with pytest.raises(DownloadError, match=r"internal address|https only"):
                downloader.check_url(f"{scheme}://{host}{path}")
