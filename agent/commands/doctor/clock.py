"""The ``clock`` check: the wall clock is synchronised, or how many scans wait for it."""

from __future__ import annotations

from agent.clock.sources import ClockSources
from agent.commands.doctor.base import PASS, WARN, Ctx, Result, result


def check_clock(ctx: Ctx) -> list[Result]:
    t = ctx.cfg.time
    if t.trust_rtc:
        return [result("clock", PASS, "trusted without NTP (time.trust_rtc = true)")]
    synced = ClockSources(use_adjtimex=t.use_adjtimex, timesyncd_flag=t.timesyncd_flag,
                          trust_rtc=t.trust_rtc, boot_id_path=t.boot_id_path).synced()
    if synced:
        return [result("clock", PASS, "synchronised")]
    detail = "NOT synchronised: scans are stamped now and corrected once it syncs"
    if ctx.snapshot is not None:
        held = sum(int(v) for v in (ctx.snapshot.get("held") or {}).values())
        detail += f"; {held} scan(s) held until the time is known"
    return [result("clock", WARN, detail,
                   "check NTP: timedatectl timesync-status; the network must reach an NTP server (UDP 123)")]
