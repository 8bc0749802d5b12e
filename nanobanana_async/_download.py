"""Fetching result files safely: the address guard, redirects, the size cap, atomic saves.

Result URLs come from the provider's answers, so they are checked like any untrusted input:
https only (plain http only when the API itself is on loopback), no internal addresses in any
spelling, at most five redirects each checked the same way, and a size cap counted on the
decoded bytes as they arrive. The files are fetched by a separate HTTP client that never
carries the API key. Every fetch ends by its deadline, and every failure is one of the
library's errors.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import socket
import time
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Collection
from pathlib import Path

import anyio
import httpx

from ._errors import DownloadError, UsageError
from ._http import ACCEPT_ENCODING, iter_body, transport_error
from ._models import TaskResult
from ._telemetry import NO_RECORDER, Recorder

__all__ = ["Downloader", "is_loopback_host"]

_MAX_REDIRECTS = 5
_IMAGE_SUFFIXES = {"image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp"}
_LEGACY_IPV4 = re.compile(r"^(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]+)){0,3}$", re.IGNORECASE)
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")
_PART = re.compile(r"^\.(.+?)(?:\.png|\.jpg|\.webp)\.[0-9a-f]{8}\.part$")


def _ip_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address a host names literally, including the legacy IPv4 forms resolvers accept.

    ``127.1``, ``2130706433`` and ``0x7f000001`` all reach 127.0.0.1, so they count as IPs.
    """
    host = host.strip("[]").rstrip(".")
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if _LEGACY_IPV4.match(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` names this machine (``localhost`` or a loopback address)."""
    name = host.rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    address = _ip_address(host)
    return address is not None and address.is_loopback


def _is_internal_host(host: str) -> bool:
    """Loopback, private, link-local and other addresses no public result URL should name."""
    if is_loopback_host(host):
        return True
    address = _ip_address(host)
    if address is None:
        return False
    return (
        address.is_private
        or address.is_link_local
        or address.is_reserved
        or address.is_multicast
        or address.is_unspecified
    )


def _suffix_from_url(url: httpx.URL) -> str | None:
    suffix = Path(url.path).suffix.lower()
    if suffix in (".png", ".webp"):
        return suffix
    if suffix in (".jpg", ".jpeg"):
        return ".jpg"
    return None


class Downloader:
    """Fetches result files for one client.

    Args:
        http: The HTTP client for result files; it must carry no credentials.
        user_agent: The ``User-Agent`` header.
        allow_loopback: Whether the API is on loopback (then so may result files be, over
            plain http: the fake provider and tests).
        max_bytes: The default size cap of one file.
        telemetry: Told of every file fetched.
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        user_agent: str,
        allow_loopback: bool,
        max_bytes: int,
        telemetry: Recorder = NO_RECORDER,
    ) -> None:
        self._http = http
        self._headers = {"User-Agent": user_agent, "Accept-Encoding": ACCEPT_ENCODING}
        self._loopback = allow_loopback
        self.max_bytes = max_bytes
        self.closed = False
        self._telemetry = telemetry

    def check_url(self, url: str | httpx.URL) -> httpx.URL:
        """The URL, parsed, if a result file may be fetched from it.

        Raises:
            DownloadError: It is not an https URL of a public host.
        """
        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, TypeError) as exc:
            raise DownloadError(f"not a URL: {exc}") from None
        where = f"{parsed.scheme}://{parsed.host}{parsed.path}"
        if parsed.scheme == "http" and not self._loopback:
            raise DownloadError(f"refusing plain-http result URL {where}: https only")
        if parsed.scheme not in ("https", "http") or not parsed.host:
            raise DownloadError(f"refusing result URL {where}: https only")
        if _is_internal_host(parsed.host) and not self._loopback:
            raise DownloadError(f"refusing result URL on an internal address: {where}")
        return parsed

    async def fetch(self, url: str, *, deadline: float, max_bytes: int | None) -> bytes:
        """One result file, into memory."""
        parts: list[bytes] = []
        with self._telemetry.download(url) as download:
            async with (
                self._open(url, deadline) as response,
                contextlib.aclosing(self._chunks(response, max_bytes)) as chunks,
            ):
                async for chunk in chunks:
                    parts.append(chunk)
            data = b"".join(parts)
            download.received(len(data))
        return data

    async def save(
        self, url: str, folder: Path, name: str, *, deadline: float, max_bytes: int | None
    ) -> Path:
        """One result file, streamed to a temporary file in ``folder`` and renamed into place."""
        with self._telemetry.download(url) as download:
            size = 0
            async with self._open(url, deadline) as response:
                kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
                suffix = _IMAGE_SUFFIXES.get(kind) or _suffix_from_url(response.url) or ".png"
                target = folder / f"{name}{suffix}"
                partial = folder / f".{name}{suffix}.{uuid.uuid4().hex[:8]}.part"
                try:
                    async with (
                        await anyio.open_file(partial, "wb") as file,
                        contextlib.aclosing(self._chunks(response, max_bytes)) as chunks,
                    ):
                        async for chunk in chunks:
                            size += len(chunk)
                            await file.write(chunk)
                    await anyio.Path(partial).replace(target)
                except BaseException:
                    with anyio.CancelScope(shield=True):
                        await anyio.Path(partial).unlink(missing_ok=True)
                    raise
            download.received(size)
        return target

    async def save_result(
        self,
        result: TaskResult,
        folder: Path,
        stem: str | None,
        *,
        seconds: float,
        max_bytes: int | None,
        refresh: Callable[[float], Awaitable[tuple[str, ...]]],
    ) -> list[Path]:
        """Every image of a result into ``folder`` (see `AsyncNanoBanana.save_result`).

        Args:
            result: The result.
            folder: Where to save it (created if needed).
            stem: The file name without suffix (default: the task id).
            seconds: The most seconds for each file.
            max_bytes: The largest file accepted.
            refresh: Reads the task's URLs again, by a deadline, once one has expired.
        """
        await anyio.Path(folder).mkdir(parents=True, exist_ok=True)
        base = _UNSAFE_NAME.sub("_", stem or result.task_id) or "image"
        urls = list(result.urls)
        names = [base] if len(urls) == 1 else [f"{base}-{n + 1}" for n in range(len(urls))]
        await self.remove_stale_parts(folder, names, older_than=max(seconds, 600.0))
        paths: list[Path] = []
        refreshed = False
        for index, name in enumerate(names):
            deadline = anyio.current_time() + seconds
            try:
                paths.append(
                    await self.save(
                        urls[index], folder, name, deadline=deadline, max_bytes=max_bytes
                    )
                )
            except DownloadError as exc:
                if refreshed or exc.status not in (403, 404):
                    raise
                refreshed = True
                fresh = await refresh(deadline)
                if len(fresh) != len(urls) or fresh[index] == urls[index]:
                    raise DownloadError(
                        f"result URL of task {result.task_id} has expired ({exc.status})",
                        status=exc.status,
                    ) from exc
                urls = list(fresh)
                paths.append(
                    await self.save(
                        urls[index], folder, name, deadline=deadline, max_bytes=max_bytes
                    )
                )
        return paths

    @staticmethod
    async def remove_stale_parts(folder: Path, names: Collection[str], older_than: float) -> None:
        """Remove the temporary files a killed run left in ``folder``.

        Another save may be writing into the same folder right now, so only the temporary
        files of the ``names`` about to be written go at once; the others only once nothing
        has written to them for ``older_than`` seconds (no live save waits that long).
        """
        now = time.time()
        async for path in anyio.Path(folder).iterdir():
            match = _PART.match(path.name)
            if match is None:
                continue
            with contextlib.suppress(OSError):  # gone already: another save cleaned it
                if match.group(1) in names or now - (await path.stat()).st_mtime > older_than:
                    await path.unlink(missing_ok=True)

    async def _chunks(
        self, response: httpx.Response, max_bytes: int | None
    ) -> AsyncGenerator[bytes, None]:
        limit = self.max_bytes if max_bytes is None else max_bytes

        def too_large(declared: int | None) -> DownloadError:
            if declared is not None:
                return DownloadError(f"result file is {declared} bytes, more than {limit}")
            return DownloadError(f"result file is larger than {limit} bytes")

        try:
            async with contextlib.aclosing(iter_body(response, limit, too_large)) as chunks:
                async for chunk in chunks:
                    yield chunk
        except httpx.TransportError as exc:
            raise transport_error(exc, "download") from exc

    @contextlib.asynccontextmanager
    async def _open(self, url: str, deadline: float) -> AsyncGenerator[httpx.Response, None]:
        """Open a result URL, following (and re-checking) redirects by hand, by ``deadline``."""
        if self.closed:
            raise UsageError("this client is closed")
        current = self.check_url(url)
        with anyio.CancelScope(deadline=deadline):
            for _ in range(_MAX_REDIRECTS + 1):
                request = self._http.build_request("GET", current, headers=self._headers)
                request.headers.pop("Authorization", None)
                try:
                    # auth=None and follow_redirects=False: a download client of the caller's
                    # must neither send credentials nor follow a redirect unchecked.
                    response = await self._http.send(
                        request, stream=True, auth=None, follow_redirects=False
                    )
                except httpx.TransportError as exc:
                    raise transport_error(exc, "download") from exc
                try:
                    # has_redirect_location, not is_redirect: a 3xx without a Location would
                    # otherwise fetch the same URL again until the redirect limit.
                    if response.has_redirect_location:
                        current = self.check_url(current.join(response.headers["location"]))
                        continue
                    if response.status_code != 200:
                        raise DownloadError(
                            f"result host answered {response.status_code} for "
                            f"{current.host}{current.path}",
                            status=response.status_code,
                        )
                    yield response
                    return
                finally:
                    with anyio.CancelScope(shield=True):
                        await response.aclose()
            raise DownloadError(f"more than {_MAX_REDIRECTS} redirects for a result URL")
        raise transport_error(TimeoutError(), "download")
