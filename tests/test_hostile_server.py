"""The client against a hostile server on loopback: every call ends, every answer is bounded.

Each test holds one row of issue 12's table (the client library's rows) against
`hostile_server`, on asyncio and trio. Time is asserted only as "ended by its deadline plus
a generous margin"; memory by what the server managed to send before the client hung up, or
by tracemalloc's peak where a small compressed body is the threat, never by RSS.

The server echoes each request's ``Authorization`` header in every answer, and `bounded`
renders every error a test meets as Python (``capture_locals=True``) and an error tracker
(every frame's locals) would: the key shows in none of them.
"""

from __future__ import annotations

import inspect
import logging
import math
import tracemalloc
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import attrs
import pytest
from hostile_server import (
    CREATE_PATH,
    MIB,
    QUERY_PATH,
    TRUNCATED_CREATE,
    Exchange,
    HostileServer,
    active_limit,
    answer,
    conflict,
    created,
    drop,
    echo_key,
    endless_chunked,
    envelope,
    gzip_bomb,
    hostile_server,
    huge_json,
    rate_limited,
    result_file,
    short_body,
    slowloris_head,
    stall,
    stall_mid_body,
    trickle_body,
    truncated_chunked,
)
from support import quick_polls, texts_of

from nanobanana_async import (
    ActiveTaskLimitError,
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AsyncNanoBanana,
    AuthenticationError,
    BatchRunner,
    DecodeError,
    DownloadError,
    InsufficientCreditsError,
    NanoBananaError,
    RateLimitError,
    RequestConflictError,
    ResponseTooLargeError,
    RetryPolicy,
    ServerError,
    Task,
    TaskResult,
    TaskState,
    TextToImage,
    WaitTimeoutError,
)

pytestmark = [
    pytest.mark.anyio,
    # A call cut short mid-body leaves httpx's and httpcore's nested stream generators to
    # the GC, and trio warns about each (encode/httpx#3686); the library cannot reach them.
    pytest.mark.filterwarnings(
        r"ignore:Exception ignored in. <async_generator object "
        r"(Response\.aiter_raw|BoundAsyncStream\.__aiter__|AsyncIteratorByteStream\.__aiter__"
        r"|AsyncResponseStream\.__aiter__|PoolByteStream\.__aiter__"
        r"|HTTP11ConnectionByteStream\.__aiter__|AsyncHTTP11Connection\._receive_response_body) "
        r":pytest.PytestUnraisableExceptionWarning"
    ),
]

#: A distinctive key: the secrets tests search every text the library produces for it.
KEY = "sk-secret-123-hostile-5e3b9d0c7a1f"
DEADLINE = 1.5  # every call's own deadline
MARGIN = 2.0  # generous: the machine is shared
#: The default answer cap (1 MiB) plus what a connection holds: a client that stops at
#: its cap gets the server to send no more than this.
SENT_BOUND = 4 * MIB
#: The most memory a refused gzip bomb may take, tracemalloc's overhead included.
PEAK_BOUND = 16 * MIB
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 200
FAST_RETRY = RetryPolicy(max_retries=2, backoff_base=0.01, backoff_max=0.05)
FAST_POLL = quick_polls(initial=0.01, maximum=0.05, min_interval=0.005)
FILE_PATH = "/files/x.png"
REQUEST = TextToImage(prompt="a banana on a hostile server")


def client_of(server: HostileServer, **kwargs: Any) -> AsyncNanoBanana:
    """A client of ``server`` with short retry and poll intervals."""
    kwargs.setdefault("retry", FAST_RETRY)
    kwargs.setdefault("poll", FAST_POLL)
    kwargs.setdefault("http_client", server.http_client(kwargs.get("timeout")))
    kwargs.setdefault("download_client", server.http_client(kwargs.get("timeout")))
    return AsyncNanoBanana(api_key=KEY, base_url=server.base_url, **kwargs)


@attrs.define
class Ended:
    """How a bounded call ended."""

    value: Any = None
    error: BaseException | None = None
    elapsed: float = 0.0
    overran: bool = False

    def describe(self) -> str:
        if self.overran:
            how = "still running"
        elif self.error is None:
            how = f"returned {self.value!r:.80}"
        else:
            how = f"{type(self.error).__name__}: {self.error}"
        return f"{how} after {self.elapsed:.1f} s"


