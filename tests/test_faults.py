"""Render faults, recycling, the error fallback and warm-up, on real workers.

Server cases run a real hypercorn process whose render workers run real V8;
faults are real too: a render that exhausts its heap, SIGSEGV sent to a
worker, a bundle that throws. Pool cases drive a RenderPool in this process
where a property of the pool itself is checked (no slot stands empty during a
hand-over, a result names the bundle that rendered it).
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import trio

from enddel.config import Config
from enddel.lifecycle import Lifecycle
from enddel.pool import RenderPool
from tests.conftest import ServerProcess, run_server
from tests.test_app import write_site
from tests.test_lifecycle import render_worker_pids, server_pids, wait_for_log
from tests.test_pool import make_config
from tests.test_reload import wait_until
from tests.upstream import Exchange, open_upstream

FAULT_BUNDLE = r"""
let kept = [];
globalThis.renderPage = async (url) => {
  if (url === "/oom") {
    const hoard = [];
    for (;;) hoard.push(new Array(1 << 16).fill(hoard.length));
  }
  if (url === "/slow") {
    const end = Date.now() + 1500;
    while (Date.now() < end) {}
    return "<p>slow done</p>";
  }
  if (url === "/throw") throw new Error("secret-detail in the bundle");
  if (url.startsWith("/leak")) kept.push(new Array(1 << 17).fill(kept.length));
  if (url.startsWith("/held")) {
    const response = await fetch("/api/hold" + url);
    return "<p>held " + (await response.text()) + "</p>";
  }
  return "<p>page " + url + "</p>";
};
"""
ERROR_PAGE = "<!doctype html><title>Sorry</title><p>Something broke.</p>"


def fault_settings(folder: Path, **extra: str) -> dict[str, str]:
    settings = write_site(folder, FAULT_BUNDLE)
    settings.update(
        {"ENDDEL_RENDER_WORKERS": "2", "ENDDEL_RENDER_TIMEOUT": "10", **extra}
    )
    return settings


async def get(server: ServerProcess, path: str) -> httpx.Response:
    return await trio.to_thread.run_sync(
        lambda: httpx.get(server.url + path, timeout=30)
    )


def log_count(server: ServerProcess, pattern: str) -> int:
    found = re.compile(pattern)
    return sum(1 for line in server.log_lines if found.search(line))


def full_pool(server: ServerProcess, old: set[int]) -> Callable[[], bool]:
    """A predicate: two render workers run and none of ``old`` is among them."""
    return lambda: (
        len(pids := render_worker_pids(server.process.pid)) == 2 and not old & set(pids)
    )


# -- faults -------------------------------------------------------------------


async def test_out_of_memory_render_replaces_its_worker(tmp_path: Path) -> None:
    settings = fault_settings(tmp_path, ENDDEL_V8_HEAP_MB="16")
    with run_server(settings) as server:
        before = set(render_worker_pids(server.process.pid))
        response = await get(server, "/oom")
        # The fallback (no retry can help a page that always exhausts the heap).
        assert response.status_code == 500
        assert response.headers["cache-control"] == "no-store"
        await wait_until(
            lambda: len(set(render_worker_pids(server.process.pid)) - before) >= 1
        )
        await wait_until(lambda: len(render_worker_pids(server.process.pid)) == 2)
        after = await get(server, "/after")
    assert after.status_code == 200
    assert b"<p>page /after</p>" in after.content
    assert log_count(server, "render failed url=/oom .*OutOfMemory") == 1
    assert log_count(server, r"a render ran out of V8 heap; pid \d+ takes over") == 1
    assert "Traceback" not in server.log


async def test_segfaulted_worker_restarts_and_its_job_is_retried(
    tmp_path: Path,
) -> None:
    with run_server(fault_settings(tmp_path)) as server:
        before = set(render_worker_pids(server.process.pid))
        async with trio.open_nursery() as nursery:
            responses: list[httpx.Response] = []

            async def slow() -> None:
                responses.append(await get(server, "/slow"))

            nursery.start_soon(slow)
            busy = await trio.to_thread.run_sync(_wait_for_busy_worker, before)
            os.kill(busy, signal.SIGSEGV)
        await wait_until(full_pool(server, {busy}))
        after = await get(server, "/after")

    assert responses[0].status_code == 200
    assert b"<p>slow done</p>" in responses[0].content
    assert (
        log_count(server, rf"\(pid {busy}\) exited with -11: .*restarting in 0\.1 s")
        == 1
    )
    assert log_count(server, r"died rendering /slow .*retrying on another worker") == 1
    assert after.status_code == 200


def _wait_for_busy_worker(pids: set[int]) -> int:
    """The PID among ``pids`` that uses the CPU, as a busy render does."""
    from tests.conftest import wait_for

    first = {pid: _cpu_ticks(pid) for pid in pids}
    busy: list[int] = []

    def one_busy() -> bool:
        busy[:] = [pid for pid in pids if _cpu_ticks(pid) > first[pid] + 10]
        return len(busy) == 1

    wait_for(one_busy, 20)
    return busy[0]


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


#: Requests each load client sends at most, should the workers never change.
MAX_REQUESTS = 400


@pytest.mark.parametrize(
    ("limit", "urls", "reason"),
    [
        ({"ENDDEL_WORKER_MAX_RENDERS": "5"}, "/page", r"\d+ renders \(ENDDEL_WORKER"),
        ({"ENDDEL_WORKER_MAX_HEAP_MB": "8"}, "/leak", r"V8 heap reached \d+ MB"),
    ],
    ids=["renders", "heap"],
)
async def test_recycling_under_load_fails_no_request(
    tmp_path: Path, limit: dict[str, str], urls: str, reason: str
) -> None:
    with run_server(fault_settings(tmp_path, **limit)) as server:
        before = set(render_worker_pids(server.process.pid))
        failures: list[str] = []
        replaced = trio.Event()

        async def client(index: int) -> None:
            async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
                for sent in range(MAX_REQUESTS):
                    if replaced.is_set():
                        return
                    url = f"{urls}/{index}/{sent}"
                    response = await http.get(url)
                    if (
                        response.status_code != 200
                        or b"<p>page " not in response.content
                    ):
                        failures.append(f"{url}: {response.status_code}")

        async with trio.open_nursery() as nursery:
            for index in range(4):
                nursery.start_soon(client, index)
            # Load runs until both original workers have been replaced.
            await wait_until(full_pool(server, before), 25)
            replaced.set()

    assert failures == []
    assert log_count(server, "retiring render worker .*" + reason) >= 2
    assert log_count(server, "exited with") == 0


# -- the error fallback ---------------------------------------------------------


@pytest.mark.parametrize("error_page", [True, False], ids=["error-page", "shell"])
async def test_throwing_render_gets_the_fallback(
    tmp_path: Path, error_page: bool
) -> None:
    settings = fault_settings(tmp_path, ENDDEL_CACHE_BYTES=str(1 << 20))
    if error_page:
        (tmp_path / "error.html").write_text(ERROR_PAGE)
        settings["ENDDEL_ERROR_PAGE"] = str(tmp_path / "error.html")
    with run_server(settings) as server:
        first = await get(server, "/throw")
        second = await get(server, "/throw")
    expected = (
        ERROR_PAGE if error_page else (tmp_path / "client/index.html").read_text()
    )
    for response in (first, second):
        assert response.status_code == 500
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["x-cache"] == "BYPASS"
        shell = expected.replace("<!--ssr-outlet-->", "")
        assert response.text == shell.replace("<!--ssr-head-->", "")
        assert "secret-detail" not in response.text
        assert "renderPage" not in response.text
    # Never cached: the second request rendered again, and failed again.
    assert log_count(server, r"render failed url=/throw ") == 2


# -- warm-up and reloads ---------------------------------------------------------


async def test_warm_urls_are_hits_and_top_pages_rewarm_after_reload(
    tmp_path: Path,
) -> None:
    settings = fault_settings(
        tmp_path, ENDDEL_CACHE_BYTES=str(1 << 20), ENDDEL_WARM_URLS="/a,/b"
    )
    settings["ENDDEL_RENDER_WORKERS"] = "1"
    with run_server(settings) as server:
        await wait_for_log(
            server, lambda: "warm-up rendered 2 of 2 pages" in server.log
        )
        warmed = [await get(server, "/a"), await get(server, "/b")]
        for _ in range(3):
            popular = await get(server, "/popular")

        bundle = tmp_path / "bundle.js"
        bundle.write_text(FAULT_BUNDLE.replace("<p>page ", "<p>v2 page "))
        os.kill(server_pids(server)[0], signal.SIGUSR1)
        await wait_for_log(server, lambda: log_count(server, "warm-up rendered") == 2)
        after = await get(server, "/popular")

    assert [r.headers["x-cache"] for r in warmed] == ["HIT", "HIT"]
    assert popular.headers["x-cache"] == "HIT"
    server.wait_log("warm-up rendered 3 of 3 pages")
    assert after.headers["x-cache"] == "HIT"
    assert b"<p>v2 page /popular</p>" in after.content


async def test_reload_without_stale_purges_old_entries(tmp_path: Path) -> None:
    settings = fault_settings(
        tmp_path, ENDDEL_CACHE_BYTES=str(1 << 20), ENDDEL_RELOAD_STALE="0"
    )
    with run_server(settings) as server:
        await get(server, "/kept")
        cached = await get(server, "/kept")
        (tmp_path / "bundle.js").write_text(
            FAULT_BUNDLE.replace("<p>page ", "<p>v2 page ")
        )
        os.kill(server_pids(server)[0], signal.SIGUSR1)
        await wait_for_log(server, lambda: "bundle reloaded" in server.log)
        after = await get(server, "/kept")

    assert cached.headers["x-cache"] == "HIT"
    assert log_count(server, r"purged 1 entries of bundle version") == 1
    # Purged, so never served as stale; the reload's warm-up of the popular
    # pages may already have rendered it again.
    assert after.headers["x-cache"] in ("MISS", "HIT")
    assert b"<p>v2 page /kept</p>" in after.content


class _RecordingSsr:
    """Warm-up's view of the SSR handler, recording the order of events."""

    def __init__(self, events: list[str]) -> None:
        self._events = events

    async def warm(self, url: str) -> bool:
        self._events.append(f"warm {url}")
        return True

    def switch_bundle(self, version: str, *, keep_stale: bool) -> None:
        raise AssertionError("warm-up never switches the bundle")


