"""Dynamic compression of rendered pages, paid once per render.

A page is compressed when it is rendered, and the compressed variants are
stored beside it in the page cache, so a cache hit never compresses.
"""

from __future__ import annotations

import gzip

import brotli

__all__ = ["BROTLI_QUALITY", "GZIP_LEVEL", "MIN_COMPRESS_BYTES", "compress_page"]

#: Brotli quality for rendered HTML. Measured by ``perf/bench_compression.py``
#: on the demo's pages: quality 5 takes about 0.2 ms for a 44 KB page and
#: gets within a few percent of quality 9's size, while 11 takes 35 to 55 ms,
#: longer than the render itself.
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
