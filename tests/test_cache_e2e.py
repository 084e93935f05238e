"""The page cache through real servers: one process and several, real shared memory."""

from __future__ import annotations

import concurrent.futures
import os
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ServerProcess, run_server, wait_for

BUNDLE = r"""
let renders = 0;
const busy = (ms) => { const end = Date.now() + ms; while (Date.now() < end) {} };
globalThis.renderPage = (url) => {
  renders += 1;
  const path = url.split("?")[0];
  console.log("rendering " + url);
  if (path === "/slow") busy(300);
  if (path === "/stale") return { html: "<p>stale render " + renders + "</p>", ttl: 0 };
  if (path === "/flaky") {
    if (url.includes("broken") || renders > 1) throw new Error("flaky broke");
    return { html: "<p>flaky ok</p>", ttl: 0 };
  }
  if (path === "/nostore") return { html: "<p>nostore</p>", cache: false };
  if (path === "/cookie") {
    return { html: "<p>cookie</p>", headers: { "Set-Cookie": "s=1" } };
  }
  if (path === "/unavailable") return { html: "<p>later</p>", status: 503 };
  if (path === "/missing") return { html: "<p>missing</p>", status: 404 };
  return "<p>page " + url + "</p>" + "<i>filler</i>".repeat(200);
};
"""
INDEX = "<!doctype html><html><head></head><body><!--ssr-outlet--></body></html>"
TOKEN = "test-admin-token-0123456789"


def site(folder: Path) -> dict[str, str]:
    (folder / "client").mkdir(parents=True, exist_ok=True)
    (folder / "client" / "index.html").write_text(INDEX)
    (folder / "bundle.js").write_text(BUNDLE)
    return {
        "ENDDEL_BUNDLE": str(folder / "bundle.js"),
        "ENDDEL_CLIENT_DIR": str(folder / "client"),
        "ENDDEL_RENDER_WORKERS": "1",
        "ENDDEL_CACHE_BYTES": str(8 * 1024 * 1024),
        "ENDDEL_CACHE_TTL": "300",
        "ENDDEL_CACHE_STALE": "300",
        "ENDDEL_CACHE_IGNORED_COOKIES": "_ga,_gid",
        "ENDDEL_ADMIN_TOKEN": TOKEN,
    }


ACCESS_LOG = ("--access-logfile", "-", "--access-logformat", "access %(p)s %(r)s %(s)s")


