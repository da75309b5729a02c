"""Tests for agent.clock (sources, anchors, policy, clock), all on injected clocks (never the machine's)."""

from __future__ import annotations

import itertools
import json
import logging
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.clock.anchors import MAX_ANCHORS_PER_BOOT, MAX_BOOTS, AnchorStore
from agent.clock.clock import Clock
from agent.clock.policy import Effective, datetime_to_ns, to_local
from agent.clock.sources import ClockSources, boottime_ns, kernel_synced, read_boot_id

UTC = UTC
S = 10**9
BUCHAREST = ZoneInfo("Europe/Bucharest")


def ns(dt: datetime) -> int:
    return datetime_to_ns(dt)


def dt(ns_: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=ns_ // 1000)


class Machine:
    """A fake Pi: true time, a wall clock off by ``err`` ns, BOOTTIME, kernel sync."""

    def __init__(self, tmp: Path, true: datetime, *, err_s: float = 0.0, synced: bool = False,
                 boot_id: str = "boot-0") -> None:
        self.tmp = tmp
        self.true = ns(true)
        self.err = int(err_s * S)
        self.mono = 4 * S  # BOOTTIME a few seconds after kernel start
        self.kernel: bool | None = synced
        self.boot_file = tmp / "boot_id"
        self.boot_file.write_text(boot_id + "\n")
        self.store_path = str(tmp / "clock.json")

    def wall(self) -> int:
        return self.true + self.err

    def mono_ns(self) -> int:
        return self.mono

    def adjtimex(self) -> bool | None:
        return self.kernel

    def advance(self, seconds: float) -> None:
        d = int(seconds * S)
        self.true += d
        self.mono += d

    def step_wall(self, seconds: float) -> None:
        self.err += int(seconds * S)

    def reboot(self, boot_id: str, *, down_s: float, wall_err_s: float, synced: bool = False) -> None:
        self.true += int(down_s * S)
        self.mono = 3 * S
        self.err = int(wall_err_s * S)
        self.kernel = synced
        self.boot_file.write_text(boot_id + "\n")

    def sources(self, **kw) -> ClockSources:
        kw.setdefault("timesyncd_flag", str(self.tmp / "no-such-flag"))
        return ClockSources(boot_id_path=str(self.boot_file), wall_ns=self.wall, mono_ns=self.mono_ns,
                            adjtimex=self.adjtimex, **kw)

    def clock(self, **kw) -> Clock:
        return Clock(self.sources(), AnchorStore(self.store_path), **kw)


def scan(m: Machine, clock: Clock) -> tuple[dict, datetime]:
    """Stamp a scan; return the record and the true time it happened."""
    return clock.stamp(), dt(m.true)


# ---------------------------------------------------------------- stamping


def test_stamp_format_and_no_io(tmp_path: Path) -> None:
    m = Machine(tmp_path, datetime(2026, 5, 10, 8, 0, 0, 250, tzinfo=UTC), synced=True)
    c = m.clock()
    c.observe()
    m.boot_file.unlink()  # stamp must not read files
    rec = c.stamp()
    assert rec == {"captured_at": "2026-05-10T08:00:00.000250+00:00", "boot_id": "boot-0",
                   "mono_ns": 4 * S, "synced": True}
    assert c.effective(rec) == Effective(dt(m.true), "ok", dt(m.true), None)


# ---------------------------------------------------------------- offline boot, then NTP


def test_offline_boot_three_hours_behind_is_corrected_exactly(tmp_path: Path) -> None:
    true0 = datetime(2026, 5, 10, 8, 0, 0, 123456, tzinfo=UTC)
    m = Machine(tmp_path, true0, err_s=-3 * 3600)
    c = m.clock()
    assert c.observe() == []
    scans = []
    for gap in (10.5, 60.25, 1.0, 3599.75):
        m.advance(gap)
        scans.append(scan(m, c))
        assert c.observe() == []
        assert c.effective(scans[-1][0], policy="send").status == "wait"  # within the grace period
    for rec, _true in scans:
        assert rec["synced"] is False
        e = c.effective(rec)
        assert (e.status, e.when) == ("wait", None)

    m.advance(20)
    m.step_wall(3 * 3600)  # NTP steps the clock...
    m.kernel = True  # ...and the kernel now says synchronised
    assert c.observe() == ["synced", "jump:+10800.0s"]
    m.advance(1.5)
    after = scan(m, c)

    for rec, true in scans:
        e = c.effective(rec)
        assert e.status == "corrected"
        assert e.when == true  # exact (to the µs, so certainly to the second)
        assert e.original == datetime.fromisoformat(rec["captured_at"])
        assert e.original == true - timedelta(hours=3)
        assert to_local(e.when, BUCHAREST) == to_local(true, BUCHAREST)
    e = c.effective(after[0])
    assert (e.status, e.when, e.original) == ("ok", after[1], after[1])

    # another process (agent flush) opening the same anchor file agrees
    other = m.clock()
    assert [other.effective(r).when for r, _ in scans] == [t for _, t in scans]


def test_send_policy_sends_current_boot_unsynced_after_grace(tmp_path: Path) -> None:
    m = Machine(tmp_path, datetime(2026, 5, 10, 8, 0, tzinfo=UTC), err_s=-600)
    c = m.clock(unsynced_grace_s=900)
    c.observe()
    rec, _ = scan(m, c)
    assert c.effective(rec, policy="send").status == "wait"
    assert c.effective({**rec, "released": True}).status == "unsynced_sent"
    m.advance(901)
    e = c.effective(rec, policy="send")
    assert (e.status, e.when) == ("unsynced_sent", e.original)
    assert c.effective(rec, policy="hold").status == "wait"


# ---------------------------------------------------------------- reboot before sync


def test_reboot_before_sync_holds_then_bounds(tmp_path: Path) -> None:
    # boot 0 synchronised and ran a while: its last synced wall time is recorded
    m = Machine(tmp_path, datetime(2026, 5, 1, 6, 0, tzinfo=UTC), synced=True, boot_id="boot-0")
    c0 = m.clock()
    assert c0.observe() == ["synced"]
    m.advance(3600)
    c0.observe()  # periodic anchor (every 10 min)
    last_synced_0 = m.true
    # power cut; boot A comes up 2 days later with the clock restored 1 day behind
    m.reboot("boot-A", down_s=2 * 86400, wall_err_s=-86400)
    ca = m.clock()
    assert ca.observe() == []
    a_scans = []
    for _ in range(3):
        m.advance(30)
        a_scans.append(scan(m, ca))
    m.advance(100)
    # boot B, still offline
    m.reboot("boot-B", down_s=600, wall_err_s=-86400 - 3000)
    cb = m.clock()
    cb.observe()
    m.advance(5)
    b_rec, b_true = scan(m, cb)

    for rec, _ in a_scans:
        held = cb.effective(rec)
        assert (held.status, held.when, held.bound) == ("held_unsynced", None, None)
        sent = cb.effective(rec, policy="send")
        assert (sent.status, sent.when) == ("unsynced_sent", sent.original)
        released = cb.effective({**rec, "released": True}, policy="hold")
        assert (released.status, released.when) == ("unsynced_sent", released.original)
        assert cb.effective({**rec, "released": "yes"}).status == "held_unsynced"  # only True releases
    assert cb.effective(b_rec).status == "wait"

    # boot B synchronises: B is corrected, A stays held but is now bounded
    m.step_wall(86400 + 3000)
    m.kernel = True
    assert "synced" in cb.observe()
    e = cb.effective(b_rec)
    assert (e.status, e.when) == ("corrected", b_true)
    b_start_true = m.true - m.mono
    for rec, true in a_scans:
        held = cb.effective(rec)
        assert held.status == "held_unsynced" and held.when is None
        assert held.bound is not None
        lo, hi = held.bound
        assert lo <= true <= hi
        assert hi == dt(b_start_true)
        assert lo == dt(last_synced_0 + rec["mono_ns"])
        assert cb.effective(rec, policy="send").bound == held.bound


def test_bound_without_an_earlier_synced_boot_uses_floor(tmp_path: Path) -> None:
    m = Machine(tmp_path, datetime(2026, 5, 1, 6, 0, tzinfo=UTC), err_s=-7200, boot_id="boot-A")
    ca = m.clock(build_time=datetime(2026, 1, 1, tzinfo=UTC))
    ca.observe()
    rec, true = scan(m, ca)
    m.reboot("boot-B", down_s=60, wall_err_s=0, synced=True)
    cb = m.clock(build_time=datetime(2026, 1, 1, tzinfo=UTC))
    cb.observe()
    e = cb.effective(rec)
    assert e.status == "held_unsynced"
    assert e.bound == (datetime(2026, 1, 1, tzinfo=UTC), dt(m.true - m.mono))
    assert e.bound[0] <= true <= e.bound[1]


def test_unknown_boot_is_held_without_bound(tmp_path: Path) -> None:
    m = Machine(tmp_path, datetime(2026, 5, 1, 6, 0, tzinfo=UTC), synced=True)
    c = m.clock()
    c.observe()
    rec = {"captured_at": "2026-04-30T10:00:00.000000+00:00", "boot_id": "gone", "mono_ns": 5 * S,
           "synced": False}
    assert c.effective(rec) == Effective(None, "held_unsynced", datetime(2026, 4, 30, 10, tzinfo=UTC), None)


# ---------------------------------------------------------------- DST


@pytest.mark.parametrize(
    ("utc", "expected"),
    [
        # 2026-03-29: 03:00 EET -> 04:00 EEST at 01:00 UTC; 03:00-03:59 local does not exist
        ("2026-03-29T00:59:59+00:00", ("2026-03-29", "02:59:59")),
        ("2026-03-29T01:00:00+00:00", ("2026-03-29", "04:00:00")),
        ("2026-03-28T22:00:00+00:00", ("2026-03-29", "00:00:00")),
        # 2026-10-25: 04:00 EEST -> 03:00 EET at 01:00 UTC; 03:00-03:59 local happens twice
        ("2026-10-25T00:00:00+00:00", ("2026-10-25", "03:00:00")),
        ("2026-10-25T00:59:59+00:00", ("2026-10-25", "03:59:59")),
        ("2026-10-25T01:00:00+00:00", ("2026-10-25", "03:00:00")),
        ("2026-10-25T01:59:59+00:00", ("2026-10-25", "03:59:59")),
        ("2026-10-25T02:00:00+00:00", ("2026-10-25", "04:00:00")),
        ("2026-10-24T20:59:59+00:00", ("2026-10-24", "23:59:59")),
        ("2026-10-24T21:00:00+00:00", ("2026-10-25", "00:00:00")),
        ("2026-12-31T21:59:59.999999+00:00", ("2026-12-31", "23:59:59")),  # truncated, not rounded
        ("2026-12-31T22:00:00+00:00", ("2027-01-01", "00:00:00")),
        ("2026-07-01T12:00:00+05:00", ("2026-07-01", "10:00:00")),  # any aware input is an instant
    ],
)
def test_to_local_bucharest(utc: str, expected: tuple[str, str]) -> None:
    assert to_local(datetime.fromisoformat(utc), BUCHAREST) == expected


def test_to_local_ignores_machine_tz(monkeypatch: pytest.MonkeyPatch) -> None:
    when = datetime(2026, 10, 25, 1, 30, tzinfo=UTC)
    try:
        for tzname in ("America/New_York", "Asia/Kolkata", "UTC"):
            monkeypatch.setenv("TZ", tzname)
            time.tzset()
            assert to_local(when, BUCHAREST) == ("2026-10-25", "03:30:00")
    finally:
        monkeypatch.undo()
        time.tzset()


def test_to_local_rejects_naive() -> None:
    with pytest.raises(ValueError, match="naive"):
        to_local(datetime(2026, 1, 1), BUCHAREST)


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=ns(datetime(2020, 1, 1, tzinfo=UTC)), max_value=ns(datetime(2038, 1, 1, tzinfo=UTC))))
def test_to_local_round_trips_to_the_truncated_instant(instant_ns: int) -> None:
    when = dt(instant_ns)
    d, t = to_local(when, BUCHAREST)
    naive = datetime.fromisoformat(f"{d}T{t}")
    back = {naive.replace(tzinfo=BUCHAREST, fold=f).astimezone(UTC) for f in (0, 1)}
    assert when.replace(microsecond=0) in back


