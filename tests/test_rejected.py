"""`agent rejected`: rejected and failed records listed, retried, dismissed;
through the running daemon and without one (the same operation either way)."""

from __future__ import annotations

import json

import pytest

from agent.journal.store import Journal
from agent.runtime.requests import RejectedRequest, from_wire
from tests.support.harness import Daemon, Pty, run_cli, wait_ready, write_config

FAILED_MSG = "iFlow refused the request holding only this record 3 times: HTTP 500: SQLSTATE[22001] too long"
REJECTED_MSG = "error_authenticate: Niciun angajat nu este asociat acestei cartele de tip RFID"


def prefill(state) -> dict[str, str]:
    """Two rejected, two failed, one delivered record; their ids by tag."""
    state.mkdir(mode=0o700, exist_ok=True)
    j = Journal(str(state / "journal"))
    recs = [j.append({"tag": tag, "raw": tag, "reader": "door", "source": "reader",
                      "captured_at": f"2026-11-22T06:00:0{i}.000000+00:00", "boot_id": "b", "mono_ns": i,
                      "synced": True, "sent_date": "2026-11-22", "sent_time": f"08:00:0{i}"})
            for i, tag in enumerate(["R1", "R2", "F1", "F2", "D1"])]
    done = "2026-11-22T07:00:00.000000+00:00"
    j.update([(recs[0], {"state": "rejected", "message": REJECTED_MSG + ": R1", "done_at": done}),
              (recs[1], {"state": "rejected", "message": REJECTED_MSG + ": R2", "done_at": done}),
              (recs[2], {"state": "failed", "message": FAILED_MSG, "error": "iFlow refused it alone: HTTP 500",
                         "alone_failures": 3, "unanswered": 2, "done_at": done}),
              (recs[3], {"state": "failed", "message": FAILED_MSG, "alone_failures": 3, "done_at": done}),
              (recs[4], {"state": "delivered", "done_at": done})])
    j.close()
    return {r.tag: r.id for r in recs}


def stored(state) -> dict[str, dict]:
    j = Journal(str(state / "journal"))
    try:
        return {r.tag: r.to_doc() for r in j.records()}
    finally:
        j.close()


def listing(cfg, *extra: str) -> dict:
    r = run_cli(cfg, "rejected", "--json", *extra)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.mark.parametrize("with_daemon", [False, True], ids=["alone", "daemon"])
