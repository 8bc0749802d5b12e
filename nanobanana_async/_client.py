"""`AsyncNanoBanana`: the client of one API key."""

from __future__ import annotations

import collections
import contextlib
import inspect
import ipaddress
import logging
import math
import os
import random
import re
import socket
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, cast

import anyio
import httpx

from ._errors import (
    ActiveTaskLimitError,
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    DecodeError,
    DownloadError,
    InvalidRequestError,
    NanoBananaError,
    RateLimitError,
    ServerError,
    TaskFailedError,
    WaitTimeoutError,
    error_for_status,
)
from ._models import ImageToImage, Request, Task, TaskResult, TaskState, TextToImage
from ._polling import DurationModel, PollPolicy
from ._retry import RetryPolicy, is_not_visible_yet, retry_after_seconds
from ._version import __version__
from ._wire import as_mapping, parse_envelope, request_body, structure_task, structure_task_id
from .limits import Limits, LimitsBackend, LimitsSnapshot

__all__ = ["DEFAULT_BASE_URL", "AsyncNanoBanana", "OnUpdate"]

logger = logging.getLogger("nanobanana_async")

DEFAULT_BASE_URL = "https://aigptimage.com"
"""The provider's API host."""

DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=10.0)
DEFAULT_MAX_DOWNLOAD_BYTES = 64 * 1024 * 1024
# Keep every pooled connection alive: httpx's default keeps 20, and a batch with more requests
# in flight than that would open and close a connection per request.
DEFAULT_POOL = httpx.Limits(max_connections=64, max_keepalive_connections=64)
_CREATE_PATH = "/api/v1/jobs/createTask"
_QUERY_PATH = "/api/v1/jobs/recordInfo"
_MAX_REQUEST_ID = 128
_REQUEST_ID_RE = re.compile(r"^[\x21-\x7e]+$")
_REMEMBERED_CREATES = 10_000
_MAX_REDIRECTS = 5
_CONFLICT_WAIT_MAX = 30.0
# The most a refusal's body may teach: larger limits and windows are not believed.
_MAX_LEARNED_LIMIT = 1_000_000
_MAX_LEARNED_WINDOW = 86_400.0
_IMAGE_SUFFIXES = {"image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp"}
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")
_LEGACY_IPV4 = re.compile(r"^(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]+)){0,3}$", re.IGNORECASE)

OnUpdate = Callable[[Task], "Awaitable[object] | object"]
"""A callback told of every state change of a task; it may be sync or async."""

Endpoint = Literal["create", "query"]


