"""The journal: durable inserts, state changes, recovery, and power cuts at every crash point."""

from __future__ import annotations

import errno
import json
import os
import random

import pytest

from agent.journal.storage import AtomicJSONStorage
from agent.journal.store import Journal, JournalError
from agent.records import Location, Record, State
from tests.support.crashfs import Crash, CrashFS

D = "/j"


def scan(i: int) -> dict:
    return {"tag": f"T{i:05d}", "raw": f"T{i:05d}", "reader": "door", "source": "reader",
            "captured_at": f"2026-01-01T00:{i // 60 % 60:02d}:{i % 60:02d}.000000+00:00",
            "boot_id": "b", "mono_ns": i, "synced": True}


# ------------------------------------------------------------ basic behaviour


def test_append_persists_across_reopen_in_order(tmp_path):
    j = Journal(str(tmp_path), segment_size=16)
    ids = [j.append(scan(i)).id for i in range(40)]
    j.close()
    j2 = Journal(str(tmp_path), segment_size=16)
    assert [r.id for r in j2.records()] == ids
    assert j2.summary()["pending"] == 40
    assert j2.summary()["segments"] == 3
    assert sorted(os.listdir(tmp_path)) == ["seg-00000001.json", "seg-00000002.json", "seg-00000003.json"]


def test_insert_touches_only_the_newest_segment(tmp_path):
    j = Journal(str(tmp_path), segment_size=16)
    for i in range(40):
        j.append(scan(i))
    before = {n: os.stat(tmp_path / n).st_mtime_ns for n in os.listdir(tmp_path)}
    j.append(scan(99))
    after = {n: os.stat(tmp_path / n).st_mtime_ns for n in os.listdir(tmp_path)}
    changed = [n for n in after if before[n] != after[n]]
    assert changed == ["seg-00000003.json"]


def test_states_and_summary(tmp_path):
    j = Journal(str(tmp_path), segment_size=16)
    recs = [j.append(scan(i)) for i in range(20)]
    j.update([(recs[0], {"state": "delivered"}), (recs[1], {"state": "duplicate"}),
              (recs[2], {"state": "rejected", "message": "unknown card"})])
    s = j.summary()
    assert (s["pending"], s["delivered"], s["duplicate"], s["rejected"]) == (17, 2, 1, 1)
    assert s["oldest_pending"] == recs[3].captured_at
    assert [r.id for r in j.pending(2)] == [recs[3].id, recs[4].id]
    j.close()
    s2 = Journal(str(tmp_path), segment_size=16).summary()
    assert (s2["pending"], s2["delivered"], s2["rejected"]) == (17, 2, 1)


def test_stray_temp_files_are_removed_and_corrupt_segments_quarantined(tmp_path, caplog):
    j = Journal(str(tmp_path), segment_size=16)
    for i in range(20):
        j.append(scan(i))
    j.close()
    (tmp_path / "seg-00000002.json.tmp").write_bytes(b"{half")
    (tmp_path / "seg-00000001.json").write_bytes(b'{"scans": {"1": {"tag": "x"')  # torn
    j2 = Journal(str(tmp_path), segment_size=16)
    assert not (tmp_path / "seg-00000002.json.tmp").exists()
    assert j2.summary()["pending"] == 4  # segment 2 survives
    assert len(j2.quarantined) == 1 and ".corrupt-" in j2.quarantined[0]
    assert os.path.exists(j2.quarantined[0])  # moved aside, never silently dropped
    assert "JOURNAL SEGMENT UNREADABLE" in caplog.text
    j2.append(scan(100))  # still usable
    assert j2.summary()["pending"] == 5


@pytest.mark.parametrize("content", [b"", b"[]", b"null", b'{"scans": 3}', b"\xff\xfe", b"[" * 100000])
def test_any_unparsable_segment_is_quarantined_not_fatal(tmp_path, content):
    (tmp_path / "seg-00000001.json").write_bytes(content)
    j = Journal(str(tmp_path))
    assert j.summary()["total"] == 0 and len(j.quarantined) == 1


