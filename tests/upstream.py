"""A scriptable HTTP/1.1 upstream on loopback that records what it receives.

Tests run it inside their own trio loop with :func:`open_upstream`, register a
handler per path prefix and read back every request as the upstream saw it:
the raw request target, the header fields in arrival order and case, the body
bytes, and whether the request arrived complete and when its connection closed.

Run as a script, it serves one fixed response as fast as it can, for the proxy
benchmark: ``python tests/upstream.py`` prints ``listening on PORT``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import h11
import trio

__all__ = ["Exchange", "ReceivedRequest", "Upstream", "open_upstream"]

#: Bytes read from a socket at once.
RECEIVE_SIZE = 64 * 1024


@dataclass
class ReceivedRequest:
    """One request as the upstream received it."""

    method: bytes
    target: bytes
    #: Header fields with their names as sent, in arrival order.
    headers: list[tuple[bytes, bytes]]
    body: bytearray = field(default_factory=bytearray)
    #: Set when the whole body has arrived.
    complete: trio.Event = field(default_factory=trio.Event)
    #: Set when the connection that carried the request has closed.
    closed: trio.Event = field(default_factory=trio.Event)
    _body_changed: trio.Event = field(default_factory=trio.Event)

    def header(self, name: bytes) -> list[bytes]:
        """Return every value of the field ``name``, in arrival order."""
        return [v for n, v in self.headers if n.lower() == name.lower()]

    def header_names(self) -> set[bytes]:
        return {n.lower() for n, _ in self.headers}

    async def wait_for_body(self, size: int) -> None:
        """Wait until at least ``size`` body bytes or the whole body arrived."""
        while len(self.body) < size and not self.complete.is_set():
            await self._body_changed.wait()

    def _add_body(self, data: bytes) -> None:
        self.body.extend(data)
        self._body_changed.set()
        self._body_changed = trio.Event()


class Exchange:
    """The response side of one request, handed to a handler."""

    def __init__(
        self,
        stream: trio.SocketStream,
        connection: h11.Connection,
        request: ReceivedRequest,
    ) -> None:
        self.request = request
        self._stream = stream
        self._connection = connection

    async def send_head(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        await self._send(h11.Response(status_code=status, headers=headers))

    async def send_data(self, data: bytes) -> None:
        await self._send(h11.Data(data=data))

    async def end(self) -> None:
        await self._send(h11.EndOfMessage())

    async def respond(
        self, status: int, headers: list[tuple[bytes, bytes]], body: bytes = b""
    ) -> None:
        """Send a whole response with a ``Content-Length``."""
        length = (b"Content-Length", str(len(body)).encode())
        await self.send_head(status, [*headers, length])
        if body:
            await self.send_data(body)
        await self.end()

    async def send_raw(self, data: bytes) -> None:
        """Write bytes to the socket as they are, bypassing h11's framing."""
        await self._stream.send_all(data)

    async def wait_closed(self) -> None:
        """Wait until the peer closes the connection."""
        await self.request.closed.wait()

    async def _send(self, event: h11.Event) -> None:
        data = self._connection.send(event)
        if data:
            await self._stream.send_all(data)


Handler = Callable[[Exchange], Awaitable[None]]


async def echo_handler(exchange: Exchange) -> None:
    """Respond 200 with the request body. Paths without a handler get this one."""
    await exchange.request.complete.wait()
    content_type = (b"Content-Type", b"application/octet-stream")
    await exchange.respond(200, [content_type], bytes(exchange.request.body))


