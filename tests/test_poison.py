"""Nothing blocks a site's delivery (issue 13): a record iFlow cannot take is
isolated and set aside while every other scan goes, an outage marks nothing,
an answer that names no result is an error with a back-off and a cap, and a
send time is pinned only when the send may have reached iFlow.

Against the real stand-in over HTTP on 127.0.0.1, real journals, the real Clock.
"""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime

import pytest

from agent.delivery.isolation import (
    FAIL_AFTER,
    LONE_IN_A_ROW,
    UNANSWERED_LIMIT,
    unanswered_fields,
)
from agent.journal.store import Journal
from agent.records import State
from standins.iflow import IflowStandin
from tests.support.harness import Daemon, run_cli, wait_ready, write_config
from tests.test_delivery import TOKEN, fill, make

POISON = "0004" + "9" * 36  # a tag from a noisy read: longer than iFlow's column


def poison(standin: IflowStandin, status: int, stores_before: bool = False) -> None:
    """Every request holding POISON is refused as a whole with ``status``
    (with ``stores_before``, after storing the records before it: no transaction)."""
    standin.poison_tags = {POISON}
    standin.poison_status = status
    standin.poison_stores_before = stores_before


def drain_until(d, journal, done, rounds: int = 12, pause: float = 0.05):
    """Drain as the uploader does (after each back-off) until ``done()``."""
    summaries = []
    for _ in range(rounds):
        time.sleep(d.in_backoff() + pause)
        summaries.append(d.drain())
        if done():
            break
    return summaries


@pytest.fixture
def standin():
    s = IflowStandin(token=TOKEN, known_cards=None).start()
    yield s
    s.stop()


def states(journal):
    return {r.tag: r for r in journal.records()}


@pytest.mark.parametrize("status,stores_before", [(500, False), (422, False), (500, True)])
def test_a_poison_record_among_200_is_set_aside_and_every_other_scan_delivered_in_order(
        tmp_path, standin, status, stores_before):
    fake, clock, journal, d = make(tmp_path, standin, isolate_after_s=0.2)
    tags = [f"{i:08d}" for i in range(200)]
    tags[57] = POISON
    fill(journal, clock, tags, fake=fake)
    poison(standin, status, stores_before)

    first = d.drain()
    others = [t for t in tags if t != POISON]
    # one pass: everything else delivered, oldest first, each once
    assert [g["rfidTag"] for g in standin.stored] == others
    assert first.delivered + first.duplicate == 199 and first.error is None and journal.summary()["pending"] == 1
    assert first.requests < 40  # a binary search, not one request per record
    rec = states(journal)[POISON]
    assert rec.state == State.PENDING and f"HTTP {status}" in rec.error
    assert "fails alone" in d.state()["last_error"]

    # the door goes on: each later scan delivered after it is proof iFlow works
    for i in range(40):
        if states(journal)[POISON].state == State.FAILED:
            break
        fill(journal, clock, [f"N{i:07d}"], fake=fake)
        time.sleep(d.in_backoff() + 0.1)
        d.drain()
    others += [f"N{n:07d}" for n in range(i)]
    rec = states(journal)[POISON]
    # the third lone failure at the earliest, and not before the spread: a glitch is not a verdict
    assert rec.state == State.FAILED and rec.extra["alone_failures"] >= FAIL_AFTER
    assert f"HTTP {status}" in rec.message
    assert journal.summary()["pending"] == 0 and journal.summary()["failed"] == 1
    assert rec.sent_date and rec.sent_time  # its time kept for a retry
    before = standin.requests
    assert d.drain().requests == 0 and standin.requests == before  # never sent again by itself
    assert [g["rfidTag"] for g in standin.stored] == others

    # retried once iFlow takes it (the cause fixed in iFlow): delivered with the same time
    standin.poison_tags = set()
    journal.update([(rec, {"state": State.PENDING, "message": None, "done_at": None, "error": None})])
    assert d.drain().delivered == 1
    assert standin.stored[-1] == {"date": rec.sent_date, "time": rec.sent_time, "rfidTag": POISON,
                                  **{k: v for k, v in standin.stored[-1].items()
                                     if k not in ("date", "time", "rfidTag")}}


