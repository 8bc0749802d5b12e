"""When to retry a request, and how long to wait before the next try.

Three kinds of trouble are retried, each on its own terms:

* 5xx answers, dropped connections and timeouts: exponential backoff with full jitter, up to
  ``max_retries`` times. A create is safe to retry because every try carries the same
  ``X-Request-ID``, which the provider uses to return the existing task.
* 429: wait what the provider asked (``data.retryAfter`` or ``Retry-After``), bounded by the
  caller's deadline and by a total wait budget; these waits do not spend ``max_retries``.
* 404 right after a create (and 422 "recordInfo is null"): the task is not visible yet; try
  again after a short pause, for a short grace period.

400, 401, 402 and 422 are final and never retried.
"""

from __future__ import annotations

import random
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime

import attrs
import httpx

from ._errors import APIStatusError, ServerError, TaskNotFoundError, UnprocessableEntityError
from ._wire import as_mapping, opt_number

__all__ = ["RetryPolicy", "is_not_visible_yet", "retry_after_seconds"]

_MAX_RETRY_AFTER = 3600.0  # a larger value is a server bug; never sleep for hours on it


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

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Seconds to sleep before retry number ``attempt`` (0-based): full jitter."""
        ceiling = min(self.backoff_max, self.backoff_base * (2.0 ** min(attempt, 30)))
        return rng.uniform(0.0, ceiling)

    @staticmethod
    def is_retryable(exc: APIStatusError) -> bool:
        """Whether a status error is worth another try under the backoff budget."""
        return isinstance(exc, ServerError)


def is_not_visible_yet(exc: APIStatusError) -> bool:
    """A 404, or the 422 "recordInfo is null" some servers send right after a create."""
    if isinstance(exc, TaskNotFoundError):
        return True
    return isinstance(exc, UnprocessableEntityError) and "recordinfo is null" in (
        exc.message.lower()
    )


def retry_after_seconds(data: object, headers: httpx.Headers) -> float | None:
    """Read how long a 429 asks to wait: ``data.retryAfter``, else ``Retry-After``."""
    body = as_mapping(data)
    if body is not None:
        seconds = _seconds(body.get("retryAfter"))
        if seconds is not None:
            return seconds
    header = headers.get("retry-after")
    if header is None:
        return None
    seconds = _seconds(header)
    if seconds is not None:
        return seconds
    try:
        when = parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def _seconds(value: object) -> float | None:
    if isinstance(value, int) and not isinstance(value, bool):
        # An int beyond any float is as absurd as a large one: cap it like the others.
        value = max(-1, min(value, 10**9))
    seconds = opt_number(value)
    if seconds is None or seconds < 0:
        return None
    return min(seconds, _MAX_RETRY_AFTER)
