"""`Engine`: the machinery a client's verbs and a `BatchRunner` share.

A client builds one engine: the call loop (`Caller`) and the poll planner (`PollPlanner`)
over the key's limits. `AsyncNanoBanana`'s verbs are thin wrappers of it, and a
`BatchRunner` drives the same engine (``client.engine``) to hold slots across a create and
its polls, so both paths follow one set of rules.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import anyio

from ._calls import Caller, OnResponse
from ._config import DEFAULT_WAIT_TIMEOUT
from ._errors import APITimeoutError, InvalidRequestError, NanoBananaError, WaitTimeoutError
from ._models import Task
from ._polling import OnUpdate, PollPlanner, follow
from ._publish import ImagePublisher, PublishedImages
from ._telemetry import Recorder
from ._wire import CreateBody, create_body
from .limits import LimitsBackend, Priority

__all__ = ["Engine"]

logger = logging.getLogger("nanobanana_async")


class Engine:
    """Creates (``engine.caller.create``) and follows tasks for one client.

    Internal; its interface may change in any release.

    Args:
        caller: The call loop.
        planner: The poll planner.
        publisher: Publishes local input images, if the client has an image host.
    """

    def __init__(
        self, caller: Caller, planner: PollPlanner, publisher: ImagePublisher | None = None
    ) -> None:
        self.caller = caller
        self.planner = planner
        self.publisher = publisher

    def body_for(self, request: object) -> CreateBody:
        """The body a request is sent as, checked before anything is sent.

        Raises:
            InvalidRequestError: The request is not valid, or it holds local images and the
                client has no image host.
        """
        body = create_body(request)
        self.check_publishable(body)
        return body

    def check_publishable(self, body: CreateBody) -> None:
        """Refuse, before anything is sent, a body with local images and no host for them.

        Raises:
            InvalidRequestError: The body holds local images and the client has no host.
        """
        if body.images and self.publisher is None:
            raise InvalidRequestError(
                "image_urls",
                "holds local images (files or bytes), and the provider fetches images only "
                "from URLs: give the client an image host to publish them, e.g. "
                "AsyncNanoBanana(image_host=S3ImageHost('s3://bucket/prefix')) "
                "(pip install 'nanobanana-async[s3]'), or pass https:// URLs",
            )

    async def publish(
        self,
        body: CreateBody,
        *,
        deadline: float,
        needed_for: float,
        store: PublishedImages | None = None,
        request_id: str | None = None,
    ) -> CreateBody:
        """The body to send, its local images published (see `ImagePublisher.publish`).

        A deliberate twin of `ImagePublisher.publish`'s signature: this checks for a host
        first, and passes a body without local images through.
        """
        if not body.images:
            return body
        self.check_publishable(body)
        assert self.publisher is not None
        return await self.publisher.publish(
            body, deadline=deadline, needed_for=needed_for, store=store, request_id=request_id
        )

    async def create(
        self,
        body: CreateBody,
        request_id: str,
        seconds: float,
        *,
        on_response: OnResponse | None = None,
        priority: Priority = "interactive",
    ) -> str:
        """Publish the body's local images, then create its task, all within ``seconds``.

        What ``create_task`` runs, raw or not; returns the task id.
        """
        self.caller.check_usable()  # before an image is published
        deadline = anyio.current_time() + seconds
        if body.images:
            body = await self.publish(
                body, deadline=deadline, needed_for=DEFAULT_WAIT_TIMEOUT, request_id=request_id
            )
        return await self.caller.create(
            body, request_id, deadline, on_response=on_response, priority=priority
        )

    async def generate(
        self,
        body: CreateBody,
        request_id: str,
        seconds: float,
        on_update: OnUpdate | None = None,
        priority: Priority = "interactive",
    ) -> Task:
        """Publish, take an active-task slot, create and follow; returns the finished task.

        The slot is held from before the create until the task is seen finished, so many
        concurrent calls stay within the key's active-task cap together; ``priority`` orders
        the call among those waiting for a slot and for the create pacer.

        Raises:
            APITimeoutError: No slot came free in time; nothing was created.
            UsageError: The client is closed or its limits are not entered (`Caller.check_usable`).
        """
        self.caller.check_usable()  # before an image is published or a slot taken
        deadline = anyio.current_time() + seconds
        # Published before a slot is taken: an upload needs none of the key's active tasks.
        body = await self.publish(
            body, deadline=deadline, needed_for=seconds, request_id=request_id
        )
        active = self.limits.active
        holder = object()
        with self.telemetry.slot_wait("before_create", priority), anyio.move_on_after(seconds):
            await active.acquire(holder, priority)
        if not active.holds(holder):
            raise APITimeoutError(
                f"no active-task slot came free within {seconds:g} s; nothing was created",
                request_id=request_id,
            )
        try:
            task_id = await self.caller.create(
                body, request_id, deadline, holder=holder, priority=priority
            )
            # The create may have used up the whole budget: then this is a WaitTimeoutError
            # that carries the task id, not a complaint about a zero timeout.
            try:
                return await self.follow(
                    task_id,
                    timeout=seconds,
                    deadline=deadline,
                    on_update=on_update,
                    priority=priority,
                )
            except (NanoBananaError, anyio.get_cancelled_exc_class()) as exc:
                if not isinstance(exc, WaitTimeoutError):  # that one carries the id itself
                    # The task exists and is paid for: never let its id be lost.
                    logger.warning("generate: task %s was created, then: %r", task_id, exc)
                raise
        finally:
            active.release(holder)

    @property
    def limits(self) -> LimitsBackend:
        """The key's limits."""
        return self.caller.limits

    @property
    def telemetry(self) -> Recorder:
        """What the client's paths report to (OpenTelemetry's spans and metrics, or nothing)."""
        return self.caller.telemetry

    async def follow(
        self,
        task_id: str,
        *,
        timeout: float,
        on_update: OnUpdate | None = None,
        on_poll: Callable[[], object] | None = None,
        deadline: float | None = None,
        priority: Priority = "interactive",
    ) -> Task:
        """Poll a task until it finishes (see `follow`); returns the finished task.

        Args:
            task_id: The task.
            timeout: The most seconds to wait.
            on_update: Told of every state change.
            on_poll: Told of every poll.
            deadline: An earlier end than ``timeout`` gives (anyio's clock), if any.
            priority: The class of the polls in the query pacer.
        """
        end = anyio.current_time() + timeout
        return await follow(
            self.caller,
            self.planner,
            task_id,
            deadline=end if deadline is None else min(deadline, end),
            timeout=timeout,
            created_at=self.caller.created.created_at(task_id),
            on_update=on_update,
            on_poll=on_poll,
            priority=priority,
        )
