"""The technician's operations on the journal, each written once.

Every operation runs in whichever process owns the journal: the daemon, asked
over the control socket, or the command itself when no daemon runs (it then
holds the state lock, :func:`agent.runtime.access.dispatch`). Both call the
same function here with the same typed request, against :class:`Parts`: what
that process has (the daemon's long-lived deliverer and readers, or parts
built for this one command).

The typed requests are :mod:`agent.runtime.requests`; answers are JSON-ready
dicts whose fields are documented in the README (``agent status --json``).
A command reaches an operation through :func:`agent.runtime.access.call`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any, Callable, NamedTuple

from agent import __version__
from agent.clock.clock import Clock
from agent.config import Config
from agent.delivery.backlog import count_backlog
from agent.delivery.wire import reason_of
from agent.errors import CommandError
from agent.journal.segments import SET_ASIDE, is_dismissed
from agent.journal.store import Journal, utc_now_iso
from agent.records import Record, State
from agent.runtime.requests import (
    FlushRequest,
    InsertRequest,
    RejectedRequest,
    Request,
    ScansRequest,
    StatusRequest,
)
from agent.runtime.wiring import make_clock, make_deliverer, open_journal, waiting_for

log = logging.getLogger("agent.reconciler")

UTC = UTC
Progress = Callable[[dict], None]


# ------------------------------------------------------------------ parts


class DaemonView(NamedTuple):
    """What only a running daemon can add to an answer."""

    pid: int
    started: float
    readers: Callable[[], list[dict]]
    scans_this_run: Callable[[], dict]
    stop: threading.Event
    scans_by_reader: Callable[[], dict] | None = None


class Parts:
    """What an operation runs against, in the process that owns the journal.

    ``delivery`` is the daemon's long-lived Deliverer; without a daemon it is
    built on first use (only `flush` needs one: `status` must not load the HTTP
    client) and closed by :meth:`close`. ``wake`` nudges the uploader after a
    change that makes records sendable. (A plain class: dataclasses would cost
    `agent status` the import of inspect.)"""

    def __init__(self, cfg: Config, journal: Journal, clock: Clock | None = None, *,
                 daemon: DaemonView | None = None, wake: Callable[[], None] | None = None,
                 delivery: Any = None) -> None:
        self.cfg, self.journal, self._clock = cfg, journal, clock
        self.daemon, self.wake, self.delivery = daemon, wake, delivery
        self._own_delivery = False

    @property
    def clock(self) -> Clock:
        """The daemon's clock, or (no daemon) one built on first use: `rejected`
        and `insert` need none, and only the daemon and `status` observe it."""
        if self._clock is None:
            self._clock = make_clock(self.cfg)
        return self._clock

    def deliverer(self) -> Any:
        if self.delivery is None:
            if self.cfg.iflow is None:
                raise CommandError("delivery is not configured ([iflow] missing)")
            self.delivery = make_deliverer(self.cfg, self.journal, self.clock)
            self._own_delivery = True
        return self.delivery

    def close(self) -> None:
        if self._own_delivery and self.delivery is not None:
            self.delivery.close()
            self.delivery = None

    def changed(self, n: int) -> None:
        if n and self.wake is not None:
            self.wake()


# ------------------------------------------------------------- operations


def status(parts: Parts, req: StatusRequest, progress: Progress | None = None) -> dict[str, Any]:
    """`agent status`: journal counts, delivery state, readers, clock."""
    out: dict[str, Any] = parts.journal.summary()
    out["version"] = __version__
    d = parts.daemon
    if d is not None:
        out.update({"daemon": True, "pid": d.pid, "uptime_seconds": round(time.time() - d.started, 1),
                    "started_at": datetime.fromtimestamp(d.started, UTC).isoformat(timespec="microseconds"),
                    "readers": d.readers(), "scans_this_run": d.scans_this_run()})
        if d.scans_by_reader is not None:
            out["scans_by_reader"] = d.scans_by_reader()
    else:
        out.update({"daemon": False, "readers": []})
    if parts.cfg.iflow is None:
        out.update({"last_delivery": None, "backoff_seconds": 0.0, "held": {},
                    "last_error": "delivery not configured ([iflow] missing)" if d is not None else None})
    elif parts.delivery is not None:
        out.update(parts.delivery.state())
        if not out["pending"]:  # none can be held (the uploader recounts after a pass that changed what is pending)
            out.update(held={}, held_detail={})
    else:
        backlog = count_backlog(parts.journal, parts.clock, parts.cfg.time.unsynced)
        if backlog.held.get("wait"):
            backlog.detail["waiting_for"] = waiting_for(parts.cfg)
        out.update({"last_delivery": None, "last_error": None, "backoff_seconds": 0.0,
                    "held": dict(backlog.held), "held_detail": backlog.detail})
    out.update(disk_space(parts.cfg.state_dir))
    if d is None:
        parts.clock.observe()  # as the daemon's supervisor would have: a sync since is seen
    out["clock_synced"] = bool(parts.clock.synced)
    out.update(parts.clock.time_source())
    return out


def disk_space(path: str) -> dict[str, int | None]:
    """Free bytes (for an unprivileged user: what the agent may use) and size of
    ``path``'s filesystem; None when it cannot be read."""
    try:
        st = os.statvfs(path)
    except OSError:
        return {"disk_free_bytes": None, "disk_size_bytes": None}
    return {"disk_free_bytes": st.f_bavail * st.f_frsize, "disk_size_bytes": st.f_blocks * st.f_frsize}


