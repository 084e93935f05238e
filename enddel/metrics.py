"""Prometheus metrics of one enddel server, summed over all its server processes.

Design note. ``hypercorn -w N`` runs N server processes behind one listening
socket, so a scrape reaches whichever process accepts it, and every process
must report the figures of the whole server. prometheus-client's
multiprocess mode does this: each process writes its samples to memory-mapped
files (``counter_<pid>.db``, ``histogram_<pid>.db``, ...) in one directory,
and a scrape merges every file in it. Recording a sample is a dictionary
lookup and a 16-byte write into a mapped page, so the cache-hit path pays
microseconds and no system call.

The directory. The server processes of one server agree on it without help
from hypercorn's master, the way the page cache names its segment. It is
``<dir>/prometheus-enddel-<master pid>-<settings fingerprint>``. ``<dir>`` is
``/dev/shm`` when present, so the files live in memory like the cache, and
the temporary directory otherwise. ``PROMETHEUS_MULTIPROC_DIR``, when set, is used as
it is. Membership files ``member-<pid>-<start ticks>`` in the directory list
the processes attached to it, under an ``flock`` on ``<directory>.lock``:

- the first live process to attach empties the directory, because whatever
  is in it was left by a server that is gone (a crash, a reused master PID);
- a process whose member file names a dead process is marked dead with
  ``mark_process_dead``, which drops its live gauges; its counters stay, so
  totals never go backwards while the server runs;
- the last process to detach removes the directory and the lock file.

Figures that already live in shared memory (the page store's
``statistics()``) are read by the scraped process at scrape time instead.
Render workers write no files: each RESULT frame carries the worker's V8
heap size, and its server process records it.

Recording functions (``record_*``, ``count_*``) do nothing until
:func:`open_metrics` has run in the process, so modules that call them work
the same in unit tests without a server.
"""

from __future__ import annotations

import contextlib
import contextvars
import glob
import os
import shutil
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Protocol, TypeVar

import trio
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    values,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from enddel.cache.segment import WriterLock, process_start_ticks
from enddel.cache.store import StoreStatistics, default_lock_dir, settings_fingerprint
from enddel.config import Config

__all__ = [
    "CONTENT_TYPE",
    "MetricsDirectory",
    "ServerMetrics",
    "count_cache",
    "count_render_outcome",
    "count_upstream_error",
    "count_worker_restart",
    "mark_timing",
    "metrics_directory",
    "open_metrics",
    "record_fast_hit",
    "record_render",
    "record_response",
    "record_upstream",
    "record_worker_heap",
    "sampling",
    "server_timing",
    "start_timing",
]

#: Content type of the Prometheus text format, version 0.0.4.
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
#: Directory name prefix. It differs from the page cache's ``enddel-`` so that
#: tools listing the cache's segments in /dev/shm do not count these.
DIRECTORY_PREFIX: Final = "prometheus-enddel-"
_MEMBER_PREFIX: Final = "member-"
_ENVIRON: Final = "PROMETHEUS_MULTIPROC_DIR"

#: Request latency buckets, in seconds. A page cache hit is served in well under
#: a millisecond, a render in tens of milliseconds, and the render timeout
#: (``ENDDEL_RENDER_TIMEOUT``, 5 s by default) bounds the slowest page.
REQUEST_BUCKETS: Final = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
)  # fmt: skip
#: Render time in the worker, in seconds: from a static page (about 1 ms) to
#: the render timeout.
RENDER_BUCKETS: Final = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
#: Seconds between two samples of this process's render pool gauges (queue
#: depth, ready workers). A scrape also samples the process that serves it, so
#: the other processes' figures are at most this old.
SAMPLE_INTERVAL: Final = 1.0


class _PoolFigures(Protocol):
    """Render pool figures that the sampler reads (``RenderPool.statistics()``)."""

    @property
    def workers(self) -> int: ...
    @property
    def ready_workers(self) -> int: ...
    @property
    def queued_jobs(self) -> int: ...


class _HasStatus(Protocol):
    @property
    def status_code(self) -> int: ...


R = TypeVar("R", bound=_HasStatus)


class _Pool(Protocol):
    def statistics(self) -> _PoolFigures: ...


class _Store(Protocol):
    def statistics(self) -> StoreStatistics: ...


# -- the directory ------------------------------------------------------------


