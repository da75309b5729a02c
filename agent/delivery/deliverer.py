"""Delivery of the journal to iFlow: batches, outcomes, back-off.

One :class:`Deliverer` serves both the daemon's background uploader
(:mod:`agent.delivery.uploader`) and ``agent flush`` (in the daemon, or in the
command itself when no daemon runs). A batch is the oldest sendable pending
records, sized so the request URL fits ``iflow.max_url_bytes``; its
per-record outcomes are written back to the journal in one durable write per
segment. A whole-request failure leaves every record pending and starts an
exponential back-off with jitter that honours ``Retry-After``.

Exactly-once in effect: a record leaves ``pending`` only when iFlow's own
result for it says stored (``delivered``) or already stored (``duplicate``),
or refuses it (``rejected``). If iFlow stored a batch and the answer was lost,
the resend comes back as duplicates, which count as delivered.

A record's date and time are pinned in the journal (``sent_date`` /
``sent_time``) before it is first sent; every resend uses the pinned values:
a clock correction between two attempts (a small NTP step, a new anchor) must
not turn a resend of something iFlow already stored into a second, "new"
attendance a second later.

What lasts between passes (back-off, batch size, last error) is the
Deliverer's; what one pass works with (its queue, what is in flight, outcomes
not yet written) is a :class:`_Pass`, dropped when the pass ends.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable
from zoneinfo import ZoneInfo

from agent.delivery.backlog import Candidate, count_backlog, order, pinned, select
from agent.delivery.client import DeliveryError, IflowClient
from agent.delivery.wire import Item, Outcome, reason_of
from agent.errors import JournalError
from agent.journal.store import Journal, utc_now_iso
from agent.records import Record, State

log = logging.getLogger("agent.delivery")

MAX_RETRY_AFTER = 3600.0


@dataclass
class Summary:
    """What one drain did (the `agent flush` summary)."""

    delivered: int = 0
    duplicate: int = 0
    rejected: int = 0
    rejected_reasons: Counter = field(default_factory=Counter)
    requests: int = 0
    still_pending: int = 0
    held: Counter = field(default_factory=Counter)
    reachable: bool = True
    error: str | None = None
    seconds: float = 0.0
    total: int = 0  # sendable records at the start

    def as_dict(self) -> dict[str, Any]:
        return {
            "delivered": self.delivered, "duplicate": self.duplicate, "rejected": self.rejected,
            "rejected_reasons": dict(self.rejected_reasons), "requests": self.requests,
            "still_pending": self.still_pending, "held": dict(self.held),
            "reachable": self.reachable, "error": self.error,
            "seconds": round(self.seconds, 3), "total": self.total,
        }


class Deliverer:
    def __init__(self, journal: Journal, client: IflowClient, clock, tz: ZoneInfo, *,
                 policy: str = "hold", batch_max: int = 500,
                 backoff_initial: float = 2.0, backoff_max: float = 300.0,
                 rng: Callable[[], float] = random.random,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.journal = journal
        self.client = client
        self.clock = clock
        self.tz = tz
        self.policy = policy
        self.batch_max = batch_max
        self.batch_limit = batch_max  # halved on 414/431
        self.last_fit = batch_max  # records that fitted one URL last time
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.rng = rng
        self.monotonic = monotonic
        self.lock = threading.Lock()  # one request at a time
        self.failures = 0
        self.backoff_until = 0.0
        self.last_backoff = 0.0
        self.longest_backoff = 0.0
        self.last_success: str | None = None
        self.last_error: str | None = None
        self.auth_refused = False
        self.held: Counter = Counter()
        self.held_detail: dict[str, Any] = {}  # oldest/newest stamp and true-time bound of held scans

    # ----------------------------------------------------------- selection

    def plan(self, release_unsynced: bool = False) -> tuple[list[Item], Counter]:
        """Everything that would be sent now (for --dry-run), and what is held."""
        cands, held = select(self.journal, self.clock, self.policy, self.tz, release_unsynced, count_all=True)
        return [c[1] for c in cands], held

    def count(self, release_unsynced: bool = False) -> tuple[int, Counter]:
        """Sendable pending records now, and the held ones by status (a full pass);
        kept for :meth:`state`."""
        backlog = count_backlog(self.journal, self.clock, self.policy, release_unsynced)
        self.held = backlog.held
        self.held_detail = backlog.detail
        return backlog.sendable, backlog.held

    # ------------------------------------------------------------- back-off

    def in_backoff(self) -> float:
        """Seconds left in the current back-off (0 when none)."""
        return max(0.0, self.backoff_until - self.monotonic())

    def _fail(self, exc: DeliveryError) -> None:
        self.failures += 1
        delay = min(self.backoff_max, self.backoff_initial * (2 ** (self.failures - 1)))
        delay *= 0.5 + 0.5 * self.rng()  # jitter: spread a fleet's retries
        if exc.retry_after is not None:
            delay = max(delay, min(exc.retry_after, MAX_RETRY_AFTER))
        self.last_backoff = delay
        self.longest_backoff = max(self.longest_backoff, delay)
        self.backoff_until = self.monotonic() + delay
        self.last_error = str(exc)
        self.auth_refused = exc.kind == "auth"
        log.warning("delivery failed (%s); retrying in %.1f s", exc, delay)

    def _succeeded(self) -> None:
        self.failures = 0
        self.backoff_until = 0.0
        self.auth_refused = False
        self.last_error = None
        self.last_success = utc_now_iso()

    # ---------------------------------------------------------------- drain

    def drain(self, progress: Callable[[dict], None] | None = None,
              stop: threading.Event | None = None, *, release_unsynced: bool = False,
              count: bool = True, wait: float | None = None) -> Summary | None:
        """Send batches until nothing sendable is pending or a request fails.

        With ``count`` (flush) the sendable total and held counts are taken
        first, for progress and the summary; the background uploader skips it.
        With ``wait``, give up (return None) if another drain holds the lock
        that long: the uploader must keep looping for the watchdog.
        """
        if not self.lock.acquire(timeout=-1 if wait is None else wait):
            return None
        try:
            return self._drain(progress, stop, release_unsynced, count)
        finally:
            self.lock.release()

    def _drain(self, progress, stop, release_unsynced: bool, count: bool) -> Summary:
        t0 = time.monotonic()
        summary = Summary()
        if count:
            # The journal's in-memory count: no pass over the backlog before the
            # first request. What was held is counted at the end, when only the
            # remainder is pending.
            summary.total = self.journal.summary()["pending"]
        run = _Pass(self, summary, release_unsynced, t0)
        try:
            try:
                run.send_all(progress, stop)
            finally:
                run.finish()
        except DeliveryError as exc:
            summary.reachable = exc.kind not in ("network", "timeout", "auth")
            summary.error = str(exc)
            self._fail(exc)
        summary.seconds = time.monotonic() - t0
        if count:
            summary.still_pending, summary.held = self.count(release_unsynced)
            summary.total -= sum(summary.held.values())  # what was sendable
        return summary

    def state(self) -> dict[str, Any]:
        """Delivery's part of `agent status`."""
        return {"last_delivery": self.last_success, "last_error": self.last_error,
                "backoff_seconds": round(self.in_backoff(), 1), "auth_refused": self.auth_refused,
                "held": dict(self.held), "held_detail": dict(self.held_detail)}


