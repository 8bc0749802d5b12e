"""`AsyncNanoBanana`: the client of one API key: its configuration and its public verbs.

The verbs are thin: requests go through the engine's call loop (`_calls`), waits through its
one poll loop (`_polling`), result files through the downloader (`_download`).
"""

from __future__ import annotations

from types import TracebackType
from typing import NamedTuple

import anyio
import httpx

from ._calls import Caller
from ._config import (
    DEFAULT_CREATE_TIMEOUT,
    DEFAULT_MAX_DOWNLOAD_BYTES,
    DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_POOL,
    DEFAULT_QUERY_TIMEOUT,
    DEFAULT_TIMEOUT,
    DEFAULT_WAIT_TIMEOUT,
    check_api_key,
    check_at_least_one,
    check_base_url,
    check_priority,
    check_request_id,
    check_task_id,
    check_timeout,
    retry_policy,
    timeouts,
)
from ._download import Downloader
from ._engine import Engine
from ._models import ImageRequest, Task, TaskResult
from ._polling import (
    DurationModel,
    OnUpdate,
    PollPlanner,
    PollPolicy,
    result_of,
)
from ._publish import ImageHost, ImagePublisher
from ._results import ResultFiles
from ._retry import RetryPolicy
from ._secret import Secret
from ._telemetry import Telemetry, recorder_for
from ._variants import RawResponses, shared_engine
from ._version import __version__
from .limits import ConnectedLimits, Limits, LimitsBackend, LimitsSnapshot, Priority, TierName

__all__ = ["AsyncNanoBanana"]


class _Settings(NamedTuple):
    """The constructor's settings a `AsyncNanoBanana.with_options` client starts from."""

    secret: Secret
    timeout: float | httpx.Timeout | None
    retry: RetryPolicy
    max_download_bytes: int
    max_response_bytes: int
    telemetry: Telemetry | None