def flush(parts: Parts, req: FlushRequest, progress: Progress | None = None) -> dict[str, Any]:
    """`agent flush`: deliver everything sendable now (or, dry run, list it)."""
    deliverer = parts.deliverer()
    if req.dry_run:
        items, held = deliverer.plan(req.release_unsynced)
        return {"would_send": [i._asdict() for i in items], "held": dict(held)}
    stop = parts.daemon.stop if parts.daemon is not None else None
    out = deliverer.drain(progress=progress, stop=stop, release_unsynced=req.release_unsynced).as_dict()
    out.setdefault("held_detail", dict(deliverer.held_detail))  # counted by the drain: says why they wait
    return out


def rejected(parts: Parts, req: RejectedRequest, progress: Progress | None = None) -> dict[str, Any]:
    """`agent rejected`: the records set aside (rejected by iFlow, failed alone)
    by reason; or return some to pending, or dismiss some (they become history)."""
    if req.dismiss or req.dismiss_all:
        return _dismiss(parts.journal, req)
    if req.all or req.retry:
        return _retry(parts, req)
    return _set_aside(parts.journal, req.dismissed)


def _chosen(journal: Journal, ids: tuple[str, ...], every: bool,
            with_dismissed: bool) -> tuple[list[Record], list[str]]:
    """The set-aside records named by ``ids`` (an id or its first 12
    characters; dismissed or not), or every one listed if ``every``; and the
    ids that match none."""
    wanted = set(ids)
    chosen = [rec for rec in journal.records(SET_ASIDE)
              if rec.id in wanted or rec.id[:12] in wanted
              or (every and (with_dismissed or not is_dismissed(rec)))]
    found = {rec.id for rec in chosen}
    return chosen, [i for i in ids if i not in found and not any(f.startswith(i) for f in found)]


# Cleared on retry beside the delivery fields, when the record has them: the
# deliverer's counts toward setting a record aside start again.
_RETRY_RESETS = (("dismissed_at", None), ("alone_failures", 0), ("unanswered", None))


def _retry(parts: Parts, req: RejectedRequest) -> dict[str, Any]:
    chosen, unknown = _chosen(parts.journal, req.retry, req.all, req.dismissed)
    changes = []
    for rec in chosen:
        fields: dict[str, Any] = {"state": State.PENDING, "message": None, "done_at": None, "error": None,
                                  "retried": int(rec.get("retried", 0)) + 1}
        fields.update((k, v) for k, v in _RETRY_RESETS if k in rec.extra)
        changes.append((rec, fields))
    parts.journal.update(changes)
    parts.changed(len(changes))
    return {"returned": len(changes), "unknown": unknown}


def _dismiss(journal: Journal, req: RejectedRequest) -> dict[str, Any]:
    chosen, unknown = _chosen(journal, req.dismiss, req.dismiss_all, False)
    now = utc_now_iso()
    changes = [(rec, {"dismissed_at": now}) for rec in chosen if not is_dismissed(rec)]
    journal.update(changes)  # durable before the answer
    return {"dismissed": len(changes), "already": len(chosen) - len(changes), "unknown": unknown}


def _set_aside(journal: Journal, with_dismissed: bool) -> dict[str, Any]:
    rows: dict[State, list[dict]] = {State.REJECTED: [], State.FAILED: []}
    reasons: dict[State, Counter] = {State.REJECTED: Counter(), State.FAILED: Counter()}
    dismissed = 0
    for rec in journal.records(SET_ASIDE):
        if is_dismissed(rec):
            dismissed += 1
            if not with_dismissed:
                continue
        if rec.state is State.REJECTED:
            reason = reason_of(rec.message, "" if rec.tag is None else str(rec.tag))
        else:  # the deliverer's words: the HTTP status and the server's excerpt
            reason = str(rec.message or rec.error or "failed alone (no reason recorded)")
        reasons[rec.state][reason] += 1
        rows[rec.state].append({"id": rec.id, "tag": rec.tag, "captured_at": rec.captured_at,
                                "sent_date": rec.sent_date, "sent_time": rec.sent_time, "reader": rec.reader,
                                "reason": reason, "message": rec.message, "state": rec.state.value,
                                "dismissed_at": rec.get("dismissed_at")})
    return {"rejected": rows[State.REJECTED], "by_reason": dict(reasons[State.REJECTED]),
            "failed": rows[State.FAILED], "failed_by_reason": dict(reasons[State.FAILED]),
            "dismissed": dismissed}


