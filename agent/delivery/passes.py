"""One delivery pass: the queue, the batch in flight, the outcomes not yet written.

A :class:`Pass` is what one :meth:`agent.delivery.deliverer.Deliverer.drain`
works with, explicit and dropped at its end; what lasts between passes (the
back-off, the batch sizes, the last error) is the Deliverer's.

Two rules of the pass keep one record from stopping a site:

* **Isolation.** A request refused as a whole in a way its content may cause
  (:func:`agent.delivery.isolation.suspect`) is not an outage by itself: the
  next request takes half as many records (the Deliverer's ``cap``, doubled
  again on every success), so a binary search walks down to the record that
  fails alone, while everything before and after it is delivered in order.
  A record that fails alone is not sent again in the pass; its failing counts
  only once a later request of the pass is delivered (the isolation module's
  rules). Too many lone failures in a row with no such proof end the pass as
  an outage (back-off, nothing marked), and the small cap it leaves keeps
  requests small while the outage lasts.
* **Pins only when a send may have reached iFlow.** A record's send time is
  pinned durably before its first send; at the end of the pass the pins this
  pass wrote are dropped again for records whose requests certainly never
  reached the server (connection refused, DNS, TLS handshake), so a clock
  correction made meanwhile still applies. A pin that may have reached iFlow
  stays for good: its resend must be identical.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from agent.delivery.backlog import Candidate, Invalid, order, pinned, select
from agent.delivery.client import DeliveryError
from agent.delivery.isolation import (
    LONE_IN_A_ROW,
    alone_fields,
    failure_text,
    suspect,
    unanswered_fields,
)
from agent.delivery.wire import Item, Outcome, reason_of
from agent.errors import JournalError
from agent.journal.store import utc_now_iso
from agent.records import Record, State

log = logging.getLogger("agent.delivery")


@dataclass
class Summary:
    """What one drain did (the `agent flush` summary)."""

    delivered: int = 0
    duplicate: int = 0
    rejected: int = 0
    rejected_reasons: Counter = field(default_factory=Counter)
    failed: int = 0  # set aside in this drain: failed alone again and again, or never answered
    failed_reasons: Counter = field(default_factory=Counter)
    unmatched: int = 0  # results iFlow's answers did not give
    requests: int = 0
    still_pending: int = 0
    held: Counter = field(default_factory=Counter)
    reachable: bool = True
    error: str | None = None
    error_excerpt: str | None = None  # the start of the server's answer to the failed request
    error_status: int | None = None
    note: str | None = None  # what the technician should know though the drain went on (a lone failure)
    seconds: float = 0.0
    total: int = 0  # sendable records at the start

    def as_dict(self) -> dict[str, Any]:
        return {
            "delivered": self.delivered, "duplicate": self.duplicate, "rejected": self.rejected,
            "rejected_reasons": dict(self.rejected_reasons), "failed": self.failed,
            "failed_reasons": dict(self.failed_reasons), "unmatched": self.unmatched,
            "requests": self.requests, "error_excerpt": self.error_excerpt, "error_status": self.error_status, "note": self.note,
            "still_pending": self.still_pending, "held": dict(self.held),
            "reachable": self.reachable, "error": self.error,
            "seconds": round(self.seconds, 3), "total": self.total,
        }




class Pass:
    # ``deliverer`` is the agent.delivery.deliverer.Deliverer that runs the pass
    # (not imported: it imports this module).
    def __init__(self, deliverer: Any, summary: Summary, release_unsynced: bool, t0: float) -> None:
        self.d = deliverer
        self.journal = deliverer.journal
        self.summary = summary
        self.release_unsynced = release_unsynced
        self.t0 = t0
        self.queue: list[Candidate] = []  # pinned candidates, oldest first
        self.sent: set[str] = set()  # ids answered in this pass: never resent in it
        self.inflight: dict[str, int] = {}  # id -> segment of the records being sent
        self.pinned_here: set[str] = set()  # ids this pass pinned
        self.reached: set[str] = set()  # ids of failed requests that may have reached iFlow
        self.unwritten: list[tuple[Record, dict[str, Any]]] = []  # changes not yet in the journal
        self.isolated: set[str] = set()  # failed alone in this pass: not sent again in it
        self.unconfirmed: list[tuple[Candidate, DeliveryError]] = []  # lone failures awaiting proof
        self.lone_note: str | None = None  # the last confirmed lone failure, for `agent status`

    # -------------------------------------------------------------- the queue

    def next(self) -> list[Candidate]:
        """Candidates for the next request, from the queue.

        The queue is refilled a segment or more at a time, whole segments, and
        the send time of every record it adds is pinned first, in one durable
        write of the journal's small pins file. Outcomes gathered so far are
        written just before (those of segments the queue is done with), so
        each segment is rewritten about once per pass.
        """
        d = self.d
        want = min(d.batch_limit, d.last_fit + 8, d.cap)
        if len(self.queue) < want:
            self.commit(keep={c[0].loc.segment for c in self.queue} | set(self.inflight.values()))
            skip = self.sent | self.isolated | self.inflight.keys() | {c[1].key for c in self.queue}
            invalid: list[tuple[Record, Invalid]] = []
            more, _ = select(self.journal, d.clock, d.policy, d.tz, self.release_unsynced,
                             limit=max(want, self.journal.segment_size), skip=skip, whole_segments=True,
                             invalid=invalid)
            self.set_aside(invalid)
            pins = [(rec, item) for rec, item, _ in more if pinned(rec) != (item.date, item.time)]
            if pins:
                try:
                    self.journal.pin((item.key, item.date, item.time) for _, item in pins)
                except JournalError as exc:
                    log.error("could not pin send times (%s); not sending", exc)
                    raise DeliveryError("journal", f"journal write failed: {exc}") from None
            for rec, item in pins:
                rec.sent_date, rec.sent_time = item.date, item.time
                self.pinned_here.add(item.key)
            self.queue.extend(more)
            self.queue.sort(key=order)
        return self.queue[:want]

    def prepare(self) -> tuple[list[Candidate], Any] | None:
        """The next batch and its request, or None when nothing is sendable."""
        while True:
            cands = self.next()
            if not cands:
                return None
            n, request = self.d.client.prepare([c[1] for c in cands])
            if n:
                self.d.last_fit = n
                return cands[:n], request
            # One record alone does not fit in a URL: iFlow can never take it.
            self.take(cands[:1])
            rec = cands[0][0]
            self.write([(rec, Outcome(rec.id, State.REJECTED, "record too long for iflow.max_url_bytes"),
                         cands[0])])

    def set_aside(self, invalid: list[tuple[Record, Invalid]]) -> None:
        """Records that can never be sent (no time to place them at, no card
        number) go to ``failed`` with what is wrong: listed by `agent
        rejected`, never blocking a flush's exit status forever."""
        now = utc_now_iso()
        for rec, eff in invalid:
            self.unwritten.append((rec, {"state": State.FAILED, "message": eff.message, "done_at": now}))
            self.sent.add(rec.id)
            self.summary.failed += 1
            self.summary.failed_reasons[eff.message] += 1

    def take(self, batch: list[Candidate]) -> dict[str, int]:
        """Remove ``batch`` from the queue; its keys and their segments."""
        keys = {c[1].key: c[0].loc.segment for c in batch}
        self.queue = [c for c in self.queue if c[1].key not in keys]
        return keys

    def put_back(self, batch: list[Candidate], reached: bool) -> None:
        """Return the batch of a failed request to the queue."""
        if reached:
            self.reached.update(c[1].key for c in batch)
        self.queue.extend(batch)
        self.queue.sort(key=order)
        self.inflight = {}

    # ---------------------------------------------------------- the sending

    def send_all(self, progress, stop) -> None:
        """Send batches until nothing sendable is left, one request at a time,
        oldest first. While a request is in flight (on a helper thread, which
        only waits for the network) this thread prepares the next batch:
        candidates, pins, outcomes written, the next URL built."""
        d, summary = self.d, self.summary

        def stopped() -> bool:
            return stop is not None and stop.is_set()

        started = threading.Event()

        def send(items: list[Item], request: Any) -> list[Outcome]:
            started.set()
            return d.client.send(items, request)

        if stopped():
            return

        def submit(ready: tuple[list[Candidate], Any]) -> tuple[Any, list[Candidate]]:
            batch, request = ready
            started.clear()
            job = sender.submit(send, [c[1] for c in batch], request)
            # Let the helper take the interpreter now, until the request is on
            # the wire (CPython would otherwise hand it over only after its
            # switch interval, 5 ms): the server works while this thread prepares.
            started.wait(1.0)  # a hint only: never wait long
            self.inflight = self.take(batch)
            return job, batch

        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="iflow-send") as sender:
            ready = self.prepare()
            flight = submit(ready) if ready is not None else None
            while flight is not None:
                job, batch = flight
                ready, later = None, None
                if not stopped():
                    try:
                        ready = self.prepare()
                    except DeliveryError as exc:
                        later = exc  # after this request's outcomes are recorded
                try:
                    outcomes = job.result()
                except DeliveryError as exc:
                    summary.requests += 1
                    d.count_error(exc)
                    self.put_back(batch, exc.reached)
                    if exc.kind == "too_long" and len(batch) > 1:
                        d.batch_limit = max(1, len(batch) // 2)
                        log.info("iFlow refused a %d-record request as too long; batches now %d",
                                 len(batch), d.batch_limit)
                    elif suspect(exc):
                        self.isolate(batch, exc)  # raises when it looks like an outage
                    else:
                        raise
                    if later is not None:
                        raise later from None
                    ready = self.prepare()  # the batch prepared meanwhile was sized before the failure
                    flight = submit(ready) if ready is not None else None
                    continue
                summary.requests += 1
                # The next request goes out now: this answer is read while it is in
                # flight (over a WAN link, one round trip per request is the limit).
                # If reading it stops the pass, the request in flight is answered
                # but not read: its records stay pending, pinned, and come back as
                # duplicates next pass.
                flight = submit(ready) if ready is not None and later is None and not stopped() else None
                if flight is None:
                    self.inflight = {}
                by_key = {o.key: o for o in outcomes}
                results = [(c[0], by_key.get(c[1].key) or Outcome(c[1].key, State.PENDING, None), c)
                           for c in batch]
                matched = any(o.state != State.PENDING for _, o, _ in results)
                if matched:
                    self.succeeded()  # iFlow took records: proof it works
                unmatched = self.write(results, count_unanswered=matched)
                if later is not None:
                    raise later
                if unmatched:
                    # Not a silent resend: an error the technician sees, and a back-off.
                    raise DeliveryError("unmatched", f"{len(unmatched)} of {len(batch)} records got no "
                                        f"result in iFlow's answer: {unmatched[0]}")
                d._succeeded()
                if progress is not None:
                    progress(self.progress())
                if stopped():
                    break
        if self.unconfirmed and not stopped():
            raise self.unconfirmed[-1][1]  # no proof iFlow works: an outage, nothing counted

    # ------------------------------------------------------------- isolation

    def isolate(self, batch: list[Candidate], exc: DeliveryError) -> None:
        """A request that its content may have failed: halve the next one, and
        set aside (for this pass) a record that failed alone. Raises ``exc``
        when more than :data:`LONE_IN_A_ROW` records failed alone in a row: an
        outage."""
        self.d.cap = max(1, len(batch) // 2)
        if len(batch) > 1:
            log.info("iFlow refused a %d-record request (%s); sending halves to find what it cannot take",
                     len(batch), failure_text(exc))
            return
        cand = batch[0]
        self.take(batch)
        self.isolated.add(cand[1].key)
        self.unconfirmed.append((cand, exc))
        log.warning("iFlow refused a request holding only record %s (%s)", cand[1].key[:12], failure_text(exc))
        if len(self.unconfirmed) > LONE_IN_A_ROW:
            raise exc  # too many in a row to be the records' own fault: an outage

    def succeeded(self) -> None:
        """A request went through: the lone failures before it are proven
        the records' own, and the cap grows back."""
        self.confirm()
        self.d.cap = min(self.d.batch_max, self.d.cap * 2)

    def confirm(self) -> None:
        now = utc_now_iso()
        for (rec, item, _), exc in self.unconfirmed:
            fields = alone_fields(rec, exc, now, self.d.isolate_after_s)
            if fields.get("state") == State.FAILED:
                fields.update(sent_date=item.date, sent_time=item.time)
                self.summary.failed += 1
                self.summary.failed_reasons[failure_text(exc)] += 1
            self.unwritten.append((rec, fields))
            self.lone_note = (f"record {rec.id[:12]} fails alone ({failure_text(exc)}): the others are "
                              "delivered; it is set aside after repeated failures (see agent rejected)")
        self.unconfirmed = []

    # -------------------------------------------------------------- outcomes

    def write(self, results: list[tuple[Record, Outcome, Candidate]], count_unanswered: bool = True) -> list[str]:
        """Gather the outcomes of one answer; the messages of the records it
        had no result for. Those count against a record (set aside after
        enough) only with ``count_unanswered``: when the same answer proved
        other records stored, else the answer as a whole is what is wrong."""
        now = utc_now_iso()
        summary = self.summary
        unmatched = []
        for rec, outcome, (_, item, eff) in results:
            fields: dict[str, Any] = {"attempts": int(rec.attempts or 0) + 1, "error": None}
            if outcome.state == State.PENDING:
                unmatched.append(outcome.message or "iFlow returned no result for this record")
                if not count_unanswered:
                    self.sent.add(rec.id)  # not resent in this pass; nothing written
                    continue
                fields.update(unanswered_fields(rec, outcome.message, now))
                summary.unmatched += 1
                if fields.get("state") == State.FAILED:
                    fields.update(sent_date=item.date, sent_time=item.time)
                    summary.failed += 1
                    summary.failed_reasons["no result in iFlow's answers"] += 1
            else:
                fields.update(state=outcome.state, message=outcome.message, done_at=now,
                              sent_date=item.date, sent_time=item.time)
                if eff.status == "corrected":
                    fields["corrected_at"] = eff.when.isoformat(timespec="microseconds")
                if eff.status in ("unsynced_sent", "insane_sent"):
                    fields[eff.status] = True  # sent with its stamp as captured: HR may check it
            self.unwritten.append((rec, fields))
            self.sent.add(rec.id)
            self.pinned_here.discard(rec.id)  # answered: its pin's fate is decided (a pass holds 100k ids)
            if outcome.state == State.DELIVERED:
                summary.delivered += 1
            elif outcome.state == State.DUPLICATE:
                summary.duplicate += 1
            elif outcome.state == State.REJECTED:
                summary.rejected += 1
                summary.rejected_reasons[reason_of(outcome.message, item.tag)] += 1
        # Group commit: outcomes are written when the queue is refilled (or at
        # the end of the pass). Until then the records are still pending
        # on disk; after a crash they are resent and come back as duplicates.
        return unmatched

    def commit(self, keep: set[int] | frozenset[int] = frozenset()) -> None:
        """Write the gathered changes (one durable write per segment touched),
        except those of the segments in ``keep`` (still in use: written later).
        A failure stops the pass as a DeliveryError."""
        changes = [c for c in self.unwritten if c[0].loc.segment not in keep]
        self.unwritten = [c for c in self.unwritten if c[0].loc.segment in keep] if keep else []
        if changes:
            try:
                self.journal.update(changes)
            except JournalError as exc:
                # iFlow has them anyway; the resend comes back as duplicates.
                log.error("could not record delivery outcomes (%s); they will be resent", exc)
                raise DeliveryError("journal", f"journal write failed: {exc}") from None
        # No longer pending in the journal, so no longer needed to skip them.
        self.sent.difference_update(rec.id for rec, fields in changes if "state" in fields)

    def finish(self) -> None:
        """The end of the pass: write what is gathered, drop the pins this pass
        wrote for records no request of it may have delivered (their time is
        decided afresh next pass)."""
        try:
            self.commit()
        finally:
            dropped = [c[1].key for c in self.queue if c[1].key in self.pinned_here and c[1].key not in self.reached]
            if dropped:
                self.journal.unpin(dropped)
                try:
                    # On disk too: a restart (or the next `agent flush`) must not bring back
                    # a time that a clock correction may since have replaced.
                    self.journal.pin(())
                except JournalError as exc:
                    log.warning("could not drop unsent pins on disk (%s); they fix the time of a resend", exc)

    def progress(self) -> dict:
        s = self.summary
        return {"done": s.delivered + s.duplicate + s.rejected + s.failed, "total": s.total,
                "delivered": s.delivered, "duplicate": s.duplicate, "rejected": s.rejected,
                "failed": s.failed, "seconds": round(time.monotonic() - self.t0, 3)}