def test_scans_across_october_change_keep_utc_order(tmp_path: Path) -> None:
    m = Machine(tmp_path, datetime(2026, 10, 25, 0, 59, 59, 500000, tzinfo=UTC), synced=True)
    c = m.clock()
    c.observe()
    recs = []
    for _ in range(3):
        recs.append(c.stamp())
        m.advance(0.5)
    whens = [c.effective(r).when for r in recs]
    assert whens == sorted(whens)
    assert [to_local(w, BUCHAREST)[1] for w in whens] == ["03:59:59", "03:00:00", "03:00:00"]


# ---------------------------------------------------------------- clock steps


def _run_with_step(tmp_path: Path, *, kernel_after_step: bool) -> tuple[Clock, list, list[str]]:
    m = Machine(tmp_path, datetime(2026, 6, 1, 9, 0, tzinfo=UTC), synced=True)
    c = m.clock()
    events = c.observe()
    scans = []
    for i in range(120):
        m.advance(0.3)
        scans.append(scan(m, c))
        if i == 60:
            m.step_wall(-3600)  # someone/something sets the clock back an hour
            m.kernel = kernel_after_step
            m.advance(0.1)
            scans.append(scan(m, c))  # before observe() noticed
        m.advance(0.7)
        events += c.observe()
    return c, scans, events


