"""The journal's segment files: ``seg-NNNNNNNN.json``, each a TinyDB file.

A segment holds at most ``segment_size`` scans in its table ``scans``,
written through :class:`agent.journal.storage.AtomicJSONStorage`. The journal
keeps a :class:`SegmentInfo` summary of every segment in memory and opens
only a couple of them (:class:`Segment`), so no process ever holds the whole
backlog.
"""

from __future__ import annotations

import os
import re
import threading
from collections import Counter
from operator import itemgetter
from typing import Container, Iterable

from tinydb import TinyDB

from agent.fsio import FS
from agent.journal.storage import AtomicJSONStorage
from agent.records import Location, Record, State

TABLE = "scans"
_SEGMENT_RE = re.compile(r"^seg-(\d{8})\.json$")


def segment_number(name: str) -> int | None:
    """The number of the segment file ``name``, or None if it is not one."""
    m = _SEGMENT_RE.match(name)
    return int(m.group(1)) if m else None


def segment_path(directory: str, number: int) -> str:
    return os.path.join(directory, f"seg-{number:08d}.json")


def state_key(doc: dict) -> str:
    """A stored record's state as counted: the string it holds, "" when it has
    none (a state this version does not know either way: see :mod:`agent.records`)."""
    state = doc.get("state")
    return state if isinstance(state, str) else ""


# Records iFlow refused, or that failed alone: a person must act on them.
SET_ASIDE = (State.REJECTED, State.FAILED)
_SET_ASIDE = frozenset(s.value for s in SET_ASIDE)


def is_dismissed(doc: dict | Record) -> bool:
    """Whether a person dismissed this record (``dismissed_at`` a non-empty
    string): from then on it is history, as a delivered one is."""
    value = doc.get("dismissed_at")
    return isinstance(value, str) and bool(value.strip())


class SegmentInfo:
    """What the journal keeps in memory of one segment. (A plain class: the
    journal module must not import dataclasses, see :mod:`agent.records`.)"""

    __slots__ = ("number", "path", "count", "states", "oldest_pending", "last_activity", "waiting",
                 "dismissed", "lock")

    def __init__(self, number: int, path: str) -> None:
        self.number = number
        self.path = path
        self.count = 0
        self.states: Counter[str] = Counter()  # records by on-disk state
        self.oldest_pending: str | None = None  # smallest captured_at among pending records
        self.last_activity = ""  # newest captured_at or done_at
        # done_at (else captured_at) of each rejected or failed record not
        # dismissed: what keeps the segment from retention, and doctor's ages.
        self.waiting: list[str] = []
        self.dismissed = 0  # rejected or failed records a person dismissed
        self.lock = threading.Lock()

    def __repr__(self) -> str:
        return (f"SegmentInfo(number={self.number!r}, path={self.path!r}, count={self.count!r}, "
                f"states={self.states!r}, oldest_pending={self.oldest_pending!r}, "
                f"last_activity={self.last_activity!r}, waiting={self.waiting!r}, dismissed={self.dismissed!r})")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SegmentInfo):
            return NotImplemented
        return self._key() == other._key()

    __hash__ = None  # type: ignore[assignment]  # mutable

    def _key(self) -> tuple:
        return (self.number, self.path, self.count, self.states, self.oldest_pending, self.last_activity,
                self.waiting, self.dismissed)

    def absorb(self, docs: Iterable[dict]) -> None:
        """Recompute the summary from the segment's records."""
        self.count = 0
        self.states = Counter()
        self.oldest_pending = None
        self.last_activity = ""
        self.waiting = []
        self.dismissed = 0
        for doc in docs:
            self.add(doc)

    def add(self, doc: dict) -> None:
        self.count += 1
        state = state_key(doc)
        self.states[state] += 1
        captured = str(doc.get("captured_at", ""))
        if state == State.PENDING and (self.oldest_pending is None or captured < self.oldest_pending):
            self.oldest_pending = captured
        done = str(doc.get("done_at") or "")
        self.last_activity = max(self.last_activity, captured, done)
        if state in _SET_ASIDE:
            if is_dismissed(doc):
                self.dismissed += 1
            else:
                self.waiting.append(done or captured)

    def unknown_states(self) -> Counter[str]:
        """Its records in a state this version does not know, by state."""
        return Counter({s: n for s, n in self.states.items() if not State.of(s).known})

    def removable(self) -> bool:
        """Every record final and none waiting for a person (rejected or failed,
        not dismissed): the segment is history (retention may delete it)."""
        return not self.waiting and all(State.of(s).final for s in self.states)


def summarise(infos: Iterable[SegmentInfo], cutoff: str) -> dict:
    """The journal's counts from its segment summaries (`agent status`).

    ``rejected`` and ``failed`` count records in that state, dismissed or
    not; ``dismissed`` those a person dismissed; ``unresolved`` the rest (a
    person must act), ``unresolved_old`` how many of these are older than
    ``cutoff`` (done_at, else captured_at) and ``oldest_unresolved`` the
    oldest's time."""
    states: Counter = Counter()
    oldest = None
    waiting: list[str] = []
    dismissed = 0
    segments = 0
    for info in infos:
        segments += 1
        states.update(info.states)
        if info.oldest_pending and (oldest is None or info.oldest_pending < oldest):
            oldest = info.oldest_pending
        waiting += info.waiting
        dismissed += info.dismissed
    return {
        "pending": states[State.PENDING],
        "delivered": states[State.DELIVERED] + states[State.DUPLICATE],
        "duplicate": states[State.DUPLICATE],
        "rejected": states[State.REJECTED],
        "failed": states[State.FAILED],
        "dismissed": dismissed,
        "unresolved": len(waiting),
        "unresolved_old": sum(1 for w in waiting if w < cutoff),
        "oldest_unresolved": min(waiting, default=None),
        "total": sum(states.values()),
        "oldest_pending": oldest,
        "segments": segments,
    }


class Segment:
    """An open segment: a TinyDB instance over the atomic storage."""

    def __init__(self, info: SegmentInfo, fs: FS) -> None:
        self.info = info
        self.db = TinyDB(info.path, storage=AtomicJSONStorage, fs=fs)
        self.table = self.db.table(TABLE, cache_size=0)

    def raw(self) -> dict[str, dict]:
        """The storage's own parsed table (cached after the first read): read only."""
        return (self.db.storage.read() or {}).get(TABLE, {})

    def docs(self, states: Container[str] | None = None, skip: Container[str] = (),
             pins: dict[str, tuple[str, str]] | None = None) -> list[Record]:
        """The segment's records in insertion order (only those in ``states``
        and whose id is not in ``skip``, if given), pending ones with their
        send time from ``pins``.

        Read from the storage's parsed document (cached after the first read),
        not through TinyDB's Document wrappers, and filtered before a Record
        is built: this is on every refill of a delivery pass.
        """
        number = self.info.number
        found = [(int(doc_id), doc) for doc_id, doc in self.raw().items()
                 if (states is None or state_key(doc) in states) and doc.get("id") not in skip]
        found.sort(key=itemgetter(0))
        out = [Record.from_doc(doc, Location(number, doc_id)) for doc_id, doc in found]
        if pins:
            for rec in out:
                pin = pins.get(rec.id)
                if pin is not None and rec.state is State.PENDING:
                    rec.sent_date, rec.sent_time = pin
        return out

    def close(self) -> None:
        self.db.close()
