"""Accept-Encoding negotiation (RFC 9110 §12.5.3), without a server."""

from __future__ import annotations

import pytest

from enddel.http.negotiation import choose_encoding, parse_accept_encoding

#: Typical precompressed asset: brotli smaller than gzip smaller than identity.
SIZES = {"br": 100, "gzip": 120, "identity": 400}


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        # No field: identity, although any coding would be allowed.
        (None, "identity"),
        # Empty field: only identity is acceptable.
        ("", "identity"),
        (" , ,", "identity"),
        ("gzip, deflate, br, zstd", "br"),
        ("gzip", "gzip"),
        ("br", "br"),
        ("identity", "identity"),
        ("deflate", "identity"),
        # Case and whitespace do not matter.
        ("GZIP", "gzip"),
        ("  Br  ;  Q=1  ", "br"),
        ("gzip;q=0.5,br;q=0.1", "br"),
        ("gzip ; q=0.5 , br ; q=0.5", "br"),
        # q=0 rejects a coding, in every spelling of zero.
        ("br;q=0, gzip", "gzip"),
        ("br;q=0.0, gzip", "gzip"),
        ("br;q=0.000, gzip", "gzip"),
        ("br;q=0, gzip;q=0", "identity"),
        # `*` covers codings that are not listed.
        ("*", "br"),
        ("br;q=0, *", "gzip"),
        ("*;q=0.5, gzip;q=1", "br"),
        # The legacy alias of gzip.
        ("x-gzip", "gzip"),
        # A repeated coding keeps its lowest q-value.
        ("br, br;q=0, gzip", "gzip"),
        ("br;q=0, br", "identity"),
        # Malformed elements are skipped, and a field with nothing valid is
        # treated as absent.
        ("br;q=2, gzip", "gzip"),
        ("br;q=abc, gzip", "gzip"),
        ("br;q=0.1234, gzip", "gzip"),
        ("br;level=1, gzip", "gzip"),
        ("br;q=0.5;x=1, gzip", "gzip"),
        ("b r, gzip", "gzip"),
        ("br;q=", "identity"),
        ("br;;;", "identity"),
        ('"br"', "identity"),
        # Identity can be rejected, explicitly or by `*;q=0`.
        ("identity;q=0, gzip", "gzip"),
        ("*;q=0, gzip", "gzip"),
        ("*;q=0, identity", "identity"),
        ("*;q=0, identity;q=0.5", "identity"),
        ("identity;q=0", None),
        ("*;q=0", None),
        ("identity;q=0, br;q=0, gzip;q=0", None),
        ("identity;q=0, deflate", None),
    ],
)
def test_choose_encoding_table(header: str | None, expected: str | None) -> None:
    assert choose_encoding(header, SIZES) == expected


@pytest.mark.parametrize(
    ("header", "sizes", "expected"),
    [
        # The smaller acceptable body wins, whatever the q-values prefer.
        ("gzip;q=1, br;q=0.1", {"br": 100, "gzip": 120, "identity": 400}, "br"),
        ("gzip, br", {"br": 130, "gzip": 120, "identity": 400}, "gzip"),
        # Compression that does not pay: identity is the smallest.
        ("gzip, br", {"br": 30, "gzip": 40, "identity": 20}, "identity"),
        # Equal sizes: higher q first.
        ("gzip;q=1, br;q=0.5", {"br": 10, "gzip": 10, "identity": 10}, "gzip"),
        ("gzip;q=0.5, identity;q=0.9", {"gzip": 10, "identity": 10}, "identity"),
        # Equal sizes and q: br, then gzip, then other codings, then identity.
        ("gzip, br", {"br": 10, "gzip": 10, "identity": 10}, "br"),
        ("gzip, zstd", {"zstd": 10, "gzip": 10, "identity": 10}, "gzip"),
        ("zstd", {"zstd": 10, "identity": 10}, "zstd"),
        # Keys keep the caller's spelling.
        ("br", {"BR": 10, "identity": 50}, "BR"),
        # Only variants available and no field: the smallest.
        (None, {"br": 10, "gzip": 12}, "br"),
        ("", {"br": 10, "gzip": 12}, None),
        ("deflate", {"br": 10, "gzip": 12}, None),
        ("gzip", {}, None),
    ],
)
def test_choose_encoding_sizes(
    header: str | None, sizes: dict[str, int], expected: str | None
) -> None:
    assert choose_encoding(header, sizes) == expected


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("", {}),
        ("gzip, br;q=0.8", {"gzip": 1.0, "br": 0.8}),
        ("GZip;Q=0.25", {"gzip": 0.25}),
        ("x-gzip;q=1.000", {"gzip": 1.0}),
        ("br;q=1.001, gzip", {"gzip": 1.0}),
        ("gzip;q=0.5, gzip;q=0.8", {"gzip": 0.5}),
        ("*;q=0", {"*": 0.0}),
        ("br;q=2", None),
        ("@@@", None),
    ],
)
def test_parse_accept_encoding(header: str, expected: dict[str, float] | None) -> None:
    assert parse_accept_encoding(header) == expected
