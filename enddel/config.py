"""Configuration from ``ENDDEL_*`` environment variables, checked at start-up.

Every setting has a default and a parser. A value that does not parse stops
start-up with a :class:`ConfigError` that names the variable, the value and
what it accepts, so a typo never turns into a server that serves 500s forever.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

__all__ = ["DEMO_DIR", "Config", "ConfigError"]

T = TypeVar("T")

#: The demo Preact shop in this repository: the embedded default app.
DEMO_DIR = Path(__file__).resolve().parent.parent / "demo"
DEMO_BUILD_COMMAND = "npm ci --prefix demo && npm run build --prefix demo"

KIB = 1024
MIB = 1024 * KIB
SECONDS = 1.0


class ConfigError(Exception):
    """A setting is missing or invalid; the message names the variable and the fix."""


@dataclasses.dataclass(frozen=True, slots=True)
class Config:
    """Settings of one enddel server. Units are in the field names or comments."""

    #: Server bundle: one script that defines ``globalThis.renderPage(url)``.
    bundle: Path
    #: Client build folder holding ``index.html`` and the hashed assets.
    client_dir: Path
    #: Optional script evaluated before the bundle, for app-specific globals.
    bundle_prelude: Path | None
    #: Render workers per server process.
    render_workers: int
    #: Render jobs that may wait for a worker per server process; a request that
    #: finds the queue full gets 503 with ``Retry-After``.
    render_queue: int
    #: Seconds from a request's arrival until its render is abandoned.
    render_timeout: float
    #: V8 heap limit per render worker, in bytes.
    v8_heap_bytes: int
    #: Origin (scheme, host, port) of the public site, used for ``location``.
    public_origin: str
    #: Base URL that ``/api/*`` is forwarded to.
    api_upstream: str
    #: Hosts that ``fetch`` inside a render may reach besides the upstream.
    fetch_allowed_hosts: frozenset[str]
    proxy_connect_timeout: float
    proxy_read_timeout: float
    #: Largest request body the proxy forwards, in bytes; larger gets 413.
    proxy_max_body_bytes: int
    #: Size of the shared-memory page cache segment, in bytes; 0 disables it.
    cache_bytes: int
    #: Seconds a stored page is fresh unless ``renderPage`` sets its own TTL.
    cache_ttl: float
    #: Seconds past freshness during which a stale page is served while refreshed.
    cache_stale: float
    #: Fixed segment name, so the cache persists across server restarts.
    cache_name: str | None
    #: Cookie names that do not make a request bypass the page cache.
    cache_ignored_cookies: frozenset[str]
    #: Bearer token for the admin endpoints; ``None`` disables them.
    admin_token: str | None = dataclasses.field(repr=False)
    #: Renders after which a render worker is replaced; 0 never replaces it.
    worker_max_renders: int = 0
    #: V8 heap size in bytes above which a render worker is replaced after its
    #: render; 0 never replaces it.
    worker_max_heap_bytes: int = 0
    #: HTML file served (status 500, 503 or 504) when a render fails and no
    #: stale page exists; ``None`` serves index.html with an empty outlet.
    error_page: Path | None = None
    #: Watch the bundle file and reload it when it changes.
    watch_bundle: bool = False
    #: URLs rendered into the page cache at start and after each reload.
    warm_urls: tuple[str, ...] = ()
    #: On reload, keep the old bundle's entries as stale (True) or purge them.
    reload_keep_stale: bool = True

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Config:
        """Read and check every setting, raising ConfigError on the first bad one."""
        env = Settings(os.environ if environ is None else environ)
        demo_build = DEMO_DIR / "dist"
        return cls(
            bundle=env.get("ENDDEL_BUNDLE", demo_build / "server" / "bundle.js", _path),
            client_dir=env.get("ENDDEL_CLIENT_DIR", demo_build / "client", _path),
            bundle_prelude=env.get("ENDDEL_BUNDLE_PRELUDE", None, _path),
            render_workers=env.get("ENDDEL_RENDER_WORKERS", 2, _int_in(1, 64)),
            render_queue=env.get("ENDDEL_RENDER_QUEUE", 256, _int_in(1, 100_000)),
            render_timeout=env.get("ENDDEL_RENDER_TIMEOUT", 5 * SECONDS, _positive),
            v8_heap_bytes=env.get("ENDDEL_V8_HEAP_MB", 512, _int_in(16, 16 * KIB))
            * MIB,
            public_origin=env.get(
                "ENDDEL_PUBLIC_ORIGIN", "http://localhost:8000", _origin
            ),
            api_upstream=env.get(
                "ENDDEL_API_UPSTREAM", "https://enddel.com/api", _http_url
            ),
            fetch_allowed_hosts=env.get(
                "ENDDEL_FETCH_ALLOWED_HOSTS", frozenset(), _name_set
            ),
            proxy_connect_timeout=env.get(
                "ENDDEL_PROXY_CONNECT_TIMEOUT", 5 * SECONDS, _positive
            ),
            proxy_read_timeout=env.get(
                "ENDDEL_PROXY_READ_TIMEOUT", 30 * SECONDS, _positive
            ),
            proxy_max_body_bytes=env.get(
                "ENDDEL_PROXY_MAX_BODY", 10 * MIB, _int_in(0, 2**40)
            ),
            cache_bytes=env.get("ENDDEL_CACHE_BYTES", 64 * MIB, _int_in(0, 2**40)),
            cache_ttl=env.get("ENDDEL_CACHE_TTL", 60 * SECONDS, _non_negative),
            cache_stale=env.get("ENDDEL_CACHE_STALE", 300 * SECONDS, _non_negative),
            cache_name=env.get("ENDDEL_CACHE_NAME", None, _segment_name),
            cache_ignored_cookies=env.get(
                "ENDDEL_CACHE_IGNORED_COOKIES", frozenset(), _name_set
            ),
            admin_token=env.get("ENDDEL_ADMIN_TOKEN", None, _secret, secret=True),
            worker_max_renders=env.get(
                "ENDDEL_WORKER_MAX_RENDERS", 0, _int_in(0, 2**40)
            ),
            worker_max_heap_bytes=env.get(
                "ENDDEL_WORKER_MAX_HEAP_MB", 0, _int_in(0, 16 * KIB)
            )
            * MIB,
            error_page=env.get("ENDDEL_ERROR_PAGE", None, _path),
            watch_bundle=env.get("ENDDEL_WATCH", False, _flag),
            warm_urls=env.get("ENDDEL_WARM_URLS", (), _url_list),
            reload_keep_stale=env.get("ENDDEL_RELOAD_STALE", True, _flag),
        )

    def check_files(self) -> None:
        """Raise ConfigError unless the bundle and the client build can be read."""
        if not self.bundle.is_file():
            hint = (
                f" Build the demo with: {DEMO_BUILD_COMMAND}"
                if self.bundle.is_relative_to(DEMO_DIR)
                else " Point ENDDEL_BUNDLE at your server build's output file."
            )
            raise ConfigError(
                f"ENDDEL_BUNDLE={str(self.bundle)!r}: no such file.{hint}"
            )
        index = self.client_dir / "index.html"
        if not index.is_file():
            raise ConfigError(
                f"ENDDEL_CLIENT_DIR={str(self.client_dir)!r}: "
                f"{str(index)!r} not found. Point ENDDEL_CLIENT_DIR at the folder "
                "that your client build writes index.html to."
            )
        if self.error_page is not None and not self.error_page.is_file():
            raise ConfigError(
                f"ENDDEL_ERROR_PAGE={str(self.error_page)!r}: no such file. Point "
                "it at an HTML file, or unset it to serve index.html on errors."
            )
        if self.bundle_prelude is not None and not self.bundle_prelude.is_file():
            raise ConfigError(
                f"ENDDEL_BUNDLE_PRELUDE={str(self.bundle_prelude)!r}: no such file."
            )


class Settings:
    """Typed reads of environment variables that fail with the variable's name."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def get(
        self, name: str, default: T, parse: Callable[[str], T], *, secret: bool = False
    ) -> T:
        raw = self._environ.get(name)
        if raw is None or raw.strip() == "":
            return default
        try:
            return parse(raw.strip())
        except ValueError as error:
            shown = "(hidden)" if secret else repr(raw)
            raise ConfigError(f"{name}={shown} is invalid: {error}.") from None


