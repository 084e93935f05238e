"""Every logger enddel writes to, declared in one place.

Operators filter on these names, so each kind of event has exactly one home:

- ``enddel.server``: start-up summary, configuration errors, shutdown.
- ``enddel.access``: one line per request.
- ``enddel.render``: render errors with the URL and JavaScript stack, and the
  ``console`` output of bundles.
- ``enddel.pool``: render worker starts, exits and restarts, with their reasons.
- ``enddel.cache``: page cache attach, reset, purge and store errors.
- ``enddel.proxy``: upstream errors.
- ``enddel.static``: static files that changed or failed while being sent.
"""

from __future__ import annotations

import logging

__all__ = [
    "configure_logging",
    "access_log",
    "cache_log",
    "pool_log",
    "proxy_log",
    "render_log",
    "server_log",
    "static_log",
]

server_log = logging.getLogger("enddel.server")
access_log = logging.getLogger("enddel.access")
render_log = logging.getLogger("enddel.render")
pool_log = logging.getLogger("enddel.pool")
cache_log = logging.getLogger("enddel.cache")
proxy_log = logging.getLogger("enddel.proxy")
static_log = logging.getLogger("enddel.static")


_FORMAT = "[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s"
_DATE_FORMAT = "%Y-%m-%d %H:%M:%S %z"


def configure_logging(level: str = "INFO") -> None:
    """Send enddel's logs to stderr, unless the host application configured logging.

    hypercorn configures only its own loggers, so without this enddel's INFO
    lines would be dropped. A handler on the root logger or on ``enddel``
    (from ``hypercorn --log-config``, say) means someone chose already, and
    nothing is changed.
    """
    root = logging.getLogger("enddel")
    if root.handlers or logging.getLogger().handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(_FORMAT, _DATE_FORMAT))
    root.addHandler(handler)
    root.setLevel(level)
