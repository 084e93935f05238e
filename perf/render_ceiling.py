"""The render ceiling in mini-racer, and the render pool's cost on top of it.

Two loops render one URL one render at a time, with no HTTP server:

- ``engine``: :class:`workers.engine.Engine` in this process, one V8 context
  with the bundle, called directly: the fastest mini-racer render there is;
- ``pool``: :class:`enddel.pool.RenderPool` with one render worker, the way a
  server process renders a miss: job queue, worker pipe, wire frames.

The difference per render is the pool's overhead. Run as a script, it prints
one JSON object with the seconds of every measured render of each loop.
"""

from __future__ import annotations

import argparse
import json
import time

import trio

from enddel.config import Config
from enddel.pool import RenderPool
from workers.engine import Engine

#: Seconds one pool render may take before it counts as failed; far above the
#: heavy page's render time, so only a broken worker reaches it.
RENDER_TIMEOUT = 30.0


def engine_loop(bundle: str, url: str, warmup: int, renders: int) -> list[float]:
    """Render ``url`` ``warmup + renders`` times in one Engine; time the last ones."""
    engine = Engine(open(bundle, encoding="utf-8").read(), bundle)
    try:
        for _ in range(warmup):
            engine.render(url, RENDER_TIMEOUT)
        seconds = []
        for _ in range(renders):
            started = time.perf_counter()
            engine.render(url, RENDER_TIMEOUT)
            seconds.append(time.perf_counter() - started)
        return seconds
    finally:
        engine.close()


async def pool_loop(bundle: str, url: str, warmup: int, renders: int) -> list[float]:
    """Render ``url`` through a one-worker RenderPool; time the last ``renders``."""
    config = Config.from_environ({
        "ENDDEL_BUNDLE": bundle,
        "ENDDEL_RENDER_WORKERS": "1",
        "ENDDEL_RENDER_TIMEOUT": str(RENDER_TIMEOUT),
        # The demo never fetches; a closed loopback port keeps it that way.
        "ENDDEL_API_UPSTREAM": "http://127.0.0.1:9/api",
    })  # fmt: skip
    pool = RenderPool(config)
    seconds: list[float] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(pool.run)
        for index in range(warmup + renders):
            started = time.perf_counter()
            await pool.render(url, trio.current_time() + RENDER_TIMEOUT)
            if index >= warmup:
                seconds.append(time.perf_counter() - started)
        nursery.cancel_scope.cancel()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", help="server bundle path")
    parser.add_argument("url", help="URL to render, such as /products?page=all")
    parser.add_argument("--warmup", type=int, default=20, help="renders not timed")
    parser.add_argument("--renders", type=int, default=200, help="renders timed")
    args = parser.parse_args()
    # Interleave the loops so that a burst of load from other programs on the
    # machine falls on both rather than on one.
    result: dict[str, list[float]] = {"engine": [], "pool": []}
    half = max(args.renders // 2, 1)
    for _ in range(2):
        result["engine"] += engine_loop(args.bundle, args.url, args.warmup, half)
        result["pool"] += trio.run(pool_loop, args.bundle, args.url, args.warmup, half)
    print(json.dumps({"url": args.url, "seconds_per_render": result}))


if __name__ == "__main__":
    main()
