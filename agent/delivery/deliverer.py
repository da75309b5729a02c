"""Delivery of the journal to iFlow: batches, outcomes, back-off.

One :class:`Deliverer` serves both the daemon's background :class:`Uploader`
and ``agent flush`` (in the daemon, or in the command itself when no daemon
runs). A batch is the oldest sendable pending records, sized so the request
URL fits ``iflow.max_url_bytes``; its per-record outcomes are written back to
the journal in one durable write per segment. A whole-request failure leaves
every record pending and starts an exponential back-off with jitter that
honours ``Retry-After``.

Exactly-once in effect: a record leaves ``pending`` only when iFlow's own
result for it says stored (``delivered``) or already stored (``duplicate``),
or refuses it (``rejected``). If iFlow stored a batch and the answer was lost,
the resend comes back as duplicates, which count as delivered.

A record's date and time are pinned in the journal (``sent_date`` /
``sent_time``) before it is first sent; every resend uses the pinned values:
a clock correction between two attempts (a small NTP step, a new anchor) must
not turn a resend of something iFlow already stored into a second, "new"
attendance a second later.
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable
from zoneinfo import ZoneInfo

from agent.clock.timekeeping import to_local
from agent.delivery.iflow import DeliveryError, IflowClient, Item, Outcome
from agent.journal.store import Journal, JournalError, utc_now_iso

log = logging.getLogger("agent.delivery")

SENDABLE = frozenset({"ok", "corrected", "unsynced_sent"})


def _effective(decide, rec: dict):
    """The time to send ``rec`` (``decide`` is a :meth:`agent.clock.timekeeping.Clock.decider`);
    a record too malformed to place in time is held as "invalid", never sent."""
    try:
        return decide(rec)
    except ValueError as exc:
        log.error("record %s cannot be placed in time (%s); held", rec.get("id"), exc)
        return _Invalid


class _Invalid:
    status = "invalid"
    when = None


def _pinned(rec: dict) -> tuple[str, str] | None:
    """The (date, time) this record was already sent with, if any."""
    date, tm = rec.get("sent_date"), rec.get("sent_time")
    if isinstance(date, str) and isinstance(tm, str) and date and tm:
        return date, tm
    return None


Candidate = tuple[dict, Item, Any]  # (journal record, what is sent, timekeeping decision)


def _order(eff) -> float:
    return eff.when.timestamp() if eff.when is not None else 0.0
MAX_RETRY_AFTER = 3600.0


def reason_of(message: str | None, tag: str) -> str:
    """Group iFlow's messages by reason: drop the card number or id it ends with."""
    text = (message or "unknown reason").strip()
    if tag and text.endswith(tag):
        text = text[: -len(tag)].rstrip(" :")
    return re.sub(r":\s*\d+$", "", text)


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
        self._last_fit = batch_max  # records that fitted one URL last time
        self._queue: list[Candidate] = []  # this pass's pinned candidates, oldest first
        self._sent: set[str] = set()  # ids answered in the current pass: never resent in it
        self._inflight: dict[str, int] = {}  # id -> segment of the records being sent
        self._tried: set[str] = set()  # ids of failed requests in this pass (maybe sent)
        self._unwritten: list[tuple[dict, dict[str, Any]]] = []  # outcomes not yet in the journal
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

    def _candidates(self, release_unsynced: bool = False, limit: int = 10**9, count_all: bool = False,
                    skip: set[str] | frozenset[str] = frozenset(),
                    whole_segments: bool = False) -> tuple[list[Candidate], Counter]:
        """The oldest sendable pending records not in ``skip`` (up to ``limit``,
        or with ``whole_segments`` to the end of the segment where the limit was
        reached), sorted by the time they are sent with, and the held counts
        (complete only with ``count_all``; otherwise the scan stops at the limit)."""
        out: list[Candidate] = []
        held: Counter = Counter()
        last_seg = None
        decide = self.clock.decider(self.policy)
        for rec in self.journal.records(("pending",), skip=skip):
            if len(out) >= limit and not count_all and not (whole_segments and rec["_seg"] == last_seg):
                break
            if release_unsynced and not rec.get("released"):
                probe = dict(rec, released=True)
            else:
                probe = rec
            eff = _effective(decide, probe)
            pinned = _pinned(rec)
            if pinned is None and (eff.status not in SENDABLE or eff.when is None):
                held[eff.status] += 1
                continue
            if len(out) < limit or (whole_segments and rec["_seg"] == last_seg):
                date, tm = pinned or to_local(eff.when, self.tz)
                out.append((rec, Item(key=rec["id"], tag=str(rec["tag"]), date=date, time=tm), eff))
                last_seg = rec["_seg"]
        out.sort(key=lambda c: _order(c[2]))  # oldest first
        return out, held

    def _next(self, release_unsynced: bool) -> list[Candidate]:
        """Candidates for the next request, from the pass's queue.

        The queue is refilled a segment or more at a time, whole segments, and
        the send time of every record it adds is pinned first, in one durable
        write of the journal's small pins file: a record is pinned before its
        first send whatever happens after (pins of records the pass never
        sent are dropped at its end). Outcomes gathered so far are written just
        before (those of segments the queue is done with), so each segment is
        rewritten about once per pass.
        """
        want = min(self.batch_limit, self._last_fit + 8)
        if len(self._queue) < want:
            self._commit(keep={c[0]["_seg"] for c in self._queue} | set(self._inflight.values()))
            skip = self._sent | self._inflight.keys() | {c[1].key for c in self._queue}
            more, _ = self._candidates(release_unsynced, limit=max(want, self.journal.segment_size),
                                       skip=skip, whole_segments=True)
            pins = [(rec, item) for rec, item, _ in more if _pinned(rec) != (item.date, item.time)]
            if pins:
                try:
                    self.journal.pin((item.key, item.date, item.time) for _, item in pins)
                except JournalError as exc:
                    log.error("could not pin send times (%s); not sending", exc)
                    raise DeliveryError("journal", f"journal write failed: {exc}") from None
            for rec, item in pins:
                rec["sent_date"], rec["sent_time"] = item.date, item.time
            self._queue.extend(more)
            self._queue.sort(key=lambda c: _order(c[2]))
        return self._queue[:want]

    def plan(self, release_unsynced: bool = False) -> tuple[list[Item], Counter]:
        """Everything that would be sent now (for --dry-run), and what is held."""
        cands, held = self._candidates(release_unsynced, count_all=True)
        return [c[1] for c in cands], held

    # ------------------------------------------------------------- sending

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

    def _prepare(self, summary: Summary, release_unsynced: bool) -> tuple[list[Candidate], Any] | None:
        """The next batch and its request, or None when nothing is sendable.

        Every record of the batch was pinned when it joined the queue (see
        _next): a resend after a failure, a kill or a power cut is identical.
        """
        while True:
            cands = self._next(release_unsynced)
            if not cands:
                return None
            n, request = self.client.prepare([c[1] for c in cands])
            if n:
                self._last_fit = n
                return cands[:n], request
            # One record alone does not fit in a URL: iFlow can never take it.
            self._take(cands[:1])
            rec = cands[0][0]
            self._write(summary, [(rec, Outcome(rec["id"], "rejected",
                                                "record too long for iflow.max_url_bytes"), cands[0])])

    def _take(self, batch: list[Candidate]) -> dict[str, int]:
        """Remove ``batch`` from the queue; its keys and their segments."""
        keys = {c[1].key: c[0]["_seg"] for c in batch}
        self._queue = [c for c in self._queue if c[1].key not in keys]
        return keys

    def _put_back(self, batch: list[Candidate]) -> None:
        """Return the batch of a failed request to the queue (maybe sent: its
        pins stay)."""
        self._tried.update(c[1].key for c in batch)
        self._queue.extend(batch)
        self._queue.sort(key=lambda c: _order(c[2]))
        self._inflight = {}

    def _send_all(self, summary: Summary, progress, stop, release_unsynced: bool, t0: float) -> None:
        """Send batches until nothing sendable is left, one request at a time,
        oldest first. While a request is in flight (on a helper thread, which
        only waits for the network) this thread prepares the next batch:
        candidates, pins, outcomes written, the next URL built."""
        from concurrent.futures import ThreadPoolExecutor

        def stopped() -> bool:
            return stop is not None and stop.is_set()

        started = threading.Event()

        def send(items: list[Item], request: Any) -> list[Outcome]:
            started.set()
            return self.client.send(items, request)

        if stopped():
            return
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="iflow-send") as sender:
            ready = self._prepare(summary, release_unsynced)
            while ready is not None:
                batch, request = ready
                started.clear()
                job = sender.submit(send, [c[1] for c in batch], request)
                # Let the helper take the interpreter now, until the request is on
                # the wire (CPython would otherwise hand it over only after its
                # switch interval, 5 ms): the server works while this thread prepares.
                started.wait(1.0)  # a hint only: never wait long
                self._inflight = self._take(batch)
                ready, later = None, None
                if not stopped():
                    try:
                        ready = self._prepare(summary, release_unsynced)
                    except DeliveryError as exc:
                        later = exc  # after this request's outcomes are recorded
                try:
                    outcomes = job.result()
                except DeliveryError as exc:
                    summary.requests += 1
                    self._put_back(batch)
                    if exc.kind != "too_long" or len(batch) == 1:
                        raise
                    self.batch_limit = max(1, len(batch) // 2)
                    log.info("iFlow refused a %d-record request as too long; batches now %d",
                             len(batch), self.batch_limit)
                    if later is not None:
                        raise later from None
                    ready = self._prepare(summary, release_unsynced)
                    continue
                summary.requests += 1
                self._inflight = {}
                by_key = {o.key: o for o in outcomes}
                self._write(summary, [(c[0], by_key.get(c[0]["id"]) or Outcome(c[0]["id"], "pending", None), c)
                                      for c in batch])
                self.failures = 0
                self.backoff_until = 0.0
                self.auth_refused = False
                self.last_error = None
                self.last_success = utc_now_iso()
                if progress is not None:
                    progress(self._progress(summary, t0))
                if later is not None:
                    raise later
                if stopped():
                    break

    def _write(self, summary: Summary, results: list[tuple[dict, Outcome, Any]]) -> None:
        now = utc_now_iso()
        changes = []
        for rec, outcome, (_, item, eff) in results:
            fields: dict[str, Any] = {"attempts": int(rec.get("attempts", 0)) + 1, "error": None}
            if outcome.state == "pending":
                fields["error"] = "iFlow returned no result for this record"
            else:
                fields.update(state=outcome.state, message=outcome.message, done_at=now,
                              sent_date=item.date, sent_time=item.time)
                if eff.status == "corrected":
                    fields["corrected_at"] = eff.when.isoformat(timespec="microseconds")
                if eff.status == "unsynced_sent":
                    fields["unsynced_sent"] = True
            changes.append((rec, fields))
            self._sent.add(rec["id"])
            if outcome.state == "delivered":
                summary.delivered += 1
            elif outcome.state == "duplicate":
                summary.duplicate += 1
            elif outcome.state == "rejected":
                summary.rejected += 1
                summary.rejected_reasons[reason_of(outcome.message, str(rec.get("tag", "")))] += 1
        # Group commit: outcomes are written when the queue is refilled (or at
        # the end of the pass). Until then the records are still pending
        # on disk; after a crash they are resent and come back as duplicates.
        self._unwritten.extend(changes)

    def _commit(self, keep: set[int] = frozenset()) -> None:
        """Write the gathered outcomes (one durable write per segment touched),
        except those of the segments in ``keep`` (still in use: written later)."""
        changes = [c for c in self._unwritten if c[0]["_seg"] not in keep]
        self._unwritten = [c for c in self._unwritten if c[0]["_seg"] in keep] if keep else []
        # On failure iFlow has them anyway; the resend comes back as duplicates.
        self._journal_write(changes, "could not record delivery outcomes (%s); they will be resent")
        # No longer pending in the journal, so no longer needed to skip them.
        self._sent.difference_update(rec["id"] for rec, fields in changes if "state" in fields)

    def _journal_write(self, changes: list[tuple[dict, dict[str, Any]]], failure: str) -> None:
        """One durable journal write; a failure stops the pass as a DeliveryError."""
        if not changes:
            return
        try:
            self.journal.update(changes)
        except JournalError as exc:
            log.error(failure, exc)
            raise DeliveryError("journal", f"journal write failed: {exc}") from None

    def count(self, release_unsynced: bool = False) -> tuple[int, Counter]:
        """Sendable pending records now, and the held ones by status (a full pass)."""
        sendable = 0
        held: Counter = Counter()
        detail: dict[str, Any] = {}
        decide = self.clock.decider(self.policy)
        for rec in self.journal.records(("pending",)):
            if release_unsynced:
                rec["released"] = True
            eff = _effective(decide, rec)
            if _pinned(rec) is not None or (eff.status in SENDABLE and eff.when is not None):
                sendable += 1
                continue
            held[eff.status] += 1
            if eff.status == "wait":
                continue  # this boot, not yet synchronised: corrected when it is
            captured = str(rec.get("captured_at", ""))
            detail["oldest"] = min(detail.get("oldest", captured), captured)
            detail["newest"] = max(detail.get("newest", captured), captured)
            bound = getattr(eff, "bound", None)
            if bound:
                lo, hi = (b.isoformat(timespec="seconds") for b in bound)
                detail["bound_from"] = min(detail.get("bound_from", lo), lo)
                detail["bound_to"] = max(detail.get("bound_to", hi), hi)
        self.held = held
        self.held_detail = detail
        return sendable, held

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
        try:
            try:
                self._send_all(summary, progress, stop, release_unsynced, t0)
            finally:
                try:
                    self._commit()
                finally:
                    # Pinned but never sent: their time is decided afresh next pass.
                    self.journal.unpin(c[1].key for c in self._queue if c[1].key not in self._tried)
                    self._tried.clear()
                    self._sent.clear()
                    self._queue = []
                    self._inflight = {}
        except DeliveryError as exc:
            summary.reachable = exc.kind not in ("network", "timeout", "auth")
            summary.error = str(exc)
            self._fail(exc)
        summary.seconds = time.monotonic() - t0
        if count:
            summary.still_pending, summary.held = self.count(release_unsynced)
            summary.total -= sum(summary.held.values())  # what was sendable
        return summary

    @staticmethod
    def _progress(summary: Summary, t0: float) -> dict:
        done = summary.delivered + summary.duplicate + summary.rejected
        return {"done": done, "total": summary.total, "delivered": summary.delivered,
                "duplicate": summary.duplicate, "rejected": summary.rejected,
                "seconds": round(time.monotonic() - t0, 3)}

    def state(self) -> dict[str, Any]:
        return {
            "last_delivery": self.last_success,
            "last_error": self.last_error,
            "backoff_seconds": round(self.in_backoff(), 1),
            "auth_refused": self.auth_refused,
            "held": dict(self.held),
            "held_detail": dict(self.held_detail),
        }


class Uploader:
    """The daemon's background sender: soon after a scan, backing off when iFlow is away."""

    def __init__(self, deliverer: Deliverer, *, send_delay: float = 0.5, idle_poll: float = 30.0) -> None:
        self.deliverer = deliverer
        self.send_delay = send_delay
        self.idle_poll = idle_poll
        self._wake = threading.Event()
        self._idle = 0.0
        self._counted = float("-inf")
        self.count_every = 60.0
        self.last_alive = time.monotonic()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def wake(self) -> None:
        self._wake.set()

    def _beat(self) -> None:
        self.last_alive = time.monotonic()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="uploader", daemon=True)
        self._thread.start()

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        self._wake.set()  # a pass at start: drain what an earlier run left
        while not self._stop.is_set():
            self.last_alive = time.monotonic()
            backoff = self.deliverer.in_backoff()
            if backoff > 0:
                # Scans during a back-off wait for it; a flush does not.
                self._stop.wait(min(backoff, 1.0))
                continue
            if not self._wake.wait(timeout=1.0):
                self._idle += 1.0  # also pass every idle_poll s: a clock sync may free held scans
                if self._idle < self.idle_poll:
                    continue
            self._idle = 0.0
            self._wake.clear()
            if self.send_delay:
                self._stop.wait(self.send_delay)  # gather a burst of scans into one request
            try:
                done = self.deliverer.drain(stop=self._stop, count=False, wait=1.0,
                                            progress=lambda _event: self._beat())
                if done is None:  # a flush is running; try again after it
                    self._wake.set()
                elif done.error is None and time.monotonic() - self._counted > self.count_every:
                    # Drained: what is left pending is held. Count it for `agent status`
                    # (a pass over held records only, at most once a minute).
                    self._counted = time.monotonic()
                    with self.deliverer.lock:
                        self.deliverer.count()
            except Exception:
                log.exception("uploader pass failed")
                self._stop.wait(5.0)
