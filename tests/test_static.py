"""StaticFiles behind a real hypercorn process, spoken to with raw HTTP/1.1.

The server is a tiny QuartTrio app that serves a client folder built in a
temporary directory and returns ``404 fallthrough`` where ``respond`` returns
``None``. Requests are written byte for byte, because an HTTP client library
would normalise the very paths and headers under test.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import brotli
import pytest
import trio

from enddel.http.static import CHUNK_BYTES

#: Seconds a test server gets to start on a loaded two-core machine.
START_TIMEOUT = 60.0
SECRET = b"TOP SECRET: outside the client folder"
HASHED_JS = "assets/app-BjYNXa3D.js"
IMMUTABLE = "public, max-age=31536000, immutable"

APP_SOURCE = """
import os
from pathlib import Path

from quart import Response, request
from quart_trio import QuartTrio

from enddel.http.static import StaticFiles

app = QuartTrio(__name__)
app.url_map.merge_slashes = False
static = StaticFiles(Path(os.environ["STATIC_TEST_ROOT"]))


async def page(path=""):
    response = await static.respond(request)
    if response is None:
        return Response("fallthrough", 404, {"X-Fallthrough": "yes"})
    return response


app.add_url_rule("/", "page", page, methods=["GET", "HEAD"])
app.add_url_rule("/<path:path>", "page", page, methods=["GET", "HEAD"])
"""

_RUNNING_ON = re.compile(r"Running on http://127\.0\.0\.1:(\d+)")


@dataclasses.dataclass
class Site:
    """The client folder on disk and the port of the server that serves it."""

    client: Path
    port: int
    #: Body of HASHED_JS per content coding.
    variants: dict[str, bytes]


@dataclasses.dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


def _javascript() -> bytes:
    # Varied lines compress well but not to nothing, and the text is several
    # chunks long so that streaming crosses chunk boundaries.
    lines = [f"export const value{i} = {i * 7919 % 10007};\n" for i in range(6000)]
    return "".join(lines).encode()


def _build_client(root: Path) -> tuple[Path, dict[str, bytes]]:
    client = root / "client"
    (client / "assets").mkdir(parents=True)
    (client / "sub").mkdir()
    secret = root / "client-secret"
    secret.mkdir()
    (secret / "secret.txt").write_bytes(SECRET)

    javascript = _javascript()
    variants = {
        "identity": javascript,
        "br": brotli.compress(javascript),
        "gzip": gzip.compress(javascript, mtime=0),
    }
    (client / HASHED_JS).write_bytes(variants["identity"])
    (client / (HASHED_JS + ".br")).write_bytes(variants["br"])
    (client / (HASHED_JS + ".gz")).write_bytes(variants["gzip"])

    (client / "index.html").write_text("<html><!--ssr-outlet--></html>")
    (client / "sub" / "index.html").write_text("<p>nested page</p>")
    (client / "robots.txt").write_text("User-agent: *\n")
    (client / "big.bin").write_bytes(os.urandom(5 * CHUNK_BYTES + 123))
    (client / "tiny.txt").write_bytes(b"tiny")
    (client / "tiny.txt.br").write_bytes(brotli.compress(b"tiny") + b"\0" * 16)
    (client / ".env").write_text("PASSWORD=hunter2")
    (client / "assets" / ".hidden").write_text("hidden")
    (client / "only-variant.js.br").write_bytes(brotli.compress(b"only"))
    (client / "style.css").write_text("body { color: red }\n" * 50)
    (client / "style.css.gz").write_bytes(gzip.compress(b"body { color: red }\n" * 50))

    (client / "escape.txt").symlink_to(secret / "secret.txt")
    (client / "linkdir").symlink_to(secret)
    (client / "relative-escape.txt").symlink_to(
        Path("..") / "client-secret" / "secret.txt"
    )
    (client / "inside-link.js").symlink_to(client / HASHED_JS)
    # A variant that is a link to a file outside: never used.
    (client / "style.css.br").symlink_to(secret / "secret.txt")
    os.mkfifo(client / "pipe.js")
    return client, variants


def _start_server(
    app_dir: Path, client: Path
) -> tuple[subprocess.Popen[str], threading.Thread, int]:
    environ = dict(os.environ)
    environ["STATIC_TEST_ROOT"] = str(client)
    environ["PYTHONPATH"] = os.pathsep.join([str(app_dir), *sys.path])
    command = [
        sys.executable, "-m", "hypercorn", "-k", "trio",
        "--bind", "127.0.0.1:0", "static_test_app:app",
    ]  # fmt: skip
    process = subprocess.Popen(
        command,
        cwd=app_dir,
        env=environ,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    ports: list[int] = []
    lines: list[str] = []
    listening = threading.Event()

    def collect() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if match := _RUNNING_ON.search(line):
                ports.append(int(match[1]))
                listening.set()
        listening.set()

    reader = threading.Thread(target=collect, daemon=True)
    reader.start()
    if not listening.wait(START_TIMEOUT) or not ports:
        _stop_server(process, reader)
        raise RuntimeError("static test server did not start:\n" + "".join(lines))
    return process, reader, ports[0]


def _stop_server(process: subprocess.Popen[str], reader: threading.Thread) -> None:
    process.terminate()
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    reader.join()
    assert process.stdout is not None
    process.stdout.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("static")
    client, variants = _build_client(root)
    app_dir = root / "app"
    app_dir.mkdir()
    (app_dir / "static_test_app.py").write_text(APP_SOURCE)
    process, reader, port = _start_server(app_dir, client)
    try:
        yield Site(client, port, variants)
    finally:
        _stop_server(process, reader)


class Listening(Protocol):
    """A test server: its loopback port."""

    port: int


async def fetch(
    site: Listening,
    target: bytes | str,
    headers: dict[str, str] | list[tuple[str, str]] | None = None,
    method: str = "GET",
) -> RawResponse:
    """Send one raw request and read its response by its Content-Length.

    A second request then follows on the same connection, and its status line
    must come next: that proves that no bytes beyond the announced length (a
    body after HEAD or 304, say) were sent.
    """
    if isinstance(target, str):
        target = target.encode()
    lines = [method.encode() + b" " + target + b" HTTP/1.1", b"Host: 127.0.0.1"]
    fields = headers.items() if isinstance(headers, dict) else headers or []
    lines += [f"{name}: {value}".encode("latin-1") for name, value in fields]
    stream = await trio.open_tcp_stream("127.0.0.1", site.port)
    async with stream:
        await stream.send_all(b"\r\n".join([*lines, b"", b""]))
        received = bytearray()
        while b"\r\n\r\n" not in received:
            received += await _receive(stream)
        head, _, body = bytes(received).partition(b"\r\n\r\n")
        response = _parse_head(head)
        length = int(response.header("Content-Length") or 0)
        if method == "HEAD" or response.status == 304:
            length = 0
        while len(body) < length:
            body += await _receive(stream)
        response.body, after = body[:length], body[length:]

        await stream.send_all(b"HEAD /robots.txt HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        while len(after) < len(b"HTTP/1.1 "):
            after += await _receive(stream)
        assert after.startswith(b"HTTP/1.1 "), (
            f"stray bytes after the body: {after[:80]!r}"
        )
    return response


async def _receive(stream: trio.SocketStream) -> bytes:
    data = await stream.receive_some()
    assert data, "the server closed the connection before the response ended"
    return data


def _parse_head(head: bytes) -> RawResponse:
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed: dict[str, str] = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        key = name.strip().lower()
        parsed[key] = (
            f"{parsed[key]}, {value.strip()}" if key in parsed else value.strip()
        )
    return RawResponse(int(status_line.split()[1]), parsed, b"")


def _accept(coding: str) -> dict[str, str]:
    return {"Accept-Encoding": coding}


CODINGS = ["identity", "br", "gzip"]


def _decode(coding: str, body: bytes) -> bytes:
    if coding == "br":
        return bytes(brotli.decompress(body))
    if coding == "gzip":
        return gzip.decompress(body)
    return body


# ---------------------------------------------------------------------------
# One set of checks over every transfer path.


@pytest.mark.parametrize("coding", CODINGS)
async def test_full_get(site: Site, coding: str) -> None:
    response = await fetch(site, "/" + HASHED_JS, _accept(coding))
    expected = site.variants[coding]
    assert response.status == 200
    assert response.body == expected
    assert _decode(coding, response.body) == site.variants["identity"]
    assert response.header("Content-Length") == str(len(expected))
    assert response.header("Content-Type") == "text/javascript; charset=utf-8"
    assert response.header("Content-Encoding") == (
        None if coding == "identity" else coding
    )
    assert response.header("Vary") == "Accept-Encoding"
    assert response.header("Cache-Control") == IMMUTABLE
    assert response.header("X-Content-Type-Options") == "nosniff"
    assert response.header("Accept-Ranges") == "bytes"
    assert response.header("Last-Modified") is not None
    etag = response.header("ETag")
    assert etag is not None
    assert re.fullmatch(r'"[0-9a-f]+-[0-9a-f]+-' + coding + '"', etag)


async def test_etag_differs_per_coding(site: Site) -> None:
    etags = set()
    for coding in CODINGS:
        response = await fetch(site, "/" + HASHED_JS, _accept(coding))
        etags.add(response.header("ETag"))
    assert len(etags) == 3


@pytest.mark.parametrize("coding", CODINGS)
async def test_head_matches_get(site: Site, coding: str) -> None:
    get = await fetch(site, "/" + HASHED_JS, _accept(coding))
    head = await fetch(site, "/" + HASHED_JS, _accept(coding), method="HEAD")
    assert head.status == 200
    assert head.body == b""
    assert head.header("Content-Length") == str(len(site.variants[coding]))
    for name in ("ETag", "Last-Modified", "Content-Type", "Content-Encoding", "Vary"):
        assert head.header(name) == get.header(name), name


@pytest.mark.parametrize("coding", CODINGS)
async def test_not_modified(site: Site, coding: str) -> None:
    first = await fetch(site, "/" + HASHED_JS, _accept(coding))
    etag = first.header("ETag")
    last_modified = first.header("Last-Modified")
    assert etag is not None
    assert last_modified is not None
    for conditions in (
        {"If-None-Match": etag},
        {"If-None-Match": "W/" + etag},
        {"If-None-Match": f'"stale", {etag}'},
        {"If-None-Match": "*"},
        {"If-Modified-Since": last_modified},
        {"If-None-Match": etag, "If-Modified-Since": "Thu, 01 Jan 1970 00:00:00 GMT"},
    ):
        response = await fetch(site, "/" + HASHED_JS, {**_accept(coding), **conditions})
        assert response.status == 304, conditions
        assert response.body == b""
        assert response.header("ETag") == etag
        assert response.header("Vary") == "Accept-Encoding"
        assert response.header("Cache-Control") == IMMUTABLE
        assert response.header("Content-Encoding") is None
        assert response.header("Content-Length") is None


@pytest.mark.parametrize("coding", CODINGS)
async def test_modified(site: Site, coding: str) -> None:
    first = await fetch(site, "/" + HASHED_JS, _accept(coding))
    etag = first.header("ETag")
    last_modified = first.header("Last-Modified")
    assert etag is not None
    assert last_modified is not None
    other = "br" if coding != "br" else "gzip"
    for conditions in (
        {"If-None-Match": '"stale"'},
        # The tag of another coding is another representation.
        {"If-None-Match": etag.replace(coding, other)},
        {"If-Modified-Since": "Thu, 01 Jan 1970 00:00:00 GMT"},
        {"If-Modified-Since": "not a date"},
        # If-None-Match takes precedence over a matching If-Modified-Since.
        {"If-None-Match": '"stale"', "If-Modified-Since": last_modified},
    ):
        response = await fetch(site, "/" + HASHED_JS, {**_accept(coding), **conditions})
        assert response.status == 200, conditions
        assert response.body == site.variants[coding]


@pytest.mark.parametrize("coding", CODINGS)
async def test_failed_if_match(site: Site, coding: str) -> None:
    headers = {**_accept(coding), "If-Match": '"stale"'}
    response = await fetch(site, "/" + HASHED_JS, headers)
    assert response.status == 412
    assert response.body == b""
    assert response.header("Vary") == "Accept-Encoding"


@pytest.mark.parametrize("coding", CODINGS)
@pytest.mark.parametrize(
    ("range_header", "start", "stop"),
    [
        ("bytes=0-99", 0, 100),
        ("bytes=10-10", 10, 11),
        ("bytes=-500", -500, None),
        ("bytes=50-", 50, None),
        ("bytes=0-999999999", 0, None),
    ],
)
async def test_single_range(
    site: Site, coding: str, range_header: str, start: int, stop: int | None
) -> None:
    body = site.variants[coding]
    expected = body[start:stop]
    first = len(body) + start if start < 0 else start
    response = await fetch(
        site, "/" + HASHED_JS, {**_accept(coding), "Range": range_header}
    )
    assert response.status == 206
    assert response.body == expected
    assert response.header("Content-Length") == str(len(expected))
    assert response.header("Content-Range") == (
        f"bytes {first}-{first + len(expected) - 1}/{len(body)}"
    )
    assert response.header("Content-Encoding") == (
        None if coding == "identity" else coding
    )
    assert response.header("Content-Type") == "text/javascript; charset=utf-8"
    assert response.header("Vary") == "Accept-Encoding"
    assert response.header("ETag") is not None


@pytest.mark.parametrize("coding", CODINGS)
async def test_range_head(site: Site, coding: str) -> None:
    headers = {**_accept(coding), "Range": "bytes=5-14"}
    response = await fetch(site, "/" + HASHED_JS, headers, method="HEAD")
    assert response.status == 206
    assert response.body == b""
    assert response.header("Content-Length") == "10"
    assert (
        response.header("Content-Range") == f"bytes 5-14/{len(site.variants[coding])}"
    )


@pytest.mark.parametrize("coding", CODINGS)
@pytest.mark.parametrize(
    "range_header", ["bytes=99999999-", "bytes=-0", "bytes=99999999-99999999"]
)
async def test_unsatisfiable_range(site: Site, coding: str, range_header: str) -> None:
    response = await fetch(
        site, "/" + HASHED_JS, {**_accept(coding), "Range": range_header}
    )
    assert response.status == 416
    assert response.body == b""
    assert response.header("Content-Range") == f"bytes */{len(site.variants[coding])}"
    assert response.header("Vary") == "Accept-Encoding"
    assert response.header("Content-Encoding") is None


@pytest.mark.parametrize("coding", CODINGS)
@pytest.mark.parametrize(
    "range_header", ["bytes=5-1", "bytes=abc", "pages=0-1", "bytes=--1", "bytes 0-1"]
)
async def test_malformed_range_ignored(
    site: Site, coding: str, range_header: str
) -> None:
    response = await fetch(
        site, "/" + HASHED_JS, {**_accept(coding), "Range": range_header}
    )
    assert response.status == 200
    assert response.body == site.variants[coding]
    assert response.header("Content-Range") is None


@pytest.mark.parametrize("coding", CODINGS)
async def test_if_range(site: Site, coding: str) -> None:
    first = await fetch(site, "/" + HASHED_JS, _accept(coding))
    etag = first.header("ETag")
    last_modified = first.header("Last-Modified")
    assert etag is not None
    assert last_modified is not None
    body = site.variants[coding]
    cases = [
        (etag, 206),
        (last_modified, 206),
        ('"stale"', 200),
        ("W/" + etag, 200),  # weak tags never match in If-Range
        ("Thu, 01 Jan 1970 00:00:00 GMT", 200),
        ("garbage", 200),
    ]
    for if_range, status in cases:
        headers = {**_accept(coding), "Range": "bytes=0-9", "If-Range": if_range}
        response = await fetch(site, "/" + HASHED_JS, headers)
        assert response.status == status, if_range
        assert response.body == (body[:10] if status == 206 else body)


@pytest.mark.parametrize("coding", CODINGS)
async def test_several_ranges(site: Site, coding: str) -> None:
    body = site.variants[coding]
    headers = {**_accept(coding), "Range": "bytes=500-599,0-9"}
    response = await fetch(site, "/" + HASHED_JS, headers)
    if coding != "identity":
        # Encoded bodies are sent whole when several ranges are requested.
        assert response.status == 200
        assert response.body == body
        return
    assert response.status == 206
    content_type = response.header("Content-Type")
    assert content_type is not None
    match = re.fullmatch(r"multipart/byteranges; boundary=(\w+)", content_type)
    assert match is not None
    boundary = match[1].encode()
    assert response.header("Content-Length") == str(len(response.body))
    part_type = b"Content-Type: text/javascript; charset=utf-8\r\n"
    assert response.body == (
        b"--" + boundary + b"\r\n" + part_type
        + f"Content-Range: bytes 0-9/{len(body)}\r\n\r\n".encode() + body[:10] + b"\r\n"
        + b"--" + boundary + b"\r\n" + part_type
        + f"Content-Range: bytes 500-599/{len(body)}\r\n\r\n".encode()
        + body[500:600] + b"\r\n"
        + b"--" + boundary + b"--\r\n"
    )  # fmt: skip


# ---------------------------------------------------------------------------
# Negotiation details.


@pytest.mark.parametrize(
    ("accept_encoding", "coding"),
    [
        (None, "identity"),
        ("", "identity"),
        ("gzip, deflate, br, zstd", "br"),
        ("br;q=0, gzip", "gzip"),
        ("GZIP", "gzip"),
        ("*", "br"),
        ("br;q=nonsense", "identity"),
        ("identity;q=0, gzip", "gzip"),
    ],
)
async def test_negotiated_coding(
    site: Site, accept_encoding: str | None, coding: str
) -> None:
    headers = {} if accept_encoding is None else {"Accept-Encoding": accept_encoding}
    response = await fetch(site, "/" + HASHED_JS, headers)
    assert response.status == 200
    assert response.body == site.variants[coding]
    assert response.header("Vary") == "Accept-Encoding"


async def test_not_acceptable(site: Site) -> None:
    response = await fetch(site, "/" + HASHED_JS, {"Accept-Encoding": "identity;q=0"})
    assert response.status == 406
    assert response.header("Vary") == "Accept-Encoding"
    assert b"Accept-Encoding" in response.body


async def test_variant_larger_than_original(site: Site) -> None:
    response = await fetch(site, "/tiny.txt", {"Accept-Encoding": "br"})
    assert response.status == 200
    assert response.body == b"tiny"
    assert response.header("Content-Encoding") is None
    assert response.header("Vary") == "Accept-Encoding"


async def test_no_variants_no_vary(site: Site) -> None:
    response = await fetch(site, "/robots.txt", {"Accept-Encoding": "br, gzip"})
    assert response.status == 200
    assert response.body == b"User-agent: *\n"
    assert response.header("Vary") is None
    assert response.header("Content-Encoding") is None
    assert response.header("Cache-Control") == "no-cache"
    assert response.header("Content-Type") == "text/plain; charset=utf-8"


async def test_linked_variant_not_used(site: Site) -> None:
    response = await fetch(site, "/style.css", {"Accept-Encoding": "br, gzip"})
    assert response.status == 200
    assert response.header("Content-Encoding") == "gzip"
    assert gzip.decompress(response.body) == b"body { color: red }\n" * 50
    assert SECRET not in response.body


async def test_variant_without_original(site: Site) -> None:
    response = await fetch(site, "/only-variant.js", {"Accept-Encoding": "br"})
    assert response.status == 404
    assert response.header("X-Fallthrough") == "yes"


async def test_large_file_streams_whole(site: Site) -> None:
    expected = (site.client / "big.bin").read_bytes()
    response = await fetch(site, "/big.bin")
    assert response.status == 200
    assert response.body == expected
    assert response.header("Content-Type") == "application/octet-stream"
    ranged = await fetch(site, "/big.bin", {"Range": f"bytes={CHUNK_BYTES - 5}-"})
    assert ranged.status == 206
    assert ranged.body == expected[CHUNK_BYTES - 5 :]


async def test_changed_file_gets_new_etag(site: Site) -> None:
    path = site.client / "changing.txt"
    path.write_bytes(b"version one")
    os.utime(path, ns=(1_600_000_000_000_000_000, 1_600_000_000_000_000_000))
    first = await fetch(site, "/changing.txt")
    etag = first.header("ETag")
    assert etag is not None
    assert first.header("Last-Modified") == "Sun, 13 Sep 2020 12:26:40 GMT"

    path.write_bytes(b"version two!")
    os.utime(path, ns=(1_600_000_100_000_000_000, 1_600_000_100_000_000_000))
    second = await fetch(site, "/changing.txt", {"If-None-Match": etag})
    assert second.status == 200
    assert second.body == b"version two!"
    assert second.header("ETag") != etag


# ---------------------------------------------------------------------------
# What falls through to SSR, and path safety.


@pytest.mark.parametrize(
    "target",
    [
        b"/",
        b"/index.html",
        b"/missing.js",
        b"/assets",
        b"/assets/",
        b"/sub",
        b"/.env",
        b"/assets/.hidden",
        b"/%2eenv",
        b"/assets/%2e%2e/index.html",
        b"/assets/%2e%2e%2findex.html",
        b"/%2e%2e%2fclient-secret%2fsecret.txt",
        b"/../client-secret/secret.txt",
        b"/assets/../../client-secret/secret.txt",
        b"/assets/..%2f..%2fclient-secret%2fsecret.txt",
        b"/%c0%ae%c0%ae/client-secret/secret.txt",
        b"/%c0%ae%c0%ae%c0%afclient-secret%c0%afsecret.txt",
        b"/%252e%252e/client-secret/secret.txt",
        b"/%252e%252e%252fclient-secret%252fsecret.txt",
        b"/assets%5c..%5c..%5cclient-secret%5csecret.txt",
        b"/assets\\..\\..\\client-secret\\secret.txt",
        b"/robots.txt%00.png",
        b"/robots.txt%00",
        b"http://127.0.0.1/../client-secret/secret.txt",
        b"http://127.0.0.1/%2e%2e/client-secret/secret.txt",
        b"/escape.txt",
        b"/relative-escape.txt",
        b"/linkdir/secret.txt",
        b"/inside-link.js",
        b"/pipe.js",
        b"/client-secret/secret.txt",
    ],
)
@pytest.mark.parametrize("method", ["GET", "HEAD"])
async def test_falls_through(site: Site, target: bytes, method: str) -> None:
    response = await fetch(site, target, {"Accept-Encoding": "br, gzip"}, method)
    assert response.status in (400, 404)
    assert SECRET not in response.body
    if response.status == 404:
        assert response.header("X-Fallthrough") == "yes"
        assert response.body == (b"" if method == "HEAD" else b"fallthrough")


@pytest.mark.parametrize(
    ("target", "path"),
    [
        (b"/sub/index.html", "sub/index.html"),
        (b"/robots%2etxt", "robots.txt"),
        (b"/assets%2fapp-BjYNXa3D.js", HASHED_JS),
        (b"//robots.txt", "robots.txt"),
        (b"http://127.0.0.1/robots.txt", "robots.txt"),
        (b"/robots.txt?download=1", "robots.txt"),
    ],
)
async def test_served_spellings(site: Site, target: bytes, path: str) -> None:
    response = await fetch(site, target)
    assert response.status == 200
    assert response.body == (site.client / path).read_bytes()


async def test_repeated_list_fields_join(site: Site) -> None:
    first = await fetch(site, "/" + HASHED_JS, {"Accept-Encoding": "br"})
    etag = first.header("ETag")
    assert etag is not None
    encodings = [("Accept-Encoding", "gzip;q=0.5"), ("Accept-Encoding", "br")]
    joined = await fetch(site, "/" + HASHED_JS, encodings)
    assert joined.status == 200
    assert joined.header("Content-Encoding") == "br"
    tags = [("If-None-Match", '"stale"'), ("If-None-Match", etag)]
    not_modified = await fetch(
        site, "/" + HASHED_JS, [*tags, ("Accept-Encoding", "br")]
    )
    assert not_modified.status == 304


async def test_repeated_single_fields_dropped(site: Site) -> None:
    body = site.variants["identity"]
    ranges = [("Range", "bytes=0-9"), ("Range", "bytes=20-29")]
    response = await fetch(site, "/" + HASHED_JS, ranges)
    assert response.status == 200
    assert response.body == body
    first = await fetch(site, "/" + HASHED_JS)
    etag = first.header("ETag")
    assert etag is not None
    guarded = [("Range", "bytes=0-9"), ("If-Range", etag), ("If-Range", etag)]
    response = await fetch(site, "/" + HASHED_JS, guarded)
    assert response.status == 200
    assert response.body == body
