"""Held scans are always explained and always releasable (issue 13).

Each held reason (a boot that never synchronised, this boot still waiting for
NTP, an implausible stamp, a record that cannot be placed in time) through
the real commands against the stand-in iFlow on 127.0.0.1: named in words
with what to do by `agent status`, `agent flush` and `agent doctor`, released
by `agent flush --release-unsynced` (all but "invalid", which is explained),
and `agent flush` exits 1 while any remain.
"""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime, timedelta

import pytest

from agent import BUILD_DATE
from agent.clock.reasons import HELD, explain, first_line, needs_person
from agent.journal.store import Journal
from standins.iflow import IflowStandin
from tests.support.harness import run_cli, write_config

TOKEN = "held-token-1234"
UTC = UTC


def boottime_ns() -> int:
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME)


def setup(tmp_path, standin, records: dict[str, dict]) -> tuple:
    """A site whose clock is not synchronised (no adjtimex, no timesyncd flag),
    in boot "this-boot", with ``records`` (tag -> clock fields) pending."""
    boot = tmp_path / "boot_id"
    boot.write_text("this-boot\n")
    cfg = write_config(tmp_path / "c.toml", state_dir=tmp_path / "state", iflow={
        "url": standin.url, "access_token": TOKEN}, extra={"time": {
            "boot_id_path": str(boot), "timesyncd_flag": str(tmp_path / "none"), "use_adjtimex": False,
            "unsynced": "hold"}})
    os.makedirs(tmp_path / "state", mode=0o700)
    j = Journal(str(tmp_path / "state" / "journal"))
    for tag, fields in records.items():
        j.append({"tag": tag, "raw": tag, "reader": "door", "source": "reader", **fields})
    j.close()
    return cfg


def first(out: str) -> str:
    """The summary's first line (on a pipe, plain progress lines come before it;
    on a terminal the progress bar is erased and this is the first line shown)."""
    return next(ln for ln in out.splitlines() if not ln.startswith("delivered "))


