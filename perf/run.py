"""enddel's benchmark suite: ``python perf/run.py [--short]`` (``nox -s perf``).

Design note. Shared two-core machines move absolute figures by tens of
percent from one run to the next, so every claim is a ratio against a
baseline measured in the same run, on the same machine, with the same load
generator (wrk) on loopback:

- the framework ceiling: :mod:`perf.ceiling_app`, a bare ASGI app returning the
  same bytes with the same ``hypercorn -k trio -w N`` settings;
- the render ceiling: the same bundle rendering in a tight loop in one V8
  context, in Node and in mini-racer (:mod:`perf.render_ceiling`);
- the Node peer: ``node:http`` in a cluster of N processes rendering every
  request, and the same with an in-memory page cache (``node_peer.mjs``);
- the machine ceiling: nginx serving the same bytes as a static file, when
  nginx is installed.

Misses are URLs never asked before (``?miss=<run>-<thread>-<counter>``), with
the page cache on, so a miss pays for what a real miss pays: lookup, claim,
render, compression and the store. Each measurement is a warm-up run followed
by several runs, and the run with the median throughput is reported.

The suite writes ``perf/results/latest.json``, ``docs/benchmarks.png`` and
``docs/benchmarks.md``, and prints the table and one pass/fail line per target.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402 (perf/ is a folder of scripts, not a package)
import report  # noqa: E402
from load import Load, Plan, measure  # noqa: E402

#: The page of the hit and miss scenarios: every product, 49 kB once placed in
#: index.html, close to the 44 kB page the render figures were taken on.
PAGE_PATH = "/products?page=all"
#: The heavy page: 500 product cards, about 740 kB, tens of ms per render.
HEAVY_PATH = "/heavy"
#: A small page for the stored-entries curve, so 100,000 entries fit the cache.
SMALL_PATH = "/products/cast-iron-skillet"
#: Connections of the main table: enough to keep two server processes busy.
MAIN_CONNECTIONS = 64
#: Page cache sizes in bytes: the main one holds about 1,300 heavy pages; the
#: entries server's holds 100,000 small pages of about 2 kB and their records.
CACHE_BYTES = 1024 * 1024 * 1024
ENTRIES_CACHE_BYTES = 512 * 1024 * 1024
#: Seconds an entry stays fresh: longer than the whole suite, so that no hit
#: turns into a stale entry and a render in the middle of a run.
CACHE_TTL_SECONDS = 4 * 3600
#: The realistic mix: Zipf ranks over this many URLs, and the share of requests
#: sent to a URL never asked before on top of the Zipf tail's own misses.
MIX_URLS = 10_000
MIX_EXPONENT = 1.1
MIX_NEW_URL_SHARE = 0.05
RESULTS = harness.PERF / "results" / "latest.json"


@dataclass(frozen=True)
class Mode:
    """How much to measure: the short mode runs in CI, the full one takes longer."""

    name: str
    main: Plan
    curve: Plan
    mix: Plan
    concurrencies: tuple[int, ...]
    main_workers: tuple[int, ...]
    curve_workers: tuple[int, ...]
    entry_counts: tuple[int, ...]
    renders: int


SHORT = Mode(
    name="short",
    main=Plan(warmup_seconds=1, run_seconds=2, runs=3),
    curve=Plan(warmup_seconds=1, run_seconds=2, runs=3),
    mix=Plan(warmup_seconds=6, run_seconds=3, runs=3),
    concurrencies=(1, 16, 256),
    main_workers=(2,),
    curve_workers=(1, 2),
    entry_counts=(100, 100_000),
    renders=60,
)
FULL = Mode(
    name="full",
    main=Plan(warmup_seconds=3, run_seconds=6, runs=5),
    curve=Plan(warmup_seconds=2, run_seconds=4, runs=3),
    mix=Plan(warmup_seconds=20, run_seconds=8, runs=5),
    concurrencies=(1, 4, 16, 64, 256),
    main_workers=(2, 1),
    curve_workers=(1, 2),
    entry_counts=(100, 1_000, 10_000, 100_000),
    renders=400,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="quick CI mode")
    parser.add_argument(
        "--no-docs", action="store_true", help="skip docs/benchmarks.md and .png"
    )
    args = parser.parse_args()
    mode = SHORT if args.short else FULL
    harness_check()
    started = time.monotonic()

    results: dict[str, Any] = {"mode": asdict(mode), "machine": machine()}
    results["commands"] = [f"python perf/run.py{' --short' if args.short else ''}"]
    results["render"] = render_ceilings(mode)
    with server_set_upstream() as upstream:
        results["servers"] = {
            str(w): bench_workers(w, mode, upstream) for w in mode.curve_workers
        }
    results["entries"] = bench_entries(mode)
    results["scripts"] = run_other_benchmarks(args.short)
    results["seconds"] = time.monotonic() - started
    results["targets"] = report.targets(results)

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2))
    print(report.table(results))
    if not args.no_docs:
        report.chart(results, harness.REPO / "docs" / "benchmarks.png")
        report.markdown(results, harness.REPO / "docs" / "benchmarks.md")
    print(f"results in {RESULTS.relative_to(harness.REPO)}; {results['seconds']:.0f} s")


def harness_check() -> None:
    """Fail early, with the fix, when a program or the demo build is missing."""
    from load import wrk_path

    wrk_path()
    if shutil.which("node") is None:
        raise SystemExit("node is not installed: apt-get install nodejs")
    if not harness.DEMO_BUNDLE.is_file():
        raise SystemExit(
            "the demo is not built: npm ci --prefix demo && npm run build --prefix demo"
        )


def machine() -> dict[str, Any]:
    """The machine and the versions of every program that serves or loads."""
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {
        "cpu": cpu,
        "cores": _cores(),
        "memory_gib": round(_memory_bytes() / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "node": _version(["node", "--version"]),
        "wrk": _version(["wrk", "--version"]),
        "nginx": _version([harness.nginx_path() or "nginx", "-v"]),
        "hypercorn": _package_version("hypercorn"),
        "mini_racer": _package_version("mini-racer"),
    }


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0))


def _memory_bytes() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return 0


def _version(command: list[str]) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=10)
    except OSError:
        return "not installed"
    text = (done.stdout + done.stderr).strip().splitlines()
    return text[0] if text else "unknown"


def _package_version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


# -- render ceilings --------------------------------------------------------------


def render_ceilings(mode: Mode) -> dict[str, Any]:
    """Seconds per render of each page in Node, in mini-racer and through the pool."""
    figures: dict[str, Any] = {}
    for path, renders in ((PAGE_PATH, mode.renders), (HEAVY_PATH, mode.renders // 10)):
        warmup = max(renders // 5, 3)
        node = _json_output([
            "node", str(harness.PERF / "render_loop.mjs"), str(harness.DEMO_BUNDLE),
            path, str(warmup), str(renders),
        ])  # fmt: skip
        racer = _json_output([
            sys.executable, str(harness.PERF / "render_ceiling.py"),
            str(harness.DEMO_BUNDLE), path,
            "--warmup", str(warmup), "--renders", str(renders),
        ])  # fmt: skip
        figures[path] = {
            "node_s": statistics.median(node["seconds_per_render"]),
            "engine_s": statistics.median(racer["seconds_per_render"]["engine"]),
            "pool_s": statistics.median(racer["seconds_per_render"]["pool"]),
        }
        print(f"render {path}: {_describe_render(figures[path])}", flush=True)
    return figures


def _describe_render(figures: dict[str, float]) -> str:
    return ", ".join(f"{k[:-2]} {v * 1e6:.0f} us" for k, v in figures.items())


def _json_output(command: list[str]) -> Any:
    #: Seconds a render loop may take: the full mode's heavy loop is the longest.
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=600, cwd=harness.REPO
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout}{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- servers ---------------------------------------------------------------------


@contextlib.contextmanager
def server_set_upstream() -> Iterator[harness.Server]:
    upstream = harness.start_upstream()
    try:
        yield upstream
    finally:
        upstream.stop()


def enddel_settings(upstream: harness.Server, cache_bytes: int) -> dict[str, str]:
    return {
        "ENDDEL_API_UPSTREAM": f"{upstream.url}/api",
        "ENDDEL_CACHE_BYTES": str(cache_bytes),
        "ENDDEL_CACHE_TTL": str(CACHE_TTL_SECONDS),
        "ENDDEL_CACHE_STALE": str(CACHE_TTL_SECONDS),
        # Above the heavy page's render time with every worker busy, so the
        # heavy mix measures throughput rather than timeouts.
        "ENDDEL_RENDER_TIMEOUT": "30",
    }


def bench_workers(workers: int, mode: Mode, upstream: harness.Server) -> dict[str, Any]:
    """Every scenario against every peer with ``workers`` server processes."""
    figures: dict[str, Any] = {"scenarios": {}, "curves": {}, "rss": {}}
    with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory() as files:
        root = Path(files)
        enddel = _enter(stack, harness.start_enddel(workers, enddel_settings(upstream, CACHE_BYTES)))
        asset = _prepare_files(enddel, root)
        ceiling = _enter(stack, harness.start_ceiling(workers, root / "page.html"))
        node = _enter(stack, harness.start_node_peer(workers, cache=False))
        cached = _enter(stack, harness.start_node_peer(workers, cache=True))
        nginx = stack.enter_context(harness.run_nginx(root, workers))
        peers = {"enddel": enddel, "ceiling": ceiling, "node": node, "node cached": cached}
        if nginx is not None:
            peers["nginx"] = nginx
        main = workers in mode.main_workers

        def run(scenario: str, peer: str, load: Load, plan: Plan) -> None:
            print(f"-w {workers} {scenario:<8} {peer:<12} c={load.connections:<4}", end=" ", flush=True)
            result = measure(peers[peer].url, load, plan)
            print(f"{result['requests_per_second']:9.0f} req/s  p99 {result['latency_us']['p99'] / 1000:8.2f} ms"
                  + (f"  errors {result['error_count']}" if result["error_count"] else ""), flush=True)
            figures["scenarios"].setdefault(scenario, {})[peer] = result

        page = Load("fixed", {"path": PAGE_PATH, "headers": {}}, MAIN_CONNECTIONS)
        static_page = Load("fixed", {"path": "/page.html", "headers": {}}, MAIN_CONNECTIONS)
        if main:
            for peer in ("enddel", "ceiling", "node cached"):
                run("hit", peer, page, mode.main)
            if nginx is not None:
                run("hit", "nginx", static_page, mode.main)
            figures["rss"]["after hits"] = harness.enddel_rss(enddel)
        figures["curves"] = _curves(peers, mode, workers)
        if main:
            miss = Load("miss", {"path": PAGE_PATH}, MAIN_CONNECTIONS)
            for peer in ("enddel", "node"):
                run("miss", peer, miss, mode.main)
            mix = Load("mix", {
                "path": HEAVY_PATH, "urls": MIX_URLS, "exponent": MIX_EXPONENT,
                "miss_share": MIX_NEW_URL_SHARE, "seed": 1,
            }, MAIN_CONNECTIONS)  # fmt: skip
            for peer in ("enddel", "node", "node cached"):
                run("mix", peer, mix, mode.mix)
            figures["rss"]["after heavy mix"] = harness.enddel_rss(enddel)
            static = Load("fixed", {"path": asset, "headers": {"Accept-Encoding": "br"}}, MAIN_CONNECTIONS)
            run("static", "enddel", static, mode.main)
            if nginx is not None:
                run("static", "nginx", Load("fixed", {"path": "/asset.js.br", "headers": {}}, MAIN_CONNECTIONS), mode.main)
            peers["upstream"] = upstream
            api = Load("fixed", {"path": "/api/items", "headers": {}}, MAIN_CONNECTIONS)
            run("proxy", "enddel", api, mode.main)
            run("proxy", "upstream", api, mode.main)
            figures["rss"]["node"] = {"tree": [harness.tree_rss(node)]}
            figures["rss"]["node cached"] = {"tree": [harness.tree_rss(cached)]}
            figures["rss"]["ceiling"] = {"tree": [harness.tree_rss(ceiling)]}
    return figures


def _enter(stack: contextlib.ExitStack, server: harness.Server) -> harness.Server:
    stack.callback(server.stop)
    return server


def _prepare_files(enddel: harness.Server, root: Path) -> str:
    """Write the hit page and the largest precompressed asset for the peers.

    Returns the asset's URL path on enddel. The page is enddel's own identity
    body, so every peer sends the same bytes; it is asked twice so that the
    page cache holds it before the first measured hit.
    """
    with httpx.Client(base_url=enddel.url, timeout=60) as client:
        client.get(PAGE_PATH, headers={"Accept-Encoding": "identity"})
        hit = client.get(PAGE_PATH, headers={"Accept-Encoding": "identity"})
    if hit.headers.get("x-cache") != "HIT":
        raise RuntimeError(f"second GET {PAGE_PATH} was not a hit: {hit.headers}")
    (root / "page.html").write_bytes(hit.content)
    assets = sorted((harness.DEMO_CLIENT / "assets").glob("*.js"), key=lambda p: p.stat().st_size)
    asset = assets[-1]
    shutil.copyfile(asset.with_name(asset.name + ".br"), root / "asset.js.br")
    return f"/assets/{asset.name}"


def _curves(peers: dict[str, harness.Server], mode: Mode, workers: int) -> dict[str, Any]:
    """Hit throughput and latency against connections, for each hit-serving peer."""
    curves: dict[str, Any] = {}
    for peer in ("enddel", "ceiling", "node cached"):
        points = []
        for connections in mode.concurrencies:
            load = Load("fixed", {"path": PAGE_PATH, "headers": {}}, connections)
            result = measure(peers[peer].url, load, mode.curve)
            points.append({"connections": connections, **_point(result)})
            print(f"-w {workers} curve    {peer:<12} c={connections:<4} "
                  f"{result['requests_per_second']:9.0f} req/s  p99 {result['latency_us']['p99'] / 1000:8.2f} ms", flush=True)
        curves[peer] = points
    return curves


def _point(result: dict[str, Any]) -> dict[str, Any]:
    return {
        "requests_per_second": result["requests_per_second"],
        "p50_us": result["latency_us"]["p50"],
        "p99_us": result["latency_us"]["p99"],
        "errors": result["error_count"],
    }


# -- stored entries -------------------------------------------------------------


def bench_entries(mode: Mode) -> list[dict[str, Any]]:
    """Hit throughput over N stored entries, N from 100 to 100,000."""
    from enddel.app import _bundle_version
    from enddel.cache.policy import cache_key
    from enddel.cache.store import NAME_PREFIX, open_store, settings_fingerprint
    from enddel.config import Config
    from enddel.http.conditional import make_content_etag
    from enddel.cache import Entry

    points = []
    with server_set_upstream() as upstream:
        settings = enddel_settings(upstream, ENTRIES_CACHE_BYTES)
        enddel = harness.start_enddel(2, settings)
        try:
            config = Config.from_environ(settings)
            version = _bundle_version(config)
            body = httpx.get(enddel.url + SMALL_PATH, headers={"Accept-Encoding": "identity"}).content
            name = f"{NAME_PREFIX}{enddel.pid}-{settings_fingerprint(config):016x}"
            store = open_store(name, ENTRIES_CACHE_BYTES, fingerprint=settings_fingerprint(config))
            try:
                stored = 0
                for count in mode.entry_counts:
                    now = time.time()
                    for index in range(stored + 1, count + 1):
                        url = f"{SMALL_PATH}?e={index}"
                        store.put(Entry(
                            key=cache_key(version, url), status=200,
                            headers=(("Content-Type", "text/html; charset=utf-8"),),
                            body=body, body_br=None, body_gzip=None,
                            etag=make_content_etag(body), stored_at=now,
                            ttl=CACHE_TTL_SECONDS, stale_ttl=0.0,
                        ))  # fmt: skip
                    stored = count
                    entries = store.statistics().entries
                    load = Load("uniform", {"path": SMALL_PATH, "count": count, "seed": 7}, MAIN_CONNECTIONS)
                    result = measure(enddel.url, load, mode.curve)
                    after = store.statistics()
                    points.append({"entries": count, "stored": entries, **_point(result),
                                   "store_misses": after.misses})
                    print(f"entries {count:>7} (stored {entries}) {result['requests_per_second']:9.0f} req/s", flush=True)
            finally:
                store.close()
        finally:
            enddel.stop()
    return points


# -- other scripts -----------------------------------------------------------------


def run_other_benchmarks(short: bool) -> dict[str, Any]:
    """Run the wire-format and proxy benchmarks and keep what they print."""
    outputs: dict[str, Any] = {}
    for script in ("bench_wire.py", "bench_proxy.py"):
        path = harness.PERF / script
        if not path.is_file():
            outputs[script] = {"skipped": f"{path.name} does not exist yet"}
            continue
        command = [sys.executable, str(path), *(["--short"] if short else [])]
        done = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=harness.REPO)
        outputs[script] = {"status": done.returncode, "output": done.stdout + done.stderr}
        print(f"{script}:\n{done.stdout}{done.stderr}", flush=True)
    return outputs


if __name__ == "__main__":
    main()
