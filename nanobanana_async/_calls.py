"""The one call loop every API request goes through: pace, send, interpret, retry, learn.

`Caller.create` and `Caller.query` are the only two ways the library talks to the API. Each
logical request runs `Caller.call`'s loop until it has an answer it can read or a final error:

1. **pace**: wait for the endpoint's pacer (the key's rate windows, and a 429's block), but
   never past the call's deadline: if the pacer would hold it longer, nothing is sent;
2. **send**: one HTTP exchange, bounded as a whole (connect, headers and body) by the
   client's exchange timeout and the call's deadline, whatever the server trickles; the
   answer is read with a size cap (`_http.read_body`) and redacted of the API key;
3. **interpret**: `_wire.answer_data` returns ``data`` or raises the error the answer means,
   and the caller's reader (`structure_task_id`, `structure_task`) makes it a value;
4. **learn**: a 429 teaches the endpoint's pacer, a create's 409 the active-task cap;
5. **retry**: `_retry.retry_decision` says whether and when to try again; every wait is
   logged where it happens and bounded by the deadline (and 429 waits by their own budget).
"""

from __future__ import annotations

import collections
import logging
import random
from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar

import anyio
import attrs
import httpx

from ._errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    DecodeError,
    NanoBananaError,
    RateLimitError,
    ResponseTooLargeError,
    ServerError,
    UsageError,
)
from ._http import read_body, redacted_headers, transport_error
from ._models import Task
from ._refusals import MIN_SLOT_WAIT, learn, wait_for_slot
from ._requests import RequestBuilder
from ._retry import RetryPolicy, retry_decision
from ._secret import Secret
from ._telemetry import NO_RECORDER, Recorder, Scope
from ._wire import CreateBody, answer_data, structure_task, structure_task_id
from .limits import ConnectedLimits, Endpoint, EndpointPacer, LimitsBackend, Priority

__all__ = ["Caller", "CreatedTasks", "Endpoint", "OnResponse", "StopCheck"]

logger = logging.getLogger("nanobanana_async")

StopCheck = Callable[[], "NanoBananaError | None"]
"""Asked right before a create is sent: an error to raise instead, or None to send it."""

OnResponse = Callable[[int, httpx.Headers], object]
"""Told of each answer's HTTP status and headers (with the key redacted)."""

T = TypeVar("T")

_REMEMBERED_CREATES = 10_000
_HELD = 0.05  # seconds of pacing after which the exchange's own time bound starts afresh
_WAITS = {
    "backoff": "retrying in %.2f s",
    "rate_limit": "the key's pacer holds the endpoint for %.2f s",
    "slot": "waiting up to %.2f s for an active-task slot",
    "not_visible": "not visible yet; asking again in %.2f s",
}


class _Answer(NamedTuple):
    """An answer read whole, the key redacted from all of it (see `Caller._send`)."""

    status: int
    headers: httpx.Headers
    body: bytes
    reason: str


class _PacingCut(Exception):  # noqa: N818 - a signal inside the loop, never raised out of it
    """The pacer held a try longer than one exchange's bound, before the call's deadline."""


class _CapFell(Exception):  # noqa: N818 - a signal inside the loop, never raised out of it
    """The pacer let a create go whose slot the cap fell under meanwhile: a sure 409."""


class _SentAt:
    """When a call's current try was let go and sent (None until it was).

    ``at`` is by the pacer's clock (a `RedisLimits` pacer dates by Redis's), ``went`` by anyio's.
    """

    __slots__ = ("at", "went")

    def __init__(self) -> None:
        self.at: float | None = None
        self.went: float | None = None


class CreatedTasks:
    """When this client created its most recent tasks (a bounded memory)."""

    def __init__(self, size: int | None = None) -> None:
        self._size = _REMEMBERED_CREATES if size is None else size
        self._at: collections.OrderedDict[str, float] = collections.OrderedDict()

    def remember(self, task_id: str) -> None:
        """Record that ``task_id`` was created now."""
        self._at[task_id] = anyio.current_time()
        self._at.move_to_end(task_id)
        while len(self._at) > self._size:
            self._at.popitem(last=False)

    def created_at(self, task_id: str) -> float | None:
        """When this client created ``task_id`` (anyio's clock), if it remembers."""
        return self._at.get(task_id)


