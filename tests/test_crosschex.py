"""CrossChex Cloud client against the local stand-in (real sockets on 127.0.0.1)."""

from __future__ import annotations

import json
import logging
import os
import socket
import stat
import threading
import traceback
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.crosschex.client import CrossChexClient
from agent.crosschex.wire import (
    CcRecord,
    CrossChexError,
    decode_envelope,
    parse_records_answer,
)
from standins.crosschex import CrossChexStandIn, make_record

KEY = "cc-key-0123456789abcdef"
SECRET = "cc-secret-S3cr3t-do-not-leak-7f2a"
BASE = datetime(2024, 3, 1, 8, 0, 0, tzinfo=UTC)
BEGIN = BASE - timedelta(days=1)
END = BASE + timedelta(days=3)


class FakeClock:
    """Injected sleep/monotonic/now: sleeping only advances the fake clocks."""

    def __init__(self, wall: datetime | None = None) -> None:
        self.mono = 1000.0
        self.wall = wall or datetime.now(UTC)
        self.sleeps: list[float] = []

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.mono += s
        self.wall += timedelta(seconds=s)

    def monotonic(self) -> float:
        return self.mono

    def now(self) -> datetime:
        return self.wall


def make_records(n: int) -> list[dict]:
    return [
        make_record(f"{i:05d}", BASE + timedelta(seconds=30 * i), first_name=f"F{i}", last_name=f"L{i}")
        for i in range(n)
    ]


def client_for(server: CrossChexStandIn, clock: FakeClock, **kw) -> CrossChexClient:
    kw.setdefault("min_interval_s", 30.0)
    return CrossChexClient(
        server.url,
        kw.pop("api_key", server.api_key),
        kw.pop("api_secret", server.api_secret),
        sleep=clock.sleep,
        monotonic=clock.monotonic,
        now=clock.now,
        connect_timeout=2.0,
        read_timeout=5.0,
        **kw,
    )


RECORDS_2500 = make_records(2500)  # shared: neither the stand-in nor the client mutates them


@pytest.fixture
def standin():
    with CrossChexStandIn(RECORDS_2500, api_key=KEY, api_secret=SECRET) as srv:
        yield srv


# --------------------------------------------------------------------------- paging


@pytest.mark.parametrize("wrapped", [False, True], ids=["plain", "code-data"])
def test_walks_every_page_at_1000_per_page(standin: CrossChexStandIn, wrapped: bool) -> None:
    standin.wrapped = wrapped
    clock = FakeClock()
    with client_for(standin, clock) as client:
        recs = list(client.records(BEGIN, END))
    assert [r.workno for r in recs] == [f"{i:05d}" for i in range(2500)]
    assert standin.calls == {"authorize.token": 1, "attendance.record": 3}
    pages = [(r["payload"]["page"], r["payload"]["per_page"]) for r in standin.requests[1:]]
    assert pages == [(1, 1000), (2, 1000), (3, 1000)]
    # min interval between the 4 consecutive calls, via the injected sleep
    assert clock.sleeps == [30.0, 30.0, 30.0]


def test_request_envelope(standin: CrossChexStandIn) -> None:
    clock = FakeClock()
    with client_for(standin, clock, min_interval_s=0) as client:
        list(client.records(BEGIN, END))
    tok_req, *rec_reqs = standin.requests
    assert tok_req["header"]["nameSpace"] == "authorize.token" and tok_req["header"]["nameAction"] == "token"
    assert tok_req["payload"] == {"api_key": KEY, "api_secret": SECRET}
    assert "authorize" not in tok_req
    ids = set()
    for req in standin.requests:
        h = req["header"]
        assert h["version"] == "1.0"
        ids.add(str(uuid.UUID(h["requestId"])))
        ts = datetime.fromisoformat(h["timestamp"])
        assert ts.utcoffset() == timedelta(0)
    assert len(ids) == len(standin.requests)
    for req in rec_reqs:
        assert req["header"]["nameSpace"] == "attendance.record" and req["header"]["nameAction"] == "getrecord"
        assert req["authorize"] == {"type": "token", "token": standin.issued[0]}
        assert req["payload"]["begin_time"] == "2024-02-29T08:00:00+00:00"
        assert req["payload"]["end_time"] == "2024-03-04T08:00:00+00:00"
        assert req["payload"]["order"] == "asc"


