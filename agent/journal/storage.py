"""A crash-safe TinyDB storage.

TinyDB's own ``JSONStorage`` rewrites its file in place, so a power cut in the
middle of a write leaves JSON that will not parse (tinydb #301, #461). This
storage writes through :meth:`agent.fsio.FS.atomic_write` instead: temp file,
fsync, ``os.replace``, fsync of the directory.

It also keeps the last document it wrote or read in memory, so an insert costs
one serialisation and one durable write, not a re-read and re-parse of the
file. The cache is dropped whenever a write fails, so memory never runs ahead
of the disk: the next read comes from the file again.
"""

from __future__ import annotations

import json
from typing import Any

from tinydb.storages import Storage

from agent.errors import JournalError
from agent.fsio import FS, REAL_FS


class CorruptFile(JournalError):
    """A file that exists but does not hold a TinyDB JSON document."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def _loads(path: str, raw: bytes) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, bad UTF-8, deep nesting
        raise CorruptFile(path, f"not valid JSON ({exc.__class__.__name__})") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise CorruptFile(path, "not a TinyDB document (expected an object of tables)")
    for table in data.values():
        for key, doc in table.items():
            # TinyDB turns every key into an int doc id and every value into a Document
            if not (key.isascii() and key.isdigit()) or not isinstance(doc, dict):
                raise CorruptFile(path, "not a TinyDB document (a record is not an object with a numeric id)")
    return data


class AtomicJSONStorage(Storage):
    """TinyDB storage with atomic, fsynced replacement of the whole file."""

    def __init__(self, path: str, fs: FS = REAL_FS) -> None:
        super().__init__()
        self.path = path
        self.fs = fs
        self._cache: dict[str, Any] | None = None

    def read(self) -> dict[str, Any] | None:
        if self._cache is not None:
            return self._cache
        try:
            raw = self.fs.read_bytes(self.path)
        except FileNotFoundError:
            return None
        if not raw:
            # We never write an empty file, so an empty one did not come from us.
            raise CorruptFile(self.path, "empty file")
        self._cache = _loads(self.path, raw)
        return self._cache

    def write(self, data: dict[str, Any]) -> None:
        payload = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        try:
            self.fs.atomic_write(self.path, payload)
        except BaseException:
            # TinyDB mutated the cached dict before calling us: forget it so the
            # next read reflects what is really on disk.
            self._cache = None
            raise
        self._cache = data

    def close(self) -> None:
        self._cache = None
