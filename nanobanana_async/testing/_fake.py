"""The fake provider's state machine: requests in, replies out, no I/O.

Everything is decided lazily from a clock: a task's state is computed from its creation time
and planned duration when it is asked for, so no background tasks are needed. Internally all
times are *real* seconds since the fake started; ``time_scale`` shrinks the provider's durations
and rate windows into real time once, when they are set.
"""

from __future__ import annotations

import contextlib
import heapq
import json
import math
import random
import time
from collections import deque
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, cast
from urllib.parse import unquote_plus

import attrs

from ._faults import Endpoint, FaultKind, Faults, check_fault
from ._images import render_image
from ._limits import TIERS, FixedWindow, TierLimits
from ._tasks import FakeTask, TaskTable, TaskView
from ._validation import validate_create

if TYPE_CHECKING:
    import httpx

    from .. import AsyncNanoBanana

__all__ = [
    "DEFAULT_RESULT_BASE_URL",
    "FakeNanoBanana",
    "FakeStats",
    "Reply",
    "RequestRecord",
]

DEFAULT_RESULT_BASE_URL = "https://results.fake-nanobanana.test"
"""Where result files live when the fake is used in-process (a different host than the API)."""

CREATE_PATH = "/api/v1/jobs/createTask"
QUERY_PATH = "/api/v1/jobs/recordInfo"
FILES_PREFIX = "/files/"

LOG_SIZE = 256
"""How many recent requests `FakeNanoBanana.recent_requests` keeps."""

DurationSpec = float | tuple[float, float] | Callable[[Mapping[str, Any]], float]
FailSpec = float | Callable[[Mapping[str, Any]], bool]
Action = Literal["answer", "refuse", "drop", "truncate", "slow"]

_DEFAULT_FAIL_CODES: tuple[tuple[str, str], ...] = (
    ("500", "Internal error, please try again later."),
)
_STATUS_COUNTERS = {
    400: "invalid",
    401: "unauthorized",
    402: "insufficient_credits",
    404: "not_found",
    422: "invalid",
}
_HTML_PAGES = {
    502: "Bad Gateway",
    503: "Service Temporarily Unavailable",
}


def _query_value(query: str, name: str) -> str:
    """The first value of ``name`` in a query string ("" if absent); cheaper than parse_qs."""
    for part in query.split("&"):
        key, _, value = part.partition("=")
        if unquote_plus(key) == name:
            return unquote_plus(value)
    return ""


_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


