"""What waits in the journal: which records could be sent now, and why the rest are held.

Written once, for every place that reports it or acts on it: the Deliverer
(:func:`select`, the records it sends, in the order and with the local time
they are sent with; :func:`count_backlog` after a flush, for ``agent status``
through the daemon), ``agent status`` without a daemon and ``agent doctor``
(:func:`count_backlog`). Neither needs an HTTP client, and this module
imports no httpx, so a command that only reports stays fast.

A pending record is sendable when the clock policy gives it a time to send
(a status in :data:`SENDABLE` with a time), or when its send time is already
pinned: it may have reached iFlow with that time, and its resend must be
identical whatever the clock says now.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import TYPE_CHECKING, Any, Callable, Container, NamedTuple
from zoneinfo import ZoneInfo

from agent.clock.policy import to_local
from agent.delivery.wire import Item
from agent.records import Record, State

if TYPE_CHECKING:
    from agent.clock.clock import Clock
    from agent.journal.store import Journal

log = logging.getLogger("agent.delivery")

SENDABLE = frozenset({"ok", "corrected", "unsynced_sent", "insane_sent"})

Candidate = tuple[Record, Item, Any]  # (journal record, what is sent, clock decision)


class Backlog(NamedTuple):
    sendable: int  # pending records that would be sent now
    held: Counter  # the others, by clock status ("held_unsynced", "wait", ...)
    # oldest/newest stamp and true-time bound of the held ones ("wait" aside),
    # and "wait_overdue": how many "wait" beyond NTP's grace period
    detail: dict[str, Any]


class Invalid(NamedTuple):
    """The decision for a record that cannot be placed in time or has no card
    number: held as "invalid", never sent; ``message`` says what is wrong."""

    message: str
    status: str = "invalid"
    when: None = None
    bound: None = None
    overdue: bool = False


def effective(decide: Callable[[Record], Any], rec: Record) -> Any:
    """The time to send ``rec`` (``decide`` is a :meth:`agent.clock.clock.Clock.decider`);
    a record too malformed to place in time, or without a card number, is
    :class:`Invalid`, never sent."""
    try:
        if rec.tag is None:
            raise ValueError("no card number (tag)")
        return decide(rec)
    except ValueError as exc:
        log.error("record %s cannot be placed in time (%s); held", rec.id, exc)
        return Invalid(f"cannot be placed in time: {exc}")


def pinned(rec: Record) -> tuple[str, str] | None:
    """The (date, time) this record was already sent with, if any."""
    date, tm = rec.sent_date, rec.sent_time
    if isinstance(date, str) and isinstance(tm, str) and date and tm:
        return date, tm
    return None


def release(rec: Record) -> None:
    """Mark ``rec`` as ``agent flush --release-unsynced`` sends it: a flag the
    clock's decision reads (:func:`agent.clock.policy.parse_stamp`), in memory
    only (the journal writes only the fields a change names). It releases every
    held clock status: "wait", "held_unsynced" and "held_insane" (sent with its
    stamp as captured); an "invalid" record has no time to send."""
    rec.extra["released"] = True


def sendable(eff: Any, pin: tuple[str, str] | None) -> bool:
    """Whether a pending record with clock decision ``eff`` and pin ``pin`` goes out now."""
    return pin is not None or (eff.status in SENDABLE and eff.when is not None)


def count_backlog(journal: Journal, clock: Clock, policy: str, release_unsynced: bool = False) -> Backlog:
    """Sendable pending records now, the held ones by status, and when the held
    ones were taken (a full pass over the pending records). ``policy`` is
    ``time.unsynced``; ``release_unsynced`` counts as ``agent flush
    --release-unsynced`` would send."""
    count = 0
    held: Counter = Counter()
    detail: dict[str, Any] = {}
    decide = clock.decider(policy)
    for rec in journal.records((State.PENDING,)):
        if release_unsynced:
            release(rec)
        eff = effective(decide, rec)
        if sendable(eff, pinned(rec)):
            count += 1
            continue
        held[eff.status] += 1
        if eff.status == "wait":
            if eff.overdue:
                detail["wait_overdue"] = detail.get("wait_overdue", 0) + 1
            continue  # this boot, not yet synchronised: corrected when it is
        if eff.status == "invalid":
            continue  # its stamp is what cannot be read
        captured = "" if rec.captured_at is None else str(rec.captured_at)
        detail["oldest"] = min(detail.get("oldest", captured), captured)
        detail["newest"] = max(detail.get("newest", captured), captured)
        bound = getattr(eff, "bound", None)
        if bound:
            lo, hi = (b.isoformat(timespec="seconds") for b in bound)
            detail["bound_from"] = min(detail.get("bound_from", lo), lo)
            detail["bound_to"] = max(detail.get("bound_to", hi), hi)
    return Backlog(count, held, detail)


def order(c: Candidate) -> float:
    """Sort key: the time the candidate is sent with (oldest first)."""
    when = c[2].when
    return when.timestamp() if when is not None else 0.0


def select(journal: Journal, clock: Clock, policy: str, tz: ZoneInfo, release_unsynced: bool = False, *,
           limit: int = 10**9, count_all: bool = False, skip: Container[str] = frozenset(),
           whole_segments: bool = False,
           invalid: list[tuple[Record, Invalid]] | None = None) -> tuple[list[Candidate], Counter]:
    """The oldest sendable pending records not in ``skip`` (up to ``limit``,
    or with ``whole_segments`` to the end of the segment where the limit was
    reached), sorted by the time they are sent with, each with the local date
    and time it is sent with (its pin, else its clock decision in ``tz``), and
    the held counts (complete only with ``count_all``; otherwise the scan
    stops at the limit). Records that can never be sent are added to
    ``invalid`` (when given) with their decision."""
    out: list[Candidate] = []
    held: Counter = Counter()
    last_seg = None
    decide = clock.decider(policy)
    for recs in journal.by_segment((State.PENDING,), skip=skip):
        seg = recs[0].loc.segment
        for rec in recs:
            if len(out) >= limit and not count_all and not (whole_segments and seg == last_seg):
                break
            if release_unsynced:
                release(rec)
            eff = effective(decide, rec)
            pin = pinned(rec)
            if not sendable(eff, pin):
                held[eff.status] += 1
                if invalid is not None and isinstance(eff, Invalid):
                    invalid.append((rec, eff))
                continue
            if len(out) < limit or (whole_segments and seg == last_seg):
                date, tm = pin or to_local(eff.when, tz)
                out.append((rec, Item(key=rec.id, tag=str(rec.tag), date=date, time=tm), eff))
                last_seg = seg
        if len(out) >= limit and not count_all:
            break  # nothing of the next segment is wanted: it is not read
    out.sort(key=order)  # oldest first
    return out, held
