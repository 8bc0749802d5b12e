"""What the call loop does with a refusal: teach the key's limits, and wait for a slot.

A 429 teaches the endpoint's pacer (its window, from the body, and a block until
``retryAfter``); a create's 409 teaches the active-task cap (the key's cap and the tasks the
key holds, so a neighbour's share is told apart from a lower cap). After a 409, a caller
waits for a slot: in the queue again if it held one, else for a release or a timer.
"""

from __future__ import annotations

from typing import Literal

import anyio

from ._errors import ActiveTaskLimitError, NanoBananaError, RateLimitError
from ._wire import limit_hints
from .limits import ActiveSlots, LimitsBackend, Priority
from .limits._base import told_window

__all__ = ["MIN_SLOT_WAIT", "learn", "wait_for_slot"]

MIN_SLOT_WAIT = 0.01
"""Seconds: a slot wait shorter than this is no wait."""


def learn(
    limits: LimitsBackend,
    endpoint: Literal["create", "query"],
    error: NanoBananaError,
    sent_at: float | None,
) -> None:
    """Teach the key's limits what a refusal says (nothing for other errors)."""
    if isinstance(error, RateLimitError):
        hints = limit_hints(error)
        limits.endpoint(endpoint).on_rate_limited(
            error.retry_after, limit=hints.limit, window=hints.window, sent_at=sent_at
        )
        told = told_window(hints.limit, hints.window)
        if hints.tier is not None and told is not None:
            limits.learn_tier(hints.tier, endpoint, told)
    elif isinstance(error, ActiveTaskLimitError) and endpoint == "create":
        hints = limit_hints(error)
        limits.on_conflict(hints.limit, hints.active)


async def wait_for_slot(
    active: ActiveSlots,
    holder: object | None,
    delay: float,
    deadline: float,
    priority: Priority = "interactive",
    headroom: int = 0,
) -> bool:
    """After a 409: queue again for a slot, or wait for some slot to be released.

    A caller holding a slot gives it back and waits its turn for the next one, so callers
    refused together do not all retry at the next release. While none of our tasks runs, the
    key is full of someone else's work, and only a timer can tell when it frees.

    Returns:
        False if the deadline passed before the caller got its slot back.
    """
    if holder is None or not active.running:
        await active.wait_for_release(delay)
        return True
    active.release(holder)
    queued_at = anyio.current_time()
    with anyio.move_on_after(max(0.0, deadline - queued_at)):
        await active.acquire(holder, priority, headroom)
        if anyio.current_time() - queued_at < MIN_SLOT_WAIT:
            # A slot was free at once (the cap allows more than we hold): the key is full of
            # other work, so wait for a release or the delay, not at all.
            await active.wait_for_release(min(delay, max(0.0, deadline - queued_at)))
    return active.holds(holder)
