"""Following a task to its end: when to ask ``recordInfo`` again, and what a poll's error means.

`follow` is the one poll loop; `AsyncNanoBanana.wait_for_result` (and so ``generate``) and
`BatchRunner` both use it, with one set of rules: a poll that fails for a passing reason (no
answer, a 5xx, a 429, up to three unreadable answers in a row) is no reason to give up a task
that exists and is paid for, so the loop polls again on schedule and the deadline decides; a
final answer (a 404 or 422 once the grace period after the create has passed, a 401, a 400)
ends the wait with that error.

Before the client has seen any task finish, polls follow `PollPolicy`: a short first interval
that grows geometrically, with jitter. Once tasks have finished, their durations (measured by
the client from create to the poll that saw the end, and corrected by the provider's own
timestamps) drive the schedule: the first poll goes out when the fastest tasks tend to end,
and later polls come closer together where tasks are most likely to finish, so a finished
task is seen soon without spending the key's query budget on tasks that cannot be done yet.
"""

from __future__ import annotations

import bisect
import collections
import inspect
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import anyio
import attrs

from ._errors import (
    APIConnectionError,
    DecodeError,
    NanoBananaError,
    RateLimitError,
    ServerError,
    TaskFailedError,
    WaitTimeoutError,
)
from ._models import Task, TaskResult, TaskState
from .limits import TIERS, ActiveSlots, LimitsBackend, Priority

if TYPE_CHECKING:
    from ._calls import Caller

__all__ = [
    "DurationModel",
    "OnUpdate",
    "PollPlanner",
    "PollPolicy",
    "follow",
    "result_of",
    "slots_wanted",
]

logger = logging.getLogger("nanobanana_async")

OnUpdate = Callable[[Task], "Awaitable[object] | object"]
"""A callback told of every state change of a task; it may be sync or async."""

_POLL_BUDGET_SHARE = 0.9
_MAX_UNREADABLE = 3
_POLLS_PER_TYPICAL_TASK = 6.0
"""While the query limit is unknown, short tasks get this many polls in a typical life."""

#: The fewest sustained polls per second per active task that any tier allows.
_LEAST_POLLS_PER_TASK = min(tier.query[1] / 60.0 / tier.active for tier in TIERS.values())
#: The fewest sustained polls per second that a paid tier allows.
_LEAST_PAID_POLLS = min(tier.query[1] / 60.0 for name, tier in TIERS.items() if name != "free")


@attrs.frozen(kw_only=True)
class PollPolicy:
    """How often to poll a task while the client has no durations to go on, and how much.

    Attributes:
        initial: Seconds before the first poll.
        factor: Each interval is this much longer than the one before.
        maximum: The longest interval, in seconds.
        jitter: A random spread of ±this fraction on every interval.
        min_interval: The shortest interval the learned schedule may use.
        budget_per_task: Polls per second for each task being followed, while the key's
            query limit is unknown (no 429 has named it and no tier was given). The default
            is the least that any tier of the provider's table allows per active task (free:
            60 a minute for one task), so that the client leaves the key's query window room
            for its other consumers and for a move to a lower tier. Tasks shorter than six
            seconds get six polls in a typical task's life instead.
        budget_floor: The polls per second spent in all, however few tasks are followed,
            while the query limit is unknown: by default the least that a paid tier allows
            (basic: 1000 a minute).
        resolution: Once durations are known, how late a task's end may be seen while it is
            awaited (a caller waits for its result, or its slot would be used at once), as a
            share of a typical task's length: near the likely end, polls come this share
            apart. The trade of polls for makespan: on a key whose active-task slots bind, a
            task seen late holds its slot idle. For tasks of 2-6 s, the default (0.035) polls
            about 11 times per task and keeps a batch at about 0.95 of a client that knows
            when each task ends; 0.15 polls about 4.5 times at about 0.91. No schedule of
            fewer polls does much better (docs/benchmarks.md, "Polls against efficiency").
            A task whose end is not awaited is polled at least 0.35 of it apart.
    """

    initial: float = attrs.field(default=1.0, validator=attrs.validators.gt(0))
    factor: float = attrs.field(default=1.5, validator=attrs.validators.ge(1))
    maximum: float = attrs.field(default=10.0, validator=attrs.validators.gt(0))
    jitter: float = attrs.field(
        default=0.1, validator=[attrs.validators.ge(0), attrs.validators.lt(1)]
    )
    min_interval: float = attrs.field(default=0.05, validator=attrs.validators.gt(0))
    budget_per_task: float = attrs.field(
        default=_LEAST_POLLS_PER_TASK, validator=attrs.validators.gt(0)
    )
    budget_floor: float = attrs.field(default=_LEAST_PAID_POLLS, validator=attrs.validators.gt(0))
    resolution: float = attrs.field(
        default=0.035, validator=[attrs.validators.gt(0), attrs.validators.le(1)]
    )

    def scaled(self, scale: float) -> PollPolicy:
        """This policy on a clock where one second lasts ``scale`` seconds.

        For a fake provider running at ``time_scale``: the times shrink and the rate grows.
        """
        return attrs.evolve(
            self,
            initial=self.initial * scale,
            maximum=self.maximum * scale,
            min_interval=self.min_interval * scale,
            budget_per_task=self.budget_per_task / scale,
            budget_floor=self.budget_floor / scale,
        )

    def interval(self, polls: int, rng: random.Random) -> float:
        """The interval before poll number ``polls`` (0-based), without learned durations."""
        base = min(self.maximum, self.initial * self.factor ** min(polls, 60))
        return self.spread(base, rng)

    def spread(self, seconds: float, rng: random.Random) -> float:
        """Apply the jitter to an interval."""
        if self.jitter == 0:
            return seconds
        return seconds * rng.uniform(1.0 - self.jitter, 1.0 + self.jitter)


