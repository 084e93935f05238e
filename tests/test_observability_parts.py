"""The parts of observability one at a time: the metrics directory shared by
real processes, Server-Timing spans across tasks, readiness and draining, and
the log filters for repeats and secrets."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio
from prometheus_client import values
from prometheus_client.parser import text_string_to_metric_families
from quart_trio import QuartTrio

from enddel import metrics
from enddel.config import Config
from enddel.http import health
from enddel.logs import RepeatLimiter, SecretRedactor
from enddel.metrics import MetricsDirectory
from enddel.pool import RenderPool
from tests.conftest import REPO

#: A server process stand-in: opens the metrics in the directory given in
#: PROMETHEUS_MULTIPROC_DIR, records a counter and a live gauge, prints "ready"
#: and waits for its stdin to close.
CHILD = """
import sys
from enddel import metrics
from enddel.config import Config
metrics.open_metrics(
    Config.from_environ({"ENDDEL_API_UPSTREAM": "http://127.0.0.1:9/api"}), "t", "b"
)
metrics.count_worker_restart("exited")
metrics.record_worker_heap(0, 4096)
print("ready", flush=True)
sys.stdin.read()
"""


@dataclass
class Child:
    process: subprocess.Popen[str]

    @property
    def pid(self) -> int:
        return self.process.pid


def start_child(directory: Path) -> Child:
    environ = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(directory))
    process = subprocess.Popen(
        [sys.executable, "-c", CHILD],
        cwd=REPO,
        env=environ,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline() == "ready\n"
    return Child(process)


def kill(child: Child) -> None:
    child.process.send_signal(signal.SIGKILL)
    child.process.wait(10)
    for stream in (child.process.stdin, child.process.stdout):
        assert stream is not None
        stream.close()


def files(directory: Path) -> set[str]:
    return {path.name for path in directory.iterdir()}


# -- the metrics directory ------------------------------------------------------


def test_dead_process_keeps_counters(tmp_path: Path) -> None:
    directory = tmp_path / "metrics"
    child = start_child(directory)
    ours = MetricsDirectory(directory)
    ours.attach()
    try:
        assert f"counter_{child.pid}.db" in files(directory)
        assert f"gauge_liveall_{child.pid}.db" in files(directory)
        assert ours.sweep() == 2

        kill(child)
        assert ours.sweep() == 1
        left = files(directory)
        assert f"counter_{child.pid}.db" in left
        assert f"gauge_liveall_{child.pid}.db" not in left
        assert not any(name.startswith(f"member-{child.pid}-") for name in left)
    finally:
        ours.detach()
    assert not directory.exists()
    assert not (tmp_path / "metrics.lock").exists()


def test_first_attach_empties_leftovers(tmp_path: Path) -> None:
    directory = tmp_path / "metrics"
    child = start_child(directory)
    kill(child)
    assert f"counter_{child.pid}.db" in files(directory)

    ours = MetricsDirectory(directory)
    ours.attach()
    try:
        assert not any(name.endswith(".db") for name in files(directory))
        assert ours.sweep() == 1
    finally:
        ours.detach()


def test_live_member_keeps_directory(tmp_path: Path) -> None:
    directory = tmp_path / "metrics"
    child = start_child(directory)
    try:
        ours = MetricsDirectory(directory)
        ours.attach()
        ours.detach()
        assert f"counter_{child.pid}.db" in files(directory)
    finally:
        kill(child)


# -- Server-Timing ----------------------------------------------------------------


@dataclass(frozen=True)
class _Result:
    seconds: float


async def test_render_spans_reach_request(autojump_clock: trio.abc.Clock) -> None:
    metrics.start_timing()
    metrics.mark_timing("cache")

    async def render() -> None:
        queued_at = trio.current_time()
        await trio.sleep(0.5)
        metrics.record_render(queued_at, _Result(0.2), None)

    # The render runs in another task, as a miss does in the SSR handler.
    async with trio.open_nursery() as nursery:
        nursery.start_soon(render)

    spans = dict(item.split(";dur=") for item in metrics.server_timing().split(", "))
    assert list(spans) == ["cache", "queue", "render", "total"]
    assert spans["queue"] == "300.000"
    assert spans["render"] == "200.000"


def test_server_timing_last_span() -> None:
    metrics.start_timing()
    names = [item.split(";")[0] for item in metrics.server_timing("cache").split(", ")]
    assert names == ["cache", "total"]


# -- readiness and draining -------------------------------------------------------


@pytest.fixture
async def observed_pool(demo_build: Path) -> AsyncIterator[RenderPool]:
    config = Config.from_environ(
        {"ENDDEL_RENDER_WORKERS": "1", "ENDDEL_API_UPSTREAM": "http://127.0.0.1:9/api"}
    )
    async with trio.open_nursery() as nursery:
        pool = RenderPool(config)
        await nursery.start(pool.run)
        async with health.observing(nursery, config, pool, None, "bundle"):
            yield pool
        nursery.cancel_scope.cancel()


def health_app() -> QuartTrio:
    app = QuartTrio(__name__)
    health.add_health_routes(app)
    return app


async def test_readyz_turns_503_while_draining(observed_pool: RenderPool) -> None:
    client = health_app().test_client()
    # The pool runs, but the page cache is enabled and was not attached.
    not_ready = await client.get(health.READYZ_PATH)
    assert not_ready.status_code == 503
    body = await not_ready.get_data(as_text=True)
    assert "page_cache: failed (the page cache is not attached)" in body

    health.attach(health_config(cache_bytes="0"), observed_pool, None, active())
    try:
        ready = await client.get(health.READYZ_PATH)
        assert ready.status_code == 200
        health.start_draining()
        draining = await client.get(health.READYZ_PATH)
        assert draining.status_code == 503
        body = await draining.get_data(as_text=True)
        assert "draining: failed (the server is shutting down)" in body
        alive = await client.get(health.HEALTHZ_PATH)
        assert alive.status_code == 200
    finally:
        health.stop_draining()


async def test_readyz_fails_after_detach(observed_pool: RenderPool) -> None:
    health.detach()
    response = await health_app().test_client().get(health.READYZ_PATH)
    assert response.status_code == 503
    assert "bundle: failed" in await response.get_data(as_text=True)


async def test_metrics_in_process(observed_pool: RenderPool) -> None:
    metrics.count_render_outcome("failed")
    response = await health_app().test_client().get(health.METRICS_PATH)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == metrics.CONTENT_TYPE
    text = await response.get_data(as_text=True)
    families = {family.name: family for family in text_string_to_metric_families(text)}
    [failed] = [
        s for s in families["enddel_renders"].samples if s.labels["outcome"] == "failed"
    ]
    assert failed.value == 1
    [processes] = families["enddel_server_processes"].samples
    assert processes.value == 1


def health_config(cache_bytes: str) -> Config:
    return Config.from_environ(
        {
            "ENDDEL_CACHE_BYTES": cache_bytes,
            "ENDDEL_API_UPSTREAM": "http://127.0.0.1:9/api",
        }
    )


def active() -> metrics.ServerMetrics:
    assert metrics._active is not None
    return metrics._active


def test_open_twice_rejected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "metrics"))
    config = health_config(cache_bytes="0")
    opened = metrics.open_metrics(config, "test", "bundle")
    try:
        with pytest.raises(RuntimeError, match="already open"):
            metrics.open_metrics(config, "test", "bundle")
    finally:
        opened.close()
    assert not (tmp_path / "metrics").exists()


# -- log filters ------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def record(
    message: str, *args: object, level: int = logging.WARNING
) -> logging.LogRecord:
    return logging.LogRecord("enddel.proxy", level, __file__, 1, message, args, None)


def test_repeats_limited_then_counted() -> None:
    clock = FakeClock()
    limiter = RepeatLimiter(burst=2, window=10.0, clock=clock)
    passed = [
        limiter.filter(record("upstream failed for %s", path)) for path in "abcde"
    ]
    assert passed == [True, True, False, False, False]

    clock.now = 10.0
    later = record("upstream failed for %s", "f")
    assert limiter.filter(later)
    assert later.getMessage() == (
        "upstream failed for f (3 more like this suppressed in the 10 s before)"
    )


def test_repeats_kinds_and_levels_apart() -> None:
    limiter = RepeatLimiter(burst=1, window=10.0, clock=FakeClock())
    assert limiter.filter(record("first kind %s", 1))
    assert limiter.filter(record("second kind %s", 1))
    assert not limiter.filter(record("first kind %s", 2))
    assert all(
        limiter.filter(record("info %s", n, level=logging.INFO)) for n in range(5)
    )


def test_secret_and_credentials_hidden() -> None:
    redactor = SecretRedactor()
    redactor.hide("admin-token-0123456789")
    token = record("purge rejected: token %s", "admin-token-0123456789")
    cookie = record("request headers: Cookie: session=abc")
    authorization = record("sent authorization=%s", "Bearer xyz")
    for each in (token, cookie, authorization):
        assert redactor.filter(each)
    assert token.getMessage() == "purge rejected: token (hidden)"
    assert cookie.getMessage() == "request headers: Cookie: (hidden)"
    assert authorization.getMessage() == "sent authorization=(hidden)"


def test_plain_message_untouched() -> None:
    redactor = SecretRedactor()
    redactor.hide("admin-token-0123456789")
    plain = record("render failed url=%s", "/cart")
    assert redactor.filter(plain)
    assert plain.msg == "render failed url=%s"
    assert plain.args == ("/cart",)


def test_abandoned_sibling_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    monkeypatch.setattr(metrics, "default_lock_dir", lambda: tmp_path)
    abandoned = tmp_path / f"{metrics.DIRECTORY_PREFIX}1-0000000000000001"
    start_child_then_kill(abandoned)
    alive = tmp_path / f"{metrics.DIRECTORY_PREFIX}2-0000000000000002"
    child = start_child(alive)
    try:
        opened = metrics.open_metrics(health_config(cache_bytes="0"), "test", "bundle")
        opened.close()
        assert not abandoned.exists()
        assert not (tmp_path / (abandoned.name + ".lock")).exists()
        assert f"counter_{child.pid}.db" in files(alive)
    finally:
        kill(child)


def start_child_then_kill(directory: Path) -> None:
    kill(start_child(directory))
    assert any(name.startswith("counter_") for name in files(directory))


def test_listening_addresses_found() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        assert f"127.0.0.1:{port}" in health.listening_addresses()
    assert f"127.0.0.1:{port}" not in health.listening_addresses()


def test_close_restores_value_class(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "metrics"))
    before = values.ValueClass
    opened = metrics.open_metrics(health_config(cache_bytes="0"), "test", "bundle")
    assert values.ValueClass is not before
    opened.close()
    assert values.ValueClass is before
    assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == str(tmp_path / "metrics")
