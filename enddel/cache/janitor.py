"""The page cache janitor: removes a temporary segment once its server is gone.

Run as ``python -m enddel.cache.janitor --segment NAME --lock-dir DIR --master
PID --master-started TICKS``; :mod:`enddel.cache.segment` starts one when it
creates a temporary segment (or finds its janitor dead), and records the
janitor's PID and start time in the segment header.

Design. A server process cannot tell a server stop from its own restart:
hypercorn's master is alive in both cases, and with ``--max-requests`` every
server process may exit at once before hypercorn starts replacements. Only
the master's exit ends the server, so the janitor waits for exactly that and
then removes the segment and its lock file, under the writer lock, once no
live process is attached. Attached processes that outlive the master (a
master killed with SIGKILL leaves its server processes running) are waited
for in turn.

Waiting costs nothing while the server runs: one ``pidfd`` (Linux 5.3 and
later) in a blocking ``select``. Where ``os.pidfd_open`` is missing or fails,
the janitor polls the PID and its ``/proc`` start time every
:data:`POLL_SECONDS`, so a reused PID does not keep the segment. The janitor
maps the segment only for the final check, never takes an attach table row,
and imports no V8.

Signals. The launcher forks the janitor into a session of its own, so a
SIGINT from the terminal (Ctrl+C) or a ``kill`` of the server's process group
never reaches it. It also ignores SIGINT, SIGTERM and SIGHUP sent to it
directly, because the master may still be draining. It exits by itself once
the segment is removed or guarded by another janitor. Only SIGKILL (or a
cgroup kill, as systemd does on stop) ends it early. The segment then stays
in ``/dev/shm`` until the last attached process closes it, or until a server
process under the same master opens it again, which resets it or attaches
and starts a new janitor.
"""

from __future__ import annotations

import argparse
import os
import select
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from enddel.cache.segment import process_alive, process_start_ticks, remove_unattached
from enddel.logs import cache_log, configure_logging

__all__ = ["POLL_SECONDS", "main", "wait_for_any_exit"]

#: Seconds between liveness checks where no pidfd is available: one read of
#: ``/proc/<pid>/stat`` per watched process per interval, and the segment goes
#: at most this long after its server.
POLL_SECONDS: Final = 1.0
#: Signals that a terminal or a supervisor sends to a whole process group. The
#: janitor outlives them, so a master that is still draining stays guarded.
_IGNORED_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def wait_for_any_exit(processes: Sequence[tuple[int, int]]) -> None:
    """Block until one of ``processes`` ((pid, start time) pairs) has exited.

    Returns at once when one is not running already, zombies included.
    """
    descriptors: list[int] = []
    try:
        for pid, started in processes:
            descriptor = _open_pidfd(pid)
            if descriptor is not None:
                descriptors.append(descriptor)
            # Checked after opening, so an exit in between is not missed: a
            # pidfd of an exited process is readable at once.
            if not process_alive(pid, started):
                return
        if len(descriptors) == len(processes):
            select.select(descriptors, [], [])
            return
        _poll_until_any_exit(processes)
    finally:
        for descriptor in descriptors:
            os.close(descriptor)


def _open_pidfd(pid: int) -> int | None:
    """Return a pidfd for ``pid``, or None where pidfds are unavailable or the
    process is gone (the caller's liveness check then decides)."""
    try:
        return os.pidfd_open(pid)
    except AttributeError:  # not Linux, or Python built without pidfd_open
        return None
    except OSError:  # ENOSYS before Linux 5.3, ESRCH when it exited already
        return None


def _poll_until_any_exit(processes: Sequence[tuple[int, int]]) -> None:
    while all(process_alive(pid, started) for pid, started in processes):
        time.sleep(POLL_SECONDS)


def guard(name: str, lock_dir: Path, master: int, master_started: int) -> None:
    """Wait for ``master`` to exit, then remove segment ``name`` once no live
    process is attached."""
    janitor = os.getpid()
    janitor_started = process_start_ticks(janitor) or 0
    cache_log.info(
        "page cache janitor %d guards segment %s until process %d exits",
        janitor,
        name,
        master,
    )
    wait_for_any_exit([(master, master_started)])
    while True:
        keepers = remove_unattached(name, lock_dir, janitor, janitor_started)
        if not keepers:
            return
        cache_log.info(
            "page cache segment %s outlives its master %d: waiting for attached "
            "processes %s",
            name,
            master,
            ", ".join(str(pid) for pid, _ in keepers),
        )
        wait_for_any_exit(keepers)


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m enddel.cache.janitor",
        description="Remove a page cache segment once its server has exited.",
    )
    parser.add_argument("--segment", required=True, help="segment name")
    parser.add_argument(
        "--lock-dir", required=True, type=Path, help="directory of its lock file"
    )
    parser.add_argument(
        "--master", required=True, type=int, help="PID whose exit ends the server"
    )
    parser.add_argument(
        "--master-started",
        required=True,
        type=int,
        help="start time of that PID, in clock ticks since boot (0: unknown)",
    )
    return parser.parse_args(argv)


def _detach() -> None:
    """Fork the janitor. The parent prints the child's PID and exits, and the
    child goes on in a new session with stdin and stdout on /dev/null."""
    child = os.fork()
    if child:
        print(child, flush=True)
        os._exit(0)
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    # Replacing stdout closes the pipe the launcher reads to its end.
    os.dup2(devnull, 1)
    os.close(devnull)


def main(argv: Sequence[str] | None = None) -> None:
    """Launch the janitor in the background; see the module docstring."""
    arguments = _parse(sys.argv[1:] if argv is None else argv)
    for number in _IGNORED_SIGNALS:
        signal.signal(number, signal.SIG_IGN)
    _detach()
    configure_logging()
    lock_dir = arguments.lock_dir.resolve()
    # The janitor may outlive a deploy directory it was started in; holding it
    # as the working directory would keep a removed tree's filesystem busy.
    os.chdir("/")
    guard(arguments.segment, lock_dir, arguments.master, arguments.master_started)


if __name__ == "__main__":
    main()
