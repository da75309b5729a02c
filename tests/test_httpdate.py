"""The HTTPS Date as a time source: the pure bounds (agent.clock.httpdate), the
clock's rules for it (NTP wins, loose or unauthenticated answers are never
used, a restart keeps what the boot learned), and the probe that learns the
time from a real HTTPS server on 127.0.0.1 (agent.delivery.timeprobe),
including a certificate not yet valid at the wall clock."""

from __future__ import annotations

import email.utils
import json
import ssl
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import trustme

from agent.clock.anchors import AnchorStore
from agent.clock.clock import Clock
from agent.clock.httpdate import (
    DRIFT_PPM,
    DateSample,
    aged_error,
    bound_of,
    parse_http_date,
)
from agent.clock.policy import to_local
from agent.delivery.client import IflowClient
from agent.delivery.deliverer import Deliverer
from agent.delivery.timeprobe import TimeProbe
from agent.journal.store import Journal
from agent.tls import time_checks_available
from standins.iflow import IflowStandin
from tests.test_timekeeping import BUCHAREST, UTC, Machine, dt, ns

S = 10**9
TOKEN = "tok-httpdate-7c1e"


def http_date(when: datetime) -> str:
    return email.utils.format_datetime(when.astimezone(UTC), usegmt=True)


def sample(m: Machine, true: datetime | None = None, *, rtt_s: float = 0.02, authenticated: bool = True,
           age: str | None = None, skew_s: float = 0.0) -> DateSample:
    """What a client on ``m`` sees for an answer whose server clock is ``skew_s`` off the true time."""
    sent = m.mono
    server = (true or dt(m.true)) + timedelta(seconds=skew_s + rtt_s / 2)
    return DateSample(http_date(server.replace(microsecond=0)), age, sent, sent + int(rtt_s * S),
                      authenticated, "iflow.example")


# ------------------------------------------------------------------ pure


@pytest.mark.parametrize("text", [
    "Sun, 06 Nov 1994 08:49:37 GMT",  # IMF-fixdate
    "Sunday, 06-Nov-94 08:49:37 GMT",  # RFC 850
    "Sun Nov  6 08:49:37 1994",  # asctime
    "  Sun, 06 Nov 1994 08:49:37 GMT ",
])
def test_the_three_http_date_forms(text):
    assert parse_http_date(text) == int(datetime(1994, 11, 6, 8, 49, 37, tzinfo=UTC).timestamp())


@pytest.mark.parametrize("text", [None, "", "yesterday", "Sun, 06 Nov 1994 08:49:37 +0000",
                                  "Sun, 06 Xyz 1994 08:49:37 GMT", "Sun, 32 Nov 1994 08:49:37 GMT",
                                  "Sun, 06 Nov 1994 25:49:37 GMT", "1733100000",
                                  "Sun, 06 Nov 99999 08:49:37 GMT"])
def test_what_is_not_an_http_date(text):
    assert parse_http_date(text) is None


def test_the_bound_holds_the_true_offset_and_its_error_is_half_a_second_plus_half_the_round_trip():
    sent, received = 1000 * S, 1000 * S + 200_000_000
    date = "Wed, 02 Dec 2026 01:00:00 GMT"
    b = bound_of(DateSample(date, None, sent, received, True, "h"))
    d = parse_http_date(date) * S
    assert b.error_ns == 600_000_000
    lo, hi = d - received, d + S - sent  # every (server instant, mono instant) the answer allows
    assert b.offset_ns - b.error_ns <= lo and hi <= b.offset_ns + b.error_ns + 1
    assert b.mono_ns == sent + 100_000_000


def test_age_moves_the_date_and_widens_it_and_nonsense_says_nothing():
    base = DateSample("Wed, 02 Dec 2026 01:00:00 GMT", None, 10 * S, 10 * S, True, "h")
    plain, aged = bound_of(base), bound_of(base._replace(age="30"))
    assert aged.offset_ns - plain.offset_ns == 30 * S + S // 2
    assert aged.error_ns == plain.error_ns + S // 2
    assert bound_of(base._replace(age="-3")) is None
    assert bound_of(base._replace(age="soon")) is None
    assert bound_of(base._replace(received_ns=9 * S)) is None  # answered before it was asked
    assert bound_of(base._replace(date=None)) is None


def test_an_estimate_ages_with_the_crystals_drift():
    b = bound_of(DateSample("Wed, 02 Dec 2026 01:00:00 GMT", None, 0, 0, True, "h"))
    assert aged_error(b, b.mono_ns + 3600 * S) == b.error_ns + 3600 * S * DRIFT_PPM // 1_000_000


