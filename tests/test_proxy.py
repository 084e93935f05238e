"""The API proxy end to end: a real hypercorn process between a client and an
upstream that runs in the test's own trio loop and records what it receives.

The module's server always points at one loopback port. Each test serves that
port with a fresh :class:`Upstream` from a listening socket that outlives the
tests, so one server process serves the whole module.
"""

from __future__ import annotations

import contextlib
import gzip
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import trio
import trio.testing

from tests.conftest import ServerProcess, run_server, wait_for
from tests.upstream import Exchange, Upstream

#: Request body limit of the module's server, in bytes: small, so tests that
#: pass it send little.
BODY_LIMIT = 64 * 1024
#: Upstream read timeout of the module's server, in seconds. Only the 504 test
#: waits for it; the other upstreams answer at once.
READ_TIMEOUT = 2.0
#: Guard against a hang when the proxy buffers what it should stream; a test
#: that reaches it fails instead of waiting for the per-test timeout.
HANG_GUARD = 30.0


def proxy_site(folder: Path) -> dict[str, str]:
    """Settings for an enddel server whose pages do not matter: only /api does."""
    (folder / "client").mkdir(parents=True, exist_ok=True)
    (folder / "client" / "index.html").write_text("<!--ssr-outlet-->")
    (folder / "bundle.js").write_text("globalThis.renderPage = (url) => 'page ' + url;")
    return {
        "ENDDEL_BUNDLE": str(folder / "bundle.js"),
        "ENDDEL_CLIENT_DIR": str(folder / "client"),
        "ENDDEL_RENDER_WORKERS": "1",
        "ENDDEL_CACHE_BYTES": str(1024 * 1024),
    }


@pytest.fixture(scope="module")
def upstream_socket() -> Iterator[socket.socket]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    yield sock
    sock.close()


