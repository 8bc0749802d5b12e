"""An `AsyncNanoBanana` wired to the fake in-process, its clocks running at the fake's speed."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any

import attrs
import httpx

from .. import AsyncNanoBanana, PollPolicy, RetryPolicy

if TYPE_CHECKING:
    from ._fake import FakeNanoBanana

__all__ = ["open_client"]


@contextlib.asynccontextmanager
async def open_client(fake: FakeNanoBanana, **kwargs: Any) -> AsyncGenerator[AsyncNanoBanana, None]:
    """Open a client of ``fake`` (see `FakeNanoBanana.client`).

    The poll and retry policies are scaled alike (deliberate twins): every time in them is
    provider seconds, and the fake runs at ``time_scale``.
    """
    scale = fake.time_scale
    kwargs.setdefault("api_key", fake.api_key)
    if "poll" not in kwargs:
        poll = PollPolicy()
        kwargs["poll"] = attrs.evolve(
            poll,
            initial=poll.initial * scale,
            maximum=poll.maximum * scale,
            min_interval=poll.min_interval * scale,
        )
    if "retry" not in kwargs:
        retry = RetryPolicy()
        kwargs["retry"] = attrs.evolve(
            retry,
            backoff_base=retry.backoff_base * scale,
            backoff_max=retry.backoff_max * scale,
            max_rate_limit_wait=retry.max_rate_limit_wait * scale,
            not_found_grace=retry.not_found_grace * scale,
        )
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
        yield client
