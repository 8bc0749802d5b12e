"""Publishing local input images: the `ImageHost` protocol and the client's `ImagePublisher`.

The provider fetches input images from URLs, so a request holding local images (`LocalImage`)
is made sendable first: each image goes to the client's image host, which returns a URL the
provider can fetch, and the body is sent with those URLs in place.

An image is named by its SHA-256, so publishing is idempotent: the publisher remembers what
it published (by digest, with how long the URL stays valid) and asks the host only for an
image it has no valid URL for; a host may also skip an upload whose name already exists. A
batch journal remembers the URLs across runs (`PublishedImages`), so a resumed batch publishes
nothing again and sends each create the very body it sent before.
"""

from __future__ import annotations

import collections
import logging
import time
from typing import Protocol, runtime_checkable

import anyio
import anyio.to_thread
import httpx

from ._download import is_loopback_host
from ._errors import APITimeoutError, ImageHostError, InvalidRequestError
from ._images import LocalImage
from ._wire import CreateBody

__all__ = ["MIN_URL_LIFETIME", "ImageHost", "ImagePublisher", "PublishedImages", "check_image_url"]

logger = logging.getLogger("nanobanana_async")

MIN_URL_LIFETIME = 3600.0
"""The shortest life asked of a published URL: tasks may wait in the provider's queue."""

_REUSE_MARGIN = 3600.0  # asked on top, so that one URL serves the requests of the next hour
_REMEMBERED = 10_000


@runtime_checkable
class ImageHost(Protocol):
    """Where a client publishes local input images, so that the provider can fetch them.

    Implement the one coroutine to use your own storage; `S3ImageHost` is built in.
    """

    async def publish(self, data: bytes, *, name: str, content_type: str, valid_for: float) -> str:
        """Publish an image and return a URL the provider can fetch it from.

        Args:
            data: The image file's bytes (checked: JPEG, PNG or WEBP, at most 10 MB).
            name: Its content-addressed file name (its SHA-256 and extension): the same bytes
                always come with the same name, so an upload may be skipped if it exists.
            content_type: ``image/jpeg``, ``image/png`` or ``image/webp``.
            valid_for: The URL must stay fetchable for at least this many seconds.

        Returns:
            An ``https://`` URL (``http://`` only on loopback, for tests).

        Raises:
            ImageHostError: The image could not be published.
        """
        ...


class PublishedImages(Protocol):
    """A lasting memory of published images (a batch journal), beside the in-process one."""

    async def published_url(self, sha256: str, valid_until: float) -> str | None:
        """A URL recorded for the image that stays valid until ``valid_until`` (Unix time)."""
        ...

    async def record_published(self, sha256: str, url: str, valid_until: float) -> None:
        """Record (durably, before the create is sent) the URL of an image."""
        ...


def check_image_url(url: object) -> str:
    """The URL a host returned, if the provider may be given it.

    Raises:
        ImageHostError: Not an https URL (plain http is accepted only on loopback).
    """
    try:
        parsed = httpx.URL(url) if isinstance(url, str) else None
    except httpx.InvalidURL:
        parsed = None
    if parsed is None or not parsed.host or parsed.scheme not in ("http", "https"):
        raise ImageHostError(f"the image host returned {url!r}, not an https:// URL")
    if parsed.scheme == "http" and not is_loopback_host(parsed.host):
        raise ImageHostError("the image host returned a plain http:// URL off loopback")
    return str(url)


class ImagePublisher:
    """Publishes a request's local images through one host, each picture once.

    Args:
        host: The image host.
    """

    def __init__(self, host: ImageHost) -> None:
        if not isinstance(host, ImageHost):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise InvalidRequestError(
                "image_host", f"must have an async publish() method; got {type(host).__name__}"
            )
        self.host = host
        self._urls: collections.OrderedDict[str, tuple[str, float]] = collections.OrderedDict()
        self._busy: dict[str, anyio.Event] = {}
        self.published = 0
        """How many images this publisher handed to the host (for statistics and tests)."""

    async def publish(
        self,
        body: CreateBody,
        *,
        deadline: float,
        needed_for: float,
        store: PublishedImages | None = None,
        request_id: str | None = None,
    ) -> CreateBody:
        """The body to send: its local images published (or found published) and in place.

        Args:
            body: A body holding local images.
            deadline: When to give up (anyio's clock); nothing is created after it.
            needed_for: Seconds the provider may need the URLs (at least `MIN_URL_LIFETIME`).
            store: A journal that remembers URLs across runs.
            request_id: The create's ``X-Request-ID``, for errors.

        Raises:
            ImageHostError: The host failed.
            APITimeoutError: The deadline passed first; nothing was created.
            InvalidRequestError: A file changed or vanished since the request was built.
        """
        if not body.images:
            return body
        needed = max(needed_for, MIN_URL_LIFETIME)
        urls: dict[str, str] = {}
        with anyio.CancelScope(deadline=deadline) as scope:
            for image in body.images:
                urls[image.sha256] = await self._url(image, needed, store)
        if scope.cancelled_caught:
            raise APITimeoutError(
                "the deadline passed while publishing the request's local images; "
                "nothing was created",
                request_id=request_id,
            )
        return body.published(urls)

    async def _url(self, image: LocalImage, needed: float, store: PublishedImages | None) -> str:
        while True:
            busy = self._busy.get(image.sha256)
            if busy is not None:
                await busy.wait()  # the same picture in another job: wait for its URL
                continue
            url = self._known(image.sha256, needed)
            if url is None and store is not None:
                url = await store.published_url(image.sha256, time.time() + needed)
                if url is not None:
                    self._remember(image.sha256, url, time.time() + needed)
            if url is not None:
                return url
            # The journal was read with an await: another job may have started meanwhile.
            if self._busy.get(image.sha256) is None:
                break
        done = self._busy[image.sha256] = anyio.Event()
        try:
            data = await anyio.to_thread.run_sync(image.read)
            valid_for = needed + _REUSE_MARGIN
            valid_until = time.time() + valid_for
            url = check_image_url(
                await self.host.publish(
                    data, name=image.name, content_type=image.content_type, valid_for=valid_for
                )
            )
            self.published += 1
            logger.debug("published local image %s", image.name)
            self._remember(image.sha256, url, valid_until)
            if store is not None:
                await store.record_published(image.sha256, url, valid_until)
            return url
        finally:
            del self._busy[image.sha256]
            done.set()

    def _known(self, sha256: str, needed: float) -> str | None:
        found = self._urls.get(sha256)
        if found is None or found[1] < time.time() + needed:
            return None
        return found[0]

    def _remember(self, sha256: str, url: str, valid_until: float) -> None:
        self._urls[sha256] = (url, valid_until)
        self._urls.move_to_end(sha256)
        while len(self._urls) > _REMEMBERED:
            self._urls.popitem(last=False)
