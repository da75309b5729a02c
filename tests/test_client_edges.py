"""IflowClient at its edges, against real sockets on 127.0.0.1: whether a
failed request may have reached the server, name resolution bounded by the
connect timeout (TLS still checked against the name), and the query escaped
only as RFC 3986 and form decoding require."""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import threading
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent import redact
from agent.delivery import urlquery
from agent.delivery.client import DeliveryError, IflowClient
from agent.delivery.wire import Item, wire_text
from standins.iflow import ENDPOINT, IflowStandin

TOKEN = "tok-SECRET-edges-77"


def items(n: int, tag: str = "0012345678") -> list[Item]:
    return [Item(f"r{i}", tag, "2026-12-01", f"08:{i // 60 % 60:02d}:{i % 60:02d}") for i in range(n)]


def client(url: str, **kw) -> IflowClient:
    kw.setdefault("connect_timeout", 0.5)
    kw.setdefault("read_timeout", 0.5)
    return IflowClient(url, TOKEN, "1.0", **kw)


@pytest.fixture
def server():
    with IflowStandin(token=TOKEN, hang_seconds=2.0) as s:
        yield s


# ------------------------------------------------------------------ reached

def test_refused_connection_did_not_reach(server):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with client(f"http://127.0.0.1:{port}/x") as c, pytest.raises(DeliveryError) as info:
        c.send(items(1))
    assert (info.value.kind, info.value.reached) == ("network", False)


def test_connect_timeout_did_not_reach():
    """A listener whose backlog is full drops the SYN: the connect times out."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(8):  # fill the accept queue (never accepted)
            f = socket.socket()
            f.setblocking(False)
            f.connect_ex(("127.0.0.1", port))
            fillers.append(f)
        with client(f"http://127.0.0.1:{port}/x", connect_timeout=0.3) as c, pytest.raises(DeliveryError) as info:
            c.send(items(1))
    finally:
        for f in fillers:
            f.close()
        listener.close()
    err = info.value
    assert err.reached is False
    assert err.kind == "timeout" or "connect" in str(err)  # a kernel may also refuse outright


@pytest.mark.parametrize("fault, kind", [("hang", "timeout"), ("500", "http"), ("reset_after_store", "network"),
                                         ("truncated", "bad_answer"), ("401", "auth")])
def test_anything_after_the_request_was_written_may_have_reached(server, fault, kind):
    server.faults.append(fault)
    with client(server.url) as c, pytest.raises(DeliveryError) as info:
        c.send(items(2))
    assert (info.value.kind, info.value.reached) == (kind, True)
    assert info.value.status is not None or kind in ("timeout", "network")


def test_refused_before_sending_did_not_reach(server):
    with client(server.url, max_url_bytes=400) as c, pytest.raises(DeliveryError) as info:
        c.send(items(20))
    assert (info.value.kind, info.value.reached, server.requests) == ("too_long", False, 0)


# ------------------------------------------------------------ name resolution

@pytest.fixture
def hanging_dns(monkeypatch):
    """getaddrinfo hangs for *.hang.test until released (then resolves to
    127.0.0.1), fails for *.fail.test; other names resolve as usual. The one
    stub of these tests: a DNS server that never answers cannot be set up on
    127.0.0.1 for the system resolver."""
    real = socket.getaddrinfo
    release = threading.Event()
    calls: list[str] = []

    def fake(host, port, *args, **kwargs):
        if isinstance(host, str) and host.endswith(".hang.test"):
            calls.append(host)
            release.wait(30)
            return real("127.0.0.1", port, *args, **kwargs)
        if isinstance(host, str) and host.endswith(".fail.test"):
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    yield release, calls
    release.set()


def test_a_hanging_lookup_is_bounded_by_the_connect_timeout(server, hanging_dns):
    release, calls = hanging_dns
    url = server.url.replace("127.0.0.1", "iflow.hang.test")
    with client(url, connect_timeout=0.3) as c:
        for _ in range(2):
            with pytest.raises(DeliveryError) as info:
                c.send(items(1))
            err = info.value
            assert (err.kind, err.reached) == ("timeout", False)
            assert str(err) == "looking up iflow.hang.test timed out after 0.3 s"
        assert calls == ["iflow.hang.test"]  # the hung lookup is waited for, not started again
        release.set()  # its answer, once in, serves the next attempt
        assert [o.state for o in c.send(items(1))] == ["delivered"]
    assert server.stored_count == 1


def test_a_failed_lookup_did_not_reach(hanging_dns):
    with client("http://iflow.fail.test:9/x") as c, pytest.raises(DeliveryError) as info:
        c.send(items(1))
    assert (info.value.kind, info.value.reached) == ("network", False)
    assert "cannot connect to iflow.fail.test" in str(info.value)


def test_tls_is_checked_against_the_name_not_the_address(tmp_path):
    import trustme

    ca = trustme.CA()
    ca_path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    for name, ok in (("localhost", True), ("other.example", False)):
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(name).configure_cert(ctx)
        with IflowStandin(token=TOKEN, ssl_context=ctx) as s:
            url = s.url.replace("127.0.0.1", "localhost")
            with client(url, verify=str(ca_path), connect_timeout=2) as c:
                if ok:  # a certificate for the name only: SNI and the check used the name
                    assert c.send(items(1))[0].state == "delivered"
                else:
                    with pytest.raises(DeliveryError) as info:
                        c.send(items(1))
                    assert "CERTIFICATE_VERIFY_FAILED" in str(info.value) and info.value.reached is False


# ------------------------------------------------------------------ the query

def test_only_what_must_be_escaped_is(server):
    with client(server.url) as c:
        n, request = c.prepare(items(2))
        url = str(request.url)
        query = url.split("?", 1)[1]
        csv = query.split("csv_data=", 1)[1].split("&", 1)[0]
        assert csv.startswith("%5B%7B%22date%22:%222026-12-01%22,%22time%22:%2208:00:00%22,")
        assert "%3A" not in csv and "%2C" not in csv
        assert c.send(items(2), request)[0].state == "delivered"
    # sent unchanged: the target the stand-in received is the one built
    assert server.last_target == request.url.raw_path.decode("ascii")
    assert server.last_target == url.split(server.url.split(ENDPOINT)[0], 1)[1]


def test_each_character_class():
    assert urlquery.encode(":,/?@!$'()*;") == ":,/?@!$'()*;"
    assert urlquery.encode("&=+#% ") == "%26%3D%2B%23%25%20"
    assert urlquery.encode('"{}[]\\<>^`|') == "%22%7B%7D%5B%5D%5C%3C%3E%5E%60%7C"
    assert urlquery.encode("\x00\x1f\x7f") == "%00%1F%7F"
    assert urlquery.encode("ș") == "%C8%99"
    assert urlquery.encode("AZaz09-._~") == "AZaz09-._~"


def test_more_records_fit_than_with_httpx_quoting():
    tags = [f"{10_000_000 + i * 7919:010d}" for i in range(400)]
    batch = [Item(str(i), t, "2026-11-01", "08:00:00") for i, t in enumerate(tags)]
    url = "https://app.iflow.ro/api/rfid_v2/offline_attendance/store_attendances"
    with IflowClient(url, "bench-token-0123456789", "1.0", max_url_bytes=7000) as c:
        ours, request = c.prepare(batch)
    plain = 0
    while True:
        csv = "[" + ",".join(map(wire_text, batch[: plain + 1])) + "]"
        if len(str(httpx.URL(url, params={"access_token": "bench-token-0123456789", "csv_data": csv,
                                          "version": "1.0"}))) > 7000:
            break
        plain += 1
    assert (plain, ours) == (51, 60) and len(str(request.url)) <= 7000


@contextlib.contextmanager
def own_secrets():
    """A client registers its token as a secret for the whole process: the random
    tokens here ("unknown", "card", ...) must not redact later tests' texts."""
    saved = set(redact._secrets)
    try:
        yield
    finally:
        with redact._lock:
            redact._secrets.clear()
            redact._secrets.update(saved)
            redact._dirty = True