class _Secret:
    """Holds the API key so that no repr, str or traceback local shows it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "_Secret('***')"

    __str__ = __repr__


def _ip_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address a host names literally, including the legacy IPv4 forms resolvers accept.

    ``127.1``, ``2130706433`` and ``0x7f000001`` all reach 127.0.0.1, so they count as IPs.
    """
    host = host.strip("[]").rstrip(".")
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if _LEGACY_IPV4.match(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def _is_loopback_host(host: str) -> bool:
    name = host.rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    address = _ip_address(host)
    return address is not None and address.is_loopback


def _is_internal_host(host: str) -> bool:
    """Loopback, private, link-local and other addresses no public result URL should name."""
    if _is_loopback_host(host):
        return True
    address = _ip_address(host)
    if address is None:
        return False
    return (
        address.is_private
        or address.is_link_local
        or address.is_reserved
        or address.is_multicast
        or address.is_unspecified
    )


class AsyncNanoBanana:
    """The async client of the Nano Banana image API, for one API key.

    Use it as an async context manager (or call `aclose`), and share one instance across your
    app: it holds the connection pool and the limits it learns for the key.

    Args:
        api_key: The API key; defaults to the ``NANOBANANA_API_KEY`` environment variable.
        base_url: The API host; defaults to ``NANOBANANA_BASE_URL`` or the provider's.
        timeout: Seconds (or an `httpx.Timeout`) for each HTTP request. Without it, a client
            the library creates waits 60 s (10 s to connect); your own ``http_client`` keeps
            its timeouts.
        max_retries: Retries after a 5xx, a dropped connection or a timeout.
        http_client: Your `httpx.AsyncClient` for API calls; you close it.
        download_client: Your `httpx.AsyncClient` for result files; you close it. It must not
            carry credentials: result hosts never see the API key.
        tier: Seed the limits from this tier of the provider's table (e.g. ``"basic"``);
            without it every limit is learned from the provider's answers.
        max_active: A known cap on active tasks (overrides the tier's).
        limits: Where the key's limits live: your `Limits`, or a `RedisLimits` shared by
            several processes (``tier`` and ``max_active`` then seed it). Default: a new
            in-process `Limits`.
        retry: Finer control of retries; ``max_retries`` overrides its count.
        poll: How to poll before any task duration has been seen.
        max_download_bytes: The largest result file accepted.

    Raises:
        AuthenticationError: No API key was given or found in the environment.
        InvalidRequestError: A setting is out of range.
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | httpx.URL | None = None,
        timeout: float | httpx.Timeout | None = None,
        max_retries: int | None = None,
        http_client: httpx.AsyncClient | None = None,
        download_client: httpx.AsyncClient | None = None,
        tier: str | None = None,
        max_active: int | None = None,
        retry: RetryPolicy | None = None,
        poll: PollPolicy | None = None,
        max_download_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES,
        limits: LimitsBackend | None = None,
    ) -> None:
        key = api_key if api_key is not None else os.environ.get("NANOBANANA_API_KEY")
        if not key or not key.strip():
            raise AuthenticationError(
                "no API key: pass api_key= or set the NANOBANANA_API_KEY environment variable",
                code=401,
                http_status=0,
            )
        self._api_key = _Secret(key.strip())
        url = httpx.URL(str(base_url or os.environ.get("NANOBANANA_BASE_URL") or DEFAULT_BASE_URL))
        if url.scheme not in ("http", "https") or not url.host:
            raise InvalidRequestError("base_url", f"must be an http(s) URL, got {str(url)!r}")
        self._base_url = url
        self._loopback = _is_loopback_host(url.host)
        if url.scheme == "http" and not self._loopback:
            raise InvalidRequestError(
                "base_url", "must use https:// (plain http is allowed only on loopback)"
            )
        prefix = url.path.rstrip("/")
        self._create_url = url.copy_with(path=prefix + _CREATE_PATH, query=None)
        self._query_url = url.copy_with(path=prefix + _QUERY_PATH, query=None)

        retry = retry or RetryPolicy()
        if max_retries is not None:
            if max_retries < 0:
                raise InvalidRequestError("max_retries", "must be 0 or more")
            retry = RetryPolicy(
                max_retries=max_retries,
                backoff_base=retry.backoff_base,
                backoff_max=retry.backoff_max,
                max_rate_limit_wait=retry.max_rate_limit_wait,
                not_found_grace=retry.not_found_grace,
            )
        self._retry = retry
        self._poll = poll or PollPolicy()
        if max_download_bytes < 1:
            raise InvalidRequestError("max_download_bytes", "must be at least 1")
        self._max_download_bytes = max_download_bytes
        try:
            if limits is None:
                self._limits: LimitsBackend = Limits(tier=tier, max_active=max_active)
            else:
                limits.seed(tier=tier, max_active=max_active)
                self._limits = limits
        except ValueError as exc:
            raise InvalidRequestError("tier" if tier else "max_active", str(exc)) from None

        if isinstance(timeout, (int, float)):
            timeout = httpx.Timeout(float(timeout))
        self._timeout: httpx.Timeout | None = timeout
        self._owns_http = http_client is None
        self._http = http_client or httpx.AsyncClient(
            timeout=timeout or DEFAULT_TIMEOUT, follow_redirects=False, limits=DEFAULT_POOL
        )
        self._owns_download = download_client is None
        self._download = download_client or httpx.AsyncClient(
            timeout=timeout or DEFAULT_TIMEOUT, follow_redirects=False
        )
        self._headers = {
            "User-Agent": f"nanobanana-async/{__version__}",
            "Accept": "application/json",
        }
        self._rng = random.Random()  # noqa: S311 - jitter, not cryptography
        self._durations = DurationModel()
        self._created: collections.OrderedDict[str, float] = collections.OrderedDict()
        self._closed = False

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> AsyncNanoBanana:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP clients this client created. Safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        with anyio.CancelScope(shield=True):
            if self._owns_http:
                await self._http.aclose()
            if self._owns_download:
                await self._download.aclose()

    def __repr__(self) -> str:
        # getattr: a half-built client (one whose __init__ raised) must still have a repr.
        base_url = getattr(self, "_base_url", None)
        return f"<AsyncNanoBanana base_url={str(base_url)!r} api_key='***'>"

    # -- what the client knows ---------------------------------------------------------------

    @property
    def base_url(self) -> httpx.URL:
        """The API host this client talks to."""
        return self._base_url

    @property
    def limits(self) -> LimitsBackend:
        """The limits of this client's key, shared by every caller of the client."""
        return self._limits

    @property
    def durations(self) -> DurationModel:
        """The task durations seen so far, which time the polls."""
        return self._durations

    @property
    def poll_policy(self) -> PollPolicy:
        """How tasks are polled before any duration has been seen."""
        return self._poll

    def limits_snapshot(self) -> LimitsSnapshot:
        """What the client knows now of its key's limits."""
        return self._limits.snapshot()

    # -- the API -----------------------------------------------------------------------------

    async def create_task(
        self, request: Request, *, request_id: str | None = None, timeout: float | None = None
    ) -> str:
        """Create a task; returns its id at once, without waiting for the image.

        The request carries an ``X-Request-ID`` (a fresh UUID4 unless you give one) that is
        reused on every retry, so a retried create never bills twice. Keep the id if you may
        retry this logical request later, e.g. after a crash.

        Args:
            request: A `TextToImage` or `ImageToImage`.
            request_id: The idempotency key; generated if None.
            timeout: The most seconds to spend, retries and limit waits included.

        Returns:
            The provider's task id.

        Raises:
            InvalidRequestError: The request or request id is not valid; nothing was sent.
            APIStatusError: The provider refused (see its subclasses).
            APIConnectionError: No answer after every retry.
        """
        deadline = None if timeout is None else anyio.current_time() + timeout
        return await self._create(request, request_id, deadline)

    async def _create(
        self,
        request: Request,
        request_id: str | None,
        deadline: float | None,
        holder: object | None = None,
    ) -> str:
        """Create a task; ``holder`` is the active-task slot the caller holds for it, if any."""
        body = self._body(request)
        request_id = _check_request_id(request_id)
        data = await self._call(
            "create",
            "POST",
            self._create_url,
            json=body,
            request_id=request_id,
            deadline=deadline,
            holder=holder,
        )
        task_id = structure_task_id(data)
        self._remember_created(task_id)
        if holder is not None:
            self._limits.active.mark_running(holder)
        self._limits.active.on_created()
        logger.debug("created task %s (request id %s)", task_id, request_id)
        return task_id

    async def get_task(self, task_id: str) -> Task:
        """Read a task once (one ``recordInfo`` call, plus retries).

        Right after this client created the task, a 404 is taken as "not visible yet" and
        retried for a short grace period.

        Raises:
            TaskNotFoundError: The provider does not know the task.
            APIStatusError: The provider refused (see its subclasses).
            APIConnectionError: No answer after every retry.
            DecodeError: The answer could not be understood.
        """
        return await self._get_task(_check_task_id(task_id), deadline=None)

    async def wait_for_result(
        self, task_id: str, *, timeout: float = 600.0, on_update: OnUpdate | None = None
    ) -> TaskResult:
        """Poll a task until it finishes, and return its result.

        Polls start soon and grow apart; once the client has seen tasks finish, they are timed
        from those durations. A 429 on a poll waits as the provider asks, within the deadline.

        Args:
            task_id: The task to wait for.
            timeout: The most seconds to wait.
            on_update: Called with the `Task` whenever its state changes (sync or async).

        Returns:
            The finished task's result URLs.

        Raises:
            TaskFailedError: The task ended in ``fail``.
            WaitTimeoutError: The deadline passed first; ``task_id`` lets you wait again.
            DecodeError: The task succeeded without result URLs, or an answer was unreadable.
        """
        task_id = _check_task_id(task_id)
        _check_timeout(timeout)
        return await self._wait(task_id, anyio.current_time() + timeout, timeout, on_update)

    async def _wait(
        self, task_id: str, deadline: float, timeout: float, on_update: OnUpdate | None
    ) -> TaskResult:
        """Poll until the task finishes or ``deadline`` (which may have passed) comes."""
        started = anyio.current_time()
        created = self._created.get(task_id)
        last: Task | None = None
        failure: NanoBananaError | None = None
        polls = 0
        with anyio.CancelScope(deadline=deadline):
            while True:
                if created is not None or polls:
                    age = anyio.current_time() - (created if created is not None else started)
                    await anyio.sleep(self._durations.next_delay(age, polls, self._poll, self._rng))
                try:
                    task = await self._get_task(task_id, deadline=deadline)
                except (APIConnectionError, ServerError, RateLimitError) as exc:
                    # The task runs on regardless: a poll that failed even after its retries
                    # (or whose next retry would pass the deadline) is no reason to give up
                    # the wait. Poll again on schedule; the deadline decides.
                    logger.info("polling task %s failed, will poll again: %s", task_id, exc)
                    failure = exc
                    polls += 1
                    continue
                polls += 1
                if last is None or task.raw_state != last.raw_state:
                    if task.state is TaskState.UNKNOWN:
                        logger.info(
                            "task %s is in a state this client does not know: %r",
                            task_id,
                            task.raw_state,
                        )
                    await _notify(on_update, task)
                last = task
                if task.is_finished:
                    self._observe_duration(task, created)
                    return self._result(task)
        raise WaitTimeoutError(task_id, timeout, last) from failure

    async def generate(
        self,
        request: Request,
        *,
        request_id: str | None = None,
        timeout: float = 600.0,
        on_update: OnUpdate | None = None,
    ) -> TaskResult:
        """Create a task and wait for its result.

        The call holds one of the key's active-task slots while the task runs, so many
        concurrent ``generate()`` calls stay within the key's active-task limit together.

        Args:
            request: A `TextToImage` or `ImageToImage`.
            request_id: The idempotency key; generated if None.
            timeout: The most seconds for everything: waiting for a slot, creating, waiting.
            on_update: Called with the `Task` whenever its state changes.

        Returns:
            The finished task's result URLs.

        Raises:
            TaskFailedError: The task ended in ``fail``.
            WaitTimeoutError: The task did not finish in time; ``task_id`` lets you wait again.
            APITimeoutError: No slot freed up in time, so nothing was created.
            APIStatusError: The provider refused the create (see its subclasses).
        """
        self._body(request)  # fail on a bad request before waiting for a slot
        request_id = _check_request_id(request_id)
        _check_timeout(timeout)
        deadline = anyio.current_time() + timeout
        holder = object()
        with anyio.move_on_after(timeout):
            await self._limits.active.acquire(holder)
        if not self._limits.active.holds(holder):
            raise APITimeoutError(
                f"no active-task slot came free within {timeout:g} s; nothing was created"
            )
        try:
            task_id = await self._create(request, request_id, deadline, holder)
            # The create may have used up the whole budget: then this is a WaitTimeoutError
            # that carries the task id, not a complaint about a zero timeout.
            return await self._wait(task_id, deadline, timeout, on_update)
        finally:
            self._limits.active.release(holder)

    async def download(self, url: str, *, max_bytes: int | None = None) -> bytes:
        """Fetch one result file into memory.

        The file is fetched by a separate HTTP client that never sends the API key, over
        https only (plain http only when the API itself is on loopback), following at most
        five redirects, each checked the same way, and refused past ``max_bytes``.

        Raises:
            DownloadError: The URL is refused, the host answered an error, or the file is
                too large.
            APIConnectionError: The host could not be reached.
        """
        chunks: list[bytes] = []
        async with self._open_download(url) as response:
            limit = self._check_size(response, max_bytes)
            size = 0
            # aclosing: leaving the loop early must not leave httpx's generator to the GC.
            async with contextlib.aclosing(_chunks(response)) as stream:
                async for chunk in stream:
                    size += len(chunk)
                    if size > limit:
                        raise DownloadError(f"result file is larger than {limit} bytes")
                    chunks.append(chunk)
        return b"".join(chunks)

    async def save_result(
        self,
        result: TaskResult,
        directory: str | os.PathLike[str],
        *,
        stem: str | None = None,
        max_bytes: int | None = None,
    ) -> list[Path]:
        """Download every image of a result into ``directory``.

        Each file is streamed to a temporary file in the directory and renamed into place, so
        a file with the final name is always complete. Files are named after the task
        (``<task_id>.png``, or ``<task_id>-1.png``, ``-2``... for several images) or ``stem``,
        with the suffix the host's content type gives. If a URL has expired (403/404), the task
        is read again once for fresh URLs.

        Returns:
            The paths written, in the order of ``result.urls``.

        Raises:
            DownloadError: A file could not be fetched safely.
        """
        folder = Path(directory)
        await anyio.Path(folder).mkdir(parents=True, exist_ok=True)
        base = _UNSAFE_NAME.sub("_", stem or result.task_id) or "image"
        urls = list(result.urls)
        paths: list[Path] = []
        refreshed = False
        for index in range(len(urls)):
            name = base if len(urls) == 1 else f"{base}-{index + 1}"
            try:
                paths.append(await self._save_one(urls[index], folder, name, max_bytes))
            except DownloadError as exc:
                if refreshed or exc.status not in (403, 404):
                    raise
                refreshed = True
                task = await self.get_task(result.task_id)
                if len(task.urls) != len(urls) or task.urls[index] == urls[index]:
                    raise DownloadError(
                        f"result URL of task {result.task_id} has expired ({exc.status})",
                        status=exc.status,
                    ) from exc
                urls = list(task.urls)
                paths.append(await self._save_one(urls[index], folder, name, max_bytes))
        return paths

    # -- internals ---------------------------------------------------------------------------

    @staticmethod
    def _body(request: object) -> dict[str, Any]:
        if not isinstance(request, (TextToImage, ImageToImage)):
            raise InvalidRequestError(
                "request", f"must be a TextToImage or ImageToImage, not {type(request).__name__}"
            )
        return request_body(request)

    def _remember_created(self, task_id: str) -> None:
        self._created[task_id] = anyio.current_time()
        self._created.move_to_end(task_id)
        while len(self._created) > _REMEMBERED_CREATES:
            self._created.popitem(last=False)

    def _observe_duration(self, task: Task, created: float | None) -> None:
        seen = None if created is None else anyio.current_time() - created
        elapsed = task.elapsed
        if elapsed is not None and (seen is None or elapsed <= seen + 1.0):
            self._durations.observe(elapsed)
        elif seen is not None:
            self._durations.observe(seen)

    def _result(self, task: Task) -> TaskResult:
        if task.state is TaskState.FAIL:
            raise TaskFailedError(task)
        if not task.urls:
            raise DecodeError(f"task {task.task_id} succeeded without result URLs")
        return TaskResult(task_id=task.task_id, urls=task.urls, task=task)

    async def _get_task(self, task_id: str, *, deadline: float | None) -> Task:
        data = await self._call(
            "query",
            "GET",
            self._query_url,
            params={"taskId": task_id},
            deadline=deadline,
            task_id=task_id,
        )
        return structure_task(data, task_id=task_id)

    async def _call(
        self,
        endpoint: Endpoint,
        method: str,
        url: httpx.URL,
        *,
        json: Any = None,
        params: dict[str, str] | None = None,
        request_id: str | None = None,
        deadline: float | None = None,
        task_id: str | None = None,
        holder: object | None = None,
    ) -> Any:
        """Send one logical request, with every retry it deserves; returns ``data``."""
        if self._closed:
            raise NanoBananaError("this client is closed")
        limiter = self._limits.endpoint(endpoint)
        # httpx.Headers masks Authorization in its repr, so even a traceback that shows
        # locals (Sentry, rich) does not print the key.
        headers = httpx.Headers(self._headers)
        headers["Authorization"] = f"Bearer {self._api_key.reveal()}"
        if request_id is not None:
            headers["X-Request-ID"] = request_id
        timeout = self._timeout if self._timeout is not None else httpx.USE_CLIENT_DEFAULT
        attempt = 0
        rate_waited = 0.0
        started = anyio.current_time()
        while True:
            sent_at = await limiter.acquire()
            try:
                request = self._http.build_request(
                    method, url, json=json, params=params, headers=headers, timeout=timeout
                )
                request.stream = _Body(request.content)
                response = await self._http.send(request)
            except httpx.TimeoutException as exc:
                error: NanoBananaError = APITimeoutError(
                    f"{endpoint}: {type(exc).__name__} after the client's timeout"
                )
                cause: BaseException = exc
            except httpx.TransportError as exc:
                error = APIConnectionError(f"{endpoint}: {type(exc).__name__}: {exc}")
                cause = exc
            else:
                try:
                    data = self._interpret(response, request_id)
                except APIStatusError as exc:
                    error, cause = exc, exc
                else:
                    limiter.on_success()
                    logger.debug("%s %s -> %s", method, url.path, response.status_code)
                    return data
            delay = self._retry_delay(endpoint, error, attempt, task_id, started, sent_at)
            if delay is None:
                raise error from (cause if cause is not error else None)
            if isinstance(error, RateLimitError):
                rate_waited += delay
                if rate_waited > self._retry.max_rate_limit_wait:
                    raise error
            elif not isinstance(error, ActiveTaskLimitError):
                attempt += 1
            now = anyio.current_time()
            if deadline is not None and now + delay > deadline:
                raise error from (cause if cause is not error else None)
            logger.info("%s: %s; retrying in %.2f s", endpoint, error, delay)
            if isinstance(error, ActiveTaskLimitError):
                if not await self._wait_for_slot(holder, delay, deadline):
                    raise error
            elif delay > 0 and not isinstance(error, RateLimitError):
                await anyio.sleep(delay)

    async def _wait_for_slot(
        self, holder: object | None, delay: float, deadline: float | None
    ) -> bool:
        """After a 409: queue again for a slot, or wait for some slot to be released.

        A caller holding a slot gives it back and waits its turn for the next one, so callers
        refused together do not all retry at the next release. While none of our tasks runs,
        the key is full of someone else's work, and only a timer can tell when it frees.

        Returns:
            False if the deadline passed before the caller got its slot back.
        """
        active = self._limits.active
        if holder is None or not active.running:
            await active.wait_for_release(delay)
            return True
        active.release(holder)
        with anyio.move_on_after(math.inf if deadline is None else deadline - anyio.current_time()):
            await active.acquire(holder)
        return active.holds(holder)

    def _retry_delay(
        self,
        endpoint: Endpoint,
        error: NanoBananaError,
        attempt: int,
        task_id: str | None,
        started: float,
        sent_at: float,
    ) -> float | None:
        """Seconds to wait before the next try, or None if the error is final."""
        if isinstance(error, RateLimitError):
            body = as_mapping(error.data)
            limit = window = None
            if body is not None:
                limit = _positive_number(body.get("limit"), _MAX_LEARNED_LIMIT)
                window = _positive_number(body.get("windowSeconds"), _MAX_LEARNED_WINDOW)
            self._limits.endpoint(endpoint).on_rate_limited(
                error.retry_after,
                limit=None if limit is None else int(limit),
                window=window,
                sent_at=sent_at,
            )
            if error.retry_after is not None:
                return error.retry_after
            return self._retry.backoff(attempt, self._rng)
        if isinstance(error, ActiveTaskLimitError) and endpoint == "create":
            body = as_mapping(error.data)
            limit = (
                _positive_number(body.get("limit"), _MAX_LEARNED_LIMIT)
                if body is not None
                else None
            )
            self._limits.active.on_conflict(None if limit is None else int(limit))
            return min(_CONFLICT_WAIT_MAX, self._retry.backoff_base * 2.0 ** min(attempt + 2, 10))
        if isinstance(error, APIStatusError) and task_id is not None and is_not_visible_yet(error):
            created = self._created.get(task_id)
            now = anyio.current_time()
            if created is not None and now - created < self._retry.not_found_grace:
                return min(2.0, 0.1 * 2.0 ** min(int(now - started), 4))
            return None
        if isinstance(error, APIConnectionError) or (
            isinstance(error, APIStatusError) and self._retry.is_retryable(error)
        ):
            if attempt >= self._retry.max_retries:
                return None
            return self._retry.backoff(attempt, self._rng)
        return None

    @staticmethod
    def _interpret(response: httpx.Response, request_id: str | None) -> Any:
        """The ``data`` of a successful answer; raises the matching error otherwise."""
        envelope = parse_envelope(response.content)
        status = response.status_code
        if status >= 400 or (
            envelope is not None and envelope.code is not None and not 200 <= envelope.code < 300
        ):
            code = status
            if envelope is not None and envelope.code is not None and envelope.code >= 400:
                code = envelope.code
            message = envelope.message if envelope is not None else ""
            if not message:
                kind = response.headers.get("content-type", "").split(";")[0].strip()
                # HTTP/2 has no reason phrase, and HTTP/1.1 servers may send an empty one.
                reason = (
                    response.reason_phrase
                    or httpx.codes.get_reason_phrase(status)
                    or f"HTTP {status}"
                )
                message = reason + (f" ({kind} body)" if kind else "")
            data = envelope.data if envelope is not None else None
            retry_after = retry_after_seconds(data, response.headers) if code == 429 else None
            raise error_for_status(
                code,
                message,
                http_status=status,
                data=data,
                request_id=request_id,
                retry_after=retry_after,
            )
        if envelope is None:
            raise DecodeError(
                f"HTTP {status} answer is not a JSON object: {response.content[:200]!r}"
            )
        return envelope.data

    # -- downloads ---------------------------------------------------------------------------

    def _check_download_url(self, url: str | httpx.URL) -> httpx.URL:
        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, TypeError) as exc:
            raise DownloadError(f"not a URL: {exc}") from None
        where = f"{parsed.scheme}://{parsed.host}{parsed.path}"
        if parsed.scheme == "http" and not self._loopback:
            raise DownloadError(f"refusing plain-http result URL {where}: https only")
        if parsed.scheme not in ("https", "http") or not parsed.host:
            raise DownloadError(f"refusing result URL {where}: https only")
        if _is_internal_host(parsed.host) and not self._loopback:
            raise DownloadError(f"refusing result URL on an internal address: {where}")
        return parsed

    def _check_size(self, response: httpx.Response, max_bytes: int | None) -> int:
        limit = max_bytes if max_bytes is not None else self._max_download_bytes
        declared = response.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise DownloadError(f"result file is {declared} bytes, more than {limit}")
        return limit

    @contextlib.asynccontextmanager
    async def _open_download(self, url: str) -> AsyncGenerator[httpx.Response, None]:
        """Open a result URL, following (and re-checking) redirects by hand."""
        if self._closed:
            raise NanoBananaError("this client is closed")
        current = self._check_download_url(url)
        for _ in range(_MAX_REDIRECTS + 1):
            request = self._download.build_request(
                "GET", current, headers={"User-Agent": self._headers["User-Agent"]}
            )
            request.headers.pop("Authorization", None)
            try:
                response = await self._download.send(request, stream=True)
            except httpx.TimeoutException as exc:
                raise APITimeoutError(f"download timed out: {type(exc).__name__}") from exc
            except httpx.TransportError as exc:
                raise APIConnectionError(f"download failed: {type(exc).__name__}: {exc}") from exc
            try:
                # has_redirect_location, not is_redirect: a 3xx without a Location would
                # otherwise fetch the same URL again until the redirect limit.
                if response.has_redirect_location:
                    current = self._check_download_url(current.join(response.headers["location"]))
                    continue
                if response.status_code != 200:
                    raise DownloadError(
                        f"result host answered {response.status_code} for "
                        f"{current.host}{current.path}",
                        status=response.status_code,
                    )
                yield response
                return
            finally:
                with anyio.CancelScope(shield=True):
                    await response.aclose()
        raise DownloadError(f"more than {_MAX_REDIRECTS} redirects for a result URL")

    async def _save_one(self, url: str, folder: Path, name: str, max_bytes: int | None) -> Path:
        async with self._open_download(url) as response:
            limit = self._check_size(response, max_bytes)
            kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
            suffix = _IMAGE_SUFFIXES.get(kind) or _suffix_from_url(response.url) or ".png"
            target = folder / f"{name}{suffix}"
            partial = folder / f".{name}{suffix}.{uuid.uuid4().hex[:8]}.part"
            size = 0
            try:
                async with (
                    await anyio.open_file(partial, "wb") as file,
                    contextlib.aclosing(_chunks(response)) as stream,
                ):
                    async for chunk in stream:
                        size += len(chunk)
                        if size > limit:
                            raise DownloadError(f"result file is larger than {limit} bytes")
                        await file.write(chunk)
                await anyio.Path(partial).replace(target)
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await anyio.Path(partial).unlink(missing_ok=True)
                raise
        return target