@pytest.fixture(scope="module")
def server(
    upstream_socket: socket.socket, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    port = upstream_socket.getsockname()[1]
    settings = proxy_site(tmp_path_factory.mktemp("proxy-site")) | {
        "ENDDEL_API_UPSTREAM": f"http://127.0.0.1:{port}/api",
        "ENDDEL_PROXY_READ_TIMEOUT": str(READ_TIMEOUT),
        "ENDDEL_PROXY_MAX_BODY": str(BODY_LIMIT),
    }
    with run_server(settings) as process:
        yield process


@pytest.fixture
async def upstream(upstream_socket: socket.socket, nursery: trio.Nursery) -> Upstream:
    listening = trio.socket.from_stdlib_socket(upstream_socket.dup())
    recorder = Upstream(upstream_socket.getsockname()[1])
    serve = recorder.serve_connection
    nursery.start_soon(trio.serve_listeners, serve, [trio.SocketListener(listening)])
    return recorder


@pytest.fixture
async def client(server: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, trust_env=False) as http:
        http.headers.clear()
        yield http


def raw_url(server: ServerProcess, raw_path: bytes) -> httpx.URL:
    """A URL whose path and query httpx sends as written."""
    return httpx.URL(server.url).copy_with(raw_path=raw_path)


async def exchange_raw(server: ServerProcess, request: bytes) -> bytes:
    """Send ``request`` on a new connection and return the whole response.

    The response ends at its Content-Length or at its last chunk, as the head
    announces, or when the server closes the connection.
    """
    stream = await trio.open_tcp_stream("127.0.0.1", server.port)
    async with stream:
        await stream.send_all(request)
        received = bytearray()
        with trio.fail_after(HANG_GUARD):
            while not _is_complete(bytes(received)):
                data = await stream.receive_some(65536)
                if not data:
                    break
                received.extend(data)
    return bytes(received)


def _is_complete(raw: bytes) -> bool:
    if b"\r\n\r\n" not in raw:
        return False
    _, fields, body = split_response(raw)
    if b"content-length" in fields:
        return len(body) >= int(fields[b"content-length"][0])
    if b"transfer-encoding" in fields:
        return body.endswith(b"0\r\n\r\n")
    return False


def split_response(raw: bytes) -> tuple[bytes, dict[bytes, list[bytes]], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status, *lines = head.split(b"\r\n")
    fields: dict[bytes, list[bytes]] = {}
    for line in lines:
        name, _, value = line.partition(b":")
        fields.setdefault(name.strip().lower(), []).append(value.strip())
    return status, fields, body


# Requests as the upstream sees them


async def test_request_headers_rewritten(
    server: ServerProcess, upstream: Upstream, client: httpx.AsyncClient
) -> None:
    headers = {
        "Host": "shop.example",
        "Connection": "keep-alive, X-Hop",
        "X-Hop": "named by Connection",
        "Keep-Alive": "timeout=5",
        "TE": "trailers",
        "Trailer": "X-Checksum",
        "Proxy-Authorization": "Basic c2VjcmV0",
        "Proxy-Connection": "keep-alive",
        "X-Forwarded-For": "203.0.113.7",
        "X-Forwarded-Proto": "gopher",
        "X-Forwarded-Host": "spoofed.example",
        "Cookie": "session=1",
        "X-Custom": "kept",
    }
    response = await client.get("/api/items", headers=headers)
    assert response.status_code == 200

    seen = upstream.requests[0]
    names = seen.header_names()
    assert seen.header(b"host") == [f"127.0.0.1:{upstream.port}".encode()]
    for hop in (b"connection", b"x-hop", b"keep-alive", b"te", b"trailer"):
        assert hop not in names
    for hop in (b"proxy-authorization", b"proxy-connection", b"upgrade"):
        assert hop not in names
    assert seen.header(b"x-forwarded-for") == [b"203.0.113.7, 127.0.0.1"]
    assert seen.header(b"x-forwarded-proto") == [b"http"]
    assert seen.header(b"x-forwarded-host") == [b"shop.example"]
    assert seen.header(b"cookie") == [b"session=1"]
    assert seen.header(b"x-custom") == [b"kept"]


async def test_request_gets_no_default_headers(
    server: ServerProcess, upstream: Upstream, client: httpx.AsyncClient
) -> None:
    response = await client.get("/api/plain", headers={"Host": "shop.example"})
    assert response.status_code == 200

    names = upstream.requests[0].header_names()
    for added_by_httpx in (b"accept", b"accept-encoding", b"user-agent"):
        assert added_by_httpx not in names
    # Quart puts the peer address in its request headers; it must not leak.
    assert b"remote-addr" not in names


async def test_accept_encoding_forwarded_as_sent(
    server: ServerProcess, upstream: Upstream, client: httpx.AsyncClient
) -> None:
    sent = "br;q=1.0, gzip;q=0.5, identity;q=0"
    await client.get("/api/plain", headers={"Accept-Encoding": sent})

    assert upstream.requests[0].header(b"accept-encoding") == [sent.encode()]


@pytest.mark.parametrize(
    ("raw_path", "target"),
    [
        (b"/api", b"/api"),
        (b"/api/", b"/api/"),
        (b"/api/items/42?sort=-price&q=a+b", b"/api/items/42?sort=-price&q=a+b"),
        (b"/api/a%2Fb/%7euser/caf%C3%A9", b"/api/a%2Fb/%7euser/caf%C3%A9"),
        (b"/api//double//slash?x=%2F&y=%zz", b"/api//double//slash?x=%2F&y=%zz"),
    ],
)
async def test_path_and_query_forwarded_raw(
    server: ServerProcess,
    upstream: Upstream,
    client: httpx.AsyncClient,
    raw_path: bytes,
    target: bytes,
) -> None:
    response = await client.get(raw_url(server, raw_path))

    assert response.status_code == 200
    assert upstream.requests[0].target == target


@pytest.mark.parametrize(
    "raw_path", [b"/api/../secret", b"/api/x/%2e%2E/y", b"/api/./x", b"/%61pi/x"]
)
async def test_path_rejected_before_upstream(
    server: ServerProcess, upstream: Upstream, raw_path: bytes
) -> None:
    # A raw socket, because httpx would resolve the dot-segments itself.
    request = b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % raw_path
    status, _, body = split_response(await exchange_raw(server, request))

    assert status.startswith(b"HTTP/1.1 400")
    assert repr(raw_path).encode() in body
    await trio.testing.wait_all_tasks_blocked()
    assert upstream.requests == []


@pytest.mark.parametrize(
    "method", ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PROPFIND"]
)
async def test_every_method_forwarded(
    server: ServerProcess, upstream: Upstream, client: httpx.AsyncClient, method: str
) -> None:
    body = f"{method} body".encode()
    response = await client.request(method, "/api/echo", content=body)

    assert response.status_code == 200
    assert response.content == body
    assert upstream.requests[0].method == method.encode()
    assert bytes(upstream.requests[0].body) == body


async def test_head_keeps_upstream_length(
    server: ServerProcess, upstream: Upstream, client: httpx.AsyncClient
) -> None:
    async def head(exchange: Exchange) -> None:
        await exchange.send_head(200, [(b"Content-Length", b"1234")])
        await exchange.end()

    upstream.route(b"/api/head", head)
    response = await client.head("/api/head")

    assert upstream.requests[0].method == b"HEAD"
    assert response.headers["content-length"] == "1234"
    assert response.content == b""


# Responses as the client sees them


async def test_response_headers_rewritten(
    server: ServerProcess, upstream: Upstream, client: httpx.AsyncClient
) -> None:
    async def respond(exchange: Exchange) -> None:
        headers = [
            (b"Set-Cookie", b"a=1; Path=/; HttpOnly"),
            (b"Set-Cookie", b"b=2, with comma; Path=/api"),
            (b"Connection", b"X-Upstream-Hop"),
            (b"X-Upstream-Hop", b"hidden"),
            (b"Keep-Alive", b"timeout=3"),
            (b"Proxy-Authenticate", b"Basic"),
            (b"Date", b"Mon, 01 Jan 2001 00:00:00 GMT"),
            (b"Server", b"upstream/1.0"),
            (b"X-Cache", b"HIT"),
            (b"Cache-Control", b"no-store"),
            (b"Content-Type", b"application/json"),
        ]
        await exchange.respond(201, headers, b"{}")

    upstream.route(b"/api/cookies", respond)
    response = await client.get("/api/cookies")

    assert response.status_code == 201
    assert response.headers.get_list("set-cookie") == [
        "a=1; Path=/; HttpOnly",
        "b=2, with comma; Path=/api",
    ]
    for hidden in ("x-upstream-hop", "keep-alive", "proxy-authenticate", "x-cache"):
        assert hidden not in response.headers
    assert len(response.headers.get_list("date")) == 1
    assert response.headers.get_list("server") == ["hypercorn-h11"]
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["content-type"] == "application/json"
    assert response.content == b"{}"


async def test_response_without_content_type_keeps_none(
    server: ServerProcess, upstream: Upstream, client: httpx.AsyncClient
) -> None:
    async def no_content(exchange: Exchange) -> None:
        await exchange.send_head(204, [])
        await exchange.end()

    upstream.route(b"/api/empty", no_content)
    response = await client.delete("/api/empty")

    assert response.status_code == 204
    assert "content-type" not in response.headers


async def test_redirect_passed_back_not_followed(
    server: ServerProcess, upstream: Upstream, client: httpx.AsyncClient
) -> None:
    async def redirect(exchange: Exchange) -> None:
        here = f"http://127.0.0.1:{upstream.port}/api/login?next=%2Fcart"
        away = "https://elsewhere.example/api/x"
        location = away if b"away" in exchange.request.target else here
        await exchange.respond(302, [(b"Location", location.encode())])

    upstream.route(b"/api/redirect", redirect)
    inside = await client.get("/api/redirect")
    outside = await client.get("/api/redirect/away")

    assert inside.status_code == 302
    assert inside.headers["location"] == "/api/login?next=%2Fcart"
    assert outside.status_code == 302
    assert outside.headers["location"] == "https://elsewhere.example/api/x"
    assert [r.target for r in upstream.requests] == [
        b"/api/redirect",
        b"/api/redirect/away",
    ]


# Streaming and encodings


async def test_event_stream_arrives_event_by_event(
    server: ServerProcess, upstream: Upstream, client: httpx.AsyncClient
) -> None:
    first_seen = trio.Event()
    finished = trio.Event()

    async def events(exchange: Exchange) -> None:
        await exchange.send_head(200, [(b"Content-Type", b"text/event-stream")])
        await exchange.send_data(b"data: one\n\n")
        await first_seen.wait()
        await exchange.send_data(b"data: two\n\n")
        await exchange.end()
        finished.set()

    upstream.route(b"/api/events", events)
    with trio.fail_after(HANG_GUARD):
        async with client.stream("GET", "/api/events") as response:
            chunks = response.aiter_raw()
            first = await chunks.__anext__()
            assert not finished.is_set()
            first_seen.set()
            rest = b"".join([chunk async for chunk in chunks])

    assert response.headers["content-type"] == "text/event-stream"
    assert first == b"data: one\n\n"
    assert rest == b"data: two\n\n"


async def test_upload_streams_before_body_ends(
    server: ServerProcess, upstream: Upstream, client: httpx.AsyncClient
) -> None:
    chunk = b"u" * 4096

    async def upload() -> AsyncIterator[bytes]:
        yield chunk
        # The second chunk is sent only once the upstream holds the first: a
        # proxy that read the whole body before connecting would hang here.
        seen = await upstream.wait_for_request()
        await seen.wait_for_body(len(chunk))
        yield chunk

    with trio.fail_after(HANG_GUARD):
        response = await client.post("/api/upload", content=upload())

    assert response.status_code == 200
    assert bytes(upstream.requests[0].body) == chunk * 2
    assert upstream.requests[0].header(b"transfer-encoding") == [b"chunked"]


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_gzip_body_passed_through(
    server: ServerProcess, upstream: Upstream, client: httpx.AsyncClient, framing: str
) -> None:
    compressed = gzip.compress(b'{"items": []}' * 200, mtime=0)

    async def gzipped(exchange: Exchange) -> None:
        headers = [(b"Content-Encoding", b"gzip"), (b"Vary", b"Accept-Encoding")]
        if framing == "content-length":
            await exchange.respond(200, headers, compressed)
            return
        await exchange.send_head(200, headers)
        await exchange.send_data(compressed[:100])
        await exchange.send_data(compressed[100:])
        await exchange.end()

    upstream.route(b"/api/gzip", gzipped)
    request_headers = {"Accept-Encoding": "gzip"}
    async with client.stream("GET", "/api/gzip", headers=request_headers) as response:
        received = b"".join([chunk async for chunk in response.aiter_raw()])

    assert response.headers["content-encoding"] == "gzip"
    assert received == compressed
    if framing == "content-length":
        assert response.headers["content-length"] == str(len(compressed))
        assert "transfer-encoding" not in response.headers
    else:
        assert "content-length" not in response.headers


async def test_http10_client_gets_no_chunked_body(
    server: ServerProcess, upstream: Upstream
) -> None:
    async def chunked(exchange: Exchange) -> None:
        await exchange.send_head(200, [(b"Content-Type", b"text/plain")])
        await exchange.send_data(b"first,")
        await exchange.send_data(b"second")
        await exchange.end()

    upstream.route(b"/api/chunked", chunked)
    raw = await exchange_raw(
        server, b"GET /api/chunked HTTP/1.0\r\nHost: shop.example\r\n\r\n"
    )
    status, fields, body = split_response(raw)

    assert status.startswith(b"HTTP/1.1 200")
    assert b"transfer-encoding" not in fields
    assert body == b"first,second"
    assert upstream.requests[0].header(b"transfer-encoding") == []


async def test_both_lengths_never_reach_client(
    server: ServerProcess, upstream: Upstream
) -> None:
    async def conflicting(exchange: Exchange) -> None:
        await exchange.send_raw(
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        )
        await exchange.wait_closed()

    upstream.route(b"/api/conflict", conflicting)
    raw = await exchange_raw(server, b"GET /api/conflict HTTP/1.1\r\nHost: x\r\n\r\n")
    _, fields, _ = split_response(raw)

    assert not (b"content-length" in fields and b"transfer-encoding" in fields)


# Limits and failures


async def test_declared_body_over_limit_gets_413(
    server: ServerProcess, upstream: Upstream
) -> None:
    request = b"POST /api/upload HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (
        BODY_LIMIT + 1
    )
    raw = await exchange_raw(server, request)
    status, _, body = split_response(raw)

    assert status.startswith(b"HTTP/1.1 413")
    assert str(BODY_LIMIT).encode() in body
    await trio.testing.wait_all_tasks_blocked()
    assert upstream.requests == []


async def test_streamed_body_over_limit_gets_413(
    server: ServerProcess, upstream: Upstream, client: httpx.AsyncClient
) -> None:
    async def upload() -> AsyncIterator[bytes]:
        for _ in range(BODY_LIMIT // 4096 + 2):
            yield b"s" * 4096

    response = await client.post("/api/upload", content=upload())

    assert response.status_code == 413
    if upstream.requests:
        seen = upstream.requests[0]
        with trio.fail_after(HANG_GUARD):
            await seen.closed.wait()
        assert not seen.complete.is_set()
        assert len(seen.body) <= BODY_LIMIT


async def test_read_timeout_gives_504(
    server: ServerProcess, upstream: Upstream, client: httpx.AsyncClient
) -> None:
    async def silent(exchange: Exchange) -> None:
        await exchange.wait_closed()

    upstream.route(b"/api/silent", silent)
    response = await client.get("/api/silent")

    assert response.status_code == 504
    assert response.headers["content-type"].startswith("text/plain")
    with trio.fail_after(HANG_GUARD):
        await upstream.requests[0].closed.wait()
    logged = f"upstream http://127.0.0.1:{upstream.port}/api timed out for GET"
    wait_for(lambda: logged in server.log)
    assert "ReadTimeout" in server.log


async def test_refused_upstream_gives_502(tmp_path: Path) -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    upstream_url = f"http://127.0.0.1:{port}/api"

    settings = proxy_site(tmp_path) | {"ENDDEL_API_UPSTREAM": upstream_url}
    with run_server(settings) as server:
        async with httpx.AsyncClient(trust_env=False) as http:
            response = await http.get(server.url + "/api/items")

    assert response.status_code == 502
    assert len(response.content) < 100
    assert f"upstream {upstream_url} failed for GET /api/items" in server.log
    assert "ConnectError" in server.log


async def test_connect_timeout_gives_504(tmp_path: Path) -> None:
    # A listener whose accept queue is full drops further SYNs, so a connect to
    # it neither succeeds nor fails until the client's timeout.
    full = socket.socket()
    full.bind(("127.0.0.1", 0))
    full.listen(0)
    port = full.getsockname()[1]
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(("127.0.0.1", port))
        fillers.append(filler)
    settings = proxy_site(tmp_path) | {
        "ENDDEL_API_UPSTREAM": f"http://127.0.0.1:{port}/api",
        "ENDDEL_PROXY_CONNECT_TIMEOUT": "0.5",
    }

    try:
        with run_server(settings) as server:
            async with httpx.AsyncClient(trust_env=False) as http:
                response = await http.get(server.url + "/api/items")
    finally:
        for filler in fillers:
            filler.close()
        full.close()

    assert response.status_code == 504
    assert "ConnectTimeout" in server.log


async def test_upstream_failure_mid_body_truncates(
    server: ServerProcess, upstream: Upstream, client: httpx.AsyncClient
) -> None:
    async def breaks(exchange: Exchange) -> None:
        await exchange.send_head(200, [(b"Content-Type", b"text/plain")])
        await exchange.send_data(b"partial")
        # Returning without the final chunk makes the upstream close the
        # connection in the middle of the body.

    upstream.route(b"/api/breaks", breaks)
    async with client.stream("GET", "/api/breaks") as response:
        with pytest.raises(httpx.RemoteProtocolError):
            await response.aread()

    wait_for(lambda: "failed during the response to GET /api/breaks" in server.log)


async def test_client_disconnect_cancels_waiting_request(
    server: ServerProcess, upstream: Upstream
) -> None:
    async def silent(exchange: Exchange) -> None:
        await exchange.wait_closed()

    upstream.route(b"/api/slow", silent)
    stream = await trio.open_tcp_stream("127.0.0.1", server.port)
    await stream.send_all(b"GET /api/slow HTTP/1.1\r\nHost: x\r\n\r\n")
    seen = await upstream.wait_for_request()
    await stream.aclose()

    with trio.fail_after(READ_TIMEOUT / 2):
        await seen.closed.wait()


async def test_client_disconnect_cancels_stream(
    server: ServerProcess, upstream: Upstream
) -> None:
    async def endless(exchange: Exchange) -> None:
        await exchange.send_head(200, [(b"Content-Type", b"text/event-stream")])
        await exchange.send_data(b"data: first\n\n")
        await exchange.wait_closed()

    upstream.route(b"/api/endless", endless)
    stream = await trio.open_tcp_stream("127.0.0.1", server.port)
    await stream.send_all(b"GET /api/endless HTTP/1.1\r\nHost: x\r\n\r\n")
    received = b""
    with trio.fail_after(HANG_GUARD):
        while b"data: first" not in received:
            received += await stream.receive_some(65536)
    seen = upstream.requests[0]
    await stream.aclose()

    with trio.fail_after(READ_TIMEOUT / 2):
        await seen.closed.wait()
