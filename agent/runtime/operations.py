"""Journal operations behind `agent rejected` and reconciliation's push.

They run in whichever process owns the journal: the daemon (asked over the
control socket) or the command itself when no daemon runs.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Iterable

from agent.delivery.deliverer import reason_of
from agent.journal.store import Journal, strip_location


def handle(journal: Journal, request: dict) -> dict[str, Any]:
    """List rejected records, or return some (``retry``: ids, ``all``) to pending."""
    retry = request.get("retry") or []
    if request.get("all") or retry:
        wanted = set(retry)
        changes = []
        for rec in journal.records(("rejected",)):
            if request.get("all") or rec["id"] in wanted or rec["id"][:12] in wanted:
                changes.append((rec, {"state": "pending", "message": None, "done_at": None,
                                      "error": None, "retried": int(rec.get("retried", 0)) + 1}))
        journal.update(changes)
        found = {rec["id"] for rec, _ in changes}
        unknown = [i for i in retry if i not in found and not any(f.startswith(i) for f in found)]
        return {"returned": len(changes), "unknown": unknown}
    rows = []
    reasons: Counter = Counter()
    for rec in journal.records(("rejected",)):
        reason = reason_of(rec.get("message"), str(rec.get("tag", "")))
        reasons[reason] += 1
        rows.append({"id": rec["id"], "tag": rec.get("tag"), "captured_at": rec.get("captured_at"),
                     "sent_date": rec.get("sent_date"), "sent_time": rec.get("sent_time"),
                     "reader": rec.get("reader"), "reason": reason, "message": rec.get("message")})
    return {"rejected": rows, "by_reason": dict(reasons)}


def insert_external(journal: Journal, records: Iterable[dict]) -> dict[str, Any]:
    """Add punches from another system (CrossChex) as scans with a trusted time.

    Each record needs ``tag`` and ``captured_at`` (UTC ISO 8601); ``external_id``
    makes a second insert of the same punch a no-op.
    """
    records = list(records)
    wanted = {r.get("external_id") for r in records if r.get("external_id")}
    seen = set()
    if wanted:
        for rec in journal.records():
            if rec.get("external_id") in wanted:
                seen.add(rec["external_id"])
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
        added.append(strip_location(stored)["id"])
    return {"added": len(added), "ids": added, "skipped": len(records) - len(added)}
