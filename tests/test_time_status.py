"""The time source made visible (issue 14, "Visible"): `agent status` (text and
--json) and `agent doctor` say where the time comes from (NTP, iFlow's HTTPS
Date, a trusted RTC), its error and when it last confirmed; what a boot
without a time waits for and what to do; a Date that disagreed with NTP; a
wall clock outside iFlow's certificate.

The clock's state is written by hand in ``state_dir/clock.json`` (the format of
:mod:`agent.clock.anchors`) for a boot id read from a file of the test's, and
the kernel's sync state comes from a timesyncd flag file that exists or not
(adjtimex off), so the real commands read exactly what a daemon would have left.
"""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime

import pytest

from agent.clock.reasons import (
    disagreement_words,
    explain,
    first_line,
    source_words,
    span,
    wall_clock_words,
)
from agent.commands.doctor.base import Ctx
from agent.commands.doctor.clock import check_clock
from agent.commands.status import render
from agent.config import load
from agent.journal.store import Journal
from tests.support.harness import run_cli, write_config

UTC = UTC
S = 10**9
BEHIND_S = 3 * 3600  # the wall clock of these sites is 3 hours behind the true time
HTTPS_URL = "https://127.0.0.1:9/api/rfid_v2/offline_attendance/store_attendances"  # refused at once
HTTP_URL = "http://127.0.0.1:9/api/rfid_v2/offline_attendance/store_attendances"


def boottime_ns() -> int:
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME)


def site(tmp_path, *, url: str = HTTPS_URL, synced: bool = False, boots: list[dict] | None = None,
         scans: dict[str, dict] | None = None):
    """A site in boot "this-boot" whose kernel clock is synchronised or not
    (the timesyncd flag touched now, or absent), with ``boots`` as its
    clock.json and ``scans`` (tag -> clock fields) pending."""
    (tmp_path / "boot_id").write_text("this-boot\n")
    flag = tmp_path / "synchronized"
    if synced:
        flag.write_text("")
    state = tmp_path / "state"
    os.makedirs(state, mode=0o700)
    cfg = write_config(tmp_path / "c.toml", state_dir=state, iflow={"url": url, "access_token": "tok-5150"},
                       extra={"time": {"boot_id_path": str(tmp_path / "boot_id"), "timesyncd_flag": str(flag),
                                       "use_adjtimex": False, "unsynced": "hold"}})
    if boots is not None:
        (state / "clock.json").write_text(json.dumps({"version": 1, "boots": boots}))
    j = Journal(str(state / "journal"))
    for tag, fields in (scans or {}).items():
        j.append({"tag": tag, "raw": tag, "reader": "door", "source": "reader", **fields})
    j.close()
    return cfg


def https_boot(error_ns: int = 500_000_000) -> tuple[dict, int]:
    """This boot, anchored by an HTTPS Date just now: the true time is the
    wall clock + 3 h. Returns (the boot's clock.json entry, its confirmed_ns)."""
    mono = boottime_ns()
    true_now = time.time_ns() + BEHIND_S * S
    return {"boot_id": "this-boot", "anchors": [[mono, true_now - mono]], "first": [true_now, mono],
            "last": [true_now, mono], "ntp": False,
            "https": {"error_ns": error_ns, "mono_ns": mono, "confirmed_ns": true_now, "origin": "127.0.0.1"},
            "disagree": None}, true_now


def utc_minute(ns: int) -> str:
    return datetime.fromtimestamp(ns / S, UTC).strftime("%Y-%m-%d %H:%M UTC")


def status(cfg) -> tuple[dict, str]:
    r = run_cli(cfg, "status", "--json")
    assert r.returncode == 0, r.stderr
    text = run_cli(cfg, "status")
    assert text.returncode == 0 and "Traceback" not in text.stderr, text.stderr
    return json.loads(r.stdout), text.stdout


def doctor(cfg) -> list[dict]:
    r = run_cli(cfg, "doctor", "--json")
    assert "Traceback" not in r.stderr, r.stderr
    return [x for x in json.loads(r.stdout) if x["check"] == "clock"]


def wait_scan(**kw) -> dict:
    return {"captured_at": datetime.now(UTC).isoformat(timespec="microseconds"), "boot_id": "this-boot",
            "mono_ns": boottime_ns(), "synced": False, **kw}


# ------------------------------------------------------------ HTTPS Date in use