def metrics_directory(config: Config) -> Path:
    """Directory that every server process of this server writes samples to."""
    chosen = os.environ.get(_ENVIRON)
    if chosen:
        return Path(chosen)
    fingerprint = settings_fingerprint(config)
    return default_lock_dir() / f"{DIRECTORY_PREFIX}{os.getppid()}-{fingerprint:016x}"


class MetricsDirectory:
    """This process's membership of a metrics directory; see the module notes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.pid = os.getpid()
        self._member = path / f"{_MEMBER_PREFIX}{self.pid}-{_start_ticks(self.pid)}"
        self._lock = WriterLock(path.with_name(path.name + ".lock"))

    def attach(self) -> bool:
        """Join the directory, emptying it first when no live process uses it.

        Returns whether this process is the first live member.
        """
        with self._lock:
            self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
            first = not self._sweep()
            if first:
                _empty(self.path)
            self._member.touch()
        return first

    def sweep(self) -> int:
        """Mark dead members dead; return how many server processes are live."""
        with self._lock:
            return self._sweep()

    def detach(self) -> None:
        """Leave; the last live process removes the directory and the lock file."""
        with self._lock:
            self._member.unlink(missing_ok=True)
            _mark_dead(self.pid, self.path)
            if not self._sweep():
                # Only this directory's own files: nothing outside it is touched.
                shutil.rmtree(self.path, ignore_errors=True)
                self._lock.remove()
        self._lock.close()

    def remove_if_abandoned(self) -> bool:
        """Remove the directory if no live process is a member; return whether
        it was removed. For directories of servers that died without detaching."""
        try:
            with self._lock:
                if not self.path.is_dir() or self._sweep():
                    return False
                shutil.rmtree(self.path, ignore_errors=True)
                self._lock.remove()
                return True
        finally:
            self._lock.close()

    def _sweep(self) -> int:
        live = 0
        for member in self.path.glob(_MEMBER_PREFIX + "*"):
            pid, started = _parse_member(member.name)
            if pid is not None and _start_ticks(pid) == started:
                live += 1
                continue
            if pid is not None:
                _mark_dead(pid, self.path)
            member.unlink(missing_ok=True)
        return live


def _mark_dead(pid: int, path: Path) -> None:
    # prometheus-client 0.26 ships no annotations for its multiprocess helpers.
    mark_process_dead(pid, str(path))  # type: ignore[no-untyped-call]


def _start_ticks(pid: int) -> int:
    # 0 stands for "unknown" where /proc is missing; such a member then counts
    # as live while its PID exists.
    return process_start_ticks(pid) or 0


def _parse_member(name: str) -> tuple[int | None, int]:
    parts = name.removeprefix(_MEMBER_PREFIX).split("-")
    if len(parts) != 2 or not all(part.isdigit() for part in parts):
        return None, 0
    return int(parts[0]), int(parts[1])


def _empty(path: Path) -> None:
    for leftover in glob.glob(os.path.join(path, "*.db")):
        os.unlink(leftover)


# -- the metrics ----------------------------------------------------------------


class _Instruments:
    """Every metric this process records; created once the directory is set."""

    def __init__(self) -> None:
        self.requests = Counter(
            "enddel_http_requests",
            "Responses sent, by route kind (ssr, static, proxy) and status code.",
            ["kind", "status"],
            registry=None,
        )
        self.request_seconds = Histogram(
            "enddel_http_request_duration_seconds",
            "Seconds from a request's arrival to its response head, by route kind.",
            ["kind"],
            buckets=REQUEST_BUCKETS,
            registry=None,
        )
        self.cache = Counter(
            "enddel_page_cache_requests",
            "SSR requests by page cache outcome: hit, stale, miss, bypass, and "
            "coalesced (a miss that waited for a render another request started).",
            ["outcome"],
            registry=None,
        )
        self.render_seconds = Histogram(
            "enddel_render_duration_seconds",
            "Seconds a render took inside its render worker.",
            buckets=RENDER_BUCKETS,
            registry=None,
        )
        self.queue_seconds = Histogram(
            "enddel_render_queue_wait_seconds",
            "Seconds a render job spent queued and in transit to its worker.",
            buckets=RENDER_BUCKETS,
            registry=None,
        )
        self.renders = Counter(
            "enddel_renders",
            "Render jobs by outcome: ok, failed, timeout, overloaded, closed.",
            ["outcome"],
            registry=None,
        )
        self.restarts = Counter(
            "enddel_render_worker_restarts",
            "Render workers replaced, by reason: exited (crashed, killed, timed "
            "out) or retired (render or heap limit, bundle reload).",
            ["reason"],
            registry=None,
        )
        self.heap = Gauge(
            "enddel_render_worker_heap_bytes",
            "V8 heap in use by a render worker after its last render, by server "
            "process (pid) and worker slot.",
            ["worker"],
            multiprocess_mode="liveall",
            registry=None,
        )
        self.queued = Gauge(
            "enddel_render_queue_jobs",
            "Render jobs waiting for a render worker.",
            multiprocess_mode="livesum",
            registry=None,
        )
        self.ready = Gauge(
            "enddel_render_workers_ready",
            "Render workers that have loaded the bundle and accept jobs.",
            multiprocess_mode="livesum",
            registry=None,
        )
        self.workers = Gauge(
            "enddel_render_workers",
            "Render worker slots configured (ENDDEL_RENDER_WORKERS per process).",
            multiprocess_mode="livesum",
            registry=None,
        )
        self.upstream_seconds = Histogram(
            "enddel_upstream_duration_seconds",
            "Seconds from sending a request to the API upstream to its response head.",
            buckets=REQUEST_BUCKETS,
            registry=None,
        )
        self.upstream_errors = Counter(
            "enddel_upstream_errors",
            "Failed upstream requests: timeout, transport (refused, unresolvable "
            "or broken before the response head), body (broken after it).",
            ["reason"],
            registry=None,
        )


@dataclass(frozen=True, slots=True)
class _ServerInfo:
    version: str
    bundle_version: str


class ServerMetrics:
    """The metrics of this server process; :func:`open_metrics` opens it."""

    def __init__(
        self,
        directory: MetricsDirectory,
        info: _ServerInfo,
        restore: Callable[[], None],
    ) -> None:
        self.directory = directory
        self._restore = restore
        self._info = info
        self._instruments = _Instruments()
        self._requests: dict[tuple[str, int], Counter] = {}
        self._latency: dict[str, Histogram] = {}
        self._cache: dict[str, Counter] = {}

    @property
    def instruments(self) -> _Instruments:
        return self._instruments

    def record_request(self, kind: str, status: int, seconds: float) -> None:
        # Children are looked up once per label set: ``labels()`` takes a lock
        # and formats strings, which costs more than the write itself.
        counter = self._requests.get((kind, status))
        if counter is None:
            counter = self._instruments.requests.labels(kind, str(status))
            self._requests[(kind, status)] = counter
        latency = self._latency.get(kind)
        if latency is None:
            latency = self._instruments.request_seconds.labels(kind)
            self._latency[kind] = latency
        counter.inc()
        latency.observe(seconds)

    def count_cache(self, outcome: str) -> None:
        counter = self._cache.get(outcome)
        if counter is None:
            counter = self._cache[outcome] = self._instruments.cache.labels(outcome)
        counter.inc()

    def sample_pool(self, pool: _Pool) -> None:
        """Write this process's render pool gauges."""
        figures = pool.statistics()
        self._instruments.workers.set(figures.workers)
        self._instruments.ready.set(figures.ready_workers)
        self._instruments.queued.set(figures.queued_jobs)

    def exposition(self, store: _Store | None) -> bytes:
        """Return the whole server's metrics in the Prometheus text format.

        Reads every process's files: call it in a worker thread.
        """
        live = self.directory.sweep()
        registry = CollectorRegistry(auto_describe=False)
        path = str(self.directory.path)
        MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
        registry.register(_ScrapeCollector(self._info, live, store))
        return generate_latest(registry)

    def close(self) -> None:
        """Leave the directory. Closing twice does nothing."""
        global _active
        if _active is self:
            _active = None
            self.directory.detach()
            self._restore()