async def bounded(call: Callable[[], Awaitable[Any]], limit: float) -> Ended:
    """Run ``call``, cancelling it after ``limit`` seconds (then ``overran`` is set).

    The limit only keeps a broken client from hanging the test; assertions decide.
    """
    started = anyio.current_time()
    ended = Ended()
    with anyio.move_on_after(limit) as scope:
        try:
            ended.value = await call()
        except Exception as exc:  # the test asserts on whatever came out
            ended.error = exc
    ended.elapsed = anyio.current_time() - started
    ended.overran = scope.cancelled_caught
    if ended.error is not None:
        MET.append(ended.error)
    return ended


#: The errors `bounded` met in the running test, searched for the key once it is over.
MET: list[BaseException] = []


@pytest.fixture(autouse=True)
def no_error_shows_the_key() -> Iterator[None]:
    """Every error a test met shows no key, locals included (searched after the test, so
    that rendering them counts in no memory bound)."""
    MET.clear()
    yield
    for error in MET:
        leaks = [text for text in texts_of(error, with_locals=True) if KEY in text]
        assert not leaks, f"{type(error).__name__}: the key shows in: {leaks[0][:300]!r}"
    MET.clear()


def most_sent(server: HostileServer, path: str) -> int:
    """The most bytes the server sent in one answer on ``path``."""
    return max((exchange.sent for exchange in server.received(path)), default=0)


@pytest.fixture
def peak_memory() -> Iterator[Callable[[], int]]:
    """Trace allocations for the test; call the result for the peak so far, in bytes."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    try:
        yield lambda: tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def files_in(folder: Path) -> list[str]:
    """The names in ``folder``, sorted."""
    return sorted(path.name for path in folder.iterdir())


def a_result(server: HostileServer) -> TaskResult:
    """A finished task ``x`` whose one image is `FILE_PATH` on ``server``."""
    urls = (server.url(FILE_PATH),)
    task = Task(task_id="x", state=TaskState.SUCCESS, raw_state="success", urls=urls)
    return TaskResult(task_id="x", urls=urls, task=task)


def fetch(
    how: str, client: AsyncNanoBanana, server: HostileServer, folder: Path, **kwargs: Any
) -> Callable[[], Awaitable[object]]:
    """``download`` (or ``save_result`` into ``folder``) of `FILE_PATH`, as a call to bound."""
    if how == "download":
        return lambda: client.download(server.url(FILE_PATH), **kwargs)
    return lambda: client.save_result(a_result(server), folder, **kwargs)


# -- deadlines: the caller's timeout bounds connect + headers + body --------------------------


async def test_create_on_an_endless_body_ends_by_its_deadline_with_bounded_memory() -> None:
    """Row: an endless chunked create answer; create_task(timeout=) returns in time."""
    async with hostile_server() as server:
        server.script(CREATE_PATH, endless_chunked())
        async with client_of(server) as client:
            ended = await bounded(
                lambda: client.create_task(REQUEST, timeout=DEADLINE), DEADLINE + MARGIN
            )
    assert most_sent(server, CREATE_PATH) < SENT_BOUND, ended.describe()
    assert not ended.overran, ended.describe()
    assert isinstance(ended.error, (APITimeoutError, ResponseTooLargeError)), ended.describe()


async def test_generate_on_a_slowloris_head_ends_by_its_deadline() -> None:
    """Row: the create answer's head trickles a byte at a time, each within a read timeout."""
    async with hostile_server() as server:
        server.script(CREATE_PATH, slowloris_head(interval=0.05))
        async with client_of(server) as client:
            ended = await bounded(
                lambda: client.generate(REQUEST, timeout=DEADLINE), DEADLINE + MARGIN
            )
    assert not ended.overran, ended.describe()
    assert isinstance(ended.error, (APITimeoutError, WaitTimeoutError)), ended.describe()
    assert server.received(CREATE_PATH), "the create was never sent"


async def test_the_client_timeout_bounds_a_whole_exchange() -> None:
    """The client's ``timeout`` bounds headers + body, not each read."""
    async with hostile_server() as server:
        server.script(QUERY_PATH, trickle_body(interval=0.05, content=b'{"code":200,'))
        async with client_of(server, timeout=DEADLINE, max_retries=0) as client:
            ended = await bounded(lambda: client.get_task("task_1"), DEADLINE + MARGIN)
    assert not ended.overran, ended.describe()
    assert isinstance(ended.error, APITimeoutError), ended.describe()


