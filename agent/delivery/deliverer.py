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

A request refused as a whole in a way its content may cause is split in
halves until the record that fails alone is found; everything else goes on
(:mod:`agent.delivery.passes`, rules in :mod:`agent.delivery.isolation`).

What lasts between passes (back-off, batch sizes, last error) is the
Deliverer's; what one pass works with (its queue, what is in flight, outcomes
not yet written) is a :class:`agent.delivery.passes.Pass`, dropped when the
pass ends.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter
from typing import Any, Callable
from zoneinfo import ZoneInfo

from agent.delivery.backlog import count_backlog, select
from agent.delivery.client import DeliveryError, IflowClient
from agent.delivery.passes import Pass, Summary
from agent.delivery.wire import Item
from agent.journal.store import Journal, utc_now_iso

log = logging.getLogger("agent.delivery")

MAX_RETRY_AFTER = 3600.0
#: The per-record outcomes counted in :attr:`Deliverer.outcomes`.
OUTCOMES = ("delivered", "duplicate", "rejected", "failed")
#: DeliveryError kinds, each counted in :attr:`Deliverer.errors` from 0.
# ("journal": an outcome or a pin could not be written here, a disk fault, not iFlow's)
ERROR_KINDS = ("network", "timeout", "http", "auth", "too_long", "bad_answer", "unmatched", "journal")


class Deliverer:
    def __init__(self, journal: Journal, client: IflowClient, clock, tz: ZoneInfo, *,
                 policy: str = "hold", batch_max: int = 500,
                 backoff_initial: float = 2.0, backoff_max: float = 300.0,
                 isolate_after_s: float = 300.0, timeprobe: Any = None,
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
        self.cap = batch_max  # halved while isolating a record iFlow cannot take, doubled on success
        self.isolate_after_s = isolate_after_s  # see agent.delivery.isolation
        self.timeprobe = timeprobe  # agent.delivery.timeprobe.TimeProbe: learns the time before a pass needs it
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
        self.last_excerpt: str | None = None  # the start of the server's answer to the failed request
        self.last_status: int | None = None
        self.auth_refused = False
        self.held: Counter = Counter()
        self.held_detail: dict[str, Any] = {}  # oldest/newest stamp and true-time bound of held scans
        # Since this Deliverer was made (the daemon's start): the metrics' counters.
        self.outcomes: Counter = Counter(dict.fromkeys(OUTCOMES, 0))
        self.errors: Counter = Counter(dict.fromkeys(ERROR_KINDS, 0))

    # ----------------------------------------------------------- selection

    def plan(self, release_unsynced: bool = False) -> tuple[list[Item], Counter]:
        """Everything that would be sent now (for --dry-run), and what is held."""
        cands, held = select(self.journal, self.clock, self.policy, self.tz, release_unsynced, count_all=True)
        return [c[1] for c in cands], held

    def count(self, release_unsynced: bool = False) -> tuple[int, Counter]:
        """Sendable pending records now, and the held ones by status (a full pass);
        kept for :meth:`state`."""
        backlog = count_backlog(self.journal, self.clock, self.policy, release_unsynced)
        if backlog.held.get("wait"):
            backlog.detail["waiting_for"] = self.waiting_for()
        if not release_unsynced:
            self.held, self.held_detail = backlog.held, backlog.detail
        elif self.journal.summary()["pending"]:
            # What stays held for the uploader, which releases nothing.
            self.count()
        else:
            self.held, self.held_detail = Counter(), {}
        return backlog.sendable, backlog.held

    def waiting_for(self) -> str:
        """What can give this boot its time: "ntp", or "ntp or https-date" (``held_detail``)."""
        return "ntp or https-date" if self.timeprobe is not None and self.timeprobe.usable else "ntp"

    def learn_time(self) -> None:
        """Before a pass: ask iFlow for the time if this boot has none (agent.delivery.timeprobe)."""
        if self.timeprobe is not None and self.timeprobe.due():
            self.timeprobe.learn()

    def probe_in(self) -> float:
        """Seconds until the time probe wants a pass (inf: it does not)."""
        return float("inf") if self.timeprobe is None else self.timeprobe.wait_s()

    def close(self) -> None:
        self.client.close()
        if self.timeprobe is not None:
            self.timeprobe.close()

    # ------------------------------------------------------------- back-off

    def in_backoff(self) -> float:
        """Seconds left in the current back-off (0 when none)."""
        return max(0.0, self.backoff_until - self.monotonic())

    def count_error(self, exc: DeliveryError) -> None:
        """Count one failed request, once however often it is re-raised."""
        if not getattr(exc, "counted", False):
            exc.counted = True  # type: ignore[attr-defined]
            self.errors[exc.kind] += 1

    def _fail(self, exc: DeliveryError) -> None:
        self.count_error(exc)
        self.failures += 1
        delay = min(self.backoff_max, self.backoff_initial * (2 ** (self.failures - 1)))
        delay *= 0.5 + 0.5 * self.rng()  # jitter: spread a fleet's retries
        if exc.retry_after is not None:
            delay = max(delay, min(exc.retry_after, MAX_RETRY_AFTER))
        self.last_backoff = delay
        self.longest_backoff = max(self.longest_backoff, delay)
        self.backoff_until = self.monotonic() + delay
        self.last_error = str(exc)
        self.last_excerpt, self.last_status = exc.excerpt, exc.status
        self.auth_refused = exc.kind == "auth"
        answer = f"; iFlow answered: {exc.excerpt}" if exc.excerpt else ""
        log.warning("delivery failed (%s%s); retrying in %.1f s", exc, answer, delay)

    def _succeeded(self) -> None:
        self.failures = 0
        self.backoff_until = 0.0
        self.auth_refused = False
        self.last_error = None
        self.last_excerpt = self.last_status = None
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
        self.learn_time()  # first: a scan never leaves with an untrusted time to learn it
        run = Pass(self, summary, release_unsynced, t0)
        try:
            try:
                run.send_all(progress, stop)
            finally:
                run.finish()
                self.outcomes.update({o: getattr(summary, o) for o in OUTCOMES})
        except DeliveryError as exc:
            summary.reachable = exc.kind not in ("network", "timeout", "auth")
            summary.error = str(exc)
            summary.error_excerpt, summary.error_status = exc.excerpt, exc.status
            self._fail(exc)
        else:
            if run.lone_note is not None:
                self.last_error = summary.note = run.lone_note  # delivered around it: shown, no back-off
        summary.seconds = time.monotonic() - t0
        if count:
            summary.still_pending, summary.held = self.count(release_unsynced)
            summary.total -= sum(summary.held.values())  # what was sendable
        return summary

    def state(self) -> dict[str, Any]:
        """Delivery's part of `agent status`."""
        return {"last_delivery": self.last_success, "last_error": self.last_error,
                "last_error_excerpt": self.last_excerpt, "last_error_status": self.last_status,
                "backoff_seconds": round(self.in_backoff(), 1), "auth_refused": self.auth_refused,
                "held": dict(self.held), "held_detail": dict(self.held_detail),
                "deliveries": dict(self.outcomes), "delivery_errors": dict(self.errors)}
