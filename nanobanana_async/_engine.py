"""`Engine`: the machinery a client's verbs and a `BatchRunner` share.

A client builds one engine: the call loop (`Caller`) and the poll planner (`PollPlanner`)
over the key's limits. `AsyncNanoBanana`'s verbs are thin wrappers of it, and a
`BatchRunner` drives the same engine (``client.engine``) to hold slots across a create and
its polls, so both paths follow one set of rules.
"""

from __future__ import annotations

from collections.abc import Callable

import anyio

from ._calls import Caller
from ._models import Task
from ._polling import OnUpdate, PollPlanner, follow
from .limits import LimitsBackend

__all__ = ["Engine"]


class Engine:
    """Creates (``engine.caller.create``) and follows tasks for one client.

    Internal; its interface may change in any release.

    Args:
        caller: The call loop.
        planner: The poll planner.
    """

    def __init__(self, caller: Caller, planner: PollPlanner) -> None:
        self.caller = caller
        self.planner = planner

    @property
    def limits(self) -> LimitsBackend:
        """The key's limits."""
        return self.caller.limits

    async def follow(
        self,
        task_id: str,
        *,
        timeout: float,
        on_update: OnUpdate | None = None,
        on_poll: Callable[[], object] | None = None,
        deadline: float | None = None,
    ) -> Task:
        """Poll a task until it finishes (see `follow`); returns the finished task.

        Args:
            task_id: The task.
            timeout: The most seconds to wait.
            on_update: Told of every state change.
            on_poll: Told of every poll.
            deadline: An earlier end than ``timeout`` gives (anyio's clock), if any.
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
        )
