"""The journal read from outside, read-only: for a reader that is not its writer.

`agent export` reads the journal while the daemon may hold it (and its lock)
and write it. It must neither wait for the daemon nor disturb it, so this
reads the files themselves: one segment at a time, each a consistent
snapshot (a segment is only ever replaced whole, by rename), never taking
the state lock, never creating, moving or removing anything. An unreadable
segment is reported, not quarantined: that is the writer's job.

Records come out as the journal hands them out (:class:`agent.records.Record`
with its ``loc``; a pending record with its pinned send time), in journal
order: segment by segment, in insertion order within each.
"""

from __future__ import annotations

import os
from typing import Iterator

from agent.fsio import REAL_FS
from agent.journal.pins import PINS_FILE, Pins
from agent.journal.segments import (
    Segment,
    SegmentInfo,
    segment_number,
    segment_path,
    state_key,
)
from agent.journal.storage import CorruptFile
from agent.records import Record, State


class JournalReader:
    """Streams the records of the journal in ``directory`` (which may not exist:
    no records). ``unreadable`` lists the segments left out, with why."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.unreadable: list[tuple[str, str]] = []
        self._pins = Pins(directory, REAL_FS)
        self._pins_key: tuple[int, int, int] | None = None
        self._pins_by_id: dict[str, tuple[str, str]] = {}

    def _numbers(self) -> list[int]:
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        return sorted(n for n in map(segment_number, names) if n is not None)

    def segment_count(self) -> int:
        """How many segment files there are now (PermissionError if the directory is not readable)."""
        return len(self._numbers())

    def segments(self) -> Iterator[list[Record]]:
        """Each segment's records, oldest segment first. The directory is listed
        again at the end, so segments started meanwhile are read too."""
        last = 0
        while True:
            numbers = [n for n in self._numbers() if n > last]
            if not numbers:
                return
            for number in numbers:
                recs = self._segment(number)
                if recs:
                    yield recs
                last = number

    def records(self) -> Iterator[Record]:
        for recs in self.segments():
            yield from recs

    def _segment(self, number: int) -> list[Record]:
        # The journal's own segment reader: TinyDB over the atomic storage,
        # which reads the file once (a snapshot) and writes only when asked to.
        seg = Segment(SegmentInfo(number, segment_path(self.directory, number)), REAL_FS)
        try:
            if not any(state_key(doc) == State.PENDING for doc in seg.raw().values()):
                return seg.docs()
            # Pins read after the segment: a pin is at least as new as the record.
            return seg.docs(pins=self._pins_now())
        except CorruptFile as exc:
            self.unreadable.append((seg.info.path, exc.reason))
            return []
        finally:
            seg.close()

    def _pins_now(self) -> dict[str, tuple[str, str]]:
        """The pins file's pins, parsed again only when the file was replaced."""
        try:
            st = os.stat(os.path.join(self.directory, PINS_FILE))
        except FileNotFoundError:
            return {}
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        if key != self._pins_key:
            try:
                self._pins_by_id = self._pins.read()
            except (ValueError, RecursionError):
                self._pins_by_id = {}  # the writer quarantines it; the send times are then unknown here
            self._pins_key = key
        return self._pins_by_id
