"""Compare wire formats for a rendered page crossing the worker pipe.

The worker sends the page to the pool as either (a) one JSON document with the
HTML inside it, (b) a pickle of the same dictionary, or (c) enddel's frame:
a small JSON header beside the raw UTF-8 body. Each candidate is timed from
the str that mini-racer hands the worker to the UTF-8 bytes the server sends,
on the sizes SSR pages have, and reported as a ratio to the frame format,
measured in the same run. Every call gets a new str object, because CPython
caches a str's UTF-8 form and a reused string would hide the encoding cost.
"""

from __future__ import annotations

import argparse
import functools
import json
import pickle
import timeit
from collections.abc import Callable

from workers.protocol import FrameReader, Kind, encode_frame

SIZES = (4_000, 44_000, 400_000)


def page(size: int) -> str:
    # Non-ASCII text, as shop pages have, makes UTF-8 encoding cost what it does.
    unit = '<li class="item"><a href="/p/caf\u00e9">Caf\u00e9 \u201cn\u00b01\u201d</a>'
    unit += "</li>\n"
    return (unit * (size // len(unit) + 1))[:size]


def via_json(html: str) -> bytes:
    data = json.dumps({"status": 200, "head": "", "html": html}).encode()
    return str(json.loads(data)["html"]).encode()


def via_pickle(html: str) -> bytes:
    data = pickle.dumps({"status": 200, "head": "", "html": html}, protocol=5)
    return str(pickle.loads(data)["html"]).encode()


def via_frame(html: str) -> bytes:
    data = encode_frame(Kind.RESULT, 1, {"status": 200, "head": ""}, html.encode())
    (frame,) = FrameReader().feed(data)
    return frame.body


def _drain(convert: Callable[[str], bytes], htmls: list[str]) -> None:
    convert(htmls.pop())


CANDIDATES = {"frame": via_frame, "json": via_json, "pickle": via_pickle}


def measure(short: bool) -> list[dict[str, float | int | str]]:
    rows: list[dict[str, float | int | str]] = []
    number = 100 if short else 1000
    for size in SIZES:
        base = page(size)
        timings = {}
        for name, convert in CANDIDATES.items():
            best = float("inf")
            for _ in range(5):
                # New str objects per call: "".join of two parts always copies.
                htmls = ["".join((base, str(n))) for n in range(number)]
                run = functools.partial(_drain, convert, htmls)
                best = min(best, timeit.timeit(run, number=number))
            timings[name] = best / number
        for name, seconds in timings.items():
            rows.append({
                "size": size, "format": name, "microseconds": seconds * 1e6,
                "ratio_to_frame": seconds / timings["frame"],
            })  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--short", action="store_true", help="fewer iterations")
    args = parser.parse_args()
    for row in measure(args.short):
        print(
            f"{row['size']:>8} B  {row['format']:<7} {row['microseconds']:9.1f} us"
            f"  {row['ratio_to_frame']:5.2f}x frame"
        )


if __name__ == "__main__":
    main()
