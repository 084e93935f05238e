"""Run the demo shop's API upstream (``python -m enddel.demo_api``) for a test.

The demo's product page fetches its product from ``ENDDEL_API_UPSTREAM``, so
every test that renders it starts this process and points enddel at the URL
that the process writes on stdout.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import REPO, STOP_TIMEOUT

__all__ = ["run_demo_api"]


@contextlib.contextmanager
def run_demo_api(products: Path | None = None) -> Iterator[str]:
    """Start the demo API on an ephemeral loopback port; yield its base URL.

    ``products`` replaces the demo's product file. The process is stopped with
    SIGINT, and killed if it outlives STOP_TIMEOUT.
    """
    command = [sys.executable, "-m", "enddel.demo_api", "--bind", "127.0.0.1:0"]
    if products is not None:
        command += ["--products", str(products)]
    process = subprocess.Popen(
        command,
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        # The process writes one line once it listens, or exits on an error.
        url = process.stdout.readline().strip()
        if not url.startswith("http://127.0.0.1:"):
            process.kill()
            _, errors = process.communicate(timeout=STOP_TIMEOUT)
            raise RuntimeError(f"the demo API did not start: {url!r}\n{errors}")
        yield url
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
        try:
            process.communicate(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate(timeout=STOP_TIMEOUT)
            raise
