"""Request and response rewriting rules of the API proxy, free of I/O.

The proxy forwards ``/api/<rest>`` to ``<upstream base>/<rest>``. This module
decides what the upstream sees (target, headers) and what the client gets back
(headers), so the rules can be tested without a server. Headers are handled as
raw ``(name, value)`` byte pairs in arrival order, which keeps repeated fields
such as ``Set-Cookie`` apart and leaves the bytes of every other field alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes, urlsplit

from werkzeug.http import parse_list_header

__all__ = [
    "PROXY_PREFIX",
    "ClientInfo",
    "ProxyPathError",
    "UpstreamBase",
    "request_headers",
    "response_headers",
    "upstream_target",
]

Header = tuple[bytes, bytes]

#: The request path prefix that the proxy serves; it is replaced by the
#: upstream's base path.
PROXY_PREFIX = b"/api"

#: Hop-by-hop fields (RFC 9110 §7.6.1, plus the non-standard ``Keep-Alive``
#: and ``Proxy-Connection``). They describe one connection, so they never
#: cross the proxy in either direction; the fields that ``Connection`` names
#: are removed as well.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)

#: Request fields the proxy sets itself. ``Expect: 100-continue`` is answered by
#: hypercorn on the client connection, and httpx cannot wait for a 100 response.
_REQUEST_REPLACED = frozenset(
    {b"host", b"expect", b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host"}
)

#: Response fields that hypercorn always writes itself, so the upstream's copies
#: would be duplicates; nginx hides the same two by default. ``X-Cache`` on an
#: enddel response reports the page cache, which proxied responses never use.
_RESPONSE_DROPPED = frozenset({b"date", b"server", b"x-cache"})


class ProxyPathError(ValueError):
    """A request path that the proxy will not forward; the message says why."""


@dataclass(frozen=True, slots=True)
class UpstreamBase:
    """The parts of ``ENDDEL_API_UPSTREAM`` that rewriting needs."""

    #: The base URL as configured, without a trailing slash.
    url: str
    #: Its path as bytes, such as ``b"/api"``; empty for a bare origin.
    path: bytes

    @classmethod
    def parse(cls, url: str) -> UpstreamBase:
        base = url.rstrip("/")
        return cls(url=base, path=urlsplit(base).path.encode("ascii"))


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """What the proxy reports about the client in ``X-Forwarded-*`` fields."""

    #: The peer address of the client connection, or None when unknown.
    address: str | None
    #: ``http`` or ``https``: the scheme the client used to reach enddel.
    scheme: str
    #: The ``Host`` field the client sent, or None when it sent none.
    host: bytes | None


def upstream_target(base: UpstreamBase, raw_path: bytes, query: bytes) -> bytes:
    """Map the raw request path and query onto the upstream's request target.

    ``/api/<rest>?<query>`` becomes ``<base path>/<rest>?<query>`` with the
    bytes of ``<rest>`` and ``<query>`` unchanged, so percent-encoding is not
    normalised. Raise ProxyPathError for a path outside ``/api`` and for a
    ``.`` or ``..`` segment.
    """
    rest = raw_path.removeprefix(PROXY_PREFIX)
    if rest == raw_path or not (rest == b"" or rest.startswith(b"/")):
        raise ProxyPathError(
            f"path {raw_path!r} does not start with /api/ as written; "
            "request it without percent-encoding in the prefix"
        )

    # Security: the upstream, or a server behind it, may resolve dot-segments
    # and would then serve paths outside its base path, so they are rejected
    # in plain and in percent-encoded form.
    for segment in rest.split(b"/"):
        if unquote_to_bytes(segment) in (b".", b".."):
            raise ProxyPathError(
                f"path {raw_path!r} contains a '.' or '..' segment; "
                "request the resolved path instead"
            )

    target = base.path + rest or b"/"
    return target + b"?" + query if query else target


def connection_tokens(headers: Iterable[Header]) -> frozenset[bytes]:
    """Return the lower-cased field names that the ``Connection`` fields list."""
    tokens: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            items = parse_list_header(value.decode("latin-1"))
            tokens.update(item.strip().lower().encode("latin-1") for item in items)
    return frozenset(tokens)


def _end_to_end(headers: Sequence[Header], dropped: frozenset[bytes]) -> list[Header]:
    named = connection_tokens(headers)
    return [
        (name, value)
        for name, value in headers
        if (lowered := name.lower()) not in HOP_BY_HOP
        and lowered not in named
        and lowered not in dropped
    ]


def request_headers(headers: Sequence[Header], client: ClientInfo) -> list[Header]:
    """Build the upstream request's fields from the client's.

    Hop-by-hop fields and ``Host`` are removed (httpx sets ``Host`` from the
    upstream URL). The client's address is appended to ``X-Forwarded-For``, and
    ``X-Forwarded-Proto`` and ``X-Forwarded-Host`` describe the client's request,
    replacing any that the client sent.
    """
    forwarded_for = [
        value.strip()
        for name, value in headers
        if name.lower() == b"x-forwarded-for" and value.strip()
    ]
    result = _end_to_end(headers, _REQUEST_REPLACED)

    if client.address is not None:
        forwarded_for.append(client.address.encode("ascii"))
    if forwarded_for:
        result.append((b"X-Forwarded-For", b", ".join(forwarded_for)))
    result.append((b"X-Forwarded-Proto", client.scheme.encode("ascii")))
    if client.host is not None:
        result.append((b"X-Forwarded-Host", client.host))
    return result


def response_headers(headers: Sequence[Header], base: UpstreamBase) -> list[Header]:
    """Build the client response's fields from the upstream's.

    Hop-by-hop fields, ``Date``, ``Server`` and ``X-Cache`` are removed. A
    ``Content-Length`` that arrived beside ``Transfer-Encoding`` is removed too,
    because the transfer coding decided the length (RFC 9112 §6.3). A
    ``Location`` under the upstream base URL is rewritten to the same place
    under ``/api``, as nginx's ``proxy_redirect default`` does.
    """
    chunked = any(name.lower() == b"transfer-encoding" for name, _ in headers)
    result = []
    for name, value in _end_to_end(headers, _RESPONSE_DROPPED):
        lowered = name.lower()
        if lowered == b"content-length" and chunked:
            continue
        if lowered == b"location":
            value = _proxied_location(value, base)
        result.append((name, value))
    return result


def _proxied_location(location: bytes, base: UpstreamBase) -> bytes:
    prefix = base.url.encode("ascii")
    rest = location.removeprefix(prefix)
    if rest == location or not (rest == b"" or rest[:1] in (b"/", b"?", b"#")):
        return location
    return PROXY_PREFIX + rest
