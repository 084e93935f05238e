"""Segment lifecycle: attach from several processes, detach, reset, persist."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from multiprocessing import resource_tracker
from multiprocessing.shared_memory import SharedMemory
from pathlib import Path

import pytest

from enddel.cache import Entry
from enddel.cache.segment import SHM_DIR, check_shm_space
from enddel.cache.store import open_page_store, open_store, segment_name
from enddel.config import Config, ConfigError

SEGMENT_BYTES = 1 << 20
ENTRY = Entry(
    key=b"v1\0/",
    status=200,
    headers=(("content-type", "text/html"),),
    body=b"<p>home</p>",
    body_br=None,
    body_gzip=None,
    etag='"h"',
    stored_at=1.0,
    ttl=60.0,
    stale_ttl=0.0,
)

#: A child that attaches, runs commands from stdin, and reports on stdout.
CHILD = r"""
import sys
from pathlib import Path
from enddel.cache import Entry
from enddel.cache.store import open_store
store = open_store(sys.argv[1], int(sys.argv[2]), lock_dir=Path(sys.argv[3]),
                   persist=sys.argv[4] == "persist")
print("attached", flush=True)
for line in sys.stdin:
    command = line.strip()
    if command == "put":
        store.put(Entry(b"v1\0/", 200, (("content-type", "text/html"),),
                        b"<p>home</p>", None, None, '"h"', 1.0, 60.0, 0.0))
    elif command == "get":
        print("hit" if store.get(b"v1\0/") else "miss", flush=True)
    elif command == "close":
        store.close()
    elif command == "exit":
        break
    print("done", flush=True)
