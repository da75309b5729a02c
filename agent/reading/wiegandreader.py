"""A Wiegand reader on two GPIO lines: the supervision of :class:`agent.reading.base.Reader`
around an :class:`~agent.reading.gpiolines.EdgeSource` and a
:class:`~agent.reading.wiegand.WiegandDecoder`.

A Wiegand reader has no liveness signal: it only speaks when a card is
presented, so a dead reader and an idle one look the same.  What can be
checked is checked: both lines must idle high, at open (a line low means an
unpowered reader, no common ground or a missing level shifter, and the open
fails, so the base backs off, retries and shows "reader missing") and again
whenever the lines have been quiet for a tick (a reader that lost power).

``read_ready`` waits by itself (``input_fd`` is None) in one ``select()`` on
the source's fd and the base's stop fd, for the time left to the decoder's
frame deadline, or the base's tick when no frame is in progress; then it
reads the edges, feeds them and flushes the frame whose gap has passed.
"""

from __future__ import annotations

import functools
import time
from typing import TYPE_CHECKING, Any, Callable

from agent.errors import ReaderError
from agent.reading import base
from agent.reading.base import Reader
from agent.reading.gpiolines import EdgeSource, open_edges
from agent.reading.wiegand import WiegandDecoder

if TYPE_CHECKING:
    from agent.config import ReaderConfig

__all__ = ["WiegandReader"]

_RECHECK = 0.01  # a line seen low while idle is looked at again after this (a pulse lasts ~0.1 ms)
_EMPTY_WAIT = 0.05  # readable but nothing read: wait this long so a broken fd cannot spin
_LOW_CAUSE = ("the reader is unpowered, has no common ground with the Pi, or D0/D1 lack their "
              "level shifter; see hardware/README.md")


def _low_lines(levels: tuple[int, int]) -> str | None:
    low = [name for name, level in zip(("d0_pin", "d1_pin"), levels) if not level]
    if not low:
        return None
    which = "both lines are" if len(low) == 2 else f"{low[0]} is"
    return f"{which} low while idle (should be high): {_LOW_CAUSE}"


class WiegandReader(Reader):
    """Wiegand 26/34 (and other lengths) on D0/D1; see the module docstring."""

    def __init__(self, name: str, *, decoder: WiegandDecoder, open_source: Callable[[], EdgeSource],
                 what: str, backoff: tuple[float, float] = (0.5, 5.0)) -> None:
        super().__init__(name, backoff)
        self.decoder = decoder
        self._open_source = open_source
        self._what_text = what

    @classmethod
    def from_config(cls, rc: ReaderConfig) -> WiegandReader:
        decoder = WiegandDecoder(gap_s=rc.frame_gap_seconds, swap=rc.swap_lines, keypad=rc.keypad)
        on = f" on {rc.gpiochip}" if rc.gpiochip else ""
        d0, d1 = (f"GPIO{p}" if isinstance(p, int) else p for p in (rc.d0_pin, rc.d1_pin))
        what = f"Wiegand reader (D0 {d0}, D1 {d1}{on})"  # as probe and doctor name the lines
        return cls(rc.name, decoder=decoder, what=what,
                   open_source=functools.partial(open_edges, rc.gpiochip, rc.d0_pin, rc.d1_pin))

    def open(self) -> EdgeSource:
        """Request the lines and check they idle high; ReaderError if not."""
        source = self._open_source()
        try:
            low = _low_lines(source.levels())
        except Exception:
            source.close()
            raise
        if low:
            source.close()
            raise ReaderError(low)
        return source

    def _what(self) -> str:
        return self._what_text

    def _opened(self) -> str:
        return f"{self._what_text} open (Wiegand has no liveness signal: only the idle level is checked)"

    def input_fd(self, dev: Any) -> int | None:
        return None  # read_ready waits by itself, up to the decoder's deadline

    def read_ready(self, source: EdgeSource) -> tuple[int, list[str]]:
        deadline = self.decoder.deadline_ns()
        if deadline is None:
            timeout = base._TICK  # the base's tick: last_alive stays as fresh as every reader's
        else:
            timeout = min(base._TICK, max(0.0, (deadline - time.monotonic_ns()) / 1e9))
        edges = []
        if self._wait(source.fileno(), timeout):
            edges = source.read()
            if not edges:
                self._wait(None, _EMPTY_WAIT)
        elif deadline is None:
            self._check_idle(source)
        tags = self.decoder.feed(edges)
        tags += self.decoder.flush(time.monotonic_ns())
        return len(edges), tags

    def _check_idle(self, source: EdgeSource) -> None:
        """A quiet tick: a line that stays low means the reader went away."""
        if not _low_lines(source.levels()):
            return
        if self._wait(source.fileno(), _RECHECK):
            return  # edges: a card after all, read them next time
        low = _low_lines(source.levels())
        if low:
            raise ReaderError(low)