def test_step_back_while_synced_keeps_order(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="agent.timekeeping"):
        c, scans, events = _run_with_step(tmp_path, kernel_after_step=True)
    assert events == ["synced", "jump:-3600.0s"]
    assert "stepped by -3600.0 s" in caplog.text
    assert scans[61][0]["synced"] is False  # stamped in the step's second, not trusted
    effs = [c.effective(r) for r, _ in scans]
    whens = [e.when for e in effs]
    assert None not in whens
    assert all(a < b for a, b in itertools.pairwise(whens))  # ordered by mono, no hour going backwards
    gaps = [b - a for a, b in itertools.pairwise(whens)]
    assert gaps == [t2 - t1 for (_, t1), (_, t2) in itertools.pairwise(scans)]  # spacing = mono spacing
    # the newest measurement wins for the whole boot: records before the step are moved
    assert {e.status for e in effs[:62]} == {"corrected"}
    assert {e.status for e in effs[62:]} == {"ok"}


def test_manual_step_back_is_corrected_to_the_true_time(tmp_path: Path) -> None:
    # settimeofday sets STA_UNSYNC: the kernel reports unsynced after a manual set
    c, scans, events = _run_with_step(tmp_path, kernel_after_step=False)
    assert events == ["synced", "unsynced", "jump:-3600.0s"]
    effs = [c.effective(r) for r, _ in scans]
    assert [e.when for e in effs] == [t for _, t in scans]
    assert {e.status for e in effs[:61]} == {"ok"}
    assert {e.status for e in effs[61:]} == {"corrected"}


