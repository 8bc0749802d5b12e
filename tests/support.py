"""Helpers the test files share: the provider's answers, the fake, a raw HTTP server, waits.

- The provider's answers, built once: `envelope`, `envelope_json`, `record_info` (the
  ``data`` of a ``recordInfo`` answer, after the provider's own example `SEED_RECORD`).
- The fake provider with our key and fast tasks (`fake_provider`), reached in-process with
  some answers rewritten if need be (`client_for`) or over HTTP (`over_http`: the fake's own
  HTTP/1.1 server, on a `MemoryNetwork`, so the test keeps its virtual clock).
- `raw_server`, for what the fake cannot send; `wait_until`, for what has no event.
- `files_open_in`: the files of a folder this process still holds open; `write_locked`: an
  SQLite file whose write lock another connection holds.

The respx stand-in (``tests/conftest.py``'s ``api`` fixture) builds its answers here too.
Nothing here asserts on elapsed time: the machine is shared.
"""

from __future__ import annotations

import collections
import contextlib
import http
import json
import sqlite3
import traceback
import types
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, cast

import anyio
import anyio.abc
import attrs
import httpx
import psutil
from memory_network import MemoryNetwork, memory_network

from nanobanana_async import AsyncNanoBanana, PollPolicy, RetryPolicy, TextToImage
from nanobanana_async.testing import FakeNanoBanana
from nanobanana_async.testing._server import Connection as FakeConnection

#: A distinctive key: the secrets suite searches every text the library produces for it.
KEY = "sk-SECRET-hardening-7f3a9c1e5b2d4f60"
SCALE = 0.01  # real seconds per provider second


def quick_polls(*, initial: float, maximum: float, min_interval: float) -> PollPolicy:
    """Polls for answers that come at once (mocks, a local server): no budget slows them."""
    return PollPolicy(
        initial=initial,
        maximum=maximum,
        min_interval=min_interval,
        budget_per_task=1e6,
        budget_floor=1e6,
    )


# Polls at the fake's scaled time, within the default query budget scaled alike.
POLL = attrs.evolve(
    PollPolicy().scaled(SCALE), initial=0.005, maximum=0.02, jitter=0.1, min_interval=0.002
)
RETRY = RetryPolicy(max_retries=12, backoff_base=0.002, backoff_max=0.01, max_rate_limit_wait=30.0)


T2I = "nano-banana-text-to-image"
I2I = "nano-banana-image-to-image"
RESULT_URL = "https://cdn.example.com/results/task_1.png"

# The provider's own example answer, verbatim from the seed page.
SEED_RECORD: dict[str, Any] = {
    "taskId": "task_xxxxxxxxxxxxx",
    "model": I2I,
    "state": "success",
    "param": '{"model":"nano-banana-image-to-image","input":{"prompt":"Turn this photo into a '
    'collectible character figure with packaging in the background","image_urls":'
    '["https://cdn.example.com/input.png"],"image_size":"1:1","output_format":"png"}}',
    "resultJson": '{"resultUrls":["https://cdn.example.com/result.png"]}',
    "failCode": None,
    "failMsg": None,
    "costTime": 12000,
    "completeTime": 1757584176490,
    "createTime": 1757584164490,
}


# -- the provider's answers ---------------------------------------------------------------------


def record_info(
    task_id: str = "task_1",
    state: str = "success",
    urls: Iterable[str] | None = (RESULT_URL,),
    **extra: Any,
) -> dict[str, Any]:
    """The ``data`` of a ``recordInfo`` answer: `SEED_RECORD` for a text-to-image task in
    ``state`` (times and ``resultJson`` only once it has succeeded), then ``extra``."""
    finished = state == "success"
    result = {"resultUrls": list(urls or ())}
    data: dict[str, Any] = {
        **SEED_RECORD,
        "taskId": task_id,
        "model": T2I,
        "state": state,
        "param": json.dumps({"model": T2I, "input": {"prompt": "a banana"}}),
        "resultJson": json.dumps(result) if finished and urls is not None else "",
        "costTime": SEED_RECORD["costTime"] if finished else None,
        "completeTime": SEED_RECORD["completeTime"] if finished else None,
    }
    data.update(extra)
    return data


def envelope_json(code: int, msg: str, data: Any = None, *, key: str = "msg") -> str:
    """The provider's envelope as JSON text (``key="message"`` for the family's other spelling)."""
    return json.dumps({"code": code, key: msg, "data": data})


