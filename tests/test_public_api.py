"""The public names of the package: a change to them is a deliberate, visible act."""

from __future__ import annotations

import importlib.metadata

import pytest

import nanobanana_async as nb

PUBLIC = [
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


def isort_style(name: str) -> tuple[int, str]:
    """ruff's RUF022 order: CONSTANTS, then Classes, then everything else."""
    if name.isupper():
        return (0, name)
    if name[0].isupper():
        return (1, name)
    return (2, name)


def test_all_is_exactly_the_public_api() -> None:
    assert nb.__all__ == PUBLIC


def test_all_is_sorted() -> None:
    assert nb.__all__ == sorted(nb.__all__, key=isort_style)


def test_every_name_exists() -> None:
    for name in nb.__all__:
        assert getattr(nb, name) is not None


def test_no_public_name_is_left_out_of_all() -> None:
    # "@py_..." names come from pytest rewriting the package's asserts (it ships a plugin).
    public = {name for name in vars(nb) if not name.startswith(("_", "@"))}
    assert public - set(nb.__all__) <= {"testing", "limits", "cli"}


def test_the_names_the_spec_fixes() -> None:
    for name in ("AsyncNanoBanana", "TextToImage", "ImageToImage", "BatchRunner", "Task",
                 "TaskState", "TaskResult", "BatchOutcome"):  # fmt: skip
        assert name in nb.__all__


def test_version_matches_the_distribution() -> None:
    assert nb.__version__ == importlib.metadata.version("nanobanana-async")


def test_the_package_does_not_import_redis() -> None:
    """redis (the [redis] extra) is imported only when a RedisLimits is entered."""
    import subprocess
    import sys

    code = "import sys, nanobanana_async; print('redis' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_old_name_of_image_request_still_works_with_a_deprecation_warning() -> None:
    with pytest.warns(DeprecationWarning, match="use nanobanana_async.ImageRequest"):
        old = nb.Request
    assert old is nb.ImageRequest
    assert "Request" not in nb.__all__
    with pytest.raises(AttributeError, match="no attribute 'Requests'"):
        nb.Requests  # noqa: B018