class AsyncNanoBanana(ResultFiles):
    """The async client of the Nano Banana image API, for one API key.

    Use it as an async context manager (or call `aclose`), and share one instance across your
    app: it holds the connection pool and the limits it learns for the key.

    Every verb that can wait ends by its deadline, whatever the server does: ``timeout=`` on
    the verb bounds the whole call (pacing, retries, 409 and 429 waits included), and each
    HTTP exchange within it is bounded as a whole (connect, headers and body) by the client's
    ``timeout``. Answers are read with a size cap.

    Args:
        api_key: The API key; defaults to the ``NANOBANANA_API_KEY`` environment variable.
        base_url: The API host; defaults to ``NANOBANANA_BASE_URL`` or the provider's.
        timeout: Seconds one HTTP exchange may take, whole (or an `httpx.Timeout` for each
            phase, whose largest value then bounds the whole). Default: 60 s (10 s to
            connect); your own ``http_client`` keeps its per-phase timeouts.
        max_retries: Retries after a 5xx, a dropped connection or a timeout.
        http_client: Your `httpx.AsyncClient` for API calls; you close it.
        download_client: Your `httpx.AsyncClient` for result files; you close it. It must not
            carry credentials: result hosts never see the API key.
        tier: Seed the limits from this tier of the provider's table (e.g. ``"basic"``);
            without it every limit is learned from the provider's answers.
        max_active: A known cap on active tasks (overrides the tier's).
        limits: Where the key's limits live: your `Limits`, or a `RedisLimits` shared by
            several processes (``tier`` and ``max_active`` then seed it). Default: a new
            in-process `Limits`. A `RedisLimits` not yet entered is entered by the client's
            ``async with`` for the client's lifetime; enter it yourself to share it among
            several clients.
        retry: Finer control of retries; ``max_retries`` overrides its count.
        poll: How to poll before any task duration has been seen.
        max_download_bytes: The largest result file accepted.
        max_response_bytes: The largest API answer accepted (decoded bytes); a larger one
            fails with `ResponseTooLargeError` and its connection is dropped.
        image_host: Where local input images (files, bytes) of an `ImageToImage` are
            published for the provider to fetch, e.g. an `S3ImageHost`; you close it.
            Without one, a request holding local images is refused before it is sent.
        telemetry: What the client records with OpenTelemetry (the ``[otel]`` extra), and
            where: see `Telemetry`. By default spans and metrics go to the application's
            global providers, and prompts are left out; nothing is recorded until the
            application configures an OpenTelemetry SDK.

    Raises:
        ConfigurationError: No API key was given or found in the environment, or a setting
            is out of range.
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
        tier: TierName | None = None,
        max_active: int | None = None,
        retry: RetryPolicy | None = None,
        poll: PollPolicy | None = None,
        max_download_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        limits: LimitsBackend | None = None,
        image_host: ImageHost | None = None,
        telemetry: Telemetry | None = None,
    ) -> None:
        secret = check_api_key(api_key)
        url, loopback = check_base_url(base_url)
        self._base_url = url
        retry = retry_policy(retry, max_retries)
        # Kept for `with_options`, which builds a client of the same settings.
        self._settings = _Settings(
            secret, timeout, retry, max_download_bytes, max_response_bytes, telemetry
        )
        check_at_least_one(max_download_bytes=max_download_bytes)
        check_at_least_one(max_response_bytes=max_response_bytes)
        if limits is None:
            limits = Limits(tier=tier, max_active=max_active)
        else:
            limits.seed(tier=tier, max_active=max_active)
        per_phase, exchange = timeouts(timeout)
        self._owns_http = http_client is None
        self._http = http_client or httpx.AsyncClient(
            timeout=per_phase or DEFAULT_TIMEOUT, follow_redirects=False, limits=DEFAULT_POOL
        )
        self._owns_download = download_client is None
        self._download = download_client or httpx.AsyncClient(
            timeout=per_phase or DEFAULT_TIMEOUT, follow_redirects=False
        )
        user_agent = f"nanobanana-async/{__version__}"
        recorder = recorder_for(telemetry, limits=limits, server_address=url.host)
        caller = Caller(
            http=self._http,
            base_url=url,
            secret=secret,
            user_agent=user_agent,
            limits=limits,
            retry=retry,
            timeout=per_phase,
            exchange_timeout=exchange,
            max_response_bytes=max_response_bytes,
            telemetry=recorder,
        )
        self._poll = poll or PollPolicy()
        planner = PollPlanner.for_limits(self._poll, DurationModel(), limits)
        publisher = None if image_host is None else ImagePublisher(image_host)
        self._engine = Engine(caller, planner, publisher)
        self._downloader = Downloader(
            self._download,
            user_agent=user_agent,
            allow_loopback=loopback,
            max_bytes=max_download_bytes,
            telemetry=recorder,
            secret=secret,
        )
        self._entered_limits: ConnectedLimits | None = None
        self._closed = False

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> AsyncNanoBanana:
        """Enter the client; limits that must be entered and are not, it enters for its life.

        A `RedisLimits` given not yet entered is entered here and exited when the client
        closes; one already entered (by you, or by another client) is used as it is and left
        to whoever entered it.
        """
        limits = self._engine.limits
        if isinstance(limits, ConnectedLimits) and not limits.entered:
            try:
                await limits.__aenter__()
            except BaseException:
                await self.aclose()  # the `async with` block never runs: close what it opened
                raise
            self._entered_limits = limits
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP clients this client created, and exit the limits it entered.

        Safe to call more than once. Limits the client entered (see `__aenter__`) are exited
        here, so close the client in the task that entered it, as ``async with`` does.
        """
        if self._closed:
            return
        self._closed = True
        self._engine.caller.closed = self._downloader.closed = True
        try:
            with anyio.CancelScope(shield=True):
                if self._owns_http:
                    await self._http.aclose()
                if self._owns_download:
                    await self._download.aclose()
        finally:
            # Outside the shield: the limits' task group was entered before that scope, and
            # cancel scopes end in the order they began (RedisLimits shields its own closing).
            limits, self._entered_limits = self._entered_limits, None
            if limits is not None:
                await limits.__aexit__(None, None, None)

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
    def image_host(self) -> ImageHost | None:
        """Where this client publishes local input images, if anywhere."""
        publisher = self._engine.publisher
        return None if publisher is None else publisher.host

    @property
    def limits(self) -> LimitsBackend:
        """The limits of this client's key, shared by every caller of the client."""
        return self._engine.limits

    @property
    def durations(self) -> DurationModel:
        """The task durations seen so far, which time the polls."""
        return self._engine.planner.durations

    @property
    def poll_policy(self) -> PollPolicy:
        """How tasks are polled before any duration has been seen."""
        return self._poll

    @property
    def engine(self) -> Engine:
        """The call loop and poll planner this client's verbs share with a `BatchRunner`.

        Internal: its interface may change in any release.
        """
        return self._engine

    def limits_snapshot(self) -> LimitsSnapshot:
        """What the client knows now of its key's limits."""
        return self._engine.limits.snapshot()

    # -- variants ----------------------------------------------------------------------------

    def with_options(
        self,
        *,
        timeout: float | httpx.Timeout | None = None,
        max_retries: int | None = None,
        retry: RetryPolicy | None = None,
        poll: PollPolicy | None = None,
    ) -> AsyncNanoBanana:
        """A client like this one with some options changed, sharing all the rest.

        It shares the connection pools, the key's limits, the poll planner (or, with
        ``poll``, the task durations seen) and the memory of recent creates, so it paces
        itself with this client. Closing it closes nothing shared; close this client when
        both are done. ``client.with_options(timeout=5).get_task(task_id)`` is one call with
        other options.

        Args:
            timeout: Seconds one HTTP exchange may take (as for the constructor).
            max_retries: Retries after a 5xx, a dropped connection or a timeout.
            retry: Finer control of retries; ``max_retries`` overrides its count.
            poll: How to poll before any task duration has been seen.

        Raises:
            ConfigurationError: An option is out of range.
        """
        settings = self._settings
        derived = AsyncNanoBanana(
            settings.secret.reveal(),
            base_url=self._base_url,
            timeout=timeout if timeout is not None else settings.timeout,
            max_retries=max_retries,
            retry=retry or settings.retry,
            poll=poll or self._poll,
            http_client=self._http,
            download_client=self._download,
            limits=self.limits,
            max_download_bytes=settings.max_download_bytes,
            max_response_bytes=settings.max_response_bytes,
            telemetry=settings.telemetry,
        )
        derived._engine = shared_engine(derived, self, same_poll=poll is None)
        return derived

    @property
    def with_raw_response(self) -> RawResponses:
        """The calls that return a `RawResponse`: the value, HTTP status, headers, request id.

        ``raw = await client.with_raw_response.create_task(request)`` gives ``raw.value`` (the
        task id), ``raw.http_status``, ``raw.headers`` and ``raw.request_id``.
        """
        return RawResponses(self)

    # -- the API -----------------------------------------------------------------------------

    async def create_task(
        self,
        request: ImageRequest,
        *,
        request_id: str | None = None,
        timeout: float = DEFAULT_CREATE_TIMEOUT,
        priority: Priority = "interactive",
    ) -> str:
        """Create a task; returns its id at once, without waiting for the image.

        The request carries an ``X-Request-ID`` (a fresh UUID4 unless you give one) that is
        reused on every retry, so a retried create never bills twice. Keep the id if you may
        retry this logical request later, e.g. after a crash: every error raised here
        carries it as ``request_id``.

        Args:
            request: A `TextToImage` or `ImageToImage`.
            request_id: The idempotency key; generated if None.
            timeout: The most seconds to spend, retries and limit waits included.
            priority: ``"interactive"`` (a person waits) goes ahead of ``"background"``
                work (a `BatchRunner`'s, by default) in the create pacer.

        Returns:
            The provider's task id.

        Local images in the request are published first through the client's image host,
        within the same ``timeout``.

        Raises:
            InvalidRequestError: The request or request id is not valid, or it holds local
                images and the client has no image host; nothing was sent.
            ImageHostError: A local image could not be published; nothing was created.
            RequestConflictError: The request id was already used for a different request.
            APIStatusError: The provider refused (see its subclasses).
            APIConnectionError: No answer after every retry, or the deadline passed.
        """
        body = self._engine.body_for(request)
        request_id = check_request_id(request_id)
        seconds = check_timeout(timeout, DEFAULT_CREATE_TIMEOUT)
        priority = check_priority(priority)
        with self._engine.telemetry.operation(
            "create_task", request=request, request_id=request_id, priority=priority
        ):
            return await self._engine.create(body, request_id, seconds, priority=priority)

    async def get_task(self, task_id: str, *, timeout: float = DEFAULT_QUERY_TIMEOUT) -> Task:
        """Read a task once (one ``recordInfo`` call, plus retries).

        Right after this client created the task, a 404 is taken as "not visible yet" and
        retried for a short grace period.

        Args:
            task_id: The task.
            timeout: The most seconds to spend, retries included.

        Raises:
            TaskNotFoundError: The provider does not know the task.
            APIStatusError: The provider refused (see its subclasses).
            APIConnectionError: No answer after every retry, or the deadline passed.
            DecodeError: The answer could not be understood.
        """
        task_id = check_task_id(task_id)
        seconds = check_timeout(timeout, DEFAULT_QUERY_TIMEOUT)
        with self._engine.telemetry.operation("get_task", task_id=task_id):
            return await self._engine.caller.query(task_id, anyio.current_time() + seconds)

    async def wait_for_result(
        self,
        task_id: str,
        *,
        timeout: float = DEFAULT_WAIT_TIMEOUT,
        on_update: OnUpdate | None = None,
        priority: Priority = "interactive",
    ) -> TaskResult:
        """Poll a task until it finishes, and return its result.

        Polls start soon and grow apart; once the client has seen tasks finish, they are timed
        from those durations and share the key's query budget with every other task this
        client follows. A poll that fails for a passing reason (no answer, a 5xx, a 429, an
        unreadable answer or two) is retried on schedule; the deadline decides.

        Args:
            task_id: The task to wait for.
            timeout: The most seconds to wait.
            on_update: Called with the `Task` whenever its state changes (sync or async).
            priority: The polls' class in the key's query pacer (interactive first).

        Returns:
            The finished task's result URLs.

        Raises:
            TaskFailedError: The task ended in ``fail``.
            WaitTimeoutError: The deadline passed first; ``task_id`` lets you wait again.
            TaskNotFoundError: The provider does not know the task (after the grace period).
            APIStatusError: Another final answer (401, 400, 422).
            DecodeError: The task succeeded without result URLs, or answers were unreadable.
        """
        task_id = check_task_id(task_id)
        seconds = check_timeout(timeout, DEFAULT_WAIT_TIMEOUT)
        priority = check_priority(priority)
        with self._engine.telemetry.operation(
            "wait_for_result", task_id=task_id, priority=priority
        ):
            task = await self._engine.follow(
                task_id, timeout=seconds, on_update=on_update, priority=priority
            )
            return result_of(task)

    async def generate(
        self,
        request: ImageRequest,
        *,
        request_id: str | None = None,
        timeout: float = DEFAULT_WAIT_TIMEOUT,
        on_update: OnUpdate | None = None,
        priority: Priority = "interactive",
    ) -> TaskResult:
        """Create a task and wait for its result.

        The call holds one of the key's active-task slots while the task runs, so many
        concurrent ``generate()`` calls stay within the key's active-task limit together.
        Interactive calls (the default) get a free slot, and the create pacer, before any
        background work of the key waiting for one (a `BatchRunner`'s, on this client or,
        through `RedisLimits`, in another process).

        Args:
            request: A `TextToImage` or `ImageToImage`.
            request_id: The idempotency key; generated if None.
            timeout: The most seconds for everything: waiting for a slot, creating, waiting.
            on_update: Called with the `Task` whenever its state changes.
            priority: ``"interactive"`` (a person waits for it) or ``"background"``.

        Returns:
            The finished task's result URLs.

        Raises:
            TaskFailedError: The task ended in ``fail``.
            WaitTimeoutError: The task did not finish in time; ``task_id`` lets you wait again.
            APITimeoutError: No slot freed up in time, so nothing was created.
            ImageHostError: A local image could not be published; nothing was created.
            APIStatusError: The provider refused the create (see its subclasses).
        """
        body = self._engine.body_for(request)  # a bad request fails before waiting for a slot
        request_id = check_request_id(request_id)
        seconds = check_timeout(timeout, DEFAULT_WAIT_TIMEOUT)
        priority = check_priority(priority)
        with self._engine.telemetry.operation(
            "generate", request=request, request_id=request_id, priority=priority
        ):
            task = await self._engine.generate(body, request_id, seconds, on_update, priority)
            return result_of(task)