def test_retention_removes_only_old_fully_final_segments(tmp_path):
    j = Journal(str(tmp_path), segment_size=16, retention_days=1)
    recs = [j.append(scan(i)) for i in range(40)]
    j.update([(r, {"state": "delivered", "done_at": "2026-01-01T00:00:00+00:00"}) for r in recs[:16]])
    j.update([(r, {"state": "delivered", "done_at": "2026-01-01T00:00:00+00:00"}) for r in recs[16:31]])
    removed = j.compact(now=1_900_000_000)  # 2030: long after
    assert removed == 1  # segment 1 only: segment 2 has a pending record, 3 is active
    assert j.summary()["total"] == 24
    assert j.compact(now=1_767_225_600) == 0  # 2026-01-01: nothing old enough


@pytest.mark.parametrize("step,visible", [(1, False), (2, False), (3, False), (4, True)])
def test_disk_full_is_an_error_not_an_acknowledgement_and_recovers(step, visible):
    """The insert's write steps: 1 write temp, 2 fsync temp, 3 rename, 4 fsync dir.
    A failure at any of them is an error (never an acknowledgement). Before the
    rename the scan is absent; after it (step 4) it is visible but its
    durability unknown, so it is still not acknowledged."""
    fs = CrashFS()
    j = Journal(D, segment_size=8, fs=fs)
    for i in range(5):
        j.append(scan(i))
    fs.fail_at = {fs.ops + step: errno.ENOSPC}
    with pytest.raises(JournalError, match="No space"):
        j.append(scan(5))
    fs.fail_at = {}
    j.append(scan(6))  # space is back: the next scan is stored, no restart
    expected = ["T00000", "T00001", "T00002", "T00003", "T00004"] + (["T00005"] if visible else []) + ["T00006"]
    assert [r.tag for r in j.records()] == expected
    assert [r.tag for r in Journal(D, segment_size=8, fs=fs).records()] == expected
    assert not any(n.endswith(".tmp") for n in fs.listdir(D))


def test_fsync_eio_is_not_acknowledged():
    fs = CrashFS()
    j = Journal(D, segment_size=8, fs=fs)
    j.append(scan(0))
    fs.fail_at = {fs.ops + 2: errno.EIO}  # the fsync of the temp file
    with pytest.raises(JournalError):
        j.append(scan(1))
    assert [r.tag for r in Journal(D, segment_size=8, fs=fs).records()] == ["T00000"]


def test_storage_is_plain_tinydb_json(tmp_path):
    j = Journal(str(tmp_path), segment_size=16)
    rec = j.append(scan(1))
    doc = json.loads((tmp_path / "seg-00000001.json").read_bytes())
    assert doc["scans"]["1"]["id"] == rec.id
    assert AtomicJSONStorage(str(tmp_path / "seg-00000001.json")).read() == doc


# ------------------------------------------------------------------ power cut


def workload(j: Journal, acked: dict) -> None:
    """Inserts across segment boundaries, state changes, retention: recording
    in ``acked`` exactly what returned (what the door or uploader acknowledged)."""
    recs = []
    for i in range(6):
        r = j.append(scan(i))
        acked[r.id] = "pending"
        recs.append(r)
    j.update([(r, {"state": "delivered", "done_at": "2026-01-01T00:00:00+00:00"}) for r in recs[:4]])
    for r in recs[:4]:
        acked[r.id] = "delivered"
    for i in range(6, 9):
        r = j.append(scan(i))
        acked[r.id] = "pending"
        recs.append(r)
    j.pin([(recs[5].id, "2026-01-01", "08:00:05"), (recs[7].id, "2026-01-01", "08:00:07")])
    acked[("pin", recs[5].id)] = ("2026-01-01", "08:00:05")
    acked[("pin", recs[7].id)] = ("2026-01-01", "08:00:07")
    j.update([(recs[4], {"state": "rejected", "message": "no"}), (recs[6], {"state": "duplicate"})])
    acked[recs[4].id], acked[recs[6].id] = "rejected", "duplicate"
    j.pin([(recs[8].id, "2026-01-01", "08:00:08")])
    acked[("pin", recs[8].id)] = ("2026-01-01", "08:00:08")
    j.compact(now=1_900_000_000)  # deletes segment 1 (all delivered, old)
    for r in recs[:4]:
        acked.pop(r.id)  # gone by design: history past retention
    r = j.append(scan(9))
    acked[r.id] = "pending"


