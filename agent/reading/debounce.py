"""Debounce: the same card again within the window is one scan, not two.

Readers repeat a frame for as long as a card is held (an RDM6300 about ten
times a second), and people tap twice. A read is suppressed when the same
card was *seen* on the same reader less than ``window`` seconds before: the
window slides while the card stays on the reader, so holding it for a minute
is still one scan. Times are monotonic (CLOCK_BOOTTIME) nanoseconds, so a
wall-clock step cannot open or close the window.
"""

from __future__ import annotations

import threading


class Debouncer:
    def __init__(self, window_s: float, *, max_entries: int = 1024) -> None:
        self.window_ns = int(window_s * 1e9)
        self.max_entries = max_entries
        self._seen: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    def check(self, reader: str, tag: str, now_ns: int) -> bool:
        """Record that ``tag`` was read now; True if it should be recorded."""
        key = (reader, tag)
        with self._lock:
            last = self._seen.get(key)
            self._seen[key] = now_ns
            if len(self._seen) > self.max_entries:
                self._expire(now_ns)
            return last is None or now_ns - last >= self.window_ns or now_ns < last

    def last(self, reader: str, tag: str) -> int | None:
        """When ``tag`` was last seen on ``reader`` (monotonic ns), or None."""
        with self._lock:
            return self._seen.get((reader, tag))

    def seed(self, reader: str, tag: str, at_ns: int) -> None:
        """Remember a read from before a restart (same boot)."""
        with self._lock:
            if at_ns > self._seen.get((reader, tag), -1):
                self._seen[(reader, tag)] = at_ns

    def forget(self, reader: str, tag: str) -> None:
        """The read was not stored after all: the next one must not be suppressed."""
        with self._lock:
            self._seen.pop((reader, tag), None)

    def _expire(self, now_ns: int) -> None:
        for key in [k for k, t in self._seen.items() if now_ns - t >= self.window_ns]:
            del self._seen[key]