async def test_warm_up_waits_for_a_busy_pool(tmp_path: Path) -> None:
    release = trio.Event()

    async def hold(exchange: Exchange) -> None:
        await release.wait()
        await exchange.respond(200, [(b"content-type", b"text/plain")], b"done")

    async with open_upstream() as upstream:
        upstream.route(b"/api/hold", hold)
        config = _held_config(tmp_path, upstream.url)
        pool = RenderPool(config)
        events: list[str] = []
        lifecycle = Lifecycle(config, pool, _RecordingSsr(events), store=object())  # type: ignore[arg-type]

        async def user_request() -> None:
            await pool.render("/held/user", trio.current_time() + 20)
            events.append("user done")

        async with trio.open_nursery() as nursery:
            await nursery.start(pool.run)
            nursery.start_soon(user_request)
            await upstream.wait_for_request()
            nursery.start_soon(lifecycle._warm, ["/w"])
            # Warm-up polls the pool; give it many polls while the worker is busy.
            for _ in range(10):
                await trio.sleep(0.05)
            assert events == []
            release.set()
            await wait_until(lambda: len(events) == 2)
            nursery.cancel_scope.cancel()
    assert events == ["user done", "warm /w"]


# -- hand-over and versions in the pool ---------------------------------------------


def _held_config(tmp_path: Path, upstream_url: str, **changes: object) -> Config:
    return make_config(
        tmp_path,
        FAULT_BUNDLE,
        render_workers=1,
        render_timeout=20.0,
        api_upstream=f"{upstream_url}/api",
        fetch_allowed_hosts=frozenset({"127.0.0.1"}),
        **changes,
    )