def insert(parts: Parts, req: InsertRequest, progress: Progress | None = None) -> dict[str, Any]:
    """Add punches from another system as scans with a trusted time, through the one writer."""
    result = insert_external(parts.journal, req.records)
    parts.changed(result["added"])
    return result


def insert_external(journal: Journal, records: list[dict]) -> dict[str, Any]:
    """Append ``records`` (see :class:`InsertRequest`) unless their ``external_id``
    is in the journal already."""
    wanted = {r.get("external_id") for r in records if r.get("external_id")}
    seen = set()
    if wanted:
        for rec in journal.records():
            if rec.get("external_id") in wanted:
                seen.add(rec.get("external_id"))
    added = []
    for r in records:
        if r.get("external_id") and r["external_id"] in seen:
            continue
        stored = journal.append({
            "tag": str(r["tag"]), "raw": str(r.get("raw", r["tag"])),
            "reader": r.get("reader", "crosschex"), "source": r.get("source", "crosschex"),
            "captured_at": r["captured_at"], "boot_id": "external", "mono_ns": 0, "synced": True,
            "external_id": r.get("external_id"),
        })
        seen.add(r.get("external_id"))
        added.append(stored.id)
    return {"added": len(added), "ids": added, "skipped": len(records) - len(added)}


def scans(parts: Parts, req: ScansRequest, progress: Progress | None = None) -> list[dict]:
    """Local scans in a time window (for `agent reconcile`)."""
    try:
        clock = parts.clock
    except (OSError, ValueError) as exc:  # no daemon, and its clock state unreadable
        log.warning("cannot read the clock state (%s); comparing scans by their recorded time", exc)
        clock = None
    return scans_in_window(parts.journal, clock, datetime.fromisoformat(req.begin),
                           datetime.fromisoformat(req.end))


OPERATIONS: dict[str, Callable[[Parts, Any, Progress | None], Any]] = {
    "status": status, "flush": flush, "rejected": rejected, "insert": insert, "scans": scans,
}


def perform(parts: Parts, req: Request, progress: Progress | None = None) -> Any:
    return OPERATIONS[req.cmd](parts, req, progress)


def run_here(cfg: Config, req: Request, progress: Progress | None = None) -> Any:
    """``req`` in this process, which holds the journal's lock (no daemon runs)."""
    journal = open_journal(cfg)
    try:
        parts = Parts(cfg, journal)
        try:
            return perform(parts, req, progress)
        finally:
            parts.close()
    finally:
        journal.close()


# ------------------------------------------------------------ scan times


def parse_stamp(value: Any) -> datetime | None:
    """An aware ISO 8601 stamp as UTC; None for anything else."""
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        return None
    if dt.tzinfo is None or dt.utcoffset() is None:
        return None
    return dt.astimezone(UTC)


def scan_time(rec: Record, clock: Any | None) -> datetime | None:
    """A journal record's true time: ``corrected_at`` if present, else the
    clock's effective time, else ``captured_at``; None if none is readable."""
    when = parse_stamp(rec.get("corrected_at"))
    if when is not None:
        return when
    if clock is not None:
        try:
            eff = clock.effective(rec)
        except (ValueError, TypeError, KeyError):
            eff = None
        if eff is not None and eff.when is not None:
            return eff.when.astimezone(UTC)
    return parse_stamp(rec.captured_at)


def aware_utc(dt: Any, name: str) -> datetime:
    """``dt`` in UTC; ValueError (naming ``name``) for anything but an aware datetime."""
    if not isinstance(dt, datetime) or dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError(f"{name} must be an aware datetime")
    return dt.astimezone(UTC)


def scans_in_window(journal: Journal, clock: Any | None, begin: datetime, end: datetime) -> list[dict]:
    """Every journal record whose true time lies in ``[begin, end]``, as
    ``{"id", "tag", "when" (UTC ISO 8601), "source"}``, oldest first.

    Any state counts: a delivered or rejected scan was still made. Records
    without a readable time or tag are left out. Raises ValueError for naive
    bounds."""
    begin, end = aware_utc(begin, "begin"), aware_utc(end, "end")
    out: list[tuple[datetime, int, dict]] = []
    for i, rec in enumerate(journal.records()):
        tag = rec.tag
        when = scan_time(rec, clock)
        if when is None or not isinstance(tag, str) or not tag:
            log.debug("journal record %s has no readable time or tag; not compared", rec.id)
            continue
        if begin <= when <= end:
            out.append((when, i, {"id": str(rec.id), "tag": tag,
                                  "when": when.isoformat(timespec="microseconds"),
                                  "source": str(rec.source or "reader")}))
    out.sort(key=lambda t: (t[0], t[1]))
    return [d for _, _, d in out]

