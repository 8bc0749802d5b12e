"""`S3ImageHost`: local input images published to S3 or S3-compatible storage you own.

An image is uploaded with a presigned ``PUT`` and handed to the provider as a presigned
``GET`` URL: the bucket stays private, and the provider can read that one object until the
URL expires. Signing is local computation by obstore (``pip install 'nanobanana-async[s3]'``);
httpx moves the bytes, so the host runs on asyncio and on trio alike. Objects are named by
their SHA-256, and a presigned ``HEAD`` first asks whether the object is there already, so a
picture is uploaded once, whichever process or run publishes it.
"""

from __future__ import annotations

import functools
import os
from datetime import timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit

import anyio.to_thread
import httpx

from ._download import is_loopback_host
from ._errors import ConfigurationError, ImageHostError

if TYPE_CHECKING:
    from obstore.store import S3Config, S3Store

__all__ = ["S3ImageHost"]

_MAX_SIGNED_SECONDS = 7 * 24 * 3600  # SigV4's ceiling for a presigned URL
_ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")


def _endpoint(endpoint_url: str | None) -> str | None:
    for variable in _ENDPOINT_VARIABLES:
        if endpoint_url is None:
            endpoint_url = os.environ.get(variable) or None
    if endpoint_url is None:
        return None
    parts = urlsplit(endpoint_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError("endpoint_url", f"must be an http(s) URL, got {endpoint_url!r}")
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        raise ConfigurationError(
            "endpoint_url", "must use https:// (plain http is allowed only on loopback)"
        )
    return endpoint_url.rstrip("/")


class S3ImageHost:
    """An `ImageHost` that publishes images to an S3 or S3-compatible bucket.

    Works with AWS S3, Cloudflare R2, MinIO, Google Cloud Storage's interoperability API and
    other S3-compatible stores. The bucket need not be public: each image is handed to the
    provider as a presigned URL that expires. Credentials come from the arguments or from the
    usual ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``,
    ``AWS_REGION`` and ``AWS_ENDPOINT_URL`` variables.

    Use it as an async context manager (or call `aclose`) to close its HTTP client; a client
    given it as ``image_host`` does not close it.

    Args:
        url: Where images go, ``s3://bucket`` or ``s3://bucket/prefix``.
        endpoint_url: The store's endpoint for S3-compatible services (e.g.
            ``https://<account>.r2.cloudflarestorage.com``); default: AWS, or the
            ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` variable. Plain http only on
            loopback.
        region: The bucket's region (R2: ``"auto"``); default from the environment.
        expires_in: Seconds a published URL stays valid (default one day; at most seven
            days). Temporary credentials end it sooner, when they expire.
        access_key_id: The access key id (default: the environment).
        secret_access_key: The secret access key (default: the environment).
        session_token: A session token for temporary credentials.
        http_client: Your `httpx.AsyncClient` to move the bytes; you close it.
        timeout: Seconds one upload or check may take.

    Raises:
        ConfigurationError: A setting is not valid, or obstore is not installed.

    Attributes:
        uploads: How many images this host has uploaded (an image found in the bucket
            already is not uploaded again).
    """

    def __init__(
        self,
        url: str,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        expires_in: float = 86_400.0,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        session_token: str | None = None,
        http_client: httpx.AsyncClient | None = None,
        timeout: float = 60.0,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc or parts.query or parts.fragment:
            raise ConfigurationError("url", f"must look like s3://bucket/prefix, got {url!r}")
        if not 60 <= expires_in <= _MAX_SIGNED_SECONDS:
            raise ConfigurationError("expires_in", "must be from 60 s to 7 days (604800 s)")
        self._bucket = parts.netloc
        self._prefix = parts.path.strip("/")
        self._endpoint = _endpoint(endpoint_url)
        self._expires_in = expires_in
        self._store = self._make_store(region, access_key_id, secret_access_key, session_token)
        self._owns_http = http_client is None
        self._http = http_client or httpx.AsyncClient(timeout=timeout, follow_redirects=False)
        self.uploads = 0

    def _make_store(
        self,
        region: str | None,
        access_key_id: str | None,
        secret_access_key: str | None,
        session_token: str | None,
    ) -> S3Store:
        try:
            from obstore.store import S3Store
        except ImportError:
            raise ConfigurationError(
                "image_host", "S3ImageHost needs obstore: pip install 'nanobanana-async[s3]'"
            ) from None
        config: S3Config = {}
        if self._endpoint is not None:
            config["endpoint"] = self._endpoint
        if region is not None:
            config["region"] = region
        if access_key_id is not None:
            config["access_key_id"] = access_key_id
        if secret_access_key is not None:
            config["secret_access_key"] = secret_access_key
        if session_token is not None:
            config["session_token"] = session_token
        allow_http = self._endpoint is not None and self._endpoint.startswith("http:")
        try:
            return S3Store(
                self._bucket,
                prefix=self._prefix or None,
                config=config,
                client_options={"allow_http": allow_http},
            )
        except Exception as exc:  # obstore's own error types: a setting it refuses
            raise ConfigurationError("image_host", f"S3 settings refused: {exc}") from None

    def __repr__(self) -> str:
        where = f"s3://{self._bucket}/{self._prefix}".rstrip("/")
        return f"<S3ImageHost {where} endpoint={self._endpoint!r}>"

    async def __aenter__(self) -> S3ImageHost:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP client this host created."""
        if self._owns_http:
            await self._http.aclose()

    async def _sign(self, method: Literal["GET", "PUT", "HEAD"], name: str, seconds: float) -> str:
        import obstore

        # In a worker thread: signing is local, but finding credentials (an instance role,
        # a web identity) may take a request.
        sign = functools.partial(
            obstore.sign, self._store, method, name, timedelta(seconds=seconds)
        )
        try:
            return await anyio.to_thread.run_sync(sign)
        except Exception as exc:  # obstore's errors, e.g. no credentials found
            raise ImageHostError(f"cannot sign a URL for the image store: {exc}") from None

    async def _send(
        self, method: str, url: str, name: str, data: bytes | None = None, content_type: str = ""
    ) -> int:
        headers = {"Content-Type": content_type} if content_type else None
        try:
            response = await self._http.request(method, url, content=data, headers=headers)
        except httpx.TransportError as exc:
            # The presigned URL is not shown: it is a credential until it expires.
            raise ImageHostError(f"cannot reach the image store ({method} {name}): {exc}") from exc
        return response.status_code

    async def publish(self, data: bytes, *, name: str, content_type: str, valid_for: float) -> str:
        """Upload the image unless the bucket has it, and return a presigned GET URL.

        Args:
            data: The image's bytes.
            name: Its content-addressed name (the object's key under the prefix).
            content_type: Its content type, stored with the object.
            valid_for: The least seconds the URL must stay valid.

        Returns:
            A presigned URL valid for ``max(expires_in, valid_for)`` seconds.

        Raises:
            ImageHostError: The store refused or could not be reached, or ``valid_for`` is
                more than a presigned URL can live (seven days).
        """
        if valid_for > _MAX_SIGNED_SECONDS:
            raise ImageHostError(
                f"a presigned URL lives at most 7 days; {valid_for:g} s was asked for"
            )
        head = await self._sign("HEAD", name, 300)
        status = await self._send("HEAD", head, name)
        if status != 200:
            # A missing object is a 404, or a 403 without the right to list the bucket.
            put = await self._sign("PUT", name, 300)
            status = await self._send("PUT", put, name, data, content_type)
            if status not in (200, 201):
                raise ImageHostError(
                    f"the image store refused the upload of {name} ({status})", status=status
                )
            self.uploads += 1
        return await self._sign("GET", name, max(self._expires_in, valid_for))
