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
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "REPEAT_BURST",
    "REPEAT_WINDOW",
    "RepeatLimiter",
    "SecretRedactor",
    "access_log",
    "cache_log",
    "configure_logging",
    "hide_secret",
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
_ALL_LOGGERS = (
    server_log, access_log, render_log, pool_log, cache_log, proxy_log, static_log,
)  # fmt: skip


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
    if level in logging.getLevelNamesMapping():
        root.setLevel(level)
        return
    root.setLevel(logging.INFO)
    server_log.warning(
        "ENDDEL_LOG_LEVEL=%r is invalid: expected DEBUG, INFO, WARNING, ERROR or "
        "CRITICAL; logging at INFO",
        level,
    )


# -- repeats and secrets ----------------------------------------------------------

#: Records of one kind let through per window; the rest are counted instead.
#: Five lines show an operator the pattern; a failing upstream under load would
#: otherwise write one line per request.
REPEAT_BURST = 5
#: Seconds of one rate-limit window.
REPEAT_WINDOW = 10.0
#: Kinds remembered at once. Templates are few, but a message formatted before
#: logging is a kind of its own, and this bound keeps such messages from
#: growing the table without end.
_MAX_KINDS = 1000


@dataclass(slots=True)
class _Kind:
    started: float
    passed: int = 1
    suppressed: int = 0


class RepeatLimiter(logging.Filter):
    """Let REPEAT_BURST records of one kind through per window, count the rest.

    A kind is a logger and a message template, so ``render failed url=%s`` for
    a thousand URLs is one kind. Only WARNING and above are limited. The count
    of suppressed records is added to the next record of that kind that passes,
    so a kind that stops repeating never reports its last count.
    """

    def __init__(
        self,
        burst: int = REPEAT_BURST,
        window: float = REPEAT_WINDOW,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self._burst = burst
        self._window = window
        self._clock = clock
        self._kinds: dict[tuple[str, str], _Kind] = {}
        # Records arrive from worker threads too (trio.to_thread).
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.name, str(record.msg))
        with self._lock:
            now = self._clock()
            kind = self._kinds.get(key)
            if kind is not None and now - kind.started < self._window:
                if kind.passed < self._burst:
                    kind.passed += 1
                    return True
                kind.suppressed += 1
                return False
            if len(self._kinds) >= _MAX_KINDS:
                self._kinds.clear()
            self._kinds[key] = _Kind(now)
        if kind is not None and kind.suppressed:
            _rewrite(
                record,
                f"{record.getMessage()} ({kind.suppressed} more like this "
                f"suppressed in the {self._window:g} s before)",
            )
        return True


#: Header fields whose values are credentials, as they would appear in a
#: message: ``Authorization: Bearer ...``, ``cookie=...``.
_CREDENTIAL_FIELD = re.compile(
    r"(?i)\b((?:proxy-)?authorization|(?:set-)?cookie)(['\"]?\s*[:=]\s*)([^\r\n]+)"
)
_HIDDEN = "(hidden)"


class SecretRedactor(logging.Filter):
    """Replace registered secrets and credential header values with ``(hidden)``.

    NOTE: only the message is rewritten; the text of an attached exception
    traceback is not.
    """

    def __init__(self) -> None:
        super().__init__()
        self._secrets: tuple[str, ...] = ()

    def hide(self, secret: str) -> None:
        """Hide ``secret`` wherever it appears in a message from now on."""
        if secret and secret not in self._secrets:
            self._secrets = (*self._secrets, secret)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = _CREDENTIAL_FIELD.sub(rf"\1\2{_HIDDEN}", message)
        for secret in self._secrets:
            redacted = redacted.replace(secret, _HIDDEN)
        if redacted != message:
            _rewrite(record, redacted)
        return True


def _rewrite(record: logging.LogRecord, message: str) -> None:
    # The message is final: without arguments, a "%" in it is not read as a
    # placeholder by the formatter.
    record.msg = message
    record.args = None


_redactor = SecretRedactor()
_limiter = RepeatLimiter()
for _logger in _ALL_LOGGERS:
    # A logger's filters see the records logged on it, so each logger gets
    # both; the redactor runs first, so a counted message is already clean.
    _logger.addFilter(_redactor)
    _logger.addFilter(_limiter)


def hide_secret(secret: str) -> None:
    """Keep ``secret`` (a token, a password) out of every enddel log line."""
    _redactor.hide(secret)
