"""The page store: the page cache as one server process sees it.

:class:`PageStore` joins a shared-memory :class:`~enddel.cache.segment.Segment`,
the record :class:`~enddel.cache.ring.Ring` in it and the claim table. Every
method is synchronous and safe to call on the event loop thread: :meth:`get`
takes no lock and makes no system call, and every other method holds the
writer lock for a bounded amount of work (one copy of an entry, or one walk
of the ring for :meth:`purge_prefix`).

Segment names. Without ``ENDDEL_CACHE_NAME`` the name is
``enddel-<master pid>-<fingerprint>``: hypercorn's master spawns every server
process, so they all share ``os.getppid()``, while a second server on the same
machine has another master. The fingerprint, a hash of the cache size, the
bundle and the client build paths, keeps two servers started by one parent
(a test run, a supervisor) with other settings apart. Such a segment lives
exactly as long as that parent: a janitor process (:mod:`enddel.cache.janitor`)
removes it once the parent has exited and no server process is attached, so
server processes that hypercorn restarts keep the cache. When the server runs
inside another program (``hypercorn.trio.serve`` in a test, say), the parent
is that program's parent (a shell, pytest's runner): the segment then stays
until that process exits, and a server started again under it reuses the
cache. With ``ENDDEL_CACHE_NAME`` the name is ``enddel-<cache name>`` and the
segment outlives restarts.
"""

from __future__ import annotations

import dataclasses
import enum
import itertools
import os
import struct
import tempfile
import time
from pathlib import Path
from typing import Final, NewType

import xxhash

from enddel.cache.layout import ATTACH_ROW, Entry, HeaderField, load
from enddel.cache.ring import Claims, Ring
from enddel.cache.segment import SHM_DIR, Segment, open_segment, process_alive
from enddel.config import Config, ConfigError

__all__ = [
    "ClaimToken",
    "PageStore",
    "StoreClosedError",
    "StoreStatistics",
    "open_page_store",
    "open_store",
    "segment_name",
    "settings_fingerprint",
]

_COUNTER = struct.Struct("<Q")
#: Offsets of the hit and miss counters inside an attach table row.
_HITS: Final = 16
_MISSES: Final = 24
#: Segment name prefix, so enddel's segments are recognisable in /dev/shm.
NAME_PREFIX: Final = "enddel-"
#: Claim tokens are u32 in the claim table; 0 is never handed out.
_TOKEN_LIMIT: Final = 1 << 32

#: Proof of one :meth:`PageStore.claim`, unique within this process until 2**32
#: claims later; pass it to :meth:`PageStore.release`.
ClaimToken = NewType("ClaimToken", int)


class StoreClosedError(RuntimeError):
    """A PageStore method was called after close()."""


class _State(enum.Enum):
    OPEN = "open"
    CLOSED = "closed"


@dataclasses.dataclass(frozen=True, slots=True)
class StoreStatistics:
    """Server-wide page cache totals, summed over every attached process."""

    entries: int
    bytes_used: int  # bytes of live records, headers included
    capacity: int  # bytes of the record ring
    evictions: int  # live entries dropped to make room
    puts: int
    hits: int  # get() calls that returned an entry
    misses: int  # get() calls that returned None