# ------------------------------------------------------------ the clock


def started(m: Machine, **kw) -> Clock:
    """``m``'s clock after its first observation (as the daemon starts it)."""
    c = m.clock(**kw)
    c.observe()
    return c


def behind(tmp_path: Path, **kw) -> Machine:
    """A Pi three hours behind whose kernel never synchronises."""
    return Machine(tmp_path, datetime(2026, 12, 2, 6, 0, tzinfo=UTC), err_s=-3 * 3600, **kw)


def test_an_authenticated_date_anchors_the_boot_and_corrects_its_earlier_scans(tmp_path):
    m = behind(tmp_path)
    c = started(m)
    scans = []
    for _ in range(3):
        scans.append((c.stamp(), dt(m.true)))
        m.advance(600)
    assert c.needs_time() and c.effective(scans[0][0]).status == "wait"
    assert c.observe_answer(sample(m)) == ["https-date"]
    assert not c.needs_time()
    for rec, true in scans:
        eff = c.effective(rec)
        assert eff.status == "corrected"
        assert abs((eff.when - true).total_seconds()) <= 1.0
    src = c.time_source()
    assert src["time_source"] == "https-date" and src["time_error_seconds"] <= 0.6
    assert src["wall_clock_error_seconds"] == pytest.approx(-3 * 3600, abs=1)
    assert c.trusted_now_s() == pytest.approx(m.true / S, abs=1)


def test_a_restart_in_the_same_boot_keeps_the_learned_time(tmp_path):
    m = behind(tmp_path)
    c = started(m)
    rec = c.stamp()
    c.observe_answer(sample(m))
    again = m.clock()
    again.observe()
    assert again.time_source()["time_source"] == "https-date"
    assert again.effective(rec).status == "corrected"
    doc = json.loads(Path(m.store_path).read_text())
    (boot,) = doc["boots"]
    assert boot["ntp"] is False and boot["https"]["origin"] == "iflow.example"


@pytest.mark.parametrize("why", ["plain http", "too loose", "no date", "source off"])
def test_answers_that_cannot_be_believed_leave_the_clock_untouched(tmp_path, why):
    m = behind(tmp_path)
    c = m.clock(http_date_max_error_s=0.0 if why == "source off" else 5.0)
    c.observe()
    s = {"plain http": sample(m, authenticated=False),
         "too loose": sample(m, rtt_s=12.0),  # ±6.5 s
         "no date": sample(m)._replace(date=None),
         "source off": sample(m)}[why]
    assert c.observe_answer(s) == []
    assert c.needs_time() and c.time_source()["time_source"] is None
    assert "https" not in Path(m.store_path).read_text() or json.loads(
        Path(m.store_path).read_text())["boots"][0]["https"] is None


def test_ntp_wins_and_a_date_a_minute_off_is_kept_for_doctor(tmp_path, caplog):
    m = Machine(tmp_path, datetime(2026, 12, 2, 6, 0, tzinfo=UTC), synced=True)
    c = started(m)
    rec = c.stamp()
    (event,) = c.observe_answer(sample(m, skew_s=60))
    assert event.startswith("disagree:+60.")  # the middle of the Date's second: 60.0 to 60.5
    assert "disagrees with NTP by +60" in caplog.text
    src = c.time_source()
    assert src["time_source"] == "ntp"
    assert src["time_disagreement_seconds"] == pytest.approx(60, abs=1)
    assert c.effective(rec).status == "ok"  # sent as stamped by the synchronised clock
    (boot,) = json.loads(Path(m.store_path).read_text())["boots"]
    assert boot["ntp"] is True and boot["https"] is None and boot["disagree"]["seconds"] == pytest.approx(60, abs=1)
    # the server's clock is fixed: the warning goes away
    m.advance(10)
    assert c.observe_answer(sample(m)) == []
    assert c.time_source()["time_disagreement_seconds"] is None


def test_a_boot_that_had_ntp_keeps_it_after_losing_sync(tmp_path):
    m = Machine(tmp_path, datetime(2026, 12, 2, 6, 0, tzinfo=UTC), synced=True)
    c = started(m)
    m.kernel = False
    m.advance(60)
    c.observe()
    off_before = AnchorStore(m.store_path).offset("boot-0")
    (event,) = c.observe_answer(sample(m, skew_s=120))
    assert event.startswith("disagree:+120.")
    assert AnchorStore(m.store_path).offset("boot-0") == off_before
    assert c.time_source()["time_source"] == "ntp"