actions = st.lists(
    st.one_of(
        st.tuples(st.just("advance"), st.floats(0.01, 700)),
        st.tuples(st.just("step"), st.sampled_from([-1, 1]), st.floats(2.5, 5 * 86400)),
        st.tuples(st.just("kernel"), st.booleans()),
        st.tuples(st.just("observe")),
        st.tuples(st.just("scan")),
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(actions, st.booleans())
def test_property_times_within_a_boot_never_go_backwards(tmp_path_factory, acts, synced0) -> None:
    tmp = tmp_path_factory.mktemp("prop")
    m = Machine(tmp, datetime(2026, 6, 1, 9, 0, tzinfo=UTC), synced=synced0)
    c = m.clock(build_time=datetime(2000, 1, 1, tzinfo=UTC), future_tolerance_s=10 * 86400)
    c.observe()
    recs = []
    for a in acts:
        if a[0] == "advance":
            m.advance(a[1])
        elif a[0] == "step":
            m.step_wall(a[1] * a[2])
        elif a[0] == "kernel":
            m.kernel = a[1]
        elif a[0] == "observe":
            c.observe()
        else:
            recs.append(c.stamp())
            m.advance(0.001)
    effs = [c.effective(r) for r in recs]
    if any(e.status == "corrected" for e in effs):  # the boot has an anchor: every record is sent
        assert all(e.when is not None for e in effs)
    whens = [e.when for e in effs if e.when is not None]
    assert whens == sorted(whens)
    for e in effs:
        assert e.status in ("ok", "corrected", "wait")


# ---------------------------------------------------------------- sanity


def test_sanity_before_build_time_and_far_future(tmp_path: Path) -> None:
    m = Machine(tmp_path, datetime(2026, 6, 1, 9, 0, tzinfo=UTC), synced=True)
    c = m.clock(build_time=datetime(2026, 1, 1, tzinfo=UTC))
    c.observe()

    def rec(when: str, synced: bool = True, boot: str = "old") -> dict:
        return {"captured_at": when, "boot_id": boot, "mono_ns": 10 * S, "synced": synced}

    # before the build date: held only when the clock was not trusted at capture (issue 13)
    e = c.effective(rec("2025-12-31T23:59:59.000000+00:00", synced=False), policy="send")
    assert (e.status, e.when) == ("held_insane", None)
    assert c.effective(rec("2026-01-01T00:00:00.000000+00:00", synced=False), policy="send").status \
        == "unsynced_sent"
    # a synchronised clock before the build date (an upgrade after an outage spanning the build): sent
    e = c.effective(rec("2025-12-31T23:59:59.000000+00:00"))
    assert (e.status, e.when) == ("ok", e.original)
    assert c.effective(rec("2026-01-01T00:00:00.000000+00:00")).status == "ok"
    assert c.effective(rec("2026-06-02T08:59:00.000000+00:00")).status == "ok"  # 23h59 ahead
    e = c.effective(rec("2026-06-02T09:00:01.000000+00:00"))  # > 1 day ahead
    assert (e.status, e.when) == ("held_insane", None)
    # an unsynced record of a past boot stamped at the epoch, policy send: not sent either
    e = c.effective(rec("1970-01-01T00:00:05.000000+00:00", synced=False), policy="send")
    assert (e.status, e.when) == ("held_insane", None)


def test_sanity_now_is_not_the_lagging_wall_clock(tmp_path: Path) -> None:
    # boot 0 synced; after a reboot the clock is 3 days behind and unsynced, but a synced
    # record from boot 0 is not "in the future": now >= the last synced time seen
    m = Machine(tmp_path, datetime(2026, 6, 1, 9, 0, tzinfo=UTC), synced=True, boot_id="b0")
    c0 = m.clock()
    c0.observe()
    m.advance(60)
    rec = c0.stamp()
    m.advance(60)
    c0.observe()
    m.advance(1)
    c0.observe()
    m.reboot("b1", down_s=30, wall_err_s=-3 * 86400)
    c1 = m.clock()
    c1.observe()
    assert c1.effective(rec).status == "ok"


# ---------------------------------------------------------------- anchor store


def test_anchor_store_survives_reopen_and_is_bounded(tmp_path: Path) -> None:
    path = str(tmp_path / "clock.json")
    s = AnchorStore(path)
    s.register_boot("a")
    for i in range(40):
        s.add_anchor("a", wall_ns=1000 * S + i * S, mono_ns=5 * S + i * S)
    s2 = AnchorStore(path)
    b = s2.get("a")
    assert b is not None
    assert len(b.anchors) == MAX_ANCHORS_PER_BOOT
    assert b.anchors[0] == (5 * S, 995 * S) and b.anchors[-1] == (44 * S, 995 * S)
    assert b.first == (1000 * S, 5 * S) and b.last == (1039 * S, 44 * S)
    assert s2.offset("a") == 995 * S and s2.offset("nope") is None
    for i in range(MAX_BOOTS + 10):
        s2.register_boot(f"boot-{i}")
    ids = [b.boot_id for b in AnchorStore(path).boots()]
    assert len(ids) == MAX_BOOTS and ids[-1] == f"boot-{MAX_BOOTS + 9}" and "a" not in ids
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


@pytest.mark.parametrize(
    "content",
    [b"\x00\xff garbage", b"[" * 100000, b'{"version": 1, "boots": [{"boot_id": "a", "anchors": [[1]]}]}',
     b'{"version": 2, "boots": []}', b'{"version": 1, "boots": [{"boot_id": "a", "anchors": [[true, 1]]}]}',
     b'"\xed\xa0\x80"'],
)
def test_anchor_store_moves_corrupt_file_aside(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                               content: bytes) -> None:
    path = tmp_path / "clock.json"
    path.write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="agent.timekeeping"):
        s = AnchorStore(str(path))
    assert s.boots() == []
    assert "moved aside" in caplog.text
    assert (tmp_path / "clock.json.corrupt").read_bytes() == content
    s.add_anchor("b", 10 * S, 2 * S)
    assert AnchorStore(str(path)).offset("b") == 8 * S


def test_anchor_write_failure_does_not_break_observe(tmp_path: Path) -> None:
    m = Machine(tmp_path, datetime(2026, 6, 1, 9, 0, tzinfo=UTC), err_s=-3600)
    calls = []

    def failing_write(path: str, data: bytes) -> None:
        calls.append(path)
        raise OSError(28, "No space left on device")

    c = Clock(m.sources(), AnchorStore(m.store_path, write=failing_write))
    c.observe()
    rec, true = scan(m, c)
    m.step_wall(3600)
    m.kernel = True
    assert c.observe() == ["synced", "jump:+3600.0s", "anchor_write_failed"]
    assert c.effective(rec).when == true  # kept in memory
    n = len(calls)
    m.advance(1)
    c.observe()
    assert len(calls) == n  # no retry every second...
    m.advance(60)
    assert c.observe() == ["anchor_write_failed"]  # ...but after a minute


def test_periodic_anchor_every_ten_minutes(tmp_path: Path) -> None:
    m = Machine(tmp_path, datetime(2026, 6, 1, 9, 0, tzinfo=UTC), synced=True)
    c = m.clock()
    c.observe()
    store = AnchorStore(m.store_path)
    for _ in range(25 * 60):
        m.advance(1)
        c.observe()
    b = AnchorStore(m.store_path).get("boot-0")
    assert b is not None and len(b.anchors) == 3  # t=0, 10 min, 20 min
    assert b.last == (m.true - 5 * 60 * S, m.mono - 5 * 60 * S)
    assert store.get("boot-0").anchors == ((4 * S, b.anchors[0][1]),)  # a reader sees the old file...
    store.reload()
    assert len(store.get("boot-0").anchors) == 3  # ...until it reloads


# ---------------------------------------------------------------- sources


def test_kernel_synced_on_this_machine() -> None:
    assert kernel_synced() in (True, False, None)
    assert isinstance(boottime_ns(), int) and boottime_ns() > 0


def test_read_boot_id(tmp_path: Path) -> None:
    p = tmp_path / "boot_id"
    p.write_text("75db48a8-234e-46d0-9cf5-4653e4dd579c\n")
    assert read_boot_id(str(p)) == "75db48a8-234e-46d0-9cf5-4653e4dd579c"
    p.write_text("\n")
    with pytest.raises(ValueError, match="empty boot id"):
        read_boot_id(str(p))
    with pytest.raises(OSError):
        read_boot_id(str(tmp_path / "missing"))


def test_sources_synced_rules(tmp_path: Path) -> None:
    m = Machine(tmp_path, datetime(2026, 6, 1, 9, 0, tzinfo=UTC))
    m.mono = 3600 * S  # booted an hour ago
    flag = tmp_path / "synchronized"
    src = m.sources(timesyncd_flag=str(flag))
    m.kernel = None  # adjtimex unavailable: the flag file decides
    assert src.synced() is False  # no flag
    flag.touch()
    boot_start = m.wall() - m.mono
    os.utime(flag, ns=(boot_start - S, boot_start - S))  # touched before this boot
    assert src.synced() is False
    os.utime(flag, ns=(boot_start + 60 * S, boot_start + 60 * S))
    assert src.synced() is True
    m.kernel = False  # the kernel, when it answers, wins (e.g. after date -s)
    assert src.synced() is False
    m.kernel = True
    assert m.sources(timesyncd_flag=str(tmp_path / "none")).synced() is True
    assert m.sources(use_adjtimex=False, timesyncd_flag=str(tmp_path / "none")).synced() is False
    assert m.sources(use_adjtimex=False, timesyncd_flag=str(flag)).synced() is True
    m.kernel = False
    assert m.sources(trust_rtc=True).synced() is True
    assert src.boot_id() == "boot-0"
    assert src.now() == (m.wall(), m.mono)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("record", "match"),
    [
        ({"boot_id": "b", "mono_ns": 1, "synced": True}, "captured_at"),
        ({"captured_at": "yesterday", "boot_id": "b", "mono_ns": 1, "synced": True}, "ISO 8601"),
        ({"captured_at": "2026-01-01T00:00:00", "boot_id": "b", "mono_ns": 1, "synced": True}, "UTC offset"),
        ({"captured_at": "2026-01-01T00:00:00+00:00", "boot_id": 5, "mono_ns": 1, "synced": True}, "boot_id"),
        ({"captured_at": "2026-01-01T00:00:00+00:00", "boot_id": "b", "mono_ns": "1", "synced": True}, "mono_ns"),
        ({"captured_at": "2026-01-01T00:00:00+00:00", "boot_id": "b", "mono_ns": 1, "synced": "yes"}, "synced"),
        (["not", "a", "dict"], "dict"),
    ],
)
def test_malformed_records_raise_clear_errors(tmp_path: Path, record, match: str) -> None:
    c = Machine(tmp_path, datetime(2026, 6, 1, 9, 0, tzinfo=UTC), synced=True).clock()
    with pytest.raises(ValueError, match=match):
        c.effective(record)


