"""What the page cache stores, under which key, and how long it serves it.

Everything here is a pure function of its arguments (``now`` included), so the
rules are tested without a store, an event loop or a clock.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from http.cookies import CookieError, SimpleCookie
from typing import Protocol

__all__ = [
    "Freshness",
    "age_seconds",
    "bypasses_cache",
    "cache_key",
    "freshness",
    "is_storable",
]


class _Timed(Protocol):
    @property
    def stored_at(self) -> float: ...
    @property
    def ttl(self) -> float: ...
    @property
    def stale_ttl(self) -> float: ...


class Freshness(enum.Enum):
    FRESH = "fresh"
    #: Past its TTL, inside its stale window: served while one render refreshes it.
    STALE = "stale"
    EXPIRED = "expired"


def cache_key(bundle_version: str, url: str) -> bytes:
    """Key of the page that ``renderPage(url)`` returns with this bundle.

    Only the bundle version and the URL decide what is rendered: request
    headers such as Host never reach the bundle, so they are not in the key and
    a forged header cannot poison an entry.
    """
    return f"{bundle_version}\0{url}".encode()


def key_prefix(bundle_version: str, path_prefix: str) -> bytes:
    """Prefix shared by the keys of every URL under ``path_prefix``."""
    return f"{bundle_version}\0{path_prefix}".encode()


def bypasses_cache(
    cookie_headers: Iterable[str],
    has_authorization: bool,
    ignored_cookies: frozenset[str],
) -> bool:
    """Tell whether a request must neither read nor fill the page cache.

    A request with credentials may be personalised, so it bypasses the cache
    unless every cookie it sends is one of ``ignored_cookies``. A Cookie header
    that does not parse counts as credentials.
    """
    if has_authorization:
        return True
    for header in cookie_headers:
        cookie: SimpleCookie = SimpleCookie()
        try:
            cookie.load(header)
        except CookieError:
            return True
        if not cookie and header.strip():
            return True
        if any(name not in ignored_cookies for name in cookie):
            return True
    return False


def is_storable(
    status: int, headers: Iterable[tuple[str, str]], cache_requested: bool
) -> bool:
    """Tell whether a rendered response may be stored and shared with others."""
    if not cache_requested or status >= 500:
        return False
    return not any(name.lower() == "set-cookie" for name, _ in headers)


def freshness(entry: _Timed, now: float) -> Freshness:
    age = now - entry.stored_at
    if age < entry.ttl:
        return Freshness.FRESH
    if age < entry.ttl + entry.stale_ttl:
        return Freshness.STALE
    return Freshness.EXPIRED


def age_seconds(entry: _Timed, now: float) -> int:
    """Value of the Age header: whole seconds since the entry was stored."""
    return max(0, int(now - entry.stored_at))