class PageStore:
    """A process's handle on the shared page cache. Close it with :meth:`close`."""

    def __init__(self, segment: Segment) -> None:
        self._segment = segment
        self._buf = segment.buf
        self._ring = Ring(segment.buf, segment.geometry)
        self._claims = Claims(segment.buf, segment.geometry, process_alive)
        self._lock = segment.lock
        self._pid = segment.pid
        self._hits_offset = segment.row_offset + _HITS
        self._misses_offset = segment.row_offset + _MISSES
        self._hits = 0
        self._misses = 0
        self._tokens = itertools.count(1)
        self._state = _State.OPEN

    @property
    def name(self) -> str:
        """Name of the shared-memory segment."""
        return self._segment.name

    def get(self, key: bytes) -> Entry | None:
        """Return the entry stored under ``key``, fresh or not, or None.

        Takes no lock. Freshness is the caller's decision (``stored_at``,
        ``ttl`` and ``stale_ttl`` are in the entry).
        """
        self._check_open()
        entry = self._ring.get(key, xxhash.xxh3_64_intdigest(key))
        # Only this process writes its own row, so a plain store is exact.
        if entry is None:
            self._misses += 1
            _COUNTER.pack_into(self._buf, self._misses_offset, self._misses)
        else:
            self._hits += 1
            _COUNTER.pack_into(self._buf, self._hits_offset, self._hits)
        return entry

    def put(self, entry: Entry) -> bool:
        """Store ``entry``, replacing any entry under its key and evicting the
        oldest entries for room. Returns False when it is larger than the ring.

        Raises ValueError for an entry that cannot be stored as given (status
        outside 100-999, negative or infinite times, NUL in a header).
        """
        self._check_open()
        digest = xxhash.xxh3_64_intdigest(entry.key)
        with self._lock:
            self._ring.begin_mutation(self._pid)
            stored = self._ring.put(entry, digest)
            self._ring.end_mutation()
        return stored

    def purge(self, key: bytes) -> bool:
        """Remove the entry under ``key``; return whether there was one."""
        self._check_open()
        digest = xxhash.xxh3_64_intdigest(key)
        with self._lock:
            self._ring.begin_mutation(self._pid)
            purged = self._ring.purge(key, digest)
            self._ring.end_mutation()
        return purged

    def purge_prefix(self, prefix: bytes) -> int:
        """Remove every entry whose full key starts with ``prefix``; return how
        many. Walks the whole ring under the lock."""
        self._check_open()
        with self._lock:
            self._ring.begin_mutation(self._pid)
            purged = self._ring.purge_prefix(prefix)
            self._ring.end_mutation()
        return purged

    def purge_all(self) -> int:
        """Remove every entry; return how many there were."""
        self._check_open()
        with self._lock:
            self._ring.begin_mutation(self._pid)
            purged = self._ring.purge_all()
            self._ring.end_mutation()
        return purged

    def claim(self, key: bytes, lease: float) -> ClaimToken | None:
        """Mark ``key`` as being rendered by this process for ``lease`` seconds.

        Returns a token (always true) when the caller now owns the render,
        None when another live owner holds an unexpired mark (in this process
        or another). A mark ends with :meth:`release`, when the lease runs
        out, or when its owner process dies.
        """
        self._check_open()
        if not lease > 0:
            raise ValueError(f"lease={lease!r}: expected seconds greater than 0")
        digest = xxhash.xxh3_128_digest(key)
        token = self._next_token()
        with self._lock:
            claimed = self._claims.claim(
                digest, self._pid, self._segment.started, lease, time.time(), token
            )
        return token if claimed else None

    def release(self, key: bytes, token: ClaimToken | None = None) -> None:
        """Drop the mark on ``key`` that :meth:`claim` returned ``token`` for.

        Without ``token``, every mark of this process on ``key`` goes, which
        after a lease ran out includes a mark that another task took since.
        """
        self._check_open()
        digest = xxhash.xxh3_128_digest(key)
        with self._lock:
            self._claims.release(digest, self._pid, token)

    def is_claimed(self, key: bytes) -> bool:
        """Return whether a live process has an unexpired mark on ``key``."""
        self._check_open()
        return self._claims.is_claimed(xxhash.xxh3_128_digest(key), time.time())

    def statistics(self) -> StoreStatistics:
        """Return the server-wide totals, read under the lock."""
        self._check_open()
        buf = self._buf
        geometry = self._segment.geometry
        with self._lock:
            hits = load(buf, HeaderField.RETIRED_HITS)
            misses = load(buf, HeaderField.RETIRED_MISSES)
            for slot in range(geometry.attach_slots):
                row = geometry.attach_offset + slot * ATTACH_ROW.size
                hits += load(buf, row + _HITS)
                misses += load(buf, row + _MISSES)
            return StoreStatistics(
                entries=load(buf, HeaderField.ENTRIES),
                bytes_used=load(buf, HeaderField.BYTES_USED),
                capacity=geometry.ring_bytes,
                evictions=load(buf, HeaderField.EVICTIONS),
                puts=load(buf, HeaderField.PUTS),
                hits=hits,
                misses=misses,
            )

    def close(self) -> None:
        """Detach. Closing twice does nothing.

        A temporary segment guarded by a live janitor stays after the last
        close, for the next server process under the same master; an
        unguarded one is removed by the last process to close it.
        """
        if self._state is _State.CLOSED:
            return
        self._state = _State.CLOSED
        self._buf = memoryview(b"")
        self._ring = Ring(bytearray(), self._segment.geometry)
        self._claims = Claims(bytearray(), self._segment.geometry, process_alive)
        self._segment.close()

    def _next_token(self) -> ClaimToken:
        return ClaimToken(next(self._tokens) % (_TOKEN_LIMIT - 1) + 1)

    def _check_open(self) -> None:
        if self._state is _State.CLOSED:
            raise StoreClosedError(
                f"page store {self._segment.name!r} is closed; open a new one "
                "with open_page_store()"
            )


