"""The client's defaults, and the checks of its settings and of each call's arguments."""

from __future__ import annotations

import os
import re
import uuid

import httpx

from ._download import is_loopback_host
from ._errors import ConfigurationError, InvalidRequestError
from ._retry import RetryPolicy
from ._secret import Secret
from .limits import Priority
from .limits._queue import PRIORITIES

__all__ = [
    "check_priority",
    "DEFAULT_BASE_URL",
    "DEFAULT_CREATE_TIMEOUT",
    "DEFAULT_DOWNLOAD_TIMEOUT",
    "DEFAULT_MAX_DOWNLOAD_BYTES",
    "DEFAULT_MAX_RESPONSE_BYTES",
    "DEFAULT_POOL",
    "DEFAULT_QUERY_TIMEOUT",
    "DEFAULT_TIMEOUT",
    "DEFAULT_WAIT_TIMEOUT",
    "check_api_key",
    "check_at_least_one",
    "check_base_url",
    "check_request_id",
    "check_task_id",
    "check_timeout",
    "retry_policy",
    "timeouts",
]

DEFAULT_BASE_URL = "https://aigptimage.com"
"""The provider's API host."""

DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=10.0)
DEFAULT_MAX_DOWNLOAD_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_RESPONSE_BYTES = 1024 * 1024
"""The largest API answer read (the provider's answers are a few kilobytes)."""
DEFAULT_CREATE_TIMEOUT = 120.0
"""Seconds ``create_task`` may take by default: retries, pacing and 409/429 waits included."""
DEFAULT_QUERY_TIMEOUT = 60.0
"""Seconds ``get_task`` may take by default, retries included."""
DEFAULT_WAIT_TIMEOUT = 600.0
"""Seconds ``wait_for_result`` and ``generate`` may take by default."""
DEFAULT_DOWNLOAD_TIMEOUT = 120.0
"""Seconds ``download`` (and each file of ``save_result``) may take by default."""
# Keep every pooled connection alive: httpx's default keeps 20, and a batch with more requests
# in flight than that would open and close a connection per request.
DEFAULT_POOL = httpx.Limits(max_connections=64, max_keepalive_connections=64)
_KEY_CHARS = re.compile(r"^[\x21-\x7e]+$")
_MAX_REQUEST_ID = 128
_REQUEST_ID_RE = re.compile(r"^[\x21-\x7e]+$")


def check_api_key(api_key: str | None) -> Secret:
    """The API key given, or ``NANOBANANA_API_KEY``'s, held as a `Secret`.

    Raises:
        ConfigurationError: There is none, or it has spaces or control characters.
    """
    key = api_key if api_key is not None else os.environ.get("NANOBANANA_API_KEY")
    if not key or not key.strip():
        raise ConfigurationError(
            "api_key", "no API key: pass api_key= or set the NANOBANANA_API_KEY variable"
        )
    if not _KEY_CHARS.match(key.strip()):
        raise ConfigurationError(
            "api_key", "must be printable ASCII without spaces (check for a stray newline)"
        )
    return Secret(key.strip())


def check_base_url(base_url: str | httpx.URL | None) -> tuple[httpx.URL, bool]:
    """The API host (given, ``NANOBANANA_BASE_URL``'s or the provider's), and if on loopback.

    Raises:
        ConfigurationError: It is not an https URL (plain http only on loopback).
    """
    url = httpx.URL(str(base_url or os.environ.get("NANOBANANA_BASE_URL") or DEFAULT_BASE_URL))
    if url.scheme not in ("http", "https") or not url.host:
        raise ConfigurationError("base_url", f"must be an http(s) URL, got {str(url)!r}")
    loopback = is_loopback_host(url.host)
    if url.scheme == "http" and not loopback:
        raise ConfigurationError(
            "base_url", "must use https:// (plain http is allowed only on loopback)"
        )
    return url, loopback


def check_at_least_one(**setting: int) -> None:
    """Refuse a size setting below 1 (given as ``name=value``)."""
    for name, value in setting.items():
        if value < 1:
            raise ConfigurationError(name, "must be at least 1")


def retry_policy(retry: RetryPolicy | None, max_retries: int | None) -> RetryPolicy:
    """The retry policy, with ``max_retries`` (when given) overriding its count."""
    retry = retry or RetryPolicy()
    if max_retries is None:
        return retry
    if max_retries < 0:
        raise ConfigurationError("max_retries", "must be 0 or more")
    return RetryPolicy(
        max_retries=max_retries,
        backoff_base=retry.backoff_base,
        backoff_max=retry.backoff_max,
        max_rate_limit_wait=retry.max_rate_limit_wait,
        not_found_grace=retry.not_found_grace,
    )


def timeouts(timeout: float | httpx.Timeout | None) -> tuple[httpx.Timeout | None, float]:
    """Httpx's per-phase timeouts (None: the HTTP client's own), and one exchange's bound."""
    if timeout is None:
        return None, DEFAULT_TIMEOUT.read or 60.0
    if isinstance(timeout, httpx.Timeout):
        phases = [t for t in (timeout.connect, timeout.read, timeout.write, timeout.pool) if t]
        return timeout, max(phases, default=DEFAULT_TIMEOUT.read or 60.0)
    if not timeout > 0:
        raise ConfigurationError("timeout", f"must be more than 0 seconds, got {timeout!r}")
    return httpx.Timeout(float(timeout)), float(timeout)


def check_request_id(request_id: object) -> str:
    """A request id as given, or a fresh UUID4 for None.

    Raises:
        InvalidRequestError: It is not 1 to 128 printable ASCII characters without spaces.
    """
    if request_id is None:
        return str(uuid.uuid4())
    if (
        not isinstance(request_id, str)
        or len(request_id) > _MAX_REQUEST_ID
        or not _REQUEST_ID_RE.match(request_id)
    ):
        raise InvalidRequestError(
            "request_id",
            f"must be 1 to {_MAX_REQUEST_ID} printable ASCII characters without spaces",
        )
    return request_id


def check_task_id(task_id: object) -> str:
    """A task id, if it is a non-empty string."""
    if not isinstance(task_id, str) or not task_id.strip():
        raise InvalidRequestError("task_id", "must be a non-empty string")
    return task_id


def check_priority(priority: object, field: str = "priority") -> Priority:
    """A caller's class: ``"interactive"`` or ``"background"``.

    Raises:
        InvalidRequestError: It is neither.
    """
    if priority not in PRIORITIES:
        raise InvalidRequestError(field, f"must be 'interactive' or 'background', got {priority!r}")
    return priority


def check_timeout(timeout: float | None, default: float) -> float:
    """A call's timeout in seconds: ``default`` for None, else more than 0."""
    if timeout is None:
        return default
    if not timeout > 0:
        raise InvalidRequestError("timeout", f"must be more than 0 seconds, got {timeout!r}")
    return float(timeout)
