"""Server processes for the benchmarks: start on loopback, read the port, stop.

Every server runs in its own session (process group), so stopping it by the
leader's PID also ends the processes it spawned: hypercorn's server processes,
enddel's render workers, the Node cluster's workers and nginx's workers. The
port is always read back from the server's own output ("Running on ..." from
hypercorn, "listening on PORT" from the Node scripts), never fixed, except for
nginx, which cannot report an ephemeral port: it gets a port that the kernel
just handed out and released.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PERF = REPO / "perf"
DEMO_BUNDLE = REPO / "demo" / "dist" / "server" / "bundle.js"
DEMO_CLIENT = REPO / "demo" / "dist" / "client"

#: Seconds a server gets to listen. An enddel server process spawns its render
#: workers and loads the bundle into V8 first: a few seconds on a busy machine.
START_TIMEOUT = 90.0
#: Seconds a server gets to exit after its stop signal before it is killed.
STOP_TIMEOUT = 20.0

_HYPERCORN_PORT = re.compile(r"Running on https?://127\.0\.0\.1:(\d+)")
_SCRIPT_PORT = re.compile(r"listening on (\d+)")


@dataclass
class Server:
    """One running server process tree and the lines it printed."""

    name: str
    process: subprocess.Popen[str]
    port: int = 0
    log_lines: list[str] = field(default_factory=list)
    stop_signal: int = signal.SIGINT

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        """Signal the leader, wait for it, then kill whatever is left of its group."""
        if self.process.poll() is None:
            self.process.send_signal(self.stop_signal)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                print(
                    f"{self.name} ignored its stop signal; killing it", file=sys.stderr
                )
        # The group is this server's own session, started by us: its id is the
        # leader's PID. A render worker still exiting is ended here.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(STOP_TIMEOUT)


def _start(
    name: str,
    command: list[str],
    environ: Mapping[str, str],
    port_pattern: re.Pattern[str],
    listeners: int,
    stop_signal: int = signal.SIGINT,
) -> Server:
    """Run ``command`` and return once ``listeners`` lines matched ``port_pattern``."""
    process = subprocess.Popen(
        command,
        cwd=REPO,
        env=dict(environ),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    server = Server(name, process, stop_signal=stop_signal)
    ports: list[int] = []
    listening = threading.Event()

    def collect() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            server.log_lines.append(line.rstrip("\n"))
            match = port_pattern.search(line)
            if match:
                ports.append(int(match.group(1)))
                if len(ports) >= listeners:
                    listening.set()
        listening.set()

    threading.Thread(target=collect, name=f"{name}-output", daemon=True).start()
    if not listening.wait(START_TIMEOUT) or not ports:
        server.stop()
        log = "\n".join(server.log_lines[-40:])
        raise RuntimeError(f"{name} did not start within {START_TIMEOUT} s:\n{log}")
    server.port = ports[0]
    return server


def _base_environ() -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("ENDDEL_")}
    environ["PYTHONUNBUFFERED"] = "1"
    return environ


def start_enddel(workers: int, settings: Mapping[str, str]) -> Server:
    """Start ``hypercorn -k trio -w N enddel.app:app`` with ``settings``.

    ``settings`` must name ``ENDDEL_API_UPSTREAM``: the benchmarks always point
    the proxy at a loopback upstream of their own.
    """
    if "ENDDEL_API_UPSTREAM" not in settings:
        raise ValueError("settings must set ENDDEL_API_UPSTREAM to a loopback URL")
    environ = _base_environ() | dict(settings)
    command = _hypercorn_command(workers, "enddel.app:app")
    return _start(f"enddel -w {workers}", command, environ, _HYPERCORN_PORT, workers)


def start_ceiling(workers: int, body: Path) -> Server:
    """Start the bare ASGI app of :mod:`perf.ceiling_app` serving ``body``."""
    environ = _base_environ() | {"PERF_CEILING_BODY": str(body)}
    command = _hypercorn_command(workers, "perf.ceiling_app:app")
    return _start(f"ceiling -w {workers}", command, environ, _HYPERCORN_PORT, workers)


def _hypercorn_command(workers: int, app: str) -> list[str]:
    return [
        sys.executable, "-m", "hypercorn", "-k", "trio",
        "--bind", "127.0.0.1:0", "-w", str(workers), app,
    ]  # fmt: skip


def start_node_peer(workers: int, *, cache: bool) -> Server:
    """Start the node:http cluster of ``perf/node_peer.mjs``."""
    environ = _base_environ() | {"PEER_CACHE": "1" if cache else "0"}
    command = [
        _node(), str(PERF / "node_peer.mjs"),
        str(DEMO_BUNDLE), str(DEMO_CLIENT / "index.html"), str(workers),
    ]  # fmt: skip
    name = f"node {'cached' if cache else 'uncached'} x{workers}"
    return _start(name, command, environ, _SCRIPT_PORT, 1, signal.SIGTERM)


def start_upstream() -> Server:
    """Start the fixed-response API upstream of ``perf/upstream.mjs``."""
    command = [_node(), str(PERF / "upstream.mjs")]
    return _start("upstream", command, _base_environ(), _SCRIPT_PORT, 1, signal.SIGTERM)


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("node is not installed: apt-get install nodejs")
    return node


def nginx_path() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx",) if Path(p).is_file()), None
    )


@contextlib.contextmanager
def run_nginx(root: Path, workers: int) -> Iterator[Server | None]:
    """Serve ``root`` with nginx on a loopback port; yield None without nginx."""
    binary = nginx_path()
    if binary is None:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="enddel-perf-nginx-") as state:
        port = _free_port()
        config = Path(state) / "nginx.conf"
        config.write_text(_nginx_config(Path(state), root, port, workers))
        command = [binary, "-p", state, "-c", str(config), "-e", f"{state}/error.log"]
        process = subprocess.Popen(
            command,
            cwd=state,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        server = Server(f"nginx x{workers}", process, port, stop_signal=signal.SIGQUIT)
        try:
            _wait_for_port(port, process)
            yield server
        finally:
            server.stop()


def _nginx_config(state: Path, root: Path, port: int, workers: int) -> str:
    # Run as the current user: "user" only matters to a root master, whose
    # workers would otherwise drop to nobody and perhaps lose read access.
    user = "user root;" if os.geteuid() == 0 else ""
    return f"""
{user}
daemon off;
master_process on;
worker_processes {workers};
pid {state}/nginx.pid;
error_log {state}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    client_body_temp_path {state}/body;
    proxy_temp_path {state}/proxy;
    fastcgi_temp_path {state}/fastcgi;
    uwsgi_temp_path {state}/uwsgi;
    scgi_temp_path {state}/scgi;
    types {{ text/html html; text/javascript js; }}
    server {{
        listen 127.0.0.1:{port};
        root {root};
    }}
}}
"""


def _free_port() -> int:
    # NOTE: another program may take the port between close() and nginx's
    # bind; nginx then fails to start and the error names the port.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _wait_for_port(port: int, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = process.stdout.read() if process.stdout else ""
            raise RuntimeError(f"nginx exited with {process.returncode}: {output}")
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", port), 1),
        ):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nginx did not listen on port {port} within {START_TIMEOUT} s")


# -- memory --------------------------------------------------------------------


def process_tree(root: int) -> dict[int, tuple[int, str]]:
    """Map each PID in the tree under ``root`` (included) to (parent, command line)."""
    parents: dict[int, int] = {}
    commands: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            # The process exited while the directory was being read.
            continue
        # The command name in field 2 may contain spaces; it ends at the last ")".
        fields = stat[stat.rindex(")") + 2 :].split()
        parents[int(entry.name)] = int(fields[1])
        commands[int(entry.name)] = command.strip()
    tree = {root: (parents.get(root, 0), commands.get(root, ""))}
    changed = True
    while changed:
        changed = False
        for pid, parent in parents.items():
            if parent in tree and pid not in tree:
                tree[pid] = (parent, commands[pid])
                changed = True
    return tree


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` from /proc, in bytes; 0 when it has exited."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    return int(match.group(1)) * 1024 if match else 0


def enddel_rss(server: Server) -> dict[str, list[int]]:
    """RSS in bytes of each process kind of an enddel server: master, server, worker.

    The master is hypercorn's first process; its children are the server
    processes, and theirs (``python -m workers``) the render workers. Other
    children (multiprocessing's resource tracker) are left out.
    """
    tree = process_tree(server.pid)
    kinds: dict[str, list[int]] = {
        "master": [],
        "server process": [],
        "render worker": [],
    }
    kinds["master"].append(rss_bytes(server.pid))
    for pid, (parent, command) in tree.items():
        if " -m workers" in command:
            kinds["render worker"].append(rss_bytes(pid))
        elif parent == server.pid and "resource_tracker" not in command:
            kinds["server process"].append(rss_bytes(pid))
    return kinds


def tree_rss(server: Server) -> int:
    """Total RSS of a server's whole process tree, in bytes."""
    return sum(rss_bytes(pid) for pid in process_tree(server.pid))