def test_a_lone_poison_record_waits_visibly_until_a_later_scan_proves_iflow_works(tmp_path, standin):
    # An empty batch proves nothing (a database down answers [] and 500 to real
    # batches): alone, the record stays pending with the server's answer shown.
    fake, clock, journal, d = make(tmp_path, standin, isolate_after_s=0.0)
    fill(journal, clock, [POISON], fake=fake)
    poison(standin, 500)
    summaries = drain_until(d, journal, lambda: False, rounds=4)
    assert all(s.error and s.error_status == 500 for s in summaries)
    assert states(journal)[POISON].state == State.PENDING and not states(journal)[POISON].extra.get("alone_failures")
    # each scan delivered after it is the proof: set aside after the third
    for i in range(FAIL_AFTER):
        fill(journal, clock, [f"L{i}"], fake=fake)
        time.sleep(d.in_backoff() + 0.01)
        s = d.drain()
        assert s.delivered == 1 and "fails alone" in (s.note or "")
    assert states(journal)[POISON].state == State.FAILED
    assert [g["rfidTag"] for g in standin.stored] == ["L0", "L1", "L2"]


def test_a_database_outage_that_answers_the_empty_batch_marks_nothing(tmp_path, standin):
    fake, clock, journal, d = make(tmp_path, standin, isolate_after_s=0.0)
    fill(journal, clock, [f"{i:08d}" for i in range(100)], fake=fake)
    standin.poison_longer_than = 0  # every real batch refused, csv_data=[] still answered []
    standin.poison_status = 500
    drain_until(d, journal, lambda: False, rounds=8)
    summary = journal.summary()
    assert (summary["pending"], summary["failed"]) == (100, 0)
    assert not any(r.extra.get("alone_failures") for r in journal.records())


@pytest.mark.parametrize("outage", ["down", "500", "object"])
def test_an_outage_of_the_whole_run_marks_nothing(tmp_path, standin, outage):
    fake, clock, journal, d = make(tmp_path, standin)
    fill(journal, clock, [f"{i:08d}" for i in range(1000)], step=0.5, fake=fake)
    if outage == "down":
        standin.mode = "down"
    elif outage == "500":
        standin.outage = 500  # every request, the empty batch too
    else:  # a login page's answer on a 200, to the empty batch too: no proof iFlow works
        standin.object_answer = {"message": "Unauthenticated."}
    summaries = drain_until(d, journal, lambda: False, rounds=8)
    assert all(s.error for s in summaries)
    summary = journal.summary()
    assert (summary["pending"], summary["failed"], summary["rejected"]) == (1000, 0, 0)
    assert not any(r.extra.get("alone_failures") for r in journal.records())
    # cheap while it lasts: the requests of a pass shrink to a few
    assert summaries[-1].requests <= LONE_IN_A_ROW + 1
    if outage == "object":
        assert "Unauthenticated." in summaries[-1].error  # the server's own words
    standin.mode = "up"
    standin.outage = standin.object_answer = None
    drain_until(d, journal, lambda: journal.summary()["pending"] == 0)
    assert journal.summary()["delivered"] == 1000 and len(standin.stored) == 1000


def test_an_answer_without_a_result_is_an_error_with_a_back_off_and_no_resend_loop(tmp_path, standin):
    fake, clock, journal, d = make(tmp_path, standin)
    fill(journal, clock, ["A1", "A2", "A3"], fake=fake)
    for _ in range(6):
        standin.faults.append("unmatched_last")
    s = d.drain()
    assert s.unmatched == 1 and s.error and "no result" in s.error and d.in_backoff() > 0
    assert "no result" in d.state()["last_error"]
    assert states(journal)["A3"].extra["unanswered"] == 1  # the others matched: counted against it
    # alone, an answer that matches nothing is the answer's fault: one request per back-off, nothing counted
    before = standin.requests
    summaries = drain_until(d, journal, lambda: False, rounds=5)
    assert standin.requests - before == 5 and all(x.requests == 1 and x.error for x in summaries)
    assert states(journal)["A3"].extra["unanswered"] == 1
    time.sleep(d.in_backoff() + 0.01)
    assert d.drain().duplicate == 1  # iFlow had stored it all along
    assert {r.tag: r.state for r in journal.records()} == {"A1": "delivered", "A2": "delivered", "A3": "duplicate"}


