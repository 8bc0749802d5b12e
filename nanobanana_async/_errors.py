"""The exception tree of nanobanana-async.

Every exception the library raises on purpose derives from `NanoBananaError`::

    NanoBananaError
    ├── InvalidRequestError (also ValueError)   bad input, caught before anything is sent
    │   └── ConfigurationError                  a client, runner or limits setting is wrong
    ├── APIConnectionError                      the request did not get an answer
    │   └── APITimeoutError                     ... because a timeout elapsed
    ├── APIStatusError                          the provider answered with an error code
    │   ├── BadRequestError                 400
    │   ├── AuthenticationError             401
    │   ├── InsufficientCreditsError        402
    │   ├── TaskNotFoundError               404
    │   ├── ActiveTaskLimitError            409 the key's active-task limit
    │   ├── RequestConflictError            409 the request id was used for another request
    │   ├── UnprocessableEntityError        422 (a 422 "recordInfo is null" right after a
    │   │                                        create is retried like a 404 first)
    │   ├── RateLimitError                  429
    │   └── ServerError                     5xx
    ├── TaskFailedError                         the task ended in state ``fail``
    ├── WaitTimeoutError (also TimeoutError)    the task was not finished by the deadline
    ├── DownloadError                           a result file could not be fetched safely
    ├── ImageHostError                          a local input image could not be published
    ├── DecodeError                             an answer could not be understood
    │   └── ResponseTooLargeError               ... because it was larger than the cap
    ├── JournalError                            a batch journal cannot be opened or used
    └── UsageError (also RuntimeError)          an object used out of its lifecycle (a
                                                closed client, a RedisLimits not entered,
                                                a runner already running)

The provider reports errors with an HTTP status equal to the body's ``code``; other servers of
the same API family answer HTTP 200 with the error in the body. `error_for_status` reads both.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._models import Task

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "ActiveTaskLimitError",
    "AuthenticationError",
    "BadRequestError",
    "ConfigurationError",
    "DecodeError",
    "DownloadError",
    "ImageHostError",
    "InsufficientCreditsError",
    "InvalidRequestError",
    "JournalError",
    "NanoBananaError",
    "RateLimitError",
    "RequestConflictError",
    "ResponseTooLargeError",
    "ServerError",
    "TaskFailedError",
    "TaskNotFoundError",
    "UnprocessableEntityError",
    "UsageError",
    "WaitTimeoutError",
    "error_for_status",
    "is_request_conflict",
]


class NanoBananaError(Exception):
    """The root of every error raised on purpose by nanobanana-async."""


class InvalidRequestError(NanoBananaError, ValueError):
    """A request broke one of the provider's documented rules; nothing was sent.

    Attributes:
        field: The name of the offending field (as the provider spells it).
    """

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


class ConfigurationError(InvalidRequestError):
    """A setting of a client, runner or limits object is missing or out of range.

    Raised when the object is built, before anything is sent (a missing API key, say).
    """


class APIConnectionError(NanoBananaError):
    """The request did not receive an answer (connection refused, reset or dropped).

    Attributes:
        request_id: The ``X-Request-ID`` the request carried, if any: retrying a create with
            it cannot bill twice.
    """

    def __init__(self, message: str, *, request_id: str | None = None) -> None:
        self.request_id = request_id
        super().__init__(message)


class APITimeoutError(APIConnectionError):
    """The call's deadline (or a connect, read, write or pool timeout) passed first."""


class APIStatusError(NanoBananaError):
    """The provider answered with an error code.

    Attributes:
        code: The error code: the body's ``code`` when it carries one, else the HTTP status.
        message: The provider's ``msg`` (or ``message``) text.
        data: The body's ``data`` member, kept as sent (a 429 carries ``retryAfter`` there).
        http_status: The HTTP status of the answer (200 when the error came in the body).
        request_id: The ``X-Request-ID`` the request carried, if any.
    """

    def __init__(
        self,
        message: str,
        *,
        code: int,
        http_status: int,
        data: Any = None,
        request_id: str | None = None,
    ) -> None:
        self.code = code
        self.message = message
        self.data = data
        self.http_status = http_status
        self.request_id = request_id
        super().__init__(f"{code}: {message}" if message else str(code))

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(code={self.code!r}, message={self.message!r}, "
            f"http_status={self.http_status!r}, request_id={self.request_id!r})"
        )


class BadRequestError(APIStatusError):
    """400: the provider rejected the request's parameters."""


class AuthenticationError(APIStatusError):
    """401: the API key is missing, wrong or revoked."""


class InsufficientCreditsError(APIStatusError):
    """402: the account has no credits left; a batch stops creating tasks."""


class TaskNotFoundError(APIStatusError):
    """404: the provider does not know the task (or not yet, right after creating it)."""


class ActiveTaskLimitError(APIStatusError):
    """409: too many tasks are running for this key; the client waits for a slot."""


