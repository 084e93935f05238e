"""The suite's outputs: target verdicts, the terminal table, the chart, the page.

Every function reads the results dictionary that :mod:`perf.run` builds (and
writes to ``perf/results/latest.json``), so a page or a chart can be rebuilt
from a saved run: ``python perf/report.py perf/results/latest.json --docs``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

#: The peer each scenario's ratio is taken against.
BASELINES = {
    "hit": "ceiling",
    "miss": "node",
    "mix": "node",
    "static": "nginx",
    "proxy": "upstream",
}
#: Server processes of the main table: one per core of a two-core machine.
MAIN_WORKERS = "2"
PAGE_PATH = "/products?page=all"
HEAVY_PATH = "/heavy"


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Judge each target: the measured ratio, the bound, and pass or fail."""
    verdicts: list[dict[str, Any]] = []
    scenarios = results["servers"].get(MAIN_WORKERS, {}).get("scenarios", {})

    def ratio(scenario: str, peer: str, base: str, key: str = "rps") -> float | None:
        runs = scenarios.get(scenario, {})
        if peer not in runs or base not in runs:
            return None
        return _figure(runs[peer], key) / _figure(runs[base], key)

    def add(name: str, value: float | None, bound: float, at_least: bool) -> None:
        if value is None:
            verdicts.append(
                {"target": name, "ratio": None, "bound": bound, "passed": None}
            )
            return
        passed = value >= bound if at_least else value <= bound
        verdicts.append(
            {"target": name, "ratio": value, "bound": bound, "passed": passed}
        )

    add("hits: throughput / framework ceiling >= 0.95",
        ratio("hit", "enddel", "ceiling"), 0.95, True)  # fmt: skip
    add("hits: p99 latency / framework ceiling's p99 <= 1.2",
        ratio("hit", "enddel", "ceiling", "p99"), 1.2, False)  # fmt: skip
    add("misses: throughput / Node peer without cache >= 0.8",
        ratio("miss", "enddel", "node"), 0.8, True)  # fmt: skip
    render = results["render"].get(PAGE_PATH)
    pool_ratio = render["pool_s"] / render["engine_s"] if render else None
    add("render pool: time per render / mini-racer render ceiling <= 1.25",
        pool_ratio, 1.25, False)  # fmt: skip
    add("heavy mix: throughput / Node peer without cache >= 3",
        ratio("mix", "enddel", "node"), 3.0, True)  # fmt: skip
    entries = [p["requests_per_second"] for p in results.get("entries", [])]
    add("stored entries: lowest / highest hit throughput, 100 to 100,000, >= 0.9",
        min(entries) / max(entries) if entries else None, 0.9, True)  # fmt: skip
    return verdicts


def _figure(result: dict[str, Any], key: str) -> float:
    if key == "rps":
        return float(result["requests_per_second"])
    return float(result["latency_us"][key])


def table(results: dict[str, Any]) -> str:
    """Format the terminal table: scenarios, render figures, then target verdicts."""
    lines = []
    for workers, figures in results["servers"].items():
        for scenario, runs in figures["scenarios"].items():
            lines.extend(_scenario_rows(workers, scenario, runs))
    lines.append("")
    for path, render in results["render"].items():
        lines.append(
            f"render {path:<20} node {render['node_s'] * 1e6:8.0f} us   "
            f"mini-racer {render['engine_s'] * 1e6:8.0f} us   "
            f"pool {render['pool_s'] * 1e6:8.0f} us"
            f"   pool/mini-racer {render['pool_s'] / render['engine_s']:.2f}x"
            f"   mini-racer/node {render['engine_s'] / render['node_s']:.2f}x"
        )
    lines.append("")
    for point in results.get("entries", []):
        lines.append(
            f"entries {point['entries']:>7}: {point['requests_per_second']:8.0f} req/s"
            f"  p99 {point['p99_us'] / 1000:7.2f} ms"
        )
    lines.append("")
    lines.extend(_verdict_line(v) for v in results["targets"])
    header = (
        f"{'-w':>2} {'scenario':<8} {'peer':<12} {'req/s':>9} {'p50 ms':>8} "
        f"{'p99 ms':>8} {'ratio':>14} {'errors':>6}"
    )
    return "\n".join([header, *lines])


