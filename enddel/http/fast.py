"""The cache-hit fast path: fresh pages sent straight from the page cache.

A fresh hit is the response an SSR server sends most, and on hypercorn's trio
worker the framework costs more than the lookup: Quart's request and response
objects and routing take about as long again as hypercorn itself. This ASGI
layer sits in front of Quart and sends the plain case itself, as two ASGI
messages with headers built from the entry. Everything else passes through to
Quart unchanged, where the SSR handler applies the same rules:

- methods other than GET and HEAD, and ``/api`` and ``/_enddel`` paths;
- requests with ``Authorization``, with a Cookie other than the names in
  ``ENDDEL_CACHE_IGNORED_COOKIES``, or with ``If-None-Match``;
- a miss, a stale entry, and an entry whose status is not 200, since a
  stored 404 must not hide a static file that a new client build added (for
  a 200, a static file with the same path as a page is a build error).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from enddel import metrics
from enddel.cache import Entry, PageStore
from enddel.cache.policy import age_seconds, bypasses_cache, cache_key
from enddel.config import Config
from enddel.http.conditional import recode_etag
from enddel.http.negotiation import choose_encoding

__all__ = ["CachedPageFastPath"]

ASGIApp = Callable[..., Any]
_PASS_THROUGH_PREFIXES = (b"/api", b"/_enddel")
#: Distinct Accept-Encoding values remembered with their choice. Browsers send
#: a handful of values; the bound keeps a client that varies it from growing
#: the table.
_CHOICE_TABLE_SIZE = 512


class CachedPageFastPath:
    """ASGI middleware that serves fresh cached pages before Quart is called."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app
        self._store: PageStore | None = None
        self._config: Config | None = None
        self._bundle_version = ""
        self._choices: dict[tuple[bytes | None, bool, bool, bool], str | None] = {}

    def attach(
        self, config: Config, store: PageStore | None, bundle_version: str
    ) -> None:
        """Start serving hits from ``store``; called once the server is ready."""
        self._config, self._store, self._bundle_version = config, store, bundle_version

    def detach(self) -> None:
        self._store = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if self._store is not None and scope["type"] == "http":
            metrics.start_timing()
            now = time.time()
            entry = self._fresh_entry(scope, now)
            if entry is not None and await self._send_entry(scope, entry, send, now):
                metrics.record_fast_hit()
                return
        await self._app(scope, receive, send)

    def _fresh_entry(self, scope: dict[str, Any], now: float) -> Entry | None:
        method = scope["method"]
        if method != "GET" and method != "HEAD":
            return None
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        if raw_path.startswith(_PASS_THROUGH_PREFIXES):
            return None

        cookies = []
        for name, value in scope["headers"]:
            if name == b"authorization" or name == b"if-none-match":
                return None
            if name == b"cookie":
                cookies.append(value.decode("latin-1"))
        assert self._config is not None
        assert self._store is not None
        if cookies and bypasses_cache(
            cookies, False, self._config.cache_ignored_cookies
        ):
            return None

        query: bytes = scope.get("query_string", b"")
        url = raw_path.decode("latin-1")
        if query:
            url = f"{url}?{query.decode('latin-1')}"
        entry = self._store.get(cache_key(self._bundle_version, url))
        if entry is None or entry.status != 200:
            return None
        if now - entry.stored_at >= entry.ttl:
            return None
        return entry

    async def _send_entry(
        self, scope: dict[str, Any], entry: Entry, send: Any, now: float
    ) -> bool:
        """Send the entry; return False when the slow path must respond instead."""
        coding = self._choose(scope, entry)
        if coding is None:
            return False
        body = entry.body
        etag = entry.etag
        headers = [
            (name.encode("latin-1"), value.encode("latin-1"))
            for name, value in entry.headers
            if name.lower() != "set-cookie"
        ]
        if coding != "identity":
            variant = entry.body_br if coding == "br" else entry.body_gzip
            assert variant is not None  # choose() offers only variants that exist
            body = variant
            etag = recode_etag(etag, coding)
            headers.append((b"content-encoding", coding.encode()))
        if not any(name.lower() == b"content-type" for name, _ in headers):
            headers.append((b"content-type", b"text/html; charset=utf-8"))
        headers += [
            (b"vary", b"Accept-Encoding"),
            (b"x-cache", b"HIT"),
            (b"server-timing", metrics.server_timing("cache").encode()),
            (b"age", str(age_seconds(entry, now)).encode()),
            (b"etag", etag.encode("latin-1")),
            (b"content-length", str(len(body)).encode()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        if scope["method"] == "HEAD":
            body = b""
        await send({"type": "http.response.body", "body": body})
        return True

    def _choose(self, scope: dict[str, Any], entry: Entry) -> str | None:
        accept: bytes | None = None
        for name, value in scope["headers"]:
            if name == b"accept-encoding":
                accept = value if accept is None else accept + b"," + value
        br, gzip = entry.body_br, entry.body_gzip
        # The choice depends on which variants exist and on their size order;
        # identity, when a variant exists, is always the largest.
        br_smaller = br is not None and gzip is not None and len(br) <= len(gzip)
        memo = (accept, br is not None, gzip is not None, br_smaller)
        try:
            return self._choices[memo]
        except KeyError:
            pass
        sizes = {"identity": len(entry.body)}
        if entry.body_br is not None:
            sizes["br"] = len(entry.body_br)
        if entry.body_gzip is not None:
            sizes["gzip"] = len(entry.body_gzip)
        choice = choose_encoding(
            None if accept is None else accept.decode("latin-1"), sizes
        )
        if len(self._choices) >= _CHOICE_TABLE_SIZE:
            self._choices.clear()
        self._choices[memo] = choice
        return choice