async def test_every_waiting_call_has_a_finite_default_deadline() -> None:
    """Every public coroutine that can wait takes ``timeout=`` with a finite default."""
    defaults: dict[str, object] = {}
    for name in ("create_task", "get_task", "wait_for_result", "generate", "download"):
        parameter = inspect.signature(getattr(AsyncNanoBanana, name)).parameters.get("timeout")
        defaults[name] = "no timeout= parameter" if parameter is None else parameter.default
    save = inspect.signature(AsyncNanoBanana.save_result).parameters.get("timeout")
    defaults["save_result"] = "no timeout= parameter" if save is None else save.default
    unbounded = {
        name: default
        for name, default in defaults.items()
        if not (
            isinstance(default, (int, float))
            and not isinstance(default, bool)
            and 0 < default < math.inf
        )
    }
    assert not unbounded, f"no finite default deadline: {unbounded}"


# -- bounded answers --------------------------------------------------------------------------


@pytest.mark.parametrize("chunked", [False, True], ids=["declared", "chunked"])
async def test_a_100_mb_record_is_refused_past_the_answer_cap(chunked: bool) -> None:
    """Row: recordInfo answers a 100 MB JSON document; memory stays bounded."""
    async with hostile_server() as server:
        server.script(QUERY_PATH, huge_json(100 * MIB, chunked=chunked))
        async with client_of(server) as client:
            ended = await bounded(lambda: client.get_task("task_1"), 3 * MARGIN)
    assert most_sent(server, QUERY_PATH) < SENT_BOUND, ended.describe()
    assert isinstance(ended.error, ResponseTooLargeError), ended.describe()


async def test_the_answer_cap_is_configurable() -> None:
    """``max_response_bytes`` lowers the cap; a larger answer fails with the clear error."""
    async with hostile_server() as server:
        server.script(QUERY_PATH, huge_json(256 * 1024))
        async with client_of(server, max_response_bytes=64 * 1024) as client:
            ended = await bounded(lambda: client.get_task("task_1"), MARGIN)
    assert isinstance(ended.error, ResponseTooLargeError), ended.describe()
    assert isinstance(ended.error, DecodeError)


async def test_wait_for_result_on_an_endless_record_ends_on_time_with_bounded_memory() -> None:
    """Row: an endless chunked recordInfo; wait_for_result(timeout=) ends, memory bounded."""
    async with hostile_server() as server:
        server.script(QUERY_PATH, endless_chunked())
        async with client_of(server) as client:
            ended = await bounded(
                lambda: client.wait_for_result("task_1", timeout=DEADLINE), DEADLINE + MARGIN
            )
    assert most_sent(server, QUERY_PATH) < SENT_BOUND, ended.describe()
    assert not ended.overran, ended.describe()
    assert isinstance(ended.error, (WaitTimeoutError, DecodeError)), ended.describe()


async def test_a_gzip_bomb_from_the_api_is_refused_with_bounded_memory(
    peak_memory: Callable[[], int],
) -> None:
    """Row: a ~0.25 MB gzip answer that inflates to 256 MB."""
    async with hostile_server() as server:
        server.script(QUERY_PATH, gzip_bomb(256))
        async with client_of(server) as client:
            ended = await bounded(lambda: client.get_task("task_1"), 3 * MARGIN)
        peak = peak_memory()
    assert peak < PEAK_BOUND, f"peak {peak / MIB:.0f} MiB; {ended.describe()}"
    assert most_sent(server, QUERY_PATH) < MIB  # it really was a small answer
    assert isinstance(ended.error, ResponseTooLargeError), ended.describe()


# -- every documented bound holds -------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [{}, {"limit": 1, "windowSeconds": 60}],
    ids=["retry-after", "retry-after-and-a-window"],
)
async def test_429_for_ever_gives_up_at_the_rate_limit_wait_cap(data: dict[str, Any]) -> None:
    """Row: 429 for ever; the call gives up at ``RetryPolicy.max_rate_limit_wait``."""
    cap = DEADLINE
    retry = RetryPolicy(max_retries=2, backoff_base=0.01, backoff_max=0.05, max_rate_limit_wait=cap)
    async with hostile_server() as server:
        server.script(CREATE_PATH, rate_limited(0.4, **data))
        async with client_of(server, retry=retry) as client:
            ended = await bounded(lambda: client.create_task(REQUEST, timeout=60), cap + MARGIN)
    assert not ended.overran, ended.describe()
    assert isinstance(ended.error, RateLimitError), ended.describe()