def test_small_pages_and_record_fields() -> None:
    recs = make_records(20)
    recs[3] = make_record("77", "2024-03-01T10:00:05+02:00", first_name="Ann", last_name="Lee",
                          serial="SN9", device_name="Door", checktype=None, card_number="0010597059")
    recs[4]["checktype"] = "129"
    recs[5]["employee"]["workno"] = 42
    with CrossChexStandIn(recs, api_key=KEY, api_secret=SECRET) as srv:
        with client_for(srv, FakeClock(), per_page=7, min_interval_s=0) as client:
            got = list(client.records(BEGIN, END))
    assert srv.calls["attendance.record"] == 3
    assert [r["payload"]["per_page"] for r in srv.requests[1:]] == [7, 7, 7]
    assert len(got) == 20
    r = got[3]
    assert r.checktime == datetime(2024, 3, 1, 8, 0, 5, tzinfo=UTC)
    assert r.checktime.tzinfo == UTC
    assert (r.workno, r.first_name, r.last_name, r.device_serial, r.device_name, r.checktype) == (
        "77", "Ann", "Lee", "SN9", "Door", None)
    assert r.raw["employee"]["card_number"] == "0010597059"
    assert got[4].checktype == 129 and got[0].checktype == 128
    assert got[5].workno == "42"


def test_empty_window_is_one_call(standin: CrossChexStandIn) -> None:
    with client_for(standin, FakeClock(), min_interval_s=0) as client:
        assert list(client.records(BASE - timedelta(days=9), BASE - timedelta(days=8))) == []
    assert standin.calls["attendance.record"] == 1


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="per_page"):
        CrossChexClient("https://x.invalid/", KEY, SECRET, per_page=1001)
    with pytest.raises(ValueError, match="url"):
        CrossChexClient("ftp://x.invalid/", KEY, SECRET)
    with pytest.raises(ValueError, match="api_secret") as ei:
        CrossChexClient("https://x.invalid/", KEY, " ")
    client = CrossChexClient("https://x.invalid/", KEY, SECRET)
    with pytest.raises(ValueError, match="aware"):
        next(client.records(datetime(2024, 1, 1), END))
    with pytest.raises(ValueError, match="after"):
        next(client.records(END, BEGIN))
    client.close()
    assert SECRET not in str(ei.value)


# --------------------------------------------------------------------------- tokens


def test_token_expires_in_the_middle_of_the_walk(standin: CrossChexStandIn) -> None:
    standin.expire_token_after_calls = 1
    clock = FakeClock()
    with client_for(standin, clock) as client:
        recs = list(client.records(BEGIN, END))
    assert [r.workno for r in recs] == [f"{i:05d}" for i in range(2500)]  # nothing lost or repeated
    assert len(set(recs)) == 2500
    assert standin.calls == {"authorize.token": 2, "attendance.record": 4}
    pages = [r["payload"]["page"] for r in standin.requests if r["header"]["nameSpace"] == "attendance.record"]
    assert pages == [1, 2, 2, 3]
    assert standin.requests[4]["authorize"]["token"] == standin.issued[1] != standin.issued[0]
    assert clock.sleeps == [30.0] * 5  # the interval holds for the refresh call too


def test_token_expires_twice_is_a_token_error(standin: CrossChexStandIn) -> None:
    for _ in range(2):
        standin.queue_fault("token_expires", namespace="attendance.record")
    with client_for(standin, FakeClock(), min_interval_s=0) as client:
        with pytest.raises(CrossChexError) as ei:
            list(client.records(BEGIN, END))
    assert ei.value.kind == "token"
    assert "TOKEN_EXPIRES" in str(ei.value)
    assert standin.calls == {"authorize.token": 2, "attendance.record": 2}


