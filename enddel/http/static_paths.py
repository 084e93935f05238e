"""Rules for static file names, free of I/O: safe paths, types, cache policy.

Security note. hypercorn percent-decodes the request target once, as UTF-8
with replacement characters, before the app receives it: ``request.path`` is that
decoded form and ``scope["raw_path"]`` the bytes on the wire. The decoded form
is what is validated here, because it is the form that names the file. It is
decoded exactly once and never again, so ``%252e`` arrives as the three
characters ``%2e`` and cannot become a dot. :func:`safe_segments` still rejects
any ``%`` that is left, so that a file name never depends on how many times
some proxy in front decoded the URL. Everything that could climb out of the
client folder or name a hidden file is rejected before any file system call:
``.`` and ``..`` segments (also when they were sent as ``%2e%2e``), a slash
sent as ``%2f`` (it is a slash by now), backslashes, NUL and other control
characters, invalid UTF-8 such as the overlong ``%c0%ae`` (decoded to U+FFFD),
dotfiles, empty segments, and targets that do not start with ``/`` (the
absolute form ``http://host/../x``). Symbolic links are handled by the opener
in :mod:`enddel.http.static`, which follows none.
"""

from __future__ import annotations

import mimetypes
import re

__all__ = [
    "IMMUTABLE",
    "REVALIDATE",
    "cache_control_for",
    "content_type_for",
    "is_content_hashed",
    "safe_segments",
]

#: ``Cache-Control`` for names that carry a content hash: the URL changes
#: whenever the bytes do, so a year (the customary maximum) is safe.
IMMUTABLE = "public, max-age=31536000, immutable"
#: ``Cache-Control`` for every other file: store, but revalidate each use.
REVALIDATE = "no-cache"

#: Characters that never appear in a served name after decoding: the
#: replacement character marks invalid UTF-8, ``%`` a second encoding layer.
_REJECTED_CHARACTERS = re.compile(r"[\x00-\x1f\x7f\\%\ufffd]")

#: Vite and Rollup name assets ``[name]-[hash].[ext]``, the hash being 8 (by
#: default) or more base64url characters. Because the hash may itself contain
#: ``-`` or ``_``, the longest name part that still leaves 8 or more hash
#: characters before the extension is taken as the name.
_HASHED_STEM = re.compile(r"(?P<name>.+)-(?P<hash>[A-Za-z0-9_-]{8,})")

#: Content types that the standard library lacks or gets wrong for the web.
#: JavaScript is ``text/javascript`` by RFC 9239.
_CONTENT_TYPES = {
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".css": "text/css",
    ".html": "text/html",
    ".json": "application/json",
    ".map": "application/json",
    ".webmanifest": "application/manifest+json",
    ".svg": "image/svg+xml",
    ".wasm": "application/wasm",
    ".woff": "font/woff",
    ".woff2": "font/woff2",
    ".ttf": "font/ttf",
    ".otf": "font/otf",
    ".webp": "image/webp",
    ".avif": "image/avif",
    ".ico": "image/x-icon",
    ".txt": "text/plain",
    ".xml": "application/xml",
    ".gz": "application/gzip",
}

#: Types that carry text; the client build is UTF-8 (as Vite writes it), so
#: they are labelled with that charset.
_TEXT_TYPES = frozenset(
    {
        "text/javascript",
        "application/json",
        "application/manifest+json",
        "application/xml",
        "image/svg+xml",
    }
)

#: The standard library's built-in table only: ``mimetypes.MimeTypes()`` does
#: not read ``/etc/mime.types``, so types do not change from machine to machine.
_FALLBACK_TYPES = mimetypes.MimeTypes()


def safe_segments(path: str) -> list[str] | None:
    """Split a decoded request path into file name segments, or ``None``.

    ``None`` means that the path cannot name a static file (see the module's
    security note), so the request falls through to SSR. A path with a
    trailing slash is a directory and returns ``None``, because directories
    are never listed.
    """
    if not path.startswith("/") or _REJECTED_CHARACTERS.search(path):
        return None
    segments = path[1:].split("/")
    for segment in segments:
        # Rejects "", ".", ".." and every dotfile or dot-folder in one test.
        if not segment or segment.startswith("."):
            return None
    return segments


def is_content_hashed(name: str) -> bool:
    """Return whether a file name carries a content hash, Vite style.

    The rule: after removing the last extension, the name ends with ``-`` and
    8 or more base64url characters (``index-BjYNXa3D.js``), and those
    characters include a digit or an uppercase letter. The last condition
    keeps ordinary words out (``my-component.js``, ``fonts-regular.css``): a
    random 8-character hash lacks both with a chance of about 1 in 1,000, and
    such a file only loses the long cache lifetime. A name in mixed case such
    as ``lib-Polyfills.js`` is still taken for hashed. Don't name unhashed
    files that way.
    """
    stem, dot, _extension = name.rpartition(".")
    if not dot:
        return False
    match = _HASHED_STEM.fullmatch(stem)
    if match is None:
        return False
    digest = match["hash"]
    return any(c.isdigit() or c.isupper() for c in digest)


def cache_control_for(name: str) -> str:
    """Return the ``Cache-Control`` value for a file served under ``name``."""
    return IMMUTABLE if is_content_hashed(name) else REVALIDATE


def content_type_for(name: str) -> str:
    """Return the ``Content-Type`` for a file name, with a charset for text."""
    _stem, dot, extension = name.lower().rpartition(".")
    suffix = dot + extension if dot else ""
    content_type = _CONTENT_TYPES.get(suffix) or _standard_type(suffix)
    if content_type.startswith("text/") or content_type in _TEXT_TYPES:
        return f"{content_type}; charset=utf-8"
    return content_type


def _standard_type(suffix: str) -> str:
    strict, loose = _FALLBACK_TYPES.types_map[True], _FALLBACK_TYPES.types_map[False]
    return strict.get(suffix) or loose.get(suffix) or "application/octet-stream"
