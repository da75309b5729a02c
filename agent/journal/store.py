"""The scan journal: every scan, durably, before anything else happens.

Layout: ``<state_dir>/journal/seg-NNNNNNNN.json``, each a TinyDB file (through
:class:`agent.journal.storage.AtomicJSONStorage`) holding at most ``segment_size``
scans in its table ``scans``. An insert rewrites only the newest segment, so
its cost does not grow with the backlog, and no process ever holds more than
a couple of segments in memory: the rest is summarised per segment
(:class:`SegmentInfo`).

A record (one per scan)::

    id           unique id (hex uuid4)
    tag          the card number as sent to iFlow (after reader.tag_format)
    raw          the tag as read
    reader       the reader's name ("crosschex" for reconciled punches)
    source       "reader" | "crosschex"
    captured_at  UTC wall clock at capture, ISO 8601 with microseconds
    boot_id      kernel boot id at capture
    mono_ns      CLOCK_BOOTTIME at capture, ns (for correcting the wall clock)
    synced       whether the wall clock was trustworthy at capture
    state        "pending" | "delivered" | "duplicate" | "rejected"
    attempts     delivery attempts so far
    error        the last delivery error (whole-request failure), or null
    message      iFlow's message for this record (duplicate/rejected), or null
    done_at      UTC time the record reached a final state, or null
    sent_date / sent_time   the local date and time iFlow received

Delivered, duplicate and rejected records stay as history; a segment whose
records are all final and untouched for ``retention_days`` is deleted.

Pins (``<state_dir>/journal/pins.json``, one small JSON object, replaced
atomically): the date and time a pending record is about to be sent with,
written durably before it is first sent, so that every resend after a crash
is identical (:meth:`Journal.pin`). Records are read with their pin as
``sent_date`` / ``sent_time``; the pin is dropped once the record is final
(its segment then holds the same fields). Pinning costs one small write per
delivery refill instead of rewriting whole segments.

Concurrency: one process writes (the daemon, or a command holding the journal
lock when no daemon runs). Inside it, a lock per segment serialises writers to
that segment and a short meta lock guards the segment list, so the door's
insert never waits for the uploader's work on older segments.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Container, Iterable, Iterator

from tinydb import TinyDB

from agent.errors import JournalError
from agent.fsio import FS, REAL_FS, TMP_SUFFIX
from agent.journal.storage import AtomicJSONStorage, CorruptFile

log = logging.getLogger("agent.journal")

STATES = ("pending", "delivered", "duplicate", "rejected")
FINAL_STATES = frozenset({"delivered", "duplicate", "rejected"})
TABLE = "scans"
_SEGMENT_RE = re.compile(r"^seg-(\d{8})\.json$")
PINS_FILE = "pins.json"
# Keys that locate a record inside the journal; returned with records, never stored.
LOC_KEYS = ("_seg", "_doc")



def utc_now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


@dataclass
class SegmentInfo:
    number: int
    path: str
    count: int = 0
    states: Counter = field(default_factory=Counter)
    oldest_pending: str | None = None  # smallest captured_at among pending records
    last_activity: str = ""  # newest captured_at or done_at
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def absorb(self, docs: Iterable[dict]) -> None:
        """Recompute the summary from the segment's records."""
        self.count = 0
        self.states = Counter()
        self.oldest_pending = None
        self.last_activity = ""
        for doc in docs:
            self._add(doc)

    def _add(self, doc: dict) -> None:
        self.count += 1
        state = doc.get("state", "pending")
        self.states[state] += 1
        captured = str(doc.get("captured_at", ""))
        if state == "pending" and (self.oldest_pending is None or captured < self.oldest_pending):
            self.oldest_pending = captured
        self.last_activity = max(self.last_activity, captured, str(doc.get("done_at") or ""))


