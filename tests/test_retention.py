"""Retention deletes only history: a rejected or failed record waits, whatever
its age, until a person retries or dismisses it (issue 13, item 7)."""

from __future__ import annotations

import json
import os

import pytest

from agent.commands.doctor.base import PASS, WARN, Ctx
from agent.commands.doctor.storage import check_journal
from agent.config import load
from agent.journal.segments import SegmentInfo
from agent.journal.store import Journal
from agent.records import State
from tests.support.harness import write_config

OLD = "2020-01-01T00:00:00.000000+00:00"
LATER = 1_900_000_000  # 2030: long after OLD and every scan below


def scan(i: int) -> dict:
    return {"tag": f"T{i:05d}", "raw": f"T{i:05d}", "reader": "door", "source": "reader",
            "captured_at": f"2020-01-01T00:00:{i % 60:02d}.000000+00:00", "boot_id": "b", "mono_ns": i,
            "synced": True}


def journal_with(tmp_path, *states: str) -> tuple[Journal, list]:
    """Segment 1 (4 records) in ``states`` (the rest delivered), segment 2 active."""
    j = Journal(str(tmp_path), segment_size=4, retention_days=30)
    recs = [j.append(scan(i)) for i in range(5)]
    changes = []
    for i, rec in enumerate(recs[:4]):
        state = states[i] if i < len(states) else "delivered"
        fields = {"state": state, "done_at": OLD}
        if state in ("rejected", "failed"):
            fields["message"] = "HTTP 500: boom" if state == "failed" else "error_authenticate: unknown card"
        changes.append((rec, fields))
    j.update(changes)
    return j, recs


def segments(tmp_path) -> list[str]:
    return sorted(n for n in os.listdir(tmp_path) if n.startswith("seg-"))


@pytest.mark.parametrize("state", ["rejected", "failed"])
def test_an_old_segment_waiting_for_a_person_stays_until_dismissed(tmp_path, state):
    j, recs = journal_with(tmp_path, state, state, state, state)
    assert j.compact(now=LATER) == 0
    assert segments(tmp_path) == ["seg-00000001.json", "seg-00000002.json"]
    # Reopened, the summary is rebuilt from the file: still kept.
    j.close()
    j = Journal(str(tmp_path), segment_size=4, retention_days=30)
    assert j.compact(now=LATER) == 0
    s = j.summary()
    assert (s[state], s["unresolved"], s["unresolved_old"], s["dismissed"]) == (4, 4, 4, 0)
    assert s["oldest_unresolved"] == OLD
    # Three dismissed, one not: the segment still waits for that one.
    got = {r.id: r for r in j.records((State(state),))}
    j.update([(got[r.id], {"dismissed_at": "2030-01-01T00:00:00+00:00"}) for r in recs[:3]])
    assert j.compact(now=LATER) == 0
    assert (j.summary()["unresolved"], j.summary()["dismissed"]) == (1, 3)
    j.update([(got[recs[3].id], {"dismissed_at": "2030-01-01T00:00:00+00:00"})])
    assert j.compact(now=LATER) == 1
    assert segments(tmp_path) == ["seg-00000002.json"]
    assert j.summary()["total"] == 1


def test_a_segment_with_one_rejected_among_delivered_stays(tmp_path):
    j, _ = journal_with(tmp_path, "delivered", "rejected")
    assert j.compact(now=LATER) == 0 and len(segments(tmp_path)) == 2


def test_an_old_delivered_and_duplicate_segment_still_goes(tmp_path):
    j, _ = journal_with(tmp_path, "delivered", "duplicate")
    assert j.compact(now=LATER) == 1 and segments(tmp_path) == ["seg-00000002.json"]


def test_a_retried_record_that_is_then_delivered_lets_its_segment_go(tmp_path):
    j, _ = journal_with(tmp_path, "failed")
    assert j.compact(now=LATER) == 0
    rec = next(j.records((State.FAILED,)))
    j.update([(rec, {"state": "delivered", "done_at": OLD})])
    assert j.compact(now=LATER) == 1


def test_the_segment_summary_agrees_with_the_file(tmp_path):
    j, _ = journal_with(tmp_path, "rejected", "failed", "rejected")
    rec = next(j.records((State.REJECTED,)))
    j.update([(rec, {"dismissed_at": "2030-01-01T00:00:00+00:00"})])
    live = j._segments[1]  # what the journal keeps after its own changes
    fresh = SegmentInfo(1, live.path)
    fresh.absorb(json.loads((tmp_path / "seg-00000001.json").read_text())["scans"].values())
    assert fresh == live and (live.dismissed, len(live.waiting)) == (1, 2) and not live.removable()


def test_a_journal_of_an_earlier_version_opens_and_its_rejected_records_wait(tmp_path):
    # As the previous version wrote it: no dismissed_at anywhere.
    docs = {str(i + 1): dict(scan(i), id=f"{i:032x}", state="rejected", attempts=1, error=None,
                             message="error_authenticate: unknown card", done_at=OLD) for i in range(4)}
    (tmp_path / "seg-00000001.json").write_text(json.dumps({"scans": docs}))
    before = (tmp_path / "seg-00000001.json").read_bytes()
    j = Journal(str(tmp_path), segment_size=4, retention_days=30)
    j.append(scan(9))
    assert j.compact(now=LATER) == 0
    assert (tmp_path / "seg-00000001.json").read_bytes() == before  # opened, not rewritten
    s = j.summary()
    assert (s["rejected"], s["failed"], s["unresolved"], s["pending"]) == (4, 0, 4, 1)


# ------------------------------------------------------------------ doctor


def doctor_journal(tmp_path, retention_days: int = 30):
    state = tmp_path / "state"
    cfg = write_config(tmp_path / "c.toml", state_dir=state, extra={"journal": {"retention_days": retention_days}})
    return check_journal(Ctx(cfg=load(str(cfg))))


def test_doctor_warns_of_old_records_waiting_for_a_person(tmp_path):
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    j, _ = journal_with(state / "journal", "rejected", "failed")
    j.close()
    [res] = doctor_journal(tmp_path)
    assert res.status == WARN, res
    assert "2 rejected or failed record(s) older than retention_days (30 d)" in res.detail
    assert "since 2020-01-01" in res.detail and "1 rejected, 1 failed" in res.detail
    assert "agent rejected" in res.fix and "--retry" in res.fix and "--dismiss" in res.fix


def test_doctor_passes_once_they_are_dismissed_or_young(tmp_path):
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    j, _ = journal_with(state / "journal", "rejected")
    j.close()
    [res] = doctor_journal(tmp_path, retention_days=100_000)  # not older than retention
    assert res.status == PASS, res
    j = Journal(str(state / "journal"), segment_size=4)
    j.update([(r, {"dismissed_at": "2030-01-01T00:00:00+00:00"}) for r in j.records((State.REJECTED,))])
    j.close()
    [res] = doctor_journal(tmp_path)
    assert res.status == PASS and "1 rejected" in res.detail, res
