"""Several real processes on one segment: readers, writers, and writers killed
with SIGKILL in the middle of a write."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from enddel.cache import Entry
from enddel.cache.layout import HeaderField, load
from enddel.cache.store import PageStore, open_store

SEGMENT_BYTES = 4 << 20
KEY_COUNT = 24
#: Upper bound on a reader's loop, in case the stop file never appears.
MAX_GETS = "200000"

#: Shared by every child: entries whose whole content follows from the key and
#: a version number carried in the ETag, so a reader can check any entry it
#: gets without knowing who wrote it or when.
COMMON = r"""
import json, os, random, sys, time
from pathlib import Path
import xxhash
from enddel.cache import Entry
from enddel.cache.store import open_store

def make_entry(key, version):
    seed = xxhash.xxh3_128_digest(key + version.to_bytes(8, "little"))
    size = 20_000 + int.from_bytes(seed[:4], "little") % 400_000
    body = (seed * (size // 16 + 1))[:size]
    return Entry(key=key, status=200, headers=(("x-key", key.hex()),),
                 body=body, body_br=body[::3], body_gzip=body[::5],
                 etag=str(version), stored_at=float(version), ttl=60.0,
                 stale_ttl=30.0)

def check(entry, key):
    if entry is None:
        return "miss"
    if entry != make_entry(key, int(entry.etag)):
        return "wrong"
    return "hit"

KEYS = [b"v1\0/page/%d" % i for i in range(KEY_COUNT)]
store = open_store(sys.argv[1], int(sys.argv[2]), lock_dir=Path(sys.argv[3]))
"""

WRITER = r"""
rng = random.Random(os.getpid())
# Built before the loop, so the writer spends its time inside put().
entries = [make_entry(rng.choice(KEYS), (os.getpid() << 24) + n) for n in range(8)]
print("ready", flush=True)
while True:
    for entry in entries:
        store.put(entry)
        print("wrote", flush=True)
"""

READER = r"""
rng = random.Random(os.getpid())
counts = {"hit": 0, "miss": 0, "wrong": 0}
stop = Path(sys.argv[4])
print("ready", flush=True)
for turn in range(int(sys.argv[5])):
    if turn % 64 == 0 and stop.exists():
        break
    key = rng.choice(KEYS)
    counts[check(store.get(key), key)] += 1
store.close()
print(json.dumps(counts), flush=True)
"""

#: A writer that stops for good half-way through copying a record in, holding
#: the lock and with the writer mark set, until it is killed.
STUCK_WRITER = r"""
from enddel.cache import ring
def write_half(self, logical, length, entry, digest):
    start = self._ring_offset + logical % self._ring_bytes
    self._buf[start : start + length // 2] = os.urandom(length // 2)
    print("stuck", flush=True)
    time.sleep(3600)
ring.Ring._write_record = write_half
store.put(make_entry(KEYS[0], 1))
"""


def spawn(code: str, name: str, lock_dir: Path, *args: str) -> subprocess.Popen[str]:
    constants = f"KEY_COUNT = {KEY_COUNT}\n"
    program = constants + COMMON + code
    process = subprocess.Popen(
        [sys.executable, "-c", program, name, str(SEGMENT_BYTES), str(lock_dir), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    assert line in ("ready", "stuck"), process.stderr.read() if process.stderr else ""
    return process


def wait_for_writes(process: subprocess.Popen[str], count: int) -> None:
    assert process.stdout is not None
    for _ in range(count):
        assert process.stdout.readline().strip() == "wrote"


def kill(process: subprocess.Popen[str]) -> str:
    process.send_signal(signal.SIGKILL)
    _, stderr = process.communicate(timeout=30)
    return stderr


def finish(process: subprocess.Popen[str]) -> dict[str, int]:
    """Wait for a reader and return its counts of hits, misses and wrong entries."""
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    counts: dict[str, int] = json.loads(stdout)
    return counts


def lock_is_free(lock_dir: Path, name: str) -> bool:
    fd = os.open(lock_dir / f"{name}.lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


@pytest.fixture
def segment(tmp_path: Path) -> Iterator[tuple[str, PageStore]]:
    name = f"enddel-test-{uuid.uuid4().hex[:12]}"
    store = open_store(name, SEGMENT_BYTES, lock_dir=tmp_path)
    yield name, store
    store.close()
    assert not Path("/dev/shm", name).exists()


def test_writer_killed_mid_write(
    segment: tuple[str, PageStore], tmp_path: Path
) -> None:
    name, store = segment
    writer = spawn(STUCK_WRITER, name, tmp_path)
    assert not lock_is_free(tmp_path, name)
    assert load(store._buf, HeaderField.WRITER) == writer.pid

    kill(writer)

    assert lock_is_free(tmp_path, name)
    assert store.get(b"v1\0/page/0") is None
    # The next writer repairs the ring first, then works normally.
    assert store.put(_probe_entry())
    assert load(store._buf, HeaderField.WRITER) == 0
    assert store.get(b"probe") == _probe_entry()
    assert store.statistics().entries == 1


def test_readers_never_see_torn_entries(
    segment: tuple[str, PageStore], tmp_path: Path
) -> None:
    name, store = segment
    survivor = spawn(WRITER, name, tmp_path)
    wait_for_writes(survivor, 3)
    stop = tmp_path / "stop"
    readers = [spawn(READER, name, tmp_path, str(stop), MAX_GETS) for _ in range(2)]
    for round_number in range(6):
        # Each victim puts large prebuilt entries back to back, so it is inside
        # put() for most of its life: a kill right after one write often lands
        # in the middle of the next.
        victim = spawn(WRITER, name, tmp_path)
        wait_for_writes(victim, 1 + round_number % 3)
        stderr = kill(victim)
        assert "Traceback" not in stderr
    stop.touch()
    kill(survivor)

    results = [finish(reader) for reader in readers]
    assert all(result["wrong"] == 0 for result in results), results
    assert sum(result["hit"] for result in results) > 0, results
    assert lock_is_free(tmp_path, name)

    # Every reader's hits and misses reached the shared counters.
    statistics = store.statistics()
    assert statistics.hits == sum(result["hit"] for result in results)
    assert statistics.misses == sum(result["miss"] for result in results)


def test_entries_written_by_one_process_hit_in_another(
    segment: tuple[str, PageStore], tmp_path: Path
) -> None:
    name, _ = segment
    writer = spawn(WRITER, name, tmp_path)
    wait_for_writes(writer, 3)
    kill(writer)
    never = tmp_path / "never"
    result = finish(spawn(READER, name, tmp_path, str(never), "200"))
    assert result["wrong"] == 0
    assert result["hit"] > 0


def _probe_entry() -> Entry:
    return Entry(
        key=b"probe",
        status=204,
        headers=(),
        body=b"",
        body_br=None,
        body_gzip=None,
        etag="p",
        stored_at=0.0,
        ttl=0.0,
        stale_ttl=0.0,
    )