def test_unknown_policy(tmp_path: Path) -> None:
    c = Machine(tmp_path, datetime(2026, 6, 1, 9, 0, tzinfo=UTC), synced=True).clock()
    with pytest.raises(ValueError, match="policy"):
        c.effective(c.stamp(), policy="maybe")


def test_anchor_file_is_json_with_boot_order(tmp_path: Path) -> None:
    s = AnchorStore(str(tmp_path / "c.json"))
    s.register_boot("x")
    s.add_anchor("y", 7 * S, 2 * S)
    doc = json.loads((tmp_path / "c.json").read_text())
    assert doc["version"] == 1
    assert [b["boot_id"] for b in doc["boots"]] == ["x", "y"]


def test_build_floor_judges_our_clock_not_other_systems_punches(tmp_path):
    src = ClockSources(trust_rtc=True, boot_id_path=str(tmp_path / "b"),
                       wall_ns=lambda: 1_795_000_000 * 10**9, mono_ns=lambda: 10**9)
    (tmp_path / "b").write_text("boot\n")
    clock = Clock(src, AnchorStore(str(tmp_path / "c.json")),
                  build_time=datetime(2026, 11, 1, tzinfo=UTC))
    old = {"captured_at": "2024-03-01T08:00:00+00:00", "synced": True, "boot_id": "x", "mono_ns": 5}
    # the floor judges an untrusted stamp of our own clock only (issue 13: a synced one is sent)
    assert clock.effective(dict(old, source="reader", synced=False), policy="send").status == "held_insane"
    assert clock.effective(dict(old, source="reader")).status == "ok"
    assert clock.effective(dict(old, source="crosschex", boot_id="external", mono_ns=0)).status == "ok"


