"""The SSR handler's cache policy on trio's virtual clock.

Every test takes ``autojump_clock``, because pytest-trio runs a test on a
clock only when the test itself requests it. The handler runs in an
in-process QuartTrio app with a real page store in
shared memory. The render pool is replaced by a scripted renderer, because
render workers are real processes on real time, while freshness, stale
windows and deadlines are tested here by moving virtual time: the same rules
against real workers are in ``test_cache_e2e.py``.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import trio
import trio.testing
from quart import request
from quart_trio import QuartTrio
from trio.testing import MockClock

from enddel.cache import PageStore
from enddel.cache.store import open_store
from enddel.config import Config
from enddel.http.ssr import SsrHandler
from enddel.pool import RenderFailed, RenderResult, RenderTimeout
from enddel.template import PageTemplate

#: Unix time at virtual time zero: entries record Unix time.
EPOCH = 1_700_000_000.0
TTL = 10.0
STALE = 20.0
_names = itertools.count()


class ScriptedRenderer:
    """Counts renders; each URL's behaviour is set by the test."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.scripts: dict[str, Callable[[int], Awaitable[RenderResult]]] = {}

    async def render(self, url: str, deadline: float) -> RenderResult:
        self.calls.append(url)
        script = self.scripts.get(url.split("?")[0])
        if script is not None:
            try:
                with trio.fail_at(deadline):
                    return await script(len(self.calls))
            except trio.TooSlowError:
                raise RenderTimeout(f"render of {url} timed out") from None
        return page(f"render {len(self.calls)} of {url}")


def page(html: str, **fields: object) -> RenderResult:
    result = RenderResult(200, (), html.encode(), "", True, None, 0.001)
    return dataclasses.replace(result, **fields)  # type: ignore[arg-type]


@dataclasses.dataclass
class Harness:
    renderer: ScriptedRenderer
    store: PageStore
    client: object

    async def get(self, path: str, **headers: str) -> tuple[int, str, str]:
        response = await self.client.get(path, headers=headers)  # type: ignore[attr-defined]
        body = (await response.get_data()).decode()
        return response.status_code, response.headers.get("X-Cache", ""), body


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    config = dataclasses.replace(
        Config.from_environ({}), cache_ttl=TTL, cache_stale=STALE, render_timeout=5.0
    )
    store = open_store(
        f"enddel-test-policy-{os.getpid()}-{next(_names)}",
        4 * 1024 * 1024,
        lock_dir=tmp_path,
    )
    renderer = ScriptedRenderer()
    template = PageTemplate(b"<main><!--ssr-outlet--></main>", "index.html")
    app = QuartTrio(__name__)

    def clock() -> float:
        return EPOCH + trio.current_time()

    handlers: list[SsrHandler] = []

    @app.before_serving
    async def start() -> None:
        handlers.append(
            SsrHandler(
                config, renderer, store, template, "v1", app.nursery.start_soon, clock
            )
        )

    @app.route("/<path:path>")
    async def view(path: str) -> object:
        return await handlers[0].respond(request, trio.current_time())

    try:
        async with app.test_app() as test_app:
            yield Harness(renderer, store, test_app.test_client())
    finally:
        store.close()


async def test_fresh_entry_is_a_hit(
    harness: Harness, autojump_clock: MockClock
) -> None:
    first = await harness.get("/a")
    await trio.sleep(TTL - 1)
    second = await harness.get("/a")
    assert first == (200, "MISS", "<main>render 1 of /a</main>")
    assert second == (200, "HIT", first[2])
    assert harness.renderer.calls == ["/a"]


async def test_stale_entry_is_served_while_one_render_refreshes(
    harness: Harness, autojump_clock: MockClock
) -> None:
    release = trio.Event()

    async def held(call: int) -> RenderResult:
        if call > 1:
            await release.wait()
        return page(f"render {call}")

    harness.renderer.scripts["/a"] = held
    await harness.get("/a")
    await trio.sleep(TTL + 1)
    stale = [await harness.get("/a") for _ in range(3)]
    assert {outcome for _, outcome, _ in stale} == {"STALE"}
    assert {body for _, _, body in stale} == {"<main>render 1</main>"}
    release.set()
    await trio.testing.wait_all_tasks_blocked()
    assert harness.renderer.calls == ["/a", "/a"]
    assert await harness.get("/a") == (200, "HIT", "<main>render 2</main>")


