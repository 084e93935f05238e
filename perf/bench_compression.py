"""Choose the brotli quality for rendered pages: time and size per quality level.

Renders the demo's pages with the real bundle in one V8 engine (the same one
a render worker uses), then compresses each page at every brotli quality and
at the gzip levels, and prints milliseconds per page and the size relative to
quality 11. ``enddel.compression.BROTLI_QUALITY`` is chosen from this table:
the compression runs once per render, on the render's critical path.
"""

from __future__ import annotations

import argparse
import gzip
import statistics
import time
from pathlib import Path

import brotli

from enddel.template import PageTemplate
from workers.engine import Engine

REPO = Path(__file__).resolve().parent.parent
# Pages that render from the bundled data alone: product pages need the API.
PAGES = ("/", "/products?page=2", "/products?page=all", "/about")


def render_pages() -> list[bytes]:
    build = REPO / "demo" / "dist"
    engine = Engine(
        (build / "server" / "bundle.js").read_text(),
        "bundle.js",
        origin="http://localhost",
    )
    template = PageTemplate(
        (build / "client" / "index.html").read_bytes(), "index.html"
    )
    try:
        outcomes = [engine.render(url, 5.0) for url in PAGES]
    finally:
        engine.close()
    return [
        template.page(o.html.encode(), str(o.meta.get("head", "")).encode())
        for o in outcomes
    ]


def timed(compress: object, page: bytes, repeat: int) -> tuple[float, int]:
    assert callable(compress)
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        size = len(compress(page))
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1000, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="fewer repetitions")
    args = parser.parse_args()
    repeat = 3 if args.short else 15
    pages = render_pages()
    sizes = ", ".join(f"{len(p)} B" for p in pages)
    print(f"pages: {sizes}")

    candidates: dict[str, object] = {
        f"br q{q}": (
            lambda p, q=q: brotli.compress(p, mode=brotli.MODE_TEXT, quality=q)
        )
        for q in range(12)
    }
    candidates |= {
        f"gzip {level}": (lambda p, level=level: gzip.compress(p, level, mtime=0))
        for level in (1, 6, 9)
    }
    best = {i: len(brotli.compress(p, quality=11)) for i, p in enumerate(pages)}
    print(f"{'coding':<8} {'ms/page':>8} {'size vs br q11':>15}")
    for name, compress in candidates.items():
        results = [timed(compress, page, repeat) for page in pages]
        ms = statistics.mean(r[0] for r in results)
        ratio = statistics.mean(r[1] / best[i] for i, r in enumerate(results))
        print(f"{name:<8} {ms:8.3f} {ratio:14.3f}x")


if __name__ == "__main__":
    main()
