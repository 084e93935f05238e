"""The proxy's rewriting rules alone, without a server."""

from __future__ import annotations

import pytest

from enddel.http.proxy_rewrite import (
    ClientInfo,
    ProxyPathError,
    UpstreamBase,
    request_headers,
    response_headers,
    upstream_target,
)

API = UpstreamBase.parse("https://api.example/api/")
ORIGIN = UpstreamBase.parse("http://127.0.0.1:8080")
CLIENT = ClientInfo(address="192.0.2.1", scheme="https", host=b"shop.example")


@pytest.mark.parametrize(
    ("base", "raw_path", "query", "target"),
    [
        (API, b"/api", b"", b"/api"),
        (API, b"/api/", b"", b"/api/"),
        (API, b"/api/x%2Fy", b"a=%20&b", b"/api/x%2Fy?a=%20&b"),
        (ORIGIN, b"/api", b"", b"/"),
        (ORIGIN, b"/api/items", b"", b"/items"),
    ],
)
def test_target_maps_below_base(
    base: UpstreamBase, raw_path: bytes, query: bytes, target: bytes
) -> None:
    assert upstream_target(base, raw_path, query) == target


@pytest.mark.parametrize(
    "raw_path", [b"/apix", b"/%61pi/x", b"/api/..", b"/api/a/%2E/b", b"/api/%2e%2e"]
)
def test_target_rejects_path(raw_path: bytes) -> None:
    with pytest.raises(ProxyPathError):
        upstream_target(API, raw_path, b"")


def test_request_drops_hop_by_hop() -> None:
    sent = [
        (b"Host", b"shop.example"),
        (b"Connection", b"close, X-Private"),
        (b"connection", b"Upgrade"),
        (b"X-Private", b"1"),
        (b"Upgrade", b"websocket"),
        (b"Expect", b"100-continue"),
        (b"Accept", b"application/json"),
    ]
    names = {name.lower() for name, _ in request_headers(sent, CLIENT)}

    for dropped in (b"host", b"connection", b"x-private", b"upgrade", b"expect"):
        assert dropped not in names
    assert b"accept" in names


def test_request_appends_forwarded_for() -> None:
    sent = [(b"X-Forwarded-For", b"198.51.100.1"), (b"x-forwarded-for", b"10.0.0.1")]
    result = dict(request_headers(sent, CLIENT))

    assert result[b"X-Forwarded-For"] == b"198.51.100.1, 10.0.0.1, 192.0.2.1"
    assert result[b"X-Forwarded-Proto"] == b"https"
    assert result[b"X-Forwarded-Host"] == b"shop.example"


def test_request_without_peer_or_host() -> None:
    unknown = ClientInfo(address=None, scheme="http", host=None)
    names = {name for name, _ in request_headers([], unknown)}

    assert names == {b"X-Forwarded-Proto"}


def test_response_keeps_set_cookie_apart() -> None:
    sent = [(b"Set-Cookie", b"a=1"), (b"Set-Cookie", b"b=2"), (b"X-Cache", b"HIT")]

    assert response_headers(sent, API) == [
        (b"Set-Cookie", b"a=1"),
        (b"Set-Cookie", b"b=2"),
    ]


def test_response_drops_length_beside_chunked() -> None:
    sent = [(b"Content-Length", b"5"), (b"Transfer-Encoding", b"chunked")]

    assert response_headers(sent, API) == []


@pytest.mark.parametrize(
    ("location", "rewritten"),
    [
        (b"https://api.example/api/login?x=1", b"/api/login?x=1"),
        (b"https://api.example/api", b"/api"),
        (b"https://api.example/apiary", b"https://api.example/apiary"),
        (b"https://other.example/api/x", b"https://other.example/api/x"),
        (b"/relative", b"/relative"),
    ],
)
def test_response_rewrites_location(location: bytes, rewritten: bytes) -> None:
    result = response_headers([(b"Location", location)], API)

    assert result == [(b"Location", rewritten)]
