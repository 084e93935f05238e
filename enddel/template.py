"""The client build's ``index.html`` as the frame that rendered fragments go into.

Vite and esbuild client builds leave two comments in ``index.html`` for SSR:
``<!--ssr-outlet-->`` where the app's markup goes, and ``<!--ssr-head-->``
where per-page head tags go. The template is split at those comments once, at
start-up, so that placing a page costs one ``bytes.join``.
"""

from __future__ import annotations

import re

__all__ = ["HEAD_MARK", "OUTLET_MARK", "PageTemplate", "TemplateError", "is_document"]

OUTLET_MARK = b"<!--ssr-outlet-->"
HEAD_MARK = b"<!--ssr-head-->"
_HEAD_CLOSE = re.compile(rb"</head\s*>", re.IGNORECASE)
# A result that starts like this is a whole document and is served as it is.
_DOCUMENT_START = re.compile(
    rb"\A(?:\xef\xbb\xbf)?\s*(?:<!doctype\b|<html\b)", re.IGNORECASE
)


class TemplateError(Exception):
    """The template cannot hold a rendered fragment."""


def is_document(html: bytes) -> bool:
    """Tell whether ``html`` is a whole document rather than a fragment."""
    return _DOCUMENT_START.match(html) is not None


class PageTemplate:
    """``index.html`` split around its outlet and head comments."""

    def __init__(self, index_html: bytes, source: str) -> None:
        self.source = source
        self._before_head, self._before_outlet, self._after_outlet = _split(index_html)

    @property
    def has_outlet(self) -> bool:
        return self._after_outlet is not None

    def page(self, fragment: bytes, head: bytes = b"") -> bytes:
        """Place a rendered fragment, and head tags, into the template."""
        if self._after_outlet is None:
            raise TemplateError(
                f"{self.source} has no {OUTLET_MARK.decode()} comment, so a fragment "
                "returned by renderPage has nowhere to go. Add the comment inside "
                "the app's root element, or return a whole document."
            )
        return b"".join(
            (self._before_head, head, self._before_outlet, fragment, self._after_outlet)
        )

    def shell(self) -> bytes:
        """The template with an empty outlet, for the browser to render the page."""
        if self._after_outlet is None:
            return self._before_head + self._before_outlet
        return self.page(b"")


def _split(index_html: bytes) -> tuple[bytes, bytes, bytes | None]:
    """Split into (up to head mark, up to outlet, after outlet); marks removed."""
    if HEAD_MARK in index_html:
        before_head, rest = index_html.split(HEAD_MARK, 1)
    else:
        # Without a head mark, head tags go just before </head>, or nowhere.
        match = _HEAD_CLOSE.search(index_html)
        cut = match.start() if match else 0
        before_head, rest = index_html[:cut], index_html[cut:]

    if OUTLET_MARK not in rest:
        if OUTLET_MARK in before_head:
            raise TemplateError("<!--ssr-outlet--> must come after <!--ssr-head-->")
        return before_head, rest, None
    before_outlet, after_outlet = rest.split(OUTLET_MARK, 1)
    return before_head, before_outlet, after_outlet
