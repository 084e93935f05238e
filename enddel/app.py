"""The enddel application: ``hypercorn -k trio enddel.app:app``.

:func:`create_app` builds the QuartTrio app and wires the parts together. At
start-up (``before_serving``), each server process reads its configuration,
attaches to the page cache, opens the upstream client and starts its render
pool as tasks in the app's nursery; a configuration error stops start-up with
one log line that names the setting and the fix. Requests are routed by path:

- ``/api`` and ``/api/...``: forwarded to the API upstream, every method;
- GET and HEAD of a file in the client build: served as a static file;
- every other GET and HEAD: rendered by the bundle (through the page cache).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from typing import Any

import trio
from quart import Response, request
from quart_trio import QuartTrio

from enddel import __version__, metrics
from enddel.cache import PageStore, open_page_store
from enddel.config import Config, ConfigError
from enddel.http.admin import PURGE_PATH, AdminEndpoints
from enddel.http.fast import CachedPageFastPath
from enddel.http.health import add_health_routes, listening_addresses, observing
from enddel.http.proxy import ProxyPathConverter, UpstreamProxy, open_upstream_proxy
from enddel.http.ssr import SsrHandler, request_url
from enddel.http.static import StaticFiles
from enddel.lifecycle import ConnectionCloser, Lifecycle
from enddel.logs import configure_logging, server_log
from enddel.pool import BundleLoadFailed, RenderPool
from enddel.template import PageTemplate

__all__ = ["app", "create_app"]

#: Exit status of a server process whose configuration or bundle is unusable.
EXIT_STARTUP_FAILED = 2
_READ_METHODS = ["GET", "HEAD"]
#: Methods forwarded to the API upstream: HTTP's own and WebDAV's. werkzeug
#: routing needs a list; a method outside it gets 405 from enddel.
_ALL_METHODS = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "QUERY",
    "PROPFIND", "PROPPATCH", "MKCOL", "COPY", "MOVE", "LOCK", "UNLOCK", "REPORT",
    "SEARCH",
]  # fmt: skip


@dataclasses.dataclass
class _Parts:
    """The parts one server process builds at start-up and closes at shutdown."""

    config: Config
    pool: RenderPool
    ssr: SsrHandler
    static: StaticFiles
    proxy: UpstreamProxy
    store: PageStore | None
    admin: AdminEndpoints
    bundle_version: str
    exits: contextlib.AsyncExitStack
    lifecycle: Lifecycle | None = None


def create_app(config: Config | None = None) -> QuartTrio:
    """Build the app; ``config`` defaults to the ``ENDDEL_*`` environment."""
    configure_logging(os.environ.get("ENDDEL_LOG_LEVEL", "INFO").upper())
    app = QuartTrio(__name__)
    app.config["MAX_CONTENT_LENGTH"] = None
    app.url_map.strict_slashes = False
    app.url_map.merge_slashes = False
    holder: dict[str, _Parts] = {}
    fast_path = CachedPageFastPath(app.asgi_app)
    app.asgi_app = fast_path  # type: ignore[method-assign, assignment]
    closer = ConnectionCloser(fast_path)
    app.asgi_app = closer  # type: ignore[method-assign, assignment]

    @app.before_serving
    async def start() -> None:
        try:
            parts = holder["parts"] = await _start(app, config)
        except (ConfigError, BundleLoadFailed) as error:
            # Raising would print the same message three times inside Quart's
            # and hypercorn's tracebacks, and hypercorn 0.18 would exit 0. The
            # message is the whole story, so log it and end this process with
            # a failure status; hypercorn's master then stops the others.
            server_log.critical("enddel cannot start: %s", error)
            logging.shutdown()
            os._exit(EXIT_STARTUP_FAILED)
        fast_path.attach(parts.config, parts.store, parts.bundle_version)

        def follow_new_bundle(version: str) -> None:
            fast_path.attach(parts.config, parts.store, version)
            parts.admin.switch_bundle(version)

        parts.lifecycle = Lifecycle(
            parts.config, parts.pool, parts.ssr, parts.store, [follow_new_bundle], closer
        )
        await app.nursery.start(parts.lifecycle.run)

    @app.after_serving
    async def stop() -> None:
        fast_path.detach()
        parts = holder.pop("parts", None)
        if parts is not None:
            await parts.exits.aclose()
            server_log.info("enddel stopped")

    async def proxy(rest: str = "") -> Response:
        arrived = trio.current_time()
        response = await holder["parts"].proxy.forward(request)
        return metrics.record_response("proxy", response, arrived)

    async def page(path: str = "") -> Response:
        arrived = trio.current_time()
        parts = holder["parts"]
        static = await parts.static.respond(request)
        if static is not None:
            return metrics.record_response("static", static, arrived)
        if parts.lifecycle is not None:
            parts.lifecycle.note_request(request_url(request))
        response = await parts.ssr.respond(request, arrived)
        return metrics.record_response("ssr", response, arrived)

    async def purge() -> Response:
        return await holder["parts"].admin.purge(request)

    app.add_url_rule(PURGE_PATH, "purge", purge, methods=["POST"])
    add_health_routes(app)
    app.url_map.converters["proxy_path"] = ProxyPathConverter
    app.add_url_rule(
        "/api<proxy_path:rest>",
        "proxy",
        proxy,
        methods=_ALL_METHODS,
        merge_slashes=False,
    )
    app.add_url_rule("/", "page", page, methods=_READ_METHODS)
    app.add_url_rule("/<path:path>", "page", page, methods=_READ_METHODS)
    return app


async def _start(app: QuartTrio, config: Config | None) -> _Parts:
    config = Config.from_environ() if config is None else config
    config.check_files()
    index = config.client_dir / "index.html"
    template = PageTemplate(index.read_bytes(), str(index))

    exits = contextlib.AsyncExitStack()
    try:
        store = open_page_store(config) if config.cache_bytes > 0 else None
        if store is not None:
            exits.callback(store.close)
        upstream = await exits.enter_async_context(open_upstream_proxy(config))
        pool = RenderPool(config)
        await exits.enter_async_context(_running(app, pool))
        # The pool hashed the bundle it loaded, which is what renders run.
        bundle_version = pool.bundle_version
        observed = observing(app.nursery, config, pool, store, bundle_version)
        server_metrics = await exits.enter_async_context(observed)
    except BaseException:
        await exits.aclose()
        raise

    ssr = SsrHandler(
        config, pool, store, template, bundle_version, app.nursery.start_soon
    )
    server_log.info(
        "enddel %s serving bundle %s (version %s) with %d render workers, "
        "page cache %s, client build %s, listening on %s (pid %d), metrics in %s",
        __version__, config.bundle, bundle_version, config.render_workers,
        f"{config.cache_bytes} bytes" if store is not None else "off",
        config.client_dir, ", ".join(listening_addresses()) or "(unknown)",
        os.getpid(), server_metrics.directory.path,
    )  # fmt: skip
    admin = AdminEndpoints(config.admin_token, store, bundle_version)
    static = StaticFiles(config.client_dir)
    return _Parts(
        config, pool, ssr, static, upstream, store, admin, bundle_version, exits
    )


@contextlib.asynccontextmanager
async def _running(app: QuartTrio, pool: RenderPool) -> Any:
    """Run the pool in the app's nursery until the context exits."""
    scope = trio.CancelScope()

    async def run(*, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        with scope:
            await pool.run(task_status=task_status)

    await app.nursery.start(run)
    try:
        yield pool
    finally:
        scope.cancel()


app = create_app()
