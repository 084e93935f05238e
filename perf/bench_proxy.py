"""Measure API proxy throughput against the same upstream hit directly.

Starts the test upstream (``tests/upstream.py``, one fixed response) and a
hypercorn process serving ``/api/*`` through the proxy, then runs ``wrk``
against each for the same duration on loopback. Prints both request rates and
their ratio. Compare the ratio between runs, not either rate, because both
rates depend on the machine and its load.

Usage: ``python perf/bench_proxy.py [--duration 5] [--connections 16]``
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
#: Seconds a process gets to print its port before the benchmark gives up.
START_TIMEOUT = 60.0
_RATE = re.compile(r"Requests/sec:\s+([0-9.]+)")


@contextlib.contextmanager
def _process(
    command: list[str], env: dict[str, str], ready: re.Pattern[str]
) -> Iterator[int]:
    """Start ``command`` and yield the port from its first line matching ``ready``."""
    process = subprocess.Popen(
        command,
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        assert process.stdout is not None
        for line in process.stdout:
            match = ready.search(line)
            if match:
                break
        else:
            raise RuntimeError(f"{command[0]} exited before listening")
        yield int(match.group(1))
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


def _wrk(url: str, duration: int, connections: int) -> float:
    """Run wrk against ``url`` and return its requests per second."""
    command = [
        "wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", url,
    ]  # fmt: skip
    output = subprocess.run(
        command, capture_output=True, text=True, check=True, timeout=duration + 30
    ).stdout
    match = _RATE.search(output)
    if match is None:
        raise RuntimeError(f"wrk printed no request rate:\n{output}")
    if "Non-2xx" in output or "Socket errors" in output:
        print(output, file=sys.stderr)
    return float(match.group(1))


def _site(folder: Path) -> dict[str, str]:
    """A one-line bundle and client build: only /api is measured."""
    (folder / "index.html").write_text("<!--ssr-outlet-->")
    (folder / "bundle.js").write_text("globalThis.renderPage = (url) => url;")
    return {
        "ENDDEL_BUNDLE": str(folder / "bundle.js"),
        "ENDDEL_CLIENT_DIR": str(folder),
        "ENDDEL_RENDER_WORKERS": "1",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds per run")
    parser.add_argument("--connections", type=int, default=16, help="open connections")
    parser.add_argument("--size", type=int, default=1024, help="body size in bytes")
    arguments = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk not found: install it with `apt-get install wrk`")

    env = {k: v for k, v in os.environ.items() if not k.startswith("ENDDEL_")}
    env["PYTHONUNBUFFERED"] = "1"
    upstream_command = [
        sys.executable, "-m", "tests.upstream", "--size", str(arguments.size),
    ]  # fmt: skip
    with _process(upstream_command, env, re.compile(r"listening on (\d+)")) as port:
        env["ENDDEL_API_UPSTREAM"] = f"http://127.0.0.1:{port}/api"
        env.update(_site(Path(tempfile.mkdtemp(prefix="enddel-bench-proxy-"))))
        proxy_command = [
            sys.executable, "-m", "hypercorn", "-k", "trio",
            "--bind", "127.0.0.1:0", "enddel.app:app",
        ]  # fmt: skip
        running = re.compile(r"Running on http://127\.0\.0\.1:(\d+)")
        with _process(proxy_command, env, running) as proxy_port:
            direct = _wrk(
                f"http://127.0.0.1:{port}/api/bench",
                arguments.duration,
                arguments.connections,
            )
            proxied = _wrk(
                f"http://127.0.0.1:{proxy_port}/api/bench",
                arguments.duration,
                arguments.connections,
            )

    print(f"upstream direct: {direct:10.1f} requests/s")
    print(f"through proxy:   {proxied:10.1f} requests/s")
    print(f"ratio proxy/direct: {proxied / direct:.3f}")


if __name__ == "__main__":
    main()