class Caller:
    """Sends the API's two requests, each with every retry it deserves.

    Args:
        http: The HTTP client for API calls.
        base_url: The API host (and path prefix).
        secret: The API key.
        user_agent: The ``User-Agent`` header.
        limits: The key's pacers and active-task cap.
        retry: The retry policy.
        timeout: httpx's per-phase timeouts, or None for the HTTP client's own.
        exchange_timeout: The most seconds one HTTP exchange may take, whole.
        max_response_bytes: The largest answer read (decoded bytes).
        telemetry: Told of every request sent, pacer and slot wait, and task created.
    """

    def __init__(
        self,
        *,
        http: httpx.AsyncClient,
        base_url: httpx.URL,
        secret: Secret,
        user_agent: str,
        limits: LimitsBackend,
        retry: RetryPolicy,
        timeout: httpx.Timeout | None,
        exchange_timeout: float,
        max_response_bytes: int,
        telemetry: Recorder = NO_RECORDER,
    ) -> None:
        self._http = http
        self._secret = secret
        self._requests = RequestBuilder(http, base_url, user_agent=user_agent, timeout=timeout)
        self._limits = limits
        # Known once: isinstance of a runtime protocol is slow, and `call` asks every time.
        self._connected = limits if isinstance(limits, ConnectedLimits) else None
        self._retry = retry
        self._no_backoff = attrs.evolve(retry, max_retries=0)
        self._exchange_timeout = exchange_timeout
        self._max_bytes = max_response_bytes
        self._rng = random.Random()  # noqa: S311 - jitter, not cryptography
        self.created = CreatedTasks()
        self.closed = False
        self.telemetry = telemetry

    @property
    def limits(self) -> LimitsBackend:
        """The key's limits, taught by every answer."""
        return self._limits

    def check_usable(self) -> None:
        """Refuse, before anything is sent, a call this client cannot make now.

        Raises:
            UsageError: The client is closed, or its limits (a `RedisLimits`) are not entered.
        """
        if self.closed:
            raise UsageError("this client is closed")
        connected = self._connected
        if connected is not None and not connected.entered:
            raise UsageError(
                f"this client's {type(connected).__name__} is not entered: open the client "
                "with 'async with AsyncNanoBanana(limits=...) as client:', which enters it, "
                "or enter it yourself first ('async with RedisLimits(url) as limits:')"
            )

    @property
    def rng(self) -> random.Random:
        """The source of jitter (seedable in tests)."""
        return self._rng

    async def create(
        self,
        body: CreateBody,
        request_id: str,
        deadline: float,
        *,
        holder: object | None = None,
        stop: StopCheck | None = None,
        on_response: OnResponse | None = None,
        priority: Priority = "interactive",
        headroom: int = 0,
    ) -> str:
        """Create a task; returns its id.

        Args:
            body: The serialised request.
            request_id: The ``X-Request-ID``, the same on every try.
            deadline: When to give up (anyio's clock).
            holder: The active-task slot the caller holds for this task, if any: after a 409
                it queues again for a slot, and the task counts as running once created.
            stop: Asked right before each try is sent (see `StopCheck`).
            on_response: Told of every answer's status and headers (see `call`).
            priority: The caller's class, for the create pacer and slot waits after a 409.
            headroom: For a background caller: slots of the key to leave free for others.
        """
        if body.images:
            raise UsageError("a request's local images must be published before it is sent")
        task_id = await self.call(
            "create",
            structure_task_id,
            content=body.content,
            request_id=request_id,
            deadline=deadline,
            holder=holder,
            stop=stop,
            on_response=on_response,
            priority=priority,
            headroom=headroom,
        )
        self.created.remember(task_id)
        if holder is not None:
            self._limits.active.mark_running(holder)
        self._limits.active.on_created()
        self.telemetry.created(task_id)
        logger.debug("created task %s (request id %s)", task_id, request_id)
        return task_id

    async def query(
        self,
        task_id: str,
        deadline: float,
        *,
        on_response: OnResponse | None = None,
        priority: Priority = "interactive",
        backoff: bool = True,
        on_sent: Callable[[float], object] | None = None,
    ) -> Task:
        """Read a task once (``recordInfo``), with retries, until ``deadline``.

        Without ``backoff``, a failure that would be retried after a backoff (a 5xx, a
        dropped connection) is raised at once: a poll loop's next poll is its retry, timed
        by what the loop knows of the task's end rather than by a backoff meant for a
        server in trouble. 429s and a new task's grace period are waited out either way.
        ``on_sent`` is told when the answered try was sent (anyio's clock).
        """
        return await self.call(
            "query",
            lambda data: structure_task(data, task_id=task_id),
            params={"taskId": task_id},
            deadline=deadline,
            task_id=task_id,
            on_response=on_response,
            priority=priority,
            backoff=backoff,
            on_sent=on_sent,
        )

    async def call(
        self,
        endpoint: Endpoint,
        read: Callable[[Any], T],
        *,
        deadline: float,
        content: bytes | None = None,
        params: dict[str, str] | None = None,
        request_id: str | None = None,
        task_id: str | None = None,
        holder: object | None = None,
        stop: StopCheck | None = None,
        on_response: OnResponse | None = None,
        priority: Priority = "interactive",
        headroom: int = 0,
        backoff: bool = True,
        on_sent: Callable[[float], object] | None = None,
    ) -> T:
        """Run one logical request to its end; returns what ``read`` makes of ``data``.

        ``on_response`` is told of each answer's status and headers (the key redacted), so
        the last call it gets is the answer the result came from. ``priority`` orders the
        caller in the endpoint's pacer and in slot waits; ``headroom`` is what a background
        caller leaves free when it queues for a slot again. Without ``backoff``, an error
        that would be retried after a backoff is raised instead (see `query`). ``on_sent``
        is told when the try that was answered was sent (anyio's clock, after any pacing).
        """
        self.check_usable()
        create = endpoint == "create"
        pacer = self._limits.endpoint(endpoint)
        attempt = slot_waits = 0
        maybe_created = False
        rate_waited = 0.0  # seconds spent waiting because of 429s, pacing included
        rate_limited: RateLimitError | None = None  # the 429 being waited out, if any
        started: float | None = None  # when the first try failed (read only on failures)
        sent = _SentAt()
        while True:
            # Where the cap fell under this create's slot (a 429 named a lower tier, a 409 a
            # lower cap), our own tasks fill the key and sending it is a sure 409: it queues
            # again for a slot first, as after one.
            requeue = create and holder is not None and not maybe_created
            if rate_limited is None:
                sent.at = None  # paced within the exchange's own cancel scope, below
            else:
                if (
                    requeue
                    and self._over_cap()
                    and not await self._queue_again(holder, deadline, priority, headroom)
                ):
                    raise rate_limited
                # Waiting out a 429: the pacer holds the endpoint (for every caller of the
                # key) until the provider's window frees; that wait spends the 429 budget.
                waited_from = anyio.current_time()
                budget_end = waited_from + self._retry.max_rate_limit_wait - rate_waited
                paced: float | None = None
                with anyio.CancelScope(deadline=min(deadline, budget_end)) as scope:
                    paced = await pacer.acquire(priority)
                waited = anyio.current_time() - waited_from
                rate_waited += waited
                self.telemetry.paced(endpoint, priority, waited)
                if scope.cancelled_caught:
                    raise rate_limited
                sent.at = paced
                if requeue and self._over_cap():
                    # Another create of ours took the room while the pacer held this one
                    # (both held slots when the cap fell under them): queue again, then pace
                    # again within the exchange.
                    if not await self._queue_again(holder, deadline, priority, headroom):
                        raise rate_limited
                    sent.at = None
            # A create whose try ended unanswered (a timeout, a 5xx) may exist: its retries,
            # with the same request id, cannot bill twice, and only they can recover its id.
            # Anything else not yet accepted is held back once the batch has stopped.
            hold_back = stop if stop is not None and not maybe_created else None
            # A background create never holds a slot past the cap unless the cap fell under
            # it while the pacer held it; an interactive one may try one past on purpose.
            full = self._over_cap if requeue and priority == "background" else None
            try:
                with self.telemetry.exchange(endpoint) as exchange:
                    data = await self._exchange(
                        endpoint,
                        pacer,
                        content,
                        params,
                        deadline,
                        request_id,
                        on_response=on_response,
                        sent=sent,
                        stop=hold_back,
                        full=full,
                        priority=priority,
                        exchange=exchange,
                    )
                    value = read(data)
            except _PacingCut:
                continue
            except _CapFell:
                if not await self._queue_again(holder, deadline, priority, headroom):
                    raise APITimeoutError(
                        "create: no active-task slot came free before the deadline after the "
                        "key's cap fell; nothing was sent",
                        request_id=request_id,
                    ) from None
                continue
            except (APIStatusError, APIConnectionError, DecodeError) as exc:
                error: NanoBananaError = exc
                if isinstance(exc, DecodeError) and exc.request_id is None:
                    exc.request_id = request_id
            else:
                pacer.on_success()
                if on_sent is not None and sent.went is not None:
                    on_sent(sent.went)
                return value
            learn(self._limits, endpoint, error, sent.at)
            maybe_created = (
                maybe_created
                or not isinstance(error, APIStatusError)
                or (isinstance(error, ServerError))
            )
            created_at = None if task_id is None else self.created.created_at(task_id)
            now = anyio.current_time()
            if started is None:
                started = now
            decision = retry_decision(
                error,
                create=create,
                attempt=attempt,
                policy=self._retry if backoff else self._no_backoff,
                rng=self._rng,
                in_grace=created_at is not None and now - created_at < self._retry.not_found_grace,
                grace_elapsed=now - started,
                slot_waits=slot_waits,
            )
            rate_limited = None
            if decision is None:
                raise error
            if decision.kind == "rate_limit":
                assert isinstance(error, RateLimitError)
                if rate_waited + decision.delay > self._retry.max_rate_limit_wait:
                    raise error
                rate_limited = error
            elif decision.kind == "backoff":
                attempt += 1
            elif decision.kind == "slot":
                slot_waits += 1
            delay = decision.delay
            if decision.kind == "slot":
                # A slot may come free any moment: wait at most half of what is left, and
                # give up only once too little is left to create anything.
                delay = min(delay, (deadline - now) / 2)
                if delay < MIN_SLOT_WAIT:
                    raise error
            elif now + delay > deadline:
                raise error
            logger.info("%s: %s; " + _WAITS[decision.kind], endpoint, error, delay)
            if decision.kind == "slot":
                with self.telemetry.slot_wait("after_conflict", priority):
                    freed = await wait_for_slot(
                        self._limits.active, holder, delay, deadline, priority, headroom
                    )
                if not freed:
                    raise error
            elif decision.kind != "rate_limit":
                await anyio.sleep(delay)

    async def _queue_again(
        self, holder: object, deadline: float, priority: Priority, headroom: int
    ) -> bool:
        """Give a create's slot back and queue for one again (the cap fell under it)."""
        active = self._limits.active
        with self.telemetry.slot_wait("cap_fell", priority):
            if not await wait_for_slot(active, holder, 0.0, deadline, priority, headroom):
                return False
            if self._over_cap():
                # Granted, yet our running tasks still fill the cap (in Redis, leases of ours
                # that lapsed): the next release is the earliest room, not the pacer's turn.
                await active.wait_for_release(max(0.0, deadline - anyio.current_time()))
            return True

    def _over_cap(self) -> bool:
        """Whether our own running tasks fill the key's known cap (a create would meet 409)."""
        active = self._limits.active
        return active.known and active.running >= active.limit

    async def _exchange(
        self,
        endpoint: Endpoint,
        pacer: EndpointPacer,
        content: bytes | None,
        params: dict[str, str] | None,
        deadline: float,
        request_id: str | None,
        *,
        sent: _SentAt,
        on_response: OnResponse | None = None,
        stop: StopCheck | None = None,
        full: Callable[[], bool] | None = None,
        priority: Priority = "interactive",
        exchange: Scope,
    ) -> Any:
        """Pace (unless ``sent.at`` says it was), then one HTTP exchange; returns ``data``.

        One cancel scope bounds both: the pacing by the call's deadline, then the exchange,
        whole, by the exchange timeout as well.
        """
        sending = False
        entered = anyio.current_time()
        # One scope, one timer: set once for the common case, where the pacer lets the
        # request go at once; moved only when the pacer held it.
        with anyio.CancelScope(deadline=min(deadline, entered + self._exchange_timeout)) as scope:
            pacing = sent.at is None
            if pacing:
                sent.at = await pacer.acquire(priority)
            if stop is not None and (refusal := stop()) is not None:
                raise refusal
            now = anyio.current_time()
            if pacing:
                self.telemetry.paced(endpoint, priority, now - entered)
                if full is not None and full():
                    raise _CapFell
            if now >= deadline:
                raise APITimeoutError(
                    f"{endpoint}: the deadline passed before the request was sent",
                    request_id=request_id,
                )
            if now - entered > _HELD:
                scope.deadline = min(deadline, now + self._exchange_timeout)
            sending = True
            sent.went = now
            exchange.sending(now - entered)
            answer = await self._send(endpoint, content, params, request_id, exchange)
            return self._answer(answer, request_id, on_response)
        # Only the scope's own deadline gets here (everything else returned or raised).
        if not sending:
            self.telemetry.paced(endpoint, priority, anyio.current_time() - entered)  # then cut
            if anyio.current_time() < deadline:
                raise _PacingCut  # held longer than one exchange may take: pace again
            raise APITimeoutError(
                f"{endpoint}: the key's rate limit held the request past the deadline; "
                "nothing was sent",
                request_id=request_id,
            )
        raise transport_error(TimeoutError(), endpoint, request_id=request_id)

    async def _send(
        self,
        endpoint: Endpoint,
        content: bytes | None,
        params: dict[str, str] | None,
        request_id: str | None,
        exchange: Scope,
    ) -> _Answer:
        """One HTTP exchange, read whole with the size cap, the key redacted as it is read.

        Nothing unredacted outlives this frame: the answer is interpreted (and its errors
        raised) from what it returns, so no frame of an error holds the raw answer.
        """
        secret = self._secret
        request = self._requests.build(
            endpoint, secret, content=content, params=params, request_id=request_id
        )

        def too_large(_declared: int | None) -> ResponseTooLargeError:
            return ResponseTooLargeError(
                f"{endpoint}: the answer is larger than {self._max_bytes} bytes "
                "(max_response_bytes); the connection was dropped",
                request_id=request_id,
            )

        try:
            response = await self._http.send(request, stream=True)
            exchange.answered(response.status_code)
            try:
                body = secret.redact_bytes(await read_body(response, self._max_bytes, too_large))
            finally:
                if not response.is_closed:  # read whole, httpx has closed it already
                    with anyio.CancelScope(shield=True):
                        await response.aclose()
        except httpx.TransportError as exc:
            raise transport_error(exc, endpoint, request_id=request_id) from exc
        except RuntimeError as exc:
            if self.closed:  # httpx: "Cannot send a request, as the client has been closed"
                raise UsageError("this client was closed during the call") from exc
            raise
        status = response.status_code
        logger.debug("%s %s -> %s", request.method, self._requests.routes[endpoint].path, status)
        # The reason phrase only words an error that has no message of its own.
        reason = (
            ""
            if status < 400
            else secret.redact(response.reason_phrase or httpx.codes.get_reason_phrase(status))
        )
        return _Answer(status, redacted_headers(response.headers, secret), body, reason)

    @staticmethod
    def _answer(answer: _Answer, request_id: str | None, on_response: OnResponse | None) -> Any:
        """The ``data`` of an answer read whole and redacted (see `answer_data`)."""
        if on_response is not None:
            on_response(answer.status, answer.headers)
        return answer_data(
            answer.status,
            answer.headers,
            answer.body,
            reason=answer.reason,
            request_id=request_id,
        )
