"""Conditional requests, byte ranges and static path rules, without a server."""

from __future__ import annotations

import io
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
from quart import request
from quart_trio import QuartTrio

from enddel.config import ConfigError
from enddel.http.conditional import (
    Validators,
    evaluate_preconditions,
    if_match_matches,
    if_none_match_matches,
    if_range_matches,
    make_content_etag,
    make_etag,
)
from enddel.http.ranges import (
    MAX_RANGES,
    ByteRange,
    MultipartLayout,
    resolve_ranges,
    unsatisfied_content_range,
)
from enddel.http.static import CHUNK_BYTES, FileChangedError, StaticFiles, _stream
from enddel.http.static_paths import (
    IMMUTABLE,
    REVALIDATE,
    cache_control_for,
    content_type_for,
    is_content_hashed,
    safe_segments,
)

ETAG = '"abc-12-br"'
MODIFIED = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
MODIFIED_TEXT = "Tue, 02 Jan 2024 03:04:05 GMT"
EARLIER_TEXT = "Tue, 02 Jan 2024 03:04:04 GMT"
LATER_TEXT = "Tue, 02 Jan 2024 03:04:06 GMT"
VALIDATORS = Validators(ETAG, MODIFIED)


def test_make_etag_differs_per_input() -> None:
    base = make_etag(1_700_000_000_000_000_001, 1234, "br")
    assert base.startswith('"')
    assert base.endswith('"')
    assert make_etag(1_700_000_000_000_000_001, 1234, "BR") == base
    assert make_etag(1_700_000_000_000_000_002, 1234, "br") != base
    assert make_etag(1_700_000_000_000_000_001, 1235, "br") != base
    assert make_etag(1_700_000_000_000_000_001, 1234, "gzip") != base


def test_make_content_etag_differs_per_input() -> None:
    base = make_content_etag(b"<p>page</p>", "br")
    assert make_content_etag(b"<p>page</p>", "br") == base
    assert make_content_etag(b"<p>page!</p>", "br") != base
    assert make_content_etag(b"<p>page</p>", "gzip") != base
    assert make_content_etag(b"<p>page</p>").endswith('-identity"')


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, False),
        ("", False),
        ("*", True),
        (" * ", True),
        (ETAG, True),
        ("W/" + ETAG, True),
        ('"other"', False),
        ('"other", ' + ETAG, True),
        ('"other",W/' + ETAG + ' , "x"', True),
        ('W/"other"', False),
        ('"abc-12-gzip"', False),
        ("abc-12-br", True),  # unquoted, read leniently
    ],
)
def test_if_none_match(header: str | None, expected: bool) -> None:
    assert if_none_match_matches(header, ETAG) is expected


def test_if_none_match_weak_current_tag() -> None:
    assert if_none_match_matches('"x"', 'W/"x"') is True


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("*", True),
        (ETAG, True),
        ('"a", ' + ETAG, True),
        ("W/" + ETAG, False),
        ('"a"', False),
    ],
)
def test_if_match_is_strong(header: str, expected: bool) -> None:
    assert if_match_matches(header, ETAG) is expected


@pytest.mark.parametrize(
    ("method", "headers", "expected"),
    [
        ("GET", {}, None),
        # If-None-Match: 304 for GET and HEAD, 412 for other methods.
        ("GET", {"If-None-Match": ETAG}, 304),
        ("HEAD", {"If-None-Match": "W/" + ETAG}, 304),
        ("GET", {"If-None-Match": "*"}, 304),
        ("POST", {"If-None-Match": ETAG}, 412),
        ("GET", {"If-None-Match": '"other"'}, None),
        # If-Modified-Since: whole seconds, not later than Last-Modified.
        ("GET", {"If-Modified-Since": MODIFIED_TEXT}, 304),
        ("GET", {"If-Modified-Since": LATER_TEXT}, 304),
        ("GET", {"If-Modified-Since": EARLIER_TEXT}, None),
        ("GET", {"If-Modified-Since": "yesterday"}, None),
        ("POST", {"If-Modified-Since": MODIFIED_TEXT}, None),
        # If-None-Match takes precedence over If-Modified-Since.
        ("GET", {"If-None-Match": '"other"', "If-Modified-Since": LATER_TEXT}, None),
        ("GET", {"If-None-Match": ETAG, "If-Modified-Since": EARLIER_TEXT}, 304),
        # If-Match and If-Unmodified-Since come first and give 412.
        ("GET", {"If-Match": '"other"'}, 412),
        ("GET", {"If-Match": "W/" + ETAG}, 412),
        ("GET", {"If-Match": ETAG}, None),
        ("GET", {"If-Match": ETAG, "If-None-Match": ETAG}, 304),
        ("GET", {"If-Unmodified-Since": EARLIER_TEXT}, 412),
        ("GET", {"If-Unmodified-Since": MODIFIED_TEXT}, None),
        ("GET", {"If-Unmodified-Since": "not a date"}, None),
        ("GET", {"If-Match": ETAG, "If-Unmodified-Since": EARLIER_TEXT}, None),
    ],
)
def test_evaluate_preconditions(
    method: str, headers: dict[str, str], expected: int | None
) -> None:
    assert evaluate_preconditions(method, headers, VALIDATORS) == expected


