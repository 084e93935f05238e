"""Cost of metrics and Server-Timing on the cache-hit path, per request.

Two measurements, each taken with metrics closed (recording does nothing) and
open (prometheus-client's multiprocess files in a fresh directory under
``/dev/shm``), in the same run:

1. the instrumentation calls alone that a fast-path hit makes:
   ``start_timing``, ``server_timing("cache")`` and ``record_fast_hit``;
   and those of a hit served by the SSR handler (``start_timing``,
   ``mark_timing``, ``server_timing``, ``count_cache``, ``record_response``);
2. a whole fast-path hit: ``CachedPageFastPath`` answering a GET from a real
   shared-memory page store into an ASGI ``send`` that drops the messages.

It prints microseconds per request and, for (2), the ratio open / closed. The
figures are CPU time in this process only: no socket, no HTTP parser.

    python perf/bench_metrics.py [--requests N]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from enddel import metrics
from enddel.cache import Entry
from enddel.cache.policy import cache_key
from enddel.cache.store import open_store
from enddel.config import Config
from enddel.http.fast import CachedPageFastPath

BUNDLE_VERSION = "bench"
PAGE_BYTES = 40_000  # a typical server-rendered product page


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200_000)
    args = parser.parse_args()
    config = Config.from_environ({"ENDDEL_API_UPSTREAM": "http://127.0.0.1:9/api"})

    closed = measure(config, args.requests)
    with tempfile.TemporaryDirectory(dir=shm_or_tmp()) as folder:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(Path(folder) / "metrics")
        opened = metrics.open_metrics(config, "bench", BUNDLE_VERSION)
        try:
            recording = measure(config, args.requests)
        finally:
            opened.close()

    for name in closed:
        extra = recording[name] - closed[name]
        ratio = recording[name] / closed[name]
        print(
            f"{name:<22} closed {closed[name]:7.2f} us   open {recording[name]:7.2f} us"
            f"   instrumentation {extra:6.2f} us   ratio {ratio:.3f}"
        )


def measure(config: Config, requests: int) -> dict[str, float]:
    return {
        "fast-path calls": per_call(fast_path_calls, requests),
        "ssr hit calls": per_call(ssr_hit_calls, requests),
        "whole fast-path hit": trio.run(whole_hit, config, requests),
    }


def fast_path_calls() -> None:
    metrics.start_timing()
    metrics.server_timing("cache").encode()
    metrics.record_fast_hit()


class _Response:
    status_code = 200


_RESPONSE = _Response()


def ssr_hit_calls() -> None:
    metrics.start_timing()
    metrics.mark_timing("cache")
    metrics.server_timing()
    metrics.count_cache("hit")
    metrics.record_response("ssr", _RESPONSE, 0.0)


def per_call(function: Callable[[], None], requests: int) -> float:
    """Best of three runs, in microseconds per call."""

    async def timed() -> float:
        started = time.perf_counter()
        for _ in range(requests):
            function()
        return time.perf_counter() - started

    # record_response reads trio's clock, so the calls run inside trio.
    best = min(trio.run(timed) for _ in range(3))
    return best / requests * 1e6


async def whole_hit(config: Config, requests: int) -> float:
    store = open_store(f"enddel-bench-{os.getpid()}", 8 * 1024 * 1024)
    try:
        store.put(page_entry())
        fast = CachedPageFastPath(_never_called)
        fast.attach(config, store, BUNDLE_VERSION)
        scope = {
            "type": "http",
            "method": "GET",
            "path": "/",
            "raw_path": b"/",
            "query_string": b"",
            "headers": [(b"accept-encoding", b"gzip, br"), (b"host", b"bench")],
        }
        best = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            for _ in range(requests):
                await fast(scope, _never_called, _drop)
            best = min(best, time.perf_counter() - started)
        return best / requests * 1e6
    finally:
        store.close()


def page_entry() -> Entry:
    body = b"<html>" + b"x" * PAGE_BYTES + b"</html>"
    return Entry(
        key=cache_key(BUNDLE_VERSION, "/"),
        status=200,
        headers=(("Content-Type", "text/html; charset=utf-8"),),
        body=body,
        body_br=body[: PAGE_BYTES // 8],
        body_gzip=body[: PAGE_BYTES // 6],
        etag='"bench"',
        stored_at=time.time(),
        ttl=3600.0,
        stale_ttl=0.0,
    )


async def _drop(message: dict[str, Any]) -> None:
    return None


async def _never_called(*args: Any) -> None:
    raise AssertionError("the fast path passed a fresh hit through to the app")


def shm_or_tmp() -> str:
    return "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()


if __name__ == "__main__":
    main()
