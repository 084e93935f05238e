"""The render runtime: the web-platform baseline, fetch, console and isolation.

Web API checks run the same script in Node and in a render worker's engine and
compare the results. fetch tests use an HTTP upstream on 127.0.0.1 started by
the test itself.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from workers.engine import Engine, JSTimeoutException
from workers.protocol import FrameReader, Kind, encode_frame
from workers.runtime import BASELINE_PATH

ROOT = Path(__file__).resolve().parent.parent
RUNTIME_DIR = ROOT / "workers" / "runtime"
CHECKS_DIR = Path(__file__).resolve().parent / "runtime_checks"
ORIGIN = "https://shop.example"


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed; the runtime tests compare against Node 20")
    return node


@pytest.fixture
def engine() -> Iterator[Engine]:
    created = Engine("globalThis.renderPage = () => '';", "empty.js", origin=ORIGIN)
    yield created
    created.close()


def _use(engine: Engine, source: str) -> None:
    engine.run_script(source, "test-bundle.js")


# The build check --------------------------------------------------------------


def test_baseline_matches_sources(tmp_path: Path) -> None:
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail("npm is not installed; it is needed to check baseline.js")
    if not (RUNTIME_DIR / "node_modules").is_dir():
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"], cwd=RUNTIME_DIR, check=True
        )
    rebuilt = tmp_path / "baseline.js"
    subprocess.run([_node(), "build.mjs", str(rebuilt)], cwd=RUNTIME_DIR, check=True)
    assert rebuilt.read_bytes() == BASELINE_PATH.read_bytes(), (
        "workers/runtime/baseline.js is out of date: run npm ci && npm run build "
        "in workers/runtime"
    )


# Web APIs against Node ---------------------------------------------------------


def test_web_apis_match_node() -> None:
    script = CHECKS_DIR / "web_api.js"
    in_node = subprocess.run(
        [_node(), str(CHECKS_DIR / "run_node.cjs"), str(script)],
        capture_output=True,
        check=True,
        text=True,
    )
    expected = json.loads(in_node.stdout)

    bundle = script.read_text(encoding="utf-8") + (
        "\nglobalThis.renderPage = () => runChecks().then((r) => JSON.stringify(r));"
    )
    checked = Engine(bundle, str(script), origin=ORIGIN)
    try:
        outcome = checked.render("/", 10.0)
    finally:
        checked.close()
    actual = json.loads(outcome.html)

    assert sorted(actual) == sorted(expected)
    for name, value in expected.items():
        assert actual[name] == value, name


def test_missing_globals_stay_undefined(engine: Engine) -> None:
    _use(
        engine,
        "globalThis.renderPage = () => [typeof window, typeof document,"
        " typeof process, typeof require].join(',');",
    )
    assert engine.render("/", 1.0).html == "undefined,undefined,undefined,undefined"


# location, console and errors ----------------------------------------------------


def test_location_from_origin_and_url(engine: Engine) -> None:
    _use(
        engine,
        "globalThis.renderPage = () => JSON.stringify([location.href,"
        " location.pathname, location.search, location.origin]);",
    )
    outcome = engine.render("/shop/item?id=7&q=a%20b", 1.0)
    assert json.loads(outcome.html) == [
        "https://shop.example/shop/item?id=7&q=a%20b",
        "/shop/item",
        "?id=7&q=a%20b",
        "https://shop.example",
    ]


def test_location_absent_between_renders(engine: Engine) -> None:
    _use(engine, "globalThis.renderPage = () => 'x';")
    engine.render("/a", 1.0)
    _use(engine, "globalThis.seen = typeof location;")
    _use(engine, "globalThis.renderPage = () => globalThis.seen;")
    assert engine.render("/b", 1.0).html == "undefined"


def test_console_lines_in_result(engine: Engine) -> None:
    _use(
        engine,
        """globalThis.renderPage = (url) => {
          console.log('page %s has %d items', url, 3, { a: [1] });
          console.warn('careful');
          console.error(new TypeError('bad'));
          console.debug('fine detail');
          return 'ok';
        };""",
    )
    lines = engine.render("/p", 1.0).meta["console"]
    assert lines[0] == ["info", "page /p has 3 items { a: [ 1 ] }"]
    assert lines[1] == ["warn", "careful"]
    assert lines[2][0] == "error"
    assert lines[2][1].startswith("TypeError: bad\n    at ")
    assert lines[3] == ["debug", "fine detail"]


def test_console_bounded_with_marker(engine: Engine) -> None:
    _use(
        engine,
        "globalThis.renderPage = () => {"
        " for (let i = 0; i < 1000; i++) console.log('line ' + i); return ''; };",
    )
    lines = engine.render("/", 1.0).meta["console"]
    assert len(lines) == 201
    assert lines[199] == ["info", "line 199"]
    assert lines[200] == ["warn", "console: truncated 800 lines"]


def test_console_during_load() -> None:
    loaded = Engine(
        "console.info('bundle loading'); globalThis.renderPage = () => '';",
        "b.js",
        prelude_source="console.log('prelude sees fetch:', typeof fetch);",
    )
    try:
        assert loaded.load_console == [
            ["info", "prelude sees fetch: function"],
            ["info", "bundle loading"],
        ]
    finally:
        loaded.close()


def test_reference_error_names_global(engine: Engine) -> None:
    _use(engine, "globalThis.renderPage = () => localStorage.getItem('x');")
    error = engine.render("/", 1.0).meta["error"]
    assert error["name"] == "ReferenceError"
    assert error["missing"] == "localStorage"
    assert "does not provide the global localStorage" in error["message"]


# Async rendering and isolation ------------------------------------------------------


def test_async_render_with_timers(engine: Engine) -> None:
    _use(
        engine,
        """globalThis.renderPage = async () => {
          const steps = [];
          await new Promise((resolve) => setTimeout(resolve, 0));
          steps.push('timer');
          await null;
          steps.push('microtask');
          return { html: steps.join(','), links: ['/a'] };
        };""",
    )
    assert engine.render("/", 2.0).html == "timer,microtask"


def test_pending_timers_do_not_leak(engine: Engine) -> None:
    _use(
        engine,
        """globalThis.renderPage = (url) => {
          setTimeout(() => console.log('late from ' + url), 5);
          setInterval(() => console.log('tick from ' + url), 1);
          return url;
        };""",
    )
    first = engine.render("/first", 1.0)
    _use(
        engine,
        "globalThis.renderPage = () =>"
        " new Promise((resolve) => setTimeout(() => resolve('second'), 30));",
    )
    second = engine.render("/second", 1.0)
    assert first.meta["cancelledTimers"] == 2
    assert second.html == "second"
    assert second.meta["console"] == []


def test_timed_out_render_keeps_its_console(engine: Engine) -> None:
    _use(
        engine,
        "globalThis.renderPage = () => { console.log('started');"
        " setTimeout(() => console.log('after deadline'), 60000);"
        " return new Promise(() => {}); };",
    )
    with pytest.raises(JSTimeoutException):
        engine.render("/slow", 0.2)
    assert engine.abandoned_console == [["info", "started"]]
    _use(engine, "globalThis.renderPage = () => 'next';")
    following = engine.render("/next", 1.0)
    assert following.html == "next"
    assert following.meta["console"] == []


# fetch ---------------------------------------------------------------------------


class _Upstream(http.server.ThreadingHTTPServer):
    requests: list[tuple[str, str, str]]
    release: threading.Event


class _UpstreamHandler(http.server.BaseHTTPRequestHandler):
    server: _Upstream

    def do_GET(self) -> None:
        self._reply()

    def do_POST(self) -> None:
        self._reply()

    def _reply(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length).decode()
        self.server.requests.append((self.command, self.path, body))
        if self.path.startswith("/api/hold"):
            self.server.release.wait(10)
        if self.path.startswith("/api/redirect"):
            self.send_response(302)
            self.send_header("Location", "https://elsewhere.example/x")
            self.end_headers()
            return
        payload = json.dumps({"path": self.path, "body": body, "note": "héllo €"})
        data = payload.encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass  # the tests assert on requests; no access log on stderr


@pytest.fixture
def upstream() -> Iterator[_Upstream]:
    server = _Upstream(("127.0.0.1", 0), _UpstreamHandler)
    server.requests = []
    server.release = threading.Event()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.release.set()
    server.shutdown()
    server.server_close()
    thread.join()


def _fetching_engine(upstream: _Upstream, allowed: tuple[str, ...] = ()) -> Engine:
    port = upstream.server_address[1]
    return Engine(
        "globalThis.renderPage = () => '';",
        "empty.js",
        origin=ORIGIN,
        api_upstream=f"http://127.0.0.1:{port}/api",
        fetch_allowed_hosts=allowed,
    )


def test_fetch_relative_api_reaches_upstream(upstream: _Upstream) -> None:
    fetching = _fetching_engine(upstream)
    try:
        _use(
            fetching,
            """globalThis.renderPage = async () => {
              const response = await fetch('/api/items?page=2');
              const data = await response.json();
              return JSON.stringify([response.status, response.ok,
                response.headers.get('content-type'), data.path, data.note]);
            };""",
        )
        outcome = fetching.render("/", 5.0)
    finally:
        fetching.close()
    assert json.loads(outcome.html) == [
        200,
        True,
        "application/json; charset=utf-8",
        "/api/items?page=2",
        "héllo €",
    ]


def test_fetch_absolute_origin_post(upstream: _Upstream) -> None:
    fetching = _fetching_engine(upstream)
    try:
        _use(
            fetching,
            """globalThis.renderPage = async () => {
              const response = await fetch('https://shop.example/api/cart',
                { method: 'POST', body: JSON.stringify({ sku: 'ä1' }) });
              return (await response.json()).body;
            };""",
        )
        outcome = fetching.render("/", 5.0)
    finally:
        fetching.close()
    assert json.loads(outcome.html) == {"sku": "ä1"}
    assert upstream.requests == [("POST", "/api/cart", '{"sku":"ä1"}')]


def test_fetch_other_host_rejected(upstream: _Upstream) -> None:
    fetching = _fetching_engine(upstream)
    try:
        _use(
            fetching,
            "globalThis.renderPage = () => fetch('https://tracker.example/p')"
            ".then(() => 'fetched', (error) => error.name + ': ' + error.message);",
        )
        outcome = fetching.render("/", 5.0)
    finally:
        fetching.close()
    assert outcome.html.startswith("TypeError: fetch of 'https://tracker.example/p'")
    assert "'tracker.example'" in outcome.html
    assert "ENDDEL_FETCH_ALLOWED_HOSTS" in outcome.html
    assert upstream.requests == []


def test_fetch_redirect_to_other_host_rejected(upstream: _Upstream) -> None:
    fetching = _fetching_engine(upstream)
    try:
        _use(
            fetching,
            "globalThis.renderPage = () => fetch('/api/redirect')"
            ".then(() => 'fetched', (error) => error.message);",
        )
        outcome = fetching.render("/", 5.0)
    finally:
        fetching.close()
    assert "'elsewhere.example'" in outcome.html
    assert len(upstream.requests) == 1


def test_fetch_allowed_host(upstream: _Upstream) -> None:
    port = upstream.server_address[1]
    fetching = _fetching_engine(upstream, allowed=("127.0.0.1",))
    try:
        _use(
            fetching,
            f"globalThis.renderPage = () => fetch('http://127.0.0.1:{port}/other')"
            ".then((r) => r.json()).then((d) => d.path);",
        )
        outcome = fetching.render("/", 5.0)
    finally:
        fetching.close()
    assert outcome.html == "/other"


def test_fetch_bounded_by_deadline(upstream: _Upstream) -> None:
    fetching = _fetching_engine(upstream)
    try:
        _use(
            fetching,
            "globalThis.renderPage = () => fetch('/api/hold').then(() => 'x');",
        )
        with pytest.raises(JSTimeoutException):
            fetching.render("/", 0.3)
        upstream.release.set()
        _use(fetching, "globalThis.renderPage = () => 'after';")
        following = fetching.render("/", 2.0)
    finally:
        fetching.close()
    assert following.html == "after"
    assert following.meta["console"] == []


def test_fetch_abort_signal(upstream: _Upstream) -> None:
    fetching = _fetching_engine(upstream)
    try:
        _use(
            fetching,
            """globalThis.renderPage = () => {
              const controller = new AbortController();
              const pending = fetch('/api/hold', { signal: controller.signal });
              controller.abort();
              return pending.then(() => 'fetched', (error) => error.name);
            };""",
        )
        outcome = fetching.render("/", 5.0)
    finally:
        upstream.release.set()
        fetching.close()
    assert outcome.html == "AbortError"


# The worker process ------------------------------------------------------------


def test_worker_process_console_in_frames(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle.js"
    bundle.write_text(
        "console.log('loading');"
        "globalThis.renderPage = async (url) => { console.warn('render', url);"
        " return { html: '<b>' + location.pathname + '</b>' }; };",
        encoding="utf-8",
    )
    command = [sys.executable, "-m", "workers", "--bundle", str(bundle)]
    command += ["--origin", ORIGIN, "--fetch-allow", "api.example"]
    job = encode_frame(Kind.RENDER, 7, {"url": "/x?y=1", "timeout": 5.0})
    finished = subprocess.run(
        command,
        input=job,
        capture_output=True,
        timeout=60,
        cwd=ROOT,
        env=dict(os.environ),
    )
    assert finished.returncode == 0, finished.stderr.decode()
    frames = list(FrameReader().feed(finished.stdout))
    assert [frame.kind for frame in frames] == [Kind.READY, Kind.RESULT]
    assert frames[0].meta["console"] == [["info", "loading"]]
    assert frames[1].job_id == 7
    assert frames[1].body == b"<b>/x</b>"
    assert frames[1].meta["console"] == [["warn", "render /x?y=1"]]
