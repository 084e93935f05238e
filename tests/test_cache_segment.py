"""Segment lifecycle: attach from several processes, detach, reset, persist."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from multiprocessing import resource_tracker
from multiprocessing.shared_memory import SharedMemory
from pathlib import Path

import pytest

from enddel.cache import Entry
from enddel.cache.layout import HEADER_BYTES, HeaderField, load
from enddel.cache.segment import SHM_DIR, check_shm_space, process_start_ticks
from enddel.cache.store import (
    open_page_store,
    open_store,
    segment_name,
    settings_fingerprint,
)
from enddel.config import Config, ConfigError
from tests.conftest import wait_for

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
    assert foreign.buf is not None
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


# The janitor: a segment opened under a master lives exactly as long as it.

#: A stand-in for hypercorn's master: it starts attachers (whose parent it
#: therefore is) one command at a time, and keeps running through SIGTERM, as
#: a master does while it drains.
MASTER = r"""
import signal, subprocess, sys
signal.signal(signal.SIGTERM, lambda *_: print("draining", flush=True))
for line in sys.stdin:
    action = line.strip()
    if action == "exit":
        break
    attacher = subprocess.Popen([sys.executable, "-c", sys.argv[1], action],
                                stdout=subprocess.PIPE, text=True)
    if action.startswith("hold"):
        print(attacher.stdout.readline().strip(), flush=True)
    else:
        print(attacher.communicate()[0].strip(), flush=True)
"""

#: One server process: opens the page store the way the app does, then acts.
ATTACHER = r"""
import os, sys, time
from pathlib import Path
from enddel.cache import Entry, open_page_store
from enddel.config import Config
action = sys.argv[1]
store = open_page_store(Config.from_environ())
if action == "put":
    store.put(Entry(b"v1\0/", 200, (("content-type", "text/html"),),
                    b"<p>home</p>", None, None, '"h"', 1.0, 60.0, 0.0))
elif action == "get":
    print("hit" if store.get(b"v1\0/") else "miss", flush=True)
elif action.startswith("hold "):
    # Stay attached until the test creates the stop file (bounded: 120 s).
    print("attached", flush=True)
    stop = Path(action.removeprefix("hold "))
    for _ in range(6000):
        if stop.exists():
            break
        time.sleep(0.02)