"""


class Child:
    """A process attached to the segment, driven line by line."""

    def __init__(self, name: str, lock_dir: Path, *, persist: bool = False) -> None:
        mode = "persist" if persist else "temporary"
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                CHILD,
                name,
                str(SEGMENT_BYTES),
                str(lock_dir),
                mode,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.readline() == "attached"

    def readline(self) -> str:
        assert self.process.stdout is not None
        return self.process.stdout.readline().strip()

    def run(self, command: str) -> str:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        reply = self.readline()
        if reply != "done":
            assert self.readline() == "done"
        return reply

    def exit(self) -> str:
        """Exit without closing the store; return what the process wrote to stderr."""
        _, stderr = self.process.communicate("exit\n", timeout=30)
        assert self.process.returncode == 0, stderr
        return stderr

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.communicate(timeout=30)


@pytest.fixture
def name() -> Iterator[str]:
    segment = f"enddel-test-{uuid.uuid4().hex[:12]}"
    yield segment
    if (SHM_DIR / segment).exists():
        leftover = SharedMemory(segment)
        resource_tracker.unregister(f"/{segment}", "shared_memory")
        leftover.close()
        resource_tracker.register(f"/{segment}", "shared_memory")
        leftover.unlink()
        pytest.fail(f"segment {segment} was left behind")


def test_segment_outlives_one_process(name: str, tmp_path: Path) -> None:
    first = Child(name, tmp_path)
    second = Child(name, tmp_path)
    assert first.run("put") == "done"
    assert first.run("close") == "done"
    stderr = first.exit()
    assert "leaked" not in stderr
    assert "resource_tracker" not in stderr
    assert (SHM_DIR / name).exists()
    assert second.run("get") == "hit"

    assert second.run("close") == "done"
    second.exit()
    assert not (SHM_DIR / name).exists()
    assert not (tmp_path / f"{name}.lock").exists()


def test_exit_without_close_keeps_segment(name: str, tmp_path: Path) -> None:
    first = Child(name, tmp_path)
    second = Child(name, tmp_path)
    first.run("put")
    stderr = first.exit()
    assert "leaked" not in stderr
    assert (SHM_DIR / name).exists()
    assert second.run("get") == "hit"
    # The exited process's row is found dead, so the last close still removes.
    second.run("close")
    second.exit()
    assert not (SHM_DIR / name).exists()


def test_segment_of_dead_server_is_reset(
    name: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    crashed = Child(name, tmp_path)
    crashed.run("put")
    crashed.kill()
    assert (SHM_DIR / name).exists()

    with caplog.at_level(logging.WARNING, logger="enddel.cache"):
        store = open_store(name, SEGMENT_BYTES, lock_dir=tmp_path)
    assert "every process attached to it has exited" in caplog.text
    assert store.get(ENTRY.key) is None
    store.close()


def test_persistent_segment_is_reused(name: str, tmp_path: Path) -> None:
    crashed = Child(name, tmp_path, persist=True)
    crashed.run("put")
    crashed.kill()

    store = open_store(name, SEGMENT_BYTES, lock_dir=tmp_path, persist=True)
    assert store.get(ENTRY.key) == ENTRY
    store.close()
    assert (SHM_DIR / name).exists()

    temporary = open_store(name, SEGMENT_BYTES, lock_dir=tmp_path, persist=False)
    temporary.close()
    assert not (SHM_DIR / name).exists()


def test_corrupt_segment_is_reset(
    name: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    foreign = SharedMemory(name, create=True, size=SEGMENT_BYTES)
    resource_tracker.unregister(f"/{name}", "shared_memory")
    foreign.buf[:16] = b"NOTENDDEL-------"
    foreign.close()

    with caplog.at_level(logging.WARNING, logger="enddel.cache"):
        store = open_store(name, SEGMENT_BYTES, lock_dir=tmp_path)
    assert "header is invalid" in caplog.text
    assert store.put(ENTRY)
    assert store.get(ENTRY.key) == ENTRY
    store.close()


@pytest.mark.parametrize(
    ("size_bytes", "fingerprint"), [(2 * SEGMENT_BYTES, 0), (SEGMENT_BYTES, 99)]
)
def test_other_settings_in_use_raises(
    name: str, tmp_path: Path, size_bytes: int, fingerprint: int
) -> None:
    running = Child(name, tmp_path)
    with pytest.raises(ConfigError, match="in use by 1 running process"):
        open_store(name, size_bytes, lock_dir=tmp_path, fingerprint=fingerprint)
    assert running.run("get") == "miss"
    running.run("close")
    running.exit()


def test_too_small_dev_shm_raises(name: str, tmp_path: Path) -> None:
    stats = os.statvfs(SHM_DIR)
    free = stats.f_bavail * stats.f_frsize
    with pytest.raises(ConfigError, match=r"ENDDEL_CACHE_BYTES=\d+ does not fit"):
        open_store(name, free + (64 << 20), lock_dir=tmp_path)
    assert not (SHM_DIR / name).exists()


def test_shm_space_message_names_fix() -> None:
    with pytest.raises(ConfigError) as raised:
        check_shm_space(128 << 20, 64 << 20)
    message = str(raised.value)
    assert "ENDDEL_CACHE_BYTES=134217728" in message
    assert "67108864 bytes free" in message
    assert "--shm-size" in message


def test_tiny_segment_raises(name: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="too small"):
        open_store(name, 64 << 10, lock_dir=tmp_path)


def test_segment_name_from_config() -> None:
    config = Config.from_environ({"ENDDEL_CACHE_BYTES": str(SEGMENT_BYTES)})
    other = Config.from_environ({"ENDDEL_CACHE_BYTES": str(2 * SEGMENT_BYTES)})
    named = Config.from_environ({"ENDDEL_CACHE_NAME": "shop"})
    assert segment_name(config).startswith(f"enddel-{os.getppid()}-")
    assert segment_name(config) != segment_name(other)
    assert segment_name(named) == "enddel-shop"


def test_disabled_cache_raises() -> None:
    config = Config.from_environ({"ENDDEL_CACHE_BYTES": "0"})
    with pytest.raises(ConfigError, match="ENDDEL_CACHE_BYTES=0"):
        open_page_store(config)
