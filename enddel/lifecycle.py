"""Lifecycle of one server process: drain on SIGTERM, reload the bundle, warm the cache.

Design note. hypercorn 0.18 (``hypercorn/run.py``, ``hypercorn/trio/run.py``)
gives a server process no SIGTERM handler: the signal's default action kills
it at once, in-flight requests and render workers with it. Its graceful path
is a ``shutdown_event`` that the master sets on SIGINT or SIGTERM and each
server process polls every 0.1 s. When the event is set, a server process
stops accepting, lets open connections finish for ``graceful_timeout``
seconds, runs the app's shutdown and exits 0. Three things break that path:

- with ``-w 2``, the master sends SIGTERM (``Process.terminate``) to the other
  server processes as soon as the first one exits, while they still drain;
- SIGTERM sent to one server process kills it, and the master, seeing a
  failed process, stops the whole server;
- SIGTERM sent to the process group (systemd's default ``KillMode``, some
  container runtimes) kills every server process and render worker at once.

So each server process handles SIGTERM itself, by taking the same graceful
path: it sets the ``terminate`` event of hypercorn's ``WorkerContext`` (the
event that ``--max-requests`` uses), found on the ``worker_serve`` task that
runs the app. A second SIGTERM, such as the master's ``terminate``, changes
nothing. Render workers ignore SIGTERM and stop when the pool closes their
stdin after the drain. SIGTERM to a single server process therefore restarts
that process: it drains and exits 0, and the master starts a new one.

The bundle is reloaded on SIGUSR1 or SIGHUP sent to a server process, never
to the master: hypercorn's master restarts every server process on SIGHUP
and dies of SIGUSR1, which it does not handle. With ``ENDDEL_WATCH`` set, a
change to the bundle file reloads it too.
"""

from __future__ import annotations

import collections
import math
import os
import signal
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import trio

from enddel.cache import PageStore
from enddel.cache.policy import key_prefix
from enddel.config import Config
from enddel.http.health import start_draining
from enddel.logs import server_log
from enddel.pool import BundleRejected, PoolClosed, RenderError, RenderPool
from enddel.template import TemplateError

__all__ = [
    "ConnectionCloser",
    "Lifecycle",
    "LifecycleState",
    "request_graceful_shutdown",
]

#: Seconds between SIGTERM and the start of hypercorn's drain, during which
#: every HTTP/1 response carries ``Connection: close``. hypercorn closes idle
#: keep-alive connections the moment it drains, so a request sent on one at
#: that moment is lost. The notice makes busy clients close their connections
#: after a response instead.
CLOSE_NOTICE = 1.0
#: Seconds between two looks at the bundle file when ENDDEL_WATCH is set. A
#: deploy takes seconds, so a second's delay is not noticed; a stat costs
#: microseconds.
WATCH_INTERVAL = 1.0
#: Seconds between two checks for an idle render worker while warming. Short
#: against a render (tens of milliseconds); warm-up is not in a hurry.
WARM_POLL = 0.05
#: The most-requested pages that a reload re-renders, besides ENDDEL_WARM_URLS.
WARM_TOP_PAGES = 20
#: Distinct URLs whose request counts are kept. Past it, counting starts over,
#: so a crawler walking a million URLs cannot grow the table without bound.
MAX_COUNTED_URLS = 10_000


class LifecycleState:
    """Names of the states a server process passes through, in order."""

    STARTING = "starting"
    SERVING = "serving"
    DRAINING = "draining"


class ConnectionCloser:
    """ASGI middleware that asks HTTP/1 clients to close keep-alive connections.

    While :attr:`closing` is set, every HTTP/1.x response gets a
    ``Connection: close`` field (HTTP/2 forbids that field, so its responses
    are left alone).
    """

    def __init__(self, app: Callable[..., Any]) -> None:
        self._app = app
        self.closing = False

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if not self.closing or scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        if scope.get("http_version") not in ("1.0", "1.1"):
            await self._app(scope, receive, send)
            return

        async def send_closing(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (name, value)
                    for name, value in message.get("headers", [])
                    if name.lower() != b"connection"
                ]
                headers.append((b"connection", b"close"))
                message = {**message, "headers": headers}
            await send(message)

        await self._app(scope, receive, send_closing)


class Warmable(Protocol):
    """The part of the SSR handler that warm-up and reloads drive."""

    async def warm(self, url: str) -> bool: ...

    def switch_bundle(self, version: str, *, keep_stale: bool) -> None: ...