WORKLOAD_TAGS = {scan(i)["tag"] for i in range(10)}


def check_recovered(fs: CrashFS, acked: dict) -> None:
    j = Journal(D, segment_size=4, retention_days=1, fs=fs)
    got, when = {}, {}
    for rec in j.records():
        assert rec.id not in got, "a scan is in the journal twice"
        got[rec.id] = rec.state
        when[rec.id] = (rec.sent_date, rec.sent_time)
    pins = {key[1]: pin for key, pin in acked.items() if isinstance(key, tuple)}
    for rid, pin in pins.items():
        assert when[rid] == pin, f"acknowledged pin of {rid} lost"
    for rid, state in acked.items():
        if isinstance(rid, tuple):
            continue
        assert rid in got, f"acknowledged scan {rid} lost"
        # An acknowledged state is there, or a later change that was in flight.
        assert got[rid] == state or got[rid] in {"delivered", "duplicate", "rejected"}
    assert not j.quarantined
    # nothing invented: every record is a scan the workload tried to write
    assert {r.tag for r in j.records()} <= WORKLOAD_TAGS
    j.append(scan(99))  # the journal is usable after recovery
    assert Journal(D, segment_size=4, fs=fs).summary()["total"] == len(got) + 1


def test_power_cut_at_every_crash_point():
    ref = CrashFS()
    workload(Journal(D, segment_size=4, retention_days=1, fs=ref), {})
    total_ops = ref.ops
    assert total_ops > 40
    explored = 0
    for k in range(1, total_ops + 1):
        for mode in ("durable", "torn"):
            fs = CrashFS(crash_at=k)
            acked: dict = {}
            j = Journal(D, segment_size=4, retention_days=1, fs=fs)
            with pytest.raises(Crash):
                workload(j, acked)
            check_recovered(fs.after_crash(mode, random.Random(k)), acked)
            explored += 1
    assert explored == 2 * total_ops
    print(f"power-cut crash points explored: {explored} ({total_ops} operations x 2 modes)")


def test_random_power_cuts_during_long_run():
    """500 random crash points in a longer mixed run."""
    rng = random.Random(1234)
    for trial in range(500):
        fs = CrashFS(crash_at=rng.randint(1, 400))
        acked: dict = {}
        j = Journal(D, segment_size=4, retention_days=1, fs=fs)
        i = 0
        try:
            while True:
                r = j.append(scan(i))
                acked[r.id] = "pending"
                i += 1
                if i % 5 == 0:
                    pend = j.pending(3)
                    j.update([(p, {"state": "delivered", "done_at": "2026-01-01T00:00:00+00:00"}) for p in pend])
                    for p in pend:
                        acked[p.id] = "delivered"
        except Crash:
            pass
        after = fs.after_crash("torn" if trial % 2 else "durable", rng)
        j2 = Journal(D, segment_size=4, fs=after)
        got = {r.id: r.state for r in j2.records()}
        assert not j2.quarantined
        for rid, state in acked.items():
            assert rid in got, f"trial {trial}: acknowledged scan lost"
            if state == "delivered":
                assert got[rid] == "delivered"


# ------------------------------------------------------------------ pins