class Reply:
    """What a front end (transport or server) must do with one request.

    Attributes:
        status: The HTTP status.
        content_type: The ``Content-Type`` of the body.
        headers: Other response headers, as ``(name, value)`` pairs.
        body: The response body.
        action: ``"answer"``; ``"refuse"`` (drop the connection, nothing was done);
            ``"drop"`` (drop it after the work); ``"truncate"`` (send half the body, then drop);
            ``"slow"`` (answer after ``slow_seconds``, ``None`` = after the client gives up).
        slow_seconds: For ``"slow"``.
    """

    __slots__ = ("action", "body", "content_type", "headers", "slow_seconds", "status")

    def __init__(
        self,
        status: int,
        body: bytes,
        *,
        content_type: str = "application/json",
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers: list[tuple[str, str]] = list(headers)
        self.action: Action = "answer"
        self.slow_seconds: float | None = None

    @classmethod
    def envelope(
        cls,
        code: int,
        msg: str,
        data: object = None,
        *,
        status: int | None = None,
        headers: Sequence[tuple[str, str]] = (),
    ) -> Reply:
        """Build a JSON ``{"code", "msg", "data"}`` reply; the HTTP status defaults to ``code``."""
        body = _dumps({"code": code, "msg": msg, "data": data}).encode()
        return cls(code if status is None else status, body, headers=headers)


class RequestRecord(NamedTuple):
    """One request the fake has seen (see `FakeNanoBanana.recent_requests`).

    Attributes:
        at: Real seconds since the fake started.
        endpoint: ``"create"``, ``"query"``, ``"result"`` or ``"other"``.
        status: The HTTP status answered, or ``None`` if the connection was dropped.
        fault: The fault injected (``"ok"`` for none).
        task_id: The task concerned, if any.
    """

    at: float
    endpoint: str
    status: int | None
    fault: FaultKind
    task_id: str | None


@attrs.frozen(kw_only=True)
class FakeStats:
    """A snapshot of what the fake has seen, for assertions in tests and benchmarks.

    Attributes:
        create_requests: ``createTask`` requests received (all outcomes, faults included).
        query_requests: ``recordInfo`` requests received.
        result_requests: Result-file downloads received.
        other_requests: Requests to any other path.
        tasks_created: Tasks created (each charged one credit).
        idempotent_replays: Creates answered with an existing task because their
            ``X-Request-ID`` was seen before (charged nothing).
        duplicates: Tasks created with the same body as an earlier task, without reusing its
            ``X-Request-ID`` (the client paid twice for one request).
        conflicts: Creates refused with 409 because their ``X-Request-ID`` belongs to a task
            with a different body.
        active_limited: Creates refused with 409 because the active-task limit was reached.
        rate_limited: Requests refused with HTTP 429 (both endpoints).
        rate_limited_create: Of those, ``createTask`` requests.
        rate_limited_query: Of those, ``recordInfo`` requests.
        unauthorized: Requests refused with 401.
        insufficient_credits: Creates refused with 402.
        not_found: 404 answers (unknown task, result file or path).
        invalid: 400 and 422 answers.
        faults: Faults injected (scripted or drawn).
        active: Tasks not yet finished, now.
        max_active: The highest number of unfinished tasks at any moment.
        authorization_sent_to_result_host: Whether any request for a result file carried an
            ``Authorization`` header (the API key must not leave for the result host).
    """

    create_requests: int
    query_requests: int
    result_requests: int
    other_requests: int
    tasks_created: int
    idempotent_replays: int
    duplicates: int
    conflicts: int
    active_limited: int
    rate_limited: int
    rate_limited_create: int
    rate_limited_query: int
    unauthorized: int
    insufficient_credits: int
    not_found: int
    invalid: int
    faults: int
    active: int
    max_active: int
    authorization_sent_to_result_host: bool


_COUNTERS = tuple(
    field.name
    for field in attrs.fields(FakeStats)
    if field.name not in {"active", "max_active", "authorization_sent_to_result_host"}
)


def _duration_sampler(
    spec: DurationSpec, rng: random.Random
) -> Callable[[Mapping[str, Any]], float]:
    if callable(spec):
        return spec
    if isinstance(spec, tuple):
        low, high = (float(value) for value in spec)
        if not 0 <= low <= high:
            raise ValueError("duration=(low, high) needs 0 <= low <= high")
        return lambda _body: rng.uniform(low, high)
    value = float(spec)
    if value < 0:
        raise ValueError("duration must be >= 0")
    return lambda _body: value


def _fail_decider(spec: FailSpec, rng: random.Random) -> Callable[[Mapping[str, Any]], bool]:
    if callable(spec):
        return spec
    rate = float(spec)
    if not 0 <= rate <= 1:
        raise ValueError("fail_rate must be in [0, 1]")
    return lambda _body: rng.random() < rate


def _check_limits(limits: TierLimits) -> None:
    for field in attrs.fields(TierLimits):
        value = getattr(limits, field.name)
        if field.name != "name" and value is not None and value < 1:
            raise ValueError(f"{field.name} must be >= 1 (or None for no limit)")


def _limits_for(tier: str | None, overrides: Mapping[str, int | None]) -> TierLimits:
    if tier is None:
        base = TierLimits(name="custom")
    elif tier in TIERS:
        base = TIERS[tier]
    else:
        raise ValueError(f"unknown tier {tier!r}; expected one of {', '.join(TIERS)} or None")
    given = {name: value for name, value in overrides.items() if value is not None}
    limits = TierLimits(
        name=base.name,
        create_per_second=given.get("create_per_second", base.create_per_second),
        create_per_minute=given.get("create_per_minute", base.create_per_minute),
        query_per_second=given.get("query_per_second", base.query_per_second),
        query_per_minute=given.get("query_per_minute", base.query_per_minute),
        max_active=given.get("max_active", base.max_active),
    )
    _check_limits(limits)
    return limits


class FakeNanoBanana:
    """A stateful, faithful fake of the Nano Banana jobs API, for tests, demos and benchmarks.

    It keeps the provider's contract (SPEC §1): bearer auth, per-endpoint rate limits in a
    1-second and a 60-second window (fixed windows aligned to the fake's start), the active-task
    limit, ``X-Request-ID`` idempotency, tasks moving ``waiting`` -> ``generating`` ->
    ``success``/``fail`` over time, and result files that are real PNG/JPEG images. Use it
    in-process through `transport` or `client`, or over loopback through `serve`.

    All times it reports (``retryAfter``, ``Retry-After``, ``costTime``, ``createTime``,
    ``completeTime``, ``windowSeconds``) are real, already scaled by ``time_scale``, so clients
    need no knowledge of the scale.

    Args:
        api_key: The only key accepted (``Authorization: Bearer <api_key>``).
        tier: A tier of the documented table (``"free"``, ``"basic"``, ``"standard"``,
            ``"pro"``, ``"ultra"``, ``"enterprise"``), or ``None`` for no limits except those
            given explicitly.
        create_per_second: Overrides the tier's ``createTask`` limit per 1-second window.
        create_per_minute: Overrides the tier's ``createTask`` limit per 60-second window.
        query_per_second: Overrides the tier's ``recordInfo`` limit per 1-second window.
        query_per_minute: Overrides the tier's ``recordInfo`` limit per 60-second window.
        max_active: Overrides the tier's limit of unfinished tasks.
        duration: How long a task runs, in provider seconds: a number, a ``(low, high)``
            uniform range, or a callable taking the create body and returning a number.
        fail_rate: The probability that a task ends in ``fail``, or a callable taking the create
            body and returning whether it fails.
        fail_codes: ``(failCode, failMsg)`` pairs a failed task picks from.
        credits: How many tasks may be created before creates get 402; ``None`` = unlimited.
        time_scale: Real seconds per provider second: ``0.01`` runs everything 100x faster.
        seed: Seeds every random choice (durations, failures, faults, task ids).
        faults: Fault probabilities; see `Faults` and `script`.
        result_base_url: Where result URLs point. By default
            ``https://results.fake-nanobanana.test`` in-process, the server's own URL over
            loopback.
        clock: A monotonic clock in real seconds (default `time.monotonic`); inject one to
            drive the fake by hand in tests.

    Raises:
        ValueError: For an unknown tier or an impossible setting.
    """

    def __init__(
        self,
        *,
        api_key: str = "sk-test",
        tier: str | None = "basic",
        create_per_second: int | None = None,
        create_per_minute: int | None = None,
        query_per_second: int | None = None,
        query_per_minute: int | None = None,
        max_active: int | None = None,
        duration: DurationSpec = (2.0, 6.0),
        fail_rate: FailSpec = 0.0,
        fail_codes: Sequence[tuple[str, str]] = _DEFAULT_FAIL_CODES,
        credits: int | None = None,
        time_scale: float = 1.0,
        seed: int = 0,
        faults: Faults | None = None,
        result_base_url: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not time_scale > 0:
            raise ValueError("time_scale must be > 0")
        if not fail_codes:
            raise ValueError("fail_codes must not be empty")
        if credits is not None and credits < 0:
            raise ValueError("credits must be >= 0 or None")
        self.api_key = api_key
        """The API key the fake accepts."""
        self._time_scale = float(time_scale)
        self._limits = _limits_for(
            tier,
            {
                "create_per_second": create_per_second,
                "create_per_minute": create_per_minute,
                "query_per_second": query_per_second,
                "query_per_minute": query_per_minute,
                "max_active": max_active,
            },
        )
        self.result_base_url = result_base_url.rstrip("/") if result_base_url else None
        """Where result URLs point, if fixed at construction."""
        self._credits = credits
        self._faults = faults if faults is not None else Faults()
        self._clock = clock
        self._start = clock()
        self._epoch_ms = time.time() * 1000.0
        task_rng = random.Random(f"{seed}/tasks")  # noqa: S311 - reproducible, not secret
        self._task_rng = task_rng
        self._draw_duration = _duration_sampler(duration, task_rng)
        self._draw_failure = _fail_decider(fail_rate, task_rng)
        self._fault_rngs = {
            endpoint: random.Random(f"{seed}/faults/{endpoint}")  # noqa: S311
            for endpoint in ("create", "query", "result")
        }
        self._scripts: dict[str, deque[FaultKind]] = {
            endpoint: deque() for endpoint in ("create", "query", "result")
        }
        id_prefix = random.Random(f"{seed}/ids").getrandbits(32)  # noqa: S311
        self._tasks = TaskTable(
            id_prefix=f"task_{id_prefix:08x}",
            fail_codes=[(str(code), str(msg)) for code, msg in fail_codes],
            elapsed=lambda: self.elapsed,
        )
        self._windows = self._build_windows()
        self._running: list[float] = []  # a heap of the unfinished tasks' end times
        self._counts = dict.fromkeys(_COUNTERS, 0)
        self._max_active = 0
        self._authorization_to_result_host = False
        self._log: deque[RequestRecord] = deque(maxlen=LOG_SIZE)
        self._task_view = TaskView(self._tasks)

    # -- public state -------------------------------------------------------------------------

    @property
    def time_scale(self) -> float:
        """Real seconds per provider second."""
        return self._time_scale

    @property
    def limits(self) -> TierLimits:
        """The limits in force: the tier's, with explicit values applied.

        Assign new `TierLimits` (e.g. ``attrs.evolve(fake.limits, max_active=10)``) to change
        them while the fake runs, as a provider raising a key's tier would; the rate windows
        then start afresh.
        """
        return self._limits

    @limits.setter
    def limits(self, limits: TierLimits) -> None:
        _check_limits(limits)
        self._limits = limits
        self._windows = self._build_windows()

    @property
    def tier(self) -> str:
        """The tier's name as reported in 429 answers (``"custom"`` without a tier)."""
        return self.limits.name

    @property
    def elapsed(self) -> float:
        """Real seconds since the fake started."""
        return self._clock() - self._start

    @property
    def faults(self) -> Faults:
        """The fault probabilities in force; assign a new `Faults` to change them."""
        return self._faults

    @faults.setter
    def faults(self, faults: Faults) -> None:
        self._faults = faults

    @property
    def credits(self) -> int | None:
        """Creates left before 402 (``None`` = unlimited); assignable."""
        return self._credits

    @credits.setter
    def credits(self, credits: int | None) -> None:
        self._credits = credits

    @property
    def tasks(self) -> Mapping[str, FakeTask]:
        """Every task created, by task id, in creation order (a live, read-only view)."""
        return self._task_view

    @property
    def stats(self) -> FakeStats:
        """A snapshot of the counters (see `FakeStats`)."""
        return FakeStats(
            **self._counts,
            active=self._expire(self.elapsed),
            max_active=self._max_active,
            authorization_sent_to_result_host=self._authorization_to_result_host,
        )

    @property
    def recent_requests(self) -> tuple[RequestRecord, ...]:
        """The last requests seen (at most 256), oldest first, to help debug a failing test."""
        return tuple(self._log)

    def reset_stats(self) -> None:
        """Zero the counters of `stats` and forget `recent_requests`; tasks are kept.

        ``max_active`` restarts from the number of tasks active now.
        """
        self._counts = dict.fromkeys(_COUNTERS, 0)
        self._max_active = self._expire(self.elapsed)
        self._authorization_to_result_host = False
        self._log.clear()

    def script(self, endpoint: Endpoint, faults: Iterable[FaultKind]) -> None:
        """Queue faults for the next requests to ``endpoint``, one per request, in order.

        Scripted faults are used before the probabilities of `faults` apply; ``"ok"`` lets one
        request through untouched. Calling again appends.

        Args:
            endpoint: ``"create"``, ``"query"`` or ``"result"``.
            faults: Fault kinds (see `FaultKind`), e.g. ``["500", "drop_after", "ok"]``.

        Raises:
            ValueError: For an unknown endpoint or fault, before anything is queued.
        """
        kinds = list(faults)
        check_fault(endpoint, "ok")
        for kind in kinds:
            check_fault(endpoint, kind)
        self._scripts[endpoint].extend(kinds)

    # -- ways in ------------------------------------------------------------------------------

    def transport(self) -> httpx.AsyncBaseTransport:
        """Return an in-process `httpx.AsyncBaseTransport` answering as the provider.

        It answers the API paths on any host and serves the result files, so one transport
        works for an API client and a download client. Dropped connections raise
        `httpx.ConnectError` (before the work) or `httpx.RemoteProtocolError` (after it).
        """
        from ._transport import FakeTransport

        return FakeTransport(self)

    def serve(
        self, host: str = "127.0.0.1", port: int = 0
    ) -> contextlib.AbstractAsyncContextManager[str]:
        """Serve the fake over HTTP/1.1 on ``host``:``port`` while the context is open.

        The server runs in the caller's event loop (asyncio or trio) and stops, closing every
        connection, when the context exits.

        Args:
            host: The address to listen on; keep it on loopback.
            port: The port, ``0`` for any free one.

        Returns:
            An async context manager yielding the base URL, e.g. ``http://127.0.0.1:54321``.
        """
        from ._server import serve

        return serve(self, host, port)

    @contextlib.asynccontextmanager
    async def client(self, **kwargs: Any) -> AsyncGenerator[AsyncNanoBanana, None]:
        """Open an `AsyncNanoBanana` wired to this fake in-process, for API calls and downloads.

        The client's clocks run at the fake's speed: unless given, its request timeout
        (60 s), poll intervals and retry backoffs are its defaults times ``time_scale``, so a
        test at ``time_scale=0.01`` behaves like production, 100 times faster.

        Args:
            **kwargs: Passed to `AsyncNanoBanana`; ``api_key`` defaults to the fake's.

        Yields:
            The client; it and its HTTP clients are closed when the context exits.
        """
        import httpx

        from .. import AsyncNanoBanana, PollPolicy, RetryPolicy

        scale = self.time_scale
        kwargs.setdefault("api_key", self.api_key)
        if "poll" not in kwargs:
            poll = PollPolicy()
            kwargs["poll"] = attrs.evolve(
                poll,
                initial=poll.initial * scale,
                maximum=poll.maximum * scale,
                min_interval=poll.min_interval * scale,
            )
        if "retry" not in kwargs:
            retry = RetryPolicy()
            kwargs["retry"] = attrs.evolve(
                retry,
                backoff_base=retry.backoff_base * scale,
                backoff_max=retry.backoff_max * scale,
                max_rate_limit_wait=retry.max_rate_limit_wait * scale,
                not_found_grace=retry.not_found_grace * scale,
            )
        # In-process, only the "slow" fault consults the timeout (httpx leaves timeouts to
        # the transport), so scaling it just makes slow answers time out sooner.
        timeout = httpx.Timeout(60.0 * scale, connect=10.0 * scale)
        async with (
            httpx.AsyncClient(transport=self.transport(), timeout=timeout) as http_client,
            httpx.AsyncClient(transport=self.transport(), timeout=timeout) as download_client,
            AsyncNanoBanana(
                http_client=http_client, download_client=download_client, **kwargs
            ) as client,
        ):
            yield client

    # -- the state machine --------------------------------------------------------------------

    def _build_windows(self) -> dict[str, list[FixedWindow]]:
        limits = self._limits
        return {
            endpoint: [
                FixedWindow(limit=limit, length=seconds * self._time_scale, nominal_seconds=seconds)
                for limit, seconds in ((per_second, 1), (per_minute, 60))
                if limit is not None
            ]
            for endpoint, per_second, per_minute in (
                ("create", limits.create_per_second, limits.create_per_minute),
                ("query", limits.query_per_second, limits.query_per_minute),
            )
        }

    def _expire(self, now: float) -> int:
        """Forget the end times that have passed; return how many tasks are still active."""
        running = self._running
        while running and running[0] <= now:
            heapq.heappop(running)
        return len(running)

    def _next_fault(self, endpoint: Endpoint) -> FaultKind:
        script = self._scripts[endpoint]
        if script:
            return script.popleft()
        rates = self._faults.rates(endpoint)
        if not rates:
            return "ok"
        draw = self._fault_rngs[endpoint].random()
        for kind, rate in rates.items():
            if draw < rate:
                return kind
            draw -= rate
        return "ok"

    def handle(
        self,
        *,
        method: str,
        path: str,
        query: str = "",
        authorization: str | None = None,
        request_id: str | None = None,
        body: bytes = b"",
        result_base_url: str = DEFAULT_RESULT_BASE_URL,
    ) -> Reply:
        """Answer one request; used by the transport and the server.

        Args:
            method: The HTTP method.
            path: The URL path, e.g. ``/api/v1/jobs/recordInfo``.
            query: The raw query string, without ``?``.
            authorization: The ``Authorization`` header, if any.
            request_id: The ``X-Request-ID`` header, if any.
            body: The request body.
            result_base_url: Where result URLs should point unless ``result_base_url`` was
                given to the constructor.

        Returns:
            The reply, with what the front end must do with the connection.
        """
        now = self.elapsed
        endpoint: Endpoint | Literal["other"]
        if path == CREATE_PATH:
            endpoint = "create"
        elif path == QUERY_PATH:
            endpoint = "query"
        elif path.startswith(FILES_PREFIX):
            endpoint = "result"
        else:
            endpoint = "other"
        self._counts[f"{endpoint}_requests"] += 1
        fault: FaultKind = "ok"
        task_id: str | None = None
        expected = "POST" if endpoint == "create" else "GET"
        if endpoint == "other":
            reply = Reply.envelope(404, "Not found")
        elif method.upper() != expected:
            reply = Reply.envelope(405, "Method not allowed", headers=[("allow", expected)])
        else:
            fault = self._next_fault(endpoint)
            if fault != "ok":
                self._counts["faults"] += 1
            reply, task_id = self._dispatch(
                endpoint, fault, now, path, query, authorization, request_id, body, result_base_url
            )
        self._count_status(reply)
        status = None if reply.action in ("refuse", "drop") else reply.status
        self._log.append(RequestRecord(now, endpoint, status, fault, task_id))
        return reply

    def _dispatch(
        self,
        endpoint: Endpoint,
        fault: FaultKind,
        now: float,
        path: str,
        query: str,
        authorization: str | None,
        request_id: str | None,
        body: bytes,
        result_base_url: str,
    ) -> tuple[Reply, str | None]:
        before = self._fault_before(endpoint, fault, now)
        if before is not None:
            return before, None
        if endpoint == "create":
            reply, task_id = self._create(now, authorization, request_id, body)
        elif endpoint == "query":
            reply, task_id = self._query(now, authorization, query, result_base_url)
        else:
            reply, task_id = self._result(path, authorization)
        self._fault_after(fault, reply)
        return reply, task_id

    def _count_status(self, reply: Reply) -> None:
        name = _STATUS_COUNTERS.get(reply.status)
        if name and reply.action != "refuse":
            self._counts[name] += 1

    def _fault_before(self, endpoint: Endpoint, fault: FaultKind, now: float) -> Reply | None:
        """The faults that happen in front of the provider: nothing is done."""
        if fault in ("ok", "drop_after", "slow"):
            return None
        if fault == "drop_before":
            reply = Reply(0, b"")
            reply.action = "refuse"
            return reply
        if fault == "500":
            return Reply.envelope(500, "Internal server error")
        if fault == "200_500":
            return Reply.envelope(500, "Internal server error", status=200)
        if fault == "200_429":
            # As if the 1-second window were full: wait for its end.
            length = self.time_scale
            data = self._limit_data(length - now % length, self._per_second(endpoint), 1)
            return Reply.envelope(429, "Rate limit exceeded", data, status=200)
        if fault == "record_null":
            return Reply.envelope(422, "recordInfo is null")
        status = 502 if fault == "502_html" else 503
        title = f"{status} {_HTML_PAGES[status]}"
        page = (
            f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
            f"<center><h1>{title}</h1></center>\r\n<hr><center>nginx</center>\r\n"
            "</body>\r\n</html>\r\n"
        )
        return Reply(status, page.encode(), content_type="text/html")

    def _fault_after(self, fault: FaultKind, reply: Reply) -> None:
        """The faults that happen after the provider did the work."""
        if fault == "drop_after":
            is_file = reply.content_type.startswith("image/")
            reply.action = "truncate" if is_file else "drop"
        elif fault == "slow":
            reply.action = "slow"
            reply.slow_seconds = self._faults.slow_seconds

    def _per_second(self, endpoint: Endpoint) -> int | None:
        if endpoint == "create":
            return self.limits.create_per_second
        if endpoint == "query":
            return self.limits.query_per_second
        return None

    def _limit_data(self, wait: float, limit: int | None, nominal_seconds: int) -> dict[str, Any]:
        window_seconds: float = nominal_seconds * self.time_scale
        if window_seconds.is_integer():
            window_seconds = int(window_seconds)
        return {
            "retryAfter": math.ceil(wait * 1000) / 1000,  # round up: never too early
            "limit": limit,
            "tier": self.limits.name,
            "windowSeconds": window_seconds,
        }

    def _check_auth(self, authorization: str | None) -> Reply | None:
        if authorization is not None:
            scheme, _, token = authorization.strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip() == self.api_key:
                return None
        return Reply.envelope(401, "Unauthorized: missing or invalid API key")

    def _check_rate(self, endpoint: Literal["create", "query"], now: float) -> Reply | None:
        """Admit the request in every window, or refuse it with 429 counting nothing."""
        windows = self._windows[endpoint]
        waits = [(window.wait(now), window) for window in windows]
        full = [(wait, window) for wait, window in waits if wait > 0]
        if not full:
            for window in windows:
                window.add(now)
            return None
        wait, window = max(full, key=lambda pair: pair[0])
        self._counts["rate_limited"] += 1
        self._counts[f"rate_limited_{endpoint}"] += 1
        data = self._limit_data(wait, window.limit, window.nominal_seconds)
        retry_after = str(max(1, math.ceil(data["retryAfter"])))
        return Reply.envelope(
            429, "Rate limit exceeded", data, headers=[("retry-after", retry_after)]
        )

    def _create(
        self, now: float, authorization: str | None, request_id: str | None, body: bytes
    ) -> tuple[Reply, str | None]:
        refused = self._check_auth(authorization) or self._check_rate("create", now)
        if refused:
            return refused, None
        try:
            payload: object = json.loads(body)
        except ValueError:
            return Reply.envelope(400, "Invalid JSON body"), None
        request_id = (request_id or "").strip() or None
        tasks = self._tasks
        if request_id and request_id in tasks.by_request_id:
            return self._replay(tasks.by_request_id[request_id], payload)
        problem = validate_create(payload)
        if problem:
            return Reply.envelope(*problem), None
        if self._credits is not None and self._credits <= 0:
            return Reply.envelope(402, "Insufficient credits"), None
        active = self._expire(now)
        limit = self.limits.max_active
        if limit is not None and active >= limit:
            self._counts["active_limited"] += 1
            data = {"limit": limit, "active": active}
            return Reply.envelope(409, "Active task limit exceeded", data), None
        task_id = self._new_task(now, request_id, cast("dict[str, Any]", payload))
        return Reply.envelope(200, "success", {"taskId": task_id}), task_id

    def _replay(self, index: int, payload: object) -> tuple[Reply, str | None]:
        task_id = self._tasks.task_id(index)
        if json.loads(self._tasks.params[index]) != payload:
            self._counts["conflicts"] += 1
            msg = "Request conflict: X-Request-ID was already used for a different request"
            return Reply.envelope(409, msg, {"taskId": task_id}), task_id
        self._counts["idempotent_replays"] += 1
        return Reply.envelope(200, "success", {"taskId": task_id}), task_id

    def _new_task(self, now: float, request_id: str | None, payload: dict[str, Any]) -> str:
        duration = float(self._draw_duration(payload))
        if not duration >= 0:
            raise ValueError(f"the duration callable returned {duration}, not a number >= 0")
        fail_index = -1
        complete_time_missing = False
        if self._draw_failure(payload):
            fail_index = self._task_rng.randrange(len(self._tasks.fail_codes))
            complete_time_missing = self._task_rng.random() < 0.5
        param = _dumps(payload)
        if param in self._tasks.params_seen:
            self._counts["duplicates"] += 1
        duration *= self.time_scale
        index = self._tasks.add(
            request_id=request_id,
            param=param,
            model=payload["model"],
            output_format=payload["input"].get("output_format") or "png",
            created_at=now,
            duration=duration,
            fail_index=fail_index,
            complete_time_missing=complete_time_missing,
        )
        if self._credits is not None:
            self._credits -= 1
        self._counts["tasks_created"] += 1
        heapq.heappush(self._running, now + duration)
        self._max_active = max(self._max_active, len(self._running))
        return self._tasks.task_id(index)

    def _query(
        self, now: float, authorization: str | None, query: str, result_base_url: str
    ) -> tuple[Reply, str | None]:
        refused = self._check_auth(authorization) or self._check_rate("query", now)
        if refused:
            return refused, None
        task_id = _query_value(query, "taskId").strip()
        if not task_id:
            return Reply.envelope(400, "taskId is required"), None
        index = self._tasks.find(task_id)
        if index is None:
            return Reply.envelope(404, "Task not found"), None
        record = self._record(index, now, self.result_base_url or result_base_url)
        return Reply.envelope(200, "success", record), record["taskId"]

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
                extension = "jpg" if tasks.output_format(index) == "jpeg" else "png"
                url = f"{base_url.rstrip('/')}/files/{task_id}/0.{extension}"
                result_json = _dumps({"resultUrls": [url]})
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

    def _result(self, path: str, authorization: str | None) -> tuple[Reply, str | None]:
        if authorization is not None:
            self._authorization_to_result_host = True
        parts = path[len(FILES_PREFIX) :].split("/")
        index = self._tasks.find(parts[0]) if len(parts) == 2 else None
        if index is None or self._tasks.state_at(index, self.elapsed) != "success":
            return Reply.envelope(404, "File not found"), None
        task = FakeTask(self._tasks, index)
        extension = "jpg" if task.output_format == "jpeg" else "png"
        if parts[1] != f"0.{extension}":
            return Reply.envelope(404, "File not found"), task.task_id
        data = render_image(task.prompt, task.output_format)
        content_type = "image/jpeg" if task.output_format == "jpeg" else "image/png"
        return Reply(200, data, content_type=content_type), task.task_id
