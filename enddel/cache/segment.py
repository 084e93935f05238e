"""Shared-memory segments of the page cache: create, attach, check, detach.

Lifecycle. Every process of one server opens the same named segment. Opening
takes the segment's writer lock (``flock`` on ``<lock dir>/<name>.lock``), then:

- no segment of that name: create it, reserve its memory, format it;
- a segment with a valid header and the same size and fingerprint: attach;
  a persistent one that no live process is attached to is first repaired
  (every record's checksum checked) rather than trusted;
- a segment with a bad header, or left by processes that are all dead (a
  crashed server, or a reused master PID), or with other settings and no live
  process: reset, that is unlinked and created anew;
- a segment with other settings still attached to a live process: raise
  ConfigError, because two servers would share one cache by accident.

Each attached process owns one row of the attach table (pid, process start
time, hit and miss counters). Closing clears the row. Rows of dead processes
are found by PID and start time (a reused PID has another start time) and
folded into the retired counters.

Removal. A persistent segment is never removed. A temporary segment opened
with a ``master`` (the server's parent process) is guarded by a janitor
process (:mod:`enddel.cache.janitor`), which the opener starts when no live
janitor is recorded in the header. The janitor removes the segment and the
lock file after the master has exited and no attached process is left, so the
segment outlives any number of server processes that come and go under one
master. While a live janitor guards it, a segment with no attached process is
repaired and reused, not reset. Without a live janitor (no master given, or
the janitor was killed) the last process to close the segment removes it, and
a segment that every process left without closing is reset by the next open.

On Python 3.11, ``SharedMemory`` registers every segment it creates or attaches
with multiprocessing's resource tracker, which unlinks it when that one process
exits and warns about a "leak". Each open unregisters right away, so one
worker's exit never removes the cache of the others.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import mmap
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from multiprocessing import resource_tracker
from multiprocessing.shared_memory import SharedMemory
from pathlib import Path
from types import TracebackType
from typing import Final

from enddel.cache.layout import (
    ATTACH_ROW,
    HEADER_BYTES,
    Geometry,
    HeaderField,
    LayoutError,
    format_segment,
    load,
    read_geometry,
    store,
)
from enddel.cache.ring import Ring
from enddel.config import ConfigError
from enddel.logs import cache_log

__all__ = [
    "SHM_DIR",
    "Segment",
    "WriterLock",
    "check_shm_space",
    "open_segment",
    "process_alive",
    "process_start_ticks",
    "remove_unattached",
]

#: Mount point of POSIX shared memory on Linux; its free space bounds the segment.
SHM_DIR: Final = Path("/dev/shm")
_TRACKER_TYPE: Final = "shared_memory"
_HAS_PROC: Final = Path("/proc/self/stat").exists()
#: Seconds a new janitor gets to report its PID. Its start-up (Python and the
#: enddel.cache imports) took 0.4 to 0.8 s on the two-core development machine
#: at a load average of 10. Past this limit the server runs without a janitor.
JANITOR_START_TIMEOUT: Final = 10.0


def process_start_ticks(pid: int) -> int | None:
    """Return the start time of process ``pid`` in clock ticks since boot, or
    None when it is not running (zombies count as not running)."""
    if not _HAS_PROC:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:  # exists, owned by another user
            return 0
        return 0
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except (FileNotFoundError, ProcessLookupError):  # exited, or exiting now
        return None
    # Fields after the command name, which may itself contain ") ".
    fields = data.rsplit(b")", 1)[1].split()
    if fields[0] in (b"Z", b"X"):
        return None
    return int(fields[19])


def process_alive(pid: int, started: int) -> bool:
    """Return whether ``pid`` runs and is the process that started at ``started``."""
    ticks = process_start_ticks(pid)
    return ticks is not None and (started == 0 or ticks == started)


def check_shm_space(size_bytes: int, free_bytes: int) -> None:
    """Raise ConfigError when ``/dev/shm`` cannot hold a segment of ``size_bytes``.

    tmpfs hands out pages lazily, so a segment larger than the free space would
    be created fine and then kill the server with SIGBUS on a later write.
    """
    if size_bytes > free_bytes:
        raise ConfigError(
            f"ENDDEL_CACHE_BYTES={size_bytes} does not fit in {SHM_DIR}, which has "
            f"{free_bytes} bytes free. Lower ENDDEL_CACHE_BYTES, set it to 0 to "
            f"disable the page cache, or give {SHM_DIR} more room (for Docker: "
            "docker run --shm-size=...)."
        )


def _shm_free_bytes() -> int | None:
    try:
        stats = os.statvfs(SHM_DIR)
    except FileNotFoundError:  # no /dev/shm: not Linux, nothing to check
        return None
    return stats.f_bavail * stats.f_frsize


class WriterLock:
    """The segment's writer lock: ``flock`` on a file, plus a thread lock.

    The kernel drops an ``flock`` when its holder dies, so a writer killed
    mid-write never blocks the others. ``flock`` does not exclude threads of
    one process that share the descriptor, hence the thread lock.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = -1
        self._threads = threading.Lock()

    def __enter__(self) -> None:
        self._threads.acquire()
        try:
            self._lock_file()
        except BaseException:
            self._threads.release()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._threads.release()

    def _lock_file(self) -> None:
        while True:
            if self._fd < 0:
                flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
                self._fd = os.open(self.path, flags, 0o600)
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            if self._holds_current_file():
                return
            # The last process to detach removed the file after we opened it:
            # a lock on that orphan excludes nobody, so lock the new file.
            os.close(self._fd)
            self._fd = -1

    def _holds_current_file(self) -> bool:
        try:
            on_disk = os.stat(self.path)
        except FileNotFoundError:
            return False
        held = os.fstat(self._fd)
        return (on_disk.st_dev, on_disk.st_ino) == (held.st_dev, held.st_ino)

    def remove(self) -> None:
        """Unlink the lock file; call with the lock held."""
        with contextlib.suppress(FileNotFoundError):  # removed already: fine
            os.unlink(self.path)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class Segment:
    """One process's attachment to a named segment: memory, lock and table row."""

    def __init__(
        self,
        shm: SharedMemory,
        geometry: Geometry,
        lock: WriterLock,
        *,
        persist: bool,
        pid: int,
        started: int,
        row_offset: int,
    ) -> None:
        self.shm = shm
        self.name = shm.name
        self.buf = _buffer(shm)
        self.geometry = geometry
        self.lock = lock
        self.persist = persist
        self.pid = pid
        self.started = started
        self.row_offset = row_offset

    def attached_pids(self) -> list[int]:
        """PIDs of the live processes attached to this segment."""
        return [pid for _, pid, _ in _rows(self.buf, self.geometry) if pid]

    def janitor_pid(self) -> int | None:
        """PID of the live janitor that guards this segment, or None."""
        with self.lock:
            return _live_janitor(self.buf)

    def close(self) -> bool:
        """Detach. Returns whether the segment was unlinked, which happens only
        when this was the last live process, the segment is not persistent and
        no live janitor guards it (the janitor removes it later instead)."""
        with self.lock:
            _fold_row(self.buf, self.row_offset)
            live = _sweep_rows(self.buf, self.geometry)
            guarded = _live_janitor(self.buf) is not None
            unlink = live == 0 and not self.persist and not guarded
            if unlink:
                _unlink(self.shm)
                self.lock.remove()
        self.lock.close()
        self.buf = memoryview(b"")
        self.shm.close()
        return unlink


