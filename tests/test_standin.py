"""Tests for standins.iflow: the local iFlow stand-in, spoken to with the
standard library's http.client (independent of agent.delivery.client)."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import pytest

from standins.iflow import ENDPOINT, IflowStandin

TOKEN = "tok-SECRET-9f8e7d"
ROOT = Path(__file__).resolve().parents[1]


def rec(tag: str, date: str = "2024-03-04", time_: str = "08:00:00") -> dict:
    return {"date": date, "time": time_, "rfidTag": tag, "errorMsg": ""}


def get(url: str, records: object = None, token: str = TOKEN, *, raw_query: str | None = None,
        body: bytes | None = None, path: str = ENDPOINT) -> tuple[int, dict[str, str], bytes]:
    parts = urlsplit(url)
    query = raw_query
    if query is None:
        params = {"access_token": token, "version": "1.0"}
        if records is not None:
            params["csv_data"] = json.dumps(records, separators=(",", ":"))
        query = urlencode(params)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5)
    try:
        conn.request("GET", f"{path}?{query}", body=body)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


@pytest.fixture
def standin():
    with IflowStandin(token=TOKEN, known_cards={"1", "2"}, hang_seconds=5.0) as s:
        yield s


def test_answers_follow_the_contract(standin):
    records = [
        rec("1"),
        rec("2", time_="08:00:01"),
        rec("9", time_="08:00:02"),  # unknown card
        rec("", time_="08:00:03"),  # empty tag
        rec("1"),  # duplicate of the first, inside the same batch
        rec("1", date="2024-02-30"),  # no such day
        rec("1", time_="24:00:00"),
        rec("1", time_="8:00:00"),
        {"date": "2024-03-04", "time": 80000, "rfidTag": "1"},
    ]
    status, headers, raw = get(standin.url, records)
    assert status == 200 and headers["content-type"].startswith("application/json")
    results = json.loads(raw)
    assert [(r["date"], r["time"], r["rfidTag"]) for r in results] == [
        (r["date"], r["time"], r["rfidTag"]) for r in records
    ]
    assert all(set(r) >= {"error_authenticate", "error_check_in_out", "error_csv", "errorMsg"} for r in results)
    errors = [(r["error_authenticate"], r["error_check_in_out"], r["error_csv"]) for r in results]
    assert errors[0] == errors[1] == ("", "", "")
    assert errors[2][0] == "Niciun angajat nu este asociat acestei cartele de tip RFID: 9"
    assert errors[3][0] == "Niciun angajat nu este asociat acestei cartele de tip RFID: "
    first_id = standin.stored[0]["id"]
    assert errors[4] == ("", f"Nu se poate adăuga - prezență duplicată: {first_id}", "")
    for e in errors[5:]:
        assert e[0] == e[1] == "" and e[2]
    assert standin.stored == [
        {"date": "2024-03-04", "time": "08:00:00", "rfidTag": "1", "id": first_id},
        {"date": "2024-03-04", "time": "08:00:01", "rfidTag": "2", "id": first_id + 1},
    ]


def test_every_card_is_known_by_default():
    with IflowStandin(token=TOKEN) as s:
        status, _, raw = get(s.url, [rec("anything")])
        assert status == 200 and json.loads(raw)[0]["error_authenticate"] == ""


@pytest.mark.parametrize(
    "kwargs, status",
    [
        ({"token": "wrong"}, 401),
        ({"raw_query": f"access_token={TOKEN}&version=1.0"}, 400),  # no csv_data
        ({"raw_query": f"access_token={TOKEN}&csv_data=%5B%7B&version=1.0"}, 400),  # bad JSON
        ({"raw_query": f"access_token={TOKEN}&csv_data=%7B%7D&version=1.0"}, 400),  # not an array
        ({"path": "/api/other"}, 404),
    ],
)
def test_request_errors(standin, kwargs, status):
    got, headers, raw = get(standin.url, [rec("1")], **kwargs)
    assert got == status
    assert raw  # always a body for the technician to read
    assert standin.stored == []


def test_url_over_the_limit_gets_414(standin):
    standin.max_url_bytes = 600
    records = [rec("1", time_=f"08:00:{i:02d}") for i in range(3)]
    assert get(standin.url, records)[0] == 200
    records = [rec("1", time_=f"09:00:{i:02d}") for i in range(8)]
    assert get(standin.url, records)[0] == 414
    assert len(standin.stored) == 3


def test_json_body_mode_reads_the_body():
    with IflowStandin(token=TOKEN, csv_data_in="json-body") as s:
        body = json.dumps([rec("5")]).encode()
        status, _, raw = get(s.url, raw_query=f"access_token={TOKEN}&version=1.0", body=body)
        assert status == 200 and json.loads(raw)[0]["rfidTag"] == "5"
        assert s.stored[0]["rfidTag"] == "5"


def test_faults_are_consumed_one_per_request_in_order(standin):
    standin.faults.extend(["500", "503:retry_after=7", "401", "html200", "no_such_fault"])
    assert get(standin.url, [rec("1")])[0] == 500
    status, headers, _ = get(standin.url, [rec("1")])
    assert (status, headers["retry-after"]) == (503, "7")
    assert get(standin.url, [rec("1")])[0] == 401
    status, headers, raw = get(standin.url, [rec("1")])
    assert status == 200 and headers["content-type"].startswith("text/html") and raw.startswith(b"<!DOCTYPE")
    status, _, raw = get(standin.url, [rec("1")])
    assert status == 500 and b"no_such_fault" in raw
    assert standin.stored == [] and not standin.faults
    assert get(standin.url, [rec("1")])[0] == 200
    assert standin.requests == 6 and len(standin.stored) == 1


@pytest.mark.parametrize("fault, stores", [("reset_before", False), ("reset_after_store", True)])
def test_reset_faults_really_reset(standin, fault, stores):
    standin.faults.append(fault)
    query = urlencode({"access_token": TOKEN, "csv_data": json.dumps([rec("1")]), "version": "1"})
    with socket.create_connection(("127.0.0.1", standin.port), timeout=5) as s:
        s.sendall(f"GET {ENDPOINT}?{query} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        with pytest.raises(ConnectionResetError):
            while s.recv(4096):
                pass
    assert len(standin.stored) == (1 if stores else 0)


@pytest.mark.parametrize(
    "fault, check",
    [
        ("truncated", lambda st, raw: st == 200 and raw.startswith(b"[{") and not raw.endswith(b"]")),
        ("wrong_length", lambda st, raw: st == 200 and len(json.loads(raw)) == 1),
        ("unmatched_last", lambda st, raw: json.loads(raw)[1]["rfidTag"] != "2"),
        ("not_list", lambda st, raw: isinstance(json.loads(raw), dict)),
        ("not_objects", lambda st, raw: json.loads(raw) == [1, 2, 3]),
        ("malformed_deep", lambda st, raw: raw == b"[" * 100_000),
        ("huge_number", lambda st, raw: len(raw) == 5002),
        ("414", lambda st, raw: st == 414),
    ],
)
def test_answer_faults(standin, fault, check):
    standin.faults.append(fault)
    status, _, raw = get(standin.url, [rec("1"), rec("2", time_="08:00:01")])
    assert check(status, raw)


def test_hang_holds_the_answer_but_stop_is_prompt():
    s = IflowStandin(token=TOKEN, hang_seconds=30).start()
    s.faults.append("hang")
    got: list[BaseException] = []

    def call() -> None:
        try:
            get(s.url, [rec("1")])
        except BaseException as e:
            got.append(e)

    t = threading.Thread(target=call)
    t.start()
    time.sleep(0.3)
    assert t.is_alive()  # no answer yet
    started = time.monotonic()
    s.stop()
    t.join(5)
    assert time.monotonic() - started < 2 and not t.is_alive()
    assert got and isinstance(got[0], (ConnectionError, http.client.HTTPException))
    assert s.stored == []


def test_down_refuses_connections_and_up_comes_back_on_the_same_port(standin):
    port = standin.port
    assert get(standin.url, [rec("1")])[0] == 200
    standin.mode = "down"
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    standin.mode = "up"
    assert standin.port == port
    status, _, raw = get(standin.url, [rec("1")])
    assert status == 200 and "duplicat" in json.loads(raw)[0]["error_check_in_out"]


def test_down_also_drops_kept_alive_connections(standin):
    parts = urlsplit(standin.url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5)
    query = urlencode({"access_token": TOKEN, "csv_data": json.dumps([rec("1")]), "version": "1"})
    conn.request("GET", f"{ENDPOINT}?{query}")
    assert conn.getresponse().read()
    kept = conn.sock
    standin.mode = "down"
    kept.settimeout(2)
    assert kept.recv(1) == b""  # the server hung up on its own: clients see it at once
    conn.close()


def test_concurrent_clients_store_each_attendance_once(standin):
    batches = [[rec("1", time_=f"10:{m:02d}:{s:02d}") for s in range(20)] for m in range(5)]
    delivered = []
    lock = threading.Lock()

    def worker(batch: list[dict]) -> None:
        status, _, raw = get(standin.url, batch)
        assert status == 200
        n = sum(1 for r in json.loads(raw) if not r["error_check_in_out"])
        with lock:
            delivered.append(n)

    threads = [threading.Thread(target=worker, args=(b,)) for b in batches * 4]  # every batch 4 times
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stored = standin.stored
    assert len(stored) == 100 == sum(delivered)
    assert len({(r["date"], r["time"], r["rfidTag"]) for r in stored}) == 100
    assert len({r["id"] for r in stored}) == 100


def test_storing_has_no_per_record_scan():
    s = IflowStandin()
    records = [rec("1", date=f"2024-01-{d:02d}", time_=f"{h:02d}:{m:02d}:00")
               for d in range(1, 29) for h in range(24) for m in range(60)]  # 40,320
    started = time.perf_counter()
    for i in range(0, len(records), 60):
        s._store(records[i:i + 60])
    again = s._store(records[:60])
    elapsed = time.perf_counter() - started
    assert s.stored_count == len(records)
    assert all("duplicat" in r["error_check_in_out"] for r in again)
    assert elapsed < 3.0  # linear: ~0.2 s here; a scan per record would take minutes


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_cli_serves_until_signalled(sig):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "standins.iflow", "--port", "0", "--token", "T-cli", "--known-cards", "1,2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
    )
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith(ENDPOINT)
        status, _, raw = get(url, [rec("1"), rec("3")], token="T-cli")
        assert status == 200
        results = json.loads(raw)
        assert results[0]["error_authenticate"] == "" and results[1]["error_authenticate"]
        proc.send_signal(sig)
        assert proc.wait(timeout=5) == 0
        assert "stored 1 attendances in 1 requests" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# ---------------------------------------------------------------- opt-in modes

def head(url: str, path: str = "/") -> tuple[int, bytes]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5)
    try:
        conn.request("HEAD", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_empty_batch_and_head(standin):
    assert get(standin.url, [])[0::2] == (200, b"[]")
    assert head(standin.url) == (200, b"") and head(standin.url, ENDPOINT) == (200, b"")
    assert (standin.requests, standin.head_requests, standin.stored_count) == (1, 2, 0)


def test_echo_modes_write_fields_as_php_may(standin):
    standin.echo, standin.echo_date = {"tag_number", "hour_no_zero", "no_seconds", "reversed"}, "%d.%m.%Y"
    status, _, body = get(standin.url, [rec("1", time_="08:05:07"), rec("2", time_="17:30:00")])
    answer = json.loads(body)
    assert status == 200 and [(r["date"], r["time"], r["rfidTag"]) for r in answer] == [
        ("04.03.2024", "17:30", 2), ("04.03.2024", "8:05", 1)]
    assert {(s["date"], s["time"], s["rfidTag"]) for s in standin.stored} == {
        ("2024-03-04", "08:05:07", "1"), ("2024-03-04", "17:30:00", "2")}


def test_extra_fields_error_msgs_and_wrapping(standin):
    standin.extra_fields, standin.error_msgs, standin.wrap_data = {"error_code": 0}, {"2": "Cartela blocata"}, True
    _, _, body = get(standin.url, [rec("1"), rec("2", time_="08:00:01")])
    answer = json.loads(body)["data"]
    assert [r["error_code"] for r in answer] == [0, 0]
    assert answer[1]["errorMsg"] == "Cartela blocata" and answer[1]["error_check_in_out"] == ""
    assert standin.stored_count == 1


@pytest.mark.parametrize("style, check", [
    ("json", lambda b, t: json.loads(b) == {"message": "Server Error"} and t.startswith("application/json")),
    ("html", lambda b, t: b"<title>Server Error</title>" in b and t.startswith("text/html")),
    ("debug", lambda b, t: json.loads(b)["message"].startswith("SQLSTATE[22001]")),
])
def test_poison_500_styles(standin, style, check):
    standin.poison_longer_than, standin.error_pages = 5, style
    status, headers, body = get(standin.url, [rec("1"), rec("123456")])
    assert status == 500 and check(body, headers["content-type"]) and standin.stored_count == 0
    assert get(standin.url, [rec("1")])[0] == 200


def test_poison_422_and_stores_before(standin):
    standin.poison_tags, standin.poison_status, standin.poison_stores_before = {"2"}, 422, True
    status, _, body = get(standin.url, [rec("1"), rec("2", time_="08:00:01")])
    assert status == 422 and json.loads(body) == {
        "message": "The selected csv_data.1.rfidTag is invalid.",
        "errors": {"csv_data.1.rfidTag": ["The selected csv_data.1.rfidTag is invalid."]}}
    assert standin.stored_count == 1


def test_outage_object_answer_latency_and_last_target(standin):
    standin.outage = 503
    assert get(standin.url, [rec("1")])[0::2] == (503, b'{"message": "Service Unavailable"}')
    standin.outage, standin.object_answer = None, {"message": "Unauthenticated."}
    assert get(standin.url, [rec("1")])[0::2] == (200, b'{"message":"Unauthenticated."}')
    standin.object_answer, standin.latency_s = None, 0.05
    assert get(standin.url, [rec("1")], raw_query=None)[0] == 200
    assert standin.last_target.startswith(ENDPOINT + "?access_token=")
    assert (standin.requests, standin.stored_count) == (3, 1)
