"""The ``clock`` check: the wall clock is synchronised, or how many scans wait
for it; and a ``held`` line for each other reason scans are held, in the
words of :mod:`agent.clock.reasons`."""

from __future__ import annotations

from agent.clock.reasons import explain
from agent.clock.sources import ClockSources
from agent.commands.doctor.base import FAIL, PASS, WARN, Ctx, Result, result

_NTP_FIX = "check NTP: timedatectl timesync-status; the network must reach an NTP server (UDP 123)"


def check_clock(ctx: Ctx) -> list[Result]:
    t = ctx.cfg.time
    snap = ctx.snapshot or {}
    reasons = explain(snap.get("held"), snap.get("held_detail"))
    held_lines = [_held(r) for r in reasons if r["status"] != "wait"]
    if t.trust_rtc:
        return [result("clock", PASS, "trusted without NTP (time.trust_rtc = true)"), *held_lines]
    synced = ClockSources(use_adjtimex=t.use_adjtimex, timesyncd_flag=t.timesyncd_flag,
                          trust_rtc=t.trust_rtc, boot_id_path=t.boot_id_path).synced()
    if synced:
        return [result("clock", PASS, "synchronised"), *held_lines]
    detail = "NOT synchronised: scans are stamped now and corrected once it syncs"
    if ctx.snapshot is not None:
        held = sum(int(v) for v in (ctx.snapshot.get("held") or {}).values())
        detail += f"; {held} scan(s) held until the time is known"
    wait = next((r for r in reasons if r["status"] == "wait"), None)
    if wait is not None and int((snap.get("held_detail") or {}).get("wait_overdue") or 0):
        # Past NTP's grace: with time.unsynced = "hold" nothing of this boot is ever sent.
        return [result("clock", FAIL, f"{detail}; {wait['count']} of this boot: {wait['reason']}",
                       wait["action"]), *held_lines]
    return [result("clock", WARN, detail, _NTP_FIX), *held_lines]


def _held(r: dict) -> Result:
    """WARN: a person must look (releasable ones), or know (invalid ones)."""
    return result("held", WARN, f"{r['count']} scan(s) {r['status']}: {r['reason']}", r["action"])
