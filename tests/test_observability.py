"""Metrics, health and Server-Timing of a real ``hypercorn -w 2`` server.

Known traffic goes in over fresh connections, so both server processes serve
some of it. Then ``/_enddel/metrics`` is scraped until each process has served
one scrape, and both scrapes must show the same server-wide totals.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from enddel.http.health import HEALTHZ_PATH, METRICS_PATH, READYZ_PATH
from tests.conftest import ServerProcess, run_server, wait_for
from tests.upstream import Exchange, Upstream, open_upstream

#: Scrapes tried before giving up on reaching the second server process. The
#: kernel hands each new connection to one of the two accepting processes, so
#: fifty tries that all reach the same one mean it does not balance at all.
MAX_SCRAPES = 50
ADMIN_TOKEN = "observability-admin-token-0123456789"
COOKIE_VALUE = "session-secret-cookie-value-42"
AUTHORIZATION_VALUE = "Bearer bearer-secret-value-17"

PAGE_HITS = 5  # requests of "/" after the first, which is the one miss
STATIC_REQUESTS = 2
PROXY_REQUESTS = 3
BYPASS_REQUESTS = 2

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture(scope="module")
def server(demo_build: Path) -> Iterator[ServerProcess]:
    settings = {"ENDDEL_RENDER_WORKERS": "1", "ENDDEL_ADMIN_TOKEN": ADMIN_TOKEN}
    with run_server(settings, workers=2) as running:
        yield running


@pytest.fixture(scope="module")
def traffic(server: ServerProcess) -> dict[str, httpx.Response]:
    """Send the known traffic once; return one response of each kind."""
    sent = {"miss": fresh_get(server, "/")}
    for _ in range(PAGE_HITS):
        sent["hit"] = fresh_get(server, "/")
    for _ in range(STATIC_REQUESTS):
        sent["static"] = fresh_get(server, "/favicon.svg")
    for _ in range(PROXY_REQUESTS):
        sent["proxy"] = fresh_get(server, "/api/products")
    for _ in range(BYPASS_REQUESTS):
        sent["bypass"] = fresh_get(
            server,
            "/",
            Cookie=f"session={COOKIE_VALUE}",
            Authorization=AUTHORIZATION_VALUE,
        )
    return sent


def fresh_get(server: ServerProcess, path: str, **headers: str) -> httpx.Response:
    """GET over a new connection, which either server process may accept."""
    with httpx.Client(base_url=server.url, timeout=30) as client:
        return client.get(path, headers=headers)


def scrape_each_process(server: ServerProcess) -> dict[str, Samples]:
    """Scrape until two server processes have served one; map PID to samples."""
    by_pid: dict[str, Samples] = {}
    for _ in range(MAX_SCRAPES):
        response = fresh_get(server, METRICS_PATH)
        assert response.status_code == 200, response.text
        samples = parse(response.text)
        [pid] = [
            labels[0][1]
            for name, labels in samples
            if name == "enddel_scraped_process_info"
        ]
        by_pid.setdefault(pid, samples)
        if len(by_pid) == 2:
            return by_pid
    raise AssertionError(f"{MAX_SCRAPES} scrapes all reached pid {list(by_pid)}")


def parse(text: str) -> Samples:
    """Every sample by name and sorted labels, read by prometheus-client's parser."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_traffic_statuses(traffic: dict[str, httpx.Response]) -> None:
    assert traffic["miss"].headers["X-Cache"] == "MISS"
    assert traffic["hit"].headers["X-Cache"] == "HIT"
    assert traffic["static"].status_code == 200
    assert traffic["proxy"].status_code == 502
    assert traffic["bypass"].headers["X-Cache"] == "BYPASS"


def test_scrapes_agree_across_processes(
    server: ServerProcess, traffic: dict[str, httpx.Response]
) -> None:
    first, second = scrape_each_process(server).values()
    server_wide = [
        name for name, _ in first
        if not name.startswith(("enddel_scraped_process", "enddel_render_worker_heap"))
    ]  # fmt: skip
    for name, labels in first:
        if name in server_wide:
            assert second.get((name, labels)) == first[(name, labels)], (name, labels)