class _Segment:
    """An open segment: a TinyDB instance over the atomic storage."""

    def __init__(self, info: SegmentInfo, fs: FS) -> None:
        self.info = info
        self.db = TinyDB(info.path, storage=AtomicJSONStorage, fs=fs)
        self.table = self.db.table(TABLE, cache_size=0)

    def raw(self) -> dict[str, dict]:
        """The storage's own parsed table (cached after the first read): read only."""
        return (self.db.storage.read() or {}).get(TABLE, {})

    def docs(self, states: frozenset[str] | set[str] | None = None,
             skip: Container[str] = (), pins: dict[str, tuple[str, str]] | None = None) -> list[dict]:
        """The segment's records in insertion order, with their location keys
        (only those in ``states`` and whose id is not in ``skip``, if given),
        pending ones with their send time from ``pins``.

        Read from the storage's parsed document (cached after the first read),
        not through TinyDB's Document wrappers, and filtered before copying:
        this is on every refill of a delivery pass.
        """
        number = self.info.number
        out = [dict(doc, _seg=number, _doc=int(doc_id)) for doc_id, doc in self.raw().items()
               if (states is None or doc.get("state") in states) and doc.get("id") not in skip]
        out.sort(key=lambda r: r["_doc"])
        if pins:
            for rec in out:
                pin = pins.get(rec["id"])
                if pin is not None and rec.get("state") == "pending":
                    rec["sent_date"], rec["sent_time"] = pin
        return out

    def close(self) -> None:
        self.db.close()


