"""The API's HTTP requests, built from parts made once instead of merged anew on every call.

``httpx.AsyncClient.build_request`` merges the client's headers, cookies, query parameters and
timeout into each request; ``httpx.Request`` then encodes the body, sets ``Host`` and
``Content-Length`` one header at a time and normalises every header once more. For the
client's two small requests that is about a quarter of a call's time (through an in-process
transport), spent the same way on every call. `RequestBuilder` builds the very request
``build_request`` would, from parts made once: each endpoint's URL and ``Host``, and the HTTP
client's own default headers merged with the library's, made again only when the HTTP
client's headers change.

The request is still sent with ``httpx.AsyncClient.send``, so the HTTP client's transport,
mounts, auth, event hooks and cookie jar apply as before. Where the HTTP client has something
only httpx knows how to merge (cookies to send, default query parameters, a ``Host`` or
framing header of its own, or a ``build_request`` of its own), ``build_request`` itself
builds the request.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import NamedTuple

import httpx

from ._http import ACCEPT_ENCODING, RequestBody
from ._secret import Secret
from ._wire import CREATE_PATH, QUERY_PATH
from .limits import Endpoint

__all__ = ["RequestBuilder", "Route"]

_URL_CACHE_SIZE = 1024
"""How many URLs with a query (one per task polled) `RequestBuilder` keeps made."""

_CACHED_QUERY_CHARS = 200
"""The longest query values kept with their URL: a task id the server made huge is not."""

_Pairs = tuple[tuple[bytes, bytes], ...]
"""Request headers as name-value pairs, encoded as httpx encodes them (ASCII)."""

# Headers httpx's `Request` writes itself: an HTTP client that sets one by default gets
# httpx's own merge, whose precedence rules this module does not copy.
_FRAMING = frozenset({b"host", b"content-length", b"transfer-encoding"})


class Route(NamedTuple):
    """An endpoint's method, URL, path (for the log) and ``Host`` header, made once."""

    method: str
    url: httpx.URL
    path: str
    host: bytes


