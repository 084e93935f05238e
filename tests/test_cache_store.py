"""Page store behaviour in one process: the ring against a model, and the API."""

from __future__ import annotations

import collections
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import xxhash
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from enddel.cache import Entry, PageStore, StoreClosedError, StoreStatistics
from enddel.cache.layout import (
    Geometry,
    HeaderField,
    format_segment,
    load,
    read_geometry,
    record_size,
)
from enddel.cache.ring import Claims, Ring
from enddel.cache.store import open_store

#: More keys than the smallest entry limit (8), so the limit is reached.
KEYS = [
    *(b"v1\0/", b"v1\0/a", b"v1\0/a?x=1", b"v1\0/a/b", b"v1\0/b", b"v2\0/a"),
    *(b"v2\0/", b"v1\0/c1", b"v1\0/c2", b"v1\0/c3", b"v1\0/c4", b"v1\0/c5"),
]
PREFIXES = [b"v1\0", b"v1\0/a", b"v1\0/a/", b"v2\0/", b"v3\0", b""]


def make_entry(key: bytes, version: int, size: int, br: bool, gzip: bool) -> Entry:
    """An entry whose every field is derived from its key and version."""
    seed = xxhash.xxh3_64_digest(key + version.to_bytes(4, "little"))
    body = (seed * (size // 8 + 1))[:size]
    return Entry(
        key=key,
        status=200 + version % 300,
        headers=(("content-type", "text/html; charset=utf-8"), ("x-v", f"{version}ü")),
        body=body,
        body_br=body[::2] if br else None,
        body_gzip=body[::3] if gzip else None,
        etag=f'"{seed.hex()}"',
        stored_at=1_700_000_000.0 + version,
        ttl=float(version % 7),
        stale_ttl=0.5,
    )


def make_ring(ring_bytes: int, max_entries: int) -> tuple[bytearray, Ring]:
    """A formatted segment in ordinary memory whose ring has ``ring_bytes``."""
    probe = Geometry.for_size(1 << 20, average_record_bytes=(1 << 20) // max_entries)
    segment_bytes = probe.ring_offset + ring_bytes
    geometry = Geometry.for_size(
        segment_bytes, average_record_bytes=segment_bytes // max_entries
    )
    assert geometry.ring_bytes == ring_bytes
    assert geometry.max_entries == max_entries
    buf = bytearray(segment_bytes)
    format_segment(buf, geometry, fingerprint=1, created_at=0.0, creator_pid=1)
    return buf, Ring(buf, read_geometry(buf))


class RingModel:
    """A dict of live entries plus the ring's records in logical order.

    Eviction follows the ring's rule exactly: a record goes at the head, or at
    the start of the next lap when it does not fit before the ring's end; every
    record starting less than one ring length before the new record's end is
    dropped, and more from the oldest end while the entry limit would be
    exceeded. Dead records (replaced or purged) still take their space.
    """

    def __init__(self, ring_bytes: int, max_entries: int) -> None:
        self.ring_bytes = ring_bytes
        self.max_entries = max_entries
        self.head = 0
        self.records: collections.deque[list[object]] = collections.deque()
        self.live: dict[bytes, tuple[Entry, list[object]]] = {}
        self.evictions = 0
        self.puts = 0

    def put(self, entry: Entry) -> bool:
        size = record_size(entry)
        if size > self.ring_bytes:
            return False
        room = self.ring_bytes - self.head % self.ring_bytes
        position = self.head if size <= room else self.head + room
        limit = position + size - self.ring_bytes
        while self.records:
            replaces = entry.key in self.live
            over_limit = len(self.live) - replaces + 1 > self.max_entries
            start, _, key = self.records[0]
            assert isinstance(start, int)
            if start >= limit and not over_limit:
                break
            self.records.popleft()
            if isinstance(key, bytes):
                del self.live[key]
                self.evictions += 1
        self._kill(entry.key)
        record: list[object] = [position, size, entry.key]
        self.records.append(record)
        self.live[entry.key] = (entry, record)
        self.head = position + size
        self.puts += 1
        return True

    def _kill(self, key: bytes) -> bool:
        found = self.live.pop(key, None)
        if found is None:
            return False
        found[1][2] = None
        return True

    def purge(self, key: bytes) -> bool:
        return self._kill(key)

    def purge_prefix(self, prefix: bytes) -> int:
        keys = [key for key in self.live if key.startswith(prefix)]
        for key in keys:
            self._kill(key)
        return len(keys)

    def purge_all(self) -> int:
        purged = len(self.live)
        self.live.clear()
        self.records.clear()
        return purged

    def bytes_used(self) -> int:
        return sum(record_size(entry) for entry, _ in self.live.values())


class RingMachine(RuleBasedStateMachine):
    """Random puts, gets, purges and repairs agree with :class:`RingModel`."""

    def digest(self, key: bytes) -> int:
        return xxhash.xxh3_64_intdigest(key)

    @initialize(
        ring_bytes=st.sampled_from([4096, 6144, 12288, 32768]),
        max_entries=st.sampled_from([8, 16]),
    )
    def start(self, ring_bytes: int, max_entries: int) -> None:
        self.buf, self.ring = make_ring(ring_bytes, max_entries)
        self.model = RingModel(ring_bytes, max_entries)
        self.version = 0

    @rule(
        key=st.sampled_from(KEYS),
        # Mostly small pages, so that the entry limit is reached as well.
        size=st.one_of(
            st.integers(0, 64),
            st.integers(0, 64),
            st.integers(0, 300),
            st.integers(0, 5000),
        ),
        br=st.booleans(),
        gzip=st.booleans(),
    )
    def put(self, key: bytes, size: int, br: bool, gzip: bool) -> None:
        self.version += 1
        entry = make_entry(key, self.version, size, br, gzip)
        self.ring.begin_mutation(1)
        stored = self.ring.put(entry, self.digest(key))
        self.ring.end_mutation()
        assert stored == self.model.put(entry)

    @rule(key=st.sampled_from(KEYS))
    def purge(self, key: bytes) -> None:
        assert self.ring.purge(key, self.digest(key)) == self.model.purge(key)

    @rule(prefix=st.sampled_from(PREFIXES))
    def purge_prefix(self, prefix: bytes) -> None:
        assert self.ring.purge_prefix(prefix) == self.model.purge_prefix(prefix)

    @precondition(lambda self: self.version % 5 == 4)
    @rule()
    def purge_all(self) -> None:
        assert self.ring.purge_all() == self.model.purge_all()

    @rule()
    def repair(self) -> None:
        # A rebuild from the records alone must change nothing visible.
        self.ring.repair()

    @invariant()
    def same_entries(self) -> None:
        for key in KEYS:
            expected = self.model.live.get(key)
            assert self.ring.get(key, self.digest(key)) == (
                None if expected is None else expected[0]
            )

    @invariant()
    def same_counters(self) -> None:
        assert load(self.buf, HeaderField.ENTRIES) == len(self.model.live)
        assert load(self.buf, HeaderField.BYTES_USED) == self.model.bytes_used()
        assert load(self.buf, HeaderField.EVICTIONS) == self.model.evictions
        assert load(self.buf, HeaderField.PUTS) == self.model.puts
        assert load(self.buf, HeaderField.TAIL) <= load(self.buf, HeaderField.HEAD)


class CollidingRingMachine(RingMachine):
    """The same, with every key on one digest: only full-key compares tell
    entries apart."""

    def digest(self, key: bytes) -> int:
        return 7


MACHINE_SETTINGS = settings(
    max_examples=100,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestRingModel = RingMachine.TestCase
TestRingModel.settings = MACHINE_SETTINGS
TestCollidingRingModel = CollidingRingMachine.TestCase
TestCollidingRingModel.settings = MACHINE_SETTINGS


# The PageStore API over a real shared-memory segment.


@pytest.fixture
def store(tmp_path: Path) -> Iterator[PageStore]:
    name = f"enddel-test-{uuid.uuid4().hex[:12]}"
    page_store = open_store(name, 1 << 20, lock_dir=tmp_path)
    yield page_store
    page_store.close()
    assert not Path("/dev/shm", name).exists()


def test_store_round_trip(store: PageStore) -> None:
    entry = make_entry(b"v1\0/shop?page=2", 3, 3000, br=True, gzip=False)
    assert store.put(entry)
    assert store.get(entry.key) == entry
    assert store.get(b"v1\0/shop?page=3") is None


def test_store_replaces_same_key(store: PageStore) -> None:
    first = make_entry(b"v1\0/", 1, 100, br=False, gzip=True)
    second = make_entry(b"v1\0/", 2, 200, br=True, gzip=True)
    store.put(first)
    store.put(second)
    assert store.get(b"v1\0/") == second
    assert store.statistics().entries == 1


def test_store_rejects_entry_larger_than_ring(store: PageStore) -> None:
    capacity = store.statistics().capacity
    entry = make_entry(b"v1\0/huge", 1, capacity, br=False, gzip=False)
    assert not store.put(entry)
    assert store.get(entry.key) is None
    assert store.statistics().puts == 0


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("status", 42, "not an HTTP status"),
        ("ttl", float("inf"), "ttl=inf"),
        ("stale_ttl", -1.0, "stale_ttl=-1.0"),
        ("headers", (("x-a", "b\0c"),), "contains NUL"),
    ],
)
def test_store_rejects_invalid_entry(
    store: PageStore, field: str, value: object, message: str
) -> None:
    entry = make_entry(b"v1\0/", 1, 10, br=False, gzip=False)
    fields = {name: getattr(entry, name) for name in Entry.__slots__}
    fields[field] = value
    with pytest.raises(ValueError, match=message):
        store.put(Entry(**fields))


def test_store_purges(store: PageStore) -> None:
    for key in KEYS:
        store.put(make_entry(key, 1, 50, br=False, gzip=False))
    assert store.purge(b"v1\0/b")
    assert not store.purge(b"v1\0/b")
    assert store.purge_prefix(b"v1\0/a") == 3
    assert store.get(b"v1\0/a/b") is None
    assert store.get(b"v1\0/") is not None
    assert store.purge_all() == len(KEYS) - 4
    assert store.statistics().entries == 0
    assert store.statistics().bytes_used == 0


def test_store_statistics_counts(store: PageStore) -> None:
    entry = make_entry(b"v1\0/", 1, 10, br=False, gzip=False)
    store.put(entry)
    store.get(entry.key)
    store.get(entry.key)
    store.get(b"v1\0/missing")
    statistics = store.statistics()
    assert statistics == StoreStatistics(
        entries=1,
        bytes_used=record_size(entry),
        capacity=statistics.capacity,
        evictions=0,
        puts=1,
        hits=2,
        misses=1,
    )
    assert statistics.capacity > 0


def test_store_claims(store: PageStore) -> None:
    assert not store.is_claimed(b"k")
    assert store.claim(b"k", 30.0)
    assert store.is_claimed(b"k")
    assert not store.claim(b"k", 30.0)
    assert store.claim(b"other", 30.0)
    store.release(b"k")
    assert not store.is_claimed(b"k")
    assert store.is_claimed(b"other")


def test_store_closed_raises(tmp_path: Path) -> None:
    name = f"enddel-test-{uuid.uuid4().hex[:12]}"
    page_store = open_store(name, 1 << 20, lock_dir=tmp_path)
    page_store.close()
    page_store.close()
    with pytest.raises(StoreClosedError, match="is closed"):
        page_store.get(b"k")


# Claims in isolation, on explicit times and liveness.


def make_claims(alive: set[int]) -> Claims:
    buf, _ = make_ring(4096, 8)
    geometry = read_geometry(buf)
    return Claims(buf, geometry, lambda pid, started: pid in alive)


def test_claim_expires_after_lease() -> None:
    claims = make_claims({10, 20})
    digest = xxhash.xxh3_128_digest(b"k")
    assert claims.claim(digest, 10, 0, lease=5.0, now=100.0)
    assert claims.is_claimed(digest, now=104.9)
    assert not claims.claim(digest, 20, 0, lease=5.0, now=104.9)
    assert not claims.is_claimed(digest, now=105.0)
    assert claims.claim(digest, 20, 0, lease=5.0, now=105.0)


def test_claim_ends_when_owner_dies() -> None:
    alive = {10, 20}
    claims = make_claims(alive)
    digest = xxhash.xxh3_128_digest(b"k")
    assert claims.claim(digest, 10, 0, lease=60.0, now=0.0)
    alive.discard(10)
    assert not claims.is_claimed(digest, now=1.0)
    assert claims.claim(digest, 20, 0, lease=60.0, now=1.0)


def test_release_keeps_other_owners_mark() -> None:
    claims = make_claims({10, 20})
    digest = xxhash.xxh3_128_digest(b"k")
    assert claims.claim(digest, 10, 0, lease=60.0, now=0.0)
    claims.release(digest, 20)
    assert claims.is_claimed(digest, now=1.0)


def test_claim_window_full_still_renders() -> None:
    claims = make_claims({os.getpid()})
    # Digests that share a home slot: the low 8 bytes pick the slot.
    digests = [bytes(8) + index.to_bytes(8, "little") for index in range(17)]
    for digest in digests[:16]:
        assert claims.claim(digest, os.getpid(), 0, lease=60.0, now=0.0)
    assert claims.claim(digests[16], os.getpid(), 0, lease=60.0, now=0.0)
    assert not claims.is_claimed(digests[16], now=0.0)


def test_late_release_keeps_newer_mark() -> None:
    claims = make_claims({10})
    digest = xxhash.xxh3_128_digest(b"k")
    assert claims.claim(digest, 10, 0, lease=5.0, now=0.0, token=1)
    # The first render outlived its lease; another task of the process claims.
    assert claims.claim(digest, 10, 0, lease=5.0, now=6.0, token=2)
    claims.release(digest, 10, token=1)
    assert claims.is_claimed(digest, now=7.0)
    claims.release(digest, 10, token=2)
    assert not claims.is_claimed(digest, now=7.0)


def test_release_without_token_drops_every_mark() -> None:
    claims = make_claims({10})
    digest = xxhash.xxh3_128_digest(b"k")
    assert claims.claim(digest, 10, 0, lease=5.0, now=0.0, token=1)
    assert claims.claim(digest, 10, 0, lease=5.0, now=6.0, token=2)
    claims.release(digest, 10)
    assert not claims.is_claimed(digest, now=1.0)
    assert not claims.is_claimed(digest, now=7.0)


def test_store_claim_tokens(store: PageStore) -> None:
    first = store.claim(b"k", 30.0)
    assert first is not None
    assert store.claim(b"k", 30.0) is None
    other = store.claim(b"other", 30.0)
    assert other is not None
    assert other != first
    store.release(b"k", other)
    assert store.is_claimed(b"k")
    store.release(b"k", first)
    assert not store.is_claimed(b"k")
    assert store.is_claimed(b"other")


def test_kept_copies_follow_the_shared_ring() -> None:
    buf, writer = make_ring(64 * 1024, 64)
    reader = Ring(buf, read_geometry(buf))
    key = b"v\0/page"
    digest = xxhash.xxh3_64_intdigest(key)

    def put(entry: Entry) -> None:
        writer.begin_mutation(1)
        assert writer.put(entry, digest)
        writer.end_mutation()

    first = make_entry(key, 1, 500, True, False)
    put(first)
    assert reader.get(key, digest) == first
    assert reader.get(key, digest) == first  # the kept copy, checked live
    second = make_entry(key, 2, 500, False, True)
    put(second)
    assert reader.get(key, digest) == second
    assert writer.purge(key, digest)
    assert reader.get(key, digest) is None
    put(first)
    assert reader.get(key, digest) == first
    assert writer.purge_all() == 1
    assert reader.get(key, digest) is None


def test_kept_copy_of_a_purged_record_is_not_returned() -> None:
    # A reader that took the index's reference just before a purge or an
    # eviction still checks the record itself before it returns its copy.
    buf, writer = make_ring(64 * 1024, 64)
    reader = Ring(buf, read_geometry(buf))
    key = b"v\0/page"
    digest = xxhash.xxh3_64_intdigest(key)
    writer.begin_mutation(1)
    writer.put(make_entry(key, 1, 500, True, True), digest)
    writer.end_mutation()
    assert reader.get(key, digest) is not None
    logical = reader._recent[key][0]
    assert reader._recent_entry(logical, key) is not None

    assert writer.purge(key, digest)
    assert reader._recent_entry(logical, key) is None

    writer.begin_mutation(1)
    writer.put(make_entry(key, 2, 500, True, True), digest)
    writer.end_mutation()
    assert reader.get(key, digest) is not None
    logical = reader._recent[key][0]
    for index in range(200):  # evict it: the tail passes its record
        other = f"v\0/other/{index}".encode()
        writer.begin_mutation(1)
        writer.put(
            make_entry(other, index, 500, False, False), xxhash.xxh3_64_intdigest(other)
        )
        writer.end_mutation()
    assert reader._recent_entry(logical, key) is None
    assert reader.get(key, digest) is None
