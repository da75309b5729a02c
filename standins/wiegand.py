"""Wiegand edges without a reader: generated frames, and an EdgeSource fed through a pipe.

:func:`frame_bits` builds a 26-bit (H10301: 8-bit facility, 16-bit card) or
34-bit (16-bit facility, 16-bit card) frame with its parity bits;
:func:`to_edges` turns bits into the edges a reader's pulses make, with jitter
on pulse width and bit interval from a seeded :class:`random.Random`.

:class:`EdgeFeed` is what the Wiegand reader opens in tests, the bench and the
demo in place of :func:`agent.reading.gpiolines.open_edges`: ``open`` makes a
pipe, :meth:`EdgeFeed.send` writes edges to it as fixed-size records
(``realtime=True`` sleeps between them so they arrive with their timing) with
``t_ns`` rebased onto ``time.monotonic_ns()``, the clock the kernel stamps
GPIO events with, and :meth:`EdgeFeed.set_levels` sets what ``levels()``
reports (a line held low by an unpowered reader).
"""

from __future__ import annotations

import os
import random
import struct
import threading
import time
from typing import Iterable, Sequence

from agent.reading.wiegand import Edge

__all__ = ["frame_bits", "to_edges", "EdgeFeed", "RECORD"]

RECORD = struct.Struct("<qBB6x")  # t_ns, line, falling: one edge, 16 bytes
_FIELDS = {26: (8, 16), 34: (16, 16)}  # bits -> (facility bits, card bits)


def frame_bits(facility: int, card: int, nbits: int = 26) -> list[int]:
    """The bits of a 26- or 34-bit frame, parity included, first sent first."""
    if nbits not in _FIELDS:
        raise ValueError(f"nbits must be 26 or 34, got {nbits}")
    fbits, cbits = _FIELDS[nbits]
    if not (0 <= facility < 1 << fbits and 0 <= card < 1 << cbits):
        raise ValueError(f"facility {facility} / card {card} do not fit {nbits} bits")
    data = (facility << cbits) | card
    bits = [(data >> i) & 1 for i in range(fbits + cbits - 1, -1, -1)]
    half = len(bits) // 2
    even = sum(bits[:half]) % 2  # makes the first half's ones even
    odd = 1 - sum(bits[half:]) % 2  # makes the second half's ones odd
    return [even, *bits, odd]


def to_edges(bits: Sequence[int], *, start_ns: int, pulse_us: tuple[float, float] = (40, 100),
             interval_us: tuple[float, float] = (900, 2100), rng: random.Random | None = None,
             rising: bool = True) -> list[Edge]:
    """The edges of ``bits`` on D0 (0) and D1 (1): falling at each bit, rising after the pulse."""
    rng = rng if rng is not None else random.Random(0)
    edges: list[Edge] = []
    t = start_ns
    for i, bit in enumerate(bits):
        if i:
            t += int(rng.uniform(*interval_us) * 1000)
        edges.append(Edge(int(bit), t, True))
        if rising:
            edges.append(Edge(int(bit), t + int(rng.uniform(*pulse_us) * 1000), False))
    return sorted(edges, key=lambda e: e.t_ns)


class EdgeFeed:
    """An EdgeSource backed by a pipe; ``open`` is the reader's ``open_source``."""

    def __init__(self, levels: tuple[int, int] = (1, 1)) -> None:
        self._lock = threading.Lock()
        self._levels = (int(levels[0]), int(levels[1]))
        self._r: int | None = None
        self._w: int | None = None
        self._rest = b""
        self.opened = 0  # how often a reader opened it

    # the test's side -----------------------------------------------------

    def set_levels(self, d0: int, d1: int) -> None:
        """What ``levels()`` reports from now on (1 = high, the idle level)."""
        self._levels = (int(d0), int(d1))

    def send(self, edges: Iterable[Edge], realtime: bool = True) -> int:
        """Write edges, timestamps rebased so the first is now; returns how many
        were written (0 while no reader has the feed open: nobody listens)."""
        edges = list(edges)
        if not edges:
            return 0
        base = edges[0].t_ns
        start = time.monotonic_ns()
        sent = 0
        for edge in edges:
            t = start + (edge.t_ns - base)
            if realtime:
                lag = (t - time.monotonic_ns()) / 1e9
                if lag > 0:
                    time.sleep(lag)
            with self._lock:
                if self._w is None:
                    return sent
                os.write(self._w, RECORD.pack(t, edge.line, bool(edge.falling)))
            sent += 1
        return sent

    @property
    def is_open(self) -> bool:
        return self._r is not None

    # the reader's side (EdgeSource) ------------------------------------------

    def open(self) -> EdgeFeed:
        with self._lock:
            if self._r is None:
                self._r, self._w = os.pipe()
                self._rest = b""
                self.opened += 1
        return self

    def fileno(self) -> int:
        if self._r is None:
            raise OSError("edge feed is closed")
        return self._r

    def read(self) -> list[Edge]:
        data = os.read(self.fileno(), RECORD.size * 256)
        if not data:
            raise OSError("edge feed: the writer went away")
        data, cut = self._rest + data, (len(self._rest + data) // RECORD.size) * RECORD.size
        self._rest = data[cut:]
        return [Edge(line, t, bool(falling)) for t, line, falling in RECORD.iter_unpack(data[:cut])]

    def levels(self) -> tuple[int, int]:
        return self._levels

    def close(self) -> None:
        with self._lock:
            for fd in (self._r, self._w):
                if fd is not None:
                    os.close(fd)
            self._r = self._w = None