def segment_name(config: Config) -> str:
    """Name of the segment that every process of this server attaches to."""
    return _segment_name(config, os.getppid())


def _segment_name(config: Config, master: int) -> str:
    if config.cache_name is not None:
        return NAME_PREFIX + config.cache_name
    return f"{NAME_PREFIX}{master}-{settings_fingerprint(config):016x}"


def settings_fingerprint(config: Config) -> int:
    """Hash of the settings that must match for processes to share a segment."""
    settings = f"{config.cache_bytes}\0{config.bundle}\0{config.client_dir}"
    return xxhash.xxh3_64_intdigest(settings.encode())


def default_lock_dir() -> Path:
    """``/dev/shm`` when present, because lock files there share the segments'
    lifetime (both vanish at reboot); the temporary directory otherwise."""
    if SHM_DIR.is_dir():
        return SHM_DIR
    return Path(tempfile.gettempdir())


def open_page_store(config: Config) -> PageStore:
    """Open this server's page cache, named and sized from ``config``.

    A temporary segment (no ``cache_name``) is guarded by a janitor that
    removes it once this process's parent has exited. Raises ConfigError when
    the cache is disabled (``cache_bytes == 0``), when ``/dev/shm`` cannot
    hold it, or when another running server uses the segment name with other
    settings.
    """
    if config.cache_bytes == 0:
        raise ConfigError(
            "ENDDEL_CACHE_BYTES=0 disables the page cache; check "
            "config.cache_bytes before calling open_page_store()."
        )
    persist = config.cache_name is not None
    master = os.getppid()
    return open_store(
        _segment_name(config, master),
        config.cache_bytes,
        persist=persist,
        lock_dir=default_lock_dir(),
        fingerprint=settings_fingerprint(config),
        master=None if persist else master,
    )


def open_store(
    name: str,
    size_bytes: int,
    *,
    persist: bool = False,
    lock_dir: Path | None = None,
    fingerprint: int = 0,
    master: int | None = None,
) -> PageStore:
    """Open the page store in segment ``name`` of ``size_bytes`` bytes.

    With ``master`` (a PID), a temporary segment is kept until that process
    has exited; without, until its last process closes it.
    """
    segment = open_segment(
        name,
        size_bytes,
        persist=persist,
        lock_dir=default_lock_dir() if lock_dir is None else lock_dir,
        fingerprint=fingerprint,
        master=master,
    )
    return PageStore(segment)