async def test_a_rate_window_past_the_callers_timeout_does_not_hold_the_call() -> None:
    """Row: a 429 asks for 30 s; the next create's own timeout still bounds it."""
    async with hostile_server() as server:
        server.script(CREATE_PATH, rate_limited(30), created("task_2"))
        async with client_of(server) as client:
            first = await bounded(
                lambda: client.create_task(REQUEST, timeout=DEADLINE), DEADLINE + MARGIN
            )
            second = await bounded(
                lambda: client.create_task(TextToImage(prompt="next"), timeout=DEADLINE),
                DEADLINE + MARGIN,
            )
    assert not first.overran, first.describe()
    assert isinstance(first.error, (APITimeoutError, RateLimitError)), first.describe()
    assert not second.overran, second.describe()
    assert isinstance(second.error, (APITimeoutError, RateLimitError)), second.describe()


# -- conflicts --------------------------------------------------------------------------------


async def test_a_request_id_conflict_is_told_at_once() -> None:
    """Row: 409 "X-Request-ID was already used for a different request", no deadline given."""
    async with hostile_server() as server:
        server.script(CREATE_PATH, conflict())
        async with client_of(server) as client:
            ended = await bounded(lambda: client.create_task(REQUEST), MARGIN)
    assert not ended.overran, ended.describe()
    assert isinstance(ended.error, RequestConflictError), ended.describe()
    assert isinstance(ended.error, APIStatusError)
    assert ended.error.code == 409
    assert len(server.received(CREATE_PATH)) == 1  # not retried: it cannot succeed


async def test_409s_while_no_task_of_ours_runs_end_by_the_deadline() -> None:
    """A run of 409s that do not say "conflict", with nothing of ours running, ends in time."""
    async with hostile_server() as server:
        server.script(CREATE_PATH, active_limit())
        async with client_of(server) as client:
            results: list[Ended] = []

            async def one(index: int) -> None:
                request = TextToImage(prompt=f"waits for a slot #{index}")
                call = client.create_task if index % 2 else client.generate
                results.append(
                    await bounded(lambda: call(request, timeout=DEADLINE), DEADLINE + MARGIN)
                )

            async with anyio.create_task_group() as group:
                for index in range(4):
                    group.start_soon(one, index)
    for ended in results:
        assert not ended.overran, ended.describe()
        assert isinstance(ended.error, (APITimeoutError, ActiveTaskLimitError)), ended.describe()
    # Waiting, not hammering: a handful of tries each, not dozens a second.
    assert len(server.received(CREATE_PATH)) <= 4 * 10


# -- cost safety ------------------------------------------------------------------------------


@pytest.mark.parametrize("waiting_on", ["429", "409", "pacer"])
async def test_a_402_stops_every_create_not_yet_sent(waiting_on: str) -> None:
    """Row: a 402 while other jobs wait on the pacer, a 429 or a 409: no create goes after."""
    refusal = {
        "429": rate_limited(1.0),
        "409": active_limit(),
        "pacer": rate_limited(1.0),
    }[waiting_on]
    retry = RetryPolicy(max_retries=2, backoff_base=0.5, backoff_max=2.0, max_rate_limit_wait=5)
    async with hostile_server() as server:
        # The first create to arrive is told "no credits" a little later, once every other
        # job of the batch waits; the others are refused as ``waiting_on`` says.
        server.script(CREATE_PATH, envelope(402, "Insufficient credits", delay=0.3), refusal)
        tier = "free" if waiting_on == "pacer" else None  # free: 1 create a second
        async with client_of(server, retry=retry, tier=tier) as client:
            runner = BatchRunner(client, max_active=6)
            requests = [TextToImage(prompt=f"job #{index}") for index in range(10)]

            def late() -> list[Exchange]:
                creates = server.received(CREATE_PATH)
                told = creates[0].answered_at if creates else None
                return [] if told is None else [e for e in creates if e.received_at > told]

            outcomes: list[Any] = []
            with anyio.move_on_after(4 * MARGIN) as scope:
                async with anyio.create_task_group() as group:

                    async def watch() -> None:
                        while not late():  # noqa: ASYNC110 - the server has no event for it
                            await anyio.sleep(0.01)
                        group.cancel_scope.cancel()  # one late create is enough to fail

                    group.start_soon(watch)
                    outcomes = await runner.run(requests)
                    group.cancel_scope.cancel()
    sent = [e.index for e in late()]
    assert not sent, f"creates sent after the 402 was answered: {sent}"
    assert not scope.cancelled_caught, "the batch did not end"
    assert len(outcomes) == len(requests)
    assert all(outcome.task_id is None for outcome in outcomes)
    assert all(isinstance(outcome.error, NanoBananaError) for outcome in outcomes)
    assert any(isinstance(outcome.error, InsufficientCreditsError) for outcome in outcomes)