class _Body(httpx.AsyncByteStream):
    """A request body sent without an async generator.

    httpx iterates its own request bodies through an async generator; a request cancelled
    while its body is being sent leaves that generator to the garbage collector, and trio
    warns of it (encode/httpx#3686). This one has nothing to finalize.
    """

    __slots__ = ("_data",)

    def __init__(self, data: bytes) -> None:
        self._data = data

    def __aiter__(self) -> AsyncIterator[bytes]:
        return _Once(self._data)


class _Once:
    """An async iterator yielding one chunk (none if it is empty)."""

    __slots__ = ("_data",)

    def __init__(self, data: bytes) -> None:
        self._data: bytes | None = data or None

    def __aiter__(self) -> _Once:
        return self

    async def __anext__(self) -> bytes:
        data, self._data = self._data, None
        if data is None:
            raise StopAsyncIteration
        return data


def _chunks(response: httpx.Response) -> AsyncGenerator[bytes, None]:
    """The body's chunks: httpx makes a generator, though it types it as a mere iterator."""
    return cast("AsyncGenerator[bytes, None]", response.aiter_bytes())


def _suffix_from_url(url: httpx.URL) -> str | None:
    suffix = Path(url.path).suffix.lower()
    if suffix in (".png", ".webp"):
        return suffix
    if suffix in (".jpg", ".jpeg"):
        return ".jpg"
    return None