def test_pins_are_read_as_send_times_until_the_record_is_final(tmp_path, caplog):
    j = Journal(str(tmp_path), segment_size=4)
    recs = [j.append(scan(i)) for i in range(6)]
    j.pin([(recs[1].id, "2026-03-29", "02:59:59"), (recs[5].id, "2026-03-29", "04:00:00")])
    again = Journal(str(tmp_path), segment_size=4)  # as a restarted process sees it
    when = {r.id: (r.sent_date, r.sent_time) for r in again.records()}
    assert when[recs[1].id] == ("2026-03-29", "02:59:59")
    assert when[recs[5].id] == ("2026-03-29", "04:00:00")
    assert when[recs[0].id] == (None, None)
    assert again.pinned() == 2
    # final: the segment holds the time; the pin is history
    again.update([(r, {"state": "delivered", "sent_date": "2026-03-29", "sent_time": "02:59:59"})
                  for r in again.records() if r.id == recs[1].id])
    assert again.pinned() == 1
    again.unpin([recs[5].id])  # never sent after all
    assert again.pinned() == 0
    # what is on disk still holds both; opening drops the one of a final record
    assert set(json.loads((tmp_path / "pins.json").read_text())["pins"]) == {recs[1].id, recs[5].id}
    third = Journal(str(tmp_path), segment_size=4)
    assert third.pinned() == 1
    third.pin([])
    assert set(json.loads((tmp_path / "pins.json").read_text())["pins"]) == {recs[5].id}


def test_unreadable_pins_file_is_moved_aside_and_the_journal_opens(tmp_path, caplog):
    j = Journal(str(tmp_path), segment_size=4)
    rec = j.append(scan(1))
    (tmp_path / "pins.json").write_text('{"version": 1, "pins": {"x": [1, 2]}}')
    again = Journal(str(tmp_path), segment_size=4)
    assert again.pinned() == 0 and [r.id for r in again.records()] == [rec.id]
    assert len(again.quarantined) == 1 and ".corrupt-" in again.quarantined[0]
    assert "JOURNAL PINS UNREADABLE" in caplog.text
    assert not (tmp_path / "pins.json").exists()


@pytest.mark.parametrize("step", [1, 2, 3, 4])  # write temp, fsync, rename, fsync dir
def test_a_failed_pin_is_not_acknowledged(step):
    fs = CrashFS()
    j = Journal(D, segment_size=4, fs=fs)
    rec = j.append(scan(0))
    fs.fail_at = {fs.ops + step: errno.ENOSPC}
    with pytest.raises(JournalError):
        j.pin([(rec.id, "2026-01-01", "08:00:00")])
    assert j.pinned() == 0
    assert next(j.records()).sent_date is None


# ------------------------------------------------------------ typed records


def test_records_are_typed_and_the_file_holds_what_it_always_held(tmp_path):
    j = Journal(str(tmp_path), segment_size=4)
    rec = j.append(scan(1))
    assert isinstance(rec, Record) and rec.state is State.PENDING and rec.loc == Location(1, 1)
    assert (rec.tag, rec.mono_ns, rec.synced, rec.attempts, rec.extra) == ("T00001", 1, True, 0, {})
    stored = json.loads((tmp_path / "seg-00000001.json").read_bytes())["scans"]["1"]
    # the on-disk shape: the journal's fields first, then the scan's, state as its plain string
    assert list(stored) == ["id", "state", "attempts", "error", "message", "done_at", *scan(1)]
    assert stored["state"] == "pending" and rec.to_doc() == stored and list(rec.to_doc()) == list(stored)
    j.update([(rec, {"state": State.DELIVERED, "done_at": "2026-01-01T00:00:00+00:00"})])
    stored = json.loads((tmp_path / "seg-00000001.json").read_bytes())["scans"]["1"]
    assert type(stored["state"]) is str and stored["state"] == "delivered"
    assert next(j.records()).state is State.DELIVERED


def test_fields_of_a_newer_version_survive_every_change(tmp_path):
    """An existing journal opens unchanged; a field this version does not know
    is read into ``extra`` and is still on disk after the record changed."""
    doc = dict(scan(1), id="a" * 32, state="pending", attempts=0, error=None, message=None, done_at=None,
               future_field={"nested": [1, 2]}, sent_via="lte")
    (tmp_path / "seg-00000001.json").write_text(json.dumps({"scans": {"1": doc}}))
    j = Journal(str(tmp_path))
    rec = next(j.records())
    assert rec.extra == {"future_field": {"nested": [1, 2]}, "sent_via": "lte"}
    assert rec.get("sent_via") == "lte" and rec.get("sent_date", "none") == "none"
    assert rec.to_doc() == doc
    j.update([(rec, {"state": "delivered", "sent_date": "2026-01-01", "sent_time": "02:00:00"})])
    j.close()
    stored = json.loads((tmp_path / "seg-00000001.json").read_bytes())["scans"]["1"]
    assert stored == dict(doc, state="delivered", sent_date="2026-01-01", sent_time="02:00:00")