class Upstream:
    """A listening upstream: its port, its handlers and what it received."""

    def __init__(self, port: int, *, record: bool = True) -> None:
        self.port = port
        #: False keeps ``requests`` empty, for long benchmark runs.
        self.record = record
        self.requests: list[ReceivedRequest] = []
        self.handlers: dict[bytes, Handler] = {}
        self._arrived = trio.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def route(self, prefix: bytes, handler: Handler) -> None:
        """Serve request targets that start with ``prefix`` with ``handler``."""
        self.handlers[prefix] = handler

    async def wait_for_request(self, count: int = 1) -> ReceivedRequest:
        """Wait until ``count`` requests arrived and return the last of them."""
        while len(self.requests) < count:
            await self._arrived.wait()
        return self.requests[count - 1]

    def _handler_for(self, target: bytes) -> Handler:
        matches = [prefix for prefix in self.handlers if target.startswith(prefix)]
        return self.handlers[max(matches, key=len)] if matches else echo_handler

    async def serve_connection(self, stream: trio.SocketStream) -> None:
        """Serve requests on one connection until either side closes it."""
        connection = h11.Connection(h11.SERVER)
        served: list[ReceivedRequest] = []
        try:
            async with stream:
                while await self._serve_one(stream, connection, served):
                    connection.start_next_cycle()
        except* (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError):
            pass  # the proxy broke the connection off, which tests provoke
        finally:
            for request in served:
                request.closed.set()

    async def _serve_one(
        self,
        stream: trio.SocketStream,
        connection: h11.Connection,
        served: list[ReceivedRequest],
    ) -> bool:
        event = await _next_event(stream, connection)
        if not isinstance(event, h11.Request):
            return False
        request = ReceivedRequest(
            method=event.method,
            target=event.target,
            headers=list(event.headers.raw_items()),
        )
        served.append(request)
        if self.record:
            self.requests.append(request)
            self._arrived.set()
            self._arrived = trio.Event()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(_read_rest, stream, connection, request)
            await self._handler_for(event.target)(Exchange(stream, connection, request))
            nursery.cancel_scope.cancel()

        finished = (
            connection.our_state is h11.DONE and connection.their_state is h11.DONE
        )
        return finished and not request.closed.is_set()


async def _next_event(
    stream: trio.SocketStream, connection: h11.Connection
) -> h11.Event:
    while True:
        event = connection.next_event()
        if event is not h11.NEED_DATA:
            return event
        data = await stream.receive_some(RECEIVE_SIZE)
        connection.receive_data(data)


async def _read_rest(
    stream: trio.SocketStream, connection: h11.Connection, request: ReceivedRequest
) -> None:
    """Record the body, then watch for the peer closing the connection.

    Bytes that arrive after the body (a next request on a kept-alive
    connection) stay buffered in h11 for the next cycle.
    """
    try:
        while not request.complete.is_set():
            event = await _next_event(stream, connection)
            if isinstance(event, h11.Data):
                request._add_body(event.data)
            elif isinstance(event, h11.EndOfMessage):
                request.complete.set()
                request._add_body(b"")
        while data := await stream.receive_some(RECEIVE_SIZE):
            connection.receive_data(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError):
        pass  # a connection reset or a truncated body, which tests provoke
    request.closed.set()
    request._add_body(b"")


@contextlib.asynccontextmanager
async def open_upstream(*, record: bool = True) -> AsyncIterator[Upstream]:
    """Listen on an ephemeral loopback port until the block exits."""
    async with trio.open_nursery() as nursery:
        upstream = Upstream(0, record=record)
        serve = functools.partial(trio.serve_tcp, host="127.0.0.1")
        listeners = await nursery.start(serve, upstream.serve_connection, 0)
        upstream.port = listeners[0].socket.getsockname()[1]
        yield upstream
        nursery.cancel_scope.cancel()


def _fixed_handler(body: bytes) -> Handler:
    async def handler(exchange: Exchange) -> None:
        await exchange.request.complete.wait()
        await exchange.respond(200, [(b"Content-Type", b"text/plain")], body)

    return handler


async def _serve_fixed(size: int) -> None:
    async with open_upstream(record=False) as upstream:
        upstream.route(b"/", _fixed_handler(b"x" * size))
        print(f"listening on {upstream.port}", flush=True)
        await trio.sleep_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024, help="body size in bytes")
    arguments = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        trio.run(_serve_fixed, arguments.size)


if __name__ == "__main__":
    main()
