"""Entity tags and conditional requests (RFC 9110 §8.8 and §13), free of I/O.

:func:`evaluate_preconditions` applies the precondition fields in the order of
RFC 9110 §13.2.2 and returns the status that replaces the normal response, if
any. :func:`if_range_matches` decides whether a ``Range`` still applies. The
parsers are werkzeug's, which read malformed values leniently: a date that does
not parse counts as absent, and an unquoted entity tag is read as if quoted.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Protocol

import xxhash
from werkzeug.http import parse_date, parse_etags, unquote_etag

__all__ = [
    "HeaderLookup",
    "Validators",
    "evaluate_preconditions",
    "if_match_matches",
    "if_none_match_matches",
    "if_range_matches",
    "make_content_etag",
    "make_etag",
    "recode_etag",
]

#: Methods for which ``If-None-Match`` and ``If-Modified-Since`` give 304
#: rather than 412 (RFC 9110 §13.1.2, §13.1.3).
_SAFE_READS = frozenset({"GET", "HEAD"})


class HeaderLookup(Protocol):
    """Request headers looked up by case-insensitive name, like Quart's."""

    def get(self, key: str) -> str | None: ...


@dataclasses.dataclass(frozen=True, slots=True)
class Validators:
    """The validators of the selected representation."""

    #: Strong entity tag, quoted, as sent in the ``ETag`` field.
    etag: str
    #: Modification time, timezone-aware, as sent in ``Last-Modified``
    #: (whole seconds); ``None`` when the representation has none.
    last_modified: datetime | None = None


def make_etag(mtime_ns: int, size: int, coding: str) -> str:
    """Build a strong entity tag for a file from its mtime, size and coding.

    The tag changes when the file is rewritten (mtime in nanoseconds), resized,
    or sent in another content coding, so each precompressed variant has its
    own tag, as RFC 9110 §8.8.3.3 requires for strong validators. Servers that
    share the same files and mtimes produce the same tags. The inode is left
    out for that reason.
    """
    return f'"{mtime_ns:x}-{size:x}-{coding.lower()}"'


def make_content_etag(body: bytes, coding: str = "identity") -> str:
    """Build a strong entity tag from a body's bytes and its content coding.

    For generated responses. Pass the identity body and the coding it is sent
    in: the tag then stays the same however often the body is compressed, yet
    differs between codings. xxh3 is not cryptographic. It only has to make
    accidental collisions between versions of one resource unlikely.
    """
    return f'"{xxhash.xxh3_64_hexdigest(body)}-{coding.lower()}"'


def recode_etag(etag: str, coding: str) -> str:
    """Turn the tag of a body's identity form into the tag of its ``coding`` form.

    ``etag`` must come from :func:`make_content_etag` with the identity coding.
    """
    return etag.removesuffix('-identity"') + f'-{coding.lower()}"'


def if_none_match_matches(header: str | None, etag: str) -> bool:
    """Return whether an ``If-None-Match`` value matches ``etag``.

    Uses the weak comparison of RFC 9110 §8.8.3.2: ``W/"x"`` matches ``"x"``.
    ``*`` matches any current representation. ``None`` (no field) and an empty
    value match nothing.
    """
    if header is None:
        return False
    opaque, _weak = unquote_etag(etag)
    return parse_etags(header.strip()).contains_weak(opaque)


def if_match_matches(header: str, etag: str) -> bool:
    """Return whether an ``If-Match`` value matches ``etag``.

    Uses the strong comparison of RFC 9110 §13.1.1: a weak tag in the field, or
    a weak ``etag``, never matches. ``*`` matches any current representation.
    """
    opaque, weak = unquote_etag(etag)
    tags = parse_etags(header.strip())
    if tags.star_tag:
        return True
    return not weak and tags.is_strong(opaque)


def if_range_matches(header: str | None, validators: Validators) -> bool:
    """Return whether a ``Range`` still applies under ``If-Range``.

    RFC 9110 §13.1.5: true without the field; an entity tag must match the
    current one by strong comparison; a date must equal ``Last-Modified``
    exactly. A value that is neither (or a weak tag) is false, so the client
    receives the whole representation, as §13.1.5 requires for a false
    condition.
    """
    if header is None:
        return True
    value = header.strip()
    if value.startswith(('"', "W/", "w/")):
        tag, weak = unquote_etag(value)
        current, current_weak = unquote_etag(validators.etag)
        return not weak and not current_weak and tag == current
    date = parse_date(value)
    if date is None or validators.last_modified is None:
        return False
    return date == validators.last_modified


def evaluate_preconditions(
    method: str, headers: HeaderLookup, validators: Validators
) -> int | None:
    """Return 304 or 412 when a precondition field requires it, else ``None``.

    ``headers`` is Quart's ``request.headers`` or a dict with the names
    spelled as below. The steps and their order are those of RFC 9110
    §13.2.2. ``If-Range`` is left to :func:`if_range_matches`, because it
    never changes the status on its own.
    """
    # §13.2.2 step 1: If-Match, strong comparison; false gives 412.
    if_match = headers.get("If-Match")
    if if_match is not None:
        if not if_match_matches(if_match, validators.etag):
            return 412
    # §13.2.2 step 2: If-Unmodified-Since only without If-Match (§13.1.4).
    elif _modified_since(headers.get("If-Unmodified-Since"), validators) is True:
        return 412

    # §13.2.2 step 3: If-None-Match, weak comparison; a match gives 304 for
    # GET and HEAD and 412 for other methods (§13.1.2).
    if_none_match = headers.get("If-None-Match")
    if if_none_match is not None:
        if if_none_match_matches(if_none_match, validators.etag):
            return 304 if method in _SAFE_READS else 412
    # §13.2.2 step 4: If-Modified-Since only without If-None-Match, and only
    # for GET and HEAD (§13.1.3).
    elif method in _SAFE_READS:
        if _modified_since(headers.get("If-Modified-Since"), validators) is False:
            return 304
    return None


def _modified_since(header: str | None, validators: Validators) -> bool | None:
    """Compare ``Last-Modified`` with a date field; ``None`` if it cannot apply.

    RFC 9110 §13.1.3 and §13.1.4: a field that is not a valid HTTP-date is
    ignored, and so is any date when the representation has no modification
    time. ``Last-Modified`` has whole seconds, so the comparison does too.
    """
    date = parse_date(header) if header is not None else None
    if date is None or validators.last_modified is None:
        return None
    return validators.last_modified > date