async def test_retiring_worker_leaves_no_slot_empty(tmp_path: Path) -> None:
    pool = RenderPool(make_config(tmp_path, FAULT_BUNDLE, worker_max_renders=3))
    async with trio.open_nursery() as nursery:
        await nursery.start(pool.run)
        ready = []
        # Render until both slots have handed over to successors twice.
        for index in range(MAX_REQUESTS):
            await pool.render(f"/p/{index}", trio.current_time() + 20)
            ready.append(pool.statistics().ready_workers)
            if pool.statistics().retirements >= 4:
                break
            # Give a successor that has loaded the chance to take over.
            await trio.sleep(0.01)
        stats = pool.statistics()
        nursery.cancel_scope.cancel()
    assert ready == [2] * len(ready)
    assert stats.retirements >= 4
    assert stats.restarts == 0


async def test_job_queued_before_a_reload_names_the_new_version(tmp_path: Path) -> None:
    release = trio.Event()

    async def hold(exchange: Exchange) -> None:
        await release.wait()
        await exchange.respond(200, [(b"content-type", b"text/plain")], b"done")

    async with open_upstream() as upstream:
        upstream.route(b"/api/hold", hold)
        pool = RenderPool(_held_config(tmp_path, upstream.url))
        results = {}

        async def render(url: str) -> None:
            results[url] = await pool.render(url, trio.current_time() + 20)

        async with trio.open_nursery() as nursery:
            await nursery.start(pool.run)
            old_version = pool.bundle_version
            nursery.start_soon(render, "/held/first")
            await upstream.wait_for_request()
            nursery.start_soon(render, "/queued")
            await trio.testing.wait_all_tasks_blocked()
            assert pool.statistics().queued_jobs == 1

            (tmp_path / "bundle.js").write_text(
                FAULT_BUNDLE.replace("<p>page ", "<p>v2 page ")
            )
            new_version = await pool.reload(["/"])
            release.set()
            await wait_until(lambda: len(results) == 2)
            nursery.cancel_scope.cancel()

    assert new_version != old_version
    assert results["/held/first"].bundle_version == old_version
    assert results["/queued"].bundle_version == new_version
    assert results["/queued"].html == b"<p>v2 page /queued</p>"
