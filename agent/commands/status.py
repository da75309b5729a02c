"""``agent status``: what is pending, delivered, rejected, held; is the daemon running.

Works with and without a daemon (the same operation answers either way,
:func:`agent.runtime.operations.status`). Loads neither the HTTP client nor
gpiozero: a technician waits for this one.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from datetime import datetime

from agent import __version__
from agent.clock.reasons import (
    CERT_FIX,
    IFLOW_FIX,
    NTP_FIX,
    disagreement_words,
    explain,
    source_words,
)
from agent.config import Config
from agent.fsinfo import not_a_directory
from agent.runtime.access import call
from agent.runtime.requests import StatusRequest


def add_arguments(parser: argparse.ArgumentParser) -> None:
    out = parser.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="one JSON object")
    out.add_argument("--prometheus", action="store_true",
                     help="the metrics the daemon writes for node_exporter, once (Prometheus text format)")


def local_time(iso: str | None, cfg: Config) -> str:
    if not iso:
        return "-"
    try:
        return datetime.fromisoformat(iso).astimezone(cfg.timezone).strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return iso


def _age(iso: str | None) -> str:
    if not iso:
        return ""
    try:
        secs = time.time() - datetime.fromisoformat(iso).timestamp()
    except ValueError:
        return ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs >= size:
            return f" ({secs / size:.0f}{unit} ago)"
    return f" ({max(secs, 0):.0f}s ago)"


def main(cfg: Config, args: argparse.Namespace) -> int:
    if not os.path.isdir(cfg.state_dir) and not_a_directory(cfg.state_dir) is None:  # else: call() says why
        st = {"pending": 0, "delivered": 0, "duplicate": 0, "rejected": 0, "oldest_pending": None,
              "daemon": False, "note": f"{cfg.state_dir} does not exist yet"}
    else:
        st, _ = call(cfg, StatusRequest())
    # Worded here, not by the daemon: a daemon of an older version answers too.
    st.setdefault("held_reasons", explain(st.get("held"), st.get("held_detail")))
    if args.json:
        print(json.dumps(st, sort_keys=True))
        return 0
    if getattr(args, "prometheus", False):
        from agent.metrics.exposition import render as render_metrics

        sys.stdout.write(render_metrics(st, time.time(), __version__))
        return 0
    print("\n".join(render(st, cfg)))
    return 0


def render(st: dict, cfg: Config) -> list[str]:
    """The lines of `agent status` for the answer ``st``."""
    held = sum((st.get("held") or {}).values())
    lines = []
    if st.get("daemon"):
        lines.append(f"agent {st.get('version', __version__)}: daemon running (pid {st.get('pid')}, "
                     f"up {st.get('uptime_seconds', 0) / 60:.0f} min)")
    else:
        lines.append(f"agent {__version__}: daemon NOT running (start it: sudo systemctl start rfid-agent)")
    lines.append(f"  pending      {st['pending']:>7}   oldest {local_time(st.get('oldest_pending'), cfg)}"
                 f"{_age(st.get('oldest_pending'))}")
    lines.append(f"  delivered    {st['delivered']:>7}   ({st.get('duplicate', 0)} already in iFlow)")
    lines.append(f"  rejected     {st['rejected']:>7}" + ("   see: agent rejected" if st["rejected"] else ""))
    failed = int(st.get("failed") or 0)
    if failed:
        lines.append(f"  failed       {failed:>7}   iFlow could not take them: see: agent rejected")
    if held:
        lines.append(f"  held         {held:>7}   not sent yet, and why:")
        lines += _held_lines(st, cfg)
    if st.get("last_delivery") is not None or st.get("daemon"):
        lines.append(f"  last delivery  {local_time(st.get('last_delivery'), cfg)}{_age(st.get('last_delivery'))}")
    if st.get("last_error"):
        lines.append(f"  last error     {st['last_error']}")
        if st.get("last_error_status") is not None or st.get("last_error_excerpt"):
            code = f"HTTP {st['last_error_status']}" if st.get("last_error_status") is not None else "it"
            excerpt = f": {st['last_error_excerpt']}" if st.get("last_error_excerpt") else ""
            lines.append(f"                 iFlow answered {code}{excerpt}")
    if st.get("backoff_seconds"):
        lines.append(f"  next retry in  {math.ceil(st['backoff_seconds'])} s")
    if st.get("auth_refused"):
        lines.append("  iFlow REFUSED THE ACCESS TOKEN: check iflow.access_token and the device in iFlow")
    for r in st.get("readers", []):
        state = "connected" if r["connected"] else f"NOT CONNECTED ({r.get('error') or 'waiting'})"
        lines.append(f"  reader {r['name']}: {state}")
    lines += _clock_lines(st, cfg)
    for q in st.get("quarantined") or []:
        lines.append(f"  UNREADABLE journal file moved aside: {q}")
    if st.get("note"):
        lines.append(f"  {st['note']}")
    return lines


def _held_lines(st: dict, cfg: Config) -> list[str]:
    """Each held reason in words, with what to do; then when the held ones
    (a "wait" aside) were taken, and where their true time lies if known."""
    out = []
    hd = st.get("held_detail") or {}
    for r in st.get("held_reasons") or explain(st.get("held"), hd):
        out.append(f"    {r['count']:>7} {r['reason']}")
        out.append(f"            what to do: {r['action']}")
    if hd.get("oldest"):
        out.append(f"            stamped {local_time(hd['oldest'], cfg)} .. {local_time(hd.get('newest'), cfg)}"
                   " by the clock as it was then")
    if hd.get("bound_from"):
        out.append(f"            true time between {local_time(hd['bound_from'], cfg)} and "
                   f"{local_time(hd.get('bound_to'), cfg)}")
    return out


def _clock_lines(st: dict, cfg: Config) -> list[str]:
    """The time source in use, or what the clock waits for and what to do;
    then a disagreement of iFlow's Date with NTP, and a certificate the wall
    clock is outside of."""
    if "time_source" not in st:  # a daemon of an older version: the sync state only
        if st.get("clock_synced") is False:
            return [("  clock: NOT synchronised (scans are stamped now and corrected when it syncs; "
                     f"check: {NTP_FIX})")]
        return []
    hd = st.get("held_detail") or {}
    waiting_for = hd.get("waiting_for")
    if st.get("time_source") is None and waiting_for is None:
        waiting_for = _waiting_for(cfg)
    lines = [f"  clock: {source_words(st, waiting_for)}"]
    if st.get("time_source") is None:
        wait = int((st.get("held") or {}).get("wait") or 0)
        if wait:  # what to do is said with them, above
            lines.append(f"         {wait} scan{'s' if wait != 1 else ''} of this boot held until the time is known")
        else:
            fix = NTP_FIX if waiting_for == "ntp" else f"{NTP_FIX}; or {IFLOW_FIX}"
            lines.append(f"         what to do: {fix}")
    seen = disagreement_words(st)
    if seen is not None:
        lines.append(f"  clock: {seen[0]} — {seen[1]}")
    if st.get("cert_time_problem"):
        lines.append(f"  clock: {st['cert_time_problem']}")
        if st.get("time_source") is None:
            lines.append(f"         what to do: {CERT_FIX}")
    return lines


def _waiting_for(cfg: Config) -> str:
    # Only when nothing waits (else held_detail says it): the composition root
    # costs `agent status` the journal's imports, so it is loaded only here.
    from agent.runtime.wiring import waiting_for

    return waiting_for(cfg)