async def test_expired_entry_is_rendered_again(
    harness: Harness, autojump_clock: MockClock
) -> None:
    await harness.get("/a")
    await trio.sleep(TTL + STALE + 1)
    assert await harness.get("/a") == (200, "MISS", "<main>render 2 of /a</main>")


async def test_stale_if_error_keeps_serving_the_entry(
    harness: Harness, autojump_clock: MockClock
) -> None:
    await harness.get("/flaky")

    async def broken(call: int) -> RenderResult:
        raise RenderFailed("Error", "upstream down")

    harness.renderer.scripts["/flaky"] = broken
    await trio.sleep(TTL + 1)
    for _ in range(3):
        assert await harness.get("/flaky") == (
            200,
            "STALE",
            "<main>render 1 of /flaky</main>",
        )
        await trio.testing.wait_all_tasks_blocked()
    # Past the stale window the error is all there is.
    await trio.sleep(STALE)
    status, outcome, body = await harness.get("/flaky")
    assert status == 500
    assert outcome == "BYPASS"
    assert "upstream down" not in body


async def test_render_ttl_overrides_default(
    harness: Harness, autojump_clock: MockClock
) -> None:
    async def short(call: int) -> RenderResult:
        return page(f"short {call}", ttl=2.0)

    harness.renderer.scripts["/short"] = short
    await harness.get("/short")
    await trio.sleep(1)
    assert (await harness.get("/short"))[1] == "HIT"
    await trio.sleep(2)
    assert (await harness.get("/short"))[1] == "STALE"


@pytest.mark.parametrize(
    ("fields", "headers"),
    [
        ({"cache": False}, ()),
        ({"status": 503}, ()),
        ({"headers": (("Set-Cookie", "a=1"),)}, ()),
    ],
)
async def test_never_stored(
    harness: Harness,
    autojump_clock: MockClock,
    fields: dict[str, object],
    headers: tuple[tuple[str, str], ...],
) -> None:
    async def uncacheable(call: int) -> RenderResult:
        return page(f"call {call}", **fields)

    harness.renderer.scripts["/u"] = uncacheable
    assert (await harness.get("/u"))[1] == "MISS"
    assert (await harness.get("/u"))[1] == "MISS"
    assert harness.renderer.calls == ["/u", "/u"]


async def test_cookie_request_bypasses_both_ways(
    harness: Harness, autojump_clock: MockClock
) -> None:
    assert (await harness.get("/c", Cookie="session=1"))[1] == "BYPASS"
    assert (await harness.get("/c"))[1] == "MISS"
    assert (await harness.get("/c", Cookie="session=1"))[1] == "BYPASS"
    assert harness.renderer.calls == ["/c", "/c", "/c"]


async def test_concurrent_misses_render_once(
    harness: Harness, autojump_clock: MockClock
) -> None:
    release = trio.Event()

    async def slow(call: int) -> RenderResult:
        await release.wait()
        return page(f"slow {call}")

    harness.renderer.scripts["/slow"] = slow
    results: list[tuple[int, str, str]] = []

    async def one() -> None:
        results.append(await harness.get("/slow"))

    async with trio.open_nursery() as nursery:
        for _ in range(20):
            nursery.start_soon(one)
        await trio.testing.wait_all_tasks_blocked()
        release.set()
    assert harness.renderer.calls == ["/slow"]
    assert {body for _, _, body in results} == {"<main>slow 1</main>"}
    assert {outcome for _, outcome, _ in results} == {"MISS"}


async def test_waiter_that_leaves_does_not_cancel_the_render(
    harness: Harness, autojump_clock: MockClock
) -> None:
    release = trio.Event()

    async def slow(call: int) -> RenderResult:
        await release.wait()
        return page("kept")

    harness.renderer.scripts["/slow"] = slow
    with trio.move_on_after(1):
        await harness.get("/slow")
    release.set()
    await trio.testing.wait_all_tasks_blocked()
    assert await harness.get("/slow") == (200, "HIT", "<main>kept</main>")
    assert harness.renderer.calls == ["/slow"]


async def test_render_past_deadline_is_504(
    harness: Harness, autojump_clock: MockClock
) -> None:
    async def never(call: int) -> RenderResult:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    harness.renderer.scripts["/never"] = never
    start = trio.current_time()
    status, outcome, body = await harness.get("/never")
    assert status == 504
    assert outcome == "BYPASS"
    assert trio.current_time() - start == pytest.approx(5.0, abs=0.6)
    assert "<main></main>" in body
