"""`agent reconcile` against a real CrossChex stand-in, a real journal and the iFlow stand-in."""

from __future__ import annotations

import argparse
import json
import logging
import re
import stat
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from agent.clock.anchors import AnchorStore
from agent.clock.clock import Clock
from agent.clock.sources import ClockSources
from agent.commands.cli import run_command
from agent.commands.reconcile import add_arguments, parse_time
from agent.config import load
from agent.crosschex.matching import LocalScan
from agent.journal.store import Journal
from agent.records import Record
from agent.runtime.access import call
from agent.runtime.operations import insert_external, scans_in_window
from agent.runtime.reconciliation import external_id, reconcile_window
from agent.runtime.requests import ScansRequest
from agent.runtime.scheduler import Scheduler
from standins.crosschex import CrossChexStandIn, make_record
from standins.iflow import IflowStandin
from tests.support.harness import Daemon, Pty, run_cli, wait_ready, write_config

UTC = UTC
TZ = ZoneInfo("Europe/Bucharest")  # UTC+2 in March 2024
KEY, SECRET = "cc-key-4411", "cc-SECRET-value-9876"
IFLOW_TOKEN = "iflow-token-5522"
T = datetime(2024, 3, 1, 8, 0, 0, tzinfo=UTC)
WINDOW = ["--from", "2024-03-01T08:00:00Z", "--to", "2024-03-01T10:00:00Z"]
MAPPING = "workno,rfidTag\n101,AA0001\n102,AA0002\n103,AA0003\n104,AA0004\n"


def at(minutes: float) -> datetime:
    return T + timedelta(minutes=minutes)


# CrossChex punches, and the scans the door recorded (window 08:00-10:00 UTC).
CC_RECORDS = [
    make_record(101, at(0), first_name="Ana", last_name="Pop"),         # matched (+30 s)
    make_record(102, at(10), first_name="Dan"),                         # matched (-55 s, lower-case tag)
    make_record(103, at(20), first_name="Ion"),                         # only CrossChex: scan is 90 s off
    make_record(104, at(30), first_name="Eva", serial="SN-2", device_name="Back door"),  # only CrossChex
    make_record(999, at(40), first_name="Nobody"),                      # unmapped
    make_record(104, at(50)),                                           # matched via corrected_at
    make_record(101, at(119) + timedelta(seconds=50)),                  # matched by a scan after the window end
    make_record(101, at(-60)),                                          # outside the window: not fetched
]
LOCAL_SCANS = [
    ("AA0001", at(0.5), {}),
    ("aa0002", at(10) - timedelta(seconds=55), {}),
    ("AA0003", at(21.5), {}),                                           # only local
    ("AA0009", at(60), {}),                                             # only local
    ("AA0004", datetime(2020, 1, 5, tzinfo=UTC), {"corrected_at": at(50).isoformat()}),
    ("AA0001", at(120) + timedelta(seconds=20), {}),                    # just after the window
    ("AA0005", at(200), {}),                                            # far outside
]
COUNTS = {"matched": 4, "only_crosschex": 2, "only_local": 2, "unmapped": 1}


def seed_journal(state: Path, scans=LOCAL_SCANS, state_name: str = "delivered") -> None:
    j = Journal(str(state / "journal"))
    try:
        for tag, when, extra in scans:
            j.append({"tag": tag, "raw": tag, "reader": "door", "source": "reader",
                      "captured_at": when.isoformat(timespec="microseconds"), "boot_id": "test-boot",
                      "mono_ns": 1, "synced": True, "state": state_name, **extra})
    finally:
        j.close()


def journal_records(state: Path) -> list[Record]:
    j = Journal(str(state / "journal"))
    try:
        return list(j.records())
    finally:
        j.close()