@pytest.mark.parametrize("cut", ["json", "http"])
async def test_a_create_whose_200_answer_is_cut_is_retried_with_the_same_request_id(
    cut: str,
) -> None:
    """Row: the task was created and billed but its id was lost in a truncated answer."""
    truncated = {
        "json": answer(200, TRUNCATED_CREATE),  # a whole HTTP answer whose JSON is cut
        "http": short_body(len(TRUNCATED_CREATE) + 40, TRUNCATED_CREATE),  # the body is cut
    }[cut]
    async with hostile_server() as server:
        server.script(CREATE_PATH, truncated, created("task_7"))
        async with client_of(server) as client:
            ended = await bounded(lambda: client.create_task(REQUEST), MARGIN)
    assert ended.value == "task_7", ended.describe()
    ids = [e.request_id for e in server.received(CREATE_PATH)]
    assert len(ids) == 2
    assert ids[0] is not None
    assert ids[0] == ids[1]


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("timeout", APITimeoutError),
        ("dropped", APIConnectionError),
        ("undecodable", DecodeError),
        ("server-error", ServerError),
    ],
)
async def test_every_error_of_a_create_carries_its_request_id(
    kind: str, expected: type[NanoBananaError]
) -> None:
    """Row: after all retries the error names the X-Request-ID, so a retry is safe."""
    behaviour = {
        "timeout": stall(),
        "dropped": drop(),
        "undecodable": answer(200, b"<html>502 Bad Gateway</html>", headers=()),
        "server-error": envelope(500, "Internal error"),
    }[kind]
    async with hostile_server() as server:
        server.script(CREATE_PATH, behaviour)
        async with client_of(server, timeout=0.5, max_retries=1) as client:
            ended = await bounded(lambda: client.create_task(REQUEST), DEADLINE + 2 * MARGIN)
    assert isinstance(ended.error, expected), ended.describe()
    ids = {e.request_id for e in server.received(CREATE_PATH)}
    assert len(ids) == 1  # every try carried the same id
    assert getattr(ended.error, "request_id", None) == ids.pop()


# -- secrets ----------------------------------------------------------------------------------


ECHOES: dict[str, tuple[int, int | None, bool, type[NanoBananaError]]] = {
    # name: (HTTP status, the envelope's code if not the status, JSON, the error raised)
    "401": (401, None, True, AuthenticationError),
    "403": (403, None, True, APIStatusError),
    "500-retried": (500, None, True, ServerError),
    "502-retried": (502, None, True, ServerError),
    "envelope-401": (200, 401, True, AuthenticationError),
    "500-html-page": (500, None, False, ServerError),
    "200-html-page": (200, None, False, DecodeError),
}