class _ScrapeCollector:
    """Figures read at scrape time: server info, processes, the page store."""

    def __init__(self, info: _ServerInfo, live: int, store: _Store | None) -> None:
        self._info = info
        self._live = live
        self._store = store

    def collect(self) -> Iterable[Metric]:
        info = GaugeMetricFamily(
            "enddel_build_info",
            "enddel version and bundle version (a digest of the render code).",
            labels=["version", "bundle_version"],
        )
        info.add_metric([self._info.version, self._info.bundle_version], 1)
        scraped = GaugeMetricFamily(
            "enddel_scraped_process_info",
            "The server process that produced this scrape.",
            labels=["pid"],
        )
        scraped.add_metric([str(os.getpid())], 1)
        processes = GaugeMetricFamily(
            "enddel_server_processes", "Live server processes of this server."
        )
        processes.add_metric([], self._live)
        yield from (info, scraped, processes)
        if self._store is not None:
            yield from _store_families(self._store.statistics())


def _store_families(stats: StoreStatistics) -> Iterable[Metric]:
    gauges = (
        ("enddel_page_cache_entries", "Entries in the page cache.", stats.entries),
        (
            "enddel_page_cache_used_bytes",
            "Bytes of live entries in the page cache, record headers included.",
            stats.bytes_used,
        ),
        (
            "enddel_page_cache_capacity_bytes",
            "Bytes of the page cache's record ring.",
            stats.capacity,
        ),
    )
    for name, documentation, value in gauges:
        yield GaugeMetricFamily(name, documentation, value=value)
    counters = (
        (
            "enddel_page_cache_evictions",
            "Live entries dropped to make room.",
            stats.evictions,
        ),
        ("enddel_page_cache_puts", "Entries stored.", stats.puts),
        (
            "enddel_page_cache_lookup_hits",
            "Page store lookups that found an entry, fresh or not.",
            stats.hits,
        ),
        (
            "enddel_page_cache_lookup_misses",
            "Page store lookups that found no entry.",
            stats.misses,
        ),
    )
    for name, documentation, value in counters:
        yield CounterMetricFamily(name, documentation, value=value)


