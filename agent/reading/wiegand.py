"""Wiegand decoding (pure logic, no I/O): timestamped edges on D0/D1 in, frames out.

A Wiegand reader idles both lines high and sends each bit as a short low pulse
(about 40-100 µs, 1-2 ms apart): on D0 for a 0, on D1 for a 1.  A frame ends
when no bit arrives for ``gap_s``.  The decoder takes :class:`Edge` values
(kernel timestamps on CLOCK_MONOTONIC, in order) and returns each frame as
``"<nbits>:<HEX>"``: the bit count, a colon and all bits, parity included, first
bit received = most significant, upper-case hex zero-padded to ceil(nbits/4)
digits, after ``swap`` was applied.

What is checked, and why:

* A falling edge is a bit.  Rising edges are optional; when they come, a low
  pulse shorter than :data:`GLITCH_NS` is a glitch and its bit is taken back.
* Falling edges on both lines within :data:`NOISE_NS` are no reader (it pulses
  one line at a time): the frame is dropped as ``noise``.
* 26 and 34 bits: even parity over the first half, odd over the second half
  (H10301 and its 34-bit sibling).  A frame failing parity whose D0/D1-inverted
  bits pass is dropped as ``swapped`` with what to change.
* 52, 60 and 68 bits are two 26/34-bit frames sent closer than the gap (readers
  repeat a frame; the debouncer merges the repeats): the frame is split and
  each half checked on its own.
* 4 and 8 bits are keypad bursts: dropped as ``keypad`` unless ``keypad``.
* Fewer than 24 bits is a wiring fault far more often than a format (5 V lines
  without a level shifter, no common ground): dropped as ``short``.
* 24..64 bits of any other length are returned unchecked with their bit count;
  longer frames are dropped as ``long``.

Drops are counted in ``dropped`` (reason -> count) with a description in
``last_drop`` that never contains card data.  Memory is bounded (a frame keeps
at most :data:`MAX_KEPT_BITS` bits, beyond that only their count), and
``feed``/``flush`` never raise.
"""

from __future__ import annotations

import collections
import logging
from typing import Callable, Iterable, NamedTuple

__all__ = ["Edge", "WiegandDecoder", "GLITCH_NS", "NOISE_NS", "MAX_BITS", "MAX_KEPT_BITS"]

_log = logging.getLogger("agent.reader")

GLITCH_NS = 5_000  # a low pulse shorter than this is no reader's bit
NOISE_NS = 10_000  # falling edges on both lines closer than this are noise
MIN_BITS = 24  # shortest card format accepted (shorter: wiring, or a keypad)
MAX_BITS = 64  # longest single frame accepted
_CHECKED = (26, 34)  # lengths with parity (even over the first half, odd over the second)
_PAIRS = {52: ((26, 26),), 60: ((26, 34), (34, 26)), 68: ((34, 34),)}  # two frames, no gap
_KEYPAD = (4, 8)
MAX_KEPT_BITS = max(_PAIRS)  # enough for the longest burst of two frames
_LINE = ("D0", "D1")
_WIRING = ("usually wiring: D0/D1 at 5 V without a level shifter, or no common ground "
           "between reader and Pi; see hardware/README.md")


class Edge(NamedTuple):
    """One edge on a Wiegand line: ``line`` 0 = D0, 1 = D1 as wired (before swap)."""

    line: int
    t_ns: int  # CLOCK_MONOTONIC nanoseconds
    falling: bool = True


def _parity_ok(value: int, n: int) -> bool:
    """Even parity over the first n/2 bits, odd over the last n/2 (26 and 34 bits)."""
    half = n // 2
    first, second = value >> half, value & ((1 << half) - 1)
    return first.bit_count() % 2 == 0 and second.bit_count() % 2 == 1


def _tag(value: int, n: int) -> str:
    return f"{n}:{value:0{(n + 3) // 4}X}"