class Journal:
    """The segmented, crash-safe scan journal. See the module docstring."""

    def __init__(
        self,
        directory: str,
        *,
        segment_size: int = 256,
        retention_days: float = 30.0,
        fs: FS = REAL_FS,
        open_cache: int = 2,
    ) -> None:
        self.directory = directory
        self.segment_size = segment_size
        self.retention_days = retention_days
        self.fs = fs
        self._meta = threading.RLock()
        self._segments: dict[int, SegmentInfo] = {}
        self._open: dict[int, _Segment] = {}  # active + a few recently used
        self._open_cache = open_cache
        self.quarantined: list[str] = []
        self._pins_path = os.path.join(directory, PINS_FILE)
        # id -> (date, time); replaced, never mutated, so readers need no lock
        self._pins: dict[str, tuple[str, str]] = {}
        self._pins_lock = threading.Lock()
        self._open_journal()

    # ------------------------------------------------------------------ open

    def _open_journal(self) -> None:
        self.fs.makedirs(self.directory)
        names = sorted(self.fs.listdir(self.directory))
        for name in names:
            if name.endswith(TMP_SUFFIX):
                # An interrupted atomic write: the real file is intact.
                self.fs.unlink(os.path.join(self.directory, name))
                log.info("removed stray temp file %s", name)
        pins = self._load_pins() if PINS_FILE in names else {}
        pending: set[str] = set()
        for name in names:
            m = _SEGMENT_RE.match(name)
            if not m:
                continue
            info = SegmentInfo(int(m.group(1)), os.path.join(self.directory, name))
            try:
                seg = _Segment(info, self.fs)
                docs = seg.raw().values()
                info.absorb(docs)
                if pins:
                    pending.update(d.get("id") for d in docs if d.get("state") == "pending")
                seg.close()
            except CorruptFile as exc:
                self._quarantine(info.path, exc.reason)
                continue
            self._segments[info.number] = info
        # Pins of records that are no longer pending are history: forget them.
        self._pins = {k: v for k, v in pins.items() if k in pending}

    def _load_pins(self) -> dict[str, tuple[str, str]]:
        try:
            raw = self.fs.read_bytes(self._pins_path)
        except FileNotFoundError:
            return {}
        try:
            doc = json.loads(raw.decode("utf-8"))
            if not isinstance(doc, dict) or not isinstance(doc.get("pins"), dict):
                raise ValueError("not a pins document")
            pins = {}
            for key, value in doc["pins"].items():
                if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value)):
                    raise ValueError(f"bad pin for {key!r:.40}")
                pins[key] = (value[0], value[1])
            return pins
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
            aside = f"{self._pins_path}.corrupt-{stamp}"
            self.fs.move_aside(self._pins_path, aside)
            self.quarantined.append(aside)
            log.error("JOURNAL PINS UNREADABLE: %s (%s); moved aside to %s. Scans being resent after an "
                      "interruption may reach iFlow with a corrected time, as a second attendance.",
                      self._pins_path, exc, aside)
            return {}

    def _quarantine(self, path: str, reason: str) -> None:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        aside = f"{path}.corrupt-{stamp}"
        self.fs.move_aside(path, aside)
        self.quarantined.append(aside)
        log.error(
            "JOURNAL SEGMENT UNREADABLE: %s (%s); moved aside to %s for inspection. "
            "Scans in it are NOT being delivered.",
            path, reason, aside,
        )

    # ------------------------------------------------------------- segments

    def _segment(self, number: int) -> _Segment:
        """Open (or reuse) a segment. Caller holds the meta lock."""
        seg = self._open.get(number)
        if seg is not None:
            self._open[number] = self._open.pop(number)  # most recently used last
            return seg
        seg = _Segment(self._segments[number], self.fs)
        self._open[number] = seg
        active = self._active_number()
        while len(self._open) > self._open_cache + 1:
            victim = next(n for n in self._open if n != active and n != number)
            self._open.pop(victim).close()
        return seg

    def _active_number(self) -> int | None:
        return max(self._segments) if self._segments else None

    def _segment_for_insert(self) -> SegmentInfo:
        active = self._active_number()
        if active is not None and self._segments[active].count < self.segment_size:
            return self._segments[active]
        number = (active or 0) + 1
        info = SegmentInfo(number, os.path.join(self.directory, f"seg-{number:08d}.json"))
        self._segments[number] = info
        return info

    # --------------------------------------------------------------- writes

    def append(self, fields: dict[str, Any]) -> dict:
        """Durably record one scan; returns the stored record (with its id).

        Returns only after the segment was fsynced and renamed into place and
        the directory fsynced: the caller may then acknowledge the scan.
        Raises :class:`JournalError` if that could not be done.
        """
        rec = {
            "id": uuid.uuid4().hex,
            "state": "pending",
            "attempts": 0,
            "error": None,
            "message": None,
            "done_at": None,
        }
        rec.update(fields)
        with self._meta:
            info = self._segment_for_insert()
            seg = self._segment(info.number)
        with info.lock:
            try:
                doc_id = seg.table.insert(rec)
            except OSError as exc:
                with self._meta:
                    self._resync(info, seg)
                raise JournalError(f"could not store scan: {exc.strerror or exc}") from exc
            with self._meta:
                info._add(rec)
        out = dict(rec)
        out["_seg"], out["_doc"] = info.number, doc_id
        return out

    def _resync(self, info: SegmentInfo, seg: _Segment) -> None:
        """After a failed write, make the summary match what the file holds: a
        failure after the rename (fsync of the directory) leaves the record
        visible, though unacknowledged. Caller holds the meta lock."""
        try:
            docs = seg.docs()  # the storage dropped its cache: this reads the file
        except (OSError, CorruptFile):
            docs = None
        if docs:
            info.absorb(docs)
        elif docs is not None or info.count == 0:
            # Never written: forget the empty segment.
            self._segments.pop(info.number, None)
            self._open.pop(info.number, None)

    def update(self, changes: Iterable[tuple[dict, dict[str, Any]]]) -> int:
        """Apply field changes to records (as returned by this journal).

        ``changes`` is ``(record, fields)`` pairs; records carry their location.
        Changes to one segment are written in one durable write. Returns the
        number of records changed. Raises :class:`JournalError`.
        """
        changes = list(changes)
        by_seg: dict[int, dict[int, tuple[str, dict[str, Any]]]] = {}
        for rec, fields in changes:
            by_seg.setdefault(rec["_seg"], {})[rec["_doc"]] = (rec["id"], fields)
        changed = 0
        for number, per_doc in sorted(by_seg.items()):
            with self._meta:
                info = self._segments.get(number)
                if info is None:
                    continue
                seg = self._segment(number)
            per_id = dict(per_doc.values())
            with info.lock:
                try:
                    # One durable write for the whole segment.
                    seg.table.update(lambda doc: doc.update(per_id[doc["id"]]), doc_ids=list(per_doc))
                except KeyError:
                    raise JournalError(f"journal segment {number} changed under the caller") from None
                except OSError as exc:
                    raise JournalError(f"could not update journal: {exc.strerror or exc}") from exc
                with self._meta:
                    info.absorb(seg.raw().values())
                changed += len(per_doc)
        # A final record carries its send time itself: its pin is history.
        final = [rec["id"] for rec, fields in changes if fields.get("state") in FINAL_STATES]
        if final and self._pins:
            self.unpin(final)
        return changed

    def pin(self, pins: Iterable[tuple[str, str, str]]) -> None:
        """Durably record ``(id, date, time)``: the local date and time pending
        records are about to be sent with (see the module docstring). Returns
        only once the pins file was fsynced and renamed into place. Raises
        :class:`JournalError`."""
        with self._pins_lock:
            new = dict(self._pins)
            new.update((rid, (date, time_)) for rid, date, time_ in pins)
            doc = {"version": 1, "pins": {k: list(v) for k, v in new.items()}}
            try:
                self.fs.atomic_write(self._pins_path, json.dumps(doc, separators=(",", ":")).encode())
            except OSError as exc:
                raise JournalError(f"could not pin send times: {exc.strerror or exc}") from exc
            self._pins = new

    def unpin(self, ids: Iterable[str]) -> None:
        """Forget pins of records that were never sent (kept on disk until the
        next :meth:`pin`; a pin left there only fixes a time, it never adds a send)."""
        with self._pins_lock:
            drop = set(ids) & self._pins.keys()
            if drop:
                self._pins = {k: v for k, v in self._pins.items() if k not in drop}

    def pinned(self) -> int:
        """How many pending records have a pin."""
        return len(self._pins)

    def compact(self, now: float | None = None) -> int:
        """Delete segments whose records are all final and older than retention."""
        cutoff_ts = (now if now is not None else time.time()) - self.retention_days * 86400
        cutoff = datetime.fromtimestamp(cutoff_ts, timezone.utc).isoformat(timespec="microseconds")
        removed = 0
        with self._meta:
            active = self._active_number()
            for number, info in list(self._segments.items()):
                if number == active or info.states.get("pending", 0):
                    continue
                if info.last_activity and info.last_activity < cutoff:
                    seg = self._open.pop(number, None)
                    if seg:
                        seg.close()
                    with info.lock:
                        try:
                            self.fs.remove_durably(info.path)
                        except OSError as exc:
                            log.warning("could not remove old segment %s: %s", info.path, exc)
                            continue
                    del self._segments[number]
                    removed += 1
        return removed

    # ---------------------------------------------------------------- reads

    def _segment_docs(self, number: int, states: set[str] | None = None,
                      skip: Container[str] = ()) -> list[dict]:
        with self._meta:
            info = self._segments.get(number)
            if info is None:
                return []
            seg = self._segment(number)
        with info.lock:
            return seg.docs(states, skip, self._pins)

    def records(self, states: Iterable[str] | None = None, *, skip: Container[str] = ()) -> Iterator[dict]:
        """Every record (optionally only those in ``states``, and not those
        whose id is in ``skip``), oldest first.

        Streams one segment at a time; records carry their location keys.
        """
        wanted = set(states) if states is not None else None
        with self._meta:
            numbers = sorted(self._segments)
        for number in numbers:
            info = self._segments.get(number)
            if info is None:
                continue
            if wanted is not None and not any(info.states.get(s) for s in wanted):
                continue
            yield from self._segment_docs(number, wanted, skip)

    def pending(self, limit: int | None = None) -> list[dict]:
        """Pending records, oldest first (journal order), at most ``limit``."""
        out: list[dict] = []
        for rec in self.records(("pending",)):
            out.append(rec)
            if limit is not None and len(out) >= limit:
                break
        return out

    def tail(self, n: int) -> list[dict]:
        """The newest ``n`` records of the newest segment (for debounce seeding)."""
        active = self._active_number()
        if active is None:
            return []
        return self._segment_docs(active)[-n:]

    def find(self, ids: Iterable[str]) -> list[dict]:
        wanted = set(ids)
        found = []
        for rec in self.records():
            if rec["id"] in wanted:
                found.append(rec)
        return found

    def summary(self) -> dict[str, Any]:
        """Counts for `agent status`, from the in-memory segment summaries."""
        with self._meta:
            states: Counter = Counter()
            oldest = None
            for info in self._segments.values():
                states.update(info.states)
                if info.oldest_pending and (oldest is None or info.oldest_pending < oldest):
                    oldest = info.oldest_pending
            return {
                "pending": states.get("pending", 0),
                "delivered": states.get("delivered", 0) + states.get("duplicate", 0),
                "duplicate": states.get("duplicate", 0),
                "rejected": states.get("rejected", 0),
                "total": sum(states.values()),
                "oldest_pending": oldest,
                "segments": len(self._segments),
                "quarantined": list(self.quarantined),
            }

    def close(self) -> None:
        with self._meta:
            for seg in self._open.values():
                seg.close()
            self._open.clear()


def strip_location(rec: dict) -> dict:
    """A record without the journal's location keys (for output)."""
    return {k: v for k, v in rec.items() if k not in LOC_KEYS}