def test_rejected_lists_dismisses_and_retries_failed_records(tmp_path, with_daemon):
    state = tmp_path / "state"
    ids = prefill(state)
    pty = Pty()
    cfg = write_config(tmp_path / "c.toml", state_dir=state, port=pty.port)  # no [iflow]: nothing is sent
    d = Daemon(cfg) if with_daemon else None
    try:
        if d is not None:
            assert wait_ready(cfg)["daemon"] is True

        got = listing(cfg)
        assert sorted(r["tag"] for r in got["rejected"]) == ["R1", "R2"]
        assert got["by_reason"] == {REJECTED_MSG: 2}
        assert sorted(r["tag"] for r in got["failed"]) == ["F1", "F2"]
        assert got["failed_by_reason"] == {FAILED_MSG: 2} and got["dismissed"] == 0
        assert {r["state"] for r in got["failed"]} == {"failed"}
        text = run_cli(cfg, "rejected")
        assert text.returncode == 0
        assert "failed alone (iFlow refused the request as a whole" in text.stdout
        assert "HTTP 500: SQLSTATE[22001] too long" in text.stdout and "--dismiss" in text.stdout

        st = json.loads(run_cli(cfg, "status", "--json").stdout)
        assert (st["rejected"], st["failed"], st["dismissed"], st["unresolved"]) == (2, 2, 0, 4)

        # Dismiss one failed record by its short id: no longer listed by default, recorded in the journal.
        r = run_cli(cfg, "rejected", "--dismiss", ids["F1"][:12])
        assert r.returncode == 0 and "dismissed 1 record(s)" in r.stdout, r.stdout + r.stderr
        got = listing(cfg)
        assert [r["tag"] for r in got["failed"]] == ["F2"] and got["dismissed"] == 1
        assert "1 dismissed record(s) not shown" in run_cli(cfg, "rejected").stdout
        shown = listing(cfg, "--dismissed")
        assert [(r["tag"], bool(r["dismissed_at"])) for r in shown["failed"]] == [("F1", True), ("F2", False)]
        assert json.loads(run_cli(cfg, "status", "--json").stdout)["unresolved"] == 3

        # An unknown id is a failure, and changes nothing.
        r = run_cli(cfg, "rejected", "--dismiss", "nosuchrecord")
        assert r.returncode == 1 and "nosuchrecord" in r.stdout
        assert run_cli(cfg, "rejected", "--retry", "--dismiss", "x").returncode == 2
        assert run_cli(cfg, "rejected", "--dismiss").returncode == 2

        # Retry all: the listed ones (not the dismissed F1) go back to pending, counters cleared.
        r = run_cli(cfg, "rejected", "--retry", ids["F2"], "--all")
        assert r.returncode == 0 and "returned 3 record(s)" in r.stdout, r.stdout + r.stderr
        # Retry the dismissed one by its id: pending again, no longer dismissed.
        r = run_cli(cfg, "rejected", "--retry", ids["F1"])
        assert r.returncode == 0 and "returned 1 record(s)" in r.stdout
        assert listing(cfg) == {"rejected": [], "by_reason": {}, "failed": [], "failed_by_reason": {},
                                "dismissed": 0}
        st = json.loads(run_cli(cfg, "status", "--json").stdout)
        assert (st["pending"], st["rejected"], st["failed"], st["unresolved"]) == (4, 0, 0, 0)
    finally:
        if d is not None:
            assert d.terminate() == 0, "".join(d.stderr)
        pty.close()
    docs = stored(state)
    f1, f2 = docs["F1"], docs["F2"]
    assert f1["state"] == f2["state"] == "pending"
    assert (f1["alone_failures"], f1["unanswered"], f1["dismissed_at"], f1["message"], f1["error"]) == \
           (0, None, None, None, None)
    assert f2["alone_failures"] == 0 and "unanswered" not in f2 and "dismissed_at" not in f2
    assert docs["R1"]["state"] == "pending" and docs["D1"]["state"] == "delivered"


@pytest.mark.parametrize("with_daemon", [False, True], ids=["alone", "daemon"])
def test_rejected_dismiss_all_is_written_durably(tmp_path, with_daemon):
    state = tmp_path / "state"
    prefill(state)
    pty = Pty()
    cfg = write_config(tmp_path / "c.toml", state_dir=state, port=pty.port)
    d = Daemon(cfg) if with_daemon else None
    try:
        if d is not None:
            wait_ready(cfg)
        r = run_cli(cfg, "rejected", "--dismiss", "--all", "--json")
        assert r.returncode == 0 and json.loads(r.stdout) == {"dismissed": 4, "already": 0, "unknown": []}
        assert "no rejected or failed records (4 dismissed" in run_cli(cfg, "rejected").stdout
        # --all (retry) takes only what is listed: nothing now.
        r = run_cli(cfg, "rejected", "--all")
        assert r.returncode == 0 and "returned 0 record(s)" in r.stdout
    finally:
        if d is not None:
            assert d.terminate() == 0, "".join(d.stderr)
        pty.close()
    docs = stored(state)
    assert all(docs[t]["dismissed_at"] for t in ("R1", "R2", "F1", "F2"))
    assert {docs[t]["state"] for t in ("R1", "R2")} == {"rejected"} and docs["F1"]["state"] == "failed"
    assert "dismissed_at" not in docs["D1"]


def test_an_older_clients_request_still_works():
    # What the previous version sends: no dismiss fields at all.
    assert from_wire({"cmd": "rejected", "retry": ["abc"], "all": False}) == RejectedRequest(("abc",), False)
    assert from_wire({"cmd": "rejected"}) == RejectedRequest()
    req = RejectedRequest(dismiss=("a",), dismiss_all=False, dismissed=True)
    assert from_wire(req.to_wire()) == req
    # Dismissing all never sets "all": an older daemon would retry instead.
    assert RejectedRequest(dismiss_all=True).to_wire()["all"] is False
    with pytest.raises(ValueError):
        from_wire({"cmd": "rejected", "dismiss": "abc"})