def test_token_reused_from_cache_across_instances(standin: CrossChexStandIn, tmp_path) -> None:
    cache = str(tmp_path / "crosschex-token.json")
    with client_for(standin, FakeClock(), token_cache=cache, min_interval_s=0) as a:
        assert len(list(a.records(BASE, BASE + timedelta(minutes=5)))) == 11
    assert stat.S_IMODE(os.stat(cache).st_mode) == 0o600
    assert json.loads(open(cache).read())["token"] == standin.issued[0]
    with client_for(standin, FakeClock(), token_cache=cache, min_interval_s=0) as b:
        assert b.token() == standin.issued[0]
        assert len(list(b.records(BASE, BASE + timedelta(minutes=5)))) == 11
    assert standin.calls["authorize.token"] == 1
    # another account must not reuse the cached token: it asks for its own (and is refused)
    with client_for(standin, FakeClock(), token_cache=cache, api_key="other-key-xyz", min_interval_s=0) as c:
        with pytest.raises(CrossChexError) as ei:
            c.token()
    assert ei.value.kind == "auth"
    assert standin.calls["authorize.token"] == 2


def test_token_refreshed_shortly_before_expiry(tmp_path) -> None:
    cache = str(tmp_path / "tok.json")
    t0 = datetime.now(UTC)
    with CrossChexStandIn(api_key=KEY, api_secret=SECRET, token_lifetime_s=3600) as srv:
        with client_for(srv, FakeClock(t0), token_cache=cache, min_interval_s=0) as a:
            first = a.token()
        with client_for(srv, FakeClock(t0 + timedelta(minutes=45)), token_cache=cache, min_interval_s=0) as b:
            assert b.token() == first  # 15 min left: still good
        with client_for(srv, FakeClock(t0 + timedelta(minutes=52)), token_cache=cache, min_interval_s=0) as c:
            second = c.token()  # 8 min left: inside the 10 min margin
            assert second != first
            assert c.token() == second  # memory cache
        assert srv.calls["authorize.token"] == 2


def test_corrupt_token_cache_is_ignored(standin: CrossChexStandIn, tmp_path, caplog) -> None:
    cache = tmp_path / "tok.json"
    cache.write_bytes(b"{not json")
    with client_for(standin, FakeClock(), token_cache=str(cache), min_interval_s=0) as client:
        assert client.token() == standin.issued[0]
    assert "ignoring unreadable CrossChex token cache" in caplog.text
    assert json.loads(cache.read_text())["token"] == standin.issued[0]


def test_token_answer_without_expires_still_works() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if body["header"]["nameSpace"] == "authorize.token":
            return httpx.Response(200, json={"header": {}, "payload": {"token": "tok-abcdef-123456"}})
        assert body["authorize"]["token"] == "tok-abcdef-123456"
        return httpx.Response(200, json={"header": {}, "payload": {"pageCount": 0, "list": []}})

    clock = FakeClock()
    with client_for_url("https://cc.invalid/", clock, transport=httpx.MockTransport(handler)) as client:
        assert list(client.records(BEGIN, END)) == []


def client_for_url(url: str, clock: FakeClock, **kw) -> CrossChexClient:
    kw.setdefault("min_interval_s", 0)
    return CrossChexClient(url, KEY, SECRET, sleep=clock.sleep, monotonic=clock.monotonic, now=clock.now, **kw)


# --------------------------------------------------------------------------- server refusals


def test_auth_error_is_clear(standin: CrossChexStandIn) -> None:
    wrong = "wrong-secret-should-not-leak-99"
    with client_for(standin, FakeClock(), api_secret=wrong) as client:
        with pytest.raises(CrossChexError) as ei:
            list(client.records(BEGIN, END))
    err = ei.value
    assert err.kind == "auth"
    assert "api_key/api_secret" in str(err) and "AUTH_ERROR" in str(err)
    assert "\n" not in str(err)
    text = "".join(traceback.format_exception(err)) + repr(err)
    assert wrong not in text and SECRET not in text
    assert standin.calls == {"authorize.token": 1}


def test_frequent_request_backs_off_exponentially(standin: CrossChexStandIn) -> None:
    for _ in range(3):
        standin.queue_fault("frequent", namespace="attendance.record")
    clock = FakeClock()
    with client_for(standin, clock, max_backoff_s=100) as client:
        recs = list(client.records(BASE, BASE + timedelta(minutes=10)))
    assert len(recs) == 21
    # 30: min interval before the first getrecord; then back-off 30, 60, 120 capped to 100
    assert clock.sleeps == [30.0, 30.0, 60.0, 100.0]
    assert standin.calls["attendance.record"] == 4


