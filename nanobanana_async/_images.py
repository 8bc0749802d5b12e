"""Local images for image-to-image: files and bytes, checked here before anything is sent.

The provider fetches its input images itself, from public URLs; it takes no uploads. An
`ImageToImage` may still name a file on disk (an ``os.PathLike``; a ``str`` is always a URL)
or hold raw bytes: each becomes a `LocalImage`, checked against the provider's rules when the
request is built (JPEG, PNG or WEBP by its magic bytes, whatever the file is called; at most
10 MB), and later published by the client's image host (`_publish`), which hands the provider
a URL in its place.

A `LocalImage` of a file keeps the path and the digest, not the bytes: a batch of thousands
of rows naming photos holds thousands of paths, not gigabytes. The file is read twice, once
when the request is built (bounded: its size is checked before it is read) and once when it
is published, and a file changed in between is refused rather than sent in its new state.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import attrs

from ._errors import InvalidRequestError

__all__ = [
    "IMAGE_TYPES",
    "MAX_IMAGE_BYTES",
    "LocalImage",
    "image_type",
    "is_url_like",
]

MAX_IMAGE_BYTES = 10 * 1024 * 1024
"""The largest input image the provider takes (10 MB)."""

IMAGE_TYPES: dict[str, str] = {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp"}
"""The content types the provider takes, with the file extension each is published under."""

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:(//|$)")


def image_type(head: bytes) -> str | None:
    """The content type of an image from its first bytes, or None if not JPEG/PNG/WEBP."""
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return None


def is_url_like(text: str) -> bool:
    """Whether ``text`` starts like a URL (``scheme://`` or ``data:``) rather than a path."""
    return text[:5].lower() == "data:" or _SCHEME.match(text) is not None


def _checked(data: bytes, where: str, what: str) -> str:
    """The content type of ``data``, or `InvalidRequestError` if the provider would refuse it."""
    if len(data) > MAX_IMAGE_BYTES:
        raise InvalidRequestError(
            where, f"{what} is {len(data)} bytes; the provider takes at most 10 MB per image"
        )
    kind = image_type(data[:12])
    if kind is None:
        raise InvalidRequestError(
            where, f"{what} is not a JPEG, PNG or WEBP image (judged by its content, not its name)"
        )
    return kind


def _read_bounded(path: Path, where: str) -> bytes:
    """The bytes of ``path``, read only if it is small enough to be an input image."""
    if "\x00" in str(path):  # no OS takes it: Python would raise a bare ValueError
        raise InvalidRequestError(where, f"{str(path)!r:.120} is not a valid path (a NUL in it)")
    try:
        size = path.stat().st_size
        if size > MAX_IMAGE_BYTES:
            raise InvalidRequestError(
                where, f"{path} is {size} bytes; the provider takes at most 10 MB per image"
            )
        with path.open("rb") as file:
            # One byte past the cap: a file that grew since stat() is still caught.
            return file.read(MAX_IMAGE_BYTES + 1)
    except FileNotFoundError:
        raise InvalidRequestError(where, f"no such file: {path}") from None
    except IsADirectoryError:
        raise InvalidRequestError(where, f"{path} is a folder, not an image file") from None
    except OSError as exc:
        raise InvalidRequestError(where, f"cannot read {path}: {exc.strerror or exc}") from None


@attrs.frozen(kw_only=True)
class LocalImage:
    """An input image from this machine (a file or bytes), checked and named by its content.

    Build one with `LocalImage.from_path` or `LocalImage.from_bytes`, or let `ImageToImage`
    build it from a path or bytes in ``image_urls``. The client's image host publishes it
    under ``name`` and gives the provider that URL.

    Attributes:
        sha256: The hex SHA-256 of the bytes: the same picture always has the same name, so it
            is uploaded once however many requests use it.
        content_type: ``image/jpeg``, ``image/png`` or ``image/webp``, from the magic bytes.
        size: The size in bytes.
        path: The file (absolute), or None for bytes given directly.
    """

    sha256: str
    content_type: str
    size: int
    path: Path | None = None
    _data: bytes | None = attrs.field(default=None, repr=False, eq=False, alias="data")

    @classmethod
    def from_path(cls, path: str | os.PathLike[str], *, field: str = "image") -> LocalImage:
        """Check the image file at ``path`` (reading at most 10 MB of it).

        Args:
            path: The file; a relative path is taken from the current directory now.
            field: The name used in error messages.

        Raises:
            InvalidRequestError: The file is missing, unreadable, larger than 10 MB, or not a
                JPEG, PNG or WEBP image.
        """
        where = Path(os.path.abspath(os.fspath(path)))
        data = _read_bounded(where, field)
        kind = _checked(data, field, str(where))
        return cls(
            sha256=hashlib.sha256(data).hexdigest(), content_type=kind, size=len(data), path=where
        )

    @classmethod
    def from_bytes(cls, data: bytes, *, field: str = "image") -> LocalImage:
        """Check an image held in memory.

        Args:
            data: The image file's bytes.
            field: The name used in error messages.

        Raises:
            InvalidRequestError: More than 10 MB, or not a JPEG, PNG or WEBP image.
        """
        data = bytes(data)
        kind = _checked(data, field, "the image")
        return cls(
            sha256=hashlib.sha256(data).hexdigest(), content_type=kind, size=len(data), data=data
        )

    @property
    def name(self) -> str:
        """The file name it is published under: its SHA-256 and the type's extension."""
        return f"{self.sha256}.{IMAGE_TYPES[self.content_type]}"

    def read(self) -> bytes:
        """The image's bytes (blocking: a file is read again; run it in a worker thread).

        Raises:
            InvalidRequestError: The file is gone, or changed since the image was checked.
        """
        if self._data is not None:
            return self._data
        assert self.path is not None
        data = _read_bounded(self.path, "image_urls")
        if hashlib.sha256(data).hexdigest() != self.sha256:
            raise InvalidRequestError(
                "image_urls", f"{self.path} changed after the request was built; build it again"
            )
        return data
