"""The demo shop's API upstream: product JSON over HTTP on loopback.

The demo's product page fetches ``/api/products/<slug>``, which enddel sends to
``ENDDEL_API_UPSTREAM`` as ``<upstream>/products/<slug>``, both from the render
workers and from its ``/api`` proxy. This module is that upstream for
development and tests. It serves the product file that ships with the demo
(``demo/src/data/products.json``) or another one given with ``--products``:

- ``GET /products/<slug>``: 200 with the product object as JSON;
- an unknown slug or any other path: 404 with ``{"error": ...}``;
- a method other than GET or HEAD: 405 with ``Allow: GET, HEAD``.

Run it with ``python -m enddel.demo_api [--bind 127.0.0.1:0] [--products FILE]``.
It binds loopback only. Once it listens it writes its base URL, such as
``http://127.0.0.1:41234``, as the only line on stdout, so a parent process can
point ``ENDDEL_API_UPSTREAM`` at it. SIGINT or SIGTERM stops it. The rest of
its output (hypercorn's log) goes to stderr.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import signal
import sys
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, Scope

from enddel.config import DEMO_DIR

__all__ = ["DEFAULT_PRODUCTS", "ProductApi", "load_products", "main"]

DEFAULT_PRODUCTS = DEMO_DIR / "src" / "data" / "products.json"
_PRODUCTS_PREFIX = "/products/"
_ALLOWED_METHODS = ("GET", "HEAD")
#: Seconds hypercorn lets open requests finish after a stop signal. Every
#: response here is one small JSON body, so a second is ample.
_GRACEFUL_TIMEOUT = 1.0

#: Status, JSON body and extra header fields of one response.
Reply = tuple[int, bytes, list[tuple[bytes, bytes]]]


class ProductFileError(Exception):
    """The product file is missing or is not a list of products with slugs."""


def load_products(path: Path) -> dict[str, dict[str, Any]]:
    """Read a product file (a JSON list of objects with a string ``slug``).

    Returns the products by slug. Raises ProductFileError naming the file and
    the first problem found.
    """
    try:
        products = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ProductFileError(
            f"cannot read the product file {path}: {error}"
        ) from error
    except ValueError as error:
        raise ProductFileError(f"{path} is not valid JSON: {error}") from error
    if not isinstance(products, list):
        raise ProductFileError(f"{path} must contain a JSON list of products")

    by_slug: dict[str, dict[str, Any]] = {}
    for index, product in enumerate(products):
        slug = product.get("slug") if isinstance(product, dict) else None
        if not isinstance(slug, str) or not slug:
            raise ProductFileError(
                f"{path}: product {index} has no string slug; every product "
                f'needs one, such as "brass-pen"'
            )
        if slug in by_slug:
            raise ProductFileError(f"{path}: slug {slug!r} appears twice")
        by_slug[slug] = product
    return by_slug


class ProductApi:
    """The ASGI application: products by slug, as JSON."""

    def __init__(self, products: Mapping[str, Mapping[str, Any]]) -> None:
        # Encoded once: the products never change while the server runs.
        self._bodies = {
            slug: json.dumps(product, ensure_ascii=False).encode()
            for slug, product in products.items()
        }

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] == "lifespan":
            await _run_lifespan(receive, send)
            return
        if scope["type"] != "http":
            # A WebSocket handshake that the app does not accept is rejected
            # with 403 by hypercorn.
            await send({"type": "websocket.close", "code": 1000, "reason": None})
            return

        status, body, headers = self._respond(scope["method"], scope["path"])
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            *headers,
        ]
        await send(
            {"type": "http.response.start", "status": status, "headers": headers}
        )
        if scope["method"] == "HEAD":
            body = b""
        await send({"type": "http.response.body", "body": body, "more_body": False})

    def _respond(self, method: str, path: str) -> Reply:
        if method not in _ALLOWED_METHODS:
            allow = ", ".join(_ALLOWED_METHODS)
            message = f"method {method} is not allowed; use {allow}"
            return 405, _error_body(message), [(b"allow", allow.encode())]
        if not path.startswith(_PRODUCTS_PREFIX):
            message = f"no resource at {path}; products are at /products/<slug>"
            return 404, _error_body(message), []
        slug = path.removeprefix(_PRODUCTS_PREFIX)
        body = self._bodies.get(slug)
        if body is None:
            return 404, _error_body(f"no product with slug {slug!r}"), []
        return 200, body, []


def _error_body(message: str) -> bytes:
    return json.dumps({"error": message}).encode()


async def _run_lifespan(receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
    """Acknowledge start-up and shutdown, which need no work in this app."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


# -- the command ------------------------------------------------------------------


def _loopback_bind(value: str) -> str:
    """Check that ``--bind`` is HOST:PORT on a loopback address."""
    host, separator, port = value.rpartition(":")
    host = host.strip("[]")
    if not separator or not port.isdigit():
        raise argparse.ArgumentTypeError(
            f"invalid bind {value!r}; expected HOST:PORT, such as 127.0.0.1:0"
        )
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise argparse.ArgumentTypeError(
            f"bind {value!r} is not a loopback address; the demo API serves only "
            "this machine, so use 127.0.0.1:PORT or [::1]:PORT"
        )
    return value


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m enddel.demo_api",
        description="Serve the demo shop's products as JSON, for ENDDEL_API_UPSTREAM.",
    )
    parser.add_argument(
        "--bind",
        type=_loopback_bind,
        default="127.0.0.1:0",
        help="loopback HOST:PORT to listen on; port 0 picks a free port "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--products",
        type=Path,
        default=DEFAULT_PRODUCTS,
        help="JSON list of products to serve (default: the demo's products.json)",
    )
    return parser.parse_args(argv)


async def _wait_for_stop_signal() -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            return


async def _serve(app: ProductApi, bind: str) -> None:
    config = HypercornConfig()
    config.bind = [bind]
    config.graceful_timeout = _GRACEFUL_TIMEOUT
    async with trio.open_nursery() as nursery:
        urls = await nursery.start(
            partial(serve, app, config, shutdown_trigger=_wait_for_stop_signal)
        )
        # The one line a parent process reads; stdout carries nothing else.
        print(urls[0], flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo API until SIGINT or SIGTERM; returns the exit status."""
    args = _parse_args(argv)
    try:
        products = load_products(args.products)
    except ProductFileError as error:
        print(f"demo API: {error}", file=sys.stderr)
        return 2
    trio.run(_serve, ProductApi(products), args.bind)
    return 0


if __name__ == "__main__":
    sys.exit(main())
