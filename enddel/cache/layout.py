"""Byte layout of the page cache segment: header, tables, index and record ring.

Everything here is a pure function over a writable buffer (a ``memoryview`` of
shared memory, or a ``bytearray`` in tests). No I/O, no locks, no clock.

The segment, in order, every region 8-byte aligned::

    header        512 B   magic, version, geometry, fingerprint, head, tail,
                          counters, writer mark
    attach table          one row per attached process: pid, start time, hits,
                          misses (each row written only by its own process)
    claim table           in-flight marks: 128-bit key digest, owner, expiry
    index                 open-addressing hash table of (xxh3 digest, record
                          reference), linear probing, load factor at most 1/2
    ring                  records placed end to end at increasing *logical*
                          offsets; a record sits at ``logical % ring_bytes`` and
                          never wraps (the writer pads to the ring's end first)

A record is a fixed header (:data:`RECORD`) followed by the key, the encoded
headers, the ETag, the body and its brotli and gzip variants. The header
carries the record's own logical offset and an xxh3-64 checksum of every byte
after the checksum field. See :mod:`enddel.cache.ring` for why a reader never
returns a torn record.
"""

from __future__ import annotations

import dataclasses
import math
import struct
from typing import Final

__all__ = [
    "ATTACH_ROW",
    "BUCKET",
    "CLAIM_SLOT",
    "HEADER_BYTES",
    "MAGIC",
    "RECORD",
    "VERSION",
    "Entry",
    "Geometry",
    "HeaderField",
    "LayoutError",
    "decode_headers",
    "encode_headers",
    "format_segment",
    "load",
    "read_geometry",
    "record_size",
    "store",
]

#: First 8 bytes of every formatted segment; written last when formatting, so
#: a segment whose creator died half-way has no magic and is reset.
MAGIC: Final = b"ENDDELPC"
#: Bumped on every incompatible change of this file.
VERSION: Final = 1
#: Fixed header region, in bytes; the named fields use the first ~240.
HEADER_BYTES: Final = 512

#: Record header. ``state`` and the checksum are first so that the checksum can
#: cover everything after it, and so that marking a record dead (``state``)
#: does not change its checksum.
#:   state u32, pad u32, checksum u64,
#:   logical u64, length u32, key, headers, etag, body, br, gzip lengths u32,
#:   status u16, flags u16, stored_at f64, ttl f64, stale_ttl f64, digest u64
RECORD: Final = struct.Struct("<IIQQIIIIIIIHHdddQ")
CHECKED_FROM: Final = 16
STATE_OFFSET: Final = 0

#: Record states. A record is only reachable through the index while LIVE.
STATE_FREE: Final = 0
STATE_LIVE: Final = 1
STATE_DEAD: Final = 2
STATE_PADDING: Final = 3

FLAG_BR: Final = 1
FLAG_GZIP: Final = 2

#: Index bucket: xxh3-64 digest of the key, then the record's logical offset
#: plus one (0 marks an empty bucket, so digest 0 stays usable).
BUCKET: Final = struct.Struct("<QQ")
#: Attach table row: pid, pad, process start time (clock ticks since boot, so
#: that a reused PID is not taken for the process that attached), hits, misses.
ATTACH_ROW: Final = struct.Struct("<IIQQQ")
#: Claim slot: 128-bit xxh3 digest of the key, owner pid, claim token (unique
#: within the owner process, so a late release drops only its own mark), owner
#: start time, lease expiry (``time.time()`` seconds). pid 0 marks a free slot.
CLAIM_SLOT: Final = struct.Struct("<16sIIQd")

#: Processes that may attach at once: hypercorn workers of one server plus
#: tools; 256 is far beyond ``-w`` on any machine and costs 8 KiB.
ATTACH_SLOTS: Final = 256
#: In-flight marks at once. Each server process queues at most a few hundred
#: renders, so 4096 slots (160 KiB) keep the table mostly empty.
CLAIM_SLOTS: Final = 4096
#: Expected mean record size, in bytes, used to size the index: a page with
#: its brotli and gzip variants is rarely smaller. Smaller records still fit
#: but then the entry limit, not the ring size, decides eviction.
AVERAGE_RECORD_BYTES: Final = 2048
#: Smallest entry limit, so a tiny test segment still stores a few entries.
MIN_ENTRIES: Final = 8
#: Largest entry limit, keeping the index at 128 MiB or less.
MAX_ENTRIES: Final = 1 << 22
ALIGN: Final = 8
PAGE: Final = 4096
#: Length fields are u32.
MAX_FIELD_BYTES: Final = 0xFFFF_FFFF


class LayoutError(Exception):
    """The segment bytes are not a valid page cache; the message gives the reason."""


