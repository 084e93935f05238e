"""The record ring and its index: lock-free reads, serialized writes.

Design. One process at a time mutates the ring (the caller holds the segment's
writer lock); any number of processes read it at any time without a lock. The
ring is a log of records at ever-increasing logical offsets (u64, never
reused), placed at ``logical % ring_bytes``. ``tail`` is the logical offset of
the oldest record that is still intact; everything in ``[tail, head)`` is
complete.

A writer that needs room first moves ``tail`` past every record it is about to
overwrite (removing their index entries), then copies the new record in one
pass, then publishes it in the index, then moves ``head``. A reader:

1. finds candidate logical offsets ``L`` for the key's xxh3-64 digest in the
   index (a torn or stale bucket only yields a bad candidate);
2. copies the record header and fields out of shared memory;
3. checks that the copied header says LIVE at offset ``L``, that its xxh3-64
   checksum matches the copied bytes, and that the copied key equals the key;
4. re-reads ``state`` and ``tail``: if the record was purged, replaced or
   evicted (``tail > L``) while it was being copied, the copy is discarded.

A copy that overlapped an overwrite fails step 4 because ``tail`` moved before
the overwrite began, and step 3's checksum catches what step 4 cannot, such as
stores that became visible out of order. A writer killed mid-write leaves its
record beyond ``head`` and unpublished, so readers never see it; it also leaves
the writer mark (:attr:`HeaderField.WRITER`) set, so the next writer rebuilds the
index and counters from the checked records in ``[tail, head)`` before doing
anything else (:meth:`Ring.repair`).

Alternatives considered: a per-slot seqlock alone trusts store ordering, which
CPython does not promise across processes; a lock on reads would make a hit
wait for a writer, and a dead reader could hold it.

NOTE: the tail check relies on aligned 8-byte loads and stores being single
instructions (true for struct on x86-64 and arm64); the checksum still rejects
a torn copy where that does not hold, with a 2**-64 chance of a miss.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Iterator
from typing import Final

import xxhash

from enddel.cache.layout import (
    BUCKET,
    CHECKED_FROM,
    CLAIM_SLOT,
    FLAG_BR,
    FLAG_GZIP,
    MAX_FIELD_BYTES,
    RECORD,
    STATE_DEAD,
    STATE_LIVE,
    STATE_OFFSET,
    STATE_PADDING,
    Entry,
    Geometry,
    HeaderField,
    LayoutError,
    decode_headers,
    encode_headers,
    load,
    record_size,
    store,
)

__all__ = ["CLAIM_WINDOW", "Claims", "Ring"]

_U32_STATE = struct.Struct("<I")

#: Claim slots probed per key: a key's mark lives in one of the 16 slots from
#: its home slot on, so a lookup touches at most 640 bytes.
CLAIM_WINDOW: Final = 16

#: Bytes of entries each process keeps from its own recent reads. A kept
#: entry is returned while its record is still the live one for its key,
#: which two reads of shared memory prove, instead of copying and
#: checksumming the record again (12 of the 18 microseconds of a 49 KB hit).
#: The budget bounds the copies a process holds beside the shared segment.
RECENT_BYTES: Final = 32 * 1024 * 1024


class Ring:
    """Records, index and counters of one segment, over a writable buffer.

    :meth:`get` may run at any time in any process. Every other method mutates
    and must run inside :meth:`mutation`, with the segment's writer lock held.
    """

    def __init__(self, buf: memoryview | bytearray, geometry: Geometry) -> None:
        self._buf = buf
        self._geometry = geometry
        self._ring_offset = geometry.ring_offset
        self._ring_bytes = geometry.ring_bytes
        self._index_offset = geometry.index_offset
        self._mask = geometry.index_buckets - 1
        # Key -> (logical offset of the record it was read from, entry), oldest
        # first. Only this process's readers touch it.
        self._recent: dict[bytes, tuple[int, Entry]] = {}
        self._recent_bytes = 0

    # Reads: lock-free, no syscalls.

    def get(self, key: bytes, digest: int) -> Entry | None:
        """Return the live entry stored under ``key``, or None."""
        buf = self._buf
        position = digest & self._mask
        for _ in range(self._mask + 1):
            bucket_digest, reference = BUCKET.unpack_from(
                buf, self._index_offset + position * BUCKET.size
            )
            if reference == 0:
                return None
            if bucket_digest == digest:
                entry = self._recent_entry(reference - 1, key)
                if entry is None:
                    entry = self._read(reference - 1, key)
                    if entry is not None:
                        self._remember(reference - 1, entry)
                if entry is not None:
                    return entry
            position = (position + 1) & self._mask
        return None

    def _recent_entry(self, logical: int, key: bytes) -> Entry | None:
        """Return the kept copy of the record at ``logical`` if it is still live.

        A record's logical offset is never reused, because the head only grows.
        So a live record at the offset the index points to, not yet passed by
        the tail, is the very record the copy was made from. A purge marks it
        dead, a replacement or an eviction moves the index or the tail, and
        either check then fails.
        """
        recent = self._recent.get(key)
        if recent is None or recent[0] != logical:
            return None
        base = self._ring_offset + logical % self._ring_bytes
        if _U32_STATE.unpack_from(self._buf, base + STATE_OFFSET)[0] != STATE_LIVE:
            return None
        if load(self._buf, HeaderField.TAIL) > logical:
            return None
        return recent[1]

    def _remember(self, logical: int, entry: Entry) -> None:
        size = _entry_bytes(entry)
        if size > RECENT_BYTES // 8:
            return
        previous = self._recent.pop(entry.key, None)
        if previous is not None:
            self._recent_bytes -= _entry_bytes(previous[1])
        while self._recent and self._recent_bytes + size > RECENT_BYTES:
            oldest = next(iter(self._recent))
            self._recent_bytes -= _entry_bytes(self._recent.pop(oldest)[1])
        self._recent[entry.key] = (logical, entry)
        self._recent_bytes += size

    def _read(self, logical: int, key: bytes) -> Entry | None:
        buf = self._buf
        physical = logical % self._ring_bytes
        if self._ring_bytes - physical < RECORD.size:
            return None
        base = self._ring_offset + physical
        header = bytes(buf[base : base + RECORD.size])
        (state, _, checksum, copied_logical, length, key_len, headers_len, etag_len,
         body_len, br_len, gzip_len, status, flags, stored_at, ttl, stale_ttl,
         _digest) = RECORD.unpack(header)  # fmt: skip
        if state != STATE_LIVE or copied_logical != logical or key_len != len(key):
            return None
        lengths = (key_len, headers_len, etag_len, body_len, br_len, gzip_len)
        if not RECORD.size + sum(lengths) <= length <= self._ring_bytes - physical:
            return None

        # One copy of each field out of shared memory; the key first, so that
        # a digest collision costs one short compare and no body copy.
        position = base + RECORD.size
        copied_key = bytes(buf[position : position + key_len])
        if copied_key != key:
            return None
        hasher = xxhash.xxh3_64(header[CHECKED_FROM:])
        hasher.update(copied_key)
        position += key_len
        fields: list[bytes] = []
        for size in lengths[1:]:
            field = bytes(buf[position : position + size])
            hasher.update(field)
            fields.append(field)
            position += size
        if hasher.intdigest() != checksum:
            return None

        # Re-validate: purged, replaced or overwritten while being copied.
        if _U32_STATE.unpack_from(buf, base + STATE_OFFSET)[0] != STATE_LIVE:
            return None
        if load(buf, HeaderField.TAIL) > logical:
            return None
        headers_blob, etag, body, body_br, body_gzip = fields
        return Entry(
            key=copied_key,
            status=status,
            headers=decode_headers(headers_blob),
            body=body,
            body_br=body_br if flags & FLAG_BR else None,
            body_gzip=body_gzip if flags & FLAG_GZIP else None,
            etag=etag.decode("utf-8", "surrogatepass"),
            stored_at=stored_at,
            ttl=ttl,
            stale_ttl=stale_ttl,
        )

    # Writes: one process at a time, inside mutation().

    def begin_mutation(self, pid: int) -> None:
        """Mark the ring as being mutated by ``pid``, repairing it first if a
        previous writer died mid-mutation."""
        if load(self._buf, HeaderField.WRITER) != 0:
            self.repair()
        store(self._buf, HeaderField.WRITER, pid)

    def end_mutation(self) -> None:
        """Clear the writer mark: the ring is consistent again."""
        store(self._buf, HeaderField.WRITER, 0)

    def put(self, entry: Entry, digest: int) -> bool:
        """Store ``entry``, evicting the oldest records as needed.

        Returns False, storing nothing, when the record is larger than the ring.
        A previous entry under the same key stays readable until the new one
        is published, then is marked dead.
        """
        _check_entry(entry)
        length = record_size(entry)
        if length > min(self._ring_bytes, MAX_FIELD_BYTES):
            return False

        position = self._place(length)
        self._evict(position + length - self._ring_bytes, entry.key, digest)
        head = load(self._buf, HeaderField.HEAD)
        if load(self._buf, HeaderField.TAIL) == head:
            # Nothing left before the new record: skip the gap entirely, since a
            # record that laps may cover the very bytes a padding mark would use.
            store(self._buf, HeaderField.TAIL, position)
        else:
            self._write_padding(head, position)
        self._write_record(position, length, entry, digest)

        previous = self._find_live(entry.key, digest)
        self._insert_bucket(digest, position)
        if previous is not None:
            self._kill(previous, self._logical_of(previous))
        store(self._buf, HeaderField.HEAD, position + length)
        self._add(HeaderField.ENTRIES, 1)
        self._add(HeaderField.BYTES_USED, length)
        self._add(HeaderField.PUTS, 1)
        return True

    def _place(self, length: int) -> int:
        """Return the logical offset for a record of ``length`` bytes: the head,
        or the start of the next lap when the record would not fit before the
        ring's end."""
        head = load(self._buf, HeaderField.HEAD)
        room = self._ring_bytes - head % self._ring_bytes
        return head if length <= room else head + room

    def _evict(self, limit: int, key: bytes, digest: int) -> None:
        """Move the tail past every record starting before ``limit``, and past
        more live records while the new key would exceed the entry limit."""
        buf = self._buf
        tail = load(buf, HeaderField.TAIL)
        head = load(buf, HeaderField.HEAD)
        replaces = self._find_live(key, digest) is not None
        while tail < head:
            entries = load(buf, HeaderField.ENTRIES)
            over_limit = entries - replaces + 1 > self._geometry.max_entries
            if tail >= limit and not over_limit:
                break
            step, fields = self._record_at(tail)
            if fields is not None and fields[0] == STATE_LIVE:
                bucket = self._find_bucket(fields[-1], tail)
                if bucket is not None:
                    self._remove_bucket(bucket)
                if bytes(self._key_at(tail, fields)) == key:
                    replaces = False
                self._add(HeaderField.ENTRIES, -1)
                self._add(HeaderField.BYTES_USED, -int(fields[4]))
                self._add(HeaderField.EVICTIONS, 1)
            tail += step
            # Published before the overwrite starts: see the module docstring.
            store(buf, HeaderField.TAIL, tail)

    def _write_padding(self, head: int, position: int) -> None:
        physical = head % self._ring_bytes
        if position == head or self._ring_bytes - physical < RECORD.size:
            return
        RECORD.pack_into(
            self._buf, self._ring_offset + physical,
            STATE_PADDING, 0, 0, head, position - head, 0, 0, 0, 0, 0, 0, 0, 0,
            0.0, 0.0, 0.0, 0,
        )  # fmt: skip

    def _write_record(
        self, logical: int, length: int, entry: Entry, digest: int
    ) -> None:
        pieces = _pieces(entry)
        flags = (FLAG_BR if entry.body_br is not None else 0) | (
            FLAG_GZIP if entry.body_gzip is not None else 0
        )
        values = [
            logical, length, *map(len, pieces), entry.status, flags,
            entry.stored_at, entry.ttl, entry.stale_ttl, digest,
        ]  # fmt: skip
        unchecked = RECORD.pack(STATE_LIVE, 0, 0, *values)
        hasher = xxhash.xxh3_64(unchecked[CHECKED_FROM:])
        for piece in pieces:
            hasher.update(piece)
        header = RECORD.pack(STATE_LIVE, 0, hasher.intdigest(), *values)

        position = self._ring_offset + logical % self._ring_bytes
        self._buf[position : position + RECORD.size] = header
        position += RECORD.size
        for piece in pieces:
            self._buf[position : position + len(piece)] = piece
            position += len(piece)

    def purge(self, key: bytes, digest: int) -> bool:
        """Remove the entry under ``key``; return whether there was one."""
        bucket = self._find_live(key, digest)
        if bucket is None:
            return False
        self._kill(bucket, self._logical_of(bucket))
        return True

    def purge_prefix(self, prefix: bytes) -> int:
        """Remove every entry whose key starts with ``prefix``; return how many."""
        purged = 0
        for logical, fields in self._live_records():
            if bytes(self._key_at(logical, fields)).startswith(prefix):
                bucket = self._find_bucket(fields[-1], logical)
                if bucket is not None:
                    self._kill(bucket, logical)
                    purged += 1
        return purged

    def purge_all(self) -> int:
        """Remove every entry; return how many there were."""
        buf = self._buf
        purged = load(buf, HeaderField.ENTRIES)
        store(buf, HeaderField.TAIL, load(buf, HeaderField.HEAD))
        self._clear_index()
        store(buf, HeaderField.ENTRIES, 0)
        store(buf, HeaderField.BYTES_USED, 0)
        return purged

    def repair(self) -> None:
        """Rebuild the index and counters from the records in ``[tail, head)``.

        Runs when a writer died mid-mutation. Each record's checksum is checked;
        the ring is cut at the first record that fails, because everything after
        it cannot be walked. Concurrent readers may miss while the index is
        rebuilt, but never read a wrong entry.
        """
        buf = self._buf
        self._clear_index()
        store(buf, HeaderField.ENTRIES, 0)
        store(buf, HeaderField.BYTES_USED, 0)
        logical = load(buf, HeaderField.TAIL)
        head = max(load(buf, HeaderField.HEAD), logical)
        while logical < head:
            try:
                step, fields = self._record_at(logical)
            except LayoutError:
                break
            if fields is not None and not self._checksum_matches(logical, fields):
                break
            if fields is not None and fields[0] == STATE_LIVE:
                self._reinstate(logical, fields)
            logical += step
        store(buf, HeaderField.HEAD, logical)

    def _reinstate(self, logical: int, fields: tuple[int | float, ...]) -> None:
        key = bytes(self._key_at(logical, fields))
        digest = int(fields[-1])
        older = self._find_live(key, digest)
        if older is not None:
            self._kill(older, self._logical_of(older))
        self._insert_bucket(digest, logical)
        self._add(HeaderField.ENTRIES, 1)
        self._add(HeaderField.BYTES_USED, int(fields[4]))

    def _checksum_matches(self, logical: int, fields: tuple[int | float, ...]) -> bool:
        base = self._ring_offset + logical % self._ring_bytes
        end = base + RECORD.size + sum(int(size) for size in fields[5:11])
        return (
            xxhash.xxh3_64_intdigest(self._buf[base + CHECKED_FROM : end]) == fields[2]
        )

    # Record walking, under the lock.

    def _record_at(self, logical: int) -> tuple[int, tuple[int | float, ...] | None]:
        """Return the bytes to skip at ``logical`` and the record header there,
        or None for padding. Raises LayoutError when the header is inconsistent."""
        physical = logical % self._ring_bytes
        room = self._ring_bytes - physical
        if room < RECORD.size:
            return room, None
        fields = RECORD.unpack_from(self._buf, self._ring_offset + physical)
        state, length = fields[0], fields[4]
        if fields[3] != logical:
            raise LayoutError(f"record at {logical} has logical offset {fields[3]}")
        if state == STATE_PADDING:
            if length != room:
                raise LayoutError(f"padding of {length} bytes at {logical}")
            return room, None
        if state not in (STATE_LIVE, STATE_DEAD) or not RECORD.size <= length <= room:
            raise LayoutError(f"record of {length} bytes in state {state} at {logical}")
        return length, fields

    def _live_records(self) -> Iterator[tuple[int, tuple[int | float, ...]]]:
        logical = load(self._buf, HeaderField.TAIL)
        head = load(self._buf, HeaderField.HEAD)
        while logical < head:
            step, fields = self._record_at(logical)
            if fields is not None and fields[0] == STATE_LIVE:
                yield logical, fields
            logical += step

    def _key_at(self, logical: int, fields: tuple[int | float, ...]) -> memoryview:
        start = self._ring_offset + logical % self._ring_bytes + RECORD.size
        view = memoryview(self._buf)
        return view[start : start + int(fields[5])]

    def _kill(self, bucket: int, logical: int) -> None:
        """Mark the record dead, drop its index bucket and its counts."""
        base = self._ring_offset + logical % self._ring_bytes
        _U32_STATE.pack_into(self._buf, base + STATE_OFFSET, STATE_DEAD)
        self._remove_bucket(bucket)
        self._add(HeaderField.ENTRIES, -1)
        self._add(HeaderField.BYTES_USED, -RECORD.unpack_from(self._buf, base)[4])

    def _add(self, field: int, delta: int) -> None:
        store(self._buf, field, load(self._buf, field) + delta)

    # Index: open addressing with linear probing, under the lock.

    def _bucket_offset(self, bucket: int) -> int:
        return self._index_offset + bucket * BUCKET.size

    def _logical_of(self, bucket: int) -> int:
        reference: int = BUCKET.unpack_from(self._buf, self._bucket_offset(bucket))[1]
        return reference - 1

    def _probe(self, digest: int) -> Iterator[tuple[int, int]]:
        """Yield (bucket, logical offset) for each bucket holding ``digest``."""
        bucket = digest & self._mask
        while True:
            found, reference = BUCKET.unpack_from(
                self._buf, self._bucket_offset(bucket)
            )
            if reference == 0:
                return
            if found == digest:
                yield bucket, reference - 1
            bucket = (bucket + 1) & self._mask

    def _find_live(self, key: bytes, digest: int) -> int | None:
        for bucket, logical in self._probe(digest):
            _, fields = self._record_at(logical)
            if fields is not None and bytes(self._key_at(logical, fields)) == key:
                return bucket
        return None

    def _find_bucket(self, digest: int | float, logical: int) -> int | None:
        for bucket, found in self._probe(int(digest)):
            if found == logical:
                return bucket
        return None

    def _insert_bucket(self, digest: int, logical: int) -> None:
        bucket = digest & self._mask
        while BUCKET.unpack_from(self._buf, self._bucket_offset(bucket))[1] != 0:
            bucket = (bucket + 1) & self._mask
        BUCKET.pack_into(self._buf, self._bucket_offset(bucket), digest, logical + 1)

    def _remove_bucket(self, bucket: int) -> None:
        """Empty ``bucket`` by backward-shift deletion, so probes stay unbroken.

        A reader probing during the shift may miss a moved bucket and report a
        miss; it can never read a wrong entry, because the record is checked.
        """
        mask = self._mask
        hole = bucket
        scan = bucket
        while True:
            scan = (scan + 1) & mask
            digest, reference = BUCKET.unpack_from(self._buf, self._bucket_offset(scan))
            if reference == 0:
                break
            home = digest & mask
            # Move the bucket at `scan` into the hole unless its home lies
            # cyclically after the hole, where a probe would not reach the hole.
            if (scan - home) & mask >= (scan - hole) & mask:
                BUCKET.pack_into(
                    self._buf, self._bucket_offset(hole), digest, reference
                )
                hole = scan
        BUCKET.pack_into(self._buf, self._bucket_offset(hole), 0, 0)

    def _clear_index(self) -> None:
        start = self._index_offset
        size = (self._mask + 1) * BUCKET.size
        self._buf[start : start + size] = bytes(size)


