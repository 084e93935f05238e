"""A minimal QuartTrio app that routes ``/api`` to the proxy, for proxy tests.

It wires :func:`open_upstream_proxy` the way ``enddel.app`` does, without the
render pool, so the proxy can be tested in a real hypercorn process on its own:
``hypercorn -k trio tests.proxy_app:app`` from the repository root.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import quart
from quart_trio import QuartTrio

from enddel.config import Config
from enddel.http.proxy import UpstreamProxy, open_upstream_proxy

#: Every method the tests send, including one that no standard defines.
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PROPFIND"]

app = QuartTrio(__name__)
_proxies: list[UpstreamProxy] = []


@app.while_serving
async def _open_proxy() -> AsyncIterator[None]:
    async with open_upstream_proxy(Config.from_environ()) as proxy:
        _proxies.append(proxy)
        yield
        _proxies.clear()


# "/api/" needs its own rule: "<path:path>" never matches an empty string.
@app.route("/api", methods=METHODS, defaults={"path": ""})
@app.route("/api/", methods=METHODS, defaults={"path": ""})
@app.route("/api/<path:path>", methods=METHODS)
async def _forward(path: str) -> quart.Response:
    return await _proxies[0].forward(quart.request)