def test_if_modified_since_without_last_modified() -> None:
    validators = Validators(ETAG, None)
    headers = {"If-Modified-Since": LATER_TEXT}
    assert evaluate_preconditions("GET", headers, validators) is None


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, True),
        (ETAG, True),
        ("W/" + ETAG, False),
        ('"other"', False),
        (MODIFIED_TEXT, True),
        (LATER_TEXT, False),
        (EARLIER_TEXT, False),
        ("garbage", False),
        ("", False),
    ],
)
def test_if_range(header: str | None, expected: bool) -> None:
    assert if_range_matches(header, VALIDATORS) is expected


@pytest.mark.parametrize(
    ("header", "length", "expected"),
    [
        (None, 1000, None),
        ("bytes=0-499", 1000, [(0, 500)]),
        ("bytes=0-0", 1000, [(0, 1)]),
        ("bytes=999-999", 1000, [(999, 1000)]),
        ("bytes=500-", 1000, [(500, 1000)]),
        ("bytes=-500", 1000, [(500, 1000)]),
        ("bytes=-5000", 1000, [(0, 1000)]),
        ("bytes=0-99999", 1000, [(0, 1000)]),
        ("Bytes = 1-2", 1000, [(1, 3)]),
        # Several ranges: sorted, overlapping and close ones coalesced.
        ("bytes=0-9,500-509", 1000, [(0, 10), (500, 510)]),
        ("bytes=500-509,0-9", 1000, [(0, 10), (500, 510)]),
        ("bytes=0-9,5-20", 1000, [(0, 21)]),
        ("bytes=0-9,50-59", 1000, [(0, 60)]),
        ("bytes=0-9,,500-509", 1000, [(0, 10), (500, 510)]),
        ("bytes=0-0,-1", 1000, [(0, 1), (999, 1000)]),
        # Unsatisfiable ranges are dropped; none left is 416.
        ("bytes=0-9,5000-", 1000, [(0, 10)]),
        ("bytes=1000-", 1000, []),
        ("bytes=1000-2000", 1000, []),
        ("bytes=-0", 1000, []),
        ("bytes=0-", 0, []),
        # Malformed or foreign: ignored, the whole body is sent.
        ("bytes=-5", 0, None),
        ("bytes=5-1", 1000, None),
        ("bytes=abc", 1000, None),
        ("bytes=-", 1000, None),
        ("bytes=1 -2", 1000, None),
        ("bytes=0x10-", 1000, None),
        ("bytes=+1-2", 1000, None),
        ("bytes=", 1000, None),
        ("bytes 0-1", 1000, None),
        ("items=0-1", 1000, None),
        ("", 1000, None),
    ],
)
def test_resolve_ranges(
    header: str | None, length: int, expected: list[tuple[int, int]] | None
) -> None:
    resolved = resolve_ranges(header, length)
    if expected is None:
        assert resolved is None
    else:
        assert resolved == tuple(ByteRange(a, b) for a, b in expected)


def test_resolve_ranges_too_many() -> None:
    far_apart = ",".join(f"{i * 1000}-{i * 1000}" for i in range(MAX_RANGES + 1))
    assert resolve_ranges("bytes=" + far_apart, 10**9) is None
    limit = ",".join(f"{i * 1000}-{i * 1000}" for i in range(MAX_RANGES))
    resolved = resolve_ranges("bytes=" + limit, 10**9)
    assert resolved is not None
    assert len(resolved) == MAX_RANGES


def test_content_range_values() -> None:
    assert ByteRange(0, 500).content_range(1000) == "bytes 0-499/1000"
    assert ByteRange(999, 1000).content_range(1000) == "bytes 999-999/1000"
    assert unsatisfied_content_range(1000) == "bytes */1000"


def test_multipart_layout_length() -> None:
    ranges = (ByteRange(0, 3), ByteRange(10, 12))
    layout = MultipartLayout.build(ranges, 20, "text/plain", "B0UND")
    data = b"abcdefghijklmnopqrst"
    body = (
        b"".join(head + data[r.start : r.stop] + b"\r\n" for head, r in layout.parts)
        + layout.closing
    )
    assert layout.content_length == len(body)
    assert layout.content_type == "multipart/byteranges; boundary=B0UND"
    assert body == (
        b"--B0UND\r\nContent-Type: text/plain\r\nContent-Range: bytes 0-2/20\r\n\r\n"
        b"abc\r\n"
        b"--B0UND\r\nContent-Type: text/plain\r\nContent-Range: bytes 10-11/20\r\n\r\n"
        b"kl\r\n"
        b"--B0UND--\r\n"
    )


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/app.js", ["app.js"]),
        ("/assets/index-BjYNXa3D.js", ["assets", "index-BjYNXa3D.js"]),
        ("/sub/index.html", ["sub", "index.html"]),
        ("/", None),
        ("", None),
        ("/assets/", None),
        ("/a//b", None),
        ("/../secret", None),
        ("/assets/../index.html", None),
        ("/./app.js", None),
        ("/.env", None),
        ("/assets/.hidden", None),
        ("/.git/config", None),
        ("/assets\\..\\secret", None),
        ("/app.js\x00.png", None),
        ("/app\x1f.js", None),
        ("/\ufffd\ufffd/secret", None),
        ("/%2e%2e/secret", None),
        ("/%252e", None),
        ("http://host/../x", None),
        ("app.js", None),
    ],
)
def test_safe_segments(path: str, expected: list[str] | None) -> None:
    assert safe_segments(path) == expected


