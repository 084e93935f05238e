"""The page cache: rendered pages in shared memory, shared by every server process.

:func:`open_page_store` attaches to this server's segment; :class:`PageStore`
gets, puts, purges and coalesces renders; :class:`Entry` is one stored page.
The layout and the reasons a reader never sees a torn entry are in
:mod:`enddel.cache.layout` and :mod:`enddel.cache.ring`.
"""

from enddel.cache.layout import Entry
from enddel.cache.store import (
    PageStore,
    StoreClosedError,
    StoreStatistics,
    open_page_store,
)

__all__ = [
    "Entry",
    "PageStore",
    "StoreClosedError",
    "StoreStatistics",
    "open_page_store",
]