class WiegandDecoder:
    """Incremental Wiegand decoder; see the module docstring."""

    def __init__(self, *, gap_s: float = 0.025, swap: bool = False, keypad: bool = False) -> None:
        if not gap_s > 0:
            raise ValueError(f"gap_s must be > 0, got {gap_s!r}")
        self.gap_ns = int(gap_s * 1e9)
        self.swap = bool(swap)
        self.keypad = bool(keypad)
        self.dropped: collections.Counter[str] = collections.Counter()
        self.last_drop: str | None = None
        self.reset()

    def reset(self) -> None:
        """Forget the frame in progress (e.g. after the lines were reopened)."""
        self._n = 0  # bits in the frame so far
        self._value = 0  # its first MAX_KEPT_BITS bits, first received = most significant
        self._last_t: int | None = None  # time of the frame's last bit
        self._prev_t: int | None = None  # time of the bit before it (a glitch gives it back)
        self._fall: list[int | None] = [None, None]  # last falling edge per line, this frame
        self._noisy = False

    # public --------------------------------------------------------------

    def feed(self, edges: Iterable[Edge]) -> list[str]:
        """Consume edges (in time order); return the tags of frames they closed."""
        def step(tags: list[str]) -> None:
            for edge in edges:
                self._edge(edge, tags)
        return self._guarded(step)

    def flush(self, now_ns: int) -> list[str]:
        """The frame in progress, if no bit came for the gap up to ``now_ns``."""
        def step(tags: list[str]) -> None:
            deadline = self.deadline_ns()
            if deadline is not None and now_ns >= deadline:
                self._close(tags)
        return self._guarded(step)

    def deadline_ns(self) -> int | None:
        """When the frame in progress ends unless another bit comes (None: idle)."""
        return None if self._last_t is None else self._last_t + self.gap_ns

    # edges ---------------------------------------------------------------

    def _edge(self, edge: Edge, tags: list[str]) -> None:
        line, t = edge[0], edge[1]
        falling = edge[2] if len(edge) > 2 else True
        if line not in (0, 1) or not isinstance(t, int):
            return  # not from a Wiegand source; nothing to learn from it
        if self._last_t is not None:
            if t - self._last_t >= self.gap_ns:
                self._close(tags)
            else:
                t = max(t, self._last_t)  # never let time run backwards inside a frame
        if falling:
            self._falling(line, t)
        else:
            self._rising(line, t)

    def _falling(self, line: int, t: int) -> None:
        mine, other = self._fall[line], self._fall[1 - line]
        if mine is not None and t - mine < NOISE_NS:
            self._drop("glitch", f"a second falling edge on {_LINE[line]} within 10 µs ignored "
                                 "(contact bounce or electrical noise)")
            return
        self._fall[line] = t
        self._prev_t, self._last_t = self._last_t, t
        if other is not None and t - other < NOISE_NS:
            self._noisy = True  # a reader pulses one line at a time
            return
        bit = line ^ 1 if self.swap else line
        if self._n < MAX_KEPT_BITS:
            self._value = (self._value << 1) | bit
        self._n += 1

    def _rising(self, line: int, t: int) -> None:
        fell = self._fall[line]
        if fell is None or t - fell >= GLITCH_NS or fell != self._last_t or self._n == 0:
            return  # the end of an ordinary pulse
        # the frame's last bit was a pulse too short for any reader: take it back
        if self._n <= MAX_KEPT_BITS:
            self._value >>= 1
        self._n -= 1
        self._fall[line] = None
        self._last_t = self._prev_t
        if self._n == 0:
            self.reset()
        self._drop("glitch", f"a pulse shorter than 5 µs on {_LINE[line]} ignored (electrical noise)")

    # frames --------------------------------------------------------------

    def _close(self, tags: list[str]) -> None:
        n, value, noisy = self._n, self._value, self._noisy
        self.reset()
        if noisy:
            self._drop("noise", "pulses on D0 and D1 at the same time (within 10 µs): electrical "
                                "noise, not a reader; check the cable's shield and the common ground")
        elif n == 0:
            return
        elif n in _KEYPAD:
            if self.keypad:
                tags.append(_tag(value, n))
            else:
                self._drop("keypad", f"a {n}-bit keypad burst (set keypad = true to record keys)")
        elif n < MIN_BITS:
            self._drop("short", f"a {n}-bit frame (fewer than {MIN_BITS} bits): {_WIRING}")
        elif n in _CHECKED:
            self._checked(value, n, tags)
        elif n in _PAIRS:
            self._pair(value, n, tags)
        elif n <= MAX_BITS:
            tags.append(_tag(value, n))
        else:
            self._drop("long", f"a {n}-bit frame (more than {MAX_BITS} bits): noise, or frames "
                               "closer together than frame_gap_seconds")

    def _checked(self, value: int, n: int, tags: list[str]) -> None:
        if _parity_ok(value, n):
            tags.append(_tag(value, n))
        elif _parity_ok(value ^ ((1 << n) - 1), n):
            setting = "false" if self.swap else "true"
            self._drop("swapped", f"a {n}-bit frame passes parity only with D0 and D1 exchanged: "
                                  f"set swap_lines = {setting} in [reader], or swap the D0/D1 wires")
        else:
            self._drop("parity", f"a {n}-bit frame failed its parity check (noise on the lines, "
                                 "or a reader sending another format)")

    def _pair(self, value: int, n: int, tags: list[str]) -> None:
        """Two frames sent without the gap between them: check each half."""
        best: list[tuple[int, int]] = []
        for a, b in _PAIRS[n]:
            halves = [(value >> b, a), (value & ((1 << b) - 1), b)]
            if sum(_parity_ok(v, k) for v, k in halves) > sum(_parity_ok(v, k) for v, k in best):
                best = halves
        for v, k in best or halves:
            self._checked(v, k, tags)

    def _guarded(self, step: Callable[[list[str]], None]) -> list[str]:
        tags: list[str] = []
        try:
            step(tags)
        except Exception as exc:  # defensive: a decoder bug must not kill a reader
            _log.exception("Wiegand decoder failed; state reset")
            self.reset()
            self._drop("internal_error", f"decoder error: {type(exc).__name__}")
        return tags

    def _drop(self, reason: str, description: str) -> None:
        self.dropped[reason] += 1
        self.last_drop = description
