"""HTTP bodies read and sent safely: size caps, bounded decompression, mapped transport errors.

Both kinds of exchange the client makes, API calls and result downloads, read their answers
through `iter_body`: the raw bytes are decompressed here (gzip and deflate, in pieces no larger
than the bytes still allowed), so a small compressed answer that inflates to gigabytes costs
no more memory than the cap. Whatever fails below httpx becomes one of the library's errors,
and the frames below it (httpx's, httpcore's) are cleared of their locals: they hold the
request as written, its ``Authorization`` header included, and error trackers capture locals.
"""

from __future__ import annotations

import contextlib
import traceback
import zlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import cast

import httpx

from ._errors import APIConnectionError, APITimeoutError, DecodeError, NanoBananaError
from ._secret import Secret

__all__ = [
    "ACCEPT_ENCODING",
    "RequestBody",
    "forget_locals",
    "iter_body",
    "read_body",
    "redacted_headers",
    "transport_error",
]

ACCEPT_ENCODING = "gzip, deflate"
"""The encodings the client asks for: the ones `iter_body` decodes with a bound."""

_DECODERS: dict[str, int] = {
    "gzip": zlib.MAX_WBITS | 16,
    "x-gzip": zlib.MAX_WBITS | 16,
    "deflate": zlib.MAX_WBITS | 32,  # zlib or gzip framing, detected from the header
}


async def iter_body(
    response: httpx.Response, limit: int, too_large: Callable[[int | None], NanoBananaError]
) -> AsyncGenerator[bytes, None]:
    """The decoded body of a streamed answer, in chunks, failing once it passes ``limit`` bytes.

    Args:
        response: An answer opened with ``stream=True``.
        limit: The most decoded bytes accepted.
        too_large: Builds the error raised past ``limit``, from the declared length if that
            is what is past it.

    Raises:
        DecodeError: The body's encoding is not one the client asked for, or is corrupt.
    """
    if response.is_stream_consumed:
        # An in-process transport (a test's, the fake's) handed over a body it already read.
        if len(response.content) > limit:
            raise too_large(len(response.content))
        if response.content:
            yield response.content
        return
    declared = response.headers.get("content-length", "")
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        if declared.isdigit() and int(declared) > limit:
            raise too_large(int(declared))
        wbits = None
    elif encoding in _DECODERS:
        wbits = _DECODERS[encoding]
    else:
        raise DecodeError(f"answer uses a content-encoding the client did not ask for: {encoding}")
    decoder = None if wbits is None else zlib.decompressobj(wbits)
    size = 0
    async with contextlib.aclosing(_raw_chunks(response)) as chunks:
        async for raw in chunks:
            pending = raw
            while pending:
                if decoder is None:
                    chunk, pending = pending, b""
                else:
                    try:
                        chunk = decoder.decompress(pending, limit - size + 1)
                    except zlib.error as exc:
                        raise DecodeError(f"corrupt {encoding} body: {exc}") from None
                    pending = decoder.unconsumed_tail
                size += len(chunk)
                if size > limit:
                    raise too_large(None)
                if chunk:
                    yield chunk
    tail = b"" if decoder is None else decoder.flush()
    if size + len(tail) > limit:
        raise too_large(None)
    if tail:
        yield tail


async def read_body(
    response: httpx.Response, limit: int, too_large: Callable[[int | None], NanoBananaError]
) -> bytes:
    """The whole decoded body of a streamed answer, at most ``limit`` bytes (see `iter_body`)."""
    encoding, declared = _framing(response)
    if encoding in ("", "identity") and declared.isdigit() and int(declared) <= limit:
        # The common case, read in one go: HTTP/1.1 framing ends the read at the declared
        # length, so the cap holds without a loop over chunks.
        return await response.aread()
    parts: list[bytes] = []
    async with contextlib.aclosing(iter_body(response, limit, too_large)) as chunks:
        async for chunk in chunks:
            parts.append(chunk)
    return b"".join(parts)


def _framing(response: httpx.Response) -> tuple[str, str]:
    """The answer's content-encoding and content-length, in one pass over its raw headers.

    (httpx's ``headers.get`` walks every header each time: this is on every call's path.)
    """
    encoding, declared = "identity", ""
    for name, value in response.headers.raw:
        lowered = name.lower()
        if lowered == b"content-encoding":
            encoding = value.decode("latin-1").strip().lower()
        elif lowered == b"content-length":
            declared = value.decode("latin-1").strip()
    return encoding, declared


def _raw_chunks(response: httpx.Response) -> AsyncGenerator[bytes, None]:
    """The raw chunks: httpx makes a generator, though it types it as a mere iterator."""
    return cast("AsyncGenerator[bytes, None]", response.aiter_raw())


def redacted_headers(headers: httpx.Headers, secret: Secret) -> httpx.Headers:
    """``headers`` with the key redacted from every name and value.

    The same object comes back when none holds the key, as on nearly every answer.
    """
    raw = headers.raw
    if not secret.shows_in_pairs(raw):
        return headers
    return httpx.Headers(
        [(secret.redact_bytes(name), secret.redact_bytes(value)) for name, value in raw]
    )


def forget_locals(exc: BaseException) -> None:
    """Clear the locals of the finished frames in ``exc``'s traceback and in its chain's.

    httpcore's frames hold the request as it was written (``bytes_to_send``, the h11 event),
    the ``Authorization`` header with them; an error tracker that captures frame locals would
    ship the key. The frames themselves stay (file, line, function), and the frames still
    running (the caller's) keep their locals.
    """
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        traceback.clear_frames(current.__traceback__)
        pending += [e for e in (current.__cause__, current.__context__) if e is not None]


def transport_error(
    exc: Exception, what: str, *, request_id: str | None = None
) -> APIConnectionError:
    """The library's error for a failure below HTTP (httpx's, or a deadline's `TimeoutError`).

    ``exc`` stays the error's cause, its frames cleared of their locals (`forget_locals`).

    Args:
        exc: What httpx (or `anyio.fail_after`) raised.
        what: What was being done, for the message ("create", "download", ...).
        request_id: The request's ``X-Request-ID``, so a caller can retry a create safely.
    """
    forget_locals(exc)
    if isinstance(exc, (httpx.TimeoutException, TimeoutError)):
        detail = "the deadline passed" if isinstance(exc, TimeoutError) else type(exc).__name__
        return APITimeoutError(f"{what} timed out: {detail}", request_id=request_id)
    return APIConnectionError(f"{what} failed: {type(exc).__name__}: {exc}", request_id=request_id)


class RequestBody(httpx.ByteStream):
    """A request body sent without an async generator.

    httpx iterates its own request bodies through an async generator; a request cancelled
    while its body is being sent leaves that generator to the garbage collector, and trio
    warns of it (encode/httpx#3686). This one has nothing to finalize. A ``ByteStream``
    still, so ``request.read()`` keeps it as the request's stream.
    """

    __slots__ = ("_data",)

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self._data = data

    def __aiter__(self) -> AsyncIterator[bytes]:
        return _Once(self._data)


class _Once:
    """An async iterator yielding one chunk (none if it is empty)."""

    __slots__ = ("_data",)

    def __init__(self, data: bytes) -> None:
        self._data: bytes | None = data or None

    def __aiter__(self) -> _Once:
        return self

    async def __anext__(self) -> bytes:
        data, self._data = self._data, None
        if data is None:
            raise StopAsyncIteration
        return data