def open_segment(
    name: str,
    size_bytes: int,
    *,
    persist: bool,
    lock_dir: Path,
    fingerprint: int,
    master: int | None = None,
) -> Segment:
    """Attach to segment ``name``, creating or resetting it as described above.

    ``master`` is the PID of the process whose exit ends a temporary segment.
    When it is given, a janitor is started unless a live one guards the segment.
    """
    lock = WriterLock(lock_dir / f"{name}.lock")
    pid = os.getpid()
    started = process_start_ticks(pid) or 0
    try:
        with lock:
            shm, geometry = _attach_or_create(name, size_bytes, persist, fingerprint)
            row_offset = _claim_row(_buffer(shm), geometry, pid, started)
            if master is not None and not persist:
                _ensure_janitor(_buffer(shm), name, lock_dir, master)
    except BaseException:
        lock.close()
        raise
    return Segment(
        shm,
        geometry,
        lock,
        persist=persist,
        pid=pid,
        started=started,
        row_offset=row_offset,
    )


def _attach_or_create(
    name: str, size_bytes: int, persist: bool, fingerprint: int
) -> tuple[SharedMemory, Geometry]:
    shm = _attach(name)
    if shm is None:
        return _create(name, size_bytes, fingerprint)
    reason = _reset_reason(shm, size_bytes, persist, fingerprint)
    if reason is None:
        geometry = read_geometry(_buffer(shm))
        if _sweep_rows(_buffer(shm), geometry) == 0:
            _repair(_buffer(shm), geometry)
        cache_log.info("attached to page cache segment %s", name)
        return shm, geometry
    cache_log.warning("resetting page cache segment %s: %s", name, reason)
    _unlink(shm)
    shm.close()
    return _create(name, size_bytes, fingerprint)


