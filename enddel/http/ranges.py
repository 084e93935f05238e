"""Byte range requests (RFC 9110 §14), free of I/O.

:func:`resolve_ranges` turns a ``Range`` value and a representation length into
the byte ranges to send; :class:`MultipartLayout` computes the parts of a
``multipart/byteranges`` body, so that a handler can send ``Content-Length``
before it streams the file.

werkzeug's ``parse_range_header`` is not used: it rejects a valid range set
whose ranges overlap or come out of order (``bytes=500-600,0-99``), which
RFC 9110 §14.1.1 allows. The grammar is short enough to read here.

Several ranges get a ``multipart/byteranges`` response, as nginx sends. To
bound the work a single request can ask for (RFC 9110 §14.2 warns about many
small or overlapping ranges), ranges that overlap or lie close together are
coalesced, and a set of more than :data:`MAX_RANGES` ranges is ignored, which
sends the whole representation.
"""

from __future__ import annotations

import dataclasses
import re

__all__ = [
    "MAX_RANGES",
    "ByteRange",
    "MultipartLayout",
    "resolve_ranges",
    "unsatisfied_content_range",
]

#: Maximum ranges honoured in one request, an estimate with a wide margin:
#: media players send one range and PDF viewers a few. A larger set is
#: ignored, and the whole body is sent.
MAX_RANGES = 64

#: Ranges this close together (bytes) are merged into one part. This is about
#: the size of a part's own headers, so a merge costs about what it saves.
COALESCE_GAP_BYTES = 80

#: ``int-range`` or ``suffix-range`` of RFC 9110 §14.1.1, digits only.
_RANGE_SPEC = re.compile(r"([0-9]*)-([0-9]*)")

#: ``range-unit`` token of RFC 9110 §14.1.
_UNIT = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


@dataclasses.dataclass(frozen=True, slots=True)
class ByteRange:
    """A satisfiable range: ``start`` inclusive, ``stop`` exclusive, in bytes."""

    start: int
    stop: int

    @property
    def size(self) -> int:
        return self.stop - self.start

    def content_range(self, length: int) -> str:
        """Format the ``Content-Range`` value for this range (RFC 9110 §14.4)."""
        return f"bytes {self.start}-{self.stop - 1}/{length}"


def unsatisfied_content_range(length: int) -> str:
    """Format the ``Content-Range`` of a 416 response (RFC 9110 §14.4)."""
    return f"bytes */{length}"


def resolve_ranges(header: str | None, length: int) -> tuple[ByteRange, ...] | None:
    """Return the ranges to send for ``header`` on a body of ``length`` bytes.

    - ``None``: send the whole representation (200). This is the result for no
      field, a unit other than ``bytes``, a malformed value, more than
      :data:`MAX_RANGES` ranges, and a suffix range on an empty body (which is
      satisfiable by RFC 9110 §14.1.2 but selects zero bytes).
    - ``()``: no range overlaps the body, so the response is 416.
    - Otherwise the satisfiable ranges, sorted, with overlapping and nearby
      ranges coalesced (RFC 9110 §14.2 allows both). Unsatisfiable ranges in a
      set that has a satisfiable one are dropped.
    """
    specs = _parse(header) if header is not None else None
    if specs is None or len(specs) > MAX_RANGES:
        return None

    resolved = [_resolve(first, last, length) for first, last in specs]
    if length == 0 and any(first is None for first, _last in specs):
        return None
    return _coalesce([r for r in resolved if r is not None])


def _parse(header: str) -> list[tuple[int | None, int | None]] | None:
    unit, equals, range_set = header.partition("=")
    unit = unit.strip()
    if not equals or not _UNIT.fullmatch(unit) or unit.lower() != "bytes":
        return None

    specs: list[tuple[int | None, int | None]] = []
    for element in range_set.split(","):
        element = element.strip(" \t")
        if not element:
            continue  # empty list elements are allowed (RFC 9110 §5.6.1)
        match = _RANGE_SPEC.fullmatch(element)
        if match is None or match.group(0) == "-":
            return None
        first = int(match[1]) if match[1] else None
        last = int(match[2]) if match[2] else None
        # RFC 9110 §14.1.1: a last-pos below first-pos makes the spec invalid.
        if first is not None and last is not None and last < first:
            return None
        specs.append((first, last))
    return specs or None


def _resolve(first: int | None, last: int | None, length: int) -> ByteRange | None:
    if first is None:
        # Suffix range: the final `last` bytes, or all of a shorter body;
        # "-0" selects nothing and is unsatisfiable (RFC 9110 §14.1.2).
        suffix = last if last is not None else 0
        if suffix == 0 or length == 0:
            return None
        return ByteRange(max(0, length - suffix), length)
    if first >= length:
        return None
    stop = length if last is None else min(last + 1, length)
    return ByteRange(first, stop)


def _coalesce(ranges: list[ByteRange]) -> tuple[ByteRange, ...]:
    merged: list[ByteRange] = []
    for current in sorted(ranges, key=lambda r: r.start):
        if merged and current.start <= merged[-1].stop + COALESCE_GAP_BYTES:
            previous = merged.pop()
            current = ByteRange(previous.start, max(previous.stop, current.stop))
        merged.append(current)
    return tuple(merged)


@dataclasses.dataclass(frozen=True, slots=True)
class MultipartLayout:
    """The framing of a ``multipart/byteranges`` body (RFC 9110 §14.6).

    Each part is its header block followed by the bytes of its range, then
    CRLF; :attr:`closing` ends the body. :attr:`content_length` counts it all.
    """

    boundary: str
    parts: tuple[tuple[bytes, ByteRange], ...]
    closing: bytes

    @classmethod
    def build(
        cls,
        ranges: tuple[ByteRange, ...],
        length: int,
        content_type: str,
        boundary: str,
    ) -> MultipartLayout:
        parts = tuple(
            (
                (
                    f"--{boundary}\r\n"
                    f"Content-Type: {content_type}\r\n"
                    f"Content-Range: {byte_range.content_range(length)}\r\n\r\n"
                ).encode("latin-1"),
                byte_range,
            )
            for byte_range in ranges
        )
        return cls(boundary, parts, f"--{boundary}--\r\n".encode("latin-1"))

    @property
    def content_type(self) -> str:
        return f"multipart/byteranges; boundary={self.boundary}"

    @property
    def content_length(self) -> int:
        part_bytes = sum(len(head) + r.size + len(b"\r\n") for head, r in self.parts)
        return part_bytes + len(self.closing)
