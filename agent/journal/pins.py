"""The journal's pins file: the send times of records about to be sent.

``<state_dir>/journal/pins.json``, one small JSON object
(``{"version": 1, "pins": {id: [date, time]}}``) replaced atomically: the
local date and time a pending record is about to be sent with, written
durably before it is first sent, so that every resend after a crash is
identical. Pinning costs one small write per delivery refill instead of
rewriting whole segments.
"""

from __future__ import annotations

import json
import os
import threading
from typing import Iterable

from agent.errors import JournalError
from agent.fsio import FS

PINS_FILE = "pins.json"


class Pins:
    """The pins of one journal directory, in memory and on disk."""

    def __init__(self, directory: str, fs: FS) -> None:
        self.path = os.path.join(directory, PINS_FILE)
        self.fs = fs
        # id -> (date, time); replaced, never mutated, so readers need no lock
        self.by_id: dict[str, tuple[str, str]] = {}
        self._lock = threading.Lock()

    def read(self) -> dict[str, tuple[str, str]]:
        """The pins on disk ({} without a file). Raises ValueError (or
        RecursionError) for a file that is not a pins document."""
        try:
            raw = self.fs.read_bytes(self.path)
        except FileNotFoundError:
            return {}
        doc = json.loads(raw.decode("utf-8"))
        if not isinstance(doc, dict) or not isinstance(doc.get("pins"), dict):
            raise ValueError("not a pins document")
        pins = {}
        for key, value in doc["pins"].items():
            if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value)):
                raise ValueError(f"bad pin for {key!r:.40}")
            pins[key] = (value[0], value[1])
        return pins

    def pin(self, pins: Iterable[tuple[str, str, str]]) -> None:
        """Durably add ``(id, date, time)`` pins. Raises :class:`JournalError`."""
        with self._lock:
            new = dict(self.by_id)
            new.update((rid, (date, time_)) for rid, date, time_ in pins)
            doc = {"version": 1, "pins": {k: list(v) for k, v in new.items()}}
            try:
                self.fs.atomic_write(self.path, json.dumps(doc, separators=(",", ":")).encode())
            except OSError as exc:
                raise JournalError(f"could not pin send times: {exc.strerror or exc}") from exc
            self.by_id = new

    def unpin(self, ids: Iterable[str]) -> None:
        """Forget pins in memory (kept on disk until the next :meth:`pin`)."""
        with self._lock:
            drop = set(ids) & self.by_id.keys()
            if drop:
                self.by_id = {k: v for k, v in self.by_id.items() if k not in drop}
