"""Dynamic compression of rendered pages, paid once per render.

A page is compressed when it is rendered, and the compressed variants are
stored beside it in the page cache, so a cache hit never compresses.
"""

from __future__ import annotations

import gzip

import brotli

__all__ = ["BROTLI_QUALITY", "GZIP_LEVEL", "MIN_COMPRESS_BYTES", "compress_page"]

#: Brotli quality for rendered HTML, the knee of ``perf/bench_compression.py``
#: on the demo's pages (2 to 14 KB; one run on 2 shared cores): quality 5 took
#: 0.14 ms a page for 1.15 times quality 11's size, and qualities 6 to 9 were
#: slower for the same size. Quality 4 saves 0.1 ms but is 1.25 times larger;
#: quality 11 took 6.3 ms, several times the render itself, on every miss.
BROTLI_QUALITY = 5
#: gzip level for clients without brotli; 6 is zlib's own size/speed default.
GZIP_LEVEL = 6
#: Bodies smaller than this are sent as they are: below one TCP segment
#: (about 1,400 bytes of payload) compression rarely saves a packet, and it
#: costs CPU and a Vary lookup on every client.
MIN_COMPRESS_BYTES = 1024


def compress_page(body: bytes) -> tuple[bytes | None, bytes | None]:
    """Return the brotli and gzip variants of ``body``, or None where not worth it."""
    if len(body) < MIN_COMPRESS_BYTES:
        return None, None
    br = brotli.compress(body, mode=brotli.MODE_TEXT, quality=BROTLI_QUALITY)
    gz = gzip.compress(body, compresslevel=GZIP_LEVEL, mtime=0)
    return (br if len(br) < len(body) else None), (gz if len(gz) < len(body) else None)