def test_frequent_request_gives_up_after_bounded_tries(standin: CrossChexStandIn) -> None:
    for _ in range(10):
        standin.queue_fault("frequent", namespace="attendance.record")
    clock = FakeClock()
    with client_for(standin, clock, rate_limit_retries=2) as client:
        with pytest.raises(CrossChexError) as ei:
            list(client.records(BEGIN, END))
    assert ei.value.kind == "rate_limited"
    assert "FREQUENT_REQUEST" in str(ei.value) and "3 tries" in str(ei.value)
    assert clock.sleeps == [30.0, 30.0, 60.0]
    assert standin.calls["attendance.record"] == 3


def test_http_429_counts_as_rate_limit() -> None:
    answers = iter([httpx.Response(429, text="slow down"),
                    httpx.Response(200, json={"header": {}, "payload": {"pageCount": 0, "list": []}})])
    clock = FakeClock()

    def handler(request: httpx.Request) -> httpx.Response:
        if json.loads(request.content)["header"]["nameSpace"] == "authorize.token":
            return httpx.Response(200, json={"header": {}, "payload": {"token": "tok-429-abcdef"}})
        return next(answers)

    with client_for_url("https://cc.invalid/", clock, transport=httpx.MockTransport(handler),
                        min_interval_s=5) as client:
        assert list(client.records(BEGIN, END)) == []
    assert clock.sleeps == [5.0, 5.0]


def test_server_side_min_interval_is_respected_in_real_time() -> None:
    with CrossChexStandIn(make_records(30), api_key=KEY, api_secret=SECRET, min_interval_s=0.1) as srv:
        with CrossChexClient(srv.url, KEY, SECRET, min_interval_s=0.15, per_page=10) as client:
            assert len(list(client.records(BEGIN, END))) == 30
    assert srv.calls == {"authorize.token": 1, "attendance.record": 3}  # no FREQUENT_REQUEST retries


# --------------------------------------------------------------------------- malformed answers


@pytest.mark.parametrize(
    ("fault", "kind", "needle"),
    [
        ("html", "bad_answer", "HTML"),
        ("truncated", "bad_answer", "not valid JSON"),
        ("no_pagecount", "bad_answer", "'pageCount' is missing"),
        ("not_object", "bad_answer", "JSON array"),
        ("html500", "http", "HTTP 500"),
        ("unknown_exception", "http", "SERVER_BUSY"),
    ],
)
@pytest.mark.parametrize("wrapped", [False, True], ids=["plain", "code-data"])
def test_malformed_answers_are_clear_errors(standin, fault, kind, needle, wrapped) -> None:
    standin.wrapped = wrapped
    standin.queue_fault(fault, namespace="attendance.record")
    with client_for(standin, FakeClock(), min_interval_s=0) as client:
        with pytest.raises(CrossChexError) as ei:
            list(client.records(BEGIN, END))
    assert ei.value.kind == kind
    assert needle in str(ei.value)
    assert "\n" not in str(ei.value)


def test_truncated_token_answer_leaks_nothing(standin: CrossChexStandIn) -> None:
    standin.queue_fault("truncated", namespace="authorize.token")
    with client_for(standin, FakeClock(), min_interval_s=0) as client:
        with pytest.raises(CrossChexError) as ei:
            client.token()
    assert ei.value.kind == "bad_answer"
    text = "".join(traceback.format_exception(ei.value))
    assert ei.value.__cause__ is None and ei.value.__suppress_context__
    assert SECRET not in text
    assert all(t[:20] not in text for t in standin.issued)


def test_naive_checktime_is_rejected_not_guessed() -> None:
    recs = make_records(3)
    recs[1]["checktime"] = "2024-03-01 08:00:30"
    with CrossChexStandIn(recs, api_key=KEY, api_secret=SECRET) as srv:
        with client_for(srv, FakeClock(), min_interval_s=0) as client:
            with pytest.raises(CrossChexError) as ei:
                list(client.records(BEGIN, END))
    assert ei.value.kind == "bad_answer"
    assert "list[1].checktime" in str(ei.value) and "no UTC offset" in str(ei.value)