def _positive_number(value: object, maximum: float) -> float | None:
    """A number from a provider's body, if it is positive and at most ``maximum``.

    Bigger values are a server bug (or hostile), and learning them would break the pacing:
    ``1e400`` is infinite and ``10**400`` does not even convert to a float.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if 0 < value <= maximum else None


def _check_request_id(request_id: object) -> str:
    if request_id is None:
        return str(uuid.uuid4())
    if (
        not isinstance(request_id, str)
        or len(request_id) > _MAX_REQUEST_ID
        or not _REQUEST_ID_RE.match(request_id)
    ):
        raise InvalidRequestError(
            "request_id",
            f"must be 1 to {_MAX_REQUEST_ID} printable ASCII characters without spaces",
        )
    return request_id


def _check_task_id(task_id: object) -> str:
    if not isinstance(task_id, str) or not task_id.strip():
        raise InvalidRequestError("task_id", "must be a non-empty string")
    return task_id


def _check_timeout(timeout: float) -> None:
    if not timeout > 0:
        raise InvalidRequestError("timeout", f"must be more than 0 seconds, got {timeout!r}")


async def _notify(on_update: OnUpdate | None, task: Task) -> None:
    if on_update is None:
        return
    outcome = on_update(task)
    if inspect.isawaitable(outcome):
        await outcome
