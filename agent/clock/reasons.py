"""Why a scan is held, in words, and what a person can do about it.

One place for the words that ``agent status``, ``agent flush``, ``agent
doctor`` and the door's "offline" pattern use, so the technician reads the
same explanation everywhere. The held statuses are the clock's decisions
(:mod:`agent.clock.policy`: ``"wait"``, ``"held_unsynced"``,
``"held_insane"``) and the backlog's ``"invalid"`` (a record that cannot be
placed in time or has no card number). ``held`` is their count by status
and ``detail`` the backlog's ``held_detail`` (``wait_overdue``: how many
"wait" past the grace period NTP is given; ``waiting_for``: what can still
give this boot its time, ``"ntp"`` or ``"ntp or https-date"``).

The time source in words too (:func:`source_words`, :func:`disagreement_words`,
:data:`CERT_FIX`), read from the ``time_*`` fields of ``agent status --json``.

Pure: the standard library only, and cheap to import (``agent status``
loads it).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Mapping

__all__ = ["CERT_FIX", "HELD", "IFLOW_FIX", "NTP_FIX", "RELEASABLE", "disagreement_words", "error_words",
           "explain", "first_line", "https_words", "needs_person", "source_words", "span", "utc_minute",
           "wall_clock_words"]

#: The held statuses, in the order they are shown.
HELD = ("held_unsynced", "held_insane", "wait", "invalid")
#: What ``agent flush --release-unsynced`` sends.
RELEASABLE = frozenset({"wait", "held_unsynced", "held_insane"})

_RELEASE = "agent flush --release-unsynced"
#: What makes NTP work (a command to look, and what the network must let through).
NTP_FIX = ("timedatectl timesync-status; the network must reach pool.ntp.org or the site's NTP server "
           "on UDP 123")
#: What makes iFlow's HTTPS Date work.
IFLOW_FIX = "check that iFlow is reachable over HTTPS (agent doctor's iflow checks)"
#: What to do when the wall clock is outside iFlow's certificate's validity.
CERT_FIX = ("set the clock by hand once (sudo date -s 'YYYY-MM-DD HH:MM'; iFlow's Date then gives the exact "
            "time), or let NTP through (UDP 123 to pool.ntp.org or the site's NTP server)")
_NTP = f"let this machine reach an NTP server (check: {NTP_FIX})"
_HTTPS_ONLY = ("NTP is the only source: iFlow's Date is used only over verified HTTPS, with "
               "time.http_date_max_error above 0 and an [iflow] section")

# status -> (why, in a sentence; why, short enough for flush's first line; what to do)
_WORDS: dict[str, tuple[str, str, str]] = {
    "held_unsynced": (
        "taken in an earlier boot whose clock never synchronised: their true time is unknown",
        "the clock was never synchronised in their boot",
        f"check their times (agent flush --dry-run --release-unsynced), then send them as stamped: {_RELEASE}",
    ),
    "held_insane": (
        "stamped at an implausible time (before this version was built by a clock that was not "
        "synchronised, or more than a day in the future)",
        "their time stamp is implausible",
        "check them first (agent flush --dry-run --release-unsynced shows the times they would be sent "
        f"with), then send them with their stamps as captured: {_RELEASE}",
    ),
    "wait": (
        "taken in this boot before the clock synchronised: they are sent with the corrected time "
        "as soon as it does",
        "the clock has not synchronised yet in this boot",
        f"nothing yet (NTP usually synchronises within minutes); if it never does, {_NTP}",
    ),
    "invalid": (
        "journal records that cannot be placed in time or have no card number (damaged): "
        "they can never be sent",
        "their journal record cannot be placed in time or has no card number",
        "nothing to release: the log names each one ('cannot be placed in time'); "
        "the other scans are delivered around them",
    ),
}
_OVERDUE = (
    "taken in this boot, whose clock has not synchronised although NTP has had more than its grace "
    "period: NTP is probably blocked or unreachable (a firewall, a VM or container), and they wait "
    "for it for good",
    "the clock was never synchronised in this boot (NTP blocked?)",
    f"{_NTP}; or check their times and send them as stamped: {_RELEASE}",
)
# The "wait" words by held_detail["waiting_for"] (absent: a daemon of an older
# version, whose only source is NTP): (within NTP's grace, past it).
_WAIT: dict[str, tuple[tuple[str, str, str], tuple[str, str, str]]] = {
    "ntp": (
        (_WORDS["wait"][0] + f" ({_HTTPS_ONLY})", _WORDS["wait"][1], _WORDS["wait"][2]),
        ("taken in this boot, whose clock has not synchronised although NTP has had more than its grace "
         "period: NTP is probably blocked or unreachable (a firewall, a VM or container), and it is the only "
         "source (iFlow's Date is used only over verified HTTPS): they wait for it for good",
         _OVERDUE[1], _OVERDUE[2]),
    ),
    "ntp or https-date": (
        ("taken in this boot before the clock synchronised: they are sent with the corrected time as soon "
         "as NTP synchronises or iFlow answers over HTTPS (its Date gives the time)",
         "the time is not known yet in this boot (waiting for NTP or iFlow's HTTPS Date)",
         f"nothing yet (the time usually comes within minutes); if it never does, {_NTP}, or {IFLOW_FIX}"),
        ("taken in this boot, whose time is still unknown although NTP has had more than its grace period: "
         "NTP is probably blocked or unreachable (a firewall, a VM or container) and iFlow has not answered "
         "over HTTPS; they are sent as soon as one of them gives the time",
         "the time was never learned in this boot (NTP blocked and iFlow unreachable?)",
         f"{_NTP}, or {IFLOW_FIX}; or check their times and send them as stamped: {_RELEASE}"),
    ),
}
_WAIT["https-date"] = _WAIT["ntp or https-date"]


def _words(status: str, detail: Mapping[str, Any] | None) -> tuple[str, str, str]:
    if status == "wait":
        overdue = int((detail or {}).get("wait_overdue") or 0) > 0
        pair = _WAIT.get(str((detail or {}).get("waiting_for")))
        if pair is not None:
            return pair[overdue]
        if overdue:
            return _OVERDUE
    return _WORDS.get(status, (f"held ({status})", f"held ({status})", "see agent status and the log"))


def _counts(held: Mapping[str, Any] | None) -> list[tuple[str, int]]:
    held = held or {}
    order = [s for s in HELD if s in held] + sorted(s for s in held if s not in HELD)
    return [(s, int(held[s])) for s in order if int(held[s] or 0) > 0]


def explain(held: Mapping[str, Any] | None, detail: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """``[{"status", "count", "reason", "action"}]``: each held status with a
    count, in :data:`HELD` order (the ``held_reasons`` of ``agent status --json``)."""
    out = []
    for status, n in _counts(held):
        reason, _, action = _words(status, detail)
        out.append({"status": status, "count": n, "reason": reason, "action": action})
    return out


def first_line(held: Mapping[str, Any] | None, detail: Mapping[str, Any] | None = None) -> str | None:
    """One line saying how many scans are held and why (``agent flush``'s
    first line), or None when none is."""
    counts = _counts(held)
    if not counts:
        return None
    total = sum(n for _, n in counts)
    if len(counts) == 1:
        why = _words(counts[0][0], detail)[1]
    else:
        why = ", ".join(f"{n} because {_words(s, detail)[1]}" for s, n in counts)
    hint = []
    if any(s in RELEASABLE for s, _ in counts):
        hint.append(f"{_RELEASE} sends {'them' if len(counts) == 1 else 'the held ones'}")
    if any(s not in RELEASABLE for s, _ in counts):
        hint.append("see agent status")
    return f"{total} scan{'s' if total != 1 else ''} not sent: {why} ({'; '.join(hint)})"


def needs_person(held: Mapping[str, Any] | None, detail: Mapping[str, Any] | None = None) -> bool:
    """Whether held scans wait for a person (the door shows "offline"):
    anything releasable but a "wait" still within NTP's grace. "invalid"
    records do not count: no one at the door can do anything about them."""
    for status, n in _counts(held):
        if status == "wait":
            if int((detail or {}).get("wait_overdue") or 0) > 0:
                return True
        elif status in RELEASABLE:
            return True
    return False


# ------------------------------------------------------------ time source


def span(seconds: float) -> str:
    """A duration as a person reads it: ``"42 s"``, ``"2 min 5 s"``, ``"3 h 0 min"``, ``"120 d 3 h"``."""
    s = round(abs(seconds))
    if s < 60:
        return f"{abs(seconds):.1f} s" if abs(seconds) < 10 else f"{s} s"
    for big, small, bn, sn in ((86400, 3600, "d", "h"), (3600, 60, "h", "min"), (60, 1, "min", "s")):
        if s >= big:
            return f"{s // big} {bn} {(s % big) // small} {sn}"
    return f"{s} s"  # not reached


def utc_minute(iso: str | None) -> str | None:
    """An ISO 8601 time as ``"2026-12-02 01:36 UTC"`` (None if unreadable)."""
    if not iso:
        return None
    try:
        dt = datetime.fromisoformat(iso)
    except (TypeError, ValueError):
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def wall_clock_words(error_s: Any) -> str | None:
    """``"the wall clock is 3 h 0 min behind"`` for ``wall_clock_error_seconds``
    (None when unknown or under a second: nothing worth saying)."""
    if not isinstance(error_s, (int, float)) or isinstance(error_s, bool) or abs(error_s) < 1:
        return None
    return f"the wall clock is {span(error_s)} {'behind' if error_s < 0 else 'ahead'}"


def error_words(ts: Mapping[str, Any]) -> str | None:
    """``"±0.5 s"`` for ``time_error_seconds`` (None when unknown)."""
    e = ts.get("time_error_seconds")
    if not isinstance(e, (int, float)) or isinstance(e, bool):
        return None
    return f"±{e:.1f} s" if e >= 0.1 else f"±{e:.3f} s"


def https_words(ts: Mapping[str, Any]) -> str:
    """``"±0.5 s, confirmed 2026-12-02 01:36 UTC; the wall clock is 3 h 0 min behind"``:
    what is known of a time learned from iFlow's HTTPS Date."""
    at = utc_minute(ts.get("time_confirmed_at"))
    head = ", ".join(p for p in (error_words(ts), at and f"confirmed {at}") if p)
    return "; ".join(p for p in (head, wall_clock_words(ts.get("wall_clock_error_seconds"))) if p)


