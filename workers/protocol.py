"""Frames exchanged between the render pool and a render worker.

A frame is a fixed header followed by a JSON metadata object and a raw body::

    u32 length of everything after this field
    u8  kind (Kind)
    u64 job id (0 for frames that belong to no job)
    u32 metadata length in bytes
    ... metadata: a UTF-8 JSON object
    ... body: raw bytes (the rendered HTML, UTF-8), possibly empty

All integers are little-endian. Rendered pages are the large part of the
traffic (tens of kilobytes each), so they travel as raw bytes beside a small
JSON header. Inside JSON, both sides would escape and unescape every byte:
``perf/bench_wire.py`` measured the frame 2 to 3 times cheaper than JSON and
about 2 times cheaper than pickle for a 44 KB page. The module does no I/O,
so both sides and the tests share it.
"""

from __future__ import annotations

import enum
import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "MAX_FRAME_BYTES",
    "Frame",
    "FrameReader",
    "Kind",
    "ProtocolError",
    "encode_frame",
]

_LENGTH = struct.Struct("<I")
_HEADER = struct.Struct("<BQI")

#: Largest frame either side accepts. A rendered page larger than this is a
#: runaway render, not a page, and the frame is rejected rather than buffered.
MAX_FRAME_BYTES = 256 * 1024 * 1024


class Kind(enum.IntEnum):
    #: Worker to pool: the bundle loaded; metadata has the bundle's details.
    READY = 1
    #: Worker to pool: the bundle failed to load; metadata has the error.
    LOAD_FAILED = 2
    #: Pool to worker: render the URL in the metadata.
    RENDER = 3
    #: Worker to pool: the outcome of a RENDER job, with the HTML as the body.
    RESULT = 4


class ProtocolError(Exception):
    """The other side sent bytes that are not a valid frame."""


@dataclass(frozen=True, slots=True)
class Frame:
    kind: Kind
    job_id: int
    meta: dict[str, Any] = field(default_factory=dict)
    body: bytes = b""


def encode_frame(
    kind: Kind, job_id: int, meta: dict[str, Any], body: bytes = b""
) -> bytes:
    """Serialize one frame, ready to be written to the pipe."""
    meta_bytes = json.dumps(meta, separators=(",", ":")).encode()
    size = _HEADER.size + len(meta_bytes) + len(body)
    if size > MAX_FRAME_BYTES:
        raise ProtocolError(f"frame of {size} bytes exceeds {MAX_FRAME_BYTES} bytes")
    header = _LENGTH.pack(size) + _HEADER.pack(kind, job_id, len(meta_bytes))
    return b"".join((header, meta_bytes, body))


class FrameReader:
    """Reassemble frames from a byte stream that arrives in arbitrary pieces."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes | bytearray) -> Iterator[Frame]:
        """Add received bytes and yield every frame that is now complete."""
        self._buffer += data
        while True:
            frame = self._next_frame()
            if frame is None:
                return
            yield frame

    @property
    def pending_bytes(self) -> int:
        """Bytes received that do not yet form a whole frame."""
        return len(self._buffer)

    def _next_frame(self) -> Frame | None:
        if len(self._buffer) < _LENGTH.size:
            return None
        (size,) = _LENGTH.unpack_from(self._buffer)
        if not _HEADER.size <= size <= MAX_FRAME_BYTES:
            raise ProtocolError(f"invalid frame length {size}")
        end = _LENGTH.size + size
        if len(self._buffer) < end:
            return None

        raw_kind, job_id, meta_size = _HEADER.unpack_from(self._buffer, _LENGTH.size)
        meta_start = _LENGTH.size + _HEADER.size
        body_start = meta_start + meta_size
        if body_start > end:
            raise ProtocolError(f"metadata of {meta_size} bytes overruns its frame")
        try:
            kind = Kind(raw_kind)
            meta = json.loads(self._buffer[meta_start:body_start])
        except ValueError as error:
            raise ProtocolError(f"invalid frame header: {error}") from None
        if not isinstance(meta, dict):
            raise ProtocolError("frame metadata is not a JSON object")

        with memoryview(self._buffer) as view:
            body = view[body_start:end].tobytes()
        del self._buffer[:end]
        return Frame(kind, job_id, meta, body)
