"""Sessions: ``nox -s tests``, ``nox -s perf``, ``nox -s serve``, ``lint``, ``typing``.

Each session installs what it needs on a fresh machine: the Python packages
into its own virtualenv, the demo's npm packages, and the Debian packages
(Chromium for the browser tests, wrk for the benchmarks) when it runs as root.
"""

from __future__ import annotations

import os
import shutil
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
    """Build the demo and serve it on http://127.0.0.1:8000 until Ctrl+C."""
    session.install("-e", ".")
    build_demo(session)
    bind = session.posargs[0] if session.posargs else "127.0.0.1:8000"
    session.run("hypercorn", "-k", "trio", "--bind", bind, "enddel.app:app")


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", "enddel", "workers", "tests", "perf", "noxfile.py")
    session.run("ruff", "format", "--check", "enddel", "workers", "tests", "perf")


@nox.session
def typing(session: nox.Session) -> None:
    session.install("-e", ".[test,dev]")
    session.run("mypy")