class RequestBuilder:
    """Builds the API's requests as ``http.build_request`` would, without its per-call merge.

    Args:
        http: The HTTP client the requests are sent with.
        base_url: The API host (and path prefix).
        user_agent: The ``User-Agent`` header.
        timeout: httpx's per-phase timeouts, or None for the HTTP client's own.
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        base_url: httpx.URL,
        *,
        user_agent: str,
        timeout: httpx.Timeout | None,
    ) -> None:
        prefix = base_url.path.rstrip("/")
        self.routes: dict[Endpoint, Route] = {}
        endpoints: tuple[tuple[Endpoint, str, str], ...] = (
            ("create", "POST", CREATE_PATH),
            ("query", "GET", QUERY_PATH),
        )
        for endpoint, method, path in endpoints:
            url = base_url.copy_with(path=prefix + path, query=None)
            self.routes[endpoint] = Route(method, url, url.path, url.netloc)
        self._http = http
        # Without Authorization: `build` adds it to each request from the secret, so no
        # header object here (nor a local of the call loop's frames) holds the key.
        self._headers: _Pairs = (
            (b"User-Agent", user_agent.encode("ascii")),
            (b"Accept", b"application/json"),
            (b"Accept-Encoding", ACCEPT_ENCODING.encode("ascii")),
        )
        self._json_headers: _Pairs = (*self._headers, (b"Content-Type", b"application/json"))
        self._timeout = timeout
        # A subclass's build_request may add to the request: then it builds every request.
        self._httpx_builds = type(http).build_request is not httpx.AsyncClient.build_request
        # The HTTP client's default headers last seen, and what is kept of them under each
        # set of the library's headers (None: httpx merges them itself).
        self._seen: list[tuple[bytes, bytes]] | None = None
        self._kept: dict[tuple[bool, bool], _Pairs | None] = {}
        # A task is polled several times: its URL (parsed and encoded by httpx, as costly as
        # the rest of the request) is made once, and kept while it is among the last polled.
        self._urls: OrderedDict[tuple[Endpoint, tuple[tuple[str, str], ...]], httpx.URL] = (
            OrderedDict()
        )

    def build(
        self,
        endpoint: Endpoint,
        secret: Secret,
        *,
        content: bytes | None = None,
        params: dict[str, str] | None = None,
        request_id: str | None = None,
    ) -> httpx.Request:
        """The request of one try: the library's headers over the HTTP client's, its body.

        The ``Authorization`` header is made from ``secret`` in the request's own arguments,
        so only the request (whose repr shows no header) holds it.

        Args:
            endpoint: ``"create"`` (a POST of ``content``) or ``"query"`` (a GET).
            secret: The API key.
            content: The JSON body, if any.
            params: The query parameters, if any.
            request_id: The ``X-Request-ID``, if any.
        """
        route = self.routes[endpoint]
        headers = self._headers if content is None else self._json_headers
        kept = self._kept_headers(content is not None, request_id is not None)
        if kept is None:
            return self._built_by_httpx(route, headers, secret, content, params, request_id)
        timeout = self._http.timeout if self._timeout is None else self._timeout
        extra = _request_id(request_id)
        length = () if content is None else ((b"Content-Length", b"%d" % len(content)),)
        # What `build_request` would send: Host, the client's headers ours do not replace,
        # ours, then Content-Length; the body as a stream read already (`request.content`).
        request = httpx.Request(
            route.method,
            route.url if not params else self._url(endpoint, route.url, params),
            headers=[
                (b"Host", route.host),
                *kept,
                *headers,
                *extra,
                (b"Authorization", secret.authorization().encode("ascii")),
                *length,
            ],
            stream=RequestBody(b"" if content is None else content),
            extensions={"timeout": timeout.as_dict()},
        )
        request.read()
        return request

    def _url(self, endpoint: Endpoint, url: httpx.URL, params: dict[str, str]) -> httpx.URL:
        """``url`` with the query ``params``, as httpx makes it, made once per query.

        At most `_URL_CACHE_SIZE` are kept, the least recently used given up first, and none
        whose values are longer than `_CACHED_QUERY_CHARS` (a task id is whatever the server
        said it was: kept URLs stay a few hundred kilobytes whatever it says).
        """
        if sum(len(value) for value in params.values()) > _CACHED_QUERY_CHARS:
            return url.copy_merge_params(params)  # an odd task id: not worth its memory
        key = (endpoint, tuple(params.items()))
        urls = self._urls
        made = urls.get(key)
        if made is not None:
            urls.move_to_end(key)
            return made
        made = urls[key] = url.copy_merge_params(params)
        if len(urls) > _URL_CACHE_SIZE:
            urls.popitem(last=False)
        return made

    def _kept_headers(self, json: bool, request_id: bool) -> _Pairs | None:
        """The HTTP client's default headers that ours leave in place, or None.

        None when httpx must merge them itself (see the module's docstring). Made again only
        when the HTTP client's headers have changed since the last request.
        """
        http = self._http
        if self._httpx_builds or http.cookies or http.params:
            return None
        raw = http.headers.raw
        if raw != self._seen:
            self._seen = raw
            self._kept.clear()
        shape = (json, request_id)
        try:
            return self._kept[shape]
        except KeyError:
            pass
        ours = {name.lower() for name, _ in self._json_headers if json or name != b"Content-Type"}
        ours.add(b"authorization")
        if request_id:
            ours.add(b"x-request-id")
        kept: _Pairs | None = tuple(
            (name, value) for name, value in raw if name.lower() not in ours
        )
        if any(name.lower() in _FRAMING for name, _ in raw):
            kept = None
        self._kept[shape] = kept
        return kept

    def _built_by_httpx(
        self,
        route: Route,
        headers: _Pairs,
        secret: Secret,
        content: bytes | None,
        params: dict[str, str] | None,
        request_id: str | None,
    ) -> httpx.Request:
        """The request as ``build_request`` makes it, with the library's headers."""
        request = self._http.build_request(
            route.method,
            route.url,
            content=content,
            params=params,
            headers=[
                *headers,
                *_request_id(request_id),
                (b"Authorization", secret.authorization().encode("ascii")),
            ],
            timeout=httpx.USE_CLIENT_DEFAULT if self._timeout is None else self._timeout,
        )
        if content is not None:
            request.stream = RequestBody(content)
        return request


def _request_id(request_id: str | None) -> _Pairs:
    """The ``X-Request-ID`` header, if there is one."""
    return () if request_id is None else ((b"X-Request-ID", request_id.encode("ascii")),)
