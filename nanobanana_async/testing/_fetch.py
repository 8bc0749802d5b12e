"""The fake fetches input images, as the provider does, when they are on this machine.

The provider downloads an edit's ``image_urls`` itself and fails the task when one cannot be
fetched or is not an image. The fake does the same for URLs on loopback (an image store the
test started, such as moto or MinIO), so a test sees a local image travel the whole way; URLs
elsewhere are taken on trust, since a test must not depend on the internet.

A task is created first and its images are fetched right after, before the create is
answered: its plan then says ``fail`` if an image was refused, with one of
`IMAGE_FAIL_CODES`, at the time it was to finish anyway.
"""

from __future__ import annotations

import json
from typing import Any, cast
from urllib.parse import urlsplit

import httpx

from .._download import is_loopback_host
from .._errors import DecodeError, NanoBananaError
from .._http import read_body
from .._images import MAX_IMAGE_BYTES, image_type
from ._stats import StatsRecorder
from ._tasks import TaskTable

__all__ = ["fetch_images", "loopback_images"]

_FETCH_TIMEOUT = 10.0
_UNREACHABLE, _NOT_AN_IMAGE = 0, 1


def loopback_images(payload: dict[str, Any]) -> list[str]:
    """The image URLs of a create body that point at this machine."""
    fields = payload.get("input")
    urls = cast("dict[str, Any]", fields).get("image_urls") if isinstance(fields, dict) else None
    if not isinstance(urls, list):
        return []
    found: list[str] = []
    for url in cast("list[object]", urls):
        if isinstance(url, str):
            host = urlsplit(url).hostname
            if host and is_loopback_host(host):
                found.append(url)
    return found


def _too_large(_declared: int | None) -> NanoBananaError:
    return DecodeError("larger than 10 MB")


async def _fetch_one(http: httpx.AsyncClient, url: str) -> int | None:
    """None if ``url`` serves an image the provider takes, else why not."""
    try:
        async with http.stream("GET", url) as response:
            if response.status_code != 200:
                return _UNREACHABLE
            data = await read_body(response, MAX_IMAGE_BYTES, _too_large)
    except httpx.HTTPError:
        return _UNREACHABLE
    except NanoBananaError:  # larger than the provider takes
        return _NOT_AN_IMAGE
    return None if image_type(data[:12]) is not None else _NOT_AN_IMAGE


async def fetch_images(tasks: TaskTable, recorder: StatsRecorder) -> None:
    """Fetch the loopback images of every task created since the last call."""
    if not tasks.image_checks:
        return
    pending, tasks.image_checks = tasks.image_checks, []
    async with httpx.AsyncClient(
        timeout=_FETCH_TIMEOUT, follow_redirects=True, trust_env=False
    ) as http:
        for index in pending:
            for url in loopback_images(json.loads(tasks.params[index])):
                recorder.count("images_fetched")
                problem = await _fetch_one(http, url)
                if problem is not None:
                    recorder.count("images_refused")
                    tasks.fail_with_image(index, problem)
                    break