# ---------------------------------------------------------------- issue 13: held, always releasable


def test_anchored_time_before_the_build_date_is_sent(tmp_path: Path) -> None:
    # a scan stamped unsynced in a boot that later synchronised (an anchor corrects it),
    # with a true time before this version's build: real, so sent corrected
    m = Machine(tmp_path, datetime(2026, 5, 1, 8, 0, tzinfo=UTC), err_s=-3600)
    c = m.clock(build_time=datetime(2026, 5, 1, 12, 0, tzinfo=UTC))
    c.observe()
    rec, true = scan(m, c)
    m.advance(60)
    m.err, m.kernel = 0, True
    c.observe()
    e = c.effective(rec)
    assert (e.status, e.when) == ("corrected", true)


def test_wait_is_overdue_after_the_grace_period(tmp_path: Path) -> None:
    m = Machine(tmp_path, datetime(2026, 5, 10, 8, 0, tzinfo=UTC))
    c = m.clock(unsynced_grace_s=900)
    c.observe()
    rec, _ = scan(m, c)
    assert (c.effective(rec).status, c.effective(rec).overdue) == ("wait", False)
    m.advance(901)
    assert (c.effective(rec).status, c.effective(rec).overdue) == ("wait", True)


def test_release_sends_every_held_clock_status_as_captured(tmp_path: Path) -> None:
    m = Machine(tmp_path, datetime(2026, 6, 1, 9, 0, tzinfo=UTC), synced=True)
    c = m.clock(build_time=datetime(2026, 1, 1, tzinfo=UTC))
    c.observe()
    epoch = {"captured_at": "1970-01-01T00:00:05.000000+00:00", "boot_id": "old", "mono_ns": 5 * S,
             "synced": False}
    future = {"captured_at": "2027-06-01T09:00:00.000000+00:00", "boot_id": "old", "mono_ns": 5 * S,
              "synced": True}
    unsynced_past = dict(epoch, captured_at="2026-05-01T09:00:00.000000+00:00")
    # ("wait" released: test_send_policy_sends_current_boot_unsynced_after_grace)
    for rec, held in ((epoch, "held_insane"), (future, "held_insane"), (unsynced_past, "held_unsynced")):
        policy = "send" if rec is epoch else "hold"  # held, an epoch stamp waits for a release first
        assert (c.effective(rec, policy=policy).status, c.effective(rec, policy=policy).when) == (held, None)
        e = c.effective({**rec, "released": True})
        assert e.when == datetime.fromisoformat(rec["captured_at"]), rec
        assert e.status == ("insane_sent" if held == "held_insane" else "unsynced_sent")
