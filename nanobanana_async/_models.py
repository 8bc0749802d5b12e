"""Requests sent to the provider and what it answers, as frozen attrs classes.

The request classes check every rule the provider documents when they are built, so a bad
request raises `InvalidRequestError` before anything is sent. The answer classes hold what
the provider said, parsed defensively by the private converter in `_wire`.
"""

from __future__ import annotations

import enum
import itertools
import os
from collections.abc import Iterable, Mapping, Sized
from datetime import datetime
from typing import Any, ClassVar, Literal, TypeAlias, cast, get_args
from urllib.parse import urlsplit

import attrs

from ._errors import InvalidRequestError
from ._images import LocalImage

__all__ = [
    "IMAGE_SIZES",
    "ImageInput",
    "ImageSize",
    "ImageToImage",
    "OutputFormat",
    "ImageRequest",
    "Task",
    "TaskResult",
    "TaskState",
    "TextToImage",
]

ImageSize = Literal["1:1", "9:16", "16:9", "3:4", "4:3", "3:2", "2:3", "5:4", "4:5", "21:9", "auto"]
"""The output ratios the provider accepts for ``image_size`` (alias ``aspect_ratio``)."""

OutputFormat = Literal["png", "jpeg"]
"""The output file formats the provider accepts."""

IMAGE_SIZES: tuple[str, ...] = get_args(ImageSize)
"""Every accepted ``image_size``, in the provider's order."""

OUTPUT_FORMATS: tuple[str, ...] = get_args(OutputFormat)

MAX_PROMPT_CHARS = 20_000
MAX_IMAGE_URLS = 10


def _check_prompt(_instance: object, _attribute: object, value: Any) -> None:
    if not isinstance(value, str):
        raise InvalidRequestError("prompt", f"must be a string, not {type(value).__name__}")
    if not value.strip():
        raise InvalidRequestError("prompt", "is required and must not be blank")
    if len(value) > MAX_PROMPT_CHARS:
        raise InvalidRequestError(
            "prompt", f"must be at most {MAX_PROMPT_CHARS} characters, got {len(value)}"
        )
    if not _is_utf8(value):
        raise InvalidRequestError(
            "prompt", "holds a lone surrogate (U+D800 to U+DFFF), which UTF-8 cannot carry"
        )


