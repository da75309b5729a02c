"""The ``"console"`` backend: feedback as lines on stdout (a desk test, a
machine without GPIO, or the fallback when the pins cannot be opened)."""

from __future__ import annotations

import sys
from typing import IO

from agent.feedback.base import Feedback

__all__ = ["ConsoleFeedback"]


class ConsoleFeedback(Feedback):
    """One flushed line per event (``"stored tag=123 id=abc"``) and per
    condition change (``"offline on"`` / ``"offline off"``).

    Line breaks inside ``detail`` become spaces so every call stays one line.
    """

    def __init__(self, stream: IO[str] | None = None) -> None:
        super().__init__()
        self._stream = stream if stream is not None else sys.stdout

    def _write(self, line: str) -> None:
        self._stream.write(line + "\n")
        self._stream.flush()

    def _event(self, name: str, detail: str) -> None:
        detail = " ".join(str(detail).splitlines())
        self._write(f"{name} {detail}".rstrip())

    def _condition(self, name: str, active: bool) -> None:
        self._write(f"{name} {'on' if active else 'off'}")
