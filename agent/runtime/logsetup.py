"""Logging set-up: journald-friendly under systemd, timestamped lines elsewhere.

Under systemd (``$JOURNAL_STREAM`` names our stderr) each record is one line
``<N>logger: message``; journald reads the ``<N>`` syslog priority prefix and
adds its own timestamp.  journald ends an entry at every newline, so inside a
record (a traceback, a multi-line message) newlines are written as the two
characters ``\\n``; ``journalctl -u rfid-agent -o cat | sed 's/\\\\n/\\n/g'``
unfolds them.  In a terminal each record is
``YYYY-MM-DD HH:MM:SS LEVEL logger: message`` and continuation lines are
indented, so a record is still one entry to a reader or a log parser and a
message cannot forge a line of its own.

Every record passes the secret-redaction filter of :mod:`agent.redact`.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import IO

__all__ = ["setup_logging", "AgentFormatter", "journal_stream_matches"]

_MARK = "_agent_logsetup"  # attribute on the handler we own (idempotence)
_LEVELS = {"CRITICAL": logging.CRITICAL, "ERROR": logging.ERROR, "WARNING": logging.WARNING,
           "WARN": logging.WARNING, "INFO": logging.INFO, "DEBUG": logging.DEBUG}
_CHATTY = ("httpx", "httpcore")  # log every request (with its URL) at INFO/DEBUG
_INDENT = "    "


def _priority(levelno: int) -> int:
    """Python level -> syslog priority (sd-daemon(3) prefixes)."""
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    if levelno > logging.INFO:
        return 5  # custom levels between INFO and WARNING: notice
    if levelno >= logging.INFO:
        return 6
    return 7


class AgentFormatter(logging.Formatter):
    """One record, one entry: see the module docstring for the two layouts."""

    def __init__(self, journal: bool) -> None:
        if journal:
            super().__init__("%(name)s: %(message)s")
        else:
            super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S")
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)  # message + traceback + stack, joined by "\n"
        text = text.replace("\r\n", "\n").replace("\r", "\\r")
        if self.journal:
            # journald splits entries at "\n" and NUL.
            text = text.replace("\n", "\\n").replace("\0", "\\0")
            return f"<{_priority(record.levelno)}>{text}"
        return text.replace("\n", "\n" + _INDENT)


def journal_stream_matches(stream: IO[str]) -> bool:
    """True when ``$JOURNAL_STREAM`` (``device:inode``) is this stream's file.

    systemd sets the variable for the service's stdout/stderr; checking the
    inode keeps redirected output (``agent flush 2>file`` from a unit's
    shell) in the plain layout.  A stream without a file descriptor (a test's
    StringIO) matches whenever the variable is set.
    """
    value = os.environ.get("JOURNAL_STREAM")
    if not value:
        return False
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return True
    try:
        dev, ino = (int(part) for part in value.split(":"))
        st = os.fstat(fd)
    except (ValueError, OSError):
        return False
    return st.st_dev == dev and st.st_ino == ino


def _parse_level(level: str) -> int:
    try:
        return _LEVELS[str(level).strip().upper()]
    except KeyError:
        raise ValueError(f"unknown log level {level!r}; use DEBUG, INFO, WARNING or ERROR") from None


def setup_logging(level: str = "INFO", *, stream: IO[str] | None = None,
                  journal: bool | None = None) -> None:
    """Configure the root logger with one stderr handler; safe to call again.

    ``stream`` defaults to ``sys.stderr`` as it is at call time.  ``journal``
    forces the layout; by default it follows ``$JOURNAL_STREAM``.  A second
    call replaces the handler installed by the first (new level, stream or
    layout) instead of adding another.
    """
    from agent import redact  # the filter module; imported here to keep start-up lean

    levelno = _parse_level(level)
    if stream is None:
        stream = sys.stderr
    if journal is None:
        journal = journal_stream_matches(stream)

    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _MARK, False)]:
        root.removeHandler(old)
        old.close()

    handler = logging.StreamHandler(stream)
    setattr(handler, _MARK, True)
    handler.setFormatter(AgentFormatter(journal))
    redact.install(handler)
    root.addHandler(handler)
    root.setLevel(levelno)

    for name in _CHATTY:
        logging.getLogger(name).setLevel(logging.NOTSET if levelno <= logging.DEBUG else logging.WARNING)