@pytest.mark.parametrize("in_head", [False, True], ids=["body", "body-header-status-line"])
@pytest.mark.parametrize("endpoint", ["create", "query"])
@pytest.mark.parametrize("echo", list(ECHOES))
async def test_a_key_echoed_by_the_server_shows_nowhere(
    echo: str, endpoint: str, in_head: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """Row: the server echoes the key ("Invalid API key provided: Bearer sk-...").

    Nowhere: the error's str, repr, args and attributes, its chain, its traceback with every
    frame's locals (`bounded` renders them), the log records of every level. httpx's and
    httpcore's own records are searched too when the echo is in the body; an echo in a header
    or the status line shows in their wire trace (httpcore's DEBUG lines, httpx's INFO line),
    which logs what came over the wire before the client sees it.
    """
    status, code, as_json, expected = ECHOES[echo]
    caplog.set_level(logging.DEBUG)
    for name in ("httpx", "httpcore", "nanobanana_async"):
        caplog.set_level(logging.DEBUG, logger=name)
    path = CREATE_PATH if endpoint == "create" else QUERY_PATH
    async with hostile_server(echo=in_head) as server:
        server.script(path, echo_key(status, code=code, as_json=as_json, in_head=in_head))
        async with client_of(server, max_retries=1) as client:
            ended = await bounded(
                (lambda: client.create_task(REQUEST))
                if endpoint == "create"
                else (lambda: client.get_task("t")),
                DEADLINE + MARGIN,
            )
    echoed = [e for e in server.exchanges if e.sent]
    assert echoed, "the server echoed nothing"
    assert isinstance(ended.error, expected), ended.describe()
    assert ended.error.__traceback__ is not None
    records = [
        record
        for record in caplog.records
        if not in_head or record.name.split(".")[0] not in ("httpx", "httpcore")
    ]
    assert any(record.name == "nanobanana_async" for record in records)
    texts = texts_of(ended.error, with_locals=True)
    texts += [record.getMessage() for record in records]
    texts += [repr(record.args) for record in records]
    texts += [repr(vars(record)) for record in records]
    leaks = [text for text in texts if KEY in text]
    assert not leaks, f"the key shows in: {leaks[0][:300]!r}"


async def test_an_answer_that_echoes_the_key_in_its_headers_is_redacted_for_the_caller() -> None:
    """A successful answer's headers, as ``with_raw_response`` hands them over, hold no key."""
    async with hostile_server() as server:
        server.script(CREATE_PATH, created("task_9"))
        async with client_of(server) as client:
            raw = await client.with_raw_response.create_task(REQUEST)
    assert raw.value == "task_9"
    assert raw.headers["x-echo-authorization"] == "Bearer ***"
    assert server.received(CREATE_PATH)[0].headers["authorization"] == f"Bearer {KEY}"


# -- downloads --------------------------------------------------------------------------------

BROKEN_HOSTS = {
    "declares-more-than-it-sends": short_body(10_000, PNG),
    "truncated-chunked": truncated_chunked(PNG),
    "stalls-mid-body": stall_mid_body(10_000, PNG),
    "drops-the-connection": drop(),
}


@pytest.mark.parametrize("host", list(BROKEN_HOSTS))
@pytest.mark.parametrize("how", ["download", "save_result"])
async def test_a_broken_result_host_raises_the_librarys_errors(
    host: str, how: str, tmp_path: Path
) -> None:
    """Row: a host that declares more than it sends, truncates a chunked body, stalls."""
    async with hostile_server() as server:
        server.script(FILE_PATH, BROKEN_HOSTS[host])
        async with client_of(server, timeout=DEADLINE) as client:
            ended = await bounded(fetch(how, client, server, tmp_path), DEADLINE + MARGIN)
    assert not ended.overran, ended.describe()
    assert isinstance(ended.error, NanoBananaError), ended.describe()
    assert isinstance(ended.error, (DownloadError, APIConnectionError)), ended.describe()
    assert files_in(tmp_path) == []  # no partial file left behind


@pytest.mark.parametrize("how", ["download", "save_result"])
async def test_a_trickling_result_host_ends_by_the_download_timeout(
    how: str, tmp_path: Path
) -> None:
    """Row: a result host that trickles; the download's own timeout ends it."""
    async with hostile_server() as server:
        server.script(FILE_PATH, trickle_body(interval=0.05, content=PNG))
        async with client_of(server) as client:
            call = fetch(how, client, server, tmp_path, timeout=DEADLINE)
            ended = await bounded(call, DEADLINE + MARGIN)
    assert not ended.overran, ended.describe()
    assert isinstance(ended.error, APITimeoutError), ended.describe()


async def test_a_gzip_bomb_download_counts_inflated_bytes_against_max_bytes(
    peak_memory: Callable[[], int],
) -> None:
    """A result file that inflates to 256 MB: refused past ``max_bytes``, memory bounded."""
    async with hostile_server() as server:
        server.script(FILE_PATH, gzip_bomb(256, prefix=PNG[:8], content_type="image/png"))
        async with client_of(server) as client:
            ended = await bounded(
                lambda: client.download(server.url(FILE_PATH), max_bytes=MIB), 3 * MARGIN
            )
        peak = peak_memory()
    assert peak < PEAK_BOUND, f"peak {peak / MIB:.0f} MiB; {ended.describe()}"
    assert isinstance(ended.error, DownloadError), ended.describe()


async def test_save_result_removes_part_files_left_by_a_killed_run(tmp_path: Path) -> None:
    """A killed run leaves ``.x.png.<hex>.part``; the next save into the folder removes it."""
    stale = tmp_path / ".x.png.abcd1234.part"
    stale.write_bytes(PNG[:20])
    keep = tmp_path / "notes.txt"
    keep.write_text("not ours")
    async with hostile_server() as server:
        server.script(FILE_PATH, result_file(PNG))
        async with client_of(server) as client:
            ended = await bounded(lambda: client.save_result(a_result(server), tmp_path), MARGIN)
    assert ended.value == [tmp_path / "x.png"], ended.describe()
    assert (tmp_path / "x.png").read_bytes() == PNG
    assert files_in(tmp_path) == ["notes.txt", "x.png"]
