"""Keep secrets (the iFlow access token above all) out of logs and error text.

A process-wide registry holds every secret the agent knows; :func:`redact`
replaces each of them, and its URL-encoded and JSON-escaped forms, with
``***``.  ``access_token=...`` query parameters are blanked even when the
value was never registered (e.g. a token echoed back in a captive-portal page).

:func:`install` puts a :class:`RedactingFilter` on the root logger's handlers
and on the ``httpx``/``httpcore`` loggers, which log full request URLs at
INFO/DEBUG.  Call it after logging is configured; handlers added later need
``install(handler)`` themselves.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from urllib.parse import quote, quote_plus

__all__ = ["register_secret", "redact", "redact_url", "RedactingFilter", "install"]

MASK = "***"
_MIN_LEN = 4

_lock = threading.Lock()
_secrets: set[str] = set()
_pattern: re.Pattern[str] | None = None  # alternation of every form; swapped atomically
_dirty = False  # _pattern lags behind _secrets (compiled lazily by redact)

# access_token=<value>, raw or itself percent-encoded (…%3Faccess_token%3D<value>%26…),
# and a JSON member "access_token": "<value>".
_PARAM = re.compile(
    r"(access_token(?:=|%3D))(?:(?!%26)[^&\s'\"])*"
    r"|(\"access_token\"\s*:\s*\")(?:[^\"\\]|\\.)*",
    re.IGNORECASE,
)

# Logger names that carry URLs (logger-level filters only see records logged
# on that exact logger, so the httpcore children are listed one by one).
_URL_LOGGERS = (
    "httpx",
    "httpcore",
    "httpcore.connection",
    "httpcore.http11",
    "httpcore.http2",
    "httpcore.proxy",
    "httpcore.socks",
)


def _forms(secret: str) -> set[str]:
    forms = {secret, quote(secret), quote(secret, safe=""), quote_plus(secret)}
    forms.add(json.dumps(secret)[1:-1])
    forms.add(json.dumps(secret, ensure_ascii=False)[1:-1])
    return {f for f in forms if len(f) >= _MIN_LEN}


def register_secret(value: str) -> None:
    """Remember ``value`` as a secret; values shorter than 4 characters are ignored."""
    global _dirty
    if not isinstance(value, str) or len(value) < _MIN_LEN:
        return
    with _lock:
        if value not in _secrets:
            _secrets.add(value)
            _dirty = True


def _current_pattern() -> re.Pattern[str] | None:
    global _pattern, _dirty
    if _dirty:
        with _lock:
            if _dirty:
                forms: set[str] = set()
                for s in _secrets:
                    forms |= _forms(s)
                ordered = sorted(forms, key=len, reverse=True)  # longest first
                _pattern = re.compile("|".join(re.escape(f) for f in ordered)) if ordered else None
                _dirty = False
    return _pattern


def _param_sub(m: re.Match[str]) -> str:
    return (m.group(1) or m.group(2)) + MASK


def redact(text: str) -> str:
    """Return ``text`` with every known secret and access_token value replaced by ``***``."""
    if not isinstance(text, str):
        text = str(text)
    pattern = _current_pattern()
    if pattern is not None:
        text = pattern.sub(MASK, text)
    return _PARAM.sub(_param_sub, text)


def redact_url(url: object) -> str:
    """``redact(str(url))`` for URLs of any type (str, httpx.URL, ...)."""
    return redact(str(url))


class RedactingFilter(logging.Filter):
    """Formats a record's message (and traceback) and redacts it in place.

    After filtering, ``record.msg`` is the final redacted text, ``record.args``
    is empty, ``record.exc_info`` is cleared and ``record.exc_text`` holds the
    redacted traceback, so no formatter downstream can re-render a secret.
    """

    _formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            msg = record.getMessage()
        except Exception:  # bad format string/args: keep both, redacted
            msg = f"{record.msg!s} {record.args!r}"
        record.msg = redact(msg)
        record.args = ()
        if record.exc_info:
            if not record.exc_text:
                try:
                    record.exc_text = self._formatter.formatException(record.exc_info)
                except Exception:
                    record.exc_text = "<traceback could not be formatted>"
            record.exc_info = None
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


_FILTER = RedactingFilter()


def _add(target: logging.Filterer) -> None:
    if not any(isinstance(f, RedactingFilter) for f in target.filters):
        target.addFilter(_FILTER)


def install(handler_or_logger: logging.Handler | logging.Logger | None = None) -> None:
    """Add the redacting filter to the root logger's handlers, the given
    handler or logger (and that logger's handlers), and the httpx/httpcore
    loggers.  Idempotent."""
    root = logging.getLogger()
    for h in list(root.handlers):
        _add(h)
    if isinstance(handler_or_logger, logging.Handler):
        _add(handler_or_logger)
    elif isinstance(handler_or_logger, logging.Logger):
        _add(handler_or_logger)
        for h in list(handler_or_logger.handlers):
            _add(h)
    for name in _URL_LOGGERS:
        _add(logging.getLogger(name))
