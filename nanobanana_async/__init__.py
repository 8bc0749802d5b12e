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
    ImageSize,
    ImageToImage,
    OutputFormat,
    Request,
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
from ._version import __version__
from .limits import TIERS, Limits, LimitsBackend, LimitsSnapshot, RedisLimits, TierLimits

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
    "ProgressHook",
    "RateLimitError",
    "RedisLimits",
    "Request",
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
    "TextToImage",
    "TierLimits",
    "UnprocessableEntityError",
    "UsageError",
    "WaitTimeoutError",
    "__version__",
]
