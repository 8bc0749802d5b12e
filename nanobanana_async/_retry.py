"""When to retry a request, and how long to wait before the next try.

The decision is a pure function of the error, the attempt and the policy (`retry_decision`);
the call loop in `_calls` carries it out. Four kinds of trouble are retried, each on its terms:

* 5xx answers, dropped connections and timeouts (and a create's unreadable 200 answer, whose
  task may exist): exponential backoff with full jitter, up to ``max_retries`` times. A create
  is safe to retry because every try carries the same ``X-Request-ID``, which the provider
  uses to return the existing task.
* 429: wait what the provider asked (``data.retryAfter`` or ``Retry-After``), bounded by the
  caller's deadline and by ``max_rate_limit_wait`` in all; these waits do not spend
  ``max_retries``.
* 409 on a create (the active-task limit): wait for a slot; not a retry-budget matter either.
  A 409 that says the request id was used for another request is final.
* 404 right after a create (and 422 "recordInfo is null"): the task is not visible yet; try
  again after a short pause, for a short grace period.

400, 401, 402 and 422 are final and never retried.
"""

from __future__ import annotations

import random
from typing import Literal

import attrs

from ._errors import (
    ActiveTaskLimitError,
    APIConnectionError,
    APIStatusError,
    DecodeError,
    NanoBananaError,
    RateLimitError,
    ResponseTooLargeError,
    ServerError,
    TaskNotFoundError,
    UnprocessableEntityError,
)

__all__ = ["Retry", "RetryPolicy", "is_not_visible_yet", "retry_decision"]

_SLOT_WAIT_MIN = 0.05
_SLOT_WAIT_MAX = 30.0
_NOT_VISIBLE_WAIT_MAX = 2.0


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """How a client retries failed requests.

    Attributes:
        max_retries: Retries after a 5xx, a dropped connection or a timeout (0 disables).
        backoff_base: The first backoff ceiling in seconds; it doubles on every retry.
        backoff_max: The largest backoff ceiling in seconds.
        max_rate_limit_wait: The most seconds one call spends waiting on 429 answers.
        not_found_grace: Seconds after a create during which a 404 means "not visible yet".
    """

    max_retries: int = attrs.field(default=3, validator=attrs.validators.ge(0))
    backoff_base: float = attrs.field(default=0.5, validator=attrs.validators.gt(0))
    backoff_max: float = attrs.field(default=8.0, validator=attrs.validators.gt(0))
    max_rate_limit_wait: float = attrs.field(default=300.0, validator=attrs.validators.ge(0))
    not_found_grace: float = attrs.field(default=10.0, validator=attrs.validators.ge(0))

    def scaled(self, scale: float) -> RetryPolicy:
        """This policy on a clock where one second lasts ``scale`` seconds (every wait shrinks).

        For a fake provider running at ``time_scale``.
        """
        return attrs.evolve(
            self,
            backoff_base=self.backoff_base * scale,
            backoff_max=self.backoff_max * scale,
            max_rate_limit_wait=self.max_rate_limit_wait * scale,
            not_found_grace=self.not_found_grace * scale,
        )

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Seconds to sleep before retry number ``attempt`` (0-based): full jitter."""
        ceiling = min(self.backoff_max, self.backoff_base * (2.0 ** min(attempt, 30)))
        return rng.uniform(0.0, ceiling)


RetryKind = Literal["backoff", "rate_limit", "slot", "not_visible"]


@attrs.frozen
class Retry:
    """Try again after ``delay`` seconds.

    Attributes:
        delay: Seconds to wait first.
        kind: Why: ``backoff`` spends one of ``max_retries``; ``rate_limit`` spends the 429
            wait budget; ``slot`` waits for an active-task slot; ``not_visible`` waits out the
            grace period after a create.
    """

    delay: float
    kind: RetryKind


def is_not_visible_yet(exc: APIStatusError) -> bool:
    """A 404, or the 422 "recordInfo is null" some servers send right after a create."""
    if isinstance(exc, TaskNotFoundError):
        return True
    return isinstance(exc, UnprocessableEntityError) and "recordinfo is null" in (
        exc.message.lower()
    )


def retry_decision(
    error: NanoBananaError,
    *,
    create: bool,
    attempt: int,
    policy: RetryPolicy,
    rng: random.Random,
    in_grace: bool = False,
    grace_elapsed: float = 0.0,
    slot_waits: int = 0,
) -> Retry | None:
    """Whether (and when) to try a failed request again; None when the error is final.

    Args:
        error: What the try ended with.
        create: Whether the request was a create (409s and unreadable answers retry there).
        attempt: The backoff retries spent so far.
        policy: The retry policy.
        rng: The source of jitter.
        in_grace: Whether the task was created by this client within the grace period.
        grace_elapsed: Seconds spent retrying a "not visible yet" answer so far.
        slot_waits: 409s met so far by this call: each waits longer, so a key full of
            someone else's tasks is asked a few times, not hammered.
    """
    if isinstance(error, RateLimitError):
        delay = error.retry_after
        return Retry(policy.backoff(attempt, rng) if delay is None else delay, "rate_limit")
    if isinstance(error, ActiveTaskLimitError):
        if not create:
            return None
        base = max(_SLOT_WAIT_MIN, policy.backoff_base)
        return Retry(min(_SLOT_WAIT_MAX, base * 2.0 ** min(slot_waits + 1, 10)), "slot")
    if isinstance(error, APIStatusError) and is_not_visible_yet(error):
        if not in_grace:
            return None
        return Retry(
            min(_NOT_VISIBLE_WAIT_MAX, 0.1 * 2.0 ** min(int(grace_elapsed), 4)), "not_visible"
        )
    retryable = isinstance(error, (APIConnectionError, ServerError)) or (
        create and isinstance(error, DecodeError) and not isinstance(error, ResponseTooLargeError)
    )
    if not retryable or attempt >= policy.max_retries:
        return None
    return Retry(policy.backoff(attempt, rng), "backoff")