def _reset_reason(
    shm: SharedMemory, size_bytes: int, persist: bool, fingerprint: int
) -> str | None:
    """Return why the existing segment must be reset, or None to attach to it.

    Raises ConfigError when a live process uses it with other settings.
    """
    try:
        geometry = read_geometry(_buffer(shm))
    except LayoutError as error:
        return f"header is invalid ({error})"
    live = _sweep_rows(_buffer(shm), geometry)
    stored_fingerprint = load(_buffer(shm), HeaderField.FINGERPRINT)
    if geometry.segment_bytes != size_bytes or stored_fingerprint != fingerprint:
        if live:
            shm.close()
            raise ConfigError(
                f"page cache segment {shm.name!r} is in use by {live} running "
                f"process(es) with other settings ({geometry.segment_bytes} bytes, "
                f"fingerprint {stored_fingerprint:016x}; this server wants "
                f"{size_bytes} bytes, {fingerprint:016x}). Give this server its own "
                "ENDDEL_CACHE_NAME or stop the other one."
            )
        return "it was made with other settings"
    if live == 0 and not persist and _live_janitor(_buffer(shm)) is None:
        return "every process attached to it has exited"
    return None


def _attach(name: str) -> SharedMemory | None:
    try:
        shm = SharedMemory(name, create=False)
    except FileNotFoundError:  # not created yet
        return None
    _untrack(shm)
    return shm


def _create(
    name: str, size_bytes: int, fingerprint: int
) -> tuple[SharedMemory, Geometry]:
    try:
        geometry = Geometry.for_size(size_bytes)
    except LayoutError as error:
        raise ConfigError(
            f"ENDDEL_CACHE_BYTES={size_bytes} is too small: {error}."
        ) from None
    free = _shm_free_bytes()
    if free is not None:
        check_shm_space(size_bytes, free)
    shm = SharedMemory(name, create=True, size=size_bytes)
    _untrack(shm)
    try:
        _reserve(shm, size_bytes)
        format_segment(
            _buffer(shm),
            geometry,
            fingerprint=fingerprint,
            created_at=time.time(),
            creator_pid=os.getpid(),
        )
    except BaseException:
        _unlink(shm)
        shm.close()
        raise
    cache_log.info("created page cache segment %s of %d bytes", name, size_bytes)
    return shm, geometry


def _reserve(shm: SharedMemory, size_bytes: int) -> None:
    """Allocate the segment's pages now, so running out of room is an error at
    start-up rather than a SIGBUS later."""
    path = SHM_DIR / shm.name
    if not path.exists():  # no /dev/shm view of the segment: nothing to reserve
        return
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    try:
        os.posix_fallocate(fd, 0, size_bytes)
    except OSError as error:
        if error.errno != errno.ENOSPC:
            raise
        check_shm_space(size_bytes, _shm_free_bytes() or 0)
        raise
    finally:
        os.close(fd)


