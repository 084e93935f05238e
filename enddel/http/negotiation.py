"""Content-coding negotiation: pick the body to send from ``Accept-Encoding``.

This module is free of I/O and of trio so that the rules of RFC 9110 §12.5.3
can be tested alone. Static files and SSR responses share it.

Design note. Browsers send ``Accept-Encoding: gzip, deflate, br, zstd`` with no
q-values, so the q-values rarely rank anything. What matters to the client is
the number of bytes on the wire, so every acceptable coding (q > 0) competes on
size and the smallest body wins. The q-value only breaks ties between bodies of
equal size, and the fixed :data:`CODING_PREFERENCE` order breaks the remaining
ties. A tiny file whose compressed variants are larger than the original is
therefore sent as identity.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

__all__ = ["CODING_PREFERENCE", "choose_encoding", "parse_accept_encoding"]

#: Tie-break order for bodies of equal size and q-value, most preferred first.
#: Codings not in the table rank after gzip and before identity, by name.
CODING_PREFERENCE: tuple[str, ...] = ("br", "gzip", "identity")

#: ``token`` of RFC 9110 §5.6.2: the characters a content-coding may contain.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")

#: ``qvalue`` of RFC 9110 §12.4.2: 0 to 1 with at most three decimals.
_QVALUE = re.compile(r"0(\.[0-9]{0,3})?|1(\.0{0,3})?")

#: Legacy names that RFC 9110 §8.4.1 asks recipients to read as the standard
#: coding.
_ALIASES = {"x-gzip": "gzip", "x-compress": "compress"}


def parse_accept_encoding(header: str) -> dict[str, float] | None:
    """Parse an ``Accept-Encoding`` value into lowercase coding to q-value.

    A malformed element (a bad token, a q-value outside the grammar, a
    parameter other than ``q``) is skipped, as if it were not in the list. When
    a coding appears twice, the lower q-value counts, so a refusal is never
    overridden by a later entry. Returns ``None`` when the value is not empty
    but no element in it parses, so that the caller can treat the field as
    absent. An empty value returns an empty dict.
    """
    weights: dict[str, float] = {}
    elements = [element.strip() for element in header.split(",")]
    elements = [element for element in elements if element]
    for element in elements:
        parsed = _parse_element(element)
        if parsed is None:
            continue
        coding, q = parsed
        weights[coding] = min(q, weights.get(coding, q))

    if elements and not weights:
        return None
    return weights


def _parse_element(element: str) -> tuple[str, float] | None:
    coding, *parameters = (part.strip() for part in element.split(";"))
    if not _TOKEN.fullmatch(coding) or len(parameters) > 1:
        return None
    coding = coding.lower()
    coding = _ALIASES.get(coding, coding)
    if not parameters:
        return coding, 1.0

    name, equals, value = parameters[0].partition("=")
    if name.strip().lower() != "q" or not equals:
        return None
    value = value.strip()
    if not _QVALUE.fullmatch(value):
        return None
    return coding, float(value)


def choose_encoding(
    accept_encoding: str | None, sizes: Mapping[str, int]
) -> str | None:
    """Return the content coding to send, or ``None`` when none is acceptable.

    ``sizes`` maps each available coding (``"br"``, ``"gzip"``, ``"identity"``,
    any case) to its body size in bytes. The result is one of its keys as given.
    Among the acceptable codings the smallest body wins. Ties go to the higher
    q-value, then to :data:`CODING_PREFERENCE` order (br, gzip, identity).

    The rules of RFC 9110 §12.5.3:

    - No field, or a field in which nothing parses: the client accepts any
      coding, but identity is sent when available, as nginx and Caddy do,
      because clients without the field (curl, scripts) often cannot decode.
    - An empty field: only identity is acceptable.
    - A listed coding is acceptable unless its q-value is 0, and ``*`` covers
      every coding not listed. Identity is acceptable unless ``identity;q=0``,
      or ``*;q=0`` with no entry for identity, rejects it.

    ``None`` means that the client rejected identity (``identity;q=0``, or
    ``*;q=0`` without identity) and accepts none of the available codings. The
    caller should then send 406 (Not Acceptable, RFC 9110 §15.5.7): §12.5.3
    allows falling back to an unencoded body only "unless the identity coding
    is indicated as unacceptable", which is exactly this case.
    """
    if not sizes:
        return None
    weights = (
        None if accept_encoding is None else parse_accept_encoding(accept_encoding)
    )
    if weights is None:
        return _choose_without_field(sizes)

    acceptable = {
        coding: q for coding in sizes if (q := _weight_of(coding.lower(), weights)) > 0
    }
    if not acceptable:
        return None
    return min(acceptable, key=lambda coding: _rank(coding, sizes, acceptable))


def _choose_without_field(sizes: Mapping[str, int]) -> str:
    for coding in sizes:
        if coding.lower() == "identity":
            return coding
    return min(sizes, key=lambda coding: _rank(coding, sizes, {}))


def _weight_of(coding: str, weights: Mapping[str, float]) -> float:
    if coding in weights:
        return weights[coding]
    if "*" in weights:
        return weights["*"]
    # Identity is acceptable by default; every other coding must be listed.
    return 1.0 if coding == "identity" else 0.0


def _rank(
    coding: str, sizes: Mapping[str, int], weights: Mapping[str, float]
) -> tuple[int, float, int, str]:
    name = coding.lower()
    if name in CODING_PREFERENCE:
        order = CODING_PREFERENCE.index(name)
    else:
        # Codings outside the table rank after gzip and before identity.
        order = CODING_PREFERENCE.index("gzip")
    # Doubling keeps a free slot after each listed coding for unknown ones.
    order = 2 * order + (0 if name in CODING_PREFERENCE else 1)
    return (sizes[coding], -weights.get(coding, 1.0), order, name)