def source_words(ts: Mapping[str, Any], waiting_for: str | None = None) -> str:
    """The clock's state after ``clock: `` in ``agent status``: the source in
    use (``time_source``), its error, when it last confirmed, how far off the
    wall clock is; or what it waits for (``waiting_for``, as in ``held_detail``)."""
    source = ts.get("time_source")
    at = utc_minute(ts.get("time_confirmed_at"))
    wall = wall_clock_words(ts.get("wall_clock_error_seconds"))
    if source == "rtc":
        return "rtc (trusted without NTP: time.trust_rtc = true)"
    if source == "ntp" and ts.get("clock_synced", True):
        err = error_words(ts)
        return f"ntp (synchronised, {err})" if err else "ntp (synchronised)"
    if source == "ntp":  # an NTP anchor of this boot; the kernel's clock no longer synchronised
        parts = [f"NOT synchronised now: corrected from this boot's last NTP sync{f' ({at})' if at else ''}", wall]
        return f"ntp ({'; '.join(p for p in parts if p)})"
    if source == "https-date":
        inner = https_words(ts)
        return f"https-date ({inner})" if inner else "https-date"
    if waiting_for in ("ntp or https-date", "https-date"):
        return "NOT synchronised — waiting for NTP or iFlow's HTTPS Date"
    if waiting_for == "ntp":
        return "NOT synchronised — waiting for NTP, the only source (iFlow's Date is used only over verified HTTPS)"
    return "NOT synchronised — waiting for NTP"


def disagreement_words(ts: Mapping[str, Any]) -> tuple[str, str] | None:
    """(what was seen, what to do) when iFlow's Date disagreed with NTP (or the
    trusted RTC), from ``time_disagreement_seconds``; None otherwise."""
    d = ts.get("time_disagreement_seconds")
    if not isinstance(d, (int, float)) or isinstance(d, bool):
        return None
    trusted = "the RTC" if ts.get("time_source") == "rtc" else "NTP"
    at = utc_minute(ts.get("time_disagreement_at"))
    seen = f"iFlow's clock differs from {trusted} by {d:+.1f} s{f' (last seen {at})' if at else ''}; {trusted} wins"
    fix = "check iFlow's server clock or " + ("the RTC" if trusted == "the RTC" else "this site's NTP server")
    return seen, fix
