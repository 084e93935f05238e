"""The load generator: wrk runs with a warm-up, repeated runs and their median.

Each run gets a Lua script made of three parts: a ``PARAMS`` table written
from Python, one scenario script from ``perf/lua/`` that chooses the URLs, and
``report.lua``, whose ``done`` prints the run's figures as one JSON line. wrk
runs one thread unless the connections call for more: on a two-core machine
every core wrk takes is a core the server under test loses, and one wrk
thread sustains far more requests per second than any server measured here.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LUA = Path(__file__).resolve().parent / "lua"
#: Connections one wrk thread carries before a second thread is added.
CONNECTIONS_PER_THREAD = 128
#: Seconds wrk waits for one response before it counts a timeout; above the
#: heavy page's render time under full load.
RESPONSE_TIMEOUT = 10
#: Seconds beyond its duration that a wrk process may take before it is killed.
WRK_SLACK = 30


@dataclass(frozen=True)
class Plan:
    """How long to load a server: a warm-up run, then ``runs`` measured runs."""

    warmup_seconds: float
    run_seconds: float
    runs: int


@dataclass(frozen=True)
class Load:
    """What wrk sends: a scenario script from ``perf/lua`` and its parameters."""

    script: str
    params: Mapping[str, Any]
    connections: int


def wrk_path() -> str:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise RuntimeError(
            "wrk is not installed: apt-get install wrk (nox -s perf does)"
        )
    return wrk


def measure(base_url: str, load: Load, plan: Plan) -> dict[str, Any]:
    """Warm up, run ``plan.runs`` times and return the median run and every run."""
    if plan.warmup_seconds > 0:
        run_once(base_url, load, plan.warmup_seconds, "warmup")
    runs = [
        run_once(base_url, load, plan.run_seconds, f"r{i}") for i in range(plan.runs)
    ]
    middle = _median_run(runs)
    return middle | {"runs": [run["requests_per_second"] for run in runs]}


def measure_side_by_side(
    targets: Mapping[str, tuple[str, Load]], plan: Plan
) -> dict[str, dict[str, Any]]:
    """Measure several peers with their runs interleaved: a, b, c, a, b, c, ...

    A burst of load from other programs on a shared machine then falls on every
    peer's runs alike instead of on one peer's, which keeps the ratios honest.
    """
    if plan.warmup_seconds > 0:
        for base_url, load in targets.values():
            run_once(base_url, load, plan.warmup_seconds, "warmup")
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in targets}
    for index in range(plan.runs):
        for name, (base_url, load) in targets.items():
            runs[name].append(run_once(base_url, load, plan.run_seconds, f"r{index}"))
    return {
        name: _median_run(results)
        | {"runs": [r["requests_per_second"] for r in results]}
        for name, results in runs.items()
    }


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median throughput, so its latencies belong to one run."""
    ordered = sorted(runs, key=lambda run: run["requests_per_second"])
    middle = dict(ordered[(len(ordered) - 1) // 2])
    middle["requests_per_second"] = statistics.median(
        run["requests_per_second"] for run in runs
    )
    return middle


def run_once(base_url: str, load: Load, seconds: float, tag: str) -> dict[str, Any]:
    """Run wrk once and return its figures: throughput, latency in us, errors."""
    params = dict(load.params) | {"tag": tag}
    threads = max(1, -(-load.connections // CONNECTIONS_PER_THREAD))
    with tempfile.NamedTemporaryFile(
        "w", suffix=".lua", prefix="enddel-perf-"
    ) as script:
        script.write(_script_text(load.script, params))
        script.flush()
        command = [
            wrk_path(), "-t", str(threads), "-c", str(load.connections),
            "-d", f"{seconds:g}s", "--timeout", f"{RESPONSE_TIMEOUT}s",
            "-s", script.name, base_url,
        ]  # fmt: skip
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=seconds + WRK_SLACK,
            check=False,
        )
    return _parse(done, command)


def _parse(
    done: subprocess.CompletedProcess[str], command: list[str]
) -> dict[str, Any]:
    line = next(
        (x for x in done.stdout.splitlines() if x.startswith("WRK_JSON ")), None
    )
    if done.returncode != 0 or line is None:
        raise RuntimeError(
            f"wrk failed with status {done.returncode}: {' '.join(command)}\n"
            f"{done.stdout}{done.stderr}"
        )
    figures: dict[str, Any] = json.loads(line.removeprefix("WRK_JSON "))
    seconds = figures["duration_us"] / 1e6
    figures["requests_per_second"] = figures["requests"] / seconds
    figures["error_count"] = sum(figures["errors"].values())
    if figures["counted"]:
        figures["miss_share"] = figures["misses"] / figures["counted"]
    return figures


def _script_text(script: str, params: Mapping[str, Any]) -> str:
    return "\n".join([
        f"PARAMS = {_lua_value(params)}",
        (LUA / f"{script}.lua").read_text(),
        (LUA / "report.lua").read_text(),
    ])  # fmt: skip


def _lua_value(value: Any) -> str:
    """Write a Python value (dict, str, number, bool) as a Lua literal."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, Mapping):
        fields = ", ".join(
            f"[{json.dumps(k)}] = {_lua_value(v)}" for k, v in value.items()
        )
        return "{" + fields + "}"
    raise TypeError(f"cannot write {type(value).__name__} as a Lua value: {value!r}")