class Lifecycle:
    """Signals, reloads and warm-up for one server process.

    Run :meth:`run` in the app's nursery (``await nursery.start(...)``); it
    returns from ``start`` once the signal handlers are installed. Cancelling
    it removes them; SIGTERM is then ignored, because the process is stopping.
    """

    def __init__(
        self,
        config: Config,
        pool: RenderPool,
        ssr: Warmable,
        store: PageStore | None,
        on_switch: Iterable[Callable[[str], None]] = (),
        closer: ConnectionCloser | None = None,
    ) -> None:
        self._config = config
        self._closer = closer
        self._pool = pool
        self._ssr = ssr
        self._store = store
        self._on_switch = list(on_switch)
        self._reload_lock = trio.Lock()
        self._counts: collections.Counter[str] = collections.Counter()
        self.state = LifecycleState.STARTING
        self.reloads = 0
        self.rejected_reloads = 0
        self.warmed = 0

    def note_request(self, url: str) -> None:
        """Count a page request, so a reload re-renders the popular pages first."""
        if len(self._counts) >= MAX_COUNTED_URLS and url not in self._counts:
            self._counts.clear()
        self._counts[url] += 1

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Handle signals, watch the bundle and warm the cache until cancelled."""
        self._check_graceful_timeout()
        # Ignored first, so that trio restores "ignored" when the receiver
        # closes at shutdown, not the default action that kills the process.
        for handled in _HANDLED:
            signal.signal(handled, signal.SIG_IGN)
        with trio.open_signal_receiver(*_HANDLED) as signals:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._note_drain)
                nursery.start_soon(self._warm, self._config.warm_urls)
                if self._config.watch_bundle:
                    nursery.start_soon(self._watch)
                self.state = LifecycleState.SERVING
                task_status.started()
                async for number in signals:
                    if number == signal.SIGTERM:
                        await self._drain()
                    else:
                        nursery.start_soon(self.reload, signal.Signals(number).name)

    def _check_graceful_timeout(self) -> None:
        graceful = hypercorn_graceful_timeout()
        if graceful is not None and graceful < self._config.render_timeout:
            server_log.warning(
                "hypercorn's graceful timeout (%.1f s) is shorter than "
                "ENDDEL_RENDER_TIMEOUT (%.1f s): a render in progress at SIGTERM "
                "may be cut off; start hypercorn with --graceful-timeout %d",
                graceful, self._config.render_timeout,
                math.ceil(self._config.render_timeout) + 1,
            )  # fmt: skip

    async def _note_drain(self) -> None:
        """Log when hypercorn starts draining this process, whatever started it."""
        from hypercorn.trio.worker_context import WorkerContext

        context = _hypercorn_local("context")
        if not isinstance(context, WorkerContext):
            return
        await context.terminated.wait()
        self.state = LifecycleState.DRAINING
        start_draining()
        server_log.info(
            "server process %d draining: no new connections, open requests finish",
            os.getpid(),
        )

    async def _drain(self) -> None:
        if self.state == LifecycleState.DRAINING:
            server_log.info("SIGTERM received again while draining; ignored")
            return
        self.state = LifecycleState.DRAINING
        # readyz answers 503 from here, while the close notice below still
        # serves requests, so a load balancer stops sending traffic first.
        start_draining()
        server_log.info("SIGTERM received: draining requests, then stopping")
        if self._closer is not None:
            self._closer.closing = True
            await trio.sleep(CLOSE_NOTICE)
        if not await request_graceful_shutdown():
            # Not under hypercorn's trio worker: stop the way SIGTERM would
            # have without this handler, but after a log line with the reason.
            server_log.warning("no hypercorn worker context found; exiting now")
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)

    async def reload(self, cause: str) -> bool:
        """Switch to the bundle on disk if it loads and renders; return if it did."""
        async with self._reload_lock:
            old_version = self._pool.bundle_version
            try:
                version = await self._pool.reload(self._check_urls())
            except BundleRejected as error:
                self.rejected_reloads += 1
                server_log.error(
                    "bundle reload (%s) rejected, version %s keeps serving: %s",
                    cause, old_version, error,
                )  # fmt: skip
                return False
            except PoolClosed:
                return False
            if version == old_version:
                server_log.info("bundle reload (%s): bundle unchanged", cause)
                return False
            self._switch(old_version, version)
            self.reloads += 1
            server_log.info(
                "bundle reloaded (%s): version %s replaces %s",
                cause, version, old_version,
            )  # fmt: skip
        await self._warm([*self._config.warm_urls, *self._top_pages()])
        return True

    def _check_urls(self) -> list[str]:
        return list(self._config.warm_urls[:1]) or ["/"]

    def _switch(self, old_version: str, version: str) -> None:
        keep_stale = self._config.reload_keep_stale
        self._ssr.switch_bundle(version, keep_stale=keep_stale)
        for hook in self._on_switch:
            hook(version)
        if not keep_stale and self._store is not None:
            purged = self._store.purge_prefix(key_prefix(old_version, ""))
            server_log.info(
                "purged %d entries of bundle version %s", purged, old_version
            )

    def _top_pages(self) -> list[str]:
        return [url for url, _ in self._counts.most_common(WARM_TOP_PAGES)]

    async def _warm(self, urls: Iterable[str]) -> None:
        """Render ``urls`` into the page cache, one at a time, when a worker idles."""
        if self._store is None:
            return
        pages = list(dict.fromkeys(urls))
        rendered = 0
        for url in pages:
            await self._wait_for_idle_worker()
            try:
                if await self._ssr.warm(url):
                    rendered += 1
            except (RenderError, TemplateError) as error:
                # A page that fails to warm fails again when asked for, and
                # is answered then; warm-up goes on with the next page.
                server_log.warning("warm-up render of %s failed: %s", url, error)
        self.warmed += rendered
        if pages:
            server_log.info("warm-up rendered %d of %d pages", rendered, len(pages))

    async def _wait_for_idle_worker(self) -> None:
        # Warm-up yields to user requests: it adds a job only while nothing
        # waits in the queue and a worker has nothing to do.
        while True:
            stats = self._pool.statistics()
            if stats.queued_jobs == 0 and stats.idle_workers > 0:
                return
            await trio.sleep(WARM_POLL)

    async def _watch(self) -> None:
        """Reload when the bundle or prelude file changes and then stays unchanged."""
        seen = _stamp(self._config)
        while True:
            await trio.sleep(WATCH_INTERVAL)
            current = _stamp(self._config)
            if current == seen:
                continue
            # A deploy may still be writing the file: wait for one quiet interval.
            await trio.sleep(WATCH_INTERVAL)
            if _stamp(self._config) != current:
                continue
            seen = current
            await self.reload("the bundle file changed")


_HANDLED = (signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1)


def _stamp(config: Config) -> tuple[tuple[int, int] | None, ...]:
    """Modification time and size of the bundle and prelude, None when missing."""
    stamps: list[tuple[int, int] | None] = []
    for path in (config.bundle, config.bundle_prelude):
        if path is None:
            continue
        try:
            stat = path.stat()
        except OSError:
            # Mid-deploy the file may be missing for a moment; the next look sees it.
            stamps.append(None)
            continue
        stamps.append((stat.st_mtime_ns, stat.st_size))
    return tuple(stamps)


async def request_graceful_shutdown() -> bool:
    """Start hypercorn's graceful shutdown of this server process; return success.

    Sets the ``terminate`` event of the ``WorkerContext`` that hypercorn's
    trio ``worker_serve`` created, so the process stops accepting, finishes
    open requests within ``graceful_timeout``, runs the app's shutdown and
    exits 0. Returns False when the current task does not run under
    ``worker_serve``.
    """
    from hypercorn.trio.worker_context import WorkerContext

    context = _hypercorn_local("context")
    if not isinstance(context, WorkerContext):
        return False
    await context.terminate.set()
    return True


def hypercorn_graceful_timeout() -> float | None:
    """hypercorn's ``graceful_timeout`` for this process, in seconds, if known."""
    config = _hypercorn_local("config")
    timeout = getattr(config, "graceful_timeout", None)
    return float(timeout) if isinstance(timeout, int | float) else None


def _hypercorn_local(name: str) -> object:
    """Read a local variable of the ``worker_serve`` task above the current task."""
    # NOTE: this reads hypercorn 0.18's internals (the task's frame locals),
    # because hypercorn offers no public way for an app to start the graceful
    # shutdown of its own process. tests/test_lifecycle.py fails if it breaks.
    from hypercorn.trio.run import worker_serve

    task: trio.lowlevel.Task | None = trio.lowlevel.current_task()
    while task is not None:
        coro: Any = task.coro
        if getattr(coro, "cr_code", None) is worker_serve.__code__:
            frame = coro.cr_frame
            return None if frame is None else frame.f_locals.get(name)
        nursery = task.parent_nursery
        task = None if nursery is None else nursery.parent_task
    return None