def test_ntp_after_the_date_takes_over(tmp_path):
    m = behind(tmp_path)
    c = started(m)
    rec = c.stamp()
    c.observe_answer(sample(m, skew_s=0.9))  # a server a little ahead: the estimate NTP then replaces
    m.advance(60)
    m.err = 0
    m.kernel = True
    assert "synced" in c.observe()
    assert c.time_source()["time_source"] == "ntp"
    eff = c.effective(rec)
    assert abs((eff.when - dt(m.true - 60 * S)).total_seconds()) < 0.01  # NTP's anchor, to the µs


def test_a_tighter_answer_replaces_the_estimate_and_a_contradicting_one_is_ignored(tmp_path, caplog):
    m = behind(tmp_path)
    c = started(m)
    c.observe_answer(sample(m, rtt_s=6.0))  # ±3.5 s
    assert c.time_source()["time_error_seconds"] == pytest.approx(3.5, abs=0.01)
    m.advance(5)
    c.observe_answer(sample(m, rtt_s=0.01))
    assert c.time_source()["time_error_seconds"] < 0.6
    anchors = AnchorStore(m.store_path).get("boot-0").anchors
    m.advance(5)
    assert c.observe_answer(sample(m, skew_s=40)) == []  # a server stepped ahead: not believed
    assert "disagrees by +40" in caplog.text
    assert AnchorStore(m.store_path).get("boot-0").anchors == anchors


def test_an_anchor_file_from_before_the_https_source_opens_as_ntp(tmp_path):
    path = tmp_path / "clock.json"
    path.write_text(json.dumps({"version": 1, "boots": [
        {"boot_id": "old", "anchors": [[5 * S, 1_700_000_000 * S]], "first": [1_700_000_005 * S, 5 * S],
         "last": [1_700_000_005 * S, 5 * S]},
        {"boot_id": "never", "anchors": [], "first": None, "last": None}]}))
    store = AnchorStore(str(path))
    old, never = store.boots()
    assert old.ntp is True and old.https is None and old.offset == 1_700_000_000 * S
    assert never.ntp is False
    store.register_boot("new")  # rewritten with the new keys, still version 1
    assert json.loads(path.read_text())["version"] == 1


def test_dst_edge_through_the_date(tmp_path):
    """October in Bucharest: 03:59:59 EEST is followed by 03:00:00 EET. A Pi
    hours off learns the true time from a Date and sends the repeated hour as such."""
    m = Machine(tmp_path, datetime(2026, 10, 25, 0, 59, 58, tzinfo=UTC), err_s=-5 * 3600)
    c = started(m)
    recs = []
    for _ in range(4):
        recs.append(c.stamp())
        m.advance(1)
    c.observe_answer(sample(m, rtt_s=0.0))
    local = [to_local(c.effective(r).when, BUCHAREST) for r in recs]
    times = [t for _, t in local]
    # within the estimate's half second: either side of the change, never a skipped or doubled order
    assert times[0].startswith("03:59:5") and times[-1].startswith("03:00:0")
    whens = [c.effective(r).when for r in recs]
    assert whens == sorted(whens) and all(d == "2026-10-25" for d, _ in local)


# ------------------------------------------------------------ the probe


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


def serve(ca: trustme.CA, tmp_path: Path, *, not_before: datetime | None = None, **kw) -> tuple[IflowStandin, str]:
    cert = ca.issue_cert("127.0.0.1", not_before=not_before,
                         not_after=None if not_before is None else not_before + timedelta(days=90))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(ctx)
    pem = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(pem))
    return IflowStandin(token=TOKEN, ssl_context=ctx, **kw).start(), str(pem)


def one_scan(st: IflowStandin, pem: str, c: Clock, tmp_path: Path) -> Deliverer:
    """One scan stamped now, and a Deliverer wired as the daemon's (the client's Dates teach ``c``)."""
    journal = Journal(str(tmp_path / "journal"))
    journal.append({"tag": "0004711", "raw": "0004711", "reader": "door", "source": "reader", **c.stamp()})
    client = IflowClient(st.url, TOKEN, "1.0", verify=pem, on_answer=c.observe_answer, mono_ns=c.mono_ns,
                         verify_at=c.trusted_now_s)
    return Deliverer(journal, client, c, BUCHAREST, timeprobe=TimeProbe(st.url, c, ca_bundle=pem))