class HeaderField:
    """Byte offsets of the header's u64 fields (``created_at`` is an f64)."""

    MAGIC = 0
    VERSION = 8
    SEGMENT_BYTES = 16
    ATTACH_OFFSET = 24
    ATTACH_SLOTS = 32
    CLAIMS_OFFSET = 40
    CLAIM_SLOTS = 48
    INDEX_OFFSET = 56
    INDEX_BUCKETS = 64
    MAX_ENTRIES = 72
    RING_OFFSET = 80
    RING_BYTES = 88
    FINGERPRINT = 96
    CREATED_AT = 104
    CREATOR_PID = 112
    # Mutable fields, written under the writer lock.
    WRITER = 128  # pid of a writer mid-mutation, 0 when the ring is consistent
    HEAD = 136  # logical offset where the next record goes
    TAIL = 144  # logical offset of the oldest record still readable
    ENTRIES = 152
    BYTES_USED = 160
    EVICTIONS = 168
    PUTS = 176
    RETIRED_HITS = 184  # hits of processes that have detached or died
    RETIRED_MISSES = 192
    # The janitor process that removes the segment once the server is gone
    # (pid and start time, 0 when none): see enddel.cache.janitor.
    JANITOR_PID = 200
    JANITOR_STARTED = 208


_U64 = struct.Struct("<Q")
_F64 = struct.Struct("<d")


def load(buf: memoryview | bytearray, offset: int) -> int:
    """Read the u64 at ``offset``."""
    value: int = _U64.unpack_from(buf, offset)[0]
    return value


def store(buf: memoryview | bytearray, offset: int, value: int) -> None:
    """Write the u64 ``value`` at ``offset``."""
    _U64.pack_into(buf, offset, value)


@dataclasses.dataclass(frozen=True, slots=True)
class Entry:
    """One stored page: the response and how long it may be served."""

    key: bytes
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes
    body_br: bytes | None
    body_gzip: bytes | None
    etag: str
    stored_at: float  # time.time() seconds
    ttl: float  # seconds fresh
    stale_ttl: float  # seconds stale after that


@dataclasses.dataclass(frozen=True, slots=True)
class Geometry:
    """Offsets and sizes, in bytes, of the regions of one segment."""

    segment_bytes: int
    attach_offset: int
    attach_slots: int
    claims_offset: int
    claim_slots: int
    index_offset: int
    index_buckets: int
    max_entries: int
    ring_offset: int
    ring_bytes: int

    @classmethod
    def for_size(
        cls, segment_bytes: int, average_record_bytes: int = AVERAGE_RECORD_BYTES
    ) -> Geometry:
        """Lay out a segment of ``segment_bytes``; the ring gets what is left."""
        max_entries = segment_bytes // average_record_bytes
        max_entries = min(max(max_entries, MIN_ENTRIES), MAX_ENTRIES)
        buckets = 1 << math.ceil(math.log2(2 * max_entries))
        attach_offset = HEADER_BYTES
        claims_offset = attach_offset + ATTACH_SLOTS * ATTACH_ROW.size
        index_offset = claims_offset + CLAIM_SLOTS * CLAIM_SLOT.size
        ring_offset = _round_up(index_offset + buckets * BUCKET.size, PAGE)
        ring_bytes = (segment_bytes - ring_offset) // ALIGN * ALIGN
        if ring_bytes < PAGE:
            raise LayoutError(
                f"a segment of {segment_bytes} bytes leaves {ring_bytes} bytes for "
                f"pages after {ring_offset} bytes of tables; use at least "
                f"{ring_offset + PAGE} bytes"
            )
        return cls(
            segment_bytes=segment_bytes,
            attach_offset=attach_offset,
            attach_slots=ATTACH_SLOTS,
            claims_offset=claims_offset,
            claim_slots=CLAIM_SLOTS,
            index_offset=index_offset,
            index_buckets=buckets,
            max_entries=max_entries,
            ring_offset=ring_offset,
            ring_bytes=ring_bytes,
        )

    def fields(self) -> dict[int, int]:
        """Map header offsets to this geometry's values."""
        return {
            HeaderField.SEGMENT_BYTES: self.segment_bytes,
            HeaderField.ATTACH_OFFSET: self.attach_offset,
            HeaderField.ATTACH_SLOTS: self.attach_slots,
            HeaderField.CLAIMS_OFFSET: self.claims_offset,
            HeaderField.CLAIM_SLOTS: self.claim_slots,
            HeaderField.INDEX_OFFSET: self.index_offset,
            HeaderField.INDEX_BUCKETS: self.index_buckets,
            HeaderField.MAX_ENTRIES: self.max_entries,
            HeaderField.RING_OFFSET: self.ring_offset,
            HeaderField.RING_BYTES: self.ring_bytes,
        }


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def format_segment(
    buf: memoryview | bytearray,
    geometry: Geometry,
    *,
    fingerprint: int,
    created_at: float,
    creator_pid: int,
) -> None:
    """Zero the whole segment, write a fresh header, and write the magic last."""
    buf[: geometry.segment_bytes] = bytes(geometry.segment_bytes)
    store(buf, HeaderField.VERSION, VERSION)
    for offset, value in geometry.fields().items():
        store(buf, offset, value)
    store(buf, HeaderField.FINGERPRINT, fingerprint)
    _F64.pack_into(buf, HeaderField.CREATED_AT, created_at)
    store(buf, HeaderField.CREATOR_PID, creator_pid)
    buf[HeaderField.MAGIC : HeaderField.MAGIC + len(MAGIC)] = MAGIC