@pytest.mark.parametrize("state", ["queued_elsewhere", "", None, 7, ["x"], "missing"])
def test_a_state_this_version_does_not_know_is_kept_held_and_never_removed(tmp_path, caplog, state):
    """Never lost (kept on disk, its segment survives retention), never sent
    (not pending), never mistaken for rejected, and the journal opens."""
    doc = dict(scan(1), id="u" * 32, attempts=3, error=None, message=None, done_at="2026-01-01T00:00:00+00:00")
    if state != "missing":
        doc["state"] = state
    (tmp_path / "seg-00000001.json").write_text(json.dumps({"scans": {"1": doc}}))
    j = Journal(str(tmp_path), segment_size=4, retention_days=1)
    assert "JOURNAL RECORDS IN A STATE THIS VERSION DOES NOT KNOW" in caplog.text
    rec = next(j.records())
    assert not rec.state.known and not rec.state.final and rec.state is not State.PENDING
    assert rec.state == (state if isinstance(state, str) and state != "missing" else "")
    assert rec.to_doc() == doc
    assert j.pending() == [] and list(j.records((State.REJECTED,))) == []
    s = j.summary()
    assert (s["total"], s["pending"], s["delivered"], s["rejected"]) == (1, 0, 0, 0)
    for i in range(2, 7):  # fills segment 1 (no longer the active one) with records made final
        j.append(scan(i))
    j.update([(r, {"state": "delivered", "done_at": "2026-01-01T00:00:00+00:00"}) for r in j.pending()])
    assert j.compact(now=1_900_000_000) == 0  # old and otherwise final: kept for the unknown one
    j.close()
    again = Journal(str(tmp_path), segment_size=4)
    assert json.loads((tmp_path / "seg-00000001.json").read_bytes())["scans"]["1"] == doc
    assert [r.id for r in again.records()][0] == "u" * 32


def test_record_get_reads_like_the_json_object():
    doc = {"id": "x", "state": "rejected", "tag": None, "retried": 2}
    rec = Record.from_doc(doc)
    assert rec.get("tag", "d") is None  # present, null
    assert rec.get("raw", "d") == "d" and rec.raw is None  # absent
    assert rec.get("retried", 0) == 2 and rec.get("released") is None
    assert rec.to_doc() == doc and rec == Record.from_doc(dict(doc)) and rec != Record.from_doc(dict(doc, tag="1"))
    assert State.of("rejected") is State.REJECTED and State.REJECTED.final and not State.PENDING.final
    assert [s.value for s in State] == ["pending", "delivered", "duplicate", "rejected", "failed"]
    assert State.FAILED.final


def test_by_segment_yields_the_records_one_segment_at_a_time(tmp_path):
    j = Journal(str(tmp_path), segment_size=16)
    recs = [j.append(scan(i)) for i in range(40)]
    assert [[r.loc for r in seg] for seg in j.by_segment()] == [
        [Location(n, d) for d in range(1, size + 1)] for n, size in ((1, 16), (2, 16), (3, 8))]
    j.update([(r, {"state": "delivered"}) for r in recs[:17]])
    assert [len(seg) for seg in j.by_segment((State.PENDING,))] == [15, 8]
    assert [r.id for seg in j.by_segment((State.PENDING,)) for r in seg] == [r.id for r in j.pending()]


def test_appended_ids_are_uuid4_hex(tmp_path):
    import uuid

    j = Journal(str(tmp_path / "j"))
    try:
        ids = [j.append({"tag": str(i), "raw": str(i), "reader": "r", "source": "reader",
                         "captured_at": "2026-11-01T06:00:00+00:00", "boot_id": "b", "mono_ns": i,
                         "synced": True}).id for i in range(50)]
    finally:
        j.close()
    assert len(set(ids)) == 50
    for h in ids:
        u = uuid.UUID(hex=h)
        assert (u.version, u.variant, u.hex) == (4, uuid.RFC_4122, h)
