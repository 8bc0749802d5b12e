"""Shared fixtures: every async test runs on asyncio and on trio, on a virtual clock.

Time is virtual (`nanobanana_async.testing.virtual_time`): when every task waits, the clock
jumps to the next timer, so a ten-minute timeout takes no real time and a loaded machine
cannot change an outcome. Tests marked ``real_time`` (real sockets, servers, processes) run
on the real clock.

`api` is a respx router standing in for the provider and for the result hosts, injected into
the client as a transport (never patched in globally), with the provider's answers (built in
`support`) and a factory for clients with tiny retry and poll intervals, so the suite stays
fast.

Hypothesis runs 100 examples per property by default, and 1000 with
``--hypothesis-profile=thorough`` (``nox -s tests -- --hypothesis-profile=thorough``), a run for
before a release rather than for every change.

Every test ends with a garbage collection, so a resource it left open (a file, a socket, an
SQLite connection) fails that very test with its `ResourceWarning`, rather than a later test,
or no test at all.
"""

from __future__ import annotations

import functools
import gc
import signal
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import respx
from hypothesis import settings
from support import RESULT_URL, envelope, quick_polls, record_info

from nanobanana_async import DEFAULT_BASE_URL, AsyncNanoBanana, RetryPolicy
from nanobanana_async.testing import virtual_time

#: A distinctive key: tests search every text the library produces for it.
API_KEY = "sk-nb-SECRET-0xC0FFEE-d41d8cd98f00b204"
CREATE_URL = f"{DEFAULT_BASE_URL}/api/v1/jobs/createTask"
QUERY_URL = f"{DEFAULT_BASE_URL}/api/v1/jobs/recordInfo"

FAST_RETRY = RetryPolicy(max_retries=3, backoff_base=0.001, backoff_max=0.004, not_found_grace=5.0)
FAST_POLL = quick_polls(initial=0.001, maximum=0.005, min_interval=0.001)


settings.register_profile("default", max_examples=100)
settings.register_profile("thorough", max_examples=1000)
settings.load_profile("default")

#: Fixtures that stand for real servers: a test that uses one runs on the real clock.
REAL_SERVERS = frozenset({"s3_endpoint", "redis_url"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if REAL_SERVERS.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.real_time)


@pytest.fixture(autouse=True)
def _collect_garbage() -> Iterator[None]:
    """Collect the test's garbage while its warnings are still errors.

    Set up before the test's other fixtures, so torn down after them: a `ResourceWarning`
    from anything the test or a fixture left open is then this test's error. Left to the
    collector's own timing it is raised in a later test, or between tests, where it is not
    an error.

    What is still alive after the collection is frozen (left out of later collections, though
    still freed when its last reference goes), so each collection walks only what one test
    made: a walk of everything the suite imported would take most of a second per test.
    """
    yield
    gc.collect()
    gc.freeze()


@pytest.fixture
def interruptible() -> Iterator[None]:
    """Processes this test starts can be interrupted with SIGINT, as from a terminal.

    A process started in the background by a shell without job control (a CI step, ``cmd &``
    in a script) ignores SIGINT, and so does every process it starts: Python then leaves
    SIGINT ignored instead of raising `KeyboardInterrupt`, and a Ctrl-C test would wait for
    nothing. A handler here makes the children start with SIGINT's default again.
    """
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Thaw what `_collect_garbage` froze: `gc.get_referrers` does not see frozen objects.

    Hypothesis asks it, when it is first imported, whether a PRNG it is given is referred to;
    in a run of tests that never imported it, that is in the summary, after the tests.
    """
    gc.unfreeze()


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> object:
    if request.node.get_closest_marker("real_time"):
        return request.param
    return virtual_time(request.param)


class Api:
    """The provider and its result hosts, as a respx router the client reaches by transport."""

    key = API_KEY
    create_url = CREATE_URL
    query_url = QUERY_URL
    result_url = RESULT_URL

    def __init__(self) -> None:
        self.router = respx.Router(assert_all_called=False)
        self.transport = httpx.MockTransport(self.router.async_handler)
        self.create = self.router.post(CREATE_URL, name="create")
        self.query = self.router.get(QUERY_URL, name="query")

    # -- clients -----------------------------------------------------------------------------

    def http(self, **kwargs: Any) -> httpx.AsyncClient:
        """An httpx client whose requests reach this router."""
        return httpx.AsyncClient(transport=self.transport, **kwargs)

    def client(self, **kwargs: Any) -> AsyncNanoBanana:
        """A client on this router with tiny retry and poll intervals."""
        kwargs.setdefault("api_key", API_KEY)
        kwargs.setdefault("http_client", self.http())
        kwargs.setdefault("download_client", self.http())
        kwargs.setdefault("retry", FAST_RETRY)
        kwargs.setdefault("poll", FAST_POLL)
        return AsyncNanoBanana(**kwargs)

    # -- answers (built in `support`, the one home of the provider's answer shapes) -----------

    ok = staticmethod(functools.partial(envelope, 200, "success"))
    error = staticmethod(envelope)
    record = staticmethod(record_info)

    @staticmethod
    def created(task_id: str = "task_1") -> httpx.Response:
        return envelope(200, "success", {"taskId": task_id})

    @staticmethod
    def task(task_id: str = "task_1", state: str = "success", **extra: Any) -> httpx.Response:
        return envelope(200, "success", record_info(task_id, state, **extra))

    @staticmethod
    def states(*states: str, task_id: str = "task_1") -> list[httpx.Response]:
        """Successive ``recordInfo`` answers walking through ``states``."""
        return [Api.task(task_id, state) for state in states]


@pytest.fixture
def api() -> Api:
    """The provider and result hosts on a respx router, injected into clients by transport."""
    return Api()


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3-protocol server (moto's) on a free loopback port, with the bucket "pictures"."""
    moto_server = pytest.importorskip("moto.server")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    httpx.put(f"{endpoint}/pictures").raise_for_status()
    try:
        yield endpoint
    finally:
        server.stop()
