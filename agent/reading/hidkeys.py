"""Decoder for USB keyboard-emulating ("keyboard wedge") RFID readers.

:class:`HidDecoder` is pure: it is fed evdev ``InputEvent`` objects (or
anything with ``sec``, ``usec``, ``type``, ``code`` and ``value``) and returns
a tag when Enter ends a number.  It maps numeric key codes, so the result does
not depend on the keyboard layout or NumLock.

Rules:

* Only EV_KEY key-down events (value 1) produce characters; autorepeat
  (value 2), key-up (0), EV_SYN, EV_MSC and every other type are ignored.
* Shift (left 42 / right 54) is tracked from its down/up events.
* Digits ``KEY_1``..``KEY_0`` and keypad digits ``KEY_KP0``..``KEY_KP9`` give
  ``0-9``.  A shifted digit key is still the digit: the code is the key's
  position, and layouts such as AZERTY need Shift for digits.
* Letters give upper case with Shift.  Without Shift they are also returned
  in UPPER case: card numbers are case-insensitive (hex), and the reader's
  Shift/CapsLock use varies, so the same card always yields the same string.
* Modifier and lock keys (Ctrl, Alt, Meta, CapsLock, NumLock, ScrollLock) are
  ignored.  Any other key (space, comma, minus, F-keys...) spoils the number
  being typed: it is discarded at the next Enter and counted ``bad_key``
  (ignoring it could turn "161,45763" into a different, wrong card number).
* Enter (28) or keypad Enter (96) ends the number.  An empty number yields
  nothing.
* If the time between two key-down events (event timestamps) exceeds
  ``gap_seconds`` (or goes backwards), the partial number is discarded
  (``gap_timeout``) and the new key starts a fresh one.
* More than ``max_len`` characters: the number is discarded up to the next
  Enter (``too_long``).
"""

from __future__ import annotations

import collections
import logging

__all__ = ["HidDecoder", "KEYMAP", "EV_KEY"]

_log = logging.getLogger("agent.reader")

EV_KEY = 0x01
KEY_ENTER = 28
KEY_KPENTER = 96
SHIFT_KEYS = frozenset({42, 54})
# Ctrl, Alt, Meta (left/right), CapsLock, NumLock, ScrollLock
IGNORED_KEYS = frozenset({29, 97, 56, 100, 125, 126, 58, 69, 70})


def _build_keymap() -> dict[int, str]:
    km: dict[int, str] = {}
    for i, ch in enumerate("1234567890"):
        km[2 + i] = ch
    for code, ch in zip((82, 79, 80, 81, 75, 76, 77, 71, 72, 73), "0123456789"):
        km[code] = ch
    for start, row in ((16, "QWERTYUIOP"), (30, "ASDFGHJKL"), (44, "ZXCVBNM")):
        for i, ch in enumerate(row):
            km[start + i] = ch
    return km


KEYMAP: dict[int, str] = _build_keymap()  # key code -> character (letters upper)


class HidDecoder:
    """Turns key events from a keyboard-wedge reader into tags."""

    def __init__(self, *, gap_seconds: float = 0.5, max_len: int = 32) -> None:
        if isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 1:
            raise ValueError(f"max_len must be a positive integer, got {max_len!r}")
        if not gap_seconds > 0:
            raise ValueError(f"gap_seconds must be > 0, got {gap_seconds!r}")
        self.gap_seconds = float(gap_seconds)
        self.max_len = max_len
        self.dropped: collections.Counter[str] = collections.Counter()
        self.last_drop: str | None = None
        self.shift = False
        self._buf: list[str] = []
        self._spoiled: str | None = None  # reason the current number is invalid
        self._last_time: float | None = None
        self._bad_code: int | None = None

    def reset(self) -> None:
        """Forget any partial number and the Shift state (e.g. after reopen)."""
        self._buf.clear()
        self._spoiled = None
        self._last_time = None
        self.shift = False

    def feed(self, event: object) -> str | None:
        """Consume one event; return a completed tag or None. Never raises."""
        try:
            return self._feed(event)
        except Exception as exc:  # defensive: never kill the reader loop
            _log.exception("HID decoder failed; state reset")
            self.reset()
            self._drop("internal_error", f"decoder error: {type(exc).__name__}")
            return None

    def _drop(self, reason: str, description: str) -> None:
        self.dropped[reason] += 1
        self.last_drop = description

    def _discard(self) -> None:
        self._buf.clear()
        self._spoiled = None

    def _feed(self, event: object) -> str | None:
        if getattr(event, "type", None) != EV_KEY:
            return None
        code = getattr(event, "code", None)
        value = getattr(event, "value", None)
        if code in SHIFT_KEYS:
            if value in (0, 1):
                self.shift = value == 1
            return None
        if value != 1:
            return None
        now = float(getattr(event, "sec", 0)) + float(getattr(event, "usec", 0)) / 1e6
        last, self._last_time = self._last_time, now
        if last is not None and (self._buf or self._spoiled):
            gap = now - last
            if gap > self.gap_seconds or gap < 0:
                self._drop("gap_timeout", f"partial number abandoned after {gap:.2f} s")
                self._discard()
        if code in (KEY_ENTER, KEY_KPENTER):
            tag, spoiled = "".join(self._buf), self._spoiled
            self._discard()
            if spoiled is not None:
                if spoiled == "bad_key":
                    self._drop("bad_key", f"number contained unexpected key code {self._bad_code}")
                return None  # too_long was counted when it happened
            return tag or None
        if code in IGNORED_KEYS:
            return None
        if self._spoiled is not None:
            return None
        ch = KEYMAP.get(code)  # type: ignore[arg-type]
        if ch is None:
            self._buf.clear()
            self._spoiled = "bad_key"
            self._bad_code = code  # type: ignore[assignment]
            return None
        if len(self._buf) >= self.max_len:
            self._buf.clear()
            self._spoiled = "too_long"
            self._drop("too_long", f"number longer than {self.max_len} characters")
            return None
        self._buf.append(ch)
        return None
