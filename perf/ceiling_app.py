"""The framework ceiling: a bare ASGI app that returns one fixed page.

It answers every HTTP request with the bytes of the file named by
``PERF_CEILING_BODY`` and the headers an enddel hit carries, with no routing,
no cache lookup and no content negotiation. Served with the same
``hypercorn -k trio -w N`` settings as enddel, it is the most any app can get
out of hypercorn on this machine.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

_BODY = Path(os.environ["PERF_CEILING_BODY"]).read_bytes()
_HEADERS = [
    (b"content-type", b"text/html; charset=utf-8"),
    (b"content-length", str(len(_BODY)).encode()),
    (b"vary", b"Accept-Encoding"),
    (b"x-cache", b"HIT"),
]
_START = {"type": "http.response.start", "status": 200, "headers": _HEADERS}
_BODY_EVENT = {"type": "http.response.body", "body": _BODY}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    await send(_START)
    await send(_BODY_EVENT)


async def _lifespan(receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