class _Pass:
    """One drain's working state, explicit and dropped at its end: the queue of
    pinned candidates, the batch in flight, the outcomes not yet written."""

    def __init__(self, deliverer: Deliverer, summary: Summary, release_unsynced: bool, t0: float) -> None:
        self.d = deliverer
        self.journal = deliverer.journal
        self.summary = summary
        self.release_unsynced = release_unsynced
        self.t0 = t0
        self.queue: list[Candidate] = []  # pinned candidates, oldest first
        self.sent: set[str] = set()  # ids answered in this pass: never resent in it
        self.inflight: dict[str, int] = {}  # id -> segment of the records being sent
        self.tried: set[str] = set()  # ids of failed requests (maybe sent: their pins stay)
        self.unwritten: list[tuple[Record, dict[str, Any]]] = []  # outcomes not yet in the journal

    def next(self) -> list[Candidate]:
        """Candidates for the next request, from the queue.

        The queue is refilled a segment or more at a time, whole segments, and
        the send time of every record it adds is pinned first, in one durable
        write of the journal's small pins file: a record is pinned before its
        first send whatever happens after (pins of records the pass never
        sent are dropped at its end). Outcomes gathered so far are written just
        before (those of segments the queue is done with), so each segment is
        rewritten about once per pass.
        """
        want = min(self.d.batch_limit, self.d.last_fit + 8)
        if len(self.queue) < want:
            self.commit(keep={c[0].loc.segment for c in self.queue} | set(self.inflight.values()))
            skip = self.sent | self.inflight.keys() | {c[1].key for c in self.queue}
            d = self.d
            more, _ = select(self.journal, d.clock, d.policy, d.tz, self.release_unsynced,
                             limit=max(want, self.journal.segment_size), skip=skip, whole_segments=True)
            pins = [(rec, item) for rec, item, _ in more if pinned(rec) != (item.date, item.time)]
            if pins:
                try:
                    self.journal.pin((item.key, item.date, item.time) for _, item in pins)
                except JournalError as exc:
                    log.error("could not pin send times (%s); not sending", exc)
                    raise DeliveryError("journal", f"journal write failed: {exc}") from None
            for rec, item in pins:
                rec.sent_date, rec.sent_time = item.date, item.time
            self.queue.extend(more)
            self.queue.sort(key=order)
        return self.queue[:want]

    def prepare(self) -> tuple[list[Candidate], Any] | None:
        """The next batch and its request, or None when nothing is sendable.

        Every record of the batch was pinned when it joined the queue (see
        :meth:`next`): a resend after a failure, a kill or a power cut is identical.
        """
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

    def take(self, batch: list[Candidate]) -> dict[str, int]:
        """Remove ``batch`` from the queue; its keys and their segments."""
        keys = {c[1].key: c[0].loc.segment for c in batch}
        self.queue = [c for c in self.queue if c[1].key not in keys]
        return keys

    def put_back(self, batch: list[Candidate]) -> None:
        """Return the batch of a failed request to the queue (maybe sent: its
        pins stay)."""
        self.tried.update(c[1].key for c in batch)
        self.queue.extend(batch)
        self.queue.sort(key=order)
        self.inflight = {}

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
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="iflow-send") as sender:
            ready = self.prepare()
            while ready is not None:
                batch, request = ready
                started.clear()
                job = sender.submit(send, [c[1] for c in batch], request)
                # Let the helper take the interpreter now, until the request is on
                # the wire (CPython would otherwise hand it over only after its
                # switch interval, 5 ms): the server works while this thread prepares.
                started.wait(1.0)  # a hint only: never wait long
                self.inflight = self.take(batch)
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
                    self.put_back(batch)
                    if exc.kind != "too_long" or len(batch) == 1:
                        raise
                    d.batch_limit = max(1, len(batch) // 2)
                    log.info("iFlow refused a %d-record request as too long; batches now %d",
                             len(batch), d.batch_limit)
                    if later is not None:
                        raise later from None
                    ready = self.prepare()
                    continue
                summary.requests += 1
                self.inflight = {}
                by_key = {o.key: o for o in outcomes}
                self.write([(c[0], by_key.get(c[1].key) or Outcome(c[1].key, State.PENDING, None), c)
                            for c in batch])
                d._succeeded()
                if progress is not None:
                    progress(self.progress())
                if later is not None:
                    raise later
                if stopped():
                    break

    def write(self, results: list[tuple[Record, Outcome, Candidate]]) -> None:
        now = utc_now_iso()
        summary = self.summary
        changes = []
        for rec, outcome, (_, item, eff) in results:
            fields: dict[str, Any] = {"attempts": int(rec.attempts or 0) + 1, "error": None}
            if outcome.state == State.PENDING:
                fields["error"] = "iFlow returned no result for this record"
            else:
                fields.update(state=outcome.state, message=outcome.message, done_at=now,
                              sent_date=item.date, sent_time=item.time)
                if eff.status == "corrected":
                    fields["corrected_at"] = eff.when.isoformat(timespec="microseconds")
                if eff.status == "unsynced_sent":
                    fields["unsynced_sent"] = True
            changes.append((rec, fields))
            self.sent.add(rec.id)
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
        self.unwritten.extend(changes)

    def commit(self, keep: set[int] | frozenset[int] = frozenset()) -> None:
        """Write the gathered outcomes (one durable write per segment touched),
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
        """The end of the pass: write what is gathered, drop the pins of records
        never sent (their time is decided afresh next pass)."""
        try:
            self.commit()
        finally:
            self.journal.unpin(c[1].key for c in self.queue if c[1].key not in self.tried)

    def progress(self) -> dict:
        s = self.summary
        return {"done": s.delivered + s.duplicate + s.rejected, "total": s.total, "delivered": s.delivered,
                "duplicate": s.duplicate, "rejected": s.rejected,
                "seconds": round(time.monotonic() - self.t0, 3)}