_active: ServerMetrics | None = None


def open_metrics(config: Config, version: str, bundle_version: str) -> ServerMetrics:
    """Join this server's metrics directory and start recording in this process.

    Call :meth:`ServerMetrics.close` when the process stops serving.
    """
    global _active
    if _active is not None:
        raise RuntimeError(
            "metrics are already open in this process; close the ServerMetrics "
            "that open_metrics() returned before opening another"
        )
    directory = MetricsDirectory(metrics_directory(config))
    if directory.attach() and _ENVIRON not in os.environ:
        _remove_abandoned(directory.path)
    restore = _select_directory(directory.path)
    _active = ServerMetrics(directory, _ServerInfo(version, bundle_version), restore)
    return _active


def _select_directory(path: Path) -> Callable[[], None]:
    """Make new metrics write to ``path``; return what undoes it."""
    previous_environ = os.environ.get(_ENVIRON)
    previous_class = values.ValueClass
    os.environ[_ENVIRON] = str(path)
    # prometheus-client chooses its value class once, at import, from
    # PROMETHEUS_MULTIPROC_DIR, but the directory is known only once the
    # configuration is read. A fresh multiprocess value class, taken before any
    # metric exists, writes to the directory just set.
    values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]

    def restore() -> None:
        values.ValueClass = previous_class
        if previous_environ is None:
            os.environ.pop(_ENVIRON, None)
        else:
            os.environ[_ENVIRON] = previous_environ

    return restore


def _remove_abandoned(ours: Path) -> None:
    """Remove the directories of enddel servers whose processes all died.

    A master killed with SIGKILL leaves its directory behind, and no later
    server has its master PID, so the first process of each new server looks.
    """
    for sibling in ours.parent.glob(DIRECTORY_PREFIX + "*"):
        if sibling != ours and sibling.is_dir():
            MetricsDirectory(sibling).remove_if_abandoned()


@contextlib.asynccontextmanager
async def sampling(nursery: trio.Nursery, pool: _Pool) -> AsyncIterator[None]:
    """Sample the render pool gauges every SAMPLE_INTERVAL until the block exits."""
    scope = trio.CancelScope()

    async def sample_forever() -> None:
        with scope:
            while True:
                if _active is not None:
                    _active.sample_pool(pool)
                await trio.sleep(SAMPLE_INTERVAL)

    nursery.start_soon(sample_forever)
    try:
        yield
    finally:
        scope.cancel()


# -- recording ----------------------------------------------------------------


def record_response(kind: str, response: R, arrived: float) -> R:
    """Count ``response`` under route ``kind``; ``arrived`` is trio time. Return it."""
    if _active is not None:
        seconds = trio.current_time() - arrived
        _active.record_request(kind, response.status_code, seconds)
    return response


