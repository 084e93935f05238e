"""Cache policy rules, as pure functions of their arguments."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from enddel.cache.policy import (
    Freshness,
    age_seconds,
    bypasses_cache,
    cache_key,
    freshness,
    is_storable,
    key_prefix,
)


@dataclass
class Timed:
    stored_at: float
    ttl: float
    stale_ttl: float


def test_key_has_bundle_version_and_url() -> None:
    assert cache_key("v1", "/a?b=1") == b"v1\0/a?b=1"
    assert cache_key("v1", "/a") != cache_key("v2", "/a")
    assert cache_key("v1", "/products/x").startswith(key_prefix("v1", "/products/"))


@pytest.mark.parametrize(
    ("cookies", "authorization", "ignored", "expected"),
    [
        ([], False, frozenset(), False),
        ([], True, frozenset(), True),
        (["session=abc"], False, frozenset(), True),
        (["_ga=1; _gid=2"], False, frozenset({"_ga", "_gid"}), False),
        (["_ga=1; session=2"], False, frozenset({"_ga"}), True),
        (["_ga=1", "session=2"], False, frozenset({"_ga"}), True),
        (["\x00\x01garbage"], False, frozenset(), True),
        ([""], False, frozenset(), False),
    ],
)
def test_bypass(
    cookies: list[str], authorization: bool, ignored: frozenset[str], expected: bool
) -> None:
    assert bypasses_cache(cookies, authorization, ignored) is expected


@pytest.mark.parametrize(
    ("status", "headers", "requested", "expected"),
    [
        (200, [], True, True),
        (404, [], True, True),
        (200, [], False, False),
        (500, [], True, False),
        (503, [], True, False),
        (200, [("Set-Cookie", "a=b")], True, False),
        (200, [("set-cookie", "a=b")], True, False),
    ],
)
def test_storable(
    status: int, headers: list[tuple[str, str]], requested: bool, expected: bool
) -> None:
    assert is_storable(status, headers, requested) is expected


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (100.0, Freshness.FRESH),
        (109.9, Freshness.FRESH),
        (110.0, Freshness.STALE),
        (129.9, Freshness.STALE),
        (130.0, Freshness.EXPIRED),
    ],
)
def test_freshness(now: float, expected: Freshness) -> None:
    assert freshness(Timed(100.0, 10.0, 20.0), now) is expected


def test_age_is_whole_seconds_never_negative() -> None:
    assert age_seconds(Timed(100.0, 1, 1), 102.9) == 2
    assert age_seconds(Timed(100.0, 1, 1), 99.0) == 0
