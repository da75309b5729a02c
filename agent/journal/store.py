"""The scan journal: every scan, durably, before anything else happens.

Layout: ``<state_dir>/journal/seg-NNNNNNNN.json``, each a TinyDB file
(:mod:`agent.journal.segments`) holding at most ``segment_size`` scans. An
insert rewrites only the newest segment, so its cost does not grow with the
backlog, and no process ever holds more than a couple of segments in memory:
the rest is summarised per segment (:class:`~agent.journal.segments.SegmentInfo`).

A record (one per scan) is a JSON object with the fields :mod:`agent.records`
lists; the journal adds ``id`` and the delivery fields (``state`` "pending",
no attempts yet) when it stores a scan. It hands records out as
:class:`agent.records.Record` objects, each with its location (``loc``), and
changes them by the fields named (:meth:`Journal.update`), never by rewriting
a record whole: fields this version does not know survive every change.

Delivered and duplicate records stay as history; a segment whose records are
all history and untouched for ``retention_days`` is deleted. A rejected or
failed record is history only once a person dismissed it (``dismissed_at``):
until then, whatever its age, it keeps its segment (nothing a person must
still act on is deleted).

Pins (``<state_dir>/journal/pins.json``, :mod:`agent.journal.pins`): the date
and time a pending record is about to be sent with, written durably before it
is first sent, so that every resend after a crash is identical
(:meth:`Journal.pin`). Records are read with their pin as ``sent_date`` /
``sent_time``; the pin is dropped once the record is final (its segment then
holds the same fields).

Every file operation goes through an :class:`agent.fsio.FS` (the tests' crash
double sees every crash point).

Concurrency: one process writes (the daemon, or a command holding the journal
lock when no daemon runs). Inside it, a lock per segment serialises writers to
that segment and a short meta lock guards the segment list, so the door's
insert never waits for the uploader's work on older segments.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any, Container, Iterable, Iterator

from agent.errors import JournalError
from agent.fsio import FS, REAL_FS, TMP_SUFFIX
from agent.journal.pins import PINS_FILE, Pins
from agent.journal.segments import (
    Segment,
    SegmentInfo,
    segment_number,
    segment_path,
    summarise,
)
from agent.journal.storage import CorruptFile
from agent.records import Location, Record, State

log = logging.getLogger("agent.journal")


def utc_now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _uuid4_hex() -> str:
    """``uuid.uuid4().hex`` without importing uuid (and platform with it: ~5 ms
    that every `agent status` would pay, more on a Pi): RFC 4122 version 4."""
    b = bytearray(os.urandom(16))
    b[6] = (b[6] & 0x0F) | 0x40
    b[8] = (b[8] & 0x3F) | 0x80
    return b.hex()


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
        self._open: dict[int, Segment] = {}  # active + a few recently used
        self._open_cache = open_cache
        self.quarantined: list[str] = []
        self._pins = Pins(directory, fs)
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
        pins = self._read_pins() if PINS_FILE in names else {}
        pending: set[str] = set()
        unknown: Counter[str] = Counter()
        for name in names:
            number = segment_number(name)
            if number is None:
                continue
            info = SegmentInfo(number, os.path.join(self.directory, name))
            try:
                seg = Segment(info, self.fs)
                docs = seg.raw().values()
                info.absorb(docs)
                if pins:
                    pending.update(d.get("id") for d in docs if d.get("state") == State.PENDING)
                seg.close()
            except CorruptFile as exc:
                self._quarantine(info.path, exc.reason, "JOURNAL SEGMENT UNREADABLE: %s (%s); moved aside to %s "
                                 "for inspection. Scans in it are NOT being delivered.")
                continue
            self._segments[info.number] = info
            unknown.update(info.unknown_states())
        # Pins of records that are no longer pending are history: forget them.
        self._pins.by_id = {k: v for k, v in pins.items() if k in pending}
        if unknown:
            log.error("JOURNAL RECORDS IN A STATE THIS VERSION DOES NOT KNOW: %s; kept as they are, NOT "
                      "delivered, their segments never removed (an agent version that knows the state "
                      "delivers them)", ", ".join(f"{n} {s or '(none)'!r}" for s, n in sorted(unknown.items())))

    def _read_pins(self) -> dict[str, tuple[str, str]]:
        try:
            return self._pins.read()
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
            self._quarantine(self._pins.path, exc, "JOURNAL PINS UNREADABLE: %s (%s); moved aside to %s. Scans "
                             "being resent after an interruption may reach iFlow with a corrected time, as a "
                             "second attendance.")
            return {}

    def _quarantine(self, path: str, reason: object, message: str) -> None:
        """Move an unreadable file aside, never delete it; ``message`` is logged
        with the path, the reason and where the file went."""
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        aside = f"{path}.corrupt-{stamp}"
        self.fs.move_aside(path, aside)
        self.quarantined.append(aside)
        log.error(message, path, reason, aside)

    # ------------------------------------------------------------- segments

    def _segment(self, number: int) -> Segment:
        """Open (or reuse) a segment. Caller holds the meta lock."""
        seg = self._open.get(number)
        if seg is not None:
            self._open[number] = self._open.pop(number)  # most recently used last
            return seg
        seg = Segment(self._segments[number], self.fs)
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
        info = SegmentInfo(number, segment_path(self.directory, number))
        self._segments[number] = info
        return info

    # --------------------------------------------------------------- writes

    def append(self, fields: dict[str, Any]) -> Record:
        """Durably record one scan; returns the stored record (with its id).

        Returns only after the segment was fsynced and renamed into place and
        the directory fsynced: the caller may then acknowledge the scan.
        Raises :class:`JournalError` if that could not be done.
        """
        rec = {
            "id": _uuid4_hex(),
            "state": State.PENDING.value,
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
                info.add(rec)
        return Record.from_doc(rec, Location(info.number, doc_id))

    def _resync(self, info: SegmentInfo, seg: Segment) -> None:
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

    def update(self, changes: Iterable[tuple[Record, dict[str, Any]]]) -> int:
        """Apply field changes to records (as returned by this journal).

        ``changes`` is ``(record, fields)`` pairs, ``fields`` by on-disk name
        (a ``state`` as a :class:`State` or its string); records carry their
        location. Only the named fields change: the rest of each stored
        record, fields this version does not know included, stays as it is.
        The records passed are not changed (read them again).
        Changes to one segment are written in one durable write. Returns the
        number of records changed. Raises :class:`JournalError`.
        """
        changes = list(changes)
        by_seg: dict[int, dict[int, tuple[str, dict[str, Any]]]] = {}
        final = []
        for rec, fields in changes:
            if "state" in fields:
                state = State(fields["state"])
                fields = dict(fields, state=state.value)  # the file holds the plain string
                if state.final:
                    final.append(rec.id)
            loc = rec.loc
            if loc is None:
                raise ValueError(f"record {rec.id!r} was not read from this journal")
            by_seg.setdefault(loc.segment, {})[loc.doc] = (rec.id, fields)
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
        if final and self._pins.by_id:
            self.unpin(final)
        return changed

    def pin(self, pins: Iterable[tuple[str, str, str]]) -> None:
        """Durably record ``(id, date, time)``: the local date and time pending
        records are about to be sent with (see the module docstring). Returns
        only once the pins file was fsynced and renamed into place. Raises
        :class:`JournalError`."""
        self._pins.pin(pins)

    def unpin(self, ids: Iterable[str]) -> None:
        """Forget pins of records that were never sent (kept on disk until the
        next :meth:`pin`; a pin left there only fixes a time, it never adds a send)."""
        self._pins.unpin(ids)

    def pinned(self) -> int:
        """How many pending records have a pin."""
        return len(self._pins.by_id)

    def _cutoff(self, now: float | None) -> str:
        """The UTC ISO time ``retention_days`` before ``now`` (default: the clock)."""
        cutoff_ts = (now if now is not None else time.time()) - self.retention_days * 86400
        return datetime.fromtimestamp(cutoff_ts, UTC).isoformat(timespec="microseconds")

    def compact(self, now: float | None = None) -> int:
        """Delete segments of history (every record delivered, duplicate, or
        rejected/failed and dismissed) untouched for longer than retention."""
        cutoff = self._cutoff(now)
        removed = 0
        with self._meta:
            active = self._active_number()
            for number, info in list(self._segments.items()):
                if number == active or not info.removable():
                    continue  # pending, waiting for a person, or in a state this version does not know
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
                      skip: Container[str] = ()) -> list[Record]:
        with self._meta:
            info = self._segments.get(number)
            if info is None:
                return []
            seg = self._segment(number)
        with info.lock:
            return seg.docs(states, skip, self._pins.by_id)

    def records(self, states: Iterable[State] | None = None, *,
                skip: Container[str] = ()) -> Iterator[Record]:
        """Every record (optionally only those in ``states``, and not those
        whose id is in ``skip``), oldest first.

        Streams one segment at a time; records carry their location (``loc``).
        """
        for recs in self.by_segment(states, skip=skip):
            yield from recs

    def by_segment(self, states: Iterable[State] | None = None, *,
                   skip: Container[str] = ()) -> Iterator[list[Record]]:
        """:meth:`records`, one list per segment (segments with none left out):
        a reader that stops at a segment's end reads no record of the next."""
        wanted = set(states) if states is not None else None
        with self._meta:
            numbers = sorted(self._segments)
        for number in numbers:
            info = self._segments.get(number)
            if info is None:
                continue
            if wanted is not None and not any(info.states.get(s) for s in wanted):
                continue
            recs = self._segment_docs(number, wanted, skip)
            if recs:
                yield recs

    def pending(self, limit: int | None = None) -> list[Record]:
        """Pending records, oldest first (journal order), at most ``limit``."""
        out: list[Record] = []
        for rec in self.records((State.PENDING,)):
            out.append(rec)
            if limit is not None and len(out) >= limit:
                break
        return out

    def tail(self, n: int) -> list[Record]:
        """The newest ``n`` records of the newest segment (for debounce seeding)."""
        active = self._active_number()
        if active is None:
            return []
        return self._segment_docs(active)[-n:]

    def summary(self) -> dict[str, Any]:
        """Counts for `agent status`, from the in-memory segment summaries
        (the fields: :func:`agent.journal.segments.summarise`)."""
        cutoff = self._cutoff(None)
        with self._meta:
            out = summarise(self._segments.values(), cutoff)
            out["quarantined"] = list(self.quarantined)
            return out

    def close(self) -> None:
        with self._meta:
            for seg in self._open.values():
                seg.close()
            self._open.clear()

