"""The Python side of ``fetch`` inside a render: the fetch policy and the HTTP call.

A render may fetch same-origin ``/api/`` URLs, which go to the API upstream
(``/api/x?q`` becomes ``<upstream>/x?q``), URLs under the upstream itself, and
hosts named in ``ENDDEL_FETCH_ALLOWED_HOSTS``. Everything else is rejected
before any connection is made, and so is every redirect hop that leaves those
rules, because a render runs on the server's network and must not become a way
to reach hosts the operator did not name.

Every request is bounded by the render's deadline: each phase of the exchange
gets the time that remains, and the body is read only while time remains.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

__all__ = ["FetchPolicy", "FetchRejected", "perform_fetch"]

#: Redirects followed per fetch, the Fetch Standard's limit.
MAX_REDIRECTS = 20
#: Largest response body a render may fetch, in bytes. A body this large is a
#: mistake in SSR code, and it would travel into V8 as base64 in one string.
MAX_BODY_BYTES = 32 * 1024 * 1024

# Headers that describe one connection, not the request, and that httpx sets.
_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "host", "content-length", "transfer-encoding", "te"}
)


class FetchRejected(Exception):
    """The fetch policy rejects the URL; the message names the setting to change."""


@dataclass(frozen=True, slots=True)
class FetchPolicy:
    """Where fetch may go: the public origin's /api/, the upstream, named hosts."""

    origin: str
    api_upstream: str | None
    allowed_hosts: frozenset[str]

    @classmethod
    def create(
        cls, origin: str, api_upstream: str | None, allowed_hosts: Iterable[str]
    ) -> FetchPolicy:
        upstream = api_upstream.rstrip("/") if api_upstream else None
        hosts = frozenset(
            host.strip().lower() for host in allowed_hosts if host.strip()
        )
        return cls(origin.rstrip("/"), upstream, hosts)

    def target(self, url: str) -> str:
        """Return the URL to request for ``url``, or raise FetchRejected."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise FetchRejected(
                f"fetch of {url!r} was rejected: only http and https URLs are supported"
            )
        origin = f"{parts.scheme}://{parts.netloc}".lower()
        if origin == self.origin.lower() and (
            parts.path == "/api" or parts.path.startswith("/api/")
        ):
            return self._upstream_url(url, parts.path[len("/api") :], parts.query)
        if self.api_upstream is not None and _is_under(url, self.api_upstream):
            return url
        host = (parts.hostname or "").lower()
        if host in self.allowed_hosts or parts.netloc.lower() in self.allowed_hosts:
            return url
        raise FetchRejected(
            f"fetch of {url!r} was rejected: the host {host!r} is not the public "
            f"origin's /api/ and not in ENDDEL_FETCH_ALLOWED_HOSTS. Fetch a "
            f"same-origin /api/ path, or add {host} to ENDDEL_FETCH_ALLOWED_HOSTS "
            "(a comma-separated list of host names)."
        )

    def _upstream_url(self, url: str, path: str, query: str) -> str:
        if self.api_upstream is None:
            raise FetchRejected(
                f"fetch of {url!r} was rejected: no API upstream is configured "
                "(set ENDDEL_API_UPSTREAM)"
            )
        return self.api_upstream + path + (f"?{query}" if query else "")


def _is_under(url: str, base: str) -> bool:
    return url == base or url.startswith(base + "/") or url.startswith(base + "?")


def perform_fetch(
    client: httpx.Client, policy: FetchPolicy, request: dict[str, Any], deadline: float
) -> dict[str, Any]:
    """Run one fetch and return the reply that fetch turns into a Response.

    Never raises for a failed fetch: the reply is ``{"error": message}``, which
    fetch rejects with as a TypeError, as Node's fetch does for network errors.
    """
    url = str(request["url"])
    try:
        return _follow(client, policy, request, deadline)
    except FetchRejected as error:
        return {"error": str(error)}
    except httpx.TimeoutException:
        return {"error": f"fetch of {url!r} failed: the render's deadline passed"}
    except httpx.HTTPError as error:
        return {"error": f"fetch of {url!r} failed: {type(error).__name__}: {error}"}


def _follow(
    client: httpx.Client, policy: FetchPolicy, request: dict[str, Any], deadline: float
) -> dict[str, Any]:
    method = str(request["method"]).upper()
    url = str(request["url"])
    headers = [
        (str(name), str(value))
        for name, value in request["headers"]
        if str(name).lower() not in _HOP_BY_HOP
    ]
    body = base64.b64decode(request["body"]) if request["body"] is not None else None

    for hop in range(MAX_REDIRECTS + 1):
        response_url = url
        status, reason, response_headers, content = _exchange(
            client, method, policy.target(url), headers, body, deadline
        )
        location = dict(response_headers).get("location")
        if status not in (301, 302, 303, 307, 308) or location is None:
            return {
                "status": status,
                "statusText": reason,
                "headers": response_headers,
                "url": response_url,
                "redirected": hop > 0,
                "body": base64.b64encode(content).decode("ascii"),
            }
        url = urljoin(url, location)
        if status == 303 or (status in (301, 302) and method == "POST"):
            method, body = "GET", None
    raise FetchRejected(f"fetch of {request['url']!r} failed: more than 20 redirects")


def _exchange(
    client: httpx.Client,
    method: str,
    url: str,
    headers: list[tuple[str, str]],
    body: bytes | None,
    deadline: float,
) -> tuple[int, str, list[list[str]], bytes]:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise httpx.TimeoutException("deadline passed")
    with client.stream(
        method, url, headers=headers, content=body, timeout=httpx.Timeout(remaining)
    ) as response:
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise FetchRejected(
                    f"fetch of {url!r} failed: the body exceeds {MAX_BODY_BYTES} bytes"
                )
            if time.monotonic() > deadline:
                raise httpx.TimeoutException("deadline passed")
            chunks.append(chunk)
        pairs = [[name, value] for name, value in response.headers.multi_items()]
        return response.status_code, response.reason_phrase, pairs, b"".join(chunks)


def encode_reply(reply: dict[str, Any]) -> str:
    """Serialize a reply for the JavaScript side."""
    return json.dumps(reply, separators=(",", ":"))