def _scenario_rows(workers: str, scenario: str, runs: dict[str, Any]) -> list[str]:
    base_name = BASELINES.get(scenario)
    base = runs.get(base_name) if base_name else None
    rows = []
    for peer, result in runs.items():
        latency = result["latency_us"]
        ratio = ""
        if base is not None:
            value = result["requests_per_second"] / base["requests_per_second"]
            ratio = f"{value:.2f}x {base_name}"
        extra = (
            f" misses {result['miss_share']:.0%}"
            if peer == "enddel" and "miss_share" in result
            else ""
        )
        rows.append(
            f"{workers:>2} {scenario:<8} {peer:<12} "
            f"{result['requests_per_second']:9.0f} "
            f"{latency['p50'] / 1000:8.2f} {latency['p99'] / 1000:8.2f} {ratio:>14} "
            f"{result['error_count']:>6}{extra}"
        )
    return rows


def _verdict_line(verdict: dict[str, Any]) -> str:
    if verdict["passed"] is None:
        return f"NOT MEASURED {verdict['target']}"
    word = "PASS" if verdict["passed"] else "FAIL"
    return f"{word} {verdict['target']}: {verdict['ratio']:.2f}"


# -- chart ------------------------------------------------------------------------


def chart(results: dict[str, Any], path: Path) -> None:
    """Draw throughput and p99 against connections per -w, and hits against entries."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, 2, figsize=(12, 9))
    for workers, figures in results["servers"].items():
        style = "-" if workers == MAIN_WORKERS else "--"
        for peer, points in figures["curves"].items():
            x = [p["connections"] for p in points]
            label = f"{peer} -w {workers}"
            axes[0][0].plot(
                x,
                [p["requests_per_second"] for p in points],
                style,
                marker="o",
                label=label,
            )
            axes[0][1].plot(
                x, [p["p99_us"] / 1000 for p in points], style, marker="o", label=label
            )
    for axis, title, unit in (
        (axes[0][0], "hits: throughput against connections", "requests/s"),
        (axes[0][1], "hits: p99 latency against connections", "ms"),
    ):
        axis.set_xscale("log", base=2)
        axis.set_xlabel("connections")
        axis.set_ylabel(unit)
        axis.set_title(title)
        axis.legend(fontsize=7)
    axis = axes[0][1]
    axis.set_yscale("log")

    entries = results.get("entries", [])
    axis = axes[1][0]
    axis.plot(
        [p["entries"] for p in entries],
        [p["requests_per_second"] for p in entries],
        marker="o",
    )
    axis.set_xscale("log")
    axis.set_ylim(bottom=0)
    axis.set_xlabel("stored entries")
    axis.set_ylabel("requests/s")
    axis.set_title("hits against stored entries (-w 2)")

    _scenario_bars(axes[1][1], results)
    figure.suptitle(
        f"enddel benchmarks ({results['mode']['name']} mode, "
        f"{results['machine']['cores']} cores)"
    )
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    plt.close(figure)


def _scenario_bars(axis: Any, results: dict[str, Any]) -> None:
    scenarios = results["servers"].get(MAIN_WORKERS, {}).get("scenarios", {})
    labels, values = [], []
    for scenario, runs in scenarios.items():
        base = runs.get(BASELINES.get(scenario, ""))
        if base is None or "enddel" not in runs:
            continue
        labels.append(f"{scenario}\n/ {BASELINES[scenario]}")
        values.append(
            runs["enddel"]["requests_per_second"] / base["requests_per_second"]
        )
    axis.bar(labels, values)
    axis.axhline(1.0, color="grey", linewidth=0.8)
    axis.set_ylabel("enddel throughput / baseline")
    axis.set_title("ratios at -w 2, 64 connections")


# -- page ---------------------------------------------------------------------------


def markdown(results: dict[str, Any], path: Path) -> None:
    """Write docs/benchmarks.md: how the suite measures, then this run's figures."""
    machine = results["machine"]
    parts = [
        _PAGE_INTRO,
        "## Machine of the latest run\n",
        *(f"- {name}: {value}" for name, value in machine.items()),
        f"- mode: {results['mode']['name']}, {results['seconds'] / 60:.0f} minutes",
        "",
        "## Commands\n",
        "```sh",
        "python3 -m nox -s perf            # installs wrk, node, the demo build",
        "python3 -m nox -s perf -- --short # the CI mode",
        *results["commands"],
        "```",
        "",
        "## Targets\n",
        *(f"- {_verdict_line(v)}" for v in results["targets"]),
        "",
        "## Figures\n",
        "Throughput is the median of the measured runs; p50 and p99 are those of",
        "the median run. Ratios are against the scenario's baseline peer.\n",
        "```",
        table(results),
        "```",
        "",
        "## Memory (RSS)\n",
        *_rss_lines(results),
        "",
        "![throughput, latency and ratios](benchmarks.png)",
        "",
    ]
    path.write_text("\n".join(parts))


