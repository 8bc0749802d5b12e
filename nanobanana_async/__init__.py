"""nanobanana-async: the asyncio-native (and trio) client for the Nano Banana image API.

>>> from nanobanana_async import AsyncNanoBanana, TextToImage
>>> async def main() -> None:
...     async with AsyncNanoBanana() as client:  # NANOBANANA_API_KEY from the environment
...         result = await client.generate(TextToImage(prompt="a banana"))
...         await client.save_result(result, "out/")
"""

from ._batch import BatchRunner
from ._client import AsyncNanoBanana
from ._config import (
    DEFAULT_BASE_URL,
    DEFAULT_CREATE_TIMEOUT,
    DEFAULT_DOWNLOAD_TIMEOUT,
    DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_QUERY_TIMEOUT,
    DEFAULT_WAIT_TIMEOUT,
)
from ._errors import (
    ActiveTaskLimitError,
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    DecodeError,
    DownloadError,
    ImageHostError,
    InsufficientCreditsError,
    InvalidRequestError,
    JournalError,
    NanoBananaError,
    RateLimitError,
    RequestConflictError,
    ResponseTooLargeError,
    ServerError,
    TaskFailedError,
    TaskNotFoundError,
    UnprocessableEntityError,
    UsageError,
    WaitTimeoutError,
)
from ._images import LocalImage
from ._models import (
    IMAGE_SIZES,
    ImageInput,
    ImageRequest,
    ImageSize,
    ImageToImage,
    OutputFormat,
    Task,
    TaskResult,
    TaskState,
    TextToImage,
)
from ._outcomes import BatchOutcome, BatchStatistics, ProgressHook
from ._polling import OnUpdate, PollPolicy
from ._publish import ImageHost
from ._retry import RetryPolicy
from ._s3 import S3ImageHost
from ._telemetry import Telemetry
from ._variants import RawResponse
from ._version import __version__
from .limits import (
    TIERS,
    Limits,
    LimitsBackend,
    LimitsSnapshot,
    Priority,
    RedisLimits,
    TierLimits,
    TierName,
)

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_CREATE_TIMEOUT",
    "DEFAULT_DOWNLOAD_TIMEOUT",
    "DEFAULT_MAX_RESPONSE_BYTES",
    "DEFAULT_QUERY_TIMEOUT",
    "DEFAULT_WAIT_TIMEOUT",
    "IMAGE_SIZES",
    "TIERS",
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "ActiveTaskLimitError",
    "AsyncNanoBanana",
    "AuthenticationError",
    "BadRequestError",
    "BatchOutcome",
    "BatchRunner",
    "BatchStatistics",
    "ConfigurationError",
    "DecodeError",
    "DownloadError",
    "ImageHost",
    "ImageHostError",
    "ImageInput",
    "ImageRequest",
    "ImageSize",
    "ImageToImage",
    "InsufficientCreditsError",
    "InvalidRequestError",
    "JournalError",
    "Limits",
    "LimitsBackend",
    "LimitsSnapshot",
    "LocalImage",
    "NanoBananaError",
    "OnUpdate",
    "OutputFormat",
    "PollPolicy",
    "Priority",
    "ProgressHook",
    "RateLimitError",
    "RawResponse",
    "RedisLimits",
    "RequestConflictError",
    "ResponseTooLargeError",
    "RetryPolicy",
    "S3ImageHost",
    "ServerError",
    "Task",
    "TaskFailedError",
    "TaskNotFoundError",
    "TaskResult",
    "TaskState",
    "Telemetry",
    "TextToImage",
    "TierLimits",
    "TierName",
    "UnprocessableEntityError",
    "UsageError",
    "WaitTimeoutError",
    "__version__",
]


def __getattr__(name: str) -> object:
    # `Request` was renamed `ImageRequest` (FastAPI and Starlette export a `Request` too); the
    # old name still works, with a warning, until the next major version.
    if name == "Request":
        import warnings

        warnings.warn(
            "nanobanana_async.Request is deprecated: use nanobanana_async.ImageRequest",
            DeprecationWarning,
            stacklevel=2,
        )
        return ImageRequest
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
