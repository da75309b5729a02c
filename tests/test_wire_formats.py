"""Answers read as a real PHP/Laravel server writes them: classify() (pure) and
IflowClient.send against the stand-in's echo, field and object modes over HTTP."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.delivery.client import DeliveryError, IflowClient
from agent.delivery.wire import AnswerError, Item, Outcome, answer_words, classify
from standins.iflow import IflowStandin

TOKEN = "tok-SECRET-formats-42"
DUP = "Nu se poate adăuga - prezență duplicată: 53201"


def res(date, time_, tag, **fields) -> dict:
    out = {"date": date, "time": time_, "rfidTag": tag, "errorMsg": "",
           "error_authenticate": "", "error_check_in_out": "", "error_csv": ""}
    out.update(fields)
    return out


def raw(results) -> bytes:
    return json.dumps(results, ensure_ascii=False).encode()


ITEM = Item("k", "0012345678", "2026-12-01", "08:05:07")


# ------------------------------------------------------------- normalised echoes

@pytest.mark.parametrize("date", ["2026-12-01", "2026/12/01", "2026.12.01", "2026-12-1", "01.12.2026",
                                  "01/12/2026", "1.12.2026", "01-12-2026", "20261201", 20261201,
                                  "2026-12-01 00:00:00", "2026-12-01T08:05:00Z", "2026-12-01T00:00:00.000000Z",
                                  " 2026-12-01 "])
@pytest.mark.parametrize("time_", ["08:05:07", "8:05:07", "08:05", "8:05", "08:05:07.000000", "2026-12-01 08:05:07",
                                   "2026-12-01T08:05:07"])
@pytest.mark.parametrize("tag", ["0012345678", "12345678", 12345678, " 0012345678 "])
def test_every_echo_format_matches(date, time_, tag):
    [out] = classify([ITEM], raw([res(date, time_, tag)]))
    assert out == Outcome("k", "delivered", None)


@pytest.mark.parametrize("date, time_, tag", [
    ("12/01/2026", "08:05:07", "0012345678"),  # month first is never read: 12 January
    ("2026-12-02", "08:05:07", "0012345678"),
    ("2026-12-01", "08:05:08", "0012345678"),
    ("2026-12-01", "8:06", "0012345678"),
    ("2026-12-01", "08:05:07", "0012345679"),
    ("2026-12-01", "08:05:07", 12345678.0),  # a float never matches
    ("2026-12-01", "08:05:07", "A0012345678"),
    ("2026-12-01", None, "0012345678"),
    ("2026-12-01", "2026-12-01T08:05:07Z", "0012345678"),  # a time with a zone: maybe another instant
    ("2026-12-01", "08:05:07+02:00", "0012345678"),
])
def test_a_different_echo_does_not_match(date, time_, tag):
    [out] = classify([ITEM], raw([res(date, time_, tag)]))
    assert out.state == "pending" and "no result for this record" in out.message


def test_a_tag_that_is_not_all_digits_compares_as_a_string():
    items = [Item("a", "00AB", "2026-12-01", "08:00:00")]
    assert classify(items, raw([res("2026-12-01", "08:00:00", "AB")]))[0].state == "pending"
    assert classify(items, raw([res("2026-12-01", "08:00:00", " 00AB")]))[0].state == "delivered"


def test_null_tag_is_the_empty_tag():
    items = [Item("a", "", "2026-12-01", "08:00:00")]
    [out] = classify(items, raw([res("2026-12-01", "08:00:00", None, error_authenticate="Niciun angajat: ")]))
    assert out.state == "rejected"


def test_first_in_order_then_by_key_with_loose_keys_consumed_in_order():
    items = [Item("a", "1", "2026-12-01", "08:05:01"), Item("b", "1", "2026-12-01", "08:05:02"),
             Item("c", "2", "2026-12-01", "09:00:00")]
    # no seconds: a and b collide under the looser key; result 1 matches record 1 in place
    answer = [res("01.12.2026", "9:00", 2), res("01.12.2026", "8:05", 1, error_check_in_out=DUP),
              res("01.12.2026", "8:05", 1)]
    out = classify(items, raw(answer))
    assert [o.state for o in out] == ["delivered", "duplicate", "delivered"]
    # none in place: colliding records take the loose results in order
    items.append(Item("d", "3", "2026-12-01", "10:00:00"))
    answer = [res("2026-12-01", "09:00:00", "2"), res("2026-12-01", "10:00:00", "3"),
              res("2026-12-01", "8:05", "1", error_check_in_out=DUP), res("2026-12-01", "8:05", "1")]
    out = classify(items, raw(answer))
    assert [o.state for o in out] == ["duplicate", "delivered", "delivered", "delivered"]


def test_an_exact_key_wins_over_a_loose_one():
    items = [Item("a", "1", "2026-12-01", "08:05:01"), Item("b", "1", "2026-12-01", "08:05:02")]
    answer = [res("2026-12-01", "08:05", "1", error_csv="loose"), res("2026-12-01", "08:05:01", "1")]
    out = classify(items, raw(answer))
    assert out[0] == Outcome("a", "delivered", None)
    assert out[1] == Outcome("b", "rejected", "error_csv: loose")


def test_result_i_for_record_i_when_it_matches_under_normalisation():
    # identical normalised keys: position decides, not the first of the key
    items = [Item("a", "7", "2026-12-01", "08:00:00"), Item("b", "07", "2026-12-01", "08:00:00")]
    answer = [res("2026-12-01", "8:00:00", 7, error_csv="first"), res("2026-12-01", "8:00:00", 7)]
    out = classify(items, raw(answer))
    assert [o.message for o in out] == ["error_csv: first", None]


def test_unmatched_message_carries_a_redacted_excerpt():
    from agent import redact

    redact.register_secret(TOKEN)
    items = [Item("a", "1", "2026-12-01", "08:00:00")]
    [out] = classify(items, raw([res("2026-12-01", "08:00:00", "2", note=TOKEN)]))
    assert out.state == "pending"
    assert out.message.startswith("iFlow's answer has no result for this record (answer starts: '")
    assert TOKEN not in out.message and len(out.message) < 250


# ------------------------------------------------------------------ field rules

@pytest.mark.parametrize("extra, state, message", [
    ({"error_code": 0}, "delivered", None),
    ({"error_code": 0.0, "error_x": None, "error_y": False, "error_z": [], "error_w": {}}, "delivered", None),
    ({"error_code": "0", "error_x": "   "}, "delivered", None),
    ({"error_code": 422}, "rejected", "error_code: 422"),
    ({"error_code": True}, "rejected", "error_code: true"),
    ({"error_csv": ["", "Data greșită"]}, "rejected", "error_csv: Data greșită"),
    ({"error_csv": {"date": ["greșită"]}}, "rejected", "error_csv: date: greșită"),
    ({"errorMsg": "Cartela blocata"}, "rejected", "errorMsg: Cartela blocata"),
    ({"errorMsg": "  "}, "delivered", None),
    ({"errorMsg": None}, "delivered", None),
    ({"errorMsg": "x", "error_check_in_out": DUP}, "rejected", f"errorMsg: x; error_check_in_out: {DUP}"),
])
def test_error_field_values(extra, state, message):
    item = Item("k", "1", "2026-12-01", "08:00:00")
    [out] = classify([item], raw([res("2026-12-01", "08:00:00", "1", **extra)]))
    assert (out.state, out.message) == (state, message)


def test_errormsg_alone_is_no_proof_but_a_non_empty_one_is_a_rejection():
    item = Item("k", "1", "2026-12-01", "08:00:00")
    [out] = classify([item], raw([{"date": "2026-12-01", "time": "08:00:00", "rfidTag": "1", "errorMsg": ""}]))
    assert out.state == "pending" and "no error_* field" in out.message
    [out] = classify([item], raw([{"date": "2026-12-01", "time": "08:00:00", "rfidTag": "1", "errorMsg": "nu"}]))
    assert out == Outcome("k", "rejected", "errorMsg: nu")


# ---------------------------------------------------------------- object answers

@pytest.mark.parametrize("value, words", [
    ({"message": "Unauthenticated."}, 'message: "Unauthenticated."'),
    ({"success": False, "error": "Token invalid"}, 'error: "Token invalid"; success: false'),
    ({"success": False, "data": []}, "success: false"),
    ({"data": [], "errors": {"csv_data": ["required"]}}, 'errors: {"csv_data": ["required"]}'),
    ({}, "an empty object"),
    ({"foo": 1, "bar": 2}, 'members "foo", "bar"'),
])
def test_an_object_answer_carries_the_servers_words(value, words):
    item = Item("k", "1", "2026-12-01", "08:00:00")
    with pytest.raises(AnswerError) as info:
        classify([item], raw(value))
    assert info.value.reason == f"not a list (JSON object): {words}"
    assert info.value.excerpt.startswith("{")


def test_a_laravel_resource_envelope_is_read_as_the_list():
    items = [Item("a", "1", "2026-12-01", "08:00:00"), Item("b", "2", "2026-12-01", "08:00:00")]
    value = {"data": [res("2026-12-01", "08:00:00", "1"), res("2026-12-01", "08:00:00", "2", error_csv="x")],
             "meta": {"count": 2}}
    assert [o.state for o in classify(items, raw(value))] == ["delivered", "rejected"]
    with pytest.raises(AnswerError):
        classify(items, raw({"data": value["data"][:1]}))  # still one result per record


def test_answer_words():
    assert answer_words(b'{"message": "Server Error"}') == 'message: "Server Error"'
    assert answer_words(b"<html><head><title>Server Error</title></head></html>") == "Server Error"
    assert answer_words(b"plain text") is None and answer_words(b"[1]") is None and answer_words(b"") is None


# ------------------------------------------------- against the stand-in, over HTTP

@pytest.fixture
def server():
    with IflowStandin(token=TOKEN) as s:
        yield s


def client_for(server: IflowStandin) -> IflowClient:
    return IflowClient(server.url, TOKEN, "1.0", connect_timeout=2, read_timeout=2)


def batch(n: int, day: str = "2026-12-01") -> list[Item]:
    return [Item(f"r{i}", f"{i % 7:010d}", day, f"{8 + i // 60:02d}:{i % 60:02d}:{i % 60:02d}") for i in range(n)]


@pytest.mark.parametrize("echo, date_format", [
    ({"tag_number"}, None), ({"hour_no_zero"}, None), ({"no_seconds"}, None), ({"reversed"}, None),
    (set(), "%d.%m.%Y"), (set(), "%Y/%m/%d"), (set(), "%d/%m/%Y"), (set(), "%Y-%m-%d 00:00:00"),
    (set(), "%Y-%m-%dT00:00:00.000000Z"),
    ({"tag_number", "hour_no_zero", "no_seconds", "reversed"}, "%d.%m.%Y"),
])
def test_every_record_delivered_once_whatever_the_echo(server, echo, date_format):
    server.echo, server.echo_date = echo, date_format
    items = batch(30)
    with client_for(server) as c:
        out = c.send(items)
        assert [o.state for o in out] == ["delivered"] * 30
        assert [o.state for o in c.send(items)] == ["duplicate"] * 30
    assert server.stored_count == 30 and server.requests == 2


def test_error_code_zero_and_errormsg_over_http(server):
    server.extra_fields = {"error_code": 0}
    server.error_msgs = {"0000000003": "Cartela blocata"}
    with client_for(server) as c:
        out = c.send(batch(5))
    assert [o.state for o in out] == ["delivered"] * 3 + ["rejected", "delivered"]
    assert out[3].message == "errorMsg: Cartela blocata"
    assert server.stored_count == 4


def test_wrapped_results_over_http(server):
    server.wrap_data = True
    with client_for(server) as c:
        assert [o.state for o in c.send(batch(3))] == ["delivered"] * 3


@pytest.mark.parametrize("value, words", [
    ({"message": "Unauthenticated."}, 'message: "Unauthenticated."'),
    ({"success": False, "error": "Token invalid"}, 'error: "Token invalid"; success: false'),
])
def test_object_answers_over_http(server, value, words):
    server.object_answer = value
    with client_for(server) as c, pytest.raises(DeliveryError) as info:
        c.send(batch(2))
    err = info.value
    assert (err.kind, err.status, err.reached) == ("bad_answer", 200, True)
    assert str(err).endswith(f"not a list (JSON object): {words}")
    assert err.excerpt == json.dumps(value, separators=(",", ":"))
    assert server.stored_count == 0


@pytest.mark.parametrize("style, words", [("json", 'message: "Server Error"'), ("html", "Server Error"),
                                          ("debug", 'message: "SQLSTATE[22001]')])
def test_a_poison_record_fails_the_whole_request_with_laravels_words(server, style, words):
    server.poison_longer_than, server.error_pages = 12, style
    items = batch(4)
    items[2] = items[2]._replace(tag="9" * 40)
    with client_for(server) as c:
        with pytest.raises(DeliveryError) as info:
            c.send(items)
        err = info.value
        assert (err.kind, err.status, err.reached) == ("http", 500, True)
        assert f"answered HTTP 500: {words}" in str(err) and err.excerpt
        assert server.stored_count == 0
        assert [o.state for o in c.send(items[:2] + items[3:])] == ["delivered"] * 3


def test_a_poison_record_422_and_stores_before(server):
    server.poison_tags, server.poison_status, server.poison_stores_before = {"0000000002"}, 422, True
    with client_for(server) as c, pytest.raises(DeliveryError) as info:
        c.send(batch(4))
    err = info.value
    assert (err.kind, err.status) == ("http", 422)
    assert 'message: "The selected csv_data.2.rfidTag is invalid."' in str(err)
    assert '"errors"' in err.excerpt and server.stored_count == 2


@pytest.mark.parametrize("status", [500, 503])
def test_outage_every_request_fails(server, status):
    server.outage = status
    with client_for(server) as c:
        for _ in range(3):
            with pytest.raises(DeliveryError) as info:
                c.send(batch(2))
            assert info.value.status == status and info.value.excerpt.startswith('{"message"')
        server.outage = None
        assert [o.state for o in c.send(batch(2))] == ["delivered"] * 2
    assert server.requests == 4


def test_an_empty_body_is_still_shown(server):
    server.faults.append("204")
    with client_for(server) as c, pytest.raises(DeliveryError) as info:
        c.send(batch(1))
    assert (info.value.status, info.value.excerpt) == (204, "(empty answer)")


# ------------------------------------------------------------------- property


_DATE_FORMATS = ["%Y-%m-%d", "%Y/%m/%d", "%d.%m.%Y", "%d/%m/%Y", "%Y-%m-%d 00:00:00", "%Y-%m-%dT00:00:00.000000Z"]


@settings(max_examples=150, deadline=None)
@given(keys=st.lists(st.tuples(st.integers(1, 28), st.integers(0, 23), st.integers(0, 59), st.integers(0, 59),
                               st.integers(0, 99)), min_size=1, max_size=12, unique=True),
       data=st.data())
def test_each_record_gets_its_own_result_whatever_the_echo(keys, data):
    """Distinct records, echoed in any mix of formats and any order (seconds
    dropped only where no other record shares the HH:MM): each record gets
    the result that was written for it."""
    import datetime as dt

    items = [Item(f"k{i}", f"{tag:04d}", f"2026-11-{d:02d}", f"{h:02d}:{m:02d}:{s:02d}")
             for i, (d, h, m, s, tag) in enumerate(keys)]
    minutes = [(it.date, it.time[:5], it.tag) for it in items]
    answer = []
    for i, it in enumerate(items):
        day = dt.date.fromisoformat(it.date).strftime(data.draw(st.sampled_from(_DATE_FORMATS)))
        time_ = it.time
        if minutes.count(minutes[i]) == 1 and data.draw(st.booleans()):
            time_ = time_[:5]
        if data.draw(st.booleans()):
            time_ = time_.removeprefix("0")
        tag = int(it.tag) if data.draw(st.booleans()) else it.tag
        answer.append(res(day, time_, tag, error_csv=f"mark {i}"))
    order = data.draw(st.permutations(range(len(items))))
    out = classify(items, raw([answer[j] for j in order]))
    assert [o.message for o in out] == [f"error_csv: mark {i}" for i in range(len(items))]


def test_a_time_echoed_in_utc_never_takes_another_records_result():
    # Two scans of one card; the server echoes the times in UTC (local is UTC+2):
    # 04:05Z is a refusal of 06:05 local, 06:05Z an OK of 08:05 local. Matched by
    # its written time, the refusal would land on the record of 08:05 and the OK
    # on 06:05: neither may be matched.
    a = Item("a", "12", "2026-12-01", "06:05:00")
    b = Item("b", "12", "2026-12-01", "08:05:00")
    refused = dict(res("2026-12-01", "2026-12-01T04:05:00.000000Z", "12"), error_authenticate="no")
    ok = res("2026-12-01", "2026-12-01T06:05:00.000000Z", "12")
    outs = classify([a, b], raw([refused, ok]))
    assert [o.state for o in outs] == ["pending", "pending"]
