"""`FakeNanoBanana`: the fake provider's public face, its settings and its ways in.

The work is done by its parts, each in its own module: `_routing` (one request: endpoint,
faults, auth, rates), `_create` (``createTask``), `_query` (``recordInfo`` and result files),
`_quota` (rate windows and active tasks), `_stats` (what the fake saw), `_tasks` (the task
table). Everything is decided lazily from a clock: a task's state is computed from its
creation time and planned duration when it is asked for, so no background tasks are needed.
The clock is the running event loop's (`_clock.LoopClock`), so the fake keeps the client's
time, virtual or real. Internally all times are seconds since the fake started on that clock;
``time_scale`` shrinks the provider's durations and rate windows into it once, when they are
set.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ._clock import LoopClock
from ._create import Creator, DurationSpec, FailSpec
from ._faults import Endpoint, FaultInjector, FaultKind, Faults
from ._fetch import fetch_images
from ._limits import TierLimits, changed_limits, limits_for
from ._neighbours import Neighbour
from ._query import TaskReader
from ._quota import KeyQuota
from ._reply import Reply
from ._routing import DEFAULT_RESULT_BASE_URL, Incoming, Router
from ._schedule import Schedule
from ._stats import FakeStats, RequestRecord, StatsRecorder
from ._tasks import FakeTask, TaskTable, TaskView

if TYPE_CHECKING:
    import httpx

    from .. import AsyncNanoBanana

__all__ = ["FakeNanoBanana"]

_DEFAULT_FAIL_CODES: tuple[tuple[str, str], ...] = (
    ("500", "Internal error, please try again later."),
)


class FakeNanoBanana:
    """A stateful, faithful fake of the Nano Banana jobs API, for tests, demos and benchmarks.

    It keeps the provider's contract (SPEC §1): bearer auth, per-endpoint rate limits in a
    1-second and a 60-second window (fixed windows aligned to the fake's start), the active-task
    limit, ``X-Request-ID`` idempotency, tasks moving ``waiting`` -> ``generating`` ->
    ``success``/``fail`` over time, and result files that are real PNG/JPEG images. Use it
    in-process through `transport` or `client`, or over loopback through `serve`.

    It can change under a run, as a real key does: `set_tier` / `set_limits`, other consumers
    holding active slots (`neighbour`), and changes planned ahead (`schedule`).

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
        time_scale: Seconds of the fake's clock per provider second: ``0.01`` runs everything
            100x faster in real time; under a virtual clock ``1`` keeps the provider's own
            numbers at no real cost.
        seed: Seeds every random choice (durations, failures, faults, task ids).
        faults: Fault probabilities; see `Faults` and `script`.
        result_base_url: Where result URLs point. By default
            ``https://results.fake-nanobanana.test`` in-process, the server's own URL over
            loopback.
        clock: A monotonic clock in seconds. By default the clock of the event loop that asks
            the fake (anyio's ``current_time``), so under a virtual clock (`virtual_time`,
            trio's ``MockClock``) provider minutes pass in no real time; outside an event loop
            the fake's time stands still. Inject one (``time.monotonic``, or a callable you
            advance by hand) to drive the fake yourself.

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
        clock: Callable[[], float] | None = None,
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
        self._seed = seed
        self.result_base_url = result_base_url.rstrip("/") if result_base_url else None
        """Where result URLs point, if fixed at construction."""
        self._clock = LoopClock() if clock is None else clock
        self._start = self._clock()
        self._recorder = StatsRecorder()
        limits = limits_for(
            tier,
            {
                "create_per_second": create_per_second,
                "create_per_minute": create_per_minute,
                "query_per_second": query_per_second,
                "query_per_minute": query_per_minute,
                "max_active": max_active,
            },
        )
        self._quota = KeyQuota(limits, time_scale=self._time_scale, recorder=self._recorder)
        id_prefix = random.Random(f"{seed}/ids").getrandbits(32)  # noqa: S311 - reproducible
        self._tasks = TaskTable(
            id_prefix=f"task_{id_prefix:08x}",
            fail_codes=[(str(code), str(msg)) for code, msg in fail_codes],
            elapsed=lambda: self.elapsed,
        )
        self._task_view = TaskView(self._tasks)
        self._creator = Creator(
            tasks=self._tasks,
            quota=self._quota,
            recorder=self._recorder,
            time_scale=self._time_scale,
            duration=duration,
            fail_rate=fail_rate,
            credits=credits,
            seed=seed,
        )
        self._injector = FaultInjector(faults if faults is not None else Faults(), seed=seed)
        self._neighbours: list[Neighbour] = []
        self._schedule: Schedule[FakeNanoBanana] = Schedule()
        self._pinned: float | None = None  # the time of the scheduled change running now
        self._router = Router(
            api_key=lambda: self.api_key,
            injector=self._injector,
            quota=self._quota,
            creator=self._creator,
            reader=TaskReader(self._tasks, epoch_ms=time.time() * 1000.0),
            recorder=self._recorder,
        )

    # -- public state -------------------------------------------------------------------------

    @property
    def time_scale(self) -> float:
        """Seconds of the fake's clock per provider second."""
        return self._time_scale

    @property
    def seed(self) -> int:
        """The seed of every random choice the fake makes (and `client`'s jitter)."""
        return self._seed

    @property
    def limits(self) -> TierLimits:
        """The limits in force: the tier's, with explicit values applied.

        Assign new `TierLimits` to change them while the fake runs, as a provider changing a
        key's tier would (or use `set_tier` / `set_limits`); the change bites at once, the rate
        windows in progress keeping what they counted.
        """
        self._catch_up()
        return self._quota.limits

    @limits.setter
    def limits(self, limits: TierLimits) -> None:
        self._quota.limits = limits

    @property
    def tier(self) -> str:
        """The tier's name as reported in 429 answers (``"custom"`` without a tier)."""
        return self.limits.name

    @property
    def elapsed(self) -> float:
        """Seconds since the fake started, on its clock (see ``clock``).

        Reading it first runs the changes of `schedule` that are due, each with the clock
        reading its own time.
        """
        if self._pinned is not None:
            return self._pinned
        now = self._clock() - self._start
        while self._schedule.next_at <= now:
            due = self._schedule.pop_due(now)
            assert due is not None  # next_at said so
            self._pinned, change = due
            try:
                change(self)
            finally:
                self._pinned = None
        return now

    def _catch_up(self) -> None:
        """Run the scheduled changes that are due, so that what is read is current."""
        _ = self.elapsed

    @property
    def faults(self) -> Faults:
        """The fault probabilities in force; assign a new `Faults` to change them."""
        self._catch_up()
        return self._injector.faults

    @faults.setter
    def faults(self, faults: Faults) -> None:
        self._injector.faults = faults

    @property
    def credits(self) -> int | None:
        """Creates left before 402 (``None`` = unlimited); assignable."""
        self._catch_up()
        return self._creator.credits

    @credits.setter
    def credits(self, credits: int | None) -> None:
        self._creator.credits = credits

    @property
    def tasks(self) -> Mapping[str, FakeTask]:
        """Every task created, by task id, in creation order (a live, read-only view)."""
        return self._task_view

    @property
    def stats(self) -> FakeStats:
        """A snapshot of the counters (see `FakeStats`)."""
        now = self.elapsed
        return self._recorder.snapshot(self._quota.active(now), self._quota.neighbour_slots(now))

    @property
    def recent_requests(self) -> tuple[RequestRecord, ...]:
        """The last requests seen (at most 256), oldest first, to help debug a failing test."""
        self._catch_up()
        return tuple(self._recorder.log)

    def reset_stats(self) -> None:
        """Zero the counters of `stats` and forget `recent_requests`; tasks are kept.

        ``max_active`` restarts from the number of tasks active now.
        """
        self._recorder.reset(self._quota.active(self.elapsed))

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
        self._injector.script(endpoint, faults)

    # -- changes under a run ------------------------------------------------------------------

    def set_tier(self, tier: str | None, **overrides: int | None) -> TierLimits:
        """Move the key to another tier now, as the provider does on an upgrade or downgrade.

        The new limits bite at once: the rate windows in progress keep what they counted, and
        the active-task cap applies to the next create (tasks already running go on).

        Args:
            tier: A tier of `TIERS`, or ``None`` for no limits but ``overrides``.
            **overrides: Limits to set instead of the tier's (``max_active=8``, ...).

        Returns:
            The limits now in force.

        Raises:
            ValueError: For an unknown tier or limit, or an impossible value.
        """
        self._quota.limits = limits_for(tier, overrides)
        return self._quota.limits

    def set_limits(self, **changes: int | None) -> TierLimits:
        """Change some limits now, keeping the others and the tier's name.

        ``fake.set_limits(max_active=15)`` raises the cap; ``None`` lifts a limit. The change
        bites at once, as with `set_tier`.

        Args:
            **changes: ``create_per_second``, ``create_per_minute``, ``query_per_second``,
                ``query_per_minute`` or ``max_active``: a number >= 1, or ``None``.

        Returns:
            The limits now in force.

        Raises:
            ValueError: For an unknown limit or an impossible value (nothing is changed).
        """
        self._quota.limits = changed_limits(self._quota.limits, changes)
        return self._quota.limits

    def neighbour(self, slots: int, *, for_seconds: float | None = None) -> Neighbour:
        """Let another consumer of the key hold ``slots`` of its active-task cap, from now.

        The slots count against the cap like the client's own tasks (a 409 reports them in
        ``active``), at once, even over the cap; `FakeStats.neighbour_slots` shows them.

        Args:
            slots: How many slots the neighbour holds (>= 1).
            for_seconds: For how long, in provider seconds (scaled by ``time_scale``);
                ``None`` = until `Neighbour.leave` or the end of its ``with`` block.

        Returns:
            The neighbour: a context manager (``with`` or ``async with``) that leaves on exit.

        Raises:
            ValueError: For fewer than one slot or a negative duration.
        """
        if slots < 1:
            raise ValueError("slots must be >= 1")
        if for_seconds is not None and not for_seconds >= 0:
            raise ValueError("for_seconds must be >= 0 or None")
        now = self.elapsed
        left_at = math.inf if for_seconds is None else now + for_seconds * self._time_scale
        neighbour = Neighbour(
            slots=slots, started_at=now, left_at=left_at, elapsed=lambda: self.elapsed
        )
        self._quota.add_neighbour(neighbour)
        self._neighbours.append(neighbour)
        return neighbour

    @property
    def neighbours(self) -> tuple[Neighbour, ...]:
        """Every neighbour so far, holding or gone, oldest first."""
        self._catch_up()
        return tuple(self._neighbours)

    def schedule(self, changes: Iterable[tuple[float, Callable[[FakeNanoBanana], object]]]) -> None:
        """Plan changes to the fake at given times, e.g. for a benchmark's scenario.

        Each change is a callable taking the fake, run when the fake is next asked anything
        after its time, with `elapsed` reading that time (so a `neighbour` it starts holds from
        then). No task runs in the background: this works in-process, over `serve`, on any
        event loop and with an injected clock. Changes due at one time run in the order given.

        Example:
            ``fake.schedule([(5, lambda f: f.neighbour(6, for_seconds=10)),
            (30, lambda f: f.set_tier("pro"))])``

        Args:
            changes: ``(at, change)`` pairs; ``at`` is in provider seconds from now (scaled by
                ``time_scale`` like durations).

        Raises:
            ValueError: For a negative time (nothing is planned).
        """
        planned = list(changes)
        if any(not at >= 0 for at, _ in planned):
            raise ValueError("the times of a schedule must be >= 0")
        now = self.elapsed
        for at, change in planned:
            self._schedule.add(now + at * self._time_scale, change)

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

    def client(self, **kwargs: Any) -> contextlib.AbstractAsyncContextManager[AsyncNanoBanana]:
        """Open an `AsyncNanoBanana` wired to this fake in-process, for API calls and downloads.

        The client's clocks run at the fake's speed: unless given, its request timeout
        (60 s), poll intervals and retry backoffs are its defaults times ``time_scale``, so a
        test at ``time_scale=0.01`` behaves like production, 100 times faster.

        Args:
            **kwargs: Passed to `AsyncNanoBanana`; ``api_key`` defaults to the fake's.

        Returns:
            An async context manager yielding the client; it and its HTTP clients are closed
            when the context exits.
        """
        from ._wiring import open_client

        return open_client(self, **kwargs)

    async def fetch_images(self) -> None:
        """Fetch the loopback input images of the tasks created since the last call.

        The transport and the server call it after each create, before answering it: a task
        whose image cannot be fetched, or is not a JPEG, PNG or WEBP image of at most 10 MB,
        then ends in ``fail`` (``failCode`` ``"400"``), as the provider's would. Images
        elsewhere than on loopback are not fetched.
        """
        await fetch_images(self._tasks, self._recorder)

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
        base_url = self.result_base_url or result_base_url
        request = Incoming(method, path, query, authorization, request_id, body, base_url)
        return self._router.handle(self.elapsed, request)
