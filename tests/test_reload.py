"""Bundle reloads and rolling restarts of a real server, with load running.

Load is a bounded loop of GETs from a few client tasks; every response must be
a 200 with a rendered page, so any dropped connection, 5xx or fallback page
counts as a failure.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx
import pytest
import trio

from tests.conftest import ServerProcess, run_server
from tests.test_app import write_site
from tests.test_lifecycle import server_pids, wait_for_log

BUNDLE_V1 = 'globalThis.renderPage = (url) => "<p>v1 " + url + "</p>";'
BUNDLE_V2 = 'globalThis.renderPage = (url) => "<p>v2 " + url + "</p>";'
BROKEN_BUNDLE = 'globalThis.renderPage = (url) => { throw new Error("broken"); };'
#: Client tasks sending requests one after another, and URLs they cycle through.
CLIENTS = 4
URLS = [f"/page/{index}" for index in range(8)]


class Load:
    """Requests sent in a loop until stopped; records every outcome."""

    def __init__(self, server: ServerProcess) -> None:
        self.url = server.url
        self.failures: list[str] = []
        self.bodies: list[bytes] = []
        self.stopped = trio.Event()

    async def run(self) -> None:
        async with httpx.AsyncClient(base_url=self.url, timeout=30) as client:
            async with trio.open_nursery() as nursery:
                for index in range(CLIENTS):
                    nursery.start_soon(self._client, client, index)

    async def _client(self, client: httpx.AsyncClient, index: int) -> None:
        sent = 0
        while not self.stopped.is_set():
            url = URLS[(index + sent) % len(URLS)]
            sent += 1
            try:
                response = await client.get(url)
            except httpx.HTTPError as error:
                self.failures.append(f"{url}: {error!r}")
                continue
            if response.status_code != 200 or b"<p>v" not in response.content:
                self.failures.append(f"{url}: {response.status_code}")
            self.bodies.append(response.content)


def settings_for(folder: Path, **extra: str) -> dict[str, str]:
    settings = write_site(folder, BUNDLE_V1)
    settings.update(
        {
            "ENDDEL_RENDER_WORKERS": "2",
            "ENDDEL_CACHE_BYTES": str(4 << 20),
            "ENDDEL_CACHE_TTL": "30",
            **extra,
        }
    )
    return settings


def reload_lines(server: ServerProcess) -> int:
    return sum(1 for line in server.log_lines if "bundle reloaded" in line)


async def test_sigusr1_reload_under_load(tmp_path: Path) -> None:
    with run_server(settings_for(tmp_path)) as server:
        load = Load(server)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(load.run)
            await wait_until(lambda: len(load.bodies) >= 40)
            (tmp_path / "bundle.js").write_text(BUNDLE_V2)
            os.kill(server_pids(server)[0], signal.SIGUSR1)
            await wait_for_log(server, lambda: reload_lines(server) == 1)
            seen = len(load.bodies)
            # Until the new bundle has rendered every URL, some responses are
            # stale v1 pages; stopping at the first v2 page would leave the
            # last response to whichever client answered last.
            await wait_until(lambda: _all_rendered_by_v2(load.bodies[seen:]))
            load.stopped.set()

    assert load.failures == []
    # Old pages served as stale while the new bundle re-rendered them.
    after = load.bodies[seen:]
    assert any(b"<p>v1 " in body for body in after)
    assert b"<p>v2 " in after[-1]
    retired = [line for line in server.log_lines if "bundle was reloaded" in line]
    assert len(retired) == 2


async def test_bad_bundle_is_rejected(tmp_path: Path) -> None:
    with run_server(settings_for(tmp_path)) as server:
        (tmp_path / "bundle.js").write_text(BROKEN_BUNDLE)
        os.kill(server_pids(server)[0], signal.SIGHUP)
        await wait_for_log(server, lambda: "reload (SIGHUP) rejected" in server.log)
        response = await trio.to_thread.run_sync(
            lambda: httpx.get(server.url + "/still", timeout=30)
        )
    assert response.status_code == 200
    assert b"<p>v1 /still</p>" in response.content
    server.wait_log("check render of / failed")


async def test_watched_bundle_reloads(tmp_path: Path) -> None:
    with run_server(settings_for(tmp_path, ENDDEL_WATCH="1")) as server:
        (tmp_path / "bundle.js").write_text(BUNDLE_V2)
        await wait_for_log(server, lambda: reload_lines(server) == 1)
        response = await trio.to_thread.run_sync(
            lambda: httpx.get(server.url + "/fresh", timeout=30)
        )
    assert b"<p>v2 /fresh</p>" in response.content
    server.wait_log("(the bundle file changed)")


# With -w 1 this lost about one request in three runs: a response whose
# headers were sent was cut off as hypercorn 0.18 closed the connection at
# the start of the drain. docs/lifecycle.md therefore asks for -w 2 or more.
@pytest.mark.parametrize("workers", [2, 3])
async def test_rolling_restart_under_load(tmp_path: Path, workers: int) -> None:
    with run_server(settings_for(tmp_path), workers=workers) as server:
        load = Load(server)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(load.run)
            for old in server_pids(server):
                others = set(server_pids(server)) - {old}
                os.kill(old, signal.SIGTERM)
                # The master replaces the drained process before the next one.
                retired = others | {old}
                await wait_until(lambda: _replaced(server, retired), 30)  # noqa: B023
            sent = len(load.bodies)
            await wait_until(lambda: len(load.bodies) >= sent + 20)
            load.stopped.set()

    assert load.failures == []


def _all_rendered_by_v2(bodies: list[bytes]) -> bool:
    return all(any(f"<p>v2 {url}</p>".encode() in b for b in bodies) for url in URLS)


def _replaced(server: ServerProcess, old: set[int]) -> bool:
    """Tell whether a server process not in ``old`` is up and accepting."""
    new = set(server_pids(server)) - old
    return any(f"[{pid}] [INFO] Running on" in server.log for pid in new)


async def wait_until(predicate: object, seconds: float = 20.0) -> None:
    """Poll a condition set by the load or another process, on real time."""
    assert callable(predicate)
    with trio.fail_after(seconds):
        # Other processes change these conditions, so no trio.Event can signal them.
        while not predicate():  # noqa: ASYNC110
            await trio.sleep(0.02)
