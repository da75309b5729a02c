"""Why a scan is held, in words, and what a person can do about it.

One place for the words that ``agent status``, ``agent flush``, ``agent
doctor`` and the door's "offline" pattern use, so the technician reads the
same explanation everywhere. The held statuses are the clock's decisions
(:mod:`agent.clock.policy`: ``"wait"``, ``"held_unsynced"``,
``"held_insane"``) and the backlog's ``"invalid"`` (a record that cannot be
placed in time or has no card number). ``held`` is their count by status
and ``detail`` the backlog's ``held_detail`` (``wait_overdue``: how many
"wait" past the grace period NTP is given).

Pure: the standard library only, and cheap to import (``agent status``
loads it).
"""

from __future__ import annotations

from typing import Any, Mapping

__all__ = ["HELD", "RELEASABLE", "explain", "first_line", "needs_person"]

#: The held statuses, in the order they are shown.
HELD = ("held_unsynced", "held_insane", "wait", "invalid")
#: What ``agent flush --release-unsynced`` sends.
RELEASABLE = frozenset({"wait", "held_unsynced", "held_insane"})

_RELEASE = "agent flush --release-unsynced"
_NTP = "let this machine reach an NTP server (UDP port 123; check: timedatectl timesync-status)"

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


def _words(status: str, detail: Mapping[str, Any] | None) -> tuple[str, str, str]:
    if status == "wait" and int((detail or {}).get("wait_overdue") or 0) > 0:
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
