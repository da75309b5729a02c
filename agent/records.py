"""The journal's record and its states: the one set of names every stage uses.

A scan is a :class:`Record` from the moment the journal stores it. On disk it
is a JSON object with these fields (the public layout under ``state_dir``:
an existing journal always opens, and fields this version does not know are
kept as they are, in :attr:`Record.extra`)::

    id           unique id (hex uuid4)
    state        one of :class:`State`
    dismissed_at UTC time a person dismissed a rejected/failed record (retention may then delete it)
    attempts     delivery attempts so far
    error        the last whole-request delivery error, or null
    message      iFlow's message for this record (duplicate/rejected), or null
    done_at      UTC time the record reached a final state, or null
    tag          the card number as sent to iFlow (after reader.tag_format)
    raw          the tag as read
    reader       the reader's name ("crosschex" for reconciled punches)
    source       "reader" | "crosschex"
    captured_at  UTC wall clock at capture, ISO 8601 with microseconds
    boot_id      kernel boot id at capture ("external" for reconciled punches)
    mono_ns      CLOCK_BOOTTIME at capture, ns (for correcting the wall clock)
    synced       whether the wall clock was trustworthy at capture
    sent_date / sent_time   the local date and time iFlow received (or will)

A Record holds what the file holds, unchecked: a field the file lacks reads
as None (and :meth:`Record.to_doc` leaves it out again), a malformed value is
kept as it is and judged by whoever reads it (the clock's
:func:`agent.clock.policy.parse_stamp` holds a record it cannot place in
time). The journal never writes a Record back whole: a change is the fields
it names, applied to the stored object, so every field on disk survives.

A state this version does not know (written by a newer version, or by hand)
is kept, never guessed at: :meth:`State.of` gives an ``UNKNOWN`` member whose
value is the string as read (a missing or non-string state reads as ``""``).
Such a record is never sent (only pending records are: sending one a newer
version may have delivered could make a second attendance), never listed or
retried as rejected, counted only in the journal's ``total``, and its segment
is never deleted by retention (that needs every record final): it waits,
unchanged, for a version that knows its state. The journal logs an error
naming such states when it opens.

Pure: standard library only. No ``dataclasses`` (its import costs
``agent status`` about 12 ms, several times that on a Pi): plain classes.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, NamedTuple


class State(StrEnum):
    """Where a record stands. The values are what the journal files hold."""

    PENDING = "pending"
    DELIVERED = "delivered"
    DUPLICATE = "duplicate"
    REJECTED = "rejected"
    # Failed alone, again and again, as a whole request (HTTP status and the
    # server's excerpt in ``message``): iFlow gave no verdict of its own, so a
    # person retries or dismisses it; never sent again by itself.
    FAILED = "failed"

    @classmethod
    def _missing_(cls, value: object) -> State | None:
        # A state this version does not know: kept as read (module docstring).
        if not isinstance(value, str):
            return None
        member = str.__new__(cls, value)
        member._name_ = "UNKNOWN"
        member._value_ = value
        return member

    @classmethod
    def of(cls, raw: object) -> State:
        """The state an on-disk value names; never raises (see the module docstring)."""
        if not isinstance(raw, str):
            return _NO_STATE
        member = _BY_VALUE.get(raw)
        return cls(raw) if member is None else member

    @property
    def known(self) -> bool:
        return self._name_ != "UNKNOWN"

    @property
    def final(self) -> bool:
        """Delivered, duplicate, rejected or failed: no longer sent by itself."""
        return self in _FINAL


_NO_STATE = State("")  # the unknown state of a record without a (string) state
_BY_VALUE: dict[str, State] = {s.value: s for s in State}
_BY_VALUE[""] = _NO_STATE
_FINAL = frozenset({State.DELIVERED, State.DUPLICATE, State.REJECTED, State.FAILED})


class Location(NamedTuple):
    """Where the journal keeps a record: segment number and TinyDB document id."""

    segment: int
    doc: int


# The known fields, in the order the journal first writes them.
FIELDS = ("id", "state", "attempts", "error", "message", "done_at", "tag", "raw", "reader", "source",
          "captured_at", "boot_id", "mono_ns", "synced", "sent_date", "sent_time")
_KNOWN = frozenset(FIELDS)
_NOTHING: tuple[str, ...] = ()
_UNSENT = ("sent_date", "sent_time")


class Record:
    """One scan as the journal holds it, with where it lies (``loc``).

    Read by attribute; :meth:`get` reads any field by its on-disk name
    (:attr:`extra` holds the fields this version does not know).
    ``Record(loc, **fields)`` is :meth:`from_doc` of ``fields``.
    """

    __slots__ = FIELDS + ("extra", "loc", "_absent")

    # What the journal writes; a file from elsewhere may hold anything (read as is).
    id: str
    state: State
    attempts: int
    error: str | None
    message: str | None
    done_at: str | None
    tag: str
    raw: str | None
    reader: str | None
    source: str | None
    captured_at: str
    boot_id: str | None
    mono_ns: int | None
    synced: bool
    sent_date: str | None
    sent_time: str | None
    extra: dict[str, Any]
    loc: Location | None
    _absent: tuple[str, ...]  # known fields the file lacks

    def __init__(self, loc: Location | None = None, /, **fields: Any) -> None:
        self._read(fields, loc)

    @classmethod
    def from_doc(cls, doc: dict[str, Any], loc: Location | None = None) -> Record:
        """The record a stored JSON object holds (``doc`` is neither kept nor changed)."""
        rec = _new(cls)
        rec._read(doc, loc)
        return rec

    def _read(self, doc: dict[str, Any], loc: Location | None) -> None:
        # On every read of the journal, once per record: plain stores, no copy
        # of ``doc``, the usual shapes decided without a pass over the fields.
        g = doc.get
        self.id = g("id")
        state = g("state")
        known = _BY_VALUE.get(state) if type(state) is str else None
        self.state = known if known is not None else State.of(state)
        self.attempts = g("attempts")
        self.error = g("error")
        self.message = g("message")
        self.done_at = g("done_at")
        self.tag = g("tag")
        self.raw = g("raw")
        self.reader = g("reader")
        self.source = g("source")
        self.captured_at = g("captured_at")
        self.boot_id = g("boot_id")
        self.mono_ns = g("mono_ns")
        self.synced = g("synced")
        self.sent_date = g("sent_date")
        self.sent_time = g("sent_time")
        self.loc = loc
        if _KNOWN.issuperset(doc):
            self.extra = {}
        else:
            self.extra = {k: v for k, v in doc.items() if k not in _KNOWN}
        missing = len(FIELDS) - len(doc) + len(self.extra)
        if not missing:
            self._absent = _NOTHING
        elif missing == 2 and "sent_date" not in doc and "sent_time" not in doc:
            self._absent = _UNSENT  # a pending record never sent
        else:
            self._absent = tuple(k for k in FIELDS if k not in doc)
        if known is None and not isinstance(state, str) and "state" in doc:
            self.extra["state"] = state  # kept for to_doc; reads as the unknown state ""

    def to_doc(self) -> dict[str, Any]:
        """The JSON object this record is (what :meth:`from_doc` read, field for field)."""
        doc = {}
        for k in FIELDS:
            value = getattr(self, k)
            if not self._unset(k, value):
                doc[k] = value
        if "state" in doc:
            doc["state"] = self.state.value
        doc.update(self.extra)
        return doc

    def get(self, name: str, default: Any = None) -> Any:
        """A field by its on-disk name (the known ones, then :attr:`extra`), as ``dict.get``."""
        if name in _KNOWN:
            value = getattr(self, name)
            return default if self._unset(name, value) else value
        return self.extra.get(name, default)

    def _unset(self, name: str, value: Any) -> bool:
        """Whether known field ``name`` is one the file lacks, still unset."""
        return name in self._absent and (value is None or value is _NO_STATE)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Record):
            return NotImplemented
        return self.loc == other.loc and self.to_doc() == other.to_doc()

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.to_doc().items() if k in _KNOWN)
        extra = f", extra={self.extra!r}" if self.extra else ""
        return f"Record({fields}{extra}, loc={self.loc!r})"


_new = object.__new__