class DurationModel:
    """The durations of recent tasks, and the poll schedule they suggest.

    Args:
        size: How many recent durations to keep.
        min_samples: Durations needed before the learned schedule replaces the policy.
    """

    #: Near a task's likely end, polls come `PollPolicy.resolution` of the typical duration
    #: apart while its end is awaited (a caller waits for its result, or its slot would be
    #: used at once), and at least this share while it is not (slots held wait for the create
    #: pacer: the create rate binds, not the slots): a batch's task is then seen done a little
    #: later, which costs it nothing.
    RELAXED_RESOLUTION = 0.35
    #: And at least this share of the slack the slots leave (`poll_slack`) apart. A small
    #: share, because a minute's window lets its creates through in a burst at its turn,
    #: which needs more slots than the long run does. On 20 seeds of the tight-minute
    #: scenario: 0.05 changes nothing; 0.075 polls 3.88 times a task instead of 4.04 at the
    #: same makespan; 0.1 polls 3.67 times and 0.25 3.31, ending 0.2 % and 1.4 % later.
    SLACK_SHARE = 0.075

    def __init__(self, size: int = 512, min_samples: int = 1) -> None:
        self._recent: collections.deque[float] = collections.deque(maxlen=size)
        self._sorted: list[float] = []
        self._min_samples = min_samples

    def __len__(self) -> int:
        return len(self._recent)

    def observe(self, seconds: float) -> None:
        """Record how long a finished task took, in seconds."""
        if not seconds > 0:
            return
        if len(self._recent) == self._recent.maxlen:
            old = self._recent[0]
            del self._sorted[bisect.bisect_left(self._sorted, old)]
        self._recent.append(seconds)
        bisect.insort(self._sorted, seconds)

    def quantile(self, q: float) -> float | None:
        """The ``q`` quantile of the recent durations, or None without enough samples."""
        if len(self._sorted) < self._min_samples:
            return None
        index = min(len(self._sorted) - 1, max(0, int(q * len(self._sorted))))
        return self._sorted[index]

    def expected_remaining(self, age: float) -> float | None:
        """Roughly how much longer a task of ``age`` seconds will run, or None without samples.

        It is the median of the recent durations longer than ``age``, minus ``age``.
        """
        if len(self._sorted) < self._min_samples:
            return None
        above = bisect.bisect_right(self._sorted, age)
        if above >= len(self._sorted):
            # Older than every task seen: assume it runs as long again as the typical one.
            return self._sorted[len(self._sorted) // 2]
        middle = above + (len(self._sorted) - above) // 2
        return max(0.0, self._sorted[middle] - age)

    def next_delay(
        self,
        age: float,
        polls: int,
        policy: PollPolicy,
        rng: random.Random,
        *,
        awaited: bool = True,
        slack: float | None = None,
    ) -> float:
        """Seconds from now until a task of ``age`` seconds, polled ``polls`` times, is polled.

        Args:
            age: Seconds since the task was created.
            polls: How many times it has been polled already.
            policy: The fallback policy and the interval bounds.
            rng: The source of jitter.
            awaited: Whether its end is awaited (a caller waits for its slot or its result):
                then polls come closer together.
            slack: For a task whose end is not awaited: the seconds each task may be seen
                late in the long run before the slots would bind (`poll_slack`), or None.
                Polls then come at least `SLACK_SHARE` of it apart.
        """
        low = self.quantile(0.05)
        if low is None:
            return policy.interval(polls, rng)
        high = self.quantile(0.95)
        assert high is not None
        typical = self.quantile(0.5) or low
        if age < low:
            # Nothing tends to finish before the fastest tasks do: sleep until then.
            return max(policy.min_interval, low - age)
        # Near and past the likely end, poll a small fraction of the typical duration apart;
        # once the task outlives nearly all others, back off towards the policy's maximum.
        resolution = (
            policy.resolution if awaited else max(policy.resolution, self.RELAXED_RESOLUTION)
        )
        step = max(policy.min_interval, typical * resolution)
        if not awaited and slack:
            step = max(step, slack * self.SLACK_SHARE)
        if age > high:
            overdue = (age - high) / max(typical, policy.min_interval)
            step = min(policy.maximum, step * (1.0 + 4.0 * overdue))
        return policy.spread(min(step, policy.maximum), rng)


def slots_wanted(
    active: ActiveSlots, create_rate: float | None = None, typical: float | None = None
) -> bool:
    """Whether a task's end is worth seeing soon: a slot that frees would be used at once.

    Always while an interactive caller waits for a slot (of any process sharing the limits):
    a person waits for the next slot that frees, and then for the pacer, where it goes
    first. Otherwise, not while creates wait for the pacer in slots they hold: a slot that
    frees would not make the next create go any sooner. Nor, while callers wait for a slot,
    where the create rate in the long run keeps fewer slots busy than the cap (Little's law:
    ``create_rate``, the sustained creates a second the key's windows allow, times
    ``typical``, a typical task's seconds; a minute's window that lets a burst through and
    then holds every create until it turns): the slots may fill during a burst, but seeing a
    task end sooner then only moves a create within a window that is spent either way.
    Otherwise it would: a caller waits for a slot that binds, or nobody waits because the
    work is running out, and then each end seen late is a batch that ends late.
    """
    if active.interactive_waiting:
        return True  # a person waits for the next slot that frees, whatever binds the batch
    if active.running < active.active:
        return False
    if not active.waiting or create_rate is None or typical is None:
        return True
    return create_rate * typical > active.limit


def poll_slack(
    active: ActiveSlots, create_rate: float | None, typical: float | None
) -> float | None:
    """Seconds each task may be seen late, in the long run, before the slots would bind.

    Little's law again: at ``create_rate`` creates a second, the cap's slots last
    ``limit / create_rate`` seconds per task, of which a typical task runs ``typical``. The
    rest is how late its end may be seen without a create ever waiting for a slot. None
    when either is unknown, or when nothing is left (the slots bind).
    """
    if not create_rate or typical is None:
        return None
    slack = active.limit / create_rate - typical
    return slack if slack > 0 else None


class _Share:
    """One followed task's share of the query budget."""

    __slots__ = ("weight",)

    def __init__(self) -> None:
        self.weight = 0.0


class PollPlanner:
    """When to poll each task a client follows: from the durations seen, within the budget.

    One planner lives on each client, so every task it follows (a batch's, or many
    ``generate()`` calls of a web app) shares the key's query budget. While the key's query
    limit is unknown (no 429 has named it and no tier was given), the budget is
    `PollPolicy.budget_per_task` for each task followed (at least `PollPolicy.budget_floor`),
    so that a move to a lower tier or another consumer of the key does not find the query
    window already spent; never more, though, than the key's tier documents (once the tier is
    known): many tasks followed at once would otherwise overrun it.

    Args:
        policy: The fallback schedule and the interval bounds.
        durations: The task durations seen so far.
        query_rate: The polls per second the key allows now (evenly, from now on), or None.
        slots_wanted: Whether callers wait for active-task slots (tasks' ends are awaited).
        documented_rate: The polls per second the key's tier documents, or None.
        slack: How late a task's end may be seen while slots are not wanted (`poll_slack`).
    """

    def __init__(
        self,
        policy: PollPolicy,
        durations: DurationModel,
        query_rate: Callable[[], float | None],
        slots_wanted: Callable[[], bool] = lambda: True,
        documented_rate: Callable[[], float | None] = lambda: None,
        slack: Callable[[], float | None] = lambda: None,
    ) -> None:
        self.policy = policy
        self.durations = durations
        self._query_rate = query_rate
        self._slots_wanted = slots_wanted
        self._documented_rate = documented_rate
        self._slack = slack
        self._weights = 0.0
        self._followed = 0
        self.rng = random.Random()  # noqa: S311 - jitter, not cryptography

    @classmethod
    def for_limits(
        cls, policy: PollPolicy, durations: DurationModel, limits: LimitsBackend
    ) -> PollPlanner:
        """A planner that reads the key's query budget and slots from ``limits``."""
        return cls(
            policy,
            durations,
            lambda: limits.query.spendable_rate,
            lambda: slots_wanted(
                limits.active, limits.endpoint("create").rate, durations.quantile(0.5)
            ),
            lambda: limits.documented_rate("query"),
            lambda: poll_slack(
                limits.active, limits.endpoint("create").rate, durations.quantile(0.5)
            ),
        )

    def join(self) -> _Share:
        """A task starts being followed: its share of the budget."""
        self._followed += 1
        return _Share()

    def next_delay(
        self, age: float, polls: int, share: _Share, priority: Priority = "interactive"
    ) -> float:
        """Seconds until the next poll of a task: its likely end, within the query budget.

        An interactive caller waits for the result, and a background task's end is awaited
        unless slots held wait for the create pacer (`slots_wanted`): polls then come closer
        together. While the create rate binds, not the slots, a background task is polled less.
        """
        awaited = priority == "interactive" or self._slots_wanted()
        delay = self.durations.next_delay(
            age,
            polls,
            self.policy,
            self.rng,
            awaited=awaited,
            slack=None if awaited else self._slack(),
        )
        if not polls:
            return delay  # the first sleep: until the fastest tasks tend to finish
        remaining = self.durations.expected_remaining(age)
        weight = 1.0 / math.sqrt(max(remaining or 1.0, self.policy.min_interval))
        self._weights += weight - share.weight
        share.weight = weight
        # Share the query budget among the tasks being polled now (the others sleep until
        # the fastest tasks tend to finish), each in proportion to the square root of its
        # chance to be done (1 / expected remaining time): the split that makes the expected
        # delay before a finished task is seen smallest for a given budget.
        budget = max(self._weights, weight) / self.polls_per_second()
        return max(delay, budget / weight)

    def polls_per_second(self) -> float:
        """The polls per second all the tasks followed may spend together now."""
        rate = self._query_rate()
        if rate:
            return rate * _POLL_BUDGET_SHARE
        # The key's query limit is unknown: spend what any tier would allow, or enough for a
        # few polls in the life of a typical task, when tasks are short.
        per_task = self.policy.budget_per_task
        typical = self.durations.quantile(0.5)
        if typical:
            per_task = max(per_task, _POLLS_PER_TYPICAL_TASK / typical)
        budget = max(self.policy.budget_floor, per_task * self._followed)
        documented = self._documented_rate()
        if documented:
            budget = min(budget, documented)
        return budget

    def leave(self, share: _Share) -> None:
        """A task is no longer polled: give its share back."""
        self._weights -= share.weight
        share.weight = 0.0
        self._followed -= 1

    def observe(self, task: Task, created_at: float | None) -> None:
        """Learn a finished task's duration: the provider's times if plausible, else ours."""
        seen = None if created_at is None else anyio.current_time() - created_at
        elapsed = task.elapsed
        if elapsed is not None and (seen is None or elapsed <= seen + 1.0):
            self.durations.observe(elapsed)
        elif seen is not None:
            self.durations.observe(seen)


async def follow(
    caller: Caller,
    planner: PollPlanner,
    task_id: str,
    *,
    deadline: float,
    timeout: float,
    created_at: float | None = None,
    on_update: OnUpdate | None = None,
    on_poll: Callable[[], object] | None = None,
    priority: Priority = "interactive",
) -> Task:
    """Poll a task until it finishes; returns the finished `Task` (``success`` or ``fail``).

    Args:
        caller: Sends the polls.
        planner: Times them.
        task_id: The task to follow.
        deadline: When to stop waiting (anyio's clock).
        timeout: The wait's length, for the error's message.
        created_at: When this client created the task, if it did (the first poll then
            waits until the fastest tasks tend to finish).
        on_update: Told of every state change.
        on_poll: Told of every poll sent, whatever its answer.
        priority: The class of the polls in the query pacer.

    Raises:
        WaitTimeoutError: The deadline came first.
        APIStatusError: A final answer (see the module's rules).
        DecodeError: Three unreadable answers in a row.
    """
    started = anyio.current_time()
    polls = unreadable = 0
    sent_at: float | None = None  # when the last poll went, if it was answered (`on_sent`)
    last: Task | None = None

    def _sent(at: float) -> None:
        nonlocal sent_at
        sent_at = at

    failure: NanoBananaError | None = None
    share = planner.join()
    telemetry = caller.telemetry
    try:
        with anyio.CancelScope(deadline=deadline), telemetry.waiting(task_id) as waiting:
            while True:
                if polls or created_at is not None:
                    age = _age(created_at, started, last)
                    delay = planner.next_delay(age, polls, share, priority)
                    if sent_at is not None:
                        # From one poll's send to the next: the answer's round trip is part
                        # of the interval, not added to it (a wait in the pacer before the
                        # send is not; after a failed poll, the whole interval is waited).
                        delay -= anyio.current_time() - sent_at
                    await anyio.sleep(max(0.0, delay))
                polls += 1
                sent_at = None  # set again only if this poll is answered
                try:
                    task = await caller.query(
                        task_id, deadline, priority=priority, backoff=False, on_sent=_sent
                    )
                except DecodeError as exc:
                    # An answer we cannot read will most likely read the same next time.
                    unreadable += 1
                    waiting.polled(error=exc)
                    if unreadable >= _MAX_UNREADABLE:
                        raise
                    failure = exc
                    continue
                except (APIConnectionError, ServerError, RateLimitError) as exc:
                    # The task runs on regardless: poll again on schedule (the retry of a
                    # failed poll, timed by the task's likely end); the deadline decides.
                    logger.info("polling task %s failed, will poll again: %s", task_id, exc)
                    waiting.polled(error=exc)
                    failure = exc
                    continue
                finally:
                    if on_poll is not None:
                        on_poll()
                unreadable = 0
                waiting.polled(task)
                previous, last = last, task
                if previous is None or task.raw_state != previous.raw_state:
                    if task.state is TaskState.UNKNOWN:
                        logger.info(
                            "task %s is in a state this client does not know: %r",
                            task_id,
                            task.raw_state,
                        )
                    await _notify(on_update, task)
                if task.is_finished:
                    planner.observe(task, created_at)
                    telemetry.finished(task, created_at)
                    return task
    finally:
        planner.leave(share)
    if last is not None and last.is_finished:  # seen finished; a slow on_update ran late
        planner.observe(last, created_at)
        telemetry.finished(last, created_at)
        return last
    raise WaitTimeoutError(task_id, timeout, last) from failure


def result_of(task: Task) -> TaskResult:
    """The result of a finished task.

    Raises:
        TaskFailedError: The task ended in ``fail``.
        DecodeError: It succeeded without result URLs.
    """
    if task.state is TaskState.FAIL:
        raise TaskFailedError(task)
    if not task.urls:
        raise DecodeError(f"task {task.task_id} succeeded without result URLs")
    return TaskResult(task_id=task.task_id, urls=task.urls, task=task)


def _age(created_at: float | None, started: float, last: Task | None) -> float:
    """How old a task is: from our create, else the provider's create time, else our wait."""
    if created_at is not None:
        return anyio.current_time() - created_at
    if last is not None and last.create_time is not None:
        return max(0.0, time.time() - last.create_time.timestamp())
    return anyio.current_time() - started


async def _notify(on_update: OnUpdate | None, task: Task) -> None:
    if on_update is None:
        return
    outcome = on_update(task)
    if inspect.isawaitable(outcome):
        await outcome
