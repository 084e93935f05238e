"""The API proxy: requests under ``/api/`` forwarded to ``ENDDEL_API_UPSTREAM``.

Design note. One pooled ``httpx.AsyncClient`` per server process carries every
upstream request. Bodies stream in both directions: the client's body is read
from Quart chunk by chunk and written to the upstream as it arrives, and the
upstream's bytes are read with ``aiter_raw`` (never decoded) and handed to
hypercorn one read at a time, so an event stream reaches the client event by
event. The upstream response stays open after :meth:`UpstreamProxy.forward`
returns and is closed by the response body once Quart has sent it, or when the
client goes away and the send is cancelled.

Outcomes of one request:

- a path outside ``/api/`` or with dot-segments: 400, nothing sent upstream;
- a body over ``ENDDEL_PROXY_MAX_BODY``: 413, before connecting when
  ``Content-Length`` says so, otherwise once the streamed count passes it
  (the upstream then sees its request aborted);
- the upstream refused, unresolvable or broken before its response head: 502;
- a connect, read or write timeout before the response head: 504;
- a failure after the response head was sent: the client connection is
  aborted, so the client sees a truncated response, never a complete one.

Every 502 and 504 and every aborted response is logged once on
``enddel.proxy`` with the upstream URL and the cause.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import quart
import trio
from werkzeug.datastructures import Headers
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.routing import PathConverter

from enddel import metrics
from enddel.config import Config
from enddel.http.proxy_rewrite import (
    ClientInfo,
    ProxyPathError,
    UpstreamBase,
    request_headers,
    response_headers,
    upstream_target,
)
from enddel.logs import proxy_log

__all__ = [
    "ProxyPathConverter",
    "UpstreamBodyError",
    "UpstreamProxy",
    "open_upstream_proxy",
]

#: Idle upstream connections kept for reuse. hypercorn bounds concurrency on the
#: client side, so the pool itself sets no cap on open connections.
KEEPALIVE_CONNECTIONS = 64
#: Seconds an idle upstream connection is kept; below the 60 s to 75 s idle
#: timeouts of common servers, so the pool rarely reuses a closing connection.
KEEPALIVE_EXPIRY = 30.0


class ProxyPathConverter(PathConverter):
    """A URL converter for what follows ``/api``: nothing, or ``/`` and anything.

    werkzeug's ``path`` converter never matches an empty string or one that
    starts with ``/``, so ``/api/`` and ``/api//x`` would not reach the proxy.
    Register it as ``app.url_map.converters["proxy_path"]`` and route
    ``/api<proxy_path:rest>`` with ``merge_slashes=False``. The proxy reads the
    raw path from the ASGI scope, so the matched value itself is not used.
    """

    regex = "(?:/.*)?"
    part_isolating = False


#: Largest upstream body without a Content-Length that is read whole for an
#: HTTP/1.0 client, in bytes; such clients are rare (monitoring probes, old
#: tools), and the limit keeps one of them from holding an unbounded body.
HTTP10_BUFFER_BYTES = 16 * 1024 * 1024


class UpstreamBodyError(Exception):
    """The upstream failed after its response head had been sent to the client.

    Raised from the response body so that hypercorn aborts the client
    connection instead of ending the response as if it were complete.
    """


class _RequestBodyTooLarge(Exception):
    """The streamed request body passed ``ENDDEL_PROXY_MAX_BODY``."""


class _State(enum.Enum):
    OPEN = "open"
    CLOSED = "closed"


class _ProxiedResponse(quart.Response):
    # The upstream decides the Content-Type; without this, a response that has
    # none would get Quart's default text/html.
    # Quart types the attribute as str; werkzeug itself accepts None here.
    default_mimetype = None  # type: ignore[assignment]


@asynccontextmanager
async def open_upstream_proxy(config: Config) -> AsyncIterator[UpstreamProxy]:
    """Open the upstream connection pool, and close it with its connections."""
    timeout = httpx.Timeout(
        connect=config.proxy_connect_timeout,
        read=config.proxy_read_timeout,
        write=config.proxy_read_timeout,
        pool=config.proxy_connect_timeout,
    )
    limits = httpx.Limits(
        max_connections=None,
        max_keepalive_connections=KEEPALIVE_CONNECTIONS,
        keepalive_expiry=KEEPALIVE_EXPIRY,
    )
    # trust_env=False: HTTP_PROXY, NO_PROXY and .netrc must not redirect or
    # authenticate requests that the operator pointed at one upstream.
    client = httpx.AsyncClient(
        timeout=timeout, limits=limits, follow_redirects=False, trust_env=False
    )
    # httpx adds Accept, Accept-Encoding, Connection and User-Agent to every
    # request by default. The upstream must see the client's fields only.
    client.headers.clear()

    async with client:
        proxy = UpstreamProxy(config, client)
        try:
            yield proxy
        finally:
            proxy._state = _State.CLOSED


class UpstreamProxy:
    """Forwards requests to the upstream over a shared connection pool."""

    def __init__(self, config: Config, client: httpx.AsyncClient) -> None:
        self._base = UpstreamBase.parse(config.api_upstream)
        self._max_body_bytes = config.proxy_max_body_bytes
        self._client = client
        self._state = _State.OPEN

    async def forward(self, request: quart.Request) -> quart.Response:
        """Send ``request`` to the upstream and return its streaming response.

        Cancellation (the client went away) cancels the upstream request and
        closes its connection. Raise RuntimeError after the proxy was closed.
        """
        if self._state is not _State.OPEN:
            raise RuntimeError(
                "UpstreamProxy.forward() was called after its open_upstream_proxy() "
                "block exited; forward requests only inside that block"
            )
        try:
            upstream_request = self._build_request(request)
        except ProxyPathError as error:
            return _error_response(400, f"Bad request: {error}.")
        declared = request.content_length
        if declared is not None and declared > self._max_body_bytes:
            return _body_too_large(self._max_body_bytes)

        sent_at = trio.current_time()
        try:
            upstream_response = await self._client.send(upstream_request, stream=True)
        except (_RequestBodyTooLarge, RequestEntityTooLarge):
            return _body_too_large(self._max_body_bytes)
        except httpx.TimeoutException as error:
            self._log_failure(upstream_request, "timed out", error)
            return _error_response(504, "Gateway timeout: the API did not answer.")
        except httpx.TransportError as error:
            self._log_failure(upstream_request, "failed", error)
            return _error_response(502, "Bad gateway: the API could not be reached.")
        metrics.record_upstream(sent_at)

        if (
            request.http_version == "1.0"
            and "content-length" not in upstream_response.headers
        ):
            return await self._relay_buffered(upstream_response)
        return self._relay(upstream_response)

    def _build_request(self, request: quart.Request) -> httpx.Request:
        scope = request.scope
        target = upstream_target(self._base, scope["raw_path"], scope["query_string"])
        raw_headers = list(scope["headers"])
        client = ClientInfo(
            address=(scope.get("client") or (None,))[0],
            scheme=scope["scheme"],
            host=next((v for n, v in raw_headers if n.lower() == b"host"), None),
        )

        has_body = any(
            name.lower() in (b"content-length", b"transfer-encoding")
            for name, _ in raw_headers
        )
        url = httpx.URL(self._base.url).copy_with(raw_path=target)
        return self._client.build_request(
            request.method,
            url,
            headers=request_headers(raw_headers, client),
            content=self._stream_body(request) if has_body else None,
        )

    async def _stream_body(self, request: quart.Request) -> AsyncIterator[bytes]:
        # Quart raises RequestEntityTooLarge itself when its MAX_CONTENT_LENGTH
        # is lower than ours; forward() maps both to 413.
        received = 0
        async for chunk in request.body:
            received += len(chunk)
            if received > self._max_body_bytes:
                raise _RequestBodyTooLarge
            yield chunk

    def _relay(self, upstream: httpx.Response) -> quart.Response:
        # NOTE: a cancellation after forward() returns but before Quart starts
        # sending the body skips _UpstreamBody.aclose(), which leaves this
        # upstream connection open until the response object is collected.
        headers = response_headers(upstream.headers.raw, self._base)
        response = _ProxiedResponse(
            _UpstreamBody(upstream, self._base.url),
            status=upstream.status_code,
            headers=_werkzeug_headers(headers),
        )
        # Quart's RESPONSE_TIMEOUT would cut long event streams; the upstream
        # read timeout bounds every wait instead.
        response.timeout = None
        return response

    async def _relay_buffered(self, upstream: httpx.Response) -> quart.Response:
        # An HTTP/1.0 client cannot take chunked coding, so a body of unknown
        # length would be delimited by closing the connection. hypercorn 0.18
        # does not close after such a response, and the client would wait
        # forever, so the body is read whole and sent with a Content-Length.
        body = bytearray()
        try:
            async for chunk in upstream.aiter_raw():
                body.extend(chunk)
                if len(body) > HTTP10_BUFFER_BYTES:
                    proxy_log.warning(
                        "upstream %s sent more than %d bytes without a length "
                        "to the HTTP/1.0 request %s %s",
                        self._base.url,
                        HTTP10_BUFFER_BYTES,
                        upstream.request.method,
                        upstream.request.url.raw_path.decode("ascii"),
                    )
                    return _error_response(
                        502, "Bad gateway: the API response is too large for HTTP/1.0."
                    )
        except httpx.TimeoutException as error:
            self._log_failure(upstream.request, "timed out", error)
            return _error_response(504, "Gateway timeout: the API did not answer.")
        except httpx.TransportError as error:
            self._log_failure(upstream.request, "failed", error)
            return _error_response(502, "Bad gateway: the API could not be reached.")
        finally:
            with trio.CancelScope(shield=True):
                await upstream.aclose()

        headers = response_headers(upstream.headers.raw, self._base)
        # Quart sets Content-Length from the bytes.
        return _ProxiedResponse(
            bytes(body), status=upstream.status_code, headers=_werkzeug_headers(headers)
        )

    def _log_failure(
        self, request: httpx.Request, outcome: str, error: httpx.HTTPError
    ) -> None:
        metrics.count_upstream_error("timeout" if "timed" in outcome else "transport")
        proxy_log.warning(
            "upstream %s %s for %s %s: %s",
            self._base.url,
            outcome,
            request.method,
            request.url.raw_path.decode("ascii"),
            _describe(error),
        )


class _UpstreamBody:
    """The upstream response's raw bytes as Quart's response body.

    Quart calls :meth:`aclose` after sending, including when the send is
    cancelled, which closes the upstream response and releases or drops its
    connection.
    """

    def __init__(self, response: httpx.Response, upstream: str) -> None:
        self._response = response
        self._upstream = upstream
        self._chunks = response.aiter_raw()

    def __aiter__(self) -> _UpstreamBody:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self._chunks.__anext__()
        except httpx.HTTPError as error:
            metrics.count_upstream_error("body")
            proxy_log.warning(
                "upstream %s failed during the response to %s %s: %s",
                self._upstream,
                self._response.request.method,
                self._response.request.url.raw_path.decode("ascii"),
                _describe(error),
            )
            raise UpstreamBodyError(_describe(error)) from error

    async def aclose(self) -> None:
        # Shielded because this often runs in a cancelled scope (the client
        # went away), and closing only drops or pools a socket, so it is quick.
        with trio.CancelScope(shield=True):
            await self._response.aclose()


def _werkzeug_headers(headers: list[tuple[bytes, bytes]]) -> Headers:
    return Headers([(_text(name), _text(value)) for name, value in headers])


def _text(raw: bytes) -> str:
    # Quart encodes header values as UTF-8, so decoding them as UTF-8 keeps
    # their bytes. NOTE: a value that is not UTF-8 (obs-text) reaches the client
    # re-encoded from Latin-1, the one case where header bytes change.
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _describe(error: httpx.HTTPError) -> str:
    cause = str(error) or "no details"
    return f"{type(error).__name__}: {cause}"


def _error_response(status: int, message: str) -> quart.Response:
    return quart.Response(message + "\n", status=status, mimetype="text/plain")


def _body_too_large(limit: int) -> quart.Response:
    return _error_response(
        413, f"Content too large: the API accepts request bodies up to {limit} bytes."
    )