def make_config(tmp: Path, cc_url: str, *, secret: str = SECRET, mapping: str | None = MAPPING,
                iflow_url: str | None = None, port: str | None = None, **cc_extra) -> Path:
    cc = {"url": cc_url, "api_key": KEY, "api_secret": secret, "min_interval": "0s", "match_seconds": 60}
    if mapping is not None:
        mp = tmp / "mapping.csv"
        mp.write_text(mapping)
        cc["mapping_file"] = str(mp)
    cc.update(cc_extra)
    iflow = {"url": iflow_url, "access_token": IFLOW_TOKEN} if iflow_url else None
    return write_config(tmp / "c.toml", state_dir=tmp / "state", iflow=iflow, port=port, extra={"crosschex": cc})


def args_for(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_arguments(p)
    return p.parse_args(list(argv))


def run_main(capsys, cfg, *argv: str) -> tuple[int, str, str]:
    rc = run_command("reconcile", cfg, args_for(*argv))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def cc_server():
    with CrossChexStandIn(CC_RECORDS, api_key=KEY, api_secret=SECRET) as srv:
        yield srv


@pytest.fixture
def site(tmp_path, cc_server):
    seed_journal(tmp_path / "state")
    return load(str(make_config(tmp_path, cc_server.url)))


def deliver(cfg) -> None:
    from agent.delivery.client import IflowClient
    from agent.delivery.deliverer import Deliverer
    from agent.runtime.wiring import make_clock, open_journal

    journal = open_journal(cfg)
    client = IflowClient(cfg.iflow.url, cfg.iflow.access_token, "1.0")
    try:
        summary = Deliverer(journal, client, make_clock(cfg), cfg.timezone).drain()
        assert summary.reachable and summary.error is None, summary.as_dict()
    finally:
        client.close()
        journal.close()


# ------------------------------------------------------------------ counts


def test_known_overlaps_give_exact_counts(site, capsys, cc_server):
    rc, out, err = run_main(capsys, site, *WINDOW, "--json")
    assert rc == 0, err
    res = json.loads(out)
    assert {k: res[k] for k in COUNTS} == COUNTS
    assert res["crosschex_records"] == 7 and res["local_scans"] == 5 and "pushed" not in res
    lists = res["lists"]
    assert [(r["workno"], r["tag"]) for r in lists["only_crosschex"]] == [("103", "AA0003"), ("104", "AA0004")]
    assert lists["only_crosschex"][1]["external_id"] == "cc:SN-2:2024-03-01T08:30:00+00:00:104"
    assert [s["tag"] for s in lists["only_local"]] == ["AA0003", "AA0009"]
    assert [r["workno"] for r in lists["unmapped"]] == ["999"]
    assert [(m["workno"], m["scan_tag"], m["delta_seconds"]) for m in lists["matched"]] == [
        ("101", "AA0001", 30.0), ("102", "aa0002", -55.0), ("104", "AA0004", 0.0), ("101", "AA0001", 30.0)]
    assert cc_server.calls["attendance.record"] == 1


def test_readable_table_lists_what_differs(site, capsys):
    rc, out, _ = run_main(capsys, site, "--from", "2024-03-01 10:00", "--to", "2024-03-01 12:00")
    assert rc == 0
    assert "2024-03-01 10:00:00 .. 2024-03-01 12:00:00 (Europe/Bucharest)" in out
    assert re.search(r"^  matched\s+4$", out, re.M) and re.search(r"^  unmapped\s+1\s", out, re.M)
    # only in CrossChex: local time, workno, name, device, mapped card
    row = next(ln for ln in out.splitlines() if "AA0004" in ln and "Back door" in ln)
    assert row.split()[:4] == ["2024-03-01", "10:30:00", "104", "Eva"] and "(SN-2)" in row
    assert any("999" in ln and "Nobody" in ln for ln in out.splitlines())
    assert any("AA0009" in ln and "11:00:00" in ln for ln in out.splitlines())
    assert "--push" in out  # the hint


def test_push_then_deliver_sends_exactly_the_crosschex_only_records(tmp_path, cc_server, capsys):
    seed_journal(tmp_path / "state")
    with IflowStandin(token=IFLOW_TOKEN) as iflow:
        cfg = load(str(make_config(tmp_path, cc_server.url, iflow_url=iflow.url)))
        rc, out, err = run_main(capsys, cfg, *WINDOW, "--push", "--json")
        assert rc == 0, err
        res = json.loads(out)
        assert res["pushed"] == 2 and res["already_in_journal"] == 0
        pushed = [r for r in journal_records(tmp_path / "state") if r.source == "crosschex"]
        assert sorted((r.tag, r.captured_at, r.reader, r.state) for r in pushed) == [
            ("AA0003", "2024-03-01T08:20:00.000000+00:00", "crosschex", "pending"),
            ("AA0004", "2024-03-01T08:30:00.000000+00:00", "crosschex", "pending"),
        ]
        assert {r.extra["external_id"] for r in pushed} == {
            "cc:1750120622290025:2024-03-01T08:20:00+00:00:103", "cc:SN-2:2024-03-01T08:30:00+00:00:104"}
        deliver(cfg)
        assert sorted((s["date"], s["time"], s["rfidTag"]) for s in iflow.stored) == [
            ("2024-03-01", "10:20:00", "AA0003"), ("2024-03-01", "10:30:00", "AA0004")]

        # A second push adds nothing: the pushed punches now match as local scans.
        rc, out, err = run_main(capsys, cfg, *WINDOW, "--push", "--json")
        res = json.loads(out)
        assert rc == 0 and res["pushed"] == 0 and res["only_crosschex"] == 0 and res["matched"] == 6
        deliver(cfg)
        assert iflow.stored_count == 2
    assert len(journal_records(tmp_path / "state")) == len(LOCAL_SCANS) + 2


def test_external_id_alone_prevents_a_second_push(site):
    """Even when the pushed scans are not seen as local scans, the journal refuses them again."""
    from agent.runtime.access import dispatch
    from agent.runtime.wiring import open_journal

    def hide_pushed(req):
        if isinstance(req, ScansRequest):
            def local():
                j = open_journal(site)
                try:
                    return [s for s in scans_in_window(j, None, datetime.fromisoformat(req.begin),
                                                       datetime.fromisoformat(req.end))
                            if s["source"] != "crosschex"]
                finally:
                    j.close()
            return dispatch(site, req.to_wire(), local)[0]
        return call(site, req)[0]

    begin, end = at(0), at(120)
    first = reconcile_window(site, begin, end, push=True, ask=hide_pushed)
    second = reconcile_window(site, begin, end, push=True, ask=hide_pushed)
    assert (first["pushed"], first["already_in_journal"]) == (2, 0)
    assert (second["only_crosschex"], second["pushed"], second["already_in_journal"]) == (2, 0, 2)


def test_window_defaults_to_reconcile_window_before_now(tmp_path, capsys):
    now = datetime.now(UTC).replace(microsecond=0)
    recs = [make_record(101, now - timedelta(hours=1)), make_record(101, now - timedelta(hours=5))]
    with CrossChexStandIn(recs, api_key=KEY, api_secret=SECRET) as srv:
        seed_journal(tmp_path / "state", [])
        cfg = load(str(make_config(tmp_path, srv.url, reconcile_window="3h")))
        rc, out, _ = run_main(capsys, cfg, "--json")
        res = json.loads(out)
        assert rc == 0 and res["crosschex_records"] == 1 and res["only_crosschex"] == 1
        assert abs(datetime.fromisoformat(res["to"]) - now) < timedelta(seconds=30)
        assert datetime.fromisoformat(res["to"]) - datetime.fromisoformat(res["from"]) == timedelta(hours=3)
        rc, out, _ = run_main(capsys, cfg, "--from", "-6h", "--json")
        assert json.loads(out)["crosschex_records"] == 2


def test_tag_from_without_mapping_file(tmp_path, capsys):
    recs = [make_record(7, at(5), card_number="CARD7"), make_record(8, at(6))]
    with CrossChexStandIn(recs, api_key=KEY, api_secret=SECRET) as srv:
        seed_journal(tmp_path / "state", [("card7", at(5.5), {})])
        cfg = load(str(make_config(tmp_path, srv.url, mapping=None, tag_from="employee.card_number")))
        rc, out, _ = run_main(capsys, cfg, *WINDOW, "--json")
        res = json.loads(out)
        assert rc == 0 and (res["matched"], res["only_crosschex"], res["unmapped"]) == (1, 0, 1)


# ------------------------------------------------------------------ errors


def test_auth_error_is_one_clear_line_and_exit_1(tmp_path, cc_server, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    seed_journal(tmp_path / "state")
    wrong = "wrong-SECRET-3344"
    cfg = load(str(make_config(tmp_path, cc_server.url, secret=wrong)))
    rc, out, err = run_main(capsys, cfg, *WINDOW)
    assert rc == 1 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "AUTH_ERROR" in lines[0] and "api_key/api_secret" in lines[0]
    assert lines[0].startswith("agent: CrossChex Cloud:")
    assert wrong not in err + caplog.text and SECRET not in err + caplog.text


def test_unreachable_crosschex_is_exit_1(tmp_path, capsys):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there
    seed_journal(tmp_path / "state")
    cfg = load(str(make_config(tmp_path, f"http://127.0.0.1:{port}/")))
    rc, out, err = run_main(capsys, cfg, *WINDOW)
    assert rc == 1 and "cannot reach CrossChex Cloud" in err and len(err.strip().splitlines()) == 1


def test_bad_answer_is_exit_1(site, cc_server, capsys):
    cc_server.queue_fault("html", namespace="attendance.record")
    rc, _, err = run_main(capsys, site, *WINDOW)
    assert rc == 1 and "HTML" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("argv, needle", [
    (["--from", "yesterday"], "--from: cannot read 'yesterday'"),
    (["--to", "2024-13-01"], "--to: cannot read"),
    (["--from", "2024-03-01T10:00Z", "--to", "2024-03-01T09:00Z"], "must be before --to"),
    (["--from", "2024-03-31 03:30", "--to", "2024-04-01"], "does not exist in Europe/Bucharest"),
])
def test_bad_times_are_exit_2(site, capsys, argv, needle):
    rc, out, err = run_main(capsys, site, *argv)
    assert rc == 2 and out == "" and needle in err


def test_config_problems_are_exit_2(tmp_path, cc_server, capsys):
    seed_journal(tmp_path / "state")
    cfg = load(str(make_config(tmp_path, cc_server.url, mapping="workno,rfidTag\n101,AA1,extra\n")))
    rc, _, err = run_main(capsys, cfg, *WINDOW)
    assert rc == 2 and "mapping_file" in err and "mapping.csv:2" in err
    assert cc_server.calls["attendance.record"] == 0  # checked before calling CrossChex
    bare = write_config(tmp_path / "bare.toml", state_dir=tmp_path / "state")
    rc, _, err = run_main(capsys, load(str(bare)), *WINDOW)
    assert rc == 2 and "[crosschex] is not configured" in err


def test_secret_and_token_never_in_output_or_debug_logs(site, cc_server, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    rc, out, err = run_main(capsys, site, *WINDOW, "--json")
    rc2, out2, err2 = run_main(capsys, site, *WINDOW, "--push")
    assert rc == rc2 == 0 and cc_server.issued
    text = out + err + out2 + err2 + caplog.text
    for secret in [SECRET, *cc_server.issued]:
        assert secret not in text
    assert "CrossChex page 1/1" in caplog.text  # DEBUG logging really was on
    cache = Path(site.state_dir) / "crosschex-token.json"
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600
    assert cc_server.calls["authorize.token"] == 1  # the second run reused the cached token


# ------------------------------------------------------------ time parsing


def test_parse_time_forms():
    now = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
    assert parse_time("2024-03-01T08:00:00+03:00", TZ) == datetime(2024, 3, 1, 5, tzinfo=UTC)
    assert parse_time("2024-03-01T08:00:00Z", TZ) == datetime(2024, 3, 1, 8, tzinfo=UTC)
    assert parse_time("2024-03-01 08:00", TZ) == datetime(2024, 3, 1, 6, tzinfo=UTC)
    assert parse_time("2024-07-01 08:00:30", TZ) == datetime(2024, 7, 1, 5, 0, 30, tzinfo=UTC)  # summer
    assert parse_time("2024-03-01", TZ) == datetime(2024, 2, 29, 22, tzinfo=UTC)
    assert parse_time("2024-03-01", TZ, end_of_day=True) == datetime(2024, 3, 1, 21, 59, 59, tzinfo=UTC)
    assert parse_time("-24h", TZ, now=now) == now - timedelta(hours=24)
    assert parse_time("-90m", TZ, now=now) == now - timedelta(minutes=90)
    assert parse_time("-2d", TZ, now=now) == now - timedelta(days=2)
    assert parse_time("now", TZ, now=now) == now
    # the repeated hour at the end of summer time: its first occurrence (EEST)
    assert parse_time("2024-10-27 03:30", TZ) == datetime(2024, 10, 27, 0, 30, tzinfo=UTC)
    for bad in ("", "24h", "-24x", "2024-03-31 03:30", "tomorrow"):
        with pytest.raises(ValueError):
            parse_time(bad, TZ, now=now)


@pytest.mark.parametrize("argv", [
    ["--from", "-24h", "--to", "-1.5h"],
    ["--from=-24h", "--to=-1.5h"],
    ["--fr", "-24h", "--t", "-1.5h"],  # the abbreviations argparse accepts
])
def test_relative_times_after_the_option_or_attached_to_it(argv):
    """Plain argparse reads "--from -24h" as two options; the command's parser reads a time."""
    from agent.commands.cli import build_parser

    whole = ["reconcile", *argv, "--json"]
    for args in (args_for(*argv, "--json"), build_parser(whole).parse_args(whole)):
        assert (args.begin, args.end, args.json) == ("-24h", "-1.5h", True)


@pytest.mark.parametrize("argv", [["--from"], ["--from", "--push"], ["--json", "-24h"], ["--from", "yesterday", "-2h"]])
def test_a_missing_or_stray_time_is_still_a_usage_error(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        args_for(*argv)
    assert exc.value.code == 2


# --------------------------------------------------- local scans' true time


def test_scans_in_window_uses_corrected_then_clock_then_captured(tmp_path):
    boot = tmp_path / "boot_id"
    boot.write_text("boot-now\n")
    store = AnchorStore(str(tmp_path / "clock.json"))
    true_start = at(0)  # boot "old" started at 08:00 true time; its wall clock said 2020
    store.add_anchor("old", int((true_start + timedelta(hours=1)).timestamp() * 1e9), 3600 * 10**9)
    clock = Clock(ClockSources(boot_id_path=str(boot), adjtimex=lambda: True), store)
    j = Journal(str(tmp_path / "journal"))
    try:
        base = {"raw": "x", "reader": "door", "source": "reader", "state": "pending", "mono_ns": 1}
        a = j.append(dict(base, tag="A", captured_at="2020-01-01T00:00:00.000000+00:00", boot_id="old",
                          mono_ns=10 * 60 * 10**9, synced=False))                      # clock: 08:10
        b = j.append(dict(base, tag="B", captured_at="2020-01-01T00:00:00.000000+00:00", boot_id="x",
                          synced=False, corrected_at=at(20).isoformat()))              # corrected_at
        c = j.append(dict(base, tag="C", captured_at=at(30).isoformat(), boot_id="y", synced=True))
        j.append(dict(base, tag="D", captured_at=at(300).isoformat(), boot_id="y", synced=True))
        j.append(dict(base, tag="E", captured_at="garbage", boot_id="y", synced=True))
        got = scans_in_window(j, clock, at(0), at(60))
        assert [(s["id"], s["tag"], s["when"]) for s in got] == [
            (a.id, "A", "2024-03-01T08:10:00.000000+00:00"),
            (b.id, "B", "2024-03-01T08:20:00.000000+00:00"),
            (c.id, "C", "2024-03-01T08:30:00.000000+00:00")]
        # without a clock the unsynced scan keeps its (wrong) capture time: outside the window
        assert [s["tag"] for s in scans_in_window(j, None, at(0), at(60))] == ["B", "C"]
        with pytest.raises(ValueError):
            scans_in_window(j, clock, datetime(2024, 3, 1), at(60))
    finally:
        j.close()


# ---------------------------------------------------------------- schedule


class Sched:
    """A Scheduler over a real journal, with a settable clock and a gate on local reads."""

    def __init__(self, tmp: Path, url: str, **cc) -> None:
        tmp.mkdir(exist_ok=True)
        self.t = time.time()
        self.journal = Journal(str(tmp / "state" / "journal"))
        self.gate = threading.Event()
        self.gate.set()
        self.inserted: list[list[dict]] = []
        cc.setdefault("reconcile_every", "1h")
        self.cfg = load(str(make_config(tmp, url, **cc)))

        def local_scans(b, e):
            self.gate.wait(10)
            return [LocalScan(s["id"], s["tag"], datetime.fromisoformat(s["when"]))
                    for s in scans_in_window(self.journal, None, b, e)]

        def insert(records):
            self.inserted.append(records)
            return insert_external(self.journal, records)

        self.s = Scheduler(self.cfg, insert, local_scans, now=lambda: self.t)

    def tick(self) -> float:
        t0 = time.perf_counter()
        self.s.tick()
        return time.perf_counter() - t0

    def close(self) -> None:
        self.s.stop()
        self.journal.close()


def test_scheduler_runs_once_when_due_not_again_before_the_interval_and_never_blocks(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    now = datetime.now(UTC).replace(microsecond=0)
    recs = [make_record(101, now - timedelta(hours=2)), make_record(102, now - timedelta(hours=3)),
            make_record(103, now - timedelta(hours=30))]  # outside the 24 h window
    with CrossChexStandIn(recs, api_key=KEY, api_secret=SECRET, min_interval_s=0.15) as srv:
        seed_journal(tmp_path / "state", [("AA0001", now - timedelta(hours=2, seconds=-20), {})])
        # the client keeps 0.2 s between calls; the stand-in refuses calls closer than 0.15 s
        sc = Sched(tmp_path, srv.url, min_interval="0.2s")
        try:
            assert sc.tick() < 0.2 and sc.s.runs == 0  # not due yet (first run a minute after start)
            sc.t += 61
            sc.gate.clear()  # the run will block in its journal read
            assert sc.tick() < 0.2 and sc.s.runs == 1 and sc.s.running
            for _ in range(5):  # while it runs: no second one, and tick stays instant
                sc.t += 7200
                assert sc.tick() < 0.2
            assert sc.s.runs == 1
            sc.gate.set()
            sc.s.join(10)
            assert not sc.s.running and sc.s.last_error is None, sc.s.last_error
            res = sc.s.last_result
            assert (res["matched"], res["only_crosschex"], res["pushed"]) == (1, 1, 1)
            assert [r["tag"] for r in sc.inserted[0]] == ["AA0002"]
            assert "1 matched, 1 only in CrossChex (1 pushed)" in caplog.text

            sc.tick()  # due again: the previous run started 5 x 7200 s ago by this clock
            assert sc.s.runs == 2
            sc.s.join(10)
            assert sc.s.last_result["pushed"] == 0 and sc.s.last_result["matched"] == 2
            sc.t += 3599
            sc.tick()
            assert sc.s.runs == 2  # not before the interval
            sc.t += 2
            sc.tick()
            sc.s.join(10)
            assert sc.s.runs == 3 and sc.s.last_error is None
            # one token for all runs; every call respected the rate limit
            assert srv.calls["authorize.token"] == 1 and srv.calls["attendance.record"] == 3
        finally:
            sc.close()


def test_scheduler_errors_are_logged_and_stop_interrupts_a_rate_limit_wait(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    with CrossChexStandIn([], api_key=KEY, api_secret="other") as srv:
        seed_journal(tmp_path / "state", [])
        sc = Sched(tmp_path, srv.url)
        try:
            sc.t += 61
            sc.tick()
            sc.s.join(10)
            assert "AUTH_ERROR" in sc.s.last_error and "CrossChex reconcile failed" in caplog.text
            assert SECRET not in caplog.text
            sc.t += 61  # not due again before the interval, error or not
            sc.tick()
            assert sc.s.runs == 1
        finally:
            sc.close()
    with CrossChexStandIn([], api_key=KEY, api_secret=SECRET) as srv:
        sc = Sched(tmp_path / "b", srv.url, min_interval="30s")
        try:
            sc.t += 61
            sc.tick()  # token call, then a 30 s wait before the records call
            deadline = time.monotonic() + 5
            while srv.calls["authorize.token"] == 0 and time.monotonic() < deadline:
                time.sleep(0.01)
            t0 = time.monotonic()
            sc.s.stop()
            assert time.monotonic() - t0 < 2 and not sc.s.running
            assert srv.calls["attendance.record"] == 0 and sc.inserted == []
            sc.t += 7200
            sc.tick()
            assert sc.s.runs == 1  # stopped for good
        finally:
            sc.close()


# ----------------------------------------------------------- the real command


def test_command_in_a_subprocess_without_and_with_the_daemon(tmp_path, cc_server):
    seed_journal(tmp_path / "state")
    pty = Pty()
    try:
        cfg = make_config(tmp_path, cc_server.url, port=pty.port)
        r = run_cli(cfg, "reconcile", *WINDOW, "--json")
        assert r.returncode == 0, r.stderr
        assert {k: json.loads(r.stdout)[k] for k in COUNTS} == COUNTS
        r = run_cli(cfg, "reconcile", "--from", "-24h", "--to", "nonsense")
        assert r.returncode == 2 and "--to: cannot read" in r.stderr and "Traceback" not in r.stderr

        d = Daemon(cfg)
        try:
            wait_ready(cfg)
            pty.send(b"AA0009\n")  # a scan taken now: outside the window, changes nothing
            r = run_cli(cfg, "--log-level", "DEBUG", "reconcile", *WINDOW, "--push", "--json")
            assert r.returncode == 0, r.stderr
            res = json.loads(r.stdout)
            assert res["pushed"] == 2 and res["only_local"] == 2
            r = run_cli(cfg, "reconcile", *WINDOW, "--push", "--json")
            assert json.loads(r.stdout)["pushed"] == 0 and json.loads(r.stdout)["matched"] == 6
            for secret in [SECRET, *cc_server.issued]:
                assert secret not in r.stdout + r.stderr
        finally:
            assert d.terminate() == 0
        assert "Traceback" not in "".join(d.stderr) and SECRET not in "".join(d.stderr)
    finally:
        pty.close()
    pushed = [r for r in journal_records(tmp_path / "state") if r.source == "crosschex"]
    assert sorted(r.extra["external_id"] for r in pushed) == sorted(
        external_id(rec) for rec in _parsed([CC_RECORDS[2], CC_RECORDS[3]]))


def _parsed(items):
    from agent.crosschex.wire import parse_record

    return [parse_record(i) for i in items]