def _rss_lines(results: dict[str, Any]) -> list[str]:
    lines = []
    for workers, figures in results["servers"].items():
        for moment, kinds in figures.get("rss", {}).items():
            shown = ", ".join(
                f"{kind} {' + '.join(f'{b / 2**20:.0f}' for b in sizes)} MiB"
                for kind, sizes in kinds.items()
            )
            lines.append(f"- -w {workers}, {moment}: {shown}")
    return lines


_PAGE_INTRO = """\
# Benchmarks

`python perf/run.py` (or `nox -s perf`) measures enddel against baselines
started in the same run on the same machine, with wrk on loopback, and
reports ratios: absolute figures on a shared two-core machine move by tens of
percent between runs, ratios much less. `--short` is the CI mode (a few
minutes); the full mode took 15 minutes on two cores. This page is written by the
suite from its latest run; the raw figures are in `perf/results/latest.json`.

## What runs

- **enddel**: `hypercorn -k trio -w N enddel.app:app`, 2 render workers per
  server process, a 1 GiB page cache, TTLs longer than the run.
- **ceiling**: `perf/ceiling_app.py`, a bare ASGI app sending the same bytes
  as an enddel hit, on the same hypercorn settings: the framework ceiling.
- **node**: `perf/node_peer.mjs`, `node:http` in a cluster of N processes,
  rendering the same bundle on every request and splicing it into
  `index.html`; **node cached** keeps every page in a per-process `Map`.
- **nginx**: the same page and asset bytes as static files (when installed):
  the machine ceiling.
- **render ceiling**: `perf/render_loop.mjs` (Node) and
  `perf/render_ceiling.py` (mini-racer `Engine` alone, and `RenderPool` with one
  render worker) render one URL in a tight loop, one render at a time.

## Scenarios

- **hit**: `GET /products?page=all` (49 kB HTML, no `Accept-Encoding`, so
  every peer sends the identity body), 64 connections.
- **miss**: the same page with `?miss=<run>-<thread>-<counter>` appended, so
  every request is a URL never asked before, with the page cache on: a miss
  pays lookup, render, compression and the store.
- **mix**: `/heavy?v=<rank>` (740 kB, tens of ms per render), the rank drawn
  from a Zipf distribution (exponent 1.1) over 10,000 URLs, plus 5 % of
  requests to URLs never asked before; the table gives the miss share that
  enddel's `X-Cache` headers reported.
- **static**: the largest hashed JavaScript asset with `Accept-Encoding: br`
  (the precompressed `.br` file); nginx serves the same `.br` bytes.
- **proxy**: `GET /api/items` through enddel to `perf/upstream.mjs`, a
  `node:http` upstream with a fixed 1 kB JSON body, against the upstream
  directly.
- **curves**: hits at 1 to 256 connections, with `-w 1` and `-w 2`.
- **stored entries**: the page cache filled with 100 to 100,000 entries of a
  2 kB page (written into the shared segment by the suite), wrk asking for
  entries at random among them.

Every measurement is a warm-up run and then several runs (3 in the short
mode; 5 in the full one, 3 for the curves), with the peers of one scenario
taking turns run by run; the run with the median throughput is reported.
wrk takes one thread (two above 128 connections), on the same two cores as
the servers, so every figure includes the load generator's share of the CPU.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description="Rebuild the outputs of a saved run.")
    parser.add_argument("results", type=Path, help="a saved run, such as latest.json")
    parser.add_argument(
        "--docs", action="store_true", help="rewrite docs/benchmarks.md and .png"
    )
    args = parser.parse_args()
    saved = json.loads(args.results.read_text())
    print(table(saved))
    if args.docs:
        docs = Path(__file__).resolve().parent.parent / "docs"
        chart(saved, docs / "benchmarks.png")
        markdown(saved, docs / "benchmarks.md")


if __name__ == "__main__":
    main()
