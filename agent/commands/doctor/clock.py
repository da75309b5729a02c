"""The ``clock`` check: where the time comes from (NTP, iFlow's HTTPS Date, a
trusted RTC) and its error, or what to do when neither source works and how
many scans wait for it; a WARN when iFlow's Date disagreed with NTP or the
wall clock is outside iFlow's certificate; and a ``held`` line for each other
reason scans are held, in the words of :mod:`agent.clock.reasons`.

The daemon's status answer says what its clock knows (``ctx.snapshot``);
without a daemon the clock is built from ``state_dir/clock.json`` as the
daemon would build it."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from agent.clock.reasons import (
    CERT_FIX,
    IFLOW_FIX,
    NTP_FIX,
    disagreement_words,
    error_words,
    explain,
    https_words,
    source_words,
    span,
    utc_minute,
)
from agent.clock.sources import ClockSources
from agent.commands.doctor.base import FAIL, PASS, WARN, Ctx, Result, result
from agent.config import Config
from agent.runtime.wiring import make_clock, waiting_for

# the wall clock this far behind the newest trusted time is worth a word
_BEHIND_FLOOR_S = 60.0


def check_clock(ctx: Ctx) -> list[Result]:
    cfg = ctx.cfg
    snap = ctx.snapshot or {}
    detail = dict(snap.get("held_detail") or {})
    if (snap.get("held") or {}).get("wait"):
        detail.setdefault("waiting_for", waiting_for(cfg))  # a local count does not say it
    reasons = explain(snap.get("held"), detail)
    held_lines = [_held(r) for r in reasons if r["status"] != "wait"]
    ts, synced, floor_s = _read(ctx)
    found = [_source(ctx, ts, synced, reasons, detail.get("waiting_for") or waiting_for(cfg))]
    seen = disagreement_words(ts)
    if seen is not None:
        found.append(result("clock", WARN, seen[0], seen[1]))
    if ts.get("cert_time_problem"):
        learned = ts.get("time_source") is not None
        found.append(result("clock", WARN if learned else FAIL, str(ts["cert_time_problem"]), CERT_FIX))
    elif floor_s is not None and ts.get("time_source") is None:
        behind = _behind_floor(floor_s)
        found += [behind] if behind is not None else []
    return [*found, *held_lines]


def _read(ctx: Ctx) -> tuple[dict[str, Any], bool, float | None]:
    """(the ``time_*`` fields, whether the kernel's clock is synchronised, the
    newest trusted time ever recorded or None when the daemon answered)."""
    if ctx.daemon is not None and "time_source" in ctx.daemon:
        return ctx.daemon, bool(ctx.daemon.get("clock_synced")), None
    if ctx.daemon is None and ctx.daemon_problem is None:
        try:
            clock = make_clock(ctx.cfg)
        except (OSError, ValueError):  # the boot id unreadable: the kernel's word alone
            pass
        else:
            return clock.time_source(), clock.synced, clock.cert_floor_s()
    # A daemon of an older version, or one that does not answer: it owns clock.json.
    t = ctx.cfg.time
    synced = ClockSources(use_adjtimex=t.use_adjtimex, timesyncd_flag=t.timesyncd_flag,
                          trust_rtc=t.trust_rtc, boot_id_path=t.boot_id_path).synced()
    return {"time_source": ("rtc" if t.trust_rtc else "ntp") if synced else None}, synced, None


def _source(ctx: Ctx, ts: dict[str, Any], synced: bool, reasons: list[dict], waits_for: str) -> Result:
    source = ts.get("time_source")
    if source == "rtc":
        return result("clock", PASS, "trusted without NTP (time.trust_rtc = true)")
    if synced:
        err = error_words(ts)
        return result("clock", PASS, f"synchronised (NTP, {err})" if err else "synchronised (NTP)")
    if source == "https-date":
        known = https_words(ts)
        return result("clock", PASS, f"time from iFlow's HTTPS Date{f' ({known})' if known else ''}: scans are "
                      "sent with it; NTP is not synchronised")
    if source == "ntp":
        return result("clock", WARN, f"{source_words({**ts, 'clock_synced': False})}", NTP_FIX)
    text = "NOT synchronised: scans are stamped now and corrected once it syncs"
    if waits_for != "ntp":
        text = ("NOT synchronised, and no time from NTP or iFlow's HTTPS Date yet: scans are stamped now and "
                "corrected once one of them gives it")
    if ctx.snapshot is not None:
        held = sum(int(v) for v in (ctx.snapshot.get("held") or {}).values())
        text += f"; {held} scan(s) held until the time is known"
    wait = next((r for r in reasons if r["status"] == "wait"), None)
    if wait is not None and int(((ctx.snapshot or {}).get("held_detail") or {}).get("wait_overdue") or 0):
        # Past NTP's grace: with time.unsynced = "hold" nothing of this boot is sent until a source answers.
        return result("clock", FAIL, f"{text}; {wait['count']} of this boot: {wait['reason']}", wait["action"])
    if waits_for == "ntp":
        return result("clock", WARN, f"{text} ({_ntp_only(ctx.cfg)})", NTP_FIX)
    return result("clock", WARN, text, f"{NTP_FIX}; or {IFLOW_FIX}")


def _ntp_only(cfg: Config) -> str:
    """Why iFlow's Date cannot give the time here."""
    if cfg.iflow is None:
        return "NTP is the only source: no [iflow] to learn the time from"
    if cfg.time.http_date_max_error <= 0:
        return "NTP is the only source: time.http_date_max_error = 0 turns iFlow's Date off"
    return ("NTP is the only source: iflow.url is plain http, and iFlow's Date is used only over verified "
            "HTTPS")


def _behind_floor(floor_s: float) -> Result | None:
    """The wall clock behind the newest trusted time this device ever recorded:
    certainly wrong, and iFlow's certificate may not be valid at it yet."""
    now = time.time()
    if now >= floor_s - _BEHIND_FLOOR_S:
        return None
    return result("clock", WARN, f"the wall clock ({_utc(now)}) is at least {span(floor_s - now)} behind: "
                  f"this device recorded {_utc(floor_s)} as a trusted time before; if iFlow's certificate starts "
                  "after the wall clock, TLS fails before iFlow's Date can set it", CERT_FIX)


def _utc(seconds: float) -> str:
    return str(utc_minute(datetime.fromtimestamp(seconds, UTC).isoformat()))


def _held(r: dict) -> Result:
    """WARN: a person must look (releasable ones), or know (invalid ones)."""
    return result("held", WARN, f"{r['count']} scan(s) {r['status']}: {r['reason']}", r["action"])