def _is_utf8(text: str) -> bool:
    """Whether ``text`` can be sent as UTF-8 (it holds no lone surrogate)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_image_size(
    _instance: object, _attribute: attrs.Attribute[Any], value: ImageSize
) -> None:
    if value not in IMAGE_SIZES:
        raise InvalidRequestError(
            "image_size", f"must be one of {', '.join(IMAGE_SIZES)}; got {value!r}"
        )


def _check_output_format(
    _instance: object, _attribute: attrs.Attribute[Any], value: OutputFormat
) -> None:
    if value not in OUTPUT_FORMATS:
        hint = " (write 'jpeg')" if str(value) == "jpg" else ""
        raise InvalidRequestError("output_format", f"must be 'png' or 'jpeg'; got {value!r}{hint}")


def _check_nsfw_checker(_instance: object, _attribute: object, value: Any) -> None:
    if not isinstance(value, bool):
        raise InvalidRequestError("nsfw_checker", f"must be a bool, not {type(value).__name__}")


ImageInput: TypeAlias = "str | os.PathLike[str] | bytes | LocalImage"
"""One item of ``image_urls``: an ``https://`` URL (a ``str`` is always a URL, never read from
disk), a local file as an ``os.PathLike`` (a `pathlib.Path`), an image's bytes, or a
`LocalImage`."""

_FILES_ARE_PATHS = (
    "a str is always a URL, never read from disk: pass a local file as a pathlib.Path "
    "(image_urls=[Path('photo.png')]) or its bytes"
)


def _image_url(url: str, where: str) -> str:
    """``url``, if it is an ``https://`` URL of a named host.

    Any other string is refused in the same words, whatever the file system holds.
    """
    if url[:5].lower() == "data:":
        raise InvalidRequestError(
            where,
            "inline data: URLs are not accepted; pass the image's bytes or a pathlib.Path of "
            "its file instead",
        )
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        host, parts = None, None
    if (
        parts is None
        or parts.scheme != "https"
        or not host
        # No spaces, control or format characters, no lone surrogates: none is sendable.
        or not url.isprintable()
        or any(c.isspace() for c in url)
    ):
        raise InvalidRequestError(
            where, f"must be a public https:// URL, got {url!r:.120}; {_FILES_ARE_PATHS}"
        )
    return url


def _image_item(item: object, where: str) -> str | LocalImage:
    if isinstance(item, LocalImage):
        return item
    if isinstance(item, (bytes, bytearray)):
        return LocalImage.from_bytes(bytes(item), field=where)
    if isinstance(item, str):
        return _image_url(item, where)
    if isinstance(item, os.PathLike):
        try:
            path = cast("object", os.fspath(cast("os.PathLike[str]", item)))
        except TypeError:  # a __fspath__ that returns neither str nor bytes
            path = None
        if not isinstance(path, str) or not path.strip():  # a PathLike of bytes, or blank
            raise InvalidRequestError(where, "must be a path of a file (an os.PathLike of str)")
        return LocalImage.from_path(path, field=where)
    raise InvalidRequestError(
        where,
        "must be an https:// URL (str), a local file (pathlib.Path) or bytes, "
        f"not {type(item).__name__}",
    )


def _image_urls(value: object) -> tuple[str | LocalImage, ...]:
    """Check the images of an edit (URLs, files, bytes) and freeze them into a tuple."""
    if isinstance(value, (str, bytes, os.PathLike)) or not isinstance(value, Iterable):
        raise InvalidRequestError(
            "image_urls", "must be a list of https:// URLs, local files (pathlib.Path) or bytes"
        )
    # One past the most taken: an endless iterable is refused, not read for ever.
    items = tuple(itertools.islice(cast("Iterable[object]", value), MAX_IMAGE_URLS + 1))
    if not 1 <= len(items) <= MAX_IMAGE_URLS:
        got = str(len(items))
        if len(items) > MAX_IMAGE_URLS:
            got = str(len(value)) if isinstance(value, Sized) else f"more than {MAX_IMAGE_URLS}"
        raise InvalidRequestError(
            "image_urls", f"must hold 1 to {MAX_IMAGE_URLS} images, got {got}"
        )
    return tuple(_image_item(item, f"image_urls[{i}]") for i, item in enumerate(items))


_DEFAULT_SIZE: ImageSize = "1:1"
_DEFAULT_FORMAT: OutputFormat = "png"


@attrs.frozen(kw_only=True, init=False)
class TextToImage:
    """A text-to-image request (model ``nano-banana-text-to-image``).

    A deliberate twin of `ImageToImage`: the two requests share every field but the images,
    and keep separate constructors so that each signature shows only its own fields.

    Args:
        prompt: What to draw; 1 to 20000 characters.
        image_size: The output ratio, one of `IMAGE_SIZES`; default ``"1:1"``.
        aspect_ratio: Alias of ``image_size``; give one or the other.
        output_format: ``"png"`` (default) or ``"jpeg"``.
        nsfw_checker: Whether the provider runs its safety checker; default True.

    Raises:
        InvalidRequestError: A value breaks one of the provider's rules.
    """

    model: ClassVar[str] = "nano-banana-text-to-image"

    prompt: str = attrs.field(validator=_check_prompt)
    image_size: ImageSize = attrs.field(default=_DEFAULT_SIZE, validator=_check_image_size)
    output_format: OutputFormat = attrs.field(
        default=_DEFAULT_FORMAT, validator=_check_output_format
    )
    nsfw_checker: bool = attrs.field(default=True, validator=_check_nsfw_checker)

    def __init__(
        self,
        *,
        prompt: str,
        image_size: ImageSize | None = None,
        aspect_ratio: ImageSize | None = None,
        output_format: OutputFormat = "png",
        nsfw_checker: bool = True,
    ) -> None:
        self.__attrs_init__(  # pyright: ignore
            prompt=prompt,
            image_size=_pick_size(image_size, aspect_ratio),
            output_format=output_format,
            nsfw_checker=nsfw_checker,
        )

    @property
    def aspect_ratio(self) -> ImageSize:
        """The output ratio; the same as ``image_size``."""
        return self.image_size


@attrs.frozen(kw_only=True, init=False)
class ImageToImage:
    """An image-to-image (edit) request (model ``nano-banana-image-to-image``).

    A deliberate twin of `TextToImage`, with ``image_urls`` besides.

    Args:
        prompt: The edit instruction; 1 to 20000 characters.
        image_urls: 1 to 10 JPEG, PNG or WEBP images (at most 10 MB each): public
            ``https://`` URLs (a ``str`` is always a URL, never read from disk, so a web app
            may pass its visitors' strings through), and local files as ``os.PathLike``
            (``pathlib.Path``) or raw ``bytes``, which become `LocalImage` items. A local
            image is checked (type by its magic bytes, size) now, reading at most 10 MB of a
            file, and is sent only by a client with an ``image_host``, which publishes it.
        image_size: The output ratio, one of `IMAGE_SIZES`; default ``"1:1"``.
        aspect_ratio: Alias of ``image_size``; give one or the other.
        output_format: ``"png"`` (default) or ``"jpeg"``.
        nsfw_checker: Whether the provider runs its safety checker; default True.

    Raises:
        InvalidRequestError: A value breaks one of the provider's rules.
    """

    model: ClassVar[str] = "nano-banana-image-to-image"

    prompt: str = attrs.field(validator=_check_prompt)
    image_urls: tuple[str | LocalImage, ...] = attrs.field(converter=_image_urls)
    image_size: ImageSize = attrs.field(default=_DEFAULT_SIZE, validator=_check_image_size)
    output_format: OutputFormat = attrs.field(
        default=_DEFAULT_FORMAT, validator=_check_output_format
    )
    nsfw_checker: bool = attrs.field(default=True, validator=_check_nsfw_checker)

    def __init__(
        self,
        *,
        prompt: str,
        image_urls: Iterable[ImageInput],
        image_size: ImageSize | None = None,
        aspect_ratio: ImageSize | None = None,
        output_format: OutputFormat = "png",
        nsfw_checker: bool = True,
    ) -> None:
        self.__attrs_init__(  # pyright: ignore
            prompt=prompt,
            image_urls=image_urls,
            image_size=_pick_size(image_size, aspect_ratio),
            output_format=output_format,
            nsfw_checker=nsfw_checker,
        )

    @property
    def aspect_ratio(self) -> ImageSize:
        """The output ratio; the same as ``image_size``."""
        return self.image_size

    @property
    def local_images(self) -> tuple[LocalImage, ...]:
        """The images to publish before sending, each once, in order (empty for URLs only)."""
        seen: dict[str, LocalImage] = {}
        for item in self.image_urls:
            if isinstance(item, LocalImage):
                seen.setdefault(item.sha256, item)
        return tuple(seen.values())


def _pick_size(image_size: ImageSize | None, aspect_ratio: ImageSize | None) -> ImageSize:
    if image_size is not None and aspect_ratio is not None and image_size != aspect_ratio:
        raise InvalidRequestError(
            "aspect_ratio",
            f"is an alias of image_size; got both {image_size!r} and {aspect_ratio!r}",
        )
    if image_size is not None:
        return image_size
    return aspect_ratio if aspect_ratio is not None else _DEFAULT_SIZE


ImageRequest: TypeAlias = "TextToImage | ImageToImage"
"""Any request the client can send."""


class TaskState(str, enum.Enum):
    """The state of a task on the provider.

    ``WAITING``, ``QUEUING`` and ``GENERATING`` are not finished; ``SUCCESS`` and ``FAIL`` are
    terminal. A state the provider sends that this version does not know becomes ``UNKNOWN``
    (not finished), and `Task.raw_state` keeps the value as sent.
    """

    WAITING = "waiting"
    QUEUING = "queuing"
    GENERATING = "generating"
    SUCCESS = "success"
    FAIL = "fail"
    UNKNOWN = "unknown"

    @property
    def is_finished(self) -> bool:
        """Whether the state is terminal (``SUCCESS`` or ``FAIL``)."""
        return self in (TaskState.SUCCESS, TaskState.FAIL)


@attrs.frozen(kw_only=True)
class Task:
    """One answer of ``recordInfo``: a task as the provider sees it.

    Attributes:
        task_id: The provider's task id (an opaque string).
        model: The model that runs the task.
        state: The task's state; see `TaskState`.
        raw_state: The state exactly as the provider sent it.
        urls: The result URLs (empty until the task succeeds). They expire within hours.
        fail_code: The provider's ``failCode`` (a string) or None.
        fail_message: The provider's ``failMsg`` or None.
        cost_time: ``costTime`` as sent: milliseconds per the docs, seconds on some servers.
        create_time: When the task was created (UTC), if the provider said.
        complete_time: When the task finished (UTC), if the provider said.
        param: The original request as the provider echoes it, parsed, or None.
    """

    task_id: str
    model: str = ""
    state: TaskState = TaskState.UNKNOWN
    raw_state: str = ""
    urls: tuple[str, ...] = ()
    fail_code: str | None = None
    fail_message: str | None = None
    cost_time: float | None = None
    create_time: datetime | None = None
    complete_time: datetime | None = None
    param: Mapping[str, Any] | None = attrs.field(default=None, eq=False, repr=False)

    @property
    def is_finished(self) -> bool:
        """Whether the task reached ``success`` or ``fail``."""
        return self.state.is_finished

    @property
    def elapsed(self) -> float | None:
        """Seconds from creation to completion from the provider's timestamps, if both exist."""
        if self.create_time is None or self.complete_time is None:
            return None
        return max(0.0, (self.complete_time - self.create_time).total_seconds())


@attrs.frozen(kw_only=True)
class TaskResult:
    """A finished, successful task.

    Attributes:
        task_id: The provider's task id.
        urls: The result image URLs (temporary: download them promptly).
        task: The last `Task` read, with its timestamps and echoed request.
    """

    task_id: str
    urls: tuple[str, ...]
    task: Task = attrs.field(repr=False)