def test_hostile_json() -> None:
    for body, needle in [
        (b"[" * 100_000, "nested too deeply"),
        (b'{"header":{},"payload":{"pageCount":' + b"9" * 5000 + b',"list":[]}}', "not usable JSON"),
        (b"", "empty"),
        (b"\xff\xfe{", "UTF-8"),
        (b'{"header":{},"payload":{"pageCount":true,"list":[]}}', "boolean"),
        (b'{"header":{},"payload":{"pageCount":1,"list":{}}}', "'list' is object"),
        (b'{"header":{},"payload":{"pageCount":1,"list":[{"checktime":"2024-03-01T00:00:00+00:00",'
         b'"employee":{"workno":[1]}}]}}', "workno is array"),
        (b'{"code":500,"data":null}', "code 500"),
    ]:
        with pytest.raises(CrossChexError) as ei:
            parse_records_answer(body)
        assert needle in str(ei.value), (body[:40], str(ei.value))


def test_both_shapes_decode_the_same() -> None:
    env = {"header": {"nameSpace": "attendance.record"}, "payload": {"pageCount": 0, "list": []}}
    plain = decode_envelope(json.dumps(env).encode())
    wrapped = decode_envelope(json.dumps({"code": 200, "data": env, "error": {}}).encode())
    assert plain == wrapped == (env["header"], env["payload"])


# --------------------------------------------------------------------------- network


def test_unreachable_server_is_a_network_error() -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with client_for_url(f"http://127.0.0.1:{port}/", FakeClock(), connect_timeout=1.0) as client:
        with pytest.raises(CrossChexError) as ei:
            client.token()
    assert ei.value.kind == "network" and "ConnectError" in str(ei.value)
    assert SECRET not in repr(ei.value)


def test_silent_server_times_out() -> None:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    conns: list[socket.socket] = []
    t = threading.Thread(target=lambda: conns.append(srv.accept()[0]), daemon=True)
    t.start()
    try:
        url = f"http://127.0.0.1:{srv.getsockname()[1]}/"
        with client_for_url(url, FakeClock(), read_timeout=0.3) as client:
            with pytest.raises(CrossChexError) as ei:
                client.token()
        assert ei.value.kind == "network" and "timed out" in str(ei.value)
    finally:
        for c in conns:
            c.close()
        srv.close()


# --------------------------------------------------------------------------- secrets