@pytest.mark.parametrize(
    ("name", "hashed"),
    [
        ("index-BjYNXa3D.js", True),
        ("index-BjYNXa3D.js.br", False),  # variants are judged by the original
        ("vendor-B-7xZ_3d.css", True),
        ("main-3f2a9c1b.js", True),
        ("chunk-abcdefghijklmnopqrstu1.js", True),
        ("react-dom_client-DqE3nA1b.js", True),
        ("logo.svg", False),
        ("my-component.js", False),
        ("fonts-regular.css", False),
        ("index-BjYNXa3.js", False),  # 7 characters
        ("index-BjYNXa3D", False),  # no extension
        ("-BjYNXa3D.js", False),  # no name
        ("index.BjYNXa3D.js", False),  # dot-separated is not Vite style
    ],
)
def test_is_content_hashed(name: str, hashed: bool) -> None:
    assert is_content_hashed(name) is hashed
    assert cache_control_for(name) == (IMMUTABLE if hashed else REVALIDATE)


@pytest.mark.parametrize(
    ("name", "content_type"),
    [
        ("app.js", "text/javascript; charset=utf-8"),
        ("app.MJS", "text/javascript; charset=utf-8"),
        ("style.css", "text/css; charset=utf-8"),
        ("page.html", "text/html; charset=utf-8"),
        ("data.json", "application/json; charset=utf-8"),
        ("app.js.map", "application/json; charset=utf-8"),
        ("site.webmanifest", "application/manifest+json; charset=utf-8"),
        ("logo.svg", "image/svg+xml; charset=utf-8"),
        ("robots.txt", "text/plain; charset=utf-8"),
        ("logo.png", "image/png"),
        ("font.woff2", "font/woff2"),
        ("module.wasm", "application/wasm"),
        ("archive.tar.gz", "application/gzip"),
        ("app.js.br", "application/octet-stream"),
        ("README", "application/octet-stream"),
        ("file.unknownext", "application/octet-stream"),
    ],
)
def test_content_type_for(name: str, content_type: str) -> None:
    assert content_type_for(name) == content_type


def test_static_files_rejects_missing_root(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-build"
    with pytest.raises(ConfigError, match=r"ENDDEL_CLIENT_DIR=.*no-such-build"):
        StaticFiles(missing)


def test_static_files_rejects_file_root(tmp_path: Path) -> None:
    a_file = tmp_path / "index.html"
    a_file.write_text("<html></html>")
    with pytest.raises(ConfigError, match="not a folder"):
        StaticFiles(a_file)


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS"])
async def test_static_files_ignores_writes(tmp_path: Path, method: str) -> None:
    (tmp_path / "app.js").write_text("x")
    static = StaticFiles(tmp_path)
    app = QuartTrio(__name__)
    async with app.test_request_context("/app.js", method=method):
        assert await static.respond(request) is None


async def test_stream_reads_ranges_in_chunks(tmp_path: Path) -> None:
    data = os.urandom(2 * CHUNK_BYTES + 7)
    (tmp_path / "big.bin").write_bytes(data)
    file = io.FileIO(tmp_path / "big.bin", "rb")
    pieces: list[bytes | ByteRange] = [b"head", ByteRange(3, len(data)), b"tail"]
    chunks = [chunk async for chunk in _stream(file, pieces, "big.bin")]
    assert chunks[0] == b"head"
    assert chunks[-1] == b"tail"
    assert max(len(chunk) for chunk in chunks) == CHUNK_BYTES
    assert b"".join(chunks[1:-1]) == data[3:]
    assert file.closed


async def test_stream_closes_file_when_abandoned(tmp_path: Path) -> None:
    (tmp_path / "big.bin").write_bytes(b"x" * (3 * CHUNK_BYTES))
    file = io.FileIO(tmp_path / "big.bin", "rb")
    stream = _stream(file, [ByteRange(0, 3 * CHUNK_BYTES)], "big.bin")
    assert len(await anext(stream)) == CHUNK_BYTES
    await stream.aclose()
    assert file.closed


async def test_stream_fails_on_shrunk_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "shrunk.txt").write_bytes(b"0123456789")
    file = io.FileIO(tmp_path / "shrunk.txt", "rb")
    stream = _stream(file, [ByteRange(0, 20)], "shrunk.txt")
    assert await anext(stream) == b"0123456789"
    with pytest.raises(FileChangedError, match=r"shrunk\.txt"):
        await anext(stream)
    assert file.closed
    assert "shrank while being sent" in caplog.text
    assert "offset 10 of 20" in caplog.text
