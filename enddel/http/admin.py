"""Admin endpoints: ``POST /_enddel/purge`` removes pages from the page cache.

The endpoints exist only when ``ENDDEL_ADMIN_TOKEN`` is set, and every call
must carry it as ``Authorization: Bearer <token>``. A purge acts on the shared
segment, so it takes effect in every server process at once.

The request body is JSON with exactly one of:

- ``{"url": "/products?page=2"}``: one page, by its path and query;
- ``{"prefix": "/products/"}``: every page whose URL starts with the prefix;
- ``{"all": true}``: every page.

The response is ``{"purged": N}``, the number of entries removed.
"""

from __future__ import annotations

import hmac
import json
from typing import Any

from quart import Request, Response
from werkzeug.datastructures import Headers

from enddel.cache import PageStore
from enddel.cache.policy import cache_key, key_prefix
from enddel.logs import cache_log

__all__ = ["PURGE_PATH", "AdminEndpoints"]

PURGE_PATH = "/_enddel/purge"
#: A purge request is a few hundred bytes; anything far larger is not one.
_MAX_BODY_BYTES = 64 * 1024


class AdminEndpoints:
    """Token-protected cache administration for one server process."""

    def __init__(
        self, token: str | None, store: PageStore | None, bundle_version: str
    ) -> None:
        self._token = token
        self._store = store
        self._bundle_version = bundle_version

    def switch_bundle(self, version: str) -> None:
        """Purge the pages of ``version`` from now on, after a bundle reload."""
        self._bundle_version = version

    @property
    def enabled(self) -> bool:
        return self._token is not None

    async def purge(self, request: Request) -> Response:
        if self._token is None:
            return _error(404, "Not Found")
        if not self._authorized(request.headers.get("Authorization", "")):
            return _error(401, "a valid Authorization: Bearer token is required",
                          [("WWW-Authenticate", 'Bearer realm="enddel"')])  # fmt: skip
        if self._store is None:
            return _error(409, "the page cache is off (ENDDEL_CACHE_BYTES=0)")

        body = await request.get_data(cache=False, as_text=False)
        assert isinstance(body, bytes)  # as_text=False
        if len(body) > _MAX_BODY_BYTES:
            return _error(413, f"purge request body over {_MAX_BODY_BYTES} bytes")
        try:
            target = _parse_target(body)
        except ValueError as invalid:
            return _error(400, str(invalid))

        purged = self._apply(*target)
        cache_log.info(
            "purged %d entries (%s=%r) from %s", purged, *target, request.remote_addr
        )
        return Response(
            json.dumps({"purged": purged}), 200, {"Content-Type": "application/json"}
        )

    def _authorized(self, header: str) -> bool:
        assert self._token is not None
        scheme, _, credentials = header.partition(" ")
        # compare_digest: the time taken must not reveal how much of a guess matched.
        return scheme.lower() == "bearer" and hmac.compare_digest(
            credentials.strip().encode(), self._token.encode()
        )

    def _apply(self, kind: str, value: Any) -> int:
        assert self._store is not None
        if kind == "url":
            return int(self._store.purge(cache_key(self._bundle_version, value)))
        if kind == "prefix":
            return self._store.purge_prefix(key_prefix(self._bundle_version, value))
        return self._store.purge_all()


def _parse_target(body: bytes) -> tuple[str, Any]:
    """Return ("url", str), ("prefix", str) or ("all", True); raise ValueError."""
    try:
        data = json.loads(body)
    except ValueError:
        raise ValueError('body must be JSON such as {"url": "/path"}') from None
    if not isinstance(data, dict) or len(data) != 1:
        raise ValueError('body must have exactly one of "url", "prefix" or "all"')
    ((kind, value),) = data.items()
    if kind in ("url", "prefix"):
        if not isinstance(value, str) or not value.startswith("/"):
            raise ValueError(
                f'"{kind}" must be a path starting with "/", not {value!r}'
            )
        return kind, value
    if kind == "all" and value is True:
        return kind, value
    raise ValueError(
        f'unknown purge target {kind!r}; use "url", "prefix" or "all": true'
    )


def _error(
    status: int, message: str, headers: list[tuple[str, str]] | None = None
) -> Response:
    body = json.dumps({"error": message})
    fields = Headers([("Content-Type", "application/json"), *(headers or [])])
    return Response(body, status, fields)
