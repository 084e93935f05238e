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
import os
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

import harness
import report
from load import Load, Plan, measure_side_by_side, run_once

#: The page of the hit and miss scenarios: every product, 49 kB once placed in
#: index.html, close to the 44 kB page the render figures were taken on.
PAGE_PATH = "/products?page=all"
#: The heavy page: 500 product cards, about 740 kB, tens of ms per render.
HEAVY_PATH = "/heavy"
#: A small page for the stored-entries curve, so 100,000 entries fit the cache.
SMALL_PATH = "/products/cast-iron-skillet"
#: Connections of the main table: enough to keep two server processes busy.
MAIN_CONNECTIONS = 64
#: Page cache sizes in bytes. The main one has room for about 1,300 heavy pages,
#: and the entries server's for 100,000 small pages of about 2 kB and their records.
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
#: Seconds one render loop may take: the full mode's heavy loop, the longest,
#: takes about a minute on a busy two-core machine.
RENDER_LOOP_TIMEOUT = 600
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
    main=Plan(warmup_seconds=3, run_seconds=5, runs=5),
    curve=Plan(warmup_seconds=2, run_seconds=3, runs=3),
    mix=Plan(warmup_seconds=15, run_seconds=6, runs=5),
    concurrencies=(1, 4, 16, 64, 256),
    main_workers=(2,),
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
    results["servers"] = {}
    with server_set_upstream() as upstream:
        for workers in mode.curve_workers:
            results["servers"][str(workers)] = bench_workers(workers, mode, upstream)
            _save(results)
    results["entries"] = bench_entries(mode)
    _save(results)
    results["scripts"] = run_other_benchmarks(args.short)
    results["seconds"] = time.monotonic() - started
    results["targets"] = report.targets(results)
    _save(results)
    print(report.table(results))
    if not args.no_docs:
        report.chart(results, harness.REPO / "docs" / "benchmarks.png")
        report.markdown(results, harness.REPO / "docs" / "benchmarks.md")
    print(f"results in {RESULTS.relative_to(harness.REPO)}; {results['seconds']:.0f} s")


def _save(results: dict[str, Any]) -> None:
    """Write the results so far: a failure late in a long run keeps the rest."""
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2))


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
    """Describe the machine and the versions of every program that serves or loads."""
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
        # Other programs' load moves every figure; ratios suffer less.
        "load average at start": " ".join(f"{x:.1f}" for x in os.getloadavg()),
        "python": platform.python_version(),
        "node": _version(["node", "--version"]),
        "wrk": _version(["wrk", "--version"]),
        "nginx": _version([harness.nginx_path() or "nginx", "-v"]),
        "hypercorn": _package_version("hypercorn"),
        "mini_racer": _package_version("mini-racer"),
    }


def _cores() -> int:
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
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=RENDER_LOOP_TIMEOUT,
        cwd=harness.REPO,
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
        settings = enddel_settings(upstream, CACHE_BYTES)
        enddel = _enter(stack, harness.start_enddel(workers, settings))
        _write_page(enddel, root)
        peers = {
            "enddel": enddel,
            "ceiling": _enter(
                stack, harness.start_ceiling(workers, root / "page.html")
            ),
            "node": _enter(stack, harness.start_node_peer(workers, cache=False)),
            "node cached": _enter(stack, harness.start_node_peer(workers, cache=True)),
            "upstream": upstream,
        }
        nginx = stack.enter_context(harness.run_nginx(root, workers))
        if nginx is not None:
            peers["nginx"] = nginx

        def run(scenario: str, loads: dict[str, Load], plan: Plan) -> None:
            targets = {peer: (peers[peer].url, load) for peer, load in loads.items()}
            results = measure_side_by_side(targets, plan)
            for peer, result in results.items():
                _print_result(f"-w {workers} {scenario:<8} {peer:<12}", result)
            figures["scenarios"][scenario] = results

        if workers in mode.main_workers:
            run("hit", _hit_loads(nginx is not None), mode.main)
            figures["rss"]["after hits"] = harness.enddel_rss(enddel)
        figures["curves"] = _curves(peers, mode, workers)
        if workers not in mode.main_workers:
            return figures
        miss = Load("miss", {"path": PAGE_PATH}, MAIN_CONNECTIONS)
        run("miss", {"enddel": miss, "node": miss}, mode.main)
        mix = Load("mix", _MIX_PARAMS, MAIN_CONNECTIONS)
        run("mix", {"enddel": mix, "node": mix, "node cached": mix}, mode.mix)
        figures["rss"]["after heavy mix"] = harness.enddel_rss(enddel)
        asset = _copy_asset(enddel, root)
        run("static", _static_loads(asset, nginx is not None), mode.main)
        api = Load("fixed", {"path": "/api/items", "headers": {}}, MAIN_CONNECTIONS)
        run("proxy", {"enddel": api, "upstream": api}, mode.main)
        for peer in ("ceiling", "node", "node cached"):
            figures["rss"][peer] = {"whole tree": [harness.tree_rss(peers[peer])]}
    return figures