@pytest.mark.parametrize("which", [0, 1])
def test_totals_match_traffic(
    server: ServerProcess, traffic: dict[str, httpx.Response], which: int
) -> None:
    samples = list(scrape_each_process(server).values())[which]
    requests = "enddel_http_requests_total"
    page_requests = 1 + PAGE_HITS + BYPASS_REQUESTS
    assert value(samples, requests, kind="ssr", status="200") == page_requests
    assert value(samples, requests, kind="static", status="200") == STATIC_REQUESTS
    assert value(samples, requests, kind="proxy", status="502") == PROXY_REQUESTS
    latency = "enddel_http_request_duration_seconds_count"
    assert value(samples, latency, kind="ssr") == page_requests

    cache = "enddel_page_cache_requests_total"
    assert value(samples, cache, outcome="miss") == 1
    assert value(samples, cache, outcome="hit") == PAGE_HITS
    assert value(samples, cache, outcome="bypass") == BYPASS_REQUESTS
    assert value(samples, "enddel_page_cache_entries") == 1
    assert value(samples, "enddel_page_cache_puts_total") == 1
    assert value(samples, "enddel_page_cache_used_bytes") > 0

    renders = 1 + BYPASS_REQUESTS
    assert value(samples, "enddel_renders_total", outcome="ok") == renders
    assert value(samples, "enddel_render_duration_seconds_count") == renders
    errors = "enddel_upstream_errors_total"
    assert value(samples, errors, reason="transport") == PROXY_REQUESTS


def test_process_gauges(
    server: ServerProcess, traffic: dict[str, httpx.Response]
) -> None:
    samples = next(iter(scrape_each_process(server).values()))
    assert value(samples, "enddel_server_processes") == 2
    assert value(samples, "enddel_render_workers") == 2
    assert value(samples, "enddel_render_workers_ready") == 2
    assert value(samples, "enddel_render_queue_jobs") == 0
    heaps = [
        v
        for (name, _), v in samples.items()
        if name == "enddel_render_worker_heap_bytes"
    ]
    assert heaps, "no render worker reported its V8 heap"
    assert all(heap > 0 for heap in heaps)


def test_server_timing_on_miss(traffic: dict[str, httpx.Response]) -> None:
    spans = timing_spans(traffic["miss"].headers["Server-Timing"])
    assert set(spans) == {"cache", "queue", "render", "total"}
    assert spans["render"] > 0
    assert spans["total"] >= spans["render"]


@pytest.mark.parametrize("kind", ["hit", "bypass"])
def test_server_timing_on_cached_and_bypass(
    traffic: dict[str, httpx.Response], kind: str
) -> None:
    spans = timing_spans(traffic[kind].headers["Server-Timing"])
    expected = {"hit": {"cache", "total"}, "bypass": {"queue", "render", "total"}}
    assert set(spans) == expected[kind]


def timing_spans(header: str) -> dict[str, float]:
    spans = {}
    for item in header.split(","):
        match = re.fullmatch(r"\s*(\w+);dur=([0-9.]+)\s*", item)
        assert match, header
        spans[match.group(1)] = float(match.group(2))
    return spans


def test_health_endpoints(server: ServerProcess) -> None:
    healthz = fresh_get(server, HEALTHZ_PATH)
    readyz = fresh_get(server, READYZ_PATH)
    assert healthz.status_code == 200
    assert readyz.status_code == 200, readyz.text
    assert readyz.text.splitlines() == [
        "draining: ok", "bundle: ok", "render_workers: ok", "page_cache: ok"
    ]  # fmt: skip
    assert readyz.headers["Cache-Control"] == "no-store"


def test_startup_summary_logged(server: ServerProcess) -> None:
    summaries = [line for line in server.log_lines if "enddel.server: enddel " in line]
    assert len(summaries) == 2
    assert all(f"listening on 127.0.0.1:{server.port}" in line for line in summaries)
    assert all("(version " in line for line in summaries)


def test_no_secret_in_logs(
    server: ServerProcess, traffic: dict[str, httpx.Response]
) -> None:
    log = server.log
    assert "enddel.proxy" in log  # the upstream errors were logged
    for secret in (ADMIN_TOKEN, COOKIE_VALUE, AUTHORIZATION_VALUE):
        assert secret not in log


def test_metrics_directory_removed_at_stop(demo_build: Path) -> None:
    with run_server({"ENDDEL_RENDER_WORKERS": "1"}, workers=2) as running:
        fresh_get(running, "/")
        [line] = {
            line.split("metrics in ")[1]
            for line in running.log_lines
            if "metrics in " in line
        }
        directory = Path(line)
        assert directory.is_dir()
        assert list(directory.glob("counter_*.db"))
    assert not directory.exists()
    assert not directory.with_name(directory.name + ".lock").exists()


FAILING_BUNDLE = r"""
globalThis.renderPage = (url) => {
  if (url === "/throw") throw new Error("render broke on purpose");
  if (url === "/never") return new Promise(() => {});
  return "<p>page " + url + "</p>";
};
"""
INDEX = (
    "<!doctype html><html><head><!--ssr-head--></head>"
    '<body><div id="root"><!--ssr-outlet--></div></body></html>'
)


@pytest.fixture(scope="module")
def uncached_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ServerProcess]:
    """A server with the page cache off, whose bundle throws and hangs on cue."""
    folder = tmp_path_factory.mktemp("site")
    (folder / "client").mkdir()
    (folder / "client" / "index.html").write_text(INDEX)
    (folder / "bundle.js").write_text(FAILING_BUNDLE)
    settings = {
        "ENDDEL_BUNDLE": str(folder / "bundle.js"),
        "ENDDEL_CLIENT_DIR": str(folder / "client"),
        "ENDDEL_RENDER_WORKERS": "1",
        "ENDDEL_CACHE_BYTES": "0",
        "ENDDEL_RENDER_TIMEOUT": "1",
    }
    with run_server(settings, workers=2) as running:
        yield running


