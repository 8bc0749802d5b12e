"""Variants of a client: other per-call options (`with_options`), and raw responses.

``client.with_options(timeout=..., max_retries=...)`` is a client that shares the original's
connection pools, the key's limits, the poll planner (its query budget and the task durations
seen) and the memory of recent creates; only the options given change. Closing it closes
nothing shared. ``client.with_raw_response.create_task(...)`` makes the same call as
``client.create_task(...)`` and returns the value with the answer's HTTP status, headers and
``X-Request-ID``, as openai-python's ``with_raw_response`` does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Generic, TypeVar

import anyio
import attrs
import httpx

from ._config import (
    DEFAULT_CREATE_TIMEOUT,
    DEFAULT_QUERY_TIMEOUT,
    check_priority,
    check_request_id,
    check_task_id,
    check_timeout,
)
from ._engine import Engine
from ._models import ImageRequest, Task
from ._polling import PollPlanner
from .limits import Priority

if TYPE_CHECKING:
    from ._client import AsyncNanoBanana

__all__ = ["RawResponse", "RawResponses", "shared_engine"]

T = TypeVar("T")


@attrs.frozen(kw_only=True)
class RawResponse(Generic[T]):
    """A call's value with the HTTP answer it came from.

    Attributes:
        value: What the plain call returns (a task id, a `Task`).
        http_status: The answer's HTTP status.
        headers: The answer's headers (the API key redacted, should a server echo it).
        request_id: The ``X-Request-ID`` the call carried (a create's idempotency key), else
            the one the server answered with, if any.
    """

    value: T
    http_status: int
    headers: httpx.Headers
    request_id: str | None

    def parse(self) -> T:
        """The value, as the plain call returns it."""
        return self.value


class _LastAnswer:
    """Keeps the status and headers of the last answer of one call."""

    def __init__(self) -> None:
        self.status = 0
        self.headers = httpx.Headers()

    def __call__(self, status: int, headers: httpx.Headers) -> None:
        self.status, self.headers = status, headers

    def response(self, value: T, request_id: str | None) -> RawResponse[T]:
        sent_back = self.headers.get("x-request-id")
        return RawResponse(
            value=value,
            http_status=self.status,
            headers=self.headers,
            request_id=request_id or sent_back,
        )


class RawResponses:
    """The client's calls, each returning a `RawResponse` (``client.with_raw_response``)."""

    def __init__(self, client: AsyncNanoBanana) -> None:
        self._client = client

    async def create_task(
        self,
        request: ImageRequest,
        *,
        request_id: str | None = None,
        timeout: float = DEFAULT_CREATE_TIMEOUT,
        priority: Priority = "interactive",
    ) -> RawResponse[str]:
        """`AsyncNanoBanana.create_task`, with the answer's status, headers and request id."""
        engine = self._client.engine
        body = engine.body_for(request)
        request_id = check_request_id(request_id)
        seconds = check_timeout(timeout, DEFAULT_CREATE_TIMEOUT)
        priority = check_priority(priority)
        last = _LastAnswer()
        with engine.telemetry.operation(
            "create_task", request=request, request_id=request_id, priority=priority
        ):
            task_id = await engine.create(
                body, request_id, seconds, on_response=last, priority=priority
            )
        return last.response(task_id, request_id)

    async def get_task(
        self, task_id: str, *, timeout: float = DEFAULT_QUERY_TIMEOUT
    ) -> RawResponse[Task]:
        """`AsyncNanoBanana.get_task`, with the answer's status and headers."""
        task_id = check_task_id(task_id)
        seconds = check_timeout(timeout, DEFAULT_QUERY_TIMEOUT)
        last = _LastAnswer()
        engine = self._client.engine
        with engine.telemetry.operation("get_task", task_id=task_id):
            task = await engine.caller.query(
                task_id, anyio.current_time() + seconds, on_response=last
            )
        return last.response(task, None)


def shared_engine(
    derived: AsyncNanoBanana, original: AsyncNanoBanana, *, same_poll: bool
) -> Engine:
    """An engine for ``derived`` sharing ``original``'s poll state and recent creates.

    With the same poll policy, the very planner (its query budget, the durations seen);
    with another, a planner of that policy over the same durations.
    """
    caller = derived.engine.caller
    caller.created = original.engine.caller.created
    publisher = original.engine.publisher  # the same image host, and its cache
    if same_poll:
        return Engine(caller, original.engine.planner, publisher)
    limits = original.limits
    planner = PollPlanner.for_limits(derived.poll_policy, original.durations, limits)
    return Engine(caller, planner, publisher)