_MIX_PARAMS = {
    "path": HEAVY_PATH,
    "urls": MIX_URLS,
    "exponent": MIX_EXPONENT,
    "miss_share": MIX_NEW_URL_SHARE,
    "seed": 1,
}


def _hit_loads(with_nginx: bool) -> dict[str, Load]:
    page = Load("fixed", {"path": PAGE_PATH, "headers": {}}, MAIN_CONNECTIONS)
    loads = {"enddel": page, "ceiling": page, "node cached": page}
    if with_nginx:
        loads["nginx"] = Load(
            "fixed", {"path": "/page.html", "headers": {}}, MAIN_CONNECTIONS
        )
    return loads


def _static_loads(asset: str, with_nginx: bool) -> dict[str, Load]:
    brotli = {"Accept-Encoding": "br"}
    loads = {
        "enddel": Load("fixed", {"path": asset, "headers": brotli}, MAIN_CONNECTIONS)
    }
    if with_nginx:
        loads["nginx"] = Load(
            "fixed", {"path": "/asset.js.br", "headers": {}}, MAIN_CONNECTIONS
        )
    return loads


def _print_result(label: str, result: dict[str, Any]) -> None:
    line = (
        f"{label} {result['requests_per_second']:9.0f} req/s  "
        f"p99 {result['latency_us']['p99'] / 1000:8.2f} ms"
    )
    if result["error_count"]:
        line += f"  errors {result['error_count']}"
    # Only enddel sends X-Cache, so only its miss share means anything.
    if "miss_share" in result and "enddel" in label:
        line += f"  misses {result['miss_share']:.0%}"
    print(line, flush=True)


def _enter(stack: contextlib.ExitStack, server: harness.Server) -> harness.Server:
    stack.callback(server.stop)
    return server


def _write_page(enddel: harness.Server, root: Path) -> None:
    """Write enddel's identity body of the hit page for the other peers.

    Every peer then sends the same bytes. The page is requested twice, so
    the page cache holds it before the first measured hit.
    """
    with httpx.Client(base_url=enddel.url, timeout=60) as client:
        client.get(PAGE_PATH, headers={"Accept-Encoding": "identity"})
        hit = client.get(PAGE_PATH, headers={"Accept-Encoding": "identity"})
    if hit.headers.get("x-cache") != "HIT":
        raise RuntimeError(f"second GET {PAGE_PATH} was not a hit: {hit.headers}")
    (root / "page.html").write_bytes(hit.content)


def _copy_asset(enddel: harness.Server, root: Path) -> str:
    """Copy the largest hashed JavaScript asset's .br file for nginx.

    Returns the asset's URL path on enddel, checked to answer 200: the client
    build is read at this point, because a rebuild of the demo during the run
    renames its assets.
    """
    assets = (harness.DEMO_CLIENT / "assets").glob("*.js")
    asset = max(assets, key=lambda path: path.stat().st_size)
    shutil.copyfile(asset.with_name(asset.name + ".br"), root / "asset.js.br")
    path = f"/assets/{asset.name}"
    response = httpx.get(enddel.url + path, headers={"Accept-Encoding": "br"})
    if response.status_code != 200:
        raise RuntimeError(f"GET {path} returned {response.status_code}, not 200")
    return path


def _curves(
    peers: dict[str, harness.Server], mode: Mode, workers: int
) -> dict[str, Any]:
    """Hit throughput and latency against connections, for each hit-serving peer."""
    curves: dict[str, list[dict[str, Any]]] = {}
    for connections in mode.concurrencies:
        load = Load("fixed", {"path": PAGE_PATH, "headers": {}}, connections)
        names = ("enddel", "ceiling", "node cached")
        results = measure_side_by_side(
            {n: (peers[n].url, load) for n in names}, mode.curve
        )
        for name, result in results.items():
            _print_result(
                f"-w {workers} curve    {name:<12} c={connections:<4}", result
            )
            curves.setdefault(name, []).append(
                {"connections": connections, **_point(result)}
            )
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
    """Hit throughput over N stored entries, N from 100 to 100,000.

    The suite writes the entries into the server's shared segment itself (a
    render per entry would take minutes), each one a copy of a real 2 kB page
    under its own URL, and wrk asks for them at random. The sweep from the
    fewest entries to the most runs ``mode.curve.runs`` times, emptying the
    cache in between, so a burst of load from other programs falls on one
    point of one sweep; each point reports its median.
    """
    sweeps: dict[int, list[dict[str, Any]]] = {count: [] for count in mode.entry_counts}
    with server_set_upstream() as upstream:
        settings = enddel_settings(upstream, ENTRIES_CACHE_BYTES)
        enddel = harness.start_enddel(2, settings)
        try:
            with _open_server_store(enddel, settings) as (store, make_entry):
                for sweep in range(mode.curve.runs):
                    store.purge_all()
                    stored = 0
                    for count in mode.entry_counts:
                        for index in range(stored + 1, count + 1):
                            store.put(make_entry(f"{SMALL_PATH}?e={index}"))
                        stored = count
                        params = {"path": SMALL_PATH, "count": count, "seed": sweep}
                        load = Load("uniform", params, MAIN_CONNECTIONS)
                        if sweep == 0 and mode.curve.warmup_seconds > 0:
                            run_once(
                                enddel.url, load, mode.curve.warmup_seconds, "warmup"
                            )
                        result = run_once(
                            enddel.url, load, mode.curve.run_seconds, "run"
                        )
                        result["stored"] = store.statistics().entries
                        sweeps[count].append(result)
                        _print_result(f"entries {count:>7} sweep {sweep}", result)
        finally:
            enddel.stop()
    return [_entries_point(count, results) for count, results in sweeps.items()]