def _buffer(shm: SharedMemory) -> memoryview:
    buf = shm.buf
    if buf is None:
        raise LayoutError(f"segment {shm.name!r} is already closed")
    return buf


def _untrack(shm: SharedMemory) -> None:
    # SharedMemory registers under the name with its leading slash.
    resource_tracker.unregister(f"/{shm.name}", _TRACKER_TYPE)


def _unlink(shm: SharedMemory) -> None:
    # unlink() also unregisters; register first so the tracker's books balance
    # and it prints no KeyError.
    resource_tracker.register(f"/{shm.name}", _TRACKER_TYPE)
    shm.unlink()


def _repair(buf: memoryview, geometry: Geometry) -> None:
    ring = Ring(buf, geometry)
    ring.begin_mutation(os.getpid())
    ring.repair()
    ring.end_mutation()


# Attach table: each live process owns one row; only the owner writes its hit
# and miss counters, everything else happens under the writer lock.


def _rows(buf: memoryview, geometry: Geometry) -> Iterator[tuple[int, int, int]]:
    for slot in range(geometry.attach_slots):
        offset = geometry.attach_offset + slot * ATTACH_ROW.size
        pid, _, started, _, _ = ATTACH_ROW.unpack_from(buf, offset)
        yield offset, pid, started


def _fold_row(buf: memoryview, offset: int) -> None:
    """Add a row's counters to the retired totals and free the row."""
    _, _, _, hits, misses = ATTACH_ROW.unpack_from(buf, offset)
    store(buf, HeaderField.RETIRED_HITS, load(buf, HeaderField.RETIRED_HITS) + hits)
    store(
        buf, HeaderField.RETIRED_MISSES, load(buf, HeaderField.RETIRED_MISSES) + misses
    )
    ATTACH_ROW.pack_into(buf, offset, 0, 0, 0, 0, 0)


def _sweep_rows(
    buf: memoryview,
    geometry: Geometry,
    alive: Callable[[int, int], bool] = process_alive,
) -> int:
    """Free the rows of dead processes; return how many live rows remain."""
    live = 0
    for offset, pid, started in _rows(buf, geometry):
        if pid == 0:
            continue
        if alive(pid, started):
            live += 1
        else:
            cache_log.info("page cache: process %d exited without detaching", pid)
            _fold_row(buf, offset)
    return live


def _claim_row(buf: memoryview, geometry: Geometry, pid: int, started: int) -> int:
    _sweep_rows(buf, geometry)
    for offset, row_pid, _ in _rows(buf, geometry):
        if row_pid == 0:
            ATTACH_ROW.pack_into(buf, offset, pid, 0, started, 0, 0)
            return offset
    raise ConfigError(
        f"page cache segment is attached to {geometry.attach_slots} live processes, "
        "the most it can track. Run fewer server processes (hypercorn -w)."
    )


# Janitor: the process that removes a temporary segment once its master has
# exited. Its PID and start time sit in the header, written under the lock.


def _live_janitor(buf: memoryview) -> int | None:
    pid = load(buf, HeaderField.JANITOR_PID)
    started = load(buf, HeaderField.JANITOR_STARTED)
    if pid == 0 or not process_alive(pid, started):
        return None
    return pid