def test_status_shows_the_https_date_in_use(tmp_path):
    boot, confirmed = https_boot()
    cfg = site(tmp_path, boots=[boot], scans={"SENDABLE": wait_scan()})
    st, text = status(cfg)
    assert st["clock_synced"] is False and st["time_source"] == "https-date"
    assert 0.5 <= st["time_error_seconds"] < 0.6  # ±0.5 s, aged by the crystal's drift since
    assert st["time_confirmed_at"] == datetime.fromtimestamp(confirmed // S, UTC).isoformat()
    assert st["wall_clock_error_seconds"] == pytest.approx(-BEHIND_S, abs=5)
    assert st["time_disagreement_seconds"] is None and st["cert_time_problem"] is None
    assert st["held"] == {} and st["pending"] == 1  # corrected by the anchor: nothing waits
    line = next(ln for ln in text.splitlines() if ln.startswith("  clock: "))
    assert line == (f"  clock: https-date (±0.5 s, confirmed {utc_minute(confirmed)}; "
                    "the wall clock is 3 h 0 min behind)"), text
    assert "NOT synchronised" not in text


def test_doctor_passes_on_the_https_date_and_says_ntp_is_not_synchronised(tmp_path):
    boot, _ = https_boot()
    (main, *rest) = doctor(site(tmp_path, boots=[boot]))
    assert main["status"] == "PASS" and rest == [], main
    assert main["detail"].startswith("time from iFlow's HTTPS Date (±0.5 s, confirmed ")
    assert "the wall clock is 3 h 0 min behind" in main["detail"] and "NTP is not synchronised" in main["detail"]


# ------------------------------------------------------------ neither source


@pytest.mark.parametrize("url, waits_for", [(HTTPS_URL, "ntp or https-date"), (HTTP_URL, "ntp")])
def test_a_boot_without_a_time_says_what_it_waits_for(tmp_path, url, waits_for):
    cfg = site(tmp_path, url=url, scans={"WAIT": wait_scan()})
    st, text = status(cfg)
    assert st["time_source"] is None and st["time_error_seconds"] is None and st["time_confirmed_at"] is None
    assert st["held"] == {"wait": 1} and st["held_detail"]["waiting_for"] == waits_for
    (reason,) = st["held_reasons"]
    line = next(ln for ln in text.splitlines() if ln.startswith("  clock: "))
    if waits_for == "ntp":
        assert line == ("  clock: NOT synchronised — waiting for NTP, the only source "
                        "(iFlow's Date is used only over verified HTTPS)"), text
        assert "NTP is the only source: iFlow's Date is used only over verified HTTPS" in reason["reason"]
    else:
        assert line == "  clock: NOT synchronised — waiting for NTP or iFlow's HTTPS Date", text
        assert "as soon as NTP synchronises or iFlow answers over HTTPS" in reason["reason"]
        assert "check that iFlow is reachable over HTTPS" in reason["action"]
    assert "1 scan of this boot held until the time is known" in text
    assert reason["reason"] in text and reason["action"] in text

    (clock, *_) = doctor(cfg)
    assert clock["status"] == "WARN" and "1 scan(s) held until the time is known" in clock["detail"], clock
    assert "pool.ntp.org or the site's NTP server on UDP 123" in clock["fix"]
    if waits_for == "ntp":
        assert "iflow.url is plain http" in clock["detail"] and "iflow" not in clock["fix"]
    else:
        assert "no time from NTP or iFlow's HTTPS Date yet" in clock["detail"]
        assert "agent doctor's iflow checks" in clock["fix"]


@pytest.mark.skipif(boottime_ns() < 1000 * S, reason="needs a machine up for more than NTP's grace")
def test_overdue_with_neither_source_fails_in_doctor_with_what_to_do(tmp_path):
    cfg = site(tmp_path, scans={"LONG": wait_scan(mono_ns=boottime_ns() - 1000 * S)})
    st, _ = status(cfg)
    assert st["held_detail"]["wait_overdue"] == 1 and st["held_detail"]["waiting_for"] == "ntp or https-date"
    (reason,) = st["held_reasons"]
    assert "NTP is probably blocked" in reason["reason"] and "iFlow has not answered over HTTPS" in reason["reason"]
    assert "check that iFlow is reachable" in reason["action"] and "--release-unsynced" in reason["action"]
    r = run_cli(cfg, "flush")
    assert r.returncode == 1
    assert "the time was never learned in this boot (NTP blocked and iFlow unreachable?)" in r.stdout, r.stdout
    (clock, *_) = doctor(cfg)
    assert clock["status"] == "FAIL" and "iFlow has not answered over HTTPS" in clock["detail"], clock
    assert "pool.ntp.org" in clock["fix"] and "agent doctor's iflow checks" in clock["fix"]


# ------------------------------------------------------------ NTP wins


def test_a_date_that_disagreed_with_ntp_is_shown_and_warned(tmp_path):
    mono = boottime_ns()
    seen = time.time_ns()
    boot = {"boot_id": "this-boot", "anchors": [[mono, seen - mono]], "first": [seen, mono], "last": [seen, mono],
            "ntp": True, "https": None, "disagree": {"seconds": 60.0, "wall_ns": seen}}
    cfg = site(tmp_path, synced=True, boots=[boot])
    st, text = status(cfg)
    assert (st["clock_synced"], st["time_source"]) == (True, "ntp")
    assert st["time_disagreement_seconds"] == 60.0
    assert st["time_disagreement_at"] == datetime.fromtimestamp(seen // S, UTC).isoformat()
    assert "  clock: ntp (synchronised)" in text.splitlines()
    assert (f"  clock: iFlow's clock differs from NTP by +60.0 s (last seen {utc_minute(seen)}); NTP wins — "
            "check iFlow's server clock or this site's NTP server") in text.splitlines(), text
    main, warn = doctor(cfg)
    assert main["status"] == "PASS" and main["detail"] == "synchronised (NTP)"
    assert warn["status"] == "WARN" and warn["detail"].startswith("iFlow's clock differs from NTP by +60.0 s")
    assert warn["detail"].endswith("NTP wins") and warn["fix"] == "check iFlow's server clock or this site's NTP server"


# ------------------------------------------------------------ certificate time


def test_a_wall_clock_behind_the_newest_trusted_time_is_named_by_doctor(tmp_path):
    # An earlier boot saw a trusted time 30 days ahead of this wall clock (a
    # Pi image restored from months ago): iFlow's certificate may not be valid yet.
    later = time.time_ns() + 30 * 86400 * S
    old = {"boot_id": "earlier-boot", "anchors": [[S, later - S]], "first": [later, S], "last": [later, S],
           "ntp": True, "https": None, "disagree": None}
    checks = doctor(site(tmp_path, boots=[old]))
    assert [c["status"] for c in checks] == ["WARN", "WARN"], checks
    behind = checks[1]["detail"]
    assert "is at least 30 d 0 h behind" in behind or "is at least 29 d 23 h behind" in behind, behind
    assert "TLS fails before iFlow's Date can set it" in behind
    assert "sudo date -s" in checks[1]["fix"] and "UDP 123" in checks[1]["fix"]


def test_the_certificate_time_problem_in_status_and_doctor(tmp_path):
    # what the daemon's time probe found: known only in its memory, so given as its status answer
    cfg = load(str(site(tmp_path)))
    problem = ("the wall clock (2026-03-01 10:00 UTC) is before the start of 127.0.0.1's certificate's "
               "validity, and its certificate is not valid at the newest trusted time this device recorded "
               "(2026-02-01 00:00 UTC) either: certificate verify failed")
    st = {"pending": 0, "delivered": 0, "rejected": 0, "daemon": True, "pid": 1, "uptime_seconds": 60,
          "held": {}, "clock_synced": False, "time_source": None, "time_error_seconds": None,
          "time_confirmed_at": None, "time_disagreement_seconds": None, "time_disagreement_at": None,
          "wall_clock_error_seconds": None, "cert_time_problem": problem}
    lines = render(st, cfg)
    at = lines.index(f"  clock: {problem}")
    assert lines[at + 1].startswith("         what to do: set the clock by hand once (sudo date -s"), lines
    found = check_clock(Ctx(cfg, daemon=st, snapshot=st))
    cert = next(r for r in found if r.detail == problem)
    assert cert.status == "FAIL" and "sudo date -s" in cert.fix
    # learned anyway (the chain checked at the server's own Date): a WARN, and the source in use
    learned = dict(st, time_source="https-date", time_error_seconds=0.7, wall_clock_error_seconds=-200 * 86400.0,
                   cert_time_problem="the wall clock is before the start of the certificate's validity: the "
                                     "time was learned with the chain checked at its own Date")
    found = check_clock(Ctx(cfg, daemon=learned, snapshot=learned))
    assert [r.status for r in found] == ["PASS", "WARN"]
    assert "the wall clock is 200 d 0 h behind" in found[0].detail
    assert render(learned, cfg)[-1] == f"  clock: {learned['cert_time_problem']}"  # no fix: nothing to do


# ------------------------------------------------------------ the words alone


def test_the_wait_words_follow_what_it_waits_for():
    both = explain({"wait": 2}, {"waiting_for": "ntp or https-date"})[0]
    only = explain({"wait": 2}, {"waiting_for": "ntp"})[0]
    older = explain({"wait": 2})[0]  # a daemon of an older version says nothing of it
    assert "as soon as NTP synchronises or iFlow answers over HTTPS" in both["reason"]
    assert "check that iFlow is reachable over HTTPS" in both["action"]
    assert "NTP is the only source: iFlow's Date is used only over verified HTTPS" in only["reason"]
    assert "iFlow" not in only["action"] and "pool.ntp.org" in only["action"]
    assert older["reason"].startswith("taken in this boot before the clock synchronised") and "iFlow" not in older["reason"]
    assert first_line({"wait": 2}, {"waiting_for": "ntp or https-date"}) == (
        "2 scans not sent: the time is not known yet in this boot (waiting for NTP or iFlow's HTTPS Date) "
        "(agent flush --release-unsynced sends them)")
    assert first_line({"wait": 1}, {"waiting_for": "ntp"}) == (
        "1 scan not sent: the clock has not synchronised yet in this boot (agent flush --release-unsynced sends them)")


def test_the_overdue_words_follow_what_it_waits_for():
    both = explain({"wait": 1}, {"waiting_for": "ntp or https-date", "wait_overdue": 1})[0]
    only = explain({"wait": 1}, {"waiting_for": "ntp", "wait_overdue": 1})[0]
    for r in (both, only):
        assert "NTP is probably blocked" in r["reason"] and "--release-unsynced" in r["action"]
        assert "timedatectl timesync-status" in r["action"] and "UDP 123" in r["action"]
    assert "iFlow has not answered over HTTPS" in both["reason"] and "agent doctor's iflow checks" in both["action"]
    assert "only over verified HTTPS" in only["reason"] and "iFlow" not in only["action"]
    assert first_line({"wait": 1}, {"waiting_for": "ntp", "wait_overdue": 1}) == (
        "1 scan not sent: the clock was never synchronised in this boot (NTP blocked?) "
        "(agent flush --release-unsynced sends them)")
    assert "NTP blocked and iFlow unreachable?" in first_line({"wait": 1}, {"waiting_for": "ntp or https-date",
                                                                          "wait_overdue": 1})


def test_time_source_words():
    assert [span(s) for s in (0.4, 42, 125, 10800.4, 120 * 86400 + 3 * 3600)] == [
        "0.4 s", "42 s", "2 min 5 s", "3 h 0 min", "120 d 3 h"]
    assert wall_clock_words(-10800) == "the wall clock is 3 h 0 min behind"
    assert wall_clock_words(42.2) == "the wall clock is 42 s ahead"
    assert wall_clock_words(0.3) is None and wall_clock_words(None) is None
    ts = {"time_source": "https-date", "time_error_seconds": 0.51, "time_confirmed_at": "2026-12-02T03:36:00+02:00",
          "wall_clock_error_seconds": -10800.0}
    assert source_words(ts) == "https-date (±0.5 s, confirmed 2026-12-02 01:36 UTC; the wall clock is 3 h 0 min behind)"
    assert source_words({"time_source": "ntp", "time_error_seconds": 0.004}) == "ntp (synchronised, ±0.004 s)"
    assert source_words({"time_source": "ntp", "clock_synced": False, "time_confirmed_at": "2026-12-02T01:00:00+00:00"}
                        ) == "ntp (NOT synchronised now: corrected from this boot's last NTP sync (2026-12-02 01:00 UTC))"
    assert source_words({"time_source": "rtc"}).startswith("rtc (trusted without NTP")
    assert source_words({"time_source": None}, "ntp or https-date") == (
        "NOT synchronised — waiting for NTP or iFlow's HTTPS Date")
    assert disagreement_words({"time_disagreement_seconds": None}) is None
    assert disagreement_words({"time_source": "rtc", "time_disagreement_seconds": -3.25}) == (
        "iFlow's clock differs from the RTC by -3.2 s; the RTC wins", "check iFlow's server clock or the RTC")