def test_secret_and_token_never_logged(standin: CrossChexStandIn, tmp_path, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    for name in ("httpx", "httpcore", "agent"):
        caplog.set_level(logging.DEBUG, logger=name)
    texts: list[str] = []
    standin.expire_token_after_calls = 1
    standin.queue_fault("frequent", namespace="attendance.record")
    with client_for(standin, FakeClock(), token_cache=str(tmp_path / "t.json"), min_interval_s=0) as client:
        assert len(list(client.records(BEGIN, END))) == 2500
        for fault in ("truncated", "html", "no_pagecount", "unknown_exception"):
            standin.queue_fault(fault, namespace="attendance.record")
            with pytest.raises(CrossChexError) as ei:
                list(client.records(BEGIN, END))
            texts += [str(ei.value), repr(ei.value), "".join(traceback.format_exception(ei.value))]
    standin.queue_fault("truncated", namespace="authorize.token")
    standin.expire_all_tokens()
    with client_for(standin, FakeClock(), min_interval_s=0) as other:
        with pytest.raises(CrossChexError) as ei:
            other.token()
        texts += [str(ei.value), "".join(traceback.format_exception(ei.value))]
    with client_for(standin, FakeClock(), min_interval_s=0, api_secret=SECRET + "-wrong") as bad:
        with pytest.raises(CrossChexError) as ei:
            list(bad.records(BEGIN, END))
        texts += [str(ei.value), "".join(traceback.format_exception(ei.value))]

    logged = caplog.text + "\n".join(r.getMessage() for r in caplog.records)
    assert "HTTP Request: POST" in logged  # httpx really logged at INFO
    assert "send_request_body" in logged  # httpcore really logged at DEBUG
    assert "token expired" in logged.lower() and "rate limit" in logged
    assert len(standin.issued) == 3
    everything = logged + "\n".join(texts)
    assert SECRET not in everything
    for tok in standin.issued:
        assert tok not in everything
        assert tok.split(".")[1][:16] not in everything


# --------------------------------------------------------------------------- fuzz

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
_record_like = st.fixed_dictionaries(
    {},
    optional={
        "checktime": st.sampled_from(["2024-03-01T08:00:00+00:00", "2024-03-01T08:00:00Z", "2024-03-01",
                                      "0001-01-01T00:00:00+05:00", "x"]) | _json_values,
        "employee": st.fixed_dictionaries({}, optional={"workno": _json_values, "first_name": _json_values}),
        "device": _json_values,
        "checktype": _json_values,
    },
)
_payloads = st.fixed_dictionaries(
    {},
    optional={
        "pageCount": st.integers(-3, 3) | _json_values,
        "list": st.lists(_record_like, max_size=4) | _json_values,
        "page": _json_values,
        "token": _json_values,
        "type": st.sampled_from(["TOKEN_EXPIRES", "AUTH_ERROR", "FREQUENT_REQUEST", "X"]),
    },
)
_headers = st.fixed_dictionaries({}, optional={"name": st.sampled_from(["Exception", "x"]) | _json_values})
_envelopes = st.builds(lambda h, p: {"header": h, "payload": p}, _headers | _json_values, _payloads | _json_values)
_answers = _envelopes | st.builds(lambda c, e: {"code": c, "data": e}, _json_values, _envelopes | _json_values)


def _check_parse(body: bytes) -> None:
    try:
        records, page_count = parse_records_answer(body, page=1)
    except CrossChexError as exc:
        assert exc.kind in {"auth", "rate_limited", "bad_answer", "http", "token"}
        assert "\n" not in str(exc)
        return
    assert isinstance(page_count, int) and page_count >= 0
    for r in records:
        assert isinstance(r, CcRecord) and r.checktime.utcoffset() == timedelta(0)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_parse_bytes(body: bytes) -> None:
    _check_parse(body)


@settings(max_examples=200, deadline=None)
@given(_answers | _json_values)
def test_fuzz_parse_structured(answer) -> None:
    _check_parse(json.dumps(answer).encode())


@settings(max_examples=100, deadline=None)
@given(st.lists(_answers | _json_values | st.binary(max_size=60), min_size=1, max_size=4))
def test_fuzz_client_end_to_end(answers) -> None:
    """Whatever the server says, records() yields CcRecords or raises CrossChexError."""
    queue = list(answers)

    def handler(request: httpx.Request) -> httpx.Response:
        if json.loads(request.content)["header"]["nameSpace"] == "authorize.token" and len(queue) % 2:
            return httpx.Response(200, json={"header": {}, "payload": {"token": "fuzz-token-123456"}})
        a = queue.pop(0) if queue else {"header": {}, "payload": {"pageCount": 0, "list": []}}
        return httpx.Response(200, content=a if isinstance(a, bytes) else json.dumps(a).encode())

    clock = FakeClock()
    with client_for_url("http://cc.invalid/", clock, transport=httpx.MockTransport(handler),
                        rate_limit_retries=2) as client:
        try:
            for r in client.records(BEGIN, END):
                assert isinstance(r, CcRecord)
        except CrossChexError as exc:
            assert exc.kind in {"auth", "rate_limited", "bad_answer", "http", "token"}


def test_every_answer_hands_its_date_to_the_clock(standin: CrossChexStandIn) -> None:
    """The daemon's reconciliation teaches the clock too (a plain-HTTP stand-in: never authenticated)."""
    from agent.clock.httpdate import parse_http_date

    samples: list = []
    ticks = iter(range(0, 10**12, 1000))
    with client_for(standin, FakeClock(), on_answer=samples.append, mono_ns=lambda: next(ticks)) as client:
        list(client.records(BEGIN, END))
    assert len(samples) == 4  # the token and three pages
    assert all(parse_http_date(s.date) and not s.authenticated and s.sent_ns < s.received_ns for s in samples)
    assert {s.origin for s in samples} == {"127.0.0.1"}
