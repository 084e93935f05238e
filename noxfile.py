"""Sessions: ``nox -s tests``, ``nox -s perf``, ``nox -s serve``, ``lint``, ``typing``.

Each session installs what it needs on a fresh machine: the Python packages
into its own virtualenv, the demo's npm packages, and the Debian packages
(Chromium for the browser tests, wrk for the benchmarks) when it runs as root.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import nox

nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = True

REPO = Path(__file__).resolve().parent
DEMO = REPO / "demo"


def install_system_packages(session: nox.Session, programs: dict[str, str]) -> None:
    """Install the Debian package of each missing program (name -> package)."""
    missing = sorted({pkg for prog, pkg in programs.items() if not shutil.which(prog)})
    if not missing:
        return
    command = ["apt-get", "install", "-y", "--no-install-recommends", *missing]
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        session.error(f"missing programs; install them with: sudo {' '.join(command)}")
    session.run("apt-get", "update", "-qq", external=True)
    session.run(*command, external=True, env={"DEBIAN_FRONTEND": "noninteractive"})


def build_demo(session: nox.Session) -> None:
    """Install the demo's npm packages from its lock file and build it."""
    session.run(
        "npm", "ci", "--no-audit", "--no-fund", "--prefix", str(DEMO), external=True
    )
    session.run("npm", "run", "build", "--prefix", str(DEMO), external=True)


@nox.session
def tests(session: nox.Session) -> None:
    """Install everything, build the demo and run the test suite."""
    install_system_packages(session, {"chromium": "chromium", "node": "nodejs"})
    session.install("-e", ".[test]")
    build_demo(session)
    session.run("pytest", *session.posargs)


@nox.session
def perf(session: nox.Session) -> None:
    """Run the benchmarks; ``nox -s perf -- --short`` is the quick CI mode."""
    # nginx is the machine ceiling; the suite leaves it out when it is missing.
    install_system_packages(session, {"wrk": "wrk", "node": "nodejs"})
    session.install("-e", ".[perf]")
    build_demo(session)
    session.run("python", "perf/run.py", *session.posargs)


@nox.session
def serve(session: nox.Session) -> None:
    """Build the demo and serve it on http://127.0.0.1:8000 until Ctrl+C.

    The demo API upstream (``python -m enddel.demo_api``) runs beside it on an
    ephemeral loopback port, and ``ENDDEL_API_UPSTREAM`` points at it.
    """
    session.install("-e", ".")
    build_demo(session)
    bind = session.posargs[0] if session.posargs else "127.0.0.1:8000"
    with demo_api(session) as upstream:
        session.log(f"demo API upstream on {upstream}")
        # The graceful timeout outlasts a render (ENDDEL_RENDER_TIMEOUT, 5 s by
        # default), so a draining process finishes the renders it started.
        session.run(
            "hypercorn", "-k", "trio", "--bind", bind, "--graceful-timeout", "10",
            "enddel.app:app", env={"ENDDEL_API_UPSTREAM": upstream},
        )  # fmt: skip


#: Seconds the demo API gets to exit after SIGINT before it is killed. It only
#: has to finish sending small JSON responses.
DEMO_API_STOP_TIMEOUT = 5


@contextlib.contextmanager
def demo_api(session: nox.Session) -> Iterator[str]:
    """Run the demo API upstream in the session's virtualenv; yield its base URL.

    It stops with the session: on Ctrl+C the terminal interrupts it together
    with hypercorn, and however the session ends it is interrupted here, then
    killed after DEMO_API_STOP_TIMEOUT. NOTE: a nox killed with SIGKILL leaves
    it running, as it leaves hypercorn.
    """
    python = Path(session.bin) / "python"
    command = [str(python), "-m", "enddel.demo_api", "--bind", "127.0.0.1:0"]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        # Its only stdout line is the URL, written once it listens.
        url = process.stdout.readline().strip()
        if not url:
            session.error(f"{' '.join(command)} exited with status {process.wait()}")
        yield url
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
        try:
            process.wait(DEMO_API_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", "enddel", "workers", "tests", "perf", "noxfile.py")
    session.run("ruff", "format", "--check", "enddel", "workers", "tests", "perf")


@nox.session
def typing(session: nox.Session) -> None:
    session.install("-e", ".[test,dev]")
    session.run("mypy")