def real_machine(tmp_path: Path, *, err_s: float) -> Machine:
    """Wall clock off the real one by ``err_s`` (the TLS checks use the real clock)."""
    return Machine(tmp_path, datetime.now(UTC), err_s=err_s)


def test_the_probe_learns_the_time_from_a_head_with_no_token(tmp_path, ca):
    st, pem = serve(ca, tmp_path)
    try:
        m = real_machine(tmp_path, err_s=-3 * 3600)
        c = started(m)
        probe = TimeProbe(st.url, c, ca_bundle=pem)
        assert probe.usable and probe.due()
        assert probe.learn() is True
        assert st.head_requests == 1 and st.requests == 0  # nothing stored, no token sent
        assert not probe.due()
        assert c.time_source()["time_source"] == "https-date"
    finally:
        st.stop()


def test_a_server_that_does_not_verify_never_sets_the_clock(tmp_path, ca):
    st, _ = serve(trustme.CA(), tmp_path, date_offset_s=-30 * 86400)  # another CA, a wrong Date
    ca.cert_pem.write_to_path(str(tmp_path / "ours.pem"))
    try:
        m = real_machine(tmp_path, err_s=-3 * 3600)
        c = started(m)
        probe = TimeProbe(st.url, c, ca_bundle=str(tmp_path / "ours.pem"))
        assert probe.learn() is False
        assert c.needs_time() and c.time_source()["time_source"] is None
        assert "cannot reach" in probe.last_problem
        assert not probe.due()  # it cools down before the next try
        assert AnchorStore(m.store_path).get("boot-0").https is None
    finally:
        st.stop()


def test_plain_http_is_never_probed_unless_the_lab_switch_says_so(tmp_path):
    st = IflowStandin(token=TOKEN).start()
    try:
        m = real_machine(tmp_path, err_s=-3 * 3600)
        c = started(m)
        assert not TimeProbe(st.url, c).due()
        lab = TimeProbe(st.url, c, insecure=True)
        assert lab.due() and lab.learn() is True
        assert c.time_source()["time_source"] == "https-date"
    finally:
        st.stop()


def certificate_from_the_future(ca: trustme.CA, tmp_path: Path) -> tuple[IflowStandin, str]:
    """iFlow 20 days ahead of this machine's clock, its certificate valid from 10 days ahead."""
    return serve(ca, tmp_path, not_before=datetime.now(UTC) + timedelta(days=10), date_offset_s=20 * 86400)


@pytest.mark.skipif(not time_checks_available(), reason="this Python gives no verified chain")
def test_a_certificate_not_yet_valid_at_the_wall_clock_the_time_is_learned_and_scans_delivered(tmp_path, ca):
    """The Pi's clock is 20 days behind; iFlow's certificate started 10 days ago."""
    now, (st, pem) = datetime.now(UTC), certificate_from_the_future(ca, tmp_path)
    try:
        m = Machine(tmp_path, now + timedelta(days=20), err_s=-20 * 86400)  # its wall clock is the real one
        c = started(m)
        d = one_scan(st, pem, c, tmp_path)
        summary = d.drain()
        assert summary.delivered == 1, summary.as_dict()
        (stored,) = st.stored
        sent = datetime.fromisoformat(f"{stored['date']}T{stored['time']}").replace(tzinfo=BUCHAREST)
        assert abs(sent - (now + timedelta(days=20))) < timedelta(seconds=2)  # the true time, not the wall's
        assert "before the start" in c.time_source()["cert_time_problem"]
        d.close()
    finally:
        st.stop()


@pytest.mark.skipif(not time_checks_available(), reason="this Python gives no verified chain")
def test_a_date_before_the_newest_trusted_time_is_refused(tmp_path, ca):
    now, (st, pem) = datetime.now(UTC), certificate_from_the_future(ca, tmp_path)
    try:
        m = Machine(tmp_path, now, boot_id="boot-1")
        store = AnchorStore(m.store_path)
        # an earlier boot saw a synchronised clock 40 days from now: a Date 20 days ahead cannot be true
        store.add_anchor("boot-0", ns(now + timedelta(days=40)), 100 * S)
        c = started(m)
        probe = TimeProbe(st.url, c, ca_bundle=pem)
        assert probe.learn() is False
        assert c.needs_time()
        assert "not used" in c.time_source()["cert_time_problem"]
    finally:
        st.stop()