def read_geometry(buf: memoryview | bytearray) -> Geometry:
    """Read and check a formatted segment's geometry, or raise LayoutError.

    Every region must lie inside the buffer without overlapping the next one,
    so a foreign or damaged segment is never used to index memory blindly.
    """
    magic = bytes(buf[: len(MAGIC)])
    if magic != MAGIC:
        raise LayoutError(f"no page cache magic: found {magic!r}, expected {MAGIC!r}")
    version = load(buf, HeaderField.VERSION)
    if version != VERSION:
        raise LayoutError(f"layout version {version}, this server uses {VERSION}")
    geometry = Geometry(
        segment_bytes=load(buf, HeaderField.SEGMENT_BYTES),
        attach_offset=load(buf, HeaderField.ATTACH_OFFSET),
        attach_slots=load(buf, HeaderField.ATTACH_SLOTS),
        claims_offset=load(buf, HeaderField.CLAIMS_OFFSET),
        claim_slots=load(buf, HeaderField.CLAIM_SLOTS),
        index_offset=load(buf, HeaderField.INDEX_OFFSET),
        index_buckets=load(buf, HeaderField.INDEX_BUCKETS),
        max_entries=load(buf, HeaderField.MAX_ENTRIES),
        ring_offset=load(buf, HeaderField.RING_OFFSET),
        ring_bytes=load(buf, HeaderField.RING_BYTES),
    )
    _check_geometry(geometry, len(buf))
    return geometry


def _check_geometry(geometry: Geometry, buffer_bytes: int) -> None:
    regions = [
        (
            "attach table",
            geometry.attach_offset,
            geometry.attach_slots * ATTACH_ROW.size,
        ),
        ("claim table", geometry.claims_offset, geometry.claim_slots * CLAIM_SLOT.size),
        ("index", geometry.index_offset, geometry.index_buckets * BUCKET.size),
        ("ring", geometry.ring_offset, geometry.ring_bytes),
    ]
    if geometry.segment_bytes > buffer_bytes:
        raise LayoutError(
            f"header records {geometry.segment_bytes} bytes, but the segment has "
            f"{buffer_bytes}"
        )
    end = HEADER_BYTES
    for name, offset, size in regions:
        if offset < end or offset % ALIGN or offset + size > geometry.segment_bytes:
            raise LayoutError(f"{name} at {offset}+{size} is out of place")
        end = offset + size
    buckets = geometry.index_buckets
    if buckets & (buckets - 1) or buckets < 2 * geometry.max_entries:
        raise LayoutError(
            f"index of {buckets} buckets for {geometry.max_entries} entries"
        )
    if geometry.ring_bytes % ALIGN or geometry.ring_bytes < RECORD.size:
        raise LayoutError(f"ring of {geometry.ring_bytes} bytes")


def encode_headers(headers: tuple[tuple[str, str], ...]) -> bytes:
    """Encode header pairs as NUL-separated UTF-8, which HTTP fields never contain.

    RFC 9110 section 5.5 forbids NUL in field values, so a NUL here is a bug in
    the caller and raises ValueError rather than corrupting the pairing.
    """
    parts: list[str] = []
    for name, value in headers:
        if "\0" in name or "\0" in value:
            raise ValueError(f"header {name!r} contains NUL, which HTTP forbids")
        parts.append(name)
        parts.append(value)
    return "\0".join(parts).encode("utf-8", "surrogatepass")


def decode_headers(blob: bytes) -> tuple[tuple[str, str], ...]:
    """Decode what :func:`encode_headers` produced."""
    if not blob:
        return ()
    parts = blob.decode("utf-8", "surrogatepass").split("\0")
    return tuple(zip(parts[::2], parts[1::2], strict=True))


def record_size(entry: Entry) -> int:
    """Return the ring bytes that the record of ``entry`` takes, padding included."""
    payload = (
        len(entry.key)
        + len(encode_headers(entry.headers))
        + len(entry.etag.encode("utf-8", "surrogatepass"))
        + len(entry.body)
        + len(entry.body_br or b"")
        + len(entry.body_gzip or b"")
    )
    return _round_up(RECORD.size + payload, ALIGN)