store.close()
"""


class Master:
    """A parent process whose attachers share one janitor-guarded segment."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        settings = {
            "ENDDEL_CACHE_BYTES": str(SEGMENT_BYTES),
            # Paths of their own give this test's segment its own fingerprint.
            "ENDDEL_BUNDLE": str(folder / "bundle.js"),
            "ENDDEL_CLIENT_DIR": str(folder / "client"),
            "ENDDEL_API_UPSTREAM": "http://127.0.0.1:9/api",
        }
        environ = {k: v for k, v in os.environ.items() if not k.startswith("ENDDEL_")}
        self.process = subprocess.Popen(
            [sys.executable, "-c", MASTER, ATTACHER],
            env=environ | settings,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.log: list[str] = []
        self._reader = threading.Thread(target=self._collect, daemon=True)
        self._reader.start()
        config = Config.from_environ(settings)
        fingerprint = settings_fingerprint(config)
        self.segment = f"enddel-{self.process.pid}-{fingerprint:016x}"

    def _collect(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.log.append(line.rstrip("\n"))

    def run(self, action: str) -> str:
        """Start one attacher for ``action`` and return what it printed."""
        assert self.process.stdin is not None
        self.process.stdin.write(action + "\n")
        self.process.stdin.flush()
        return self.readline()

    def readline(self) -> str:
        assert self.process.stdout is not None
        return self.process.stdout.readline().strip()

    def exit(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        assert self.process.wait(30) == 0

    def logged(self, text: str) -> bool:
        return any(text in line for line in self.log)

    def close(self) -> None:
        """Stop the master if a test left it running, then wait for its janitor."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(30)
        # The janitor keeps the stderr pipe open until it has exited.
        self._reader.join(30)
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def master(tmp_path: Path) -> Iterator[Master]:
    running = Master(tmp_path)
    yield running
    running.close()
    segment = SHM_DIR / running.segment
    if segment.exists():
        leftover = SharedMemory(running.segment)
        resource_tracker.unregister(f"/{running.segment}", "shared_memory")
        leftover.close()
        resource_tracker.register(f"/{running.segment}", "shared_memory")
        leftover.unlink()
        (SHM_DIR / f"{running.segment}.lock").unlink(missing_ok=True)
        pytest.fail(f"segment {running.segment} was left behind")


def janitor_of(segment: str) -> int:
    """Return the janitor PID recorded in the header of ``segment``."""
    with (SHM_DIR / segment).open("rb") as file:
        header = file.read(HEADER_BYTES)
    return load(bytearray(header), HeaderField.JANITOR_PID)


def segment_gone(segment: str) -> bool:
    return (
        not (SHM_DIR / segment).exists() and not (SHM_DIR / f"{segment}.lock").exists()
    )


def process_gone(pid: int) -> bool:
    return process_start_ticks(pid) is None


def ignored_signals(pid: int) -> int:
    """Return the SigIgn mask of process ``pid``: bit n-1 is signal n."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigIgn:"):
            return int(line.split()[1], 16)
    raise AssertionError(f"/proc/{pid}/status has no SigIgn line")


def test_janitor_removes_segment_after_master(master: Master) -> None:
    assert master.run("put") == ""
    janitor = janitor_of(master.segment)
    assert janitor not in (0, master.process.pid)
    # No process is attached now, but the master lives: the segment stays,
    # and the next server process gets the entry.
    assert (SHM_DIR / master.segment).exists()
    assert master.run("get") == "hit"
    assert janitor_of(master.segment) == janitor

    master.exit()

    wait_for(lambda: segment_gone(master.segment))
    wait_for(lambda: process_gone(janitor))
    assert master.logged(f"removed page cache segment {master.segment}")
    assert not master.logged("Traceback")
    assert not master.logged("leaked")


def test_janitor_survives_group_sigterm(master: Master, tmp_path: Path) -> None:
    stop = tmp_path / "stop"
    assert master.run("put") == ""
    assert master.run(f"hold {stop}") == "attached"
    janitor = janitor_of(master.segment)
    # Outside the server's session, so group signals never reach it, and
    # deaf to the signals a terminal or supervisor sends to a group.
    assert os.getsid(janitor) != os.getsid(master.process.pid)
    mask = ignored_signals(janitor)
    for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        assert mask & 1 << (number - 1), signal.Signals(number).name

    os.killpg(master.process.pid, signal.SIGTERM)
    os.kill(janitor, signal.SIGTERM)
    os.kill(janitor, signal.SIGINT)
    assert master.readline() == "draining"
    # The attacher died of the SIGTERM, so no process is attached; the
    # janitor still guards the segment while the master drains.
    assert master.run("get") == "hit"
    assert janitor_of(master.segment) == janitor
    assert not process_gone(janitor)

    master.exit()
    wait_for(lambda: segment_gone(master.segment))
    wait_for(lambda: process_gone(janitor))


def test_segment_waits_for_processes_outliving_master(
    master: Master, tmp_path: Path
) -> None:
    stop = tmp_path / "stop"
    assert master.run(f"hold {stop}") == "attached"
    janitor = janitor_of(master.segment)

    master.exit()
    wait_for(lambda: master.logged("waiting for attached processes"))
    assert (SHM_DIR / master.segment).exists()
    assert not process_gone(janitor)

    stop.touch()
    wait_for(lambda: segment_gone(master.segment))
    wait_for(lambda: process_gone(janitor))


def test_killed_janitor_segment_is_reset(master: Master) -> None:
    assert master.run("put") == ""
    janitor = janitor_of(master.segment)
    os.kill(janitor, signal.SIGKILL)
    wait_for(lambda: process_gone(janitor))

    # No janitor guards the segment and no process is attached: the next server
    # process resets it and starts a new janitor.
    assert master.run("get") == "miss"
    replacement = janitor_of(master.segment)
    assert replacement not in (0, janitor)
    assert not process_gone(replacement)
    assert master.logged("every process attached to it has exited")

    master.exit()
    wait_for(lambda: segment_gone(master.segment))
    wait_for(lambda: process_gone(replacement))


def test_group_sigkill_still_removes_segment(master: Master, tmp_path: Path) -> None:
    assert master.run(f"hold {tmp_path / 'never'}") == "attached"
    janitor = janitor_of(master.segment)

    # A supervisor's last resort: the master and its attacher die at once.
    os.killpg(master.process.pid, signal.SIGKILL)

    wait_for(lambda: segment_gone(master.segment))
    wait_for(lambda: process_gone(janitor))
