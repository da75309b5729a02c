"""Pure reconciliation of CrossChex records against local scans."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.crosschex.matching import (
    LocalScan,
    MappingError,
    Report,
    load_mapping,
    reconcile,
    tag_for,
)
from agent.crosschex.wire import CcRecord

T0 = datetime(2024, 3, 1, 8, 0, 0, tzinfo=UTC)


def cc(workno: str, seconds: float, **raw_employee) -> CcRecord:
    t = T0 + timedelta(seconds=seconds)
    raw = {"checktime": t.isoformat(), "employee": {"workno": workno, **raw_employee}}
    return CcRecord(t, workno, "", "", "SN1", "Door", 128, raw)


def scan(sid: str, tag: str, seconds: float) -> LocalScan:
    return LocalScan(sid, tag, T0 + timedelta(seconds=seconds))


def ids(report: Report) -> tuple[list, list, list, list]:
    return (
        [(r.workno, r.checktime, s.id) for r, s in report.matched],
        [(r.workno, tag) for r, tag in report.only_crosschex],
        [s.id for s in report.only_local],
        [r.workno for r in report.unmapped],
    )


# --------------------------------------------------------------------------- matching


def test_known_overlaps_give_exact_counts() -> None:
    records = [cc("A", 0), cc("A", 3600), cc("B", 10), cc("C", 20), cc("", 30), cc("D", 40)]
    local = [scan("s1", "A", 5), scan("s2", "B", -50), scan("s3", "C", 500), scan("s4", "E", 0),
             scan("s5", "A", 3600 + 59)]
    rep = reconcile(records, local)
    assert (len(rep.matched), len(rep.only_crosschex), len(rep.only_local), len(rep.unmapped)) == (3, 2, 2, 1)
    m, only_cc, only_local, _ = ids(rep)
    assert [(w, sid) for w, _, sid in m] == [("A", "s1"), ("B", "s2"), ("A", "s5")]
    assert only_cc == [("C", "C"), ("D", "D")]
    assert only_local == ["s4", "s3"]  # time order


def test_window_edges_are_exact() -> None:
    rep = reconcile([cc("A", 0), cc("B", 0), cc("C", 0)],
                    [scan("a", "A", 60), scan("b", "B", -60), scan("c", "C", 61)], match_seconds=60)
    assert [(r.workno, s.id) for r, s in rep.matched] == [("A", "a"), ("B", "b")]
    assert [t for _, t in rep.only_crosschex] == ["C"] and [s.id for s in rep.only_local] == ["c"]
    rep = reconcile([cc("A", 0)], [scan("a", "A", 60.000001)], match_seconds=60)
    assert rep.matched == [] and len(rep.only_local) == 1
    rep = reconcile([cc("A", 0)], [scan("a", "A", 0)], match_seconds=0)
    assert len(rep.matched) == 1


def test_one_to_one_greedy_by_closest_time() -> None:
    # two records compete for one scan: the closer one wins, the other stays unmatched
    rep = reconcile([cc("A", 0), cc("A", 40)], [scan("s", "A", 30)])
    assert [(r.checktime, s.id) for r, s in rep.matched] == [(T0 + timedelta(seconds=40), "s")]
    assert [r.checktime for r, _ in rep.only_crosschex] == [T0]
    # two scans for one record: the closer one is used, the other is only_local
    rep = reconcile([cc("A", 0)], [scan("far", "A", -50), scan("near", "A", 20)])
    assert [s.id for _, s in rep.matched] == ["near"] and [s.id for s in rep.only_local] == ["far"]
    # a chain: greedy pairs the closest first, then the rest
    rep = reconcile([cc("A", 0), cc("A", 100)], [scan("x", "A", 50), scan("y", "A", 95)])
    assert sorted((r.checktime.second, s.id) for r, s in rep.matched) == [(0, "x"), (40, "y")]


def test_ties_are_deterministic() -> None:
    records = [cc("A", 0), cc("A", 20)]
    local = [scan("s", "A", 10)]  # equally close to both
    first = ids(reconcile(records, local))
    for _ in range(5):
        assert ids(reconcile(records, local)) == first
    assert first[0] == [("A", T0, "s")]  # earliest record wins the tie
    # one record equally close to two scans: the earlier scan is taken, which
    # leaves the later one for the next record, whatever the input order
    records = [cc("A", 0), cc("A", 20)]
    local = [scan("early", "A", -10), scan("late", "A", 10)]
    for recs, loc in [(records, local), (records[::-1], local[::-1])]:
        rep = reconcile(recs, loc)
        assert [(r.checktime, s.id) for r, s in rep.matched] == [
            (T0, "early"), (T0 + timedelta(seconds=20), "late")]


def test_tags_compare_case_and_space_insensitively() -> None:
    rep = reconcile([cc(" 00a1b2c3 ", 0)], [scan("s", "00A1B2C3", 1)])
    assert len(rep.matched) == 1


def test_second_push_adds_nothing() -> None:
    records = [cc("A", 0), cc("B", 100), cc("C", 200)]
    local = [scan("s1", "A", 2)]
    first = reconcile(records, local)
    assert [t for _, t in first.only_crosschex] == ["B", "C"]
    pushed = [LocalScan(f"cc-{i}", tag, r.checktime) for i, (r, tag) in enumerate(first.only_crosschex)]
    second = reconcile(records, local + pushed)
    assert second.only_crosschex == [] and len(second.matched) == 3 and second.only_local == []


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        reconcile([cc("A", 0)], [LocalScan("s", "A", datetime(2024, 3, 1, 8, 0))])
    with pytest.raises(ValueError, match="match_seconds"):
        reconcile([], [], match_seconds=-1)


# --------------------------------------------------------------------------- tags and mapping


def test_unmapped_are_reported_never_guessed() -> None:
    records = [cc("7", 0), cc("8", 10), cc("", 20)]
    rep = reconcile(records, [scan("s", "TAG7", 0), scan("t", "8", 10)], mapping={"7": "TAG7"})
    assert [(r.workno, s.id) for r, s in rep.matched] == [("7", "s")]
    # workno 8 is absent from the mapping: not matched to the local tag "8", reported instead
    assert [r.workno for r in rep.unmapped] == ["8", ""]
    assert [s.id for s in rep.only_local] == ["t"]


def test_tag_for() -> None:
    r = cc("42", 0, card_number="0010597059", badge=123456, flag=True, empty="  ")
    assert tag_for(r) == "42"
    assert tag_for(r, tag_from="employee.card_number") == "0010597059"
    assert tag_for(r, tag_from="employee.badge") == "123456"
    assert tag_for(r, tag_from="employee.flag") is None
    assert tag_for(r, tag_from="employee.empty") is None
    assert tag_for(r, tag_from="employee.missing") is None
    assert tag_for(r, tag_from="device.serial_number") is None  # not in raw
    assert tag_for(r, tag_from="employee.card_number", mapping={"42": "M"}) == "M"  # mapping wins
    assert tag_for(r, mapping={"43": "M"}) is None
    assert tag_for(cc("", 0)) is None
    rep = reconcile([r], [scan("s", "0010597059", 30)], tag_from="employee.card_number")
    assert len(rep.matched) == 1


def test_load_mapping(tmp_path) -> None:
    p = tmp_path / "map.csv"
    p.write_bytes("\ufeffworkno,rfidTag\r\n1, 0010597059 \r\n\r\n# comment\r\n2,00A1B2C3,\r\n1,0010597059\r\n".encode())
    assert load_mapping(str(p)) == {"1": "0010597059", "2": "00A1B2C3"}
    p.write_text('7,ABC\n"8",DEF\n')
    assert load_mapping(str(p)) == {"7": "ABC", "8": "DEF"}


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("workno,rfidTag\n1,A\n2,B,C\n", ":3: expected 'workno,rfidTag', got 3 cells"),
        ("1,A\n2\n", ":2: expected 'workno,rfidTag', got 1 cells"),
        ("1,A\n,B\n", ":2: empty workno"),
        ("1,A\n2, \n", ":2: expected"),  # trailing empty cell dropped -> one cell
        ("1,A\n1,B\n", ":2: workno '1' already mapped to another tag on line 1"),
        ("1," + "x" * 300 + "\n", ":1: cell longer"),
    ],
)
def test_load_mapping_errors_name_the_line(tmp_path, content: str, needle: str) -> None:
    p = tmp_path / "map.csv"
    p.write_text(content)
    with pytest.raises(MappingError) as ei:
        load_mapping(str(p))
    assert str(ei.value).startswith(str(p))
    assert needle in str(ei.value)


def test_load_mapping_unreadable(tmp_path) -> None:
    with pytest.raises(MappingError, match="cannot read"):
        load_mapping(str(tmp_path / "missing.csv"))
    p = tmp_path / "bin.csv"
    p.write_bytes(b"1,\xff\xfe\n")
    with pytest.raises(MappingError, match="not UTF-8"):
        load_mapping(str(p))


def test_mapping_file_end_to_end(tmp_path) -> None:
    p = tmp_path / "map.csv"
    p.write_text("workno,rfidTag\n100,0010597059\n101,0000000777\n")
    mapping = load_mapping(str(p))
    rep = reconcile([cc("100", 0), cc("101", 5), cc("102", 9)], [scan("s", "0010597059", -3)], mapping=mapping)
    assert ids(rep)[0] == [("100", T0, "s")]
    assert ids(rep)[1] == [("101", "0000000777")]
    assert ids(rep)[3] == ["102"]


# --------------------------------------------------------------------------- properties

_tags = st.sampled_from(["A", "B", "C", ""])
_secs = st.integers(-200, 200)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(_tags, _secs), max_size=12), st.lists(st.tuples(_tags, _secs), max_size=12),
       st.integers(0, 90), st.randoms(use_true_random=False))
def test_reconcile_properties(cc_spec, local_spec, window, rnd: random.Random) -> None:
    records = [cc(t, s) for t, s in cc_spec]
    local = [scan(f"s{i}", t or "Z", s) for i, (t, s) in enumerate(local_spec)]
    rep = reconcile(records, local, match_seconds=window)
    # every input lands in exactly one bucket
    assert len(rep.matched) + len(rep.only_crosschex) + len(rep.unmapped) == len(records)
    assert len(rep.matched) + len(rep.only_local) == len(local)
    assert len({id(s) for _, s in rep.matched} | {id(s) for s in rep.only_local}) == len(local)
    assert all(r.workno == "" for r in rep.unmapped)
    for r, s in rep.matched:
        assert r.workno == s.tag and abs(r.checktime - s.when) <= timedelta(seconds=window)
    # maximal: no leftover record/scan pair could still have been matched
    for r, tag in rep.only_crosschex:
        for s in rep.only_local:
            assert not (s.tag == tag and abs(r.checktime - s.when) <= timedelta(seconds=window))
    # the count of matches does not depend on the input order
    shuffled_cc, shuffled_local = records[:], local[:]
    rnd.shuffle(shuffled_cc)
    rnd.shuffle(shuffled_local)
    again = reconcile(shuffled_cc, shuffled_local, match_seconds=window)
    def pairs(report: Report) -> list:
        return sorted((r.workno, r.checktime, s.when) for r, s in report.matched)

    assert pairs(again) == pairs(rep)