def test_the_head_waits_for_no_scan(tmp_path, ca):
    """A pass on a boot that learns nothing sends nothing of it (no scan leaves to learn the time)."""
    st, pem = serve(ca, tmp_path, send_date=False)
    try:
        m = real_machine(tmp_path, err_s=-3 * 3600)
        c = started(m)
        d = one_scan(st, pem, c, tmp_path)
        d.drain()
        assert st.head_requests == 1 and st.requests == 0 and not st.stored
        assert d.count()[1]["wait"] == 1 and d.held_detail["waiting_for"] == "ntp or https-date"
        d.close()
    finally:
        st.stop()


def test_a_date_before_the_build_date_is_never_used(tmp_path, caplog):
    m = Machine(tmp_path, datetime(2026, 12, 2, 6, 0, tzinfo=UTC), err_s=-3 * 3600)
    c = m.clock(build_time=datetime(2026, 11, 1, tzinfo=UTC))
    c.observe()
    assert c.observe_answer(sample(m, skew_s=-60 * 86400)) == []  # a server whose clock says October
    assert c.needs_time() and "before the newest trusted time" in caplog.text


def test_failed_probes_follow_the_delivery_back_off(tmp_path):
    now = [100.0]
    m = real_machine(tmp_path, err_s=-3 * 3600)
    c = started(m)
    probe = TimeProbe("https://127.0.0.1:9/x", c, connect_timeout=0.5, read_timeout=0.5, retry_initial=2.0,
                      retry_max=5.0, monotonic=lambda: now[0])  # port 9: refused
    waits = []
    for _ in range(4):
        assert probe.due() and probe.learn() is False
        start = now[0]
        while not probe.due():
            now[0] += 0.5
        waits.append(now[0] - start)
    assert waits == [2.0, 4.0, 5.0, 5.0]


@pytest.mark.parametrize("age", ["999999999", "61", "\u00b2", "-1"])
def test_an_age_that_is_not_a_fresh_copy_says_nothing(age):
    base = DateSample("Wed, 02 Dec 2026 01:00:00 GMT", age, 10 * S, 10 * S, True, "h")
    assert bound_of(base) is None


@pytest.mark.parametrize("detail", ['{"error_ns": NaN, "mono_ns": 1, "confirmed_ns": 1}',
                                    '{"error_ns": 1e300, "mono_ns": 1, "confirmed_ns": 1}',
                                    '{"error_ns": true, "mono_ns": 1, "confirmed_ns": 1}'])
def test_a_damaged_detail_is_dropped_and_the_clock_still_starts(tmp_path, detail):
    m = behind(tmp_path)
    Path(m.store_path).write_text('{"version": 1, "boots": [{"boot_id": "boot-0", "anchors": [[1, 2]], '
                                  f'"first": null, "last": null, "ntp": false, "https": {detail}, '
                                  '"disagree": {"seconds": Infinity, "wall_ns": 1}}]}')
    c = started(m)
    b = AnchorStore(m.store_path).get("boot-0")
    assert b.https is None and b.disagree is None and b.offset == 2  # the anchor itself is kept
    assert c.time_source()["time_disagreement_seconds"] is None


def test_ntp_anchoring_first_wins_the_race(tmp_path):
    """The kernel's anchor lands between the Date's reading and its anchor: the Date's is refused."""
    m = behind(tmp_path)
    c = started(m)
    c._store.add_anchor("boot-0", m.wall(), m.mono)  # what observe() writes when NTP syncs
    c._state = (False, c._state[1])  # ...before this thread saw the sync
    assert c._save_https(bound_of(sample(m)), "iflow.example", anchor=True) is False
    assert c._store.get("boot-0").https is None


def test_every_disagreement_is_kept_although_the_log_is_quiet(tmp_path, caplog):
    m = Machine(tmp_path, datetime(2026, 12, 2, 6, 0, tzinfo=UTC), synced=True,
                boot_id="boot-0")
    c = m.clock(build_time=datetime(2026, 11, 1, tzinfo=UTC))
    c.observe()
    c.observe_answer(sample(m, skew_s=60))
    m.advance(10)
    c.observe_answer(sample(m))  # agrees: cleared
    assert c.time_source()["time_disagreement_seconds"] is None
    m.advance(10)
    c.observe_answer(sample(m, skew_s=90))  # within the hour: not logged again, but kept
    assert c.time_source()["time_disagreement_seconds"] == pytest.approx(90, abs=1)
    assert caplog.text.count("disagrees with NTP") == 1
