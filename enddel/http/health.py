"""Health and metrics endpoints of a server process, under ``/_enddel/``.

The paths sit under ``/_enddel/``, next to the admin endpoints, so they never
shadow a page of the app. There are no bare ``/healthz`` aliases, because any
app may have a page of that name. Each endpoint answers for the server process
that accepted the connection, except ``/_enddel/metrics``, whose figures are
the whole server's (see :mod:`enddel.metrics`).

- ``healthz``: 200 while the process runs its event loop. A load balancer or
  an orchestrator restarts a process that stops answering it.
- ``readyz``: 200 once the bundle is loaded, at least one render worker is
  ready and the page cache is attached (or disabled); 503 otherwise, and 503
  from the moment the server starts draining, so a load balancer takes the
  process out of rotation before it stops accepting connections. The body
  lists each check as ``name: ok`` or ``name: failed (reason)``.
- ``metrics``: the Prometheus text format.

Draining is one flag per process: :func:`start_draining` sets it (the
shutdown code calls it on SIGTERM), :func:`stop_draining` clears it.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import trio
from quart import Response
from quart_trio import QuartTrio

from enddel import __version__, metrics
from enddel.cache import PageStore
from enddel.config import Config
from enddel.logs import hide_secret
from enddel.pool import PoolState, RenderPool

__all__ = [
    "HEALTHZ_PATH",
    "METRICS_PATH",
    "READYZ_PATH",
    "add_health_routes",
    "attach",
    "detach",
    "is_draining",
    "listening_addresses",
    "observing",
    "readiness",
    "start_draining",
    "stop_draining",
]

HEALTHZ_PATH = "/_enddel/healthz"
READYZ_PATH = "/_enddel/readyz"
METRICS_PATH = "/_enddel/metrics"
_NO_STORE = {"Cache-Control": "no-store", "Content-Type": "text/plain; charset=utf-8"}


@dataclass(slots=True)
class _Server:
    """The parts that readiness and metrics read, set once the process has started."""

    config: Config | None = None
    pool: RenderPool | None = None
    store: PageStore | None = None
    server_metrics: metrics.ServerMetrics | None = None
    draining: bool = False


_server = _Server()


def attach(
    config: Config,
    pool: RenderPool,
    store: PageStore | None,
    server_metrics: metrics.ServerMetrics,
) -> None:
    """Report on these parts; the process has finished starting."""
    _server.config, _server.pool, _server.store = config, pool, store
    _server.server_metrics = server_metrics


def detach() -> None:
    """Stop reporting on the parts; readiness fails from now on."""
    _server.config = _server.pool = _server.store = _server.server_metrics = None


def start_draining() -> None:
    """Make ``readyz`` return 503 from now on. Requests are still served."""
    _server.draining = True


def stop_draining() -> None:
    _server.draining = False


def is_draining() -> bool:
    return _server.draining


def readiness() -> list[tuple[str, str | None]]:
    """Return each readiness check with None when it passes, else the reason."""
    pool = _server.pool
    checks: list[tuple[str, str | None]] = [
        ("draining", "the server is shutting down" if _server.draining else None),
        ("bundle", None if pool is not None else "the server has not started"),
    ]
    if pool is not None:
        checks.append(("render_workers", _workers_problem(pool)))
    if _server.config is not None:
        checks.append(("page_cache", _cache_problem(_server.config, _server.store)))
    return checks


def _workers_problem(pool: RenderPool) -> str | None:
    if pool.state is not PoolState.RUNNING:
        return f"render pool is {pool.state.value}"
    if pool.statistics().ready_workers < 1:
        return "no render worker is ready"
    return None


def _cache_problem(config: Config, store: PageStore | None) -> str | None:
    if config.cache_bytes == 0:
        return None
    return "the page cache is not attached" if store is None else None


def add_health_routes(app: QuartTrio) -> None:
    """Route the three endpoints on ``app``."""
    app.add_url_rule(HEALTHZ_PATH, "healthz", _healthz, methods=["GET", "HEAD"])
    app.add_url_rule(READYZ_PATH, "readyz", _readyz, methods=["GET", "HEAD"])
    app.add_url_rule(METRICS_PATH, "metrics", _metrics, methods=["GET", "HEAD"])


async def _healthz() -> Response:
    return Response("ok\n", 200, _NO_STORE)


async def _readyz() -> Response:
    checks = readiness()
    lines = [
        f"{name}: ok" if problem is None else f"{name}: failed ({problem})"
        for name, problem in checks
    ]
    ready = all(problem is None for _, problem in checks)
    return Response("\n".join(lines) + "\n", 200 if ready else 503, _NO_STORE)


async def _metrics() -> Response:
    server_metrics, pool = _server.server_metrics, _server.pool
    if server_metrics is None or pool is None:
        return Response("metrics are not open: the server is not started\n", 503)
    # The pool's figures are read on the event loop, which owns them. Reading
    # every process's sample files is file I/O, so it runs in a thread.
    server_metrics.sample_pool(pool)
    text = await trio.to_thread.run_sync(server_metrics.exposition, _server.store)
    return Response(
        text, 200, {"Content-Type": metrics.CONTENT_TYPE, "Cache-Control": "no-store"}
    )


def listening_addresses() -> list[str]:
    """Return the addresses that this process's listening TCP sockets are bound to.

    hypercorn hands its sockets to each server process, so this is the bind as
    the kernel applied it, port 0 resolved. Linux only; elsewhere it is empty.
    """
    return sorted(set(_listening(_descriptors())))


def _descriptors() -> Iterator[int]:
    try:
        names = os.listdir("/proc/self/fd")
    except FileNotFoundError:  # not Linux: no way to list descriptors cheaply
        return
    for name in names:
        fd = int(name)
        with contextlib.suppress(OSError):  # closed since the listing: skip it
            if stat.S_ISSOCK(os.fstat(fd).st_mode):
                yield fd


def _listening(descriptors: Iterator[int]) -> Iterator[str]:
    for fd in descriptors:
        # socket(fileno=...) takes ownership of the descriptor, so probe a copy.
        try:
            copy = os.dup(fd)
        except OSError:  # closed since the listing: nothing to probe
            continue
        try:
            probe = socket.socket(fileno=copy)
        except OSError:  # not a socket after all: the copy is ours to close
            os.close(copy)
            continue
        with probe:
            if probe.type != socket.SOCK_STREAM:
                continue
            if not probe.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                continue
            yield _format_address(probe.family, probe.getsockname())


def _format_address(family: int, address: object) -> str:
    if family == socket.AF_INET6 and isinstance(address, tuple):
        return f"[{address[0]}]:{address[1]}"
    if family == socket.AF_INET and isinstance(address, tuple):
        return f"{address[0]}:{address[1]}"
    return str(address)


@contextlib.asynccontextmanager
async def observing(
    nursery: trio.Nursery,
    config: Config,
    pool: RenderPool,
    store: PageStore | None,
    bundle_version: str,
) -> AsyncIterator[metrics.ServerMetrics]:
    """Open this process's metrics, sample its pool and report readiness; keep
    the admin token out of the logs.

    On exit, readiness fails first, then sampling stops and the metrics close.
    """
    if config.admin_token is not None:
        hide_secret(config.admin_token)
    server_metrics = metrics.open_metrics(config, __version__, bundle_version)
    try:
        async with metrics.sampling(nursery, pool):
            attach(config, pool, store, server_metrics)
            try:
                yield server_metrics
            finally:
                detach()
    finally:
        server_metrics.close()