_ODD = st.text(st.characters(codec="utf-8"), max_size=30) | st.sampled_from(["a b+c&d=e%41#x", "%", "+", "\x7f"])


@settings(max_examples=150, deadline=None)
@given(tags=st.lists(_ODD, min_size=1, max_size=40), token=_ODD.filter(lambda t: len(t.strip()) >= 1),
       version=_ODD, limit=st.integers(300, 9000))
def test_the_query_round_trips_and_stays_within_the_limit(tags, token, version, limit):
    """parse_qs (what the stand-in and PHP's $_GET do) gives back exactly the
    token, the version and csv_data's JSON text; the URL is what httpx sends."""
    with own_secrets(), IflowClient("http://127.0.0.1:9/api/x?site=1", token, version,
                                    max_url_bytes=limit) as c:
        batch = [Item(str(i), tag, "2026-11-01", f"08:00:{i % 60:02d}") for i, tag in enumerate(tags)]
        n, request = c.prepare(batch)
        if n == 0:
            return
        url = str(request.url)
        assert len(url) <= limit and url == str(httpx.URL(url))
        assert request.url.raw_path.decode("ascii") == url.split("127.0.0.1:9", 1)[1]
        query = parse_qs(urlsplit(url).query, keep_blank_values=True)
        assert query["access_token"] == [token] and query["version"] == [version] and query["site"] == ["1"]
        assert query["csv_data"] == ["[" + ",".join(map(wire_text, batch[:n])) + "]"]
        assert json.loads(query["csv_data"][0])[0]["rfidTag"] == tags[0]


def test_the_encoded_token_is_a_secret():
    token = "tok en:with@odd!chars"
    with IflowClient("http://127.0.0.1:9/x", token, "1.0") as c:
        url = str(c._build(items(1)).url)
    form = urlquery.encode(token)
    assert form in url and form != token
    assert form not in redact.redact(f"echoed back: {form}.")
