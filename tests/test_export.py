"""`agent export`: the journal's records of a period as CSV or JSON Lines, read-only,
with and without a daemon; --hash-tags leaves no card number in the output."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
from pathlib import Path

import pytest

from agent.journal.store import Journal
from tests.support.harness import AGENT, Daemon, Pty, run_cli, wait_ready, write_config

COLUMNS = ["id", "captured_at", "local_time", "sent_date", "sent_time", "delivered_at", "state",
           "dismissed_at", "message", "reader", "source", "tag", "raw", "time_note"]
HASHED = ["id", "captured_at", "local_time", "sent_date", "sent_time", "delivered_at", "state",
          "dismissed_at", "message", "reader", "source", "tag_hmac", "time_note"]
REJECTED_MSG = "error_authenticate: Niciun angajat nu este asociat acestei cartele de tip RFID"
DONE = "2026-11-22T09:00:00.000000+00:00"

# (name, tag, raw, captured_at UTC); Europe/Bucharest is UTC+2 in November.
SCANS = [
    ("before", "0004000001", "0F003D0901", "2026-11-21T21:59:59.999999+00:00"),  # 23:59:59.999999 local, 21st
    ("midnight", "0004000002", "0F003D0902", "2026-11-21T22:00:00.000000+00:00"),  # 00:00 local, 22nd
    ("delivered", "0004000003", "0F003D0903", "2026-11-22T06:00:00.000000+00:00"),
    ("duplicate", "0004000003", "0F003D0903", "2026-11-22T06:30:00.000000+00:00"),  # the same card again
    ("rejected", "0004000004", "0F003D0904", "2026-11-22T07:00:00.000000+00:00"),
    ("failed", "0004000005", "0F003D0905", "2026-11-22T07:30:00.000000+00:00"),
    ("pinned", "0004000006", "0F003D0906", "2026-11-22T08:00:00.000000+00:00"),
    ("corrected", "0004000007", "0F003D0907", "1970-01-01T00:00:42.000000+00:00"),  # a boot without a clock
    ("last", "0004000008", "0F003D0908", "2026-11-22T21:59:59.999999+00:00"),  # 23:59:59.999999 local
    ("next", "0004000009", "0F003D0909", "2026-11-22T22:00:00.000000+00:00"),  # 00:00 local, 23rd
]
CORRECTED = "2026-11-22T08:30:00.000000+00:00"


def build(state: Path) -> dict[str, str]:
    """The journal of SCANS (3 records a segment), in every state; ids by name."""
    state.mkdir(mode=0o700, exist_ok=True)
    j = Journal(str(state / "journal"), segment_size=3)
    recs = {}
    for i, (name, tag, raw, at) in enumerate(SCANS):
        recs[name] = j.append({"tag": tag, "raw": raw, "reader": "door" if i % 2 else "gate", "source": "reader",
                               "captured_at": at, "boot_id": "b", "mono_ns": i, "synced": name != "corrected"})
    sent = {"sent_date": "2026-11-22", "sent_time": "08:00:00", "done_at": DONE, "attempts": 1}
    j.update([
        (recs["delivered"], {"state": "delivered", **sent}),
        (recs["duplicate"], {"state": "duplicate", "message": "prezență duplicată", "unsynced_sent": True, **sent}),
        (recs["rejected"], {"state": "rejected", "message": f"{REJECTED_MSG}: 0004000004 (3D0904), rfidTag 4000004", **sent}),
        (recs["failed"], {"state": "failed", "message": "HTTP 500: card 0F003D0905 too long", **sent,
                          "dismissed_at": "2026-11-22T10:00:00.000000+00:00"}),
        (recs["corrected"], {"corrected_at": CORRECTED}),
    ])
    j.pin([(recs["pinned"].id, "2026-11-22", "10:00:00")])  # about to be sent: the pin holds its send time
    j.close()
    return {name: rec.id for name, rec in recs.items()}


def snapshot(root: Path) -> dict[str, tuple[int, int, int]]:
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        out[str(p.relative_to(root))] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return out


@pytest.fixture
def site(tmp_path):
    state = tmp_path / "state"
    ids = build(state)
    cfg = write_config(tmp_path / "c.toml", state_dir=state)
    return cfg, state, ids


def export(cfg: Path, *args: str) -> subprocess.CompletedProcess:
    r = run_cli(cfg, "export", *args)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    return r


def csv_rows(text: str) -> tuple[list[str], list[dict]]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    rows = list(reader)
    return list(reader.fieldnames or []), rows


def test_csv_has_the_documented_columns_and_values_and_writes_nothing(site):
    cfg, state, ids = site
    before = snapshot(state)
    r = export(cfg, "--from", "2026-11-20", "--to", "2026-11-30")
    assert snapshot(state) == before  # read-only: no lock file, no quarantine, no temp files, nothing touched
    assert r.stdout.startswith(",".join(COLUMNS) + "\n")  # (run_cli reads text: CRLF reads as LF)
    names, rows = csv_rows(r.stdout)
    assert names == COLUMNS
    by_id = {row["id"]: row for row in rows}
    # journal order (the order scans were recorded), every record of the period
    assert [row["id"] for row in rows] == [ids[name] for name, *_ in SCANS]

    d = by_id[ids["delivered"]]
    assert d == {"id": ids["delivered"], "captured_at": "2026-11-22T06:00:00.000000+00:00",
                 "local_time": "2026-11-22T08:00:00+02:00", "sent_date": "2026-11-22", "sent_time": "08:00:00",
                 "delivered_at": DONE, "state": "delivered", "dismissed_at": "", "message": "", "reader": "gate",
                 "source": "reader", "tag": "0004000003", "raw": "0F003D0903", "time_note": ""}
    assert by_id[ids["duplicate"]]["state"] == "duplicate"
    assert by_id[ids["duplicate"]]["message"] == "prezență duplicată"
    assert by_id[ids["rejected"]]["message"] == f"{REJECTED_MSG}: 0004000004 (3D0904), rfidTag 4000004"
    # sent with its stamp as captured (no time source confirmed it): HR can see which
    assert by_id[ids["duplicate"]]["time_note"] == "unsynced_sent"
    assert by_id[ids["delivered"]]["time_note"] == ""
    f = by_id[ids["failed"]]
    assert (f["state"], f["dismissed_at"]) == ("failed", "2026-11-22T10:00:00.000000+00:00")
    p = by_id[ids["pinned"]]
    assert (p["state"], p["sent_date"], p["sent_time"], p["delivered_at"]) == ("pending", "2026-11-22", "10:00:00", "")
    assert by_id[ids["midnight"]]["sent_date"] == "" and by_id[ids["midnight"]]["state"] == "pending"
    c = by_id[ids["corrected"]]  # the true time, not the wall clock of a boot that had none
    assert (c["captured_at"], c["local_time"]) == (CORRECTED, "2026-11-22T10:30:00+02:00")
    assert by_id[ids["before"]]["local_time"] == "2026-11-21T23:59:59+02:00"


def test_json_lines_hold_the_same_rows(site):
    cfg, _, _ = site
    args = ("--from", "2026-11-20", "--to", "2026-11-30")
    _, rows = csv_rows(export(cfg, *args).stdout)
    lines = export(cfg, *args, "--format", "json").stdout.splitlines()
    objs = [json.loads(line) for line in lines]
    assert len(objs) == len(rows) == len(SCANS)
    for obj, row in zip(objs, rows):
        assert list(obj) == COLUMNS
        assert {k: "" if v is None else v for k, v in obj.items()} == row
    assert objs[0]["sent_date"] is None and objs[0]["message"] is None


@pytest.mark.parametrize("begin, end, names", [
    # a date is the door's local midnight; a date as --to takes in that whole day
    ("2026-11-22", "2026-11-22", ["midnight", "delivered", "duplicate", "rejected", "failed", "pinned", "corrected",
                                  "last"]),
    # --from inclusive, a date-time --to exclusive, naive times in Europe/Bucharest
    ("2026-11-22T08:00", "2026-11-22T09:00", ["delivered", "duplicate"]),
    ("2026-11-22T08:00:00.000001", "2026-11-22T09:00:00.000001", ["duplicate", "rejected"]),
    # an offset says its own zone
    ("2026-11-22T06:00:00Z", "2026-11-22T07:00:00+00:00", ["delivered", "duplicate"]),
    ("2026-11-21T23:59:59.999999", "2026-11-22T00:00:00.000001", ["before", "midnight"]),
    ("2026-11-23", "2026-11-23", ["next"]),
    ("2026-12-01", "2026-12-02", []),
])
def test_period_boundaries_in_the_local_time_zone(site, begin, end, names):
    cfg, _, ids = site
    _, rows = csv_rows(export(cfg, "--from", begin, "--to", end).stdout)
    assert [row["id"] for row in rows] == [ids[n] for n in names]


def test_state_filter_is_repeatable(site):
    cfg, _, ids = site
    args = ("--from", "2026-11-20", "--to", "2026-11-30")
    _, rows = csv_rows(export(cfg, *args, "--state", "rejected").stdout)
    assert [row["id"] for row in rows] == [ids["rejected"]]
    _, rows = csv_rows(export(cfg, *args, "--state", "failed", "--state", "delivered", "--state", "duplicate").stdout)
    assert [row["id"] for row in rows] == [ids["delivered"], ids["duplicate"], ids["failed"]]
    _, rows = csv_rows(export(cfg, *args, "--state", "pending").stdout)
    assert {row["state"] for row in rows} == {"pending"} and len(rows) == 6


def test_hash_tags_leave_no_card_number_and_join_within_one_export(site, tmp_path):
    cfg, _, ids = site
    args = ("--from", "2026-11-20", "--to", "2026-11-30", "--hash-tags")
    outs = {fmt: run_cli(cfg, "export", *args, "--format", fmt) for fmt in ("csv", "json")}
    for r in outs.values():
        assert r.returncode == 0, r.stderr
        blob = r.stdout.encode()
        for _, tag, raw, _ in SCANS:
            for secret in (tag, raw, raw[2:], tag.lstrip("0")):
                assert secret.encode() not in blob and secret.lower().encode() not in blob, secret
    names, rows = csv_rows(outs["csv"].stdout)
    assert names == HASHED
    by_name = {name: rows[i] for i, (name, *_) in enumerate(SCANS)}
    hashes = [row["tag_hmac"] for row in rows]
    assert all(len(h) == 64 and int(h, 16) >= 0 for h in hashes)
    assert by_name["delivered"]["tag_hmac"] == by_name["duplicate"]["tag_hmac"]  # the same card
    assert len(set(hashes)) == len(SCANS) - 1  # every other card differs
    # iFlow echoes the card as a number, its leading zeros gone: masked too
    assert by_name["rejected"]["message"] == f"{REJECTED_MSG}: [card] ([number]), rfidTag [card]"
    assert by_name["failed"]["message"] == "HTTP 500: card [card] too long"
    assert by_name["delivered"]["id"] == ids["delivered"]

    # a random key each export: nobody can test card numbers against the values later
    _, again = csv_rows(run_cli(cfg, "export", *args).stdout)
    assert not set(hashes) & {row["tag_hmac"] for row in again}
    # a key file gives the same values across exports
    key = tmp_path / "key"
    key.write_bytes(os.urandom(32))
    keyed = [csv_rows(export(cfg, *args, "--hash-key-file", str(key)).stdout)[1] for _ in range(2)]
    assert [r["tag_hmac"] for r in keyed[0]] == [r["tag_hmac"] for r in keyed[1]]
    assert keyed[0][2]["tag_hmac"] == keyed[0][3]["tag_hmac"]


def test_output_file_is_mode_0600_and_replaced_whole(site, tmp_path):
    cfg, _, _ = site
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    target = out_dir / "export.csv"
    target.write_text("old\n")
    os.chmod(target, 0o644)
    args = ("--from", "2026-11-20", "--to", "2026-11-30")
    r = run_cli(cfg, "export", *args, "--output", str(target), env={})
    assert r.returncode == 0, r.stderr
    assert r.stdout == "" and f"{len(SCANS)} record(s) written to {target}" in r.stderr
    assert target.stat().st_mode & 0o777 == 0o600
    with open(target, encoding="utf-8", newline="") as f:
        written = f.read()
    assert written.startswith(",".join(COLUMNS) + "\r\n")  # RFC 4180 line ends
    assert written.replace("\r\n", "\n") == export(cfg, *args).stdout
    assert sorted(p.name for p in out_dir.iterdir()) == ["export.csv"]  # no temp file left
    # an output that cannot be written: one line, exit 2, the old file untouched
    r = run_cli(cfg, "export", *args, "--output", str(tmp_path / "nosuch" / "x.csv"))
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1 and "--output" in r.stderr


def test_works_while_the_daemon_holds_the_journal(tmp_path):
    state = tmp_path / "state"
    ids = build(state)
    pty = Pty()
    cfg = write_config(tmp_path / "c.toml", state_dir=state, port=pty.port)  # no [iflow]: nothing is sent
    d = Daemon(cfg)
    try:
        assert wait_ready(cfg)["daemon"] is True
        assert (state / "agent.lock").exists()
        _, rows = csv_rows(export(cfg, "--from", "2026-11-20", "--to", "2026-11-30").stdout)
        assert [row["id"] for row in rows] == [ids[name] for name, *_ in SCANS]
        pty.send(b"0004000010\r\n")  # a scan while it runs: the next export has it
        assert d.wait_for(lambda lines: any(ln.startswith("stored ") for ln in lines))
        _, rows = csv_rows(export(cfg, "--from", "2026-11-20", "--to", "2099-01-01").stdout)
        assert len(rows) == len(SCANS) + 1 and rows[-1]["tag"] == "0004000010"
        assert wait_ready(cfg)["daemon"] is True
    finally:
        assert d.terminate() == 0
        pty.close()


def test_a_closed_pipe_ends_quietly(tmp_path):
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    j = Journal(str(state / "journal"))
    for i in range(600):  # far more than a pipe's buffer holds
        j.append({"tag": f"{i:010d}", "raw": f"{i:010X}", "reader": "door", "source": "reader",
                  "captured_at": f"2026-11-22T06:{i // 60 % 60:02d}:{i % 60:02d}.000000+00:00", "boot_id": "b",
                  "mono_ns": i, "synced": True})
    j.close()
    cfg = write_config(tmp_path / "c.toml", state_dir=state)
    proc = subprocess.Popen(AGENT + ["--config", str(cfg), "export", "--from", "2026-11-22", "--to", "2026-11-22",
                                     "--format", "json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    assert json.loads(proc.stdout.readline())["tag"] == "0000000000"
    proc.stdout.close()  # `agent export | head -1`
    err = proc.stderr.read()
    assert proc.wait(60) in (0, 1)
    assert err == b""


@pytest.mark.parametrize("args, words", [
    (["--from", "2026-11-23", "--to", "2026-11-22"], "is not before --to"),
    (["--from", "2026-11-22T10:00", "--to", "2026-11-22T10:00"], "is not before --to"),
    (["--from", "yesterday", "--to", "2026-11-22"], "not an ISO 8601 date"),
    (["--from", "2026-11-22", "--to", "2026-13-01"], "not an ISO 8601 date"),
    (["--from", "2026-03-29T03:30", "--to", "2026-03-30"], "does not exist in Europe/Bucharest"),
    (["--from", "2026-11-22", "--to", "2026-11-23", "--hash-key-file", "/etc/hostname"], "needs --hash-tags"),
])
def test_bad_input_is_one_line_and_exit_2(site, args, words):
    cfg, _, _ = site
    r = run_cli(cfg, "export", *args)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and words in r.stderr, r.stderr


@pytest.mark.parametrize("args, words", [
    (["--from", "2026-11-22", "--to", "2026-11-23", "--state", "sent"], "invalid choice: 'sent'"),
    (["--from", "2026-11-22", "--to", "2026-11-23", "--format", "xml"], "invalid choice: 'xml'"),
    (["--from", "2026-11-22"], "--to"),
])
def test_bad_usage_exits_2(site, args, words):
    cfg, _, _ = site
    r = run_cli(cfg, "export", *args)
    assert r.returncode == 2 and r.stdout == "" and words in r.stderr and "Traceback" not in r.stderr


def test_short_key_file_is_refused(site, tmp_path):
    cfg, _, _ = site
    key = tmp_path / "key"
    key.write_bytes(b"short\n")
    r = run_cli(cfg, "export", "--from", "2026-11-22", "--to", "2026-11-23", "--hash-tags", "--hash-key-file", str(key))
    assert r.returncode == 2 and "at least 16 bytes" in r.stderr and r.stdout == ""


def test_an_unreadable_segment_is_reported_and_left_where_it_is(site):
    cfg, state, ids = site
    bad = state / "journal" / "seg-00000002.json"
    bad.write_bytes(b'{"scans": {"1": {"id": "x", "tag": "0004000003"')  # torn, by hand
    r = run_cli(cfg, "export", "--from", "2026-11-20", "--to", "2026-11-30")
    assert r.returncode == 1
    assert "export incomplete: 1 unreadable journal segment(s)" in r.stderr and "seg-00000002.json" in r.stderr
    _, rows = csv_rows(r.stdout)
    lost = {ids[name] for name, *_ in SCANS[3:6]}
    assert [row["id"] for row in rows] == [ids[name] for name, *_ in SCANS if ids[name] not in lost]
    assert bad.exists() and not list(bad.parent.glob("*.corrupt-*"))  # quarantine is the daemon's job


def test_missing_state_dir_is_not_created(tmp_path):
    state = tmp_path / "nothing-here"
    cfg = write_config(tmp_path / "c.toml", state_dir=state)
    r = run_cli(cfg, "export", "--from", "2026-11-22", "--to", "2026-11-23")
    assert r.returncode == 1 and "no journal yet" in r.stderr
    assert not state.exists()


def test_a_date_is_its_day_even_where_the_clocks_skip_midnight():
    from zoneinfo import ZoneInfo

    from agent.commands.export import parse_moment

    santiago = ZoneInfo("America/Santiago")  # DST starts at 00:00: 2026-09-06 begins at 01:00
    assert parse_moment("2026-09-06", santiago, "--from").isoformat() == "2026-09-06T04:00:00+00:00"
    assert parse_moment("2026-09-05", santiago, "--to", end=True).isoformat() == "2026-09-06T04:00:00+00:00"
    bucharest = ZoneInfo("Europe/Bucharest")  # the basic form is a date too: the whole day
    assert parse_moment("20261025", bucharest, "--to", end=True) == \
        parse_moment("2026-10-25", bucharest, "--to", end=True)
