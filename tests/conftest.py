"""Shared fixtures: a real enddel server in its own hypercorn process.

``run_server`` starts ``hypercorn -k trio enddel.app:app`` on an ephemeral
loopback port with the given ``ENDDEL_*`` settings, waits until every server
process listens, and stops it with SIGINT (then SIGKILL) afterwards. The port
is read back from hypercorn's "Running on" log lines, never fixed.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DEMO_BUNDLE = REPO / "demo" / "dist" / "server" / "bundle.js"
DEMO_CLIENT = REPO / "demo" / "dist" / "client"

#: How long a server gets to start: spawning render workers and loading V8
#: takes about a second per process on a loaded two-core machine.
START_TIMEOUT = 60.0
#: How long a server gets to exit after SIGINT before it is killed.
STOP_TIMEOUT = 20.0

_RUNNING_ON = re.compile(r"Running on https?://127\.0\.0\.1:(\d+)")


@dataclass
class ServerProcess:
    """A running ``hypercorn`` process tree and everything it logged."""

    process: subprocess.Popen[str]
    port: int
    log_lines: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> str:
        return "\n".join(self.log_lines)

    def wait_log(self, text: str, timeout: float = 10.0) -> None:
        """Wait until ``text`` appears in the log; fail with the log if it does not.

        Log lines reach the test through the server's output pipe, a little
        after the responses that caused them, so a check right after a request
        may run before its line has been read.
        """
        deadline = time.monotonic() + timeout
        while text not in self.log:
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not in the server log:\n{self.log}")
            time.sleep(0.02)

    def stop(self, sig: int = signal.SIGINT) -> int:
        """Send ``sig`` to the master and wait for the whole server to exit."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(STOP_TIMEOUT)
            raise


def _server_environ(settings: Mapping[str, str]) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("ENDDEL_")}
    # Tests never reach the real API: a closed loopback port unless overridden.
    environ["ENDDEL_API_UPSTREAM"] = "http://127.0.0.1:9/api"
    environ["PYTHONUNBUFFERED"] = "1"
    environ.update(settings)
    return environ


@contextlib.contextmanager
def run_server(
    settings: Mapping[str, str] | None = None,
    *,
    workers: int = 1,
    extra_args: tuple[str, ...] = (),
) -> Iterator[ServerProcess]:
    """Start an enddel server and yield it once every server process listens."""
    command = [
        sys.executable, "-m", "hypercorn", "-k", "trio",
        "--bind", "127.0.0.1:0", "-w", str(workers),
        *extra_args, "enddel.app:app",
    ]  # fmt: skip
    process = subprocess.Popen(
        command,
        cwd=REPO,
        env=_server_environ(settings or {}),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []
    ports: list[int] = []
    listening = threading.Event()

    def collect() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line.rstrip("\n"))
            match = _RUNNING_ON.search(line)
            if match:
                ports.append(int(match.group(1)))
                if len(ports) >= workers:
                    listening.set()
        listening.set()

    reader = threading.Thread(target=collect, daemon=True)
    reader.start()
    server = ServerProcess(process, 0, lines)
    try:
        if not listening.wait(START_TIMEOUT) or not ports:
            raise RuntimeError("enddel did not start:\n" + "\n".join(lines))
        server.port = ports[0]
        yield server
    finally:
        try:
            server.stop()
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            reader.join(STOP_TIMEOUT)
            assert process.stdout is not None
            process.stdout.close()


def wait_for(predicate: object, timeout: float = 10.0) -> None:
    """Poll ``predicate`` until it returns true; for conditions in other processes."""
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout} s")
        time.sleep(0.02)


@pytest.fixture(scope="session")
def demo_build() -> Path:
    """The demo's build output; fails with the build command when it is missing."""
    if not DEMO_BUNDLE.is_file() or not (DEMO_CLIENT / "index.html").is_file():
        pytest.fail(
            "the demo is not built: run `npm ci --prefix demo && "
            "npm run build --prefix demo` (nox -s tests does this)"
        )
    return DEMO_BUNDLE.parent.parent
