"""`ResultFiles`: the client's verbs that fetch result files, `download` and `save_result`.

A base of `AsyncNanoBanana`, kept apart so that the client's module holds its configuration
and its API verbs; the fetching itself is `_download.Downloader`'s.
"""

from __future__ import annotations

import os
from pathlib import Path

import anyio

from ._config import DEFAULT_DOWNLOAD_TIMEOUT, check_timeout
from ._download import Downloader
from ._engine import Engine
from ._models import TaskResult

__all__ = ["ResultFiles"]


class ResultFiles:
    """Fetches result files: the URLs of a `TaskResult`, without the API key."""

    _downloader: Downloader
    _engine: Engine

    async def download(
        self, url: str, *, max_bytes: int | None = None, timeout: float = DEFAULT_DOWNLOAD_TIMEOUT
    ) -> bytes:
        """Fetch one result file into memory.

        The file is fetched by a separate HTTP client that never sends the API key, over
        https only (plain http only when the API itself is on loopback), following at most
        five redirects, each checked the same way, and refused past ``max_bytes`` (counted
        after decompression, as the bytes arrive).

        Args:
            url: A result URL.
            max_bytes: The largest file accepted (default: the client's ``max_download_bytes``).
            timeout: The most seconds to spend.

        Raises:
            DownloadError: The URL is refused, the host answered an error, or the file is
                too large.
            APIConnectionError: The host could not be reached or broke off (an
                `APITimeoutError` when the deadline passed).
        """
        seconds = check_timeout(timeout, DEFAULT_DOWNLOAD_TIMEOUT)
        deadline = anyio.current_time() + seconds
        return await self._downloader.fetch(url, deadline=deadline, max_bytes=max_bytes)

    async def save_result(
        self,
        result: TaskResult,
        directory: str | os.PathLike[str],
        *,
        stem: str | None = None,
        max_bytes: int | None = None,
        timeout: float = DEFAULT_DOWNLOAD_TIMEOUT,
    ) -> list[Path]:
        """Download every image of a result into ``directory``.

        Each file is streamed to a temporary file in the directory and renamed into place, so
        a file with the final name is always complete; temporary files a killed run left in
        the directory are removed first. Files are named after the task (``<task_id>.png``,
        or ``<task_id>-1.png``, ``-2``... for several images) or ``stem``, with the suffix the
        host's content type gives. If a URL has expired (403/404), the task is read again once
        for fresh URLs.

        Args:
            result: The result to save.
            directory: Where to save it (created if needed).
            stem: The file name without suffix (default: the task id).
            max_bytes: The largest file accepted.
            timeout: The most seconds for each file.

        Returns:
            The paths written, in the order of ``result.urls``.

        Raises:
            DownloadError: A file could not be fetched safely.
            APIConnectionError: A host could not be reached or broke off.
        """
        seconds = check_timeout(timeout, DEFAULT_DOWNLOAD_TIMEOUT)

        async def fresh_urls(deadline: float) -> tuple[str, ...]:
            return (await self._engine.caller.query(result.task_id, deadline)).urls

        with self._engine.telemetry.operation("save_result", task_id=result.task_id):
            return await self._downloader.save_result(
                result,
                Path(directory),
                stem,
                seconds=seconds,
                max_bytes=max_bytes,
                refresh=fresh_urls,
            )
