"""An `AsyncNanoBanana` wired to the fake in-process, its clocks running at the fake's speed."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any

import httpx

from .. import AsyncNanoBanana, PollPolicy, RetryPolicy

if TYPE_CHECKING:
    from ._fake import FakeNanoBanana

__all__ = ["open_client"]


@contextlib.asynccontextmanager
async def open_client(fake: FakeNanoBanana, **kwargs: Any) -> AsyncGenerator[AsyncNanoBanana, None]:
    """Open a client of ``fake`` (see `FakeNanoBanana.client`).

    The default poll and retry policies are scaled to the fake's ``time_scale``, and the
    client's jitter is drawn from the fake's ``seed``, so that a run on a virtual clock
    repeats request for request.
    """
    scale = fake.time_scale
    kwargs.setdefault("api_key", fake.api_key)
    kwargs.setdefault("poll", PollPolicy().scaled(scale))
    kwargs.setdefault("retry", RetryPolicy().scaled(scale))
    # In-process, only the "slow" fault consults the timeout (httpx leaves timeouts to
    # the transport), so scaling it just makes slow answers time out sooner.
    timeout = httpx.Timeout(60.0 * scale, connect=10.0 * scale)
    async with (
        httpx.AsyncClient(transport=fake.transport(), timeout=timeout) as http_client,
        httpx.AsyncClient(transport=fake.transport(), timeout=timeout) as download_client,
        AsyncNanoBanana(
            http_client=http_client, download_client=download_client, **kwargs
        ) as client,
    ):
        client.engine.caller.rng.seed(f"{fake.seed}/retries")
        client.engine.planner.rng.seed(f"{fake.seed}/polls")
        yield client