def _pieces(entry: Entry) -> tuple[bytes, ...]:
    return (
        entry.key,
        encode_headers(entry.headers),
        entry.etag.encode("utf-8", "surrogatepass"),
        entry.body,
        entry.body_br or b"",
        entry.body_gzip or b"",
    )


def _check_entry(entry: Entry) -> None:
    if not 100 <= entry.status <= 999:
        raise ValueError(f"entry status {entry.status!r} is not an HTTP status code")
    for name in ("stored_at", "ttl", "stale_ttl"):
        value = getattr(entry, name)
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"entry {name}={value!r}: expected a finite number >= 0")


class Claims:
    """In-flight marks in the claim table: which process renders which key.

    A mark is active while its owner process lives and its lease has not run
    out. :meth:`is_claimed` reads without the lock; a torn slot can only make
    it return a wrong result for that instant, costing a duplicate render or one
    extra wait, never a wrong page. :meth:`claim` and :meth:`release` run under
    the writer lock.
    """

    def __init__(
        self,
        buf: memoryview | bytearray,
        geometry: Geometry,
        alive: Callable[[int, int], bool],
    ) -> None:
        self._buf = buf
        self._offset = geometry.claims_offset
        self._slots = geometry.claim_slots
        self._alive = alive

    def _window(self, digest: bytes) -> Iterator[tuple[int, bytes, int, int, float]]:
        home = int.from_bytes(digest[:8], "little") % self._slots
        for step in range(min(CLAIM_WINDOW, self._slots)):
            offset = self._offset + (home + step) % self._slots * CLAIM_SLOT.size
            found, pid, _, started, expires = CLAIM_SLOT.unpack_from(self._buf, offset)
            yield offset, found, pid, started, expires

    def _token_at(self, offset: int) -> int:
        token: int = CLAIM_SLOT.unpack_from(self._buf, offset)[2]
        return token

    def _active(self, pid: int, started: int, expires: float, now: float) -> bool:
        return pid != 0 and expires > now and self._alive(pid, started)

    def claim(
        self,
        digest: bytes,
        pid: int,
        started: int,
        lease: float,
        now: float,
        token: int = 0,
    ) -> bool:
        """Mark ``digest`` as rendered by ``pid`` unless another owner marked it.

        Returns True when the caller owns the render now. ``token`` (a u32)
        goes into the mark, so that :meth:`release` with the same token drops
        this mark and no later one of the same process. When all slots of the
        key's window hold active marks of other keys, no mark is written and
        True is returned: the render goes ahead without coalescing.
        """
        free: int | None = None
        for offset, found, owner, owner_started, expires in self._window(digest):
            active = self._active(owner, owner_started, expires, now)
            if active and found == digest:
                return False
            if not active and free is None:
                free = offset
        if free is not None:
            CLAIM_SLOT.pack_into(
                self._buf, free, digest, pid, token, started, now + lease
            )
        return True

    def release(self, digest: bytes, pid: int, token: int | None = None) -> None:
        """Drop the marks ``pid`` holds on ``digest``: only the one taken with
        ``token``, or every one when ``token`` is None."""
        for offset, found, owner, _, _ in self._window(digest):
            if found != digest or owner != pid:
                continue
            if token is None or self._token_at(offset) == token:
                CLAIM_SLOT.pack_into(self._buf, offset, bytes(16), 0, 0, 0, 0.0)

    def is_claimed(self, digest: bytes, now: float) -> bool:
        """Return whether a live process has an unexpired mark on ``digest``."""
        return any(
            found == digest and self._active(owner, started, expires, now)
            for _, found, owner, started, expires in self._window(digest)
        )


def _entry_bytes(entry: Entry) -> int:
    return len(entry.body) + len(entry.body_br or b"") + len(entry.body_gzip or b"")