def test_a_record_never_answered_is_set_aside_after_the_cap():
    from agent.records import Record

    rec = Record(None, id="x", state="pending")
    for n in range(1, UNANSWERED_LIMIT + 1):
        fields = unanswered_fields(rec, "no result (answer starts: '[]')", "2026-12-01T08:00:00+00:00")
        rec.extra["unanswered"] = fields["unanswered"]
        assert (fields.get("state") == State.FAILED) == (n == UNANSWERED_LIMIT)
    assert "5 times" in fields["message"] and "answer starts" in fields["message"]


def _stepped(fake, clock, seconds):
    """NTP steps the (synchronised) wall clock: a new anchor corrects this boot's scans."""
    fake.wall_ns += int(seconds * 1e9)
    assert any(e.startswith("jump") for e in clock.observe())


def test_a_refused_send_leaves_the_time_open_for_a_clock_correction(tmp_path, standin):
    fake, clock, journal, d = make(tmp_path, standin)
    (rec,) = fill(journal, clock, ["C1"], fake=fake)
    standin.mode = "down"
    s = d.drain()
    assert s.error and not s.reachable and journal.pinned() == 0
    _stepped(fake, clock, 3600)
    standin.mode = "up"
    time.sleep(d.in_backoff() + 0.01)
    assert d.drain().delivered == 1
    # captured 2026-11-22 08:00:00 UTC by the clock as it was; an hour later in truth; UTC+2
    assert (standin.stored[0]["date"], standin.stored[0]["time"]) == ("2026-11-22", "11:00:00")


def test_a_send_that_may_have_reached_iflow_keeps_its_time(tmp_path, standin):
    fake, clock, journal, d = make(tmp_path, standin)
    fill(journal, clock, ["C2"], fake=fake)
    standin.faults.append("close_after_store")  # stored, then no answer
    s = d.drain()
    assert s.error and len(standin.stored) == 1 and journal.pinned() == 1
    _stepped(fake, clock, 3600)
    time.sleep(d.in_backoff() + 0.01)
    s = d.drain()
    assert s.duplicate == 1 and len(standin.stored) == 1  # the identical resend: no second attendance
    assert states(journal)["C2"].sent_time == "10:00:00"


def test_pins_of_an_earlier_pass_that_may_have_reached_iflow_survive_a_refused_pass(tmp_path, standin):
    fake, clock, journal, d = make(tmp_path, standin)
    fill(journal, clock, ["C3"], fake=fake)
    standin.faults.append("close_after_store")
    d.drain()
    standin.mode = "down"
    time.sleep(d.in_backoff() + 0.01)
    d.drain()  # refused: but the first send may have reached iFlow
    assert journal.pinned() == 1
    _stepped(fake, clock, -1800)
    standin.mode = "up"
    time.sleep(d.in_backoff() + 0.01)
    assert d.drain().duplicate == 1 and len(standin.stored) == 1



def test_a_200_object_is_shown_in_the_servers_words_by_status_and_flush(tmp_path, standin):
    cfg = write_config(tmp_path / "c.toml", state_dir=tmp_path / "state",
                       iflow={"url": standin.url, "access_token": TOKEN}, extra={"time": {"trust_rtc": True}})
    os.makedirs(tmp_path / "state", mode=0o700)
    j = Journal(str(tmp_path / "state" / "journal"))
    now = datetime.now(UTC).isoformat(timespec="microseconds")
    for tag in ("O1", "O2"):
        j.append({"tag": tag, "raw": tag, "reader": "door", "source": "reader", "captured_at": now,
                  "boot_id": "b", "mono_ns": 1, "synced": True})
    j.close()
    standin.object_answer = {"success": False, "error": "Invalid device token"}
    daemon = Daemon(cfg)
    try:
        wait_ready(cfg)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            st = json.loads(run_cli(cfg, "status", "--json").stdout)
            if st.get("last_error"):
                break
            time.sleep(0.1)
        assert "Invalid device token" in st["last_error"] and "Invalid device token" in st["last_error_excerpt"]
        assert st["last_error_status"] == 200 and st["pending"] == 2 and st["failed"] == 0
        assert "Invalid device token" in run_cli(cfg, "status").stdout
        r = run_cli(cfg, "flush")
        assert r.returncode == 1 and "Invalid device token" in r.stdout.splitlines()[0], r.stdout
    finally:
        daemon.terminate()