def envelope(
    code: int,
    msg: str = "success",
    data: Any = None,
    *,
    status: int | None = None,
    key: str = "msg",
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """The provider's envelope as an answer; ``status`` 200 puts an error in a successful one."""
    return httpx.Response(
        code if status is None else status,
        content=envelope_json(code, msg, data, key=key),
        headers={"content-type": "application/json", **(headers or {})},
    )


# -- the fake -------------------------------------------------------------------------------------


def prompts(count: int, prefix: str = "a banana") -> list[TextToImage]:
    """Distinct requests: the fake counts a second task with the same body as a duplicate."""
    return [TextToImage(prompt=f"{prefix} #{i}") for i in range(count)]


def fake_provider(**kwargs: Any) -> FakeNanoBanana:
    """A fake with our key, no rate limits, and tasks of 10 to 30 ms."""
    kwargs.setdefault("api_key", KEY)
    kwargs.setdefault("tier", None)
    kwargs.setdefault("time_scale", SCALE)
    kwargs.setdefault("duration", (1.0, 3.0))
    return FakeNanoBanana(**kwargs)


Rewrite = Callable[[httpx.Request, httpx.Response], "httpx.Response | None"]


class RewritingTransport(httpx.AsyncBaseTransport):
    """The fake's transport, with some answers replaced (for what the fake cannot say)."""

    def __init__(self, fake: FakeNanoBanana, rewrite: Rewrite) -> None:
        self._inner = fake.transport()
        self._rewrite = rewrite

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        await response.aread()
        return self._rewrite(request, response) or response


@contextlib.asynccontextmanager
async def client_for(
    fake: FakeNanoBanana, rewrite: Rewrite | None = None, **kwargs: Any
) -> AsyncIterator[AsyncNanoBanana]:
    """A client of ``fake`` in-process with fast polls and retries, optionally rewriting answers."""
    kwargs.setdefault("poll", POLL)
    kwargs.setdefault("retry", RETRY)
    if rewrite is None:
        async with fake.client(**kwargs) as client:
            yield client
        return
    kwargs.setdefault("api_key", fake.api_key)
    async with (
        httpx.AsyncClient(transport=RewritingTransport(fake, rewrite)) as http_client,
        AsyncNanoBanana(http_client=http_client, **kwargs) as client,
    ):
        yield client


@contextlib.asynccontextmanager
async def serve_in_memory(fake: FakeNanoBanana, network: MemoryNetwork) -> AsyncIterator[str]:
    """Serve ``fake`` with its own HTTP/1.1 server on ``network``; yield its base URL."""
    base_url = ""

    async def handle(stream: anyio.abc.ByteStream) -> None:
        await FakeConnection(fake, stream, base_url).run()

    base_url = network.listen(handle)
    try:
        yield base_url
    finally:
        network.close(base_url)


@contextlib.asynccontextmanager
async def over_http(fake: FakeNanoBanana, **kwargs: Any) -> AsyncIterator[AsyncNanoBanana]:
    """A client of ``fake`` over HTTP (its own server, in memory), with tiny poll and retry
    intervals; ``kwargs`` go to `AsyncNanoBanana`."""
    kwargs.setdefault("poll", POLL)
    kwargs.setdefault("retry", RETRY)
    kwargs.setdefault("api_key", fake.api_key)
    async with (
        memory_network() as network,
        serve_in_memory(fake, network) as base_url,
        network.client(base_url, **kwargs) as client,
    ):
        yield client


async def wait_until(condition: Callable[[], bool], limit: float = 20.0) -> None:
    """Wait for ``condition``; the limit only keeps a broken test from hanging."""
    with anyio.fail_after(limit):
        while not condition():  # noqa: ASYNC110 - the fake has no event to wait on
            await anyio.sleep(0.001)


def files_open_in(folder: Path) -> list[str]:
    """The files under ``folder`` this process holds open (a journal, its -wal and -shm...).

    Asked of the operating system, so it sees a file left open on every Python, whether or
    not a `ResourceWarning` would say so when the collector gets to it.
    """
    root = folder.resolve()
    return sorted(
        file.path for file in psutil.Process().open_files() if Path(file.path).is_relative_to(root)
    )


@contextlib.contextmanager
def write_locked(path: Path) -> Iterator[None]:
    """Another connection holds the write lock of the SQLite file at ``path`` until the end.

    A journal being opened meanwhile waits for it (SQLite's busy timeout, 5 seconds), holding
    its file open: a cancellation can be made to land in the middle of the open.
    """
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as blocker:
        blocker.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            blocker.execute("ROLLBACK")


@attrs.define
class RawRequest:
    """One request a `raw_server` received."""

    method: str
    target: str
    headers: dict[str, str]
    body: bytes


def http_response(
    status: int,
    body: bytes | str = b"",
    *,
    content_type: str = "application/json",
    headers: dict[str, str] | None = None,
) -> bytes:
    """A whole HTTP/1.1 response that closes the connection."""
    data = body.encode() if isinstance(body, str) else body
    lines = [
        f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(data)}",
        "Connection: close",
        *(f"{name}: {value}" for name, value in (headers or {}).items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + data


Answer = Callable[[RawRequest], bytes]


@contextlib.asynccontextmanager
async def raw_server(
    answer: Answer, network: MemoryNetwork, host: str = "127.0.0.1"
) -> AsyncIterator[tuple[str, list[RawRequest]]]:
    """A bare HTTP/1.1 server on ``network`` answering each request with ``answer``'s bytes.

    For what the fake cannot send: malformed JSON, proxy pages, redirects to other hosts.
    Yields the base URL and the list of requests received so far.
    """
    received: list[RawRequest] = []

    async def handle(stream: anyio.abc.ByteStream) -> None:
        async with stream:
            buffer = b""
            with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError):
                while b"\r\n\r\n" not in buffer:
                    buffer += await stream.receive()
                head, body = buffer.split(b"\r\n\r\n", 1)
                request_line, *lines = head.decode("latin-1").split("\r\n")
                headers = {}
                for line in lines:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                while len(body) < int(headers.get("content-length", "0")):
                    body += await stream.receive()
                method, target, _ = request_line.split(" ", 2)
                request = RawRequest(method, target, headers, body)
                received.append(request)
                await stream.send(answer(request))

    base_url = network.listen(handle, host)
    try:
        yield base_url, received
    finally:
        network.close(base_url)


def _errors_in(error: BaseException) -> list[BaseException]:
    """``error``, its causes and contexts, and the members of any exception group, once each."""
    found: list[BaseException] = []
    seen: set[int] = set()
    pending: list[BaseException] = [error]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        found.append(current)
        pending += [e for e in (current.__cause__, current.__context__) if e is not None]
        # An exception group's members (BaseExceptionGroup is not a builtin on 3.10).
        members: object = getattr(current, "exceptions", ())
        if isinstance(members, tuple):
            pending += [
                e for e in cast("tuple[object, ...]", members) if isinstance(e, BaseException)
            ]
    return found


def tracker_view(value: object, depth: int = 6) -> str:
    """``value`` as an error tracker stores a frame local (Sentry's serializer, made stricter).

    Mappings and sequences are walked (a tracker shows them as JSON), strings and bytes kept
    whole (a tracker trims them to a kilobyte; the whole is stricter), anything else is its
    repr. The depth bounds cycles and is deeper than Sentry's.
    """
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return repr(bytes(value))
    if depth == 0:
        return repr(value)
    if isinstance(value, Mapping):
        items = cast("Mapping[object, object]", value).items()
        return (
            "{"
            + ", ".join(
                f"{tracker_view(k, depth - 1)}: {tracker_view(v, depth - 1)}" for k, v in items
            )
            + "}"
        )
    if isinstance(value, (list, tuple, set, frozenset, collections.deque)):
        items = cast("Iterable[object]", value)
        return "[" + ", ".join(tracker_view(item, depth - 1) for item in items) + "]"
    try:
        return repr(value)
    except Exception as exc:  # a repr that fails shows as its failure, as in a tracker
        return f"<repr failed: {exc!r}>"


def frames_of(error: BaseException) -> list[types.FrameType]:
    """Every frame in the tracebacks of ``error`` and of its chain."""
    frames: list[types.FrameType] = []
    for current in _errors_in(error):
        tb = current.__traceback__
        while tb is not None:
            frames.append(tb.tb_frame)
            tb = tb.tb_next
    return frames


def texts_of(error: BaseException, *, with_locals: bool = False) -> list[str]:
    """What an exception shows: str, repr, args, attributes, the chain, the traceback.

    Args:
        error: The exception.
        with_locals: Also the traceback with every frame's locals, as Python renders it
            (``capture_locals=True``, what rich shows) and as an error tracker stores it
            (`tracker_view` of each local of each frame, Sentry's ``include_local_variables``).
    """
    texts: list[str] = []
    for current in _errors_in(error):
        texts += [str(current), repr(current), repr(current.args), repr(vars(current))]
    texts.append("".join(traceback.format_exception(error)))
    if with_locals:
        exception = traceback.TracebackException.from_exception(error, capture_locals=True)
        texts.append("".join(exception.format()))
        for frame in frames_of(error):
            texts += [
                f"{frame.f_code.co_qualname}: {name} = {tracker_view(value)}"
                for name, value in frame.f_locals.items()
            ]
    return texts


#: Where attribute walks stop: the event loop's machinery (reached through an Event, a socket
#: stream), which leads to every other object of the process (the fake server's included).
_NOT_WALKED = ("asyncio", "trio", "selectors", "socket", "ssl", "threading", "concurrent")


def holders_of(
    needle: str,
    roots: Mapping[str, object],
    *,
    depth: int = 12,
    stop_at: tuple[type, ...] = (),
) -> tuple[list[str], list[str]]:
    """Where ``needle`` is held in clear in the objects reachable from ``roots``.

    Walks what a debugger's variable view, a memory dump or a serializer that descends into
    objects sees: attributes (``__dict__`` and ``__slots__``, private ones included, such as
    httpx's ``Headers._list``), container items, the cells and defaults of functions, the
    object of a bound method; a string or bytes holding ``needle`` is a find. A
    ``Secret`` is not searched (it is where the key belongs); it is reported instead. Nor are
    instances of ``stop_at``, nor the event loop's machinery (`_NOT_WALKED`).

    Returns:
        The paths where ``needle`` was found, and the paths of the secrets met.
    """
    from nanobanana_async._secret import Secret

    encoded = needle.encode()
    found: list[str] = []
    secrets: list[str] = []
    seen: set[int] = set()
    pending: list[tuple[str, object, int]] = [(name, root, 0) for name, root in roots.items()]
    while pending:
        path, value, level = pending.pop()
        if isinstance(value, str):
            if needle in value:
                found.append(path)
            continue
        if isinstance(value, (bytes, bytearray, memoryview)):
            if encoded in bytes(value):
                found.append(path)
            continue
        if value is None or isinstance(value, (int, float, complex, type, types.ModuleType)):
            continue
        if id(value) in seen or level >= depth:
            continue
        seen.add(id(value))
        if isinstance(value, Secret):
            secrets.append(path)
            continue
        module = type(value).__module__.split(".")[0]
        if module in _NOT_WALKED or isinstance(value, stop_at):
            continue
        children: list[tuple[str, object]] = []
        if isinstance(value, dict):
            for key, item in cast("dict[object, object]", value).items():
                children += [(f"{path}[{key!r:.40}]", item), (f"{path}.<key>", key)]
        elif isinstance(value, (list, tuple, set, frozenset, collections.deque)):
            items = cast("Iterable[object]", value)
            children += [(f"{path}[{i}]", item) for i, item in enumerate(items)]
        elif isinstance(value, types.MethodType):
            children += [(f"{path}.__self__", value.__self__), (f"{path}.__func__", value.__func__)]
        elif isinstance(value, types.FunctionType):
            cells = value.__closure__ or ()
            children += [(f"{path}.<cell {i}>", cell.cell_contents) for i, cell in enumerate(cells)]
            children += [(f"{path}.__defaults__", value.__defaults__)]
            children += [(f"{path}.__kwdefaults__", value.__kwdefaults__)]
        else:
            attributes = dict(getattr(value, "__dict__", {}))
            for cls in type(value).__mro__:
                for slot in getattr(cls, "__slots__", ()):
                    if not isinstance(slot, str) or slot in ("__dict__", "__weakref__"):
                        continue
                    if slot.startswith("__") and not slot.endswith("__"):  # name-mangled
                        slot = f"_{cls.__name__.lstrip('_')}{slot}"
                    if slot not in attributes:
                        with contextlib.suppress(AttributeError):
                            attributes[slot] = getattr(value, slot)
            children += [(f"{path}.{name}", item) for name, item in attributes.items()]
        pending += [(child, item, level + 1) for child, item in children]
    return found, secrets