def _ensure_janitor(buf: memoryview, name: str, lock_dir: Path, master: int) -> None:
    """Start a janitor for segment ``name`` unless a live one is recorded."""
    if _live_janitor(buf) is not None:
        return
    if not (SHM_DIR / name).exists():
        # The janitor finds the segment through /dev/shm; without that view
        # the last process to close the segment removes it, as unguarded.
        return
    master_started = process_start_ticks(master)
    if master_started is None:
        cache_log.warning(
            "page cache segment %s has no janitor: its master process %d has "
            "exited already, so the last server process to close it removes it",
            name,
            master,
        )
        return
    janitor = _start_janitor(name, lock_dir, master, master_started)
    janitor_started = None if janitor is None else process_start_ticks(janitor)
    if janitor is None or janitor_started is None:
        store(buf, HeaderField.JANITOR_PID, 0)
        return
    store(buf, HeaderField.JANITOR_STARTED, janitor_started)
    store(buf, HeaderField.JANITOR_PID, janitor)
    cache_log.info(
        "page cache segment %s: janitor %d removes it after process %d exits",
        name,
        janitor,
        master,
    )


def _start_janitor(
    name: str, lock_dir: Path, master: int, master_started: int
) -> int | None:
    """Launch ``python -m enddel.cache.janitor`` and return the janitor's PID.

    The launched process forks the janitor into a session of its own and
    exits, printing the janitor's PID. So the janitor is nobody's child here
    (no zombie, no ``Popen`` to reap) and is outside the server's process
    group. Returns None, after logging why, when the launch failed.
    """
    command = [
        sys.executable, "-m", "enddel.cache.janitor",
        "--segment", name, "--lock-dir", str(lock_dir),
        "--master", str(master), "--master-started", str(master_started),
    ]  # fmt: skip
    try:
        launched = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            text=True,
            timeout=JANITOR_START_TIMEOUT,
            check=True,
        )
        return int(launched.stdout.strip())
    except (OSError, subprocess.SubprocessError, ValueError) as error:
        # Safe to go on: without a janitor the segment falls back to removal
        # by the last process that closes it.
        cache_log.warning(
            "page cache segment %s: starting its janitor failed (%s); the last "
            "server process to close it removes it instead",
            name,
            error,
        )
        return None


def remove_unattached(
    name: str, lock_dir: Path, janitor: int, janitor_started: int
) -> list[tuple[int, int]]:
    """Remove segment ``name`` and its lock file unless a live process is
    attached. For the janitor ``janitor`` (PID and start time) only.

    Returns the live attached processes as (pid, start time) pairs, which keep
    the segment; an empty list means that nothing is left to guard: the
    segment was removed now, was gone already, or is guarded by another
    janitor (a reset segment). The segment is mapped only during this call.
    """
    lock = WriterLock(lock_dir / f"{name}.lock")
    try:
        with lock:
            return _remove_unattached_locked(name, lock, (janitor, janitor_started))
    finally:
        lock.close()


def _remove_unattached_locked(
    name: str, lock: WriterLock, janitor: tuple[int, int]
) -> list[tuple[int, int]]:
    path = SHM_DIR / name
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:  # removed by its last process, or never formatted
        lock.remove()
        return []
    try:
        if os.fstat(fd).st_size < HEADER_BYTES:  # its creator died half-way
            return []
        with mmap.mmap(fd, 0) as mapped:
            view = memoryview(mapped)
            try:
                keepers = _attached_processes(view, name, janitor)
            finally:
                view.release()
    finally:
        os.close(fd)
    if keepers is None:
        return []
    if not keepers:
        os.unlink(path)
        lock.remove()
        cache_log.info("removed page cache segment %s: its server has exited", name)
    return keepers


def _attached_processes(
    buf: memoryview, name: str, janitor: tuple[int, int]
) -> list[tuple[int, int]] | None:
    """Return the live processes attached to ``buf``, or None when the
    segment is not guarded by ``janitor``."""
    try:
        geometry = read_geometry(buf)
    except LayoutError as error:
        cache_log.info("page cache segment %s was replaced (%s)", name, error)
        return None
    recorded = (
        load(buf, HeaderField.JANITOR_PID),
        load(buf, HeaderField.JANITOR_STARTED),
    )
    if recorded != janitor:
        cache_log.info(
            "page cache segment %s is guarded by janitor %d now", name, recorded[0]
        )
        return None
    _sweep_rows(buf, geometry)
    return [(pid, started) for _, pid, started in _rows(buf, geometry) if pid]
