"""The scan path: tag read -> card number -> debounce -> journal (fsynced) -> feedback.

Nothing here touches the network. The feedback "stored" is given only after
:meth:`agent.journal.store.Journal.append` returned, i.e. after the fsync: the beep
means the scan is on disk.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Callable, Sequence

from agent.config import ReaderConfig
from agent.journal.store import Journal, JournalError
from agent.reading.debounce import Debouncer
from agent.reading.tagformat import (
    CARD_BITS,
    TagFormatError,
    format_tag,
    kind_for_protocol,
)

log = logging.getLogger("agent.scan")

# A card resting on the reader is read again and again: an RDM6300 about ten
# times a second, a PN532 at every poll. A read this soon after the previous
# sighting of the card (counted from when that read was stored, so the fsync
# does not count) is the same card still there, not a second tap: it gets no
# "already" signal, or the door would chirp for as long as a wallet lies on it.
HELD_S = 0.5
_PN532_EXCHANGE_S = 0.1  # one poll's command and answer, beside poll_seconds


def held_ns(rc: ReaderConfig) -> int:
    """The gap below which two reads of one card are one card lying there.

    A PN532 reads once per poll cycle and may miss a cycle at the field's edge:
    three cycles. Never as long as the debounce window, or a real second tap
    inside the window would get no signal at all.
    """
    held = HELD_S
    if rc.type == "serial" and rc.protocol == "pn532":
        held = max(held, 3 * (rc.poll_seconds + _PN532_EXCHANGE_S))
    if rc.debounce_seconds > 0:
        held = min(held, 0.8 * rc.debounce_seconds)
    return int(held * 1e9)


def tag_for_log(tag: str, mode: str) -> str:
    """Card numbers identify people: with ``log_tags = "hash"`` logs show a digest."""
    if mode == "hash":
        return "#" + hashlib.sha256(tag.encode()).hexdigest()[:12]
    return tag


class Recorder:
    def __init__(self, journal: Journal, clock, feedback, *,
                 readers: Sequence[ReaderConfig],
                 log_tags: str = "plain",
                 on_stored: Callable[[], None] | None = None) -> None:
        """``readers`` are the configured ``[reader]`` tables: each one's
        tag_format, byte_order and debounce_seconds apply to its reads, and
        its type and protocol say how its raw data reads (see
        :func:`agent.reading.tagformat.kind_for_protocol`)."""
        self.journal = journal
        self.clock = clock
        self.feedback = feedback
        self.formats = {rc.name: (rc.tag_format, rc.byte_order, kind_for_protocol(rc.protocol, rc.type),
                                  rc.card_bits)
                        for rc in readers}
        self.debounce = {rc.name: Debouncer(rc.debounce_seconds) for rc in readers}
        self.held_ns = {rc.name: held_ns(rc) for rc in readers}
        self.log_tags = log_tags
        self.on_stored = on_stored
        self.counts = {"stored": 0, "already": 0, "error": 0, "invalid": 0}
        # The same by reader (`agent status --json` scans_by_reader, the metrics): each
        # reader's dict is written by its own thread only.
        self.by_reader = {rc.name: dict.fromkeys(self.counts, 0) for rc in readers}

    def seed_debounce(self, boot_id: str, n: int = 64) -> None:
        """Reads recorded just before a restart in this boot still debounce."""
        try:
            for rec in self.journal.tail(n):
                deb = self.debounce.get(rec.reader)
                if deb is not None and rec.boot_id == boot_id and rec.mono_ns is not None:
                    deb.seed(rec.reader, rec.tag, int(rec.mono_ns))
        except Exception:  # a seed is a nicety; never block start-up on it
            log.exception("could not seed debounce from the journal")

    def _count(self, reader: str, result: str) -> None:
        self.counts[result] += 1
        counts = self.by_reader.get(reader)
        if counts is None:
            counts = self.by_reader.setdefault(reader, dict.fromkeys(self.counts, 0))
        counts[result] += 1

    def handle(self, reader: str, raw: str) -> str:
        """Record one read. Returns "stored", "already", "error" or "invalid"."""
        fmt, order, kind, card_bits = self.formats.get(reader, ("raw", "big", "auto", CARD_BITS))
        try:
            tag = format_tag(raw, fmt, byte_order=order, kind=kind, card_bits=card_bits)
        except TagFormatError as exc:
            log.warning("reader %s: %r cannot be read as %s: %s", reader,
                        tag_for_log(raw, self.log_tags), fmt, exc)
            self._count(reader, "invalid")
            self.feedback.event("error", f"reader={reader} invalid")
            return "invalid"
        stamp = self.clock.stamp()
        deb = self.debounce.get(reader)
        now_ns = int(stamp["mono_ns"])
        prev = deb.last(reader, tag) if deb is not None else None
        if deb is not None and not deb.check(reader, tag, now_ns):
            self._count(reader, "already")
            if prev is None or not 0 <= now_ns - prev < self.held_ns.get(reader, 0):
                self.feedback.event("already", f"tag={tag}")  # shown again, not still lying there
            return "already"
        fields = {"tag": tag, "raw": raw, "reader": reader, "source": "reader"}
        fields.update(stamp)
        try:
            rec = self.journal.append(fields)
        except JournalError as exc:
            self._count(reader, "error")
            if deb is not None:
                deb.forget(reader, tag)
            log.error("SCAN NOT STORED (reader %s, card %s): %s", reader,
                      tag_for_log(tag, self.log_tags), exc)
            self.feedback.event("error", f"tag={tag}")
            return "error"
        self._count(reader, "stored")
        if deb is not None:
            deb.seed(reader, tag, self.clock.mono_ns())  # "held" counts from here: the fsync is not a gap
        self.feedback.event("stored", f"tag={tag} id={rec.id}")
        log.info("stored scan %s from %s (card %s)", rec.id, reader, tag_for_log(tag, self.log_tags))
        if self.on_stored is not None:
            self.on_stored()
        return "stored"