def count_cache(outcome: str) -> None:
    """Count one SSR request under page cache ``outcome`` (lower case)."""
    if _active is not None:
        _active.count_cache(outcome)


def record_fast_hit() -> None:
    """Count a fresh hit that the fast path sent: one 200 SSR response."""
    timing = _timing.get(None)
    if _active is not None and timing is not None:
        _active.record_request("ssr", 200, time.perf_counter() - timing.started)
        _active.count_cache("hit")


class _Rendered(Protocol):
    @property
    def seconds(self) -> float: ...


def record_render(
    queued_at: float, result: _Rendered | None, error: BaseException | None
) -> None:
    """Record a render job that was queued at ``queued_at`` (trio time) and ended.

    Adds ``queue`` and ``render`` spans to the current request's Server-Timing.
    ``result.seconds`` is the render time the worker measured; the rest of the
    wait is queueing and the pipe to and from the worker.
    """
    if result is None:
        count_render_outcome(_render_outcome(error))
        return
    waited = max(trio.current_time() - queued_at - result.seconds, 0.0)
    timing = _timing.get(None)
    if timing is not None:
        timing.add("queue", waited)
        timing.add("render", result.seconds)
    if _active is not None:
        instruments = _active.instruments
        instruments.renders.labels("ok").inc()
        instruments.render_seconds.observe(result.seconds)
        instruments.queue_seconds.observe(waited)


def count_render_outcome(outcome: str) -> None:
    """Count a render job that ended with ``outcome`` (see ``enddel_renders``)."""
    if _active is not None:
        _active.instruments.renders.labels(outcome).inc()


def _render_outcome(error: BaseException | None) -> str:
    # Matched by name, because enddel.pool imports this module.
    return {
        "RenderTimeout": "timeout",
        "PoolOverloaded": "overloaded",
        "PoolClosed": "closed",
    }.get(type(error).__name__, "failed")


def record_worker_heap(slot: int, heap_bytes: object) -> None:
    """Record the V8 heap a render worker reported with its last result."""
    if _active is not None and isinstance(heap_bytes, int):
        _active.instruments.heap.labels(str(slot)).set(heap_bytes)


def count_worker_restart(reason: str) -> None:
    """Count a render worker replaced because it ``exited`` or was ``retired``."""
    if _active is not None:
        _active.instruments.restarts.labels(reason).inc()


def record_upstream(sent_at: float) -> None:
    """Record an upstream response head that arrived; ``sent_at`` is trio time."""
    if _active is not None:
        _active.instruments.upstream_seconds.observe(trio.current_time() - sent_at)


def count_upstream_error(reason: str) -> None:
    """Count a failed upstream request: ``timeout``, ``transport`` or ``body``."""
    if _active is not None:
        _active.instruments.upstream_errors.labels(reason).inc()


# -- Server-Timing ----------------------------------------------------------------


@dataclass(eq=False, slots=True)
class _Timing:
    """Durations of one SSR request, for its ``Server-Timing`` header."""

    started: float
    marked: float
    spans: list[tuple[str, float]] = field(default_factory=list)

    def add(self, name: str, seconds: float) -> None:
        self.spans.append((name, seconds))


# The render of a miss runs in a task that the first waiting request spawned.
# trio gives a new task a copy of its spawner's context, so that task sees the
# same _Timing object and the pool's record_render() adds its spans to it.
_timing: contextvars.ContextVar[_Timing] = contextvars.ContextVar("enddel_timing")


def start_timing() -> None:
    """Start timing the current SSR request."""
    now = time.perf_counter()
    _timing.set(_Timing(now, now))


def mark_timing(name: str) -> None:
    """Add a span ``name`` from the previous mark (or the start) to now."""
    timing = _timing.get(None)
    if timing is not None:
        now = time.perf_counter()
        timing.add(name, now - timing.marked)
        timing.marked = now


def server_timing(last: str | None = None) -> str:
    """Return the current request's ``Server-Timing`` value, in milliseconds.

    ``last`` names a final span from the previous mark to now. A request that
    waited for a render another request started has no queue or render span.
    """
    timing = _timing.get(None)
    if timing is None:
        return "total;dur=0"
    now = time.perf_counter()
    spans = list(timing.spans)
    if last is not None:
        spans.append((last, now - timing.marked))
    spans.append(("total", now - timing.started))
    return ", ".join(f"{name};dur={seconds * 1000:.3f}" for name, seconds in spans)