class RequestConflictError(APIStatusError):
    """409: the ``X-Request-ID`` was already used for a different request.

    Raised at once, never waited on: sending the same id again cannot succeed. Use a new
    request id for a new request.
    """


class UnprocessableEntityError(APIStatusError):
    """422: the provider's validation failed."""


class RateLimitError(APIStatusError):
    """429: too many requests in the current window.

    Its constructor repeats `APIStatusError`'s (a deliberate twin) and adds ``retry_after``.

    Attributes:
        retry_after: Seconds to wait before the next request, from ``data.retryAfter`` or the
            ``Retry-After`` header; None when the provider did not say.
    """

    def __init__(
        self,
        message: str,
        *,
        code: int,
        http_status: int,
        data: Any = None,
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(
            message, code=code, http_status=http_status, data=data, request_id=request_id
        )
        self.retry_after = retry_after


class ServerError(APIStatusError):
    """5xx: the provider (or a proxy in front of it) failed; retried with backoff."""


class TaskFailedError(NanoBananaError):
    """The task ended in state ``fail``.

    Attributes:
        task: The last `Task` read from the provider.
        fail_code: The provider's ``failCode`` (a string) or None.
        fail_message: The provider's ``failMsg`` or None.
    """

    def __init__(self, task: Task) -> None:
        self.task = task
        self.fail_code = task.fail_code
        self.fail_message = task.fail_message
        detail = task.fail_message or "no reason given"
        code = f" [{task.fail_code}]" if task.fail_code else ""
        super().__init__(f"task {task.task_id} failed{code}: {detail}")


class WaitTimeoutError(NanoBananaError, TimeoutError):
    """The task did not finish before the deadline; it may still finish later.

    Attributes:
        task_id: The task's id, so the wait can be resumed with ``wait_for_result``.
        task: The last `Task` read, or None if none was read.
    """

    def __init__(self, task_id: str, timeout: float, task: Task | None = None) -> None:
        self.task_id = task_id
        self.task = task
        state = f" (last state: {task.state.value})" if task is not None else ""
        super().__init__(f"task {task_id} did not finish within {timeout:g} s{state}")


class DownloadError(NanoBananaError):
    """A result file could not be fetched safely (refused URL, bad status, too large).

    Attributes:
        status: The result host's HTTP status, when it answered with an error.
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


class ImageHostError(NanoBananaError):
    """The client's image host could not publish a local input image; nothing was created.

    Attributes:
        status: The storage's HTTP status, when it answered with an error.
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


class DecodeError(NanoBananaError):
    """An answer from the provider could not be understood.

    Attributes:
        request_id: The ``X-Request-ID`` the request carried, if any.
    """

    def __init__(self, message: str, *, request_id: str | None = None) -> None:
        self.request_id = request_id
        super().__init__(message)


class ResponseTooLargeError(DecodeError):
    """An answer was larger than the client's cap; the connection was dropped."""


class JournalError(NanoBananaError):
    """A batch journal cannot be opened, is not a journal, or does not match the batch."""


class UsageError(NanoBananaError, RuntimeError):
    """An object was used outside its lifecycle.

    For example a closed client, a `RedisLimits` not entered (or entered twice), or a
    `BatchRunner` asked to run two batches at once.
    """


_BY_CODE: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    402: InsufficientCreditsError,
    404: TaskNotFoundError,
    409: ActiveTaskLimitError,
    422: UnprocessableEntityError,
    429: RateLimitError,
}


_CONFLICT_WORDS = ("different request", "already used", "request id", "request_id", "idempoten")


def is_request_conflict(message: str) -> bool:
    """Whether a 409's message says the request id was used for another request.

    Without such words a 409 is the active-task limit, the provider's usual meaning.
    """
    text = message.lower().replace("-", " ")
    return any(word in text for word in _CONFLICT_WORDS)


def error_for_status(
    code: int,
    message: str,
    *,
    http_status: int,
    data: Any = None,
    request_id: str | None = None,
    retry_after: float | None = None,
) -> APIStatusError:
    """Build the exception that matches an error ``code``.

    Args:
        code: The body's ``code`` or, without one, the HTTP status.
        message: The provider's message text.
        http_status: The HTTP status of the answer.
        data: The body's ``data`` member.
        request_id: The request's ``X-Request-ID``.
        retry_after: For 429, the seconds to wait.

    Returns:
        An instance of the most specific `APIStatusError` subclass for ``code``.
    """
    if code == 429:
        return RateLimitError(
            message,
            code=code,
            http_status=http_status,
            data=data,
            request_id=request_id,
            retry_after=retry_after,
        )
    cls = _BY_CODE.get(code)
    if code == 409 and is_request_conflict(message):
        cls = RequestConflictError
    if cls is None:
        cls = ServerError if code >= 500 else APIStatusError
    return cls(message, code=code, http_status=http_status, data=data, request_id=request_id)
