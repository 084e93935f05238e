"""The render pool with real worker processes and real V8."""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from enddel.config import Config
from enddel.pool import (
    BundleLoadFailed,
    PoolClosed,
    PoolOverloaded,
    RenderFailed,
    RenderPool,
    RenderTimeout,
)

BUNDLE = r"""
let renders = 0;
globalThis.renderPage = (url) => {
  renders += 1;
  const path = url.split("?")[0];
  if (path === "/throw") throw new Error("bundle broke on " + url);
  if (path === "/object") {
    return { html: "<p>object</p>", status: 404, head: "<title>t</title>",
             headers: { "X-Page": "yes" }, ttl: 7, cache: false };
  }
  if (path === "/async") {
    return new Promise((resolve) => resolve("<p>async " + url + "</p>"));
  }
  if (path === "/bad-status") return { html: "x", status: 99 };
  if (path === "/number") return 42;
  if (path === "/spin") { for (;;) {} }
  if (path === "/spin-async") return Promise.resolve().then(() => { for (;;) {} });
  if (path === "/never") return new Promise(() => {});
  if (path === "/count") return String(renders);
  return "<p>" + url + "</p>";
};
"""


def make_config(tmp_path: Path, source: str = BUNDLE, **changes: object) -> Config:
    bundle = tmp_path / "bundle.js"
    bundle.write_text(source)
    base = Config.from_environ({"ENDDEL_BUNDLE": str(bundle)})
    settings: dict[str, object] = {"render_workers": 2, **changes}
    return dataclasses.replace(base, **settings)  # type: ignore[arg-type]


@pytest.fixture
async def pool(tmp_path: Path) -> AsyncIterator[RenderPool]:
    render_pool = RenderPool(make_config(tmp_path, render_timeout=2.0))
    async with trio.open_nursery() as nursery:
        await nursery.start(render_pool.run)
        yield render_pool
        nursery.cancel_scope.cancel()


def deadline(seconds: float = 5.0) -> float:
    return trio.current_time() + seconds


async def test_results_reach_their_own_requests(pool: RenderPool) -> None:
    results: dict[int, bytes] = {}

    async def one(index: int) -> None:
        result = await pool.render(f"/item/{index}?q={index}", deadline())
        results[index] = result.html

    async with trio.open_nursery() as nursery:
        for index in range(60):
            nursery.start_soon(one, index)

    assert len(results) == 60
    for index, html in results.items():
        assert html == f"<p>/item/{index}?q={index}</p>".encode()


async def test_object_result_fields(pool: RenderPool) -> None:
    result = await pool.render("/object", deadline())
    assert result.status == 404
    assert result.html == b"<p>object</p>"
    assert result.head == "<title>t</title>"
    assert result.headers == (("X-Page", "yes"),)
    assert result.ttl == 7.0
    assert result.cache is False


async def test_promise_result(pool: RenderPool) -> None:
    result = await pool.render("/async?x=1", deadline())
    assert result.html == b"<p>async /async?x=1</p>"
    assert result.status == 200


async def test_throwing_render_is_logged_with_stack(
    pool: RenderPool, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="enddel.render"):
        with pytest.raises(RenderFailed) as failure:
            await pool.render("/throw?a=b", deadline())
    assert failure.value.name == "Error"
    assert failure.value.message == "bundle broke on /throw?a=b"
    assert "renderPage" in failure.value.stack
    records = [r.getMessage() for r in caplog.records]
    assert len(records) == 1
    assert "url=/throw?a=b" in records[0]
    assert "bundle broke on /throw?a=b" in records[0]
    assert "at globalThis.renderPage" in records[0]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("/bad-status", "status 99"),
        ("/number", "must return a string or an object"),
    ],
)
async def test_invalid_results_fail(pool: RenderPool, url: str, message: str) -> None:
    with pytest.raises(RenderFailed, match=message):
        await pool.render(url, deadline())


@pytest.mark.parametrize("url", ["/spin", "/spin-async", "/never"])
async def test_render_past_deadline_times_out(pool: RenderPool, url: str) -> None:
    with pytest.raises(RenderTimeout):
        await pool.render(url, deadline(0.5))
    # The pool still renders afterwards: a wedged worker was replaced.
    result = await pool.render("/after", deadline(30))
    assert result.html == b"<p>/after</p>"


async def test_killed_worker_is_replaced_and_job_retried(tmp_path: Path) -> None:
    source = BUNDLE.replace(
        'if (path === "/count")',
        'if (path === "/slow") {\n'
        "    const end = Date.now() + 400; while (Date.now() < end) {}\n"
        '    return "slow";\n  }\n  if (path === "/count")',
    )
    render_pool = RenderPool(make_config(tmp_path, source, render_workers=1))
    async with trio.open_nursery() as nursery:
        await nursery.start(render_pool.run)
        pids = _worker_pids()
        assert len(pids) == 1

        async def kill_soon() -> None:
            await trio.sleep(0.1)
            os.kill(pids[0], signal.SIGKILL)

        nursery.start_soon(kill_soon)
        result = await render_pool.render("/slow", deadline(30))
        assert result.html == b"slow"
        assert render_pool.statistics().restarts == 1
        assert _worker_pids() != pids
        nursery.cancel_scope.cancel()


async def test_full_queue_is_overloaded(tmp_path: Path) -> None:
    render_pool = RenderPool(make_config(tmp_path, render_workers=1, render_queue=1))
    async with trio.open_nursery() as nursery:
        await nursery.start(render_pool.run)
        nursery.start_soon(render_pool.render, "/never", deadline(3))
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(render_pool.render, "/queued", deadline(3))
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(PoolOverloaded, match="ENDDEL_RENDER_QUEUE"):
            await render_pool.render("/rejected", deadline())
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (
            "globalThis.renderPage = (url) => {;\n",
            "failed to load: .*SyntaxError: Unexpected end of input",
        ),
        ("globalThis.render = () => 'x';", "does not define globalThis.renderPage"),
        ("throw new Error('no config at load time');", "no config at load time"),
    ],
)
async def test_bundle_that_fails_to_load(
    tmp_path: Path, source: str, message: str
) -> None:
    config = make_config(tmp_path, source)
    async with trio.open_nursery() as nursery:
        with pytest.raises(BundleLoadFailed, match=message):
            await nursery.start(RenderPool(config).run)
    assert _worker_pids() == []


async def test_closed_pool_rejects_renders(tmp_path: Path) -> None:
    render_pool = RenderPool(make_config(tmp_path))
    with pytest.raises(PoolClosed, match="unopened"):
        await render_pool.render("/", deadline())
    async with trio.open_nursery() as nursery:
        await nursery.start(render_pool.run)
        nursery.cancel_scope.cancel()
    with pytest.raises(PoolClosed, match="closed"):
        await render_pool.render("/", deadline())
    assert _worker_pids() == []


def _worker_pids() -> list[int]:
    """PIDs of this test process's render workers, from /proc."""
    me = os.getpid()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == me and b"workers" in cmdline:
            pids.append(int(entry.name))
    return sorted(pids)