def stamp(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat(timespec="microseconds")


NOW = datetime.now(UTC)
FUTURE = (NOW + timedelta(days=3)).replace(microsecond=0)
EACH = {
    "UNSYNCED": {"captured_at": stamp(NOW - timedelta(days=2)), "boot_id": "old-boot", "mono_ns": 40 * 10**9,
                 "synced": False},
    "WAIT": {"captured_at": stamp(NOW), "boot_id": "this-boot", "mono_ns": boottime_ns(), "synced": False},
    "INSANE": {"captured_at": stamp(FUTURE), "boot_id": "old-boot", "mono_ns": 50 * 10**9, "synced": True},
    "INVALID": {"captured_at": "not a time", "boot_id": "old-boot", "mono_ns": 60 * 10**9, "synced": False},
}


@pytest.fixture
def standin():
    with IflowStandin(token=TOKEN) as s:
        yield s


def test_each_reason_in_words_and_released_except_invalid(tmp_path, standin):
    cfg = setup(tmp_path, standin, EACH)
    st = json.loads(run_cli(cfg, "status", "--json").stdout)
    assert st["held"] == {"held_unsynced": 1, "wait": 1, "held_insane": 1, "invalid": 1}
    by_status = {r["status"]: r for r in st["held_reasons"]}
    assert set(by_status) == set(HELD) and all(r["count"] == 1 for r in by_status.values())
    assert "never synchronised" in by_status["held_unsynced"]["reason"]
    assert "--release-unsynced" in by_status["held_insane"]["action"] and "check them" in \
        by_status["held_insane"]["action"]
    assert "can never be sent" in by_status["invalid"]["reason"]

    text = run_cli(cfg, "status").stdout
    assert "{" not in text and "'wait'" not in text  # words, never a Python dict
    for r in st["held_reasons"]:
        assert r["reason"] in text and r["action"] in text

    r = run_cli(cfg, "flush")
    assert r.returncode == 1 and standin.stored_count == 0, r.stdout + r.stderr
    line = first(r.stdout)
    assert line.startswith("3 scans not sent: 1 because the clock was never synchronised in their boot"), line
    assert "agent flush --release-unsynced sends the held ones" in line
    assert "Traceback" not in r.stderr
    # the invalid one can never be sent: set aside as failed with what is wrong, listed by agent rejected
    assert "1 record set aside as failed" in r.stdout and "see agent rejected" in r.stdout
    listed = json.loads(run_cli(cfg, "rejected", "--json").stdout)["failed"]
    assert [(x["tag"], x["reason"].startswith("cannot be placed in time")) for x in listed] == [("INVALID", True)]

    r = run_cli(cfg, "flush", "--dry-run", "--release-unsynced")
    assert r.returncode == 0 and "would send 3 record(s)" in r.stdout, r.stdout

    r = run_cli(cfg, "flush", "--release-unsynced")
    assert sorted(s["rfidTag"] for s in standin.stored) == ["INSANE", "UNSYNCED", "WAIT"], r.stdout + r.stderr
    # the implausible one went with its stamp as captured (a person checked it)
    insane = next(s for s in standin.stored if s["rfidTag"] == "INSANE")
    local = FUTURE.astimezone(cfg_zone()).strftime("%Y-%m-%d %H:%M:%S")
    assert f"{insane['date']} {insane['time']}" == local
    assert r.returncode == 0, r.stdout
    st = json.loads(run_cli(cfg, "status", "--json").stdout)
    assert (st["held"], st["pending"], st["failed"]) == ({}, 0, 1)


def cfg_zone():
    from zoneinfo import ZoneInfo
    return ZoneInfo("Europe/Bucharest")


@pytest.mark.parametrize("tag", ["UNSYNCED", "WAIT", "INSANE"])
def test_each_releasable_reason_alone(tmp_path, standin, tag):
    cfg = setup(tmp_path, standin, {tag: EACH[tag]})
    r = run_cli(cfg, "flush")
    assert r.returncode == 1 and standin.stored_count == 0
    assert first(r.stdout).startswith("1 scan not sent: "), r.stdout
    assert "(agent flush --release-unsynced sends them)" in first(r.stdout)
    r = run_cli(cfg, "flush", "--release-unsynced")
    assert r.returncode == 0 and standin.stored_count == 1, r.stdout + r.stderr
    assert "not sent" not in first(r.stdout)
    st = json.loads(run_cli(cfg, "status", "--json").stdout)
    assert st["pending"] == 0 and st["held_reasons"] == []


def test_a_synced_stamp_before_the_build_date_is_sent(tmp_path, standin):
    # an upgrade after an outage that spans the build: the scans were stamped by a good clock
    before = datetime.fromisoformat(BUILD_DATE).replace(tzinfo=UTC) - timedelta(days=3)
    cfg = setup(tmp_path, standin, {"OLD": {"captured_at": stamp(before), "boot_id": "old-boot",
                                            "mono_ns": 10**9, "synced": True}})
    r = run_cli(cfg, "flush")
    assert r.returncode == 0 and standin.stored_count == 1, r.stdout + r.stderr
    assert standin.stored[0]["date"] == before.astimezone(cfg_zone()).strftime("%Y-%m-%d")


@pytest.mark.skipif(boottime_ns() < 1000 * 10**9, reason="needs a machine up for more than NTP's grace")
def test_a_clock_never_synchronised_says_so(tmp_path, standin):
    # NTP blocked: a scan of this boot taken over 15 minutes ago still waits
    rec = dict(EACH["WAIT"], mono_ns=boottime_ns() - 1000 * 10**9)
    cfg = setup(tmp_path, standin, {"LONG": rec})
    st = json.loads(run_cli(cfg, "status", "--json").stdout)
    assert st["held"] == {"wait": 1} and st["held_detail"]["wait_overdue"] == 1
    (reason,) = st["held_reasons"]
    assert "NTP is probably blocked" in reason["reason"]
    assert "timedatectl timesync-status" in reason["action"] and "--release-unsynced" in reason["action"]
    r = run_cli(cfg, "flush")
    assert r.returncode == 1
    assert first(r.stdout) == ("1 scan not sent: the clock was never synchronised in this boot "
                                        "(NTP blocked?) (agent flush --release-unsynced sends them)")
    r = run_cli(cfg, "doctor")
    line = next(ln for ln in r.stdout.splitlines() if " clock " in f" {ln} ")
    assert line.startswith("FAIL") and "NTP is probably blocked" in line, r.stdout
    r = run_cli(cfg, "flush", "--release-unsynced")
    assert r.returncode == 0 and standin.stored_count == 1


def test_doctor_names_held_scans_with_a_synchronised_clock(tmp_path, standin):
    cfg = setup(tmp_path, standin, {"UNSYNCED": EACH["UNSYNCED"], "INSANE": EACH["INSANE"]})
    text = cfg.read_text().replace('"hold"', '"hold"\ntrust_rtc = true')
    cfg.write_text(text)
    r = run_cli(cfg, "doctor")
    held = [ln for ln in r.stdout.splitlines() if ln.split()[1:2] == ["held"]]
    assert len(held) == 2 and all(ln.startswith("WARN") for ln in held), r.stdout
    assert any("held_insane" in ln and "--release-unsynced" in ln for ln in held)


def test_reasons_are_pure_words():
    assert explain({}) == [] and first_line({"wait": 0}) is None
    assert needs_person({"held_unsynced": 1}) and needs_person({"held_insane": 2})
    assert not needs_person({"wait": 3}) and needs_person({"wait": 3}, {"wait_overdue": 1})
    assert not needs_person({"invalid": 1})  # no one at the door can act on it
    (other,) = explain({"something_new": 2})
    assert other["count"] == 2 and "something_new" in other["reason"]


def test_the_door_shows_offline_while_scans_wait_for_a_person(tmp_path, standin):
    from tests.support.harness import Daemon, Pty, wait_ready
    pty = Pty()
    try:
        cfg = setup(tmp_path, standin, {"UNSYNCED": EACH["UNSYNCED"]})
        cfg.write_text(cfg.read_text().replace('port = "/dev/null-reader"', f'port = "{pty.port}"'))
        d = Daemon(cfg)
        try:
            wait_ready(cfg)
            assert d.wait_for(lambda lines: "offline on" in lines), d.lines + d.stderr
            r = run_cli(cfg, "flush", "--release-unsynced")
            assert r.returncode == 0 and standin.stored_count == 1, r.stdout + r.stderr
            assert d.wait_for(lambda lines: "offline off" in lines), d.lines
        finally:
            assert d.terminate() == 0
    finally:
        pty.close()