def _path(raw: str) -> Path:
    return Path(raw).expanduser().resolve()


def _int_in(low: int, high: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise ValueError(f"expected a whole number from {low} to {high}") from None
        if not low <= value <= high:
            raise ValueError(f"expected a whole number from {low} to {high}")
        return value

    return parse


def _float(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError("expected a number of seconds, such as 2.5") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError("expected a finite number of seconds")
    return value


def _positive(raw: str) -> float:
    value = _float(raw)
    if value <= 0:
        raise ValueError("expected a number of seconds greater than 0")
    return value


def _non_negative(raw: str) -> float:
    value = _float(raw)
    if value < 0:
        raise ValueError("expected a number of seconds, 0 or more")
    return value


def _http_url(raw: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("expected an http:// or https:// URL with a host")
    if parts.query or parts.fragment:
        raise ValueError("expected a base URL without a query or fragment")
    return raw.rstrip("/")


def _origin(raw: str) -> str:
    url = _http_url(raw)
    if urlsplit(url).path:
        raise ValueError("expected an origin such as https://shop.example, no path")
    return url


def _name_set(raw: str) -> frozenset[str]:
    return frozenset(name.strip() for name in raw.split(",") if name.strip())


def _segment_name(raw: str) -> str:
    if not raw.replace("-", "").replace("_", "").isalnum() or len(raw) > 200:
        raise ValueError("expected letters, digits, '-' and '_' only")
    return raw


def _flag(raw: str) -> bool:
    value = raw.lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected 1, true, yes or on, or 0, false, no or off")


def _url_list(raw: str) -> tuple[str, ...]:
    urls = tuple(url.strip() for url in raw.split(",") if url.strip())
    for url in urls:
        if not url.startswith("/") or url.startswith("//"):
            raise ValueError(f"expected paths such as /,/about; {url!r} is not one")
    return urls


def _secret(raw: str) -> str:
    if len(raw) < 16:
        raise ValueError("expected at least 16 characters")
    return raw
