"""One request through the fake: endpoint, method, fault, key, rate window, then its answer.

After the endpoint's own logic, the answer is counted and logged.

No I/O: the transport and the server call `Router.handle` and carry out the `Reply`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, NamedTuple

from ._create import Creator
from ._faults import Endpoint, FaultInjector, FaultKind
from ._query import FILES_PREFIX, TaskReader
from ._quota import KeyQuota, RatedEndpoint
from ._reply import Reply
from ._stats import RequestRecord, StatsRecorder

__all__ = ["CREATE_PATH", "DEFAULT_RESULT_BASE_URL", "QUERY_PATH", "Incoming", "Router"]

DEFAULT_RESULT_BASE_URL = "https://results.fake-nanobanana.test"
"""Where result files live when the fake is used in-process (a different host than the API)."""

CREATE_PATH = "/api/v1/jobs/createTask"
QUERY_PATH = "/api/v1/jobs/recordInfo"


class Incoming(NamedTuple):
    """One HTTP request, as the front end received it (see `FakeNanoBanana.handle`)."""

    method: str
    path: str
    query: str
    authorization: str | None
    request_id: str | None
    body: bytes
    result_base_url: str


def _endpoint(path: str) -> Endpoint | Literal["other"]:
    if path == CREATE_PATH:
        return "create"
    if path == QUERY_PATH:
        return "query"
    if path.startswith(FILES_PREFIX):
        return "result"
    return "other"


class Router:
    """Routes each request to the endpoint that answers it, with faults and limits in front.

    Args:
        api_key: Returns the only key accepted now.
        injector: Draws and applies faults.
        quota: The rate windows.
        creator: Answers ``createTask``.
        reader: Answers ``recordInfo`` and result downloads.
        recorder: The counters and the log.
    """

    __slots__ = ("_api_key", "_creator", "_injector", "_quota", "_reader", "_recorder")

    def __init__(
        self,
        *,
        api_key: Callable[[], str],
        injector: FaultInjector,
        quota: KeyQuota,
        creator: Creator,
        reader: TaskReader,
        recorder: StatsRecorder,
    ) -> None:
        self._api_key = api_key
        self._injector = injector
        self._quota = quota
        self._creator = creator
        self._reader = reader
        self._recorder = recorder

    def handle(self, now: float, request: Incoming) -> Reply:
        """Answer one request received at ``now`` (see `FakeNanoBanana.handle`)."""
        endpoint = _endpoint(request.path)
        self._recorder.count(f"{endpoint}_requests")
        fault: FaultKind = "ok"
        task_id: str | None = None
        expected = "POST" if endpoint == "create" else "GET"
        if endpoint == "other":
            reply = Reply.envelope(404, "Not found")
        elif request.method.upper() != expected:
            reply = Reply.envelope(405, "Method not allowed", headers=[("allow", expected)])
        else:
            fault = self._injector.draw(endpoint)
            if fault != "ok":
                self._recorder.count("faults")
            reply, task_id = self._dispatch(endpoint, fault, now, request)
        status = None if reply.action in ("refuse", "drop") else reply.status
        self._recorder.answered(RequestRecord(now, endpoint, status, fault, task_id), reply.status)
        return reply

    def _dispatch(
        self, endpoint: Endpoint, fault: FaultKind, now: float, request: Incoming
    ) -> tuple[Reply, str | None]:
        before = self._injector.before(fault, lambda: self._quota.full_second(endpoint, now))
        if before is not None:
            return before, None
        if endpoint == "result":
            if request.authorization is not None:
                self._recorder.authorization_to_result_host = True
            reply, task_id = self._reader.result(now, request.path)
        else:
            refused = self._refuse(endpoint, now, request.authorization)
            if refused is not None:
                return refused, None
            if endpoint == "create":
                reply, task_id = self._creator.create(now, request.request_id, request.body)
            else:
                reply, task_id = self._reader.query(now, request.query, request.result_base_url)
        self._injector.after(fault, reply)
        return reply, task_id

    def _refuse(
        self, endpoint: RatedEndpoint, now: float, authorization: str | None
    ) -> Reply | None:
        """A 401 for a wrong key, else a 429 if a rate window is full, else ``None``."""
        if authorization is not None:
            scheme, _, token = authorization.strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip() == self._api_key():
                return self._quota.admit(endpoint, now)
        return Reply.envelope(401, "Unauthorized: missing or invalid API key")