def _entries_point(count: int, results: list[dict[str, Any]]) -> dict[str, Any]:
    middle = _median_of(results)
    return {
        "entries": count,
        "stored": min(r["stored"] for r in results),
        "runs": [r["requests_per_second"] for r in results],
        **_point(middle),
    }


def _median_of(results: list[dict[str, Any]]) -> dict[str, Any]:
    ordered = sorted(results, key=lambda r: r["requests_per_second"])
    return ordered[(len(ordered) - 1) // 2]


@contextlib.contextmanager
def _open_server_store(
    enddel: harness.Server, settings: dict[str, str]
) -> Iterator[Any]:
    """Attach to a running enddel's page cache; yield it and an entry factory.

    The segment name is the one every server process computes: hypercorn's
    master PID (their parent) and the settings fingerprint. The suite's handle
    keeps the segment alive until it is closed, before the server stops.
    """
    from enddel.cache import Entry
    from enddel.cache.policy import cache_key
    from enddel.cache.store import NAME_PREFIX, open_store, settings_fingerprint
    from enddel.config import Config
    from enddel.http.conditional import make_content_etag
    from enddel.pool import bundle_version

    config = Config.from_environ(settings)
    version = bundle_version(config.bundle.read_bytes(), None)
    with httpx.Client(base_url=enddel.url, timeout=60) as client:
        body = client.get(SMALL_PATH, headers={"Accept-Encoding": "identity"}).content
    etag = make_content_etag(body)
    fingerprint = settings_fingerprint(config)
    name = f"{NAME_PREFIX}{enddel.pid}-{fingerprint:016x}"
    store = open_store(name, config.cache_bytes, fingerprint=fingerprint)

    def make_entry(url: str) -> Entry:
        return Entry(
            key=cache_key(version, url), status=200,
            headers=(("Content-Type", "text/html; charset=utf-8"),),
            body=body, body_br=None, body_gzip=None, etag=etag,
            stored_at=time.time(), ttl=CACHE_TTL_SECONDS, stale_ttl=0.0,
        )  # fmt: skip

    try:
        _check_fill(enddel, store, make_entry)
        yield store, make_entry
    finally:
        store.close()


def _check_fill(enddel: harness.Server, store: Any, make_entry: Any) -> None:
    """Raise unless the server serves an entry the suite wrote as a hit."""
    url = f"{SMALL_PATH}?e=check"
    store.put(make_entry(url))
    response = httpx.get(enddel.url + url, headers={"Accept-Encoding": "identity"})
    if response.headers.get("x-cache") != "HIT":
        raise RuntimeError(
            f"GET {url} after writing its entry was {response.headers.get('x-cache')}, "
            "not HIT: the suite computes cache keys differently from the server; "
            "update _open_server_store to enddel's current cache_key inputs"
        )


# -- other scripts -----------------------------------------------------------------


def run_other_benchmarks(short: bool) -> dict[str, Any]:
    """Run the wire-format and proxy benchmarks and keep what they print."""
    outputs: dict[str, Any] = {}
    for script in ("bench_wire.py", "bench_proxy.py"):
        path = harness.PERF / script
        if not path.is_file():
            outputs[script] = {"skipped": f"{path.name} does not exist yet"}
            continue
        command = [sys.executable, str(path), *_script_arguments(script, short)]
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=900, cwd=harness.REPO
        )
        outputs[script] = {
            "status": done.returncode,
            "output": done.stdout + done.stderr,
        }
        print(f"{script}:\n{done.stdout}{done.stderr}", flush=True)
    return outputs


def _script_arguments(script: str, short: bool) -> list[str]:
    if script == "bench_wire.py":
        return ["--short"] if short else []
    # bench_proxy.py has no short mode; its duration is seconds per wrk run.
    return ["--duration", "2" if short else "5"]


if __name__ == "__main__":
    main()