@pytest.fixture(scope="module", params=[1, 2], ids=["w1", "w2"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    settings = site(tmp_path_factory.mktemp("cache-site"))
    with run_server(settings, workers=request.param, extra_args=ACCESS_LOG) as running:
        yield running


def fetch(
    server: ServerProcess, path: str, method: str = "GET", **headers: str
) -> httpx.Response:
    """One request on a new connection, so any server process may accept it."""
    with httpx.Client(timeout=30) as client:
        return client.request(method, server.url + path, headers=headers)


def render_count(server: ServerProcess, url: str) -> int:
    return sum(1 for line in server.log_lines if line.endswith(f": rendering {url}"))


def assert_renders(server: ServerProcess, url: str, expected: int) -> None:
    """Check how often ``url`` was rendered, from the bundle's console lines.

    The lines reach the test through the server's output pipe, a little after
    the responses, so the count is awaited before it is compared.
    """
    wait_for(lambda: render_count(server, url) >= expected)
    assert render_count(server, url) == expected


def test_miss_then_hit_in_every_process(server: ServerProcess) -> None:
    first = fetch(server, "/hits")
    assert first.headers["x-cache"] == "MISS"
    assert "age" not in first.headers
    for _ in range(30):
        again = fetch(server, "/hits")
        assert again.headers["x-cache"] == "HIT"
        assert again.text == first.text
        assert int(again.headers["age"]) >= 0
    assert_renders(server, "/hits", 1)
    pids = set(re.findall(r"access <(\d+)> GET /hits ", server.log))
    assert len(pids) == server.log.count("Running on")


def test_head_shares_the_get_entry(server: ServerProcess) -> None:
    get = fetch(server, "/shared?x=1")
    head = fetch(server, "/shared?x=1", method="HEAD")
    assert get.headers["x-cache"] == "MISS"
    assert head.headers["x-cache"] == "HIT"
    assert head.content == b""
    assert head.headers["content-length"] == get.headers["content-length"]


def test_forged_host_headers_share_the_entry(server: ServerProcess) -> None:
    fetch(server, "/hosted")
    forged = fetch(
        server, "/hosted", Host="evil.example", **{"X-Forwarded-Host": "evil.example"}
    )
    assert forged.headers["x-cache"] == "HIT"
    assert_renders(server, "/hosted", 1)


def test_if_none_match_gets_304_from_cache(server: ServerProcess) -> None:
    first = fetch(server, "/tagged", **{"Accept-Encoding": "br"})
    etag = first.headers["etag"]
    again = fetch(server, "/tagged", **{"Accept-Encoding": "br", "If-None-Match": etag})
    assert again.status_code == 304
    assert again.headers["x-cache"] == "HIT"
    assert again.headers["etag"] == etag
    assert again.headers["vary"] == "Accept-Encoding"
    assert again.content == b""


@pytest.mark.parametrize(
    ("headers", "outcome"),
    [
        ({"Cookie": "session=abc"}, "BYPASS"),
        ({"Authorization": "Bearer x"}, "BYPASS"),
        ({"Cookie": "_ga=1; _gid=2"}, "HIT"),
        ({"Cookie": "_ga=1; session=2"}, "BYPASS"),
    ],
)
def test_credentials_bypass(
    server: ServerProcess, headers: dict[str, str], outcome: str
) -> None:
    fetch(server, "/credentials")
    assert fetch(server, "/credentials", **headers).headers["x-cache"] == outcome


@pytest.mark.parametrize("path", ["/nostore", "/cookie", "/unavailable"])
def test_never_stored(server: ServerProcess, path: str) -> None:
    first = fetch(server, path)
    second = fetch(server, path)
    assert first.headers["x-cache"] == "MISS"
    assert second.headers["x-cache"] == "MISS"
    assert_renders(server, path, 2)


def test_shared_render_drops_set_cookie(server: ServerProcess) -> None:
    assert "set-cookie" not in fetch(server, "/cookie").headers
    assert fetch(server, "/cookie", Cookie="me=1").headers["set-cookie"] == "s=1"


def test_not_found_is_stored(server: ServerProcess) -> None:
    assert fetch(server, "/missing").status_code == 404
    again = fetch(server, "/missing")
    assert again.status_code == 404
    assert again.headers["x-cache"] == "HIT"


def test_stale_is_served_while_refreshed(server: ServerProcess) -> None:
    first = fetch(server, "/stale")
    assert first.headers["x-cache"] == "MISS"
    stale = fetch(server, "/stale")
    assert stale.headers["x-cache"] == "STALE"
    assert stale.text == first.text
    # The background refresh replaces the entry, and a later request gets it.
    wait_for(lambda: fetch(server, "/stale").text != first.text)
    wait_for(lambda: render_count(server, "/stale") >= 2)


def test_stale_if_error_keeps_the_entry(tmp_path: Path) -> None:
    with run_server(site(tmp_path)) as running:
        good = fetch(running, "/flaky")
        assert good.headers["x-cache"] == "MISS"
        for _ in range(5):
            again = fetch(running, "/flaky")
            assert again.status_code == 200
            assert again.headers["x-cache"] == "STALE"
            assert again.text == good.text
        wait_for(lambda: "flaky broke" in running.log)


def test_concurrent_misses_render_once(server: ServerProcess) -> None:
    with concurrent.futures.ThreadPoolExecutor(50) as executor:
        responses = list(executor.map(lambda _: fetch(server, "/slow?c=1"), range(50)))
    assert {r.status_code for r in responses} == {200}
    assert len({r.text for r in responses}) == 1
    assert_renders(server, "/slow?c=1", 1)
    outcomes = [r.headers["x-cache"] for r in responses]
    assert outcomes.count("MISS") + outcomes.count("HIT") == 50


def purge(server: ServerProcess, body: object, token: str = TOKEN) -> httpx.Response:
    with httpx.Client(timeout=30) as client:
        return client.post(
            server.url + "/_enddel/purge",
            json=body,
            headers={"Authorization": f"Bearer {token}"},
        )


def test_purge_one_url_prefix_and_all(server: ServerProcess) -> None:
    for path in ("/p/one", "/p/two", "/q/three"):
        fetch(server, path)
        assert fetch(server, path).headers["x-cache"] == "HIT"

    assert purge(server, {"url": "/p/one"}).json() == {"purged": 1}
    assert fetch(server, "/p/one").headers["x-cache"] == "MISS"
    assert fetch(server, "/p/two").headers["x-cache"] == "HIT"

    assert purge(server, {"prefix": "/p/"}).json()["purged"] >= 1
    assert fetch(server, "/p/two").headers["x-cache"] == "MISS"
    assert fetch(server, "/q/three").headers["x-cache"] == "HIT"

    assert purge(server, {"all": True}).json()["purged"] >= 1
    assert fetch(server, "/q/three").headers["x-cache"] == "MISS"


@pytest.mark.parametrize(
    ("body", "token", "status"),
    [
        ({"all": True}, "wrong-token-0123456789", 401),
        ({"url": "no-slash"}, TOKEN, 400),
        ({"everything": True}, TOKEN, 400),
        ({"url": "/a", "prefix": "/b"}, TOKEN, 400),
    ],
)
def test_purge_rejects(
    server: ServerProcess, body: object, token: str, status: int
) -> None:
    response = purge(server, body, token)
    assert response.status_code == status
    assert "error" in response.json()
    assert TOKEN not in server.log


def test_purge_disabled_without_token(tmp_path: Path) -> None:
    settings = site(tmp_path)
    del settings["ENDDEL_ADMIN_TOKEN"]
    with run_server(settings) as running:
        assert purge(running, {"all": True}).status_code == 404


def _segments(master: int) -> set[str]:
    """This server's segment and lock file in /dev/shm: named by its master PID."""
    prefix = f"enddel-{master}-"
    return {name for name in os.listdir("/dev/shm") if name.startswith(prefix)}


def test_segment_lifetime_is_the_servers(
    tmp_path: Path,
) -> None:
    # --max-requests makes hypercorn end each server process after a few
    # requests and start a new one: processes come and go under one server.
    args = (*ACCESS_LOG, "--max-requests", "3")
    with run_server(site(tmp_path), workers=2, extra_args=args) as running:
        first = fetch(running, "/kept")
        master = running.process.pid
        created = _segments(master)
        assert len([name for name in created if not name.endswith(".lock")]) == 1
        for _ in range(12):
            response = fetch(running, "/kept")
            assert response.headers["x-cache"] == "HIT"
            assert response.text == first.text
        pids = set(re.findall(r"access <(\d+)> GET /kept ", running.log))
        assert len(pids) > 2
        assert _segments(master) == created
        running.stop()
        # The janitor removes the segment once the master has exited.
        wait_for(lambda: _segments(master) == set())
    assert _segments(master) == set()
    assert "resource_tracker" not in running.log
    assert "leaked shared_memory" not in running.log
    assert "Traceback" not in running.log
