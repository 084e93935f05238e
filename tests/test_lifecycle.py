"""SIGTERM drains a real server, however it arrives, with requests in flight.

Each case holds page renders (whose bundle fetches from the upstream) and
proxied API requests open at a loopback upstream, sends SIGTERM to the
hypercorn master, to one server process or to the whole process group, then
lets the upstream answer. Every held request must succeed, and the server must
leave no process, shared-memory segment or traceback behind.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import trio

from tests.conftest import ServerProcess, run_server, wait_for
from tests.test_app import write_site
from tests.upstream import Exchange, open_upstream

#: A page render that fetches from the upstream, so the test controls when
#: it finishes; every other URL renders at once.
FETCH_BUNDLE = r"""
globalThis.renderPage = async (url) => {
  if (url.startsWith("/held")) {
    const response = await fetch("/api/hold" + url);
    return "<p>held " + (await response.text()) + "</p>";
  }
  return "<p>page " + url + "</p>";
};
"""
#: Requests of each kind held open across the signal; no more renders than one
#: server process has render workers, so every held render is in a worker.
HELD_RENDERS = 2
HELD_PROXIED = 3
#: Seconds hypercorn lets open requests finish after a shutdown starts.
GRACEFUL_TIMEOUT = "20"

_DRAINING = re.compile(r"server process (\d+) draining")


def session_processes(session: int) -> list[int]:
    """PIDs of live processes in the session that ``run_server`` started."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[3]) == session and fields[0] != "Z":
            pids.append(int(entry.name))
    return pids


def render_worker_pids(session: int) -> list[int]:
    pids = []
    for pid in session_processes(session):
        with contextlib.suppress(OSError):
            if b"workers" in Path(f"/proc/{pid}/cmdline").read_bytes():
                pids.append(pid)
    return pids


def server_segments(master: int) -> list[str]:
    """Names in /dev/shm that belong to the server whose master is ``master``."""
    return sorted(
        name for name in os.listdir("/dev/shm") if f"enddel-{master}-" in name
        or f"enddel-metrics-{master}-" in name
    )


def server_pids(server: ServerProcess) -> list[int]:
    """PIDs of the server processes, not of multiprocessing's resource tracker."""
    master = server.process.pid
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    pids = []
    for pid in children:
        with contextlib.suppress(OSError):
            if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                pids.append(int(pid))
    return pids


def drain_count(server: ServerProcess) -> int:
    return sum(1 for line in server.log_lines if _DRAINING.search(line))


async def wait_for_log(server: ServerProcess, predicate: Callable[[], bool]) -> None:
    """Wait for a condition on the server's log; fail with the log if it never holds."""
    try:
        await trio.to_thread.run_sync(wait_for, predicate, 20)
    except TimeoutError:
        pytest.fail("the server never logged what was expected:\n" + server.log)


def site_settings(folder: Path, upstream_url: str) -> dict[str, str]:
    settings = write_site(folder, FETCH_BUNDLE)
    settings.update(
        {
            "ENDDEL_API_UPSTREAM": f"{upstream_url}/api",
            "ENDDEL_RENDER_WORKERS": "2",
            "ENDDEL_RENDER_TIMEOUT": "15",
            "ENDDEL_CACHE_BYTES": str(1 << 20),
            "ENDDEL_FETCH_ALLOWED_HOSTS": "127.0.0.1",
        }
    )
    return settings


SignalSender = Callable[[ServerProcess], None]


def to_master(server: ServerProcess) -> None:
    os.kill(server.process.pid, signal.SIGTERM)


def to_one_server_process(server: ServerProcess) -> None:
    os.kill(server_pids(server)[0], signal.SIGTERM)


def to_group(server: ServerProcess) -> None:
    os.killpg(server.process.pid, signal.SIGTERM)


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize(
    "send", [to_master, to_one_server_process, to_group], ids=["master", "one", "group"]
)
async def test_sigterm_finishes_held_requests(
    tmp_path: Path, send: SignalSender, workers: int
) -> None:
    release = trio.Event()

    async def hold(exchange: Exchange) -> None:
        await release.wait()
        await exchange.respond(200, [(b"content-type", b"text/plain")], b"done")

    async with open_upstream() as upstream:
        upstream.route(b"/api/hold", hold)
        settings = site_settings(tmp_path, upstream.url)
        extra = ("--graceful-timeout", GRACEFUL_TIMEOUT)
        with run_server(settings, workers=workers, extra_args=extra) as server:
            master = server.process.pid
            old_servers = server_pids(server)
            statuses: list[int | str] = []
            async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:

                async def one(path: str) -> None:
                    try:
                        response = await client.get(path)
                    except httpx.HTTPError as error:
                        statuses.append(repr(error))
                        return
                    statuses.append(response.status_code)
                    assert b"done" in response.content

                async with trio.open_nursery() as nursery:
                    for index in range(HELD_RENDERS):
                        nursery.start_soon(one, f"/held/{index}")
                    for index in range(HELD_PROXIED):
                        nursery.start_soon(one, f"/api/hold/{index}")
                    await upstream.wait_for_request(HELD_RENDERS + HELD_PROXIED)
                    send(server)
                    draining = 1 if send is to_one_server_process else workers
                    await wait_for_log(server, lambda: drain_count(server) >= draining)
                    release.set()

            assert statuses == [200] * (HELD_RENDERS + HELD_PROXIED)
            if send is to_one_server_process:
                # The master replaces the drained process; the server serves on.
                await trio.to_thread.run_sync(
                    wait_for,
                    lambda: len(set(server_pids(server)) - set(old_servers)) == 1,
                    30,
                )
                response = await trio.to_thread.run_sync(
                    lambda: httpx.get(server.url + "/after", timeout=30)
                )
                assert response.status_code == 200
                to_master(server)
            exit_code = await trio.to_thread.run_sync(server.process.wait, 30)

    assert exit_code == 0
    assert "Traceback" not in server.log
    assert session_processes(master) == []
    assert server_segments(master) == []


async def test_render_worker_ignores_group_sigterm(tmp_path: Path) -> None:
    async with open_upstream() as upstream:
        settings = site_settings(tmp_path, upstream.url)
        with run_server(settings) as server:
            # SIGTERM to the group, then straight away a second look: the
            # render workers must still be alive while their server drains.
            render_workers = render_worker_pids(server.process.pid)
            assert len(render_workers) == 2
            os.killpg(server.process.pid, signal.SIGTERM)
            exit_code = await trio.to_thread.run_sync(server.process.wait, 30)
    assert exit_code == 0
    stopped = [line for line in server.log_lines if "exited with" in line]
    assert stopped == []
    assert "Traceback" not in server.log


def test_readyz_fails_once_sigterm_starts_the_drain(tmp_path: Path) -> None:
    settings = write_site(tmp_path)
    with run_server(settings) as server:
        ready = httpx.get(server.url + "/_enddel/readyz", timeout=10)
        assert ready.status_code == 200
        (pid,) = server_pids(server)
        os.kill(pid, signal.SIGTERM)
        answers: list[httpx.Response] = []

        def drained_answer() -> bool:
            # New connections, so the draining process itself answers while it
            # still accepts them during its close notice.
            with httpx.Client(timeout=10) as client:
                answers.append(client.get(server.url + "/_enddel/readyz"))
            return answers[-1].status_code == 503

        wait_for(drained_answer, timeout=10)
        assert "draining: failed" in answers[-1].text
        assert answers[-1].headers["Cache-Control"] == "no-store"
        # Pages are still served: by the draining process during its close
        # notice, then by the replacement that the master starts.
        assert httpx.get(server.url + "/page", timeout=10).status_code == 200
