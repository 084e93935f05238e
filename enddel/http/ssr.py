"""Server-side rendered pages: the page cache in front of the render pool.

A GET or HEAD that is not an API call or a static file ends here, and the page
is looked up in the page cache. A fresh entry is served as it is (HIT). A stale
one is served while one background render refreshes it (STALE). A miss is
rendered once however many requests wait for it (MISS): once in this process,
and, through the store's in-flight marks, once across every server process.
Requests with credentials skip the cache in both directions (BYPASS).

A render runs as a task in the app's nursery, never in the request's own task,
so a client that disconnects does not cancel a render that others wait for.
Each response's per-request headers (Age, X-Cache, Vary, Server-Timing) are
built for that response alone; only the entry's own headers are shared.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import trio
from quart import Request, Response
from werkzeug.datastructures import Headers

from enddel import metrics
from enddel.cache import Entry, PageStore
from enddel.cache.policy import (
    Freshness,
    age_seconds,
    bypasses_cache,
    cache_key,
    freshness,
    is_storable,
)
from enddel.compression import compress_page
from enddel.config import Config
from enddel.http.conditional import (
    if_none_match_matches,
    make_content_etag,
    recode_etag,
)
from enddel.http.negotiation import choose_encoding
from enddel.logs import cache_log, render_log
from enddel.pool import (
    PoolClosed,
    PoolOverloaded,
    RenderError,
    RenderFailed,
    RenderResult,
    RenderTimeout,
)
from enddel.template import PageTemplate, TemplateError, is_document

__all__ = ["Renderer", "SsrHandler", "request_url"]

#: How often a request polls the shared store while another server process
#: renders the page it needs. Short against a render (milliseconds), long
#: against a store lookup (microseconds).
_FOREIGN_RENDER_POLL = 0.005
#: Seconds an in-flight mark in shared memory stays valid past the render
#: deadline, should its owner die without releasing it.
_CLAIM_SLACK = 1.0
#: Seconds a client should wait before retrying when the render queue is full.
RETRY_AFTER_SECONDS = 1
_CODING_NAMES = {"br": "br", "gzip": "gzip"}


class Renderer(Protocol):
    """The render pool, as far as the handler uses it."""

    async def render(self, url: str, deadline: float) -> RenderResult: ...


@dataclass(eq=False)
class _Flight:
    """One render in progress in this process, and the requests waiting on it."""

    done: trio.Event = field(default_factory=trio.Event)
    entry: Entry | None = None
    error: RenderError | TemplateError | None = None


def request_url(request: Request) -> str:
    """Return the path and query exactly as the client sent them, for ``renderPage``."""
    raw_path = request.scope.get("raw_path")
    path = raw_path.decode("latin-1") if raw_path else request.path
    query = request.scope.get("query_string", b"")
    return f"{path}?{query.decode('latin-1')}" if query else path


class SsrHandler:
    """Serve rendered pages for one server process."""

    def __init__(
        self,
        config: Config,
        pool: Renderer,
        store: PageStore | None,
        template: PageTemplate,
        bundle_version: str,
        spawn: Callable[..., object],
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``spawn`` starts a task in the app's nursery; ``clock`` gives Unix time,
        which entries record because every server process must agree on it."""
        self._clock = clock
        self._config = config
        self._pool = pool
        self._store = store
        self._template = template
        self._bundle_version = bundle_version
        self._spawn = spawn
        self._flights: dict[bytes, _Flight] = {}
        #: Version before the last bundle reload, whose entries serve as stale.
        self._previous_version: str | None = None
        self._error_page: bytes | None = None
        if config.error_page is not None:
            self._error_page = config.error_page.read_bytes()

    async def respond(self, request: Request, arrived: float) -> Response:
        """Respond to a GET or HEAD that ``arrived`` at this trio time."""
        metrics.start_timing()
        url = request_url(request)
        deadline = arrived + self._config.render_timeout
        bypass = self._store is None or bypasses_cache(
            request.headers.getlist("Cookie"),
            "Authorization" in request.headers,
            self._config.cache_ignored_cookies,
        )
        key = cache_key(self._bundle_version, url)

        if bypass:
            return await self._render_uncached(request, url, key, deadline)

        entry = self._lookup(key)
        if entry is None and self._previous_version is not None:
            previous = self._lookup(cache_key(self._previous_version, url))
            if previous is not None:
                # Rendered by the bundle before the last reload: served as
                # stale while the new bundle renders the page.
                now = self._clock()
                if freshness(previous, now) is not Freshness.EXPIRED:
                    self._refresh_in_background(url, key, deadline)
                    return self._from_entry(request, previous, "STALE", now)
        metrics.mark_timing("cache")
        now = self._clock()
        state = Freshness.EXPIRED if entry is None else freshness(entry, now)
        if entry is not None and state is Freshness.FRESH:
            return self._from_entry(request, entry, "HIT", now)
        if entry is not None and state is Freshness.STALE:
            self._refresh_in_background(url, key, deadline)
            return self._from_entry(request, entry, "STALE", now)

        try:
            fresh = await self._render_shared(url, key, deadline)
        except (RenderError, TemplateError) as error:
            return self._failure(request, error, entry, now)
        return self._from_entry(request, fresh, "MISS", self._clock())

    def switch_bundle(self, version: str, *, keep_stale: bool) -> None:
        """Key new entries by ``version``, after a bundle reload.

        With ``keep_stale``, the previous version's entries are served as stale
        until the new bundle has rendered each page.
        """
        self._previous_version = self._bundle_version if keep_stale else None
        self._bundle_version = version

    async def warm(self, url: str) -> bool:
        """Render ``url`` into the page cache unless a fresh entry exists.

        Returns whether a render ran. Raises RenderError or TemplateError as a
        request would see them.
        """
        if self._store is None:
            return False
        key = cache_key(self._bundle_version, url)
        entry = self._lookup(key)
        if entry is not None and freshness(entry, self._clock()) is Freshness.FRESH:
            return False
        deadline = trio.current_time() + self._config.render_timeout
        await self._render_shared(url, key, deadline)
        return True

    # -- cache tiers ---------------------------------------------------------

    def _lookup(self, key: bytes) -> Entry | None:
        assert self._store is not None
        return self._store.get(key)

    async def _render_shared(self, url: str, key: bytes, deadline: float) -> Entry:
        """Render once per key however many requests and processes ask for it."""
        flight = self._flights.get(key)
        if flight is None:
            flight = _Flight()
            self._flights[key] = flight
            self._spawn(self._fly, flight, url, key, deadline)
        else:
            metrics.count_cache("coalesced")
        with trio.move_on_at(deadline + 0.5):
            await flight.done.wait()
        if not flight.done.is_set():
            raise RenderTimeout(f"render of {url} did not finish by its deadline")
        if flight.error is not None:
            raise flight.error
        assert flight.entry is not None
        return flight.entry

    async def _fly(
        self, flight: _Flight, url: str, key: bytes, deadline: float
    ) -> None:
        """Produce the entry for ``key``: wait for another process, or render."""
        try:
            flight.entry = await self._entry_for(url, key, deadline)
        except (RenderError, TemplateError) as error:
            flight.error = error
        except Exception as error:
            # This task runs in the app's nursery: an exception escaping it
            # would stop the server. The waiting requests get a 500 instead.
            render_log.exception("render task for %s failed", url)
            flight.error = RenderFailed(type(error).__name__, str(error))
        finally:
            del self._flights[key]
            flight.done.set()

    async def _entry_for(self, url: str, key: bytes, deadline: float) -> Entry:
        store = self._store
        assert store is not None
        lease = max(deadline - trio.current_time(), 0.0) + _CLAIM_SLACK
        while (token := store.claim(key, lease)) is None:
            # Another server process renders this page: wait for its entry.
            await trio.sleep(_FOREIGN_RENDER_POLL)
            entry = store.get(key)
            if entry is not None and freshness(entry, self._clock()) is Freshness.FRESH:
                return entry
            if trio.current_time() > deadline:
                raise RenderTimeout(f"render of {url} in another process timed out")
        try:
            result = await self._pool.render(url, deadline)
            entry = self._make_entry(_rendered_key(key, url, result), result)
            if entry.ttl > 0 or entry.stale_ttl > 0:
                self._store_entry(entry)
            return entry
        finally:
            store.release(key, token)

    def _refresh_in_background(self, url: str, key: bytes, deadline: float) -> None:
        """Start one render that replaces a stale entry, unless one is running."""
        if key in self._flights:
            return
        flight = _Flight()
        self._flights[key] = flight
        self._spawn(self._fly, flight, url, key, deadline)

    def _store_entry(self, entry: Entry) -> None:
        assert self._store is not None
        if not self._store.put(entry):
            cache_log.warning(
                "page of %d bytes does not fit the page cache (ENDDEL_CACHE_BYTES=%d)",
                len(entry.body), self._config.cache_bytes,
            )  # fmt: skip

    # -- rendering -------------------------------------------------------------

    async def _render_uncached(
        self, request: Request, url: str, key: bytes, deadline: float
    ) -> Response:
        try:
            entry = self._make_entry(key, await self._pool.render(url, deadline))
        except (RenderError, TemplateError) as error:
            return self._failure(request, error, None, self._clock())
        return self._from_entry(request, entry, "BYPASS", self._clock())

    def _make_entry(self, key: bytes, result: RenderResult) -> Entry:
        """Place, compress and tag a render result; cacheable or not."""
        if is_document(result.html):
            body = result.html
        else:
            body = self._template.page(result.html, result.head.encode())
        body_br, body_gzip = compress_page(body)
        storable = is_storable(result.status, result.headers, result.cache)
        ttl = self._config.cache_ttl if result.ttl is None else result.ttl
        return Entry(
            key=key,
            status=result.status,
            headers=result.headers,
            body=body,
            body_br=body_br,
            body_gzip=body_gzip,
            etag=make_content_etag(body),
            stored_at=self._clock(),
            ttl=ttl if storable else 0.0,
            stale_ttl=self._config.cache_stale if storable else 0.0,
        )

    # -- responses -------------------------------------------------------------

    def _from_entry(
        self, request: Request, entry: Entry, outcome: str, now: float
    ) -> Response:
        variants = {"identity": len(entry.body)}
        if entry.body_br is not None:
            variants["br"] = len(entry.body_br)
        if entry.body_gzip is not None:
            variants["gzip"] = len(entry.body_gzip)
        coding = choose_encoding(request.headers.get("Accept-Encoding"), variants)

        headers = list(entry.headers)
        if outcome != "BYPASS":
            # An entry serves many clients; a cookie set for one must not reach
            # the others, so only an unshared (BYPASS) render passes Set-Cookie.
            headers = [(n, v) for n, v in headers if n.lower() != "set-cookie"]
        if not any(name.lower() == "content-type" for name, _ in headers):
            headers.append(("Content-Type", "text/html; charset=utf-8"))
        headers.append(("Vary", "Accept-Encoding"))
        headers.append(("X-Cache", outcome))
        headers.append(("Server-Timing", metrics.server_timing()))
        metrics.count_cache(outcome.lower())
        if outcome in ("HIT", "STALE"):
            headers.append(("Age", str(age_seconds(entry, now))))
        if coding is None:
            return Response(_NOT_ACCEPTABLE, 406, Headers(_NOT_ACCEPTABLE_HEADERS))

        body = entry.body
        etag = entry.etag
        if coding != "identity":
            headers.append(("Content-Encoding", coding))
            variant = entry.body_br if coding == "br" else entry.body_gzip
            assert variant is not None  # choose_encoding offers only what exists
            body = variant
            etag = recode_etag(entry.etag, coding)
        headers.append(("ETag", etag))

        if if_none_match_matches(request.headers.get("If-None-Match"), etag):
            # RFC 9110 §15.4.5: a 304 carries the validators and Vary, no body.
            kept = [(n, v) for n, v in headers if n.lower() in _NOT_MODIFIED_FIELDS]
            return Response(b"", 304, Headers(kept))
        response = Response(body, entry.status, Headers(headers))
        if request.method == "HEAD":
            response.set_data(b"")
            response.headers["Content-Length"] = str(len(body))
        return response

    def _failure(
        self,
        request: Request,
        error: RenderError | TemplateError,
        stale: Entry | None,
        now: float,
    ) -> Response:
        """Serve a stale entry when there is one, else the error fallback."""
        if stale is not None and freshness(stale, now) is not Freshness.EXPIRED:
            cache_log.warning(
                "serving stale %s after render error: %s", request.path, error
            )
            return self._from_entry(request, stale, "STALE", now)
        if isinstance(error, PoolOverloaded):
            render_log.warning("rejected %s: %s", request_url(request), error)
            return self._fallback(503, [("Retry-After", str(RETRY_AFTER_SECONDS))])
        if isinstance(error, TemplateError):
            render_log.error("cannot place %s: %s", request_url(request), error)
        if isinstance(error, PoolClosed | RenderTimeout):
            render_log.error("no render for %s: %s", request_url(request), error)
            return self._fallback(503 if isinstance(error, PoolClosed) else 504, [])
        return self._fallback(500, [])

    def _fallback(self, status: int, extra: list[tuple[str, str]]) -> Response:
        """ENDDEL_ERROR_PAGE, or else the client build's index.html with an empty
        outlet, so the browser renders the page."""
        headers = [
            ("Content-Type", "text/html; charset=utf-8"),
            ("Cache-Control", "no-store"),
            ("X-Cache", "BYPASS"),
            *extra,
        ]
        body = self._template.shell() if self._error_page is None else self._error_page
        return Response(body, status, Headers(headers))


def _rendered_key(key: bytes, url: str, result: RenderResult) -> bytes:
    """The key to store a result under: that of the bundle that rendered it.

    A job queued just before a bundle reload may be rendered by the new bundle;
    its page belongs under the new version's key, not the old one it was asked
    for under.
    """
    if not result.bundle_version:
        return key
    return cache_key(result.bundle_version, url)


_NOT_ACCEPTABLE = b"Not Acceptable: the page is available as br, gzip or identity.\n"
_NOT_ACCEPTABLE_HEADERS = [
    ("Vary", "Accept-Encoding"),
    ("Content-Type", "text/plain; charset=utf-8"),
]
_NOT_MODIFIED_FIELDS = frozenset(
    {
        "etag",
        "vary",
        "cache-control",
        "content-location",
        "date",
        "expires",
        "x-cache",
        "age",
    }
)