def test_render_failures_counted(uncached_server: ServerProcess) -> None:
    assert fresh_get(uncached_server, "/throw").status_code == 500
    assert fresh_get(uncached_server, "/never").status_code == 504
    assert fresh_get(uncached_server, "/fine").status_code == 200

    for samples in scrape_each_process(uncached_server).values():
        for outcome in ("failed", "timeout", "ok"):
            assert value(samples, "enddel_renders_total", outcome=outcome) == 1, outcome
        for status in ("500", "504", "200"):
            count = value(
                samples, "enddel_http_requests_total", kind="ssr", status=status
            )
            assert count == 1, status
        assert value(samples, "enddel_page_cache_requests_total", outcome="bypass") == 1
        assert not any(
            name.startswith("enddel_page_cache_entries") for name, _ in samples
        )
    assert "render failed url=/throw" in uncached_server.log
    assert "render broke on purpose" in uncached_server.log
    assert fresh_get(uncached_server, READYZ_PATH).status_code == 200


def test_worker_restart_counted(uncached_server: ServerProcess) -> None:
    started = re.findall(r"render worker 0 started \(pid (\d+)\)", uncached_server.log)
    assert len(started) == 2
    os.kill(int(started[0]), signal.SIGKILL)

    def restart_counted() -> bool:
        # The pool finds a dead worker when it hands it the next job, so send
        # pages until the process that lost its worker has served one.
        assert fresh_get(uncached_server, "/fine").status_code == 200
        samples = parse(fresh_get(uncached_server, METRICS_PATH).text)
        return (
            value(samples, "enddel_render_worker_restarts_total", reason="exited") == 1
        )

    wait_for(restart_counted, timeout=30)
    assert f"(pid {started[0]}) exited with" in uncached_server.log


HOLDING_BUNDLE = r"""
globalThis.renderPage = async (url) => {
  const response = await fetch("/api/hold");
  return "<p>" + (await response.text()) + "</p>";
};
"""
WAITING_CLIENTS = 4


async def test_coalesced_misses_counted(tmp_path: Path) -> None:
    release = trio.Event()

    async def held(exchange: Exchange) -> None:
        await release.wait()
        await exchange.respond(200, [(b"Content-Type", b"text/plain")], b"held")

    async with open_upstream() as upstream:
        upstream.route(b"/api/hold", held)
        (tmp_path / "client").mkdir()
        (tmp_path / "client" / "index.html").write_text(INDEX)
        (tmp_path / "bundle.js").write_text(HOLDING_BUNDLE)
        settings = {
            "ENDDEL_BUNDLE": str(tmp_path / "bundle.js"),
            "ENDDEL_CLIENT_DIR": str(tmp_path / "client"),
            "ENDDEL_RENDER_WORKERS": "1",
            "ENDDEL_RENDER_TIMEOUT": "60",
            "ENDDEL_API_UPSTREAM": upstream.url + "/api",
        }
        with contextlib.ExitStack() as stack:
            start = functools.partial(stack.enter_context, run_server(settings))
            server = await trio.to_thread.run_sync(start)
            try:
                responses = await _coalesce(server, upstream, release)
            finally:
                await trio.to_thread.run_sync(stack.close)

    assert [r.headers["X-Cache"] for r in responses] == ["MISS"] * WAITING_CLIENTS
    assert all(r.text.count("held") == 1 for r in responses)


async def _coalesce(
    server: ServerProcess, upstream: Upstream, release: trio.Event
) -> list[httpx.Response]:
    """Hold one render while every client waits for it, then check the counts."""
    responses: list[httpx.Response] = []

    async def get_page() -> None:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            responses.append(await client.get("/held"))

    async with trio.open_nursery() as nursery:
        for _ in range(WAITING_CLIENTS):
            nursery.start_soon(get_page)
        await upstream.wait_for_request()
        # The others join the render while the upstream delays it. Their count
        # lives in the server process, so polling its metrics is the only way.
        coalesced = WAITING_CLIENTS - 1
        while await _scrape_value(server, "coalesced") < coalesced:  # noqa: ASYNC110
            await trio.sleep(0.02)
        release.set()

    assert await _scrape_value(server, "miss") == WAITING_CLIENTS
    assert await _scrape_value(server, "coalesced") == coalesced
    assert len(upstream.requests) == 1
    return responses


async def _scrape_value(server: ServerProcess, outcome: str) -> float:
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        samples = parse((await client.get(METRICS_PATH)).text)
    return value(samples, "enddel_page_cache_requests_total", outcome=outcome)
