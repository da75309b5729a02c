"""agent.tls: certificates checked at the agent's trusted time, and floor mode.

Real TLS servers on 127.0.0.1 (the iFlow stand-in over HTTPS, and a tiny HTTPS
proxy for TLS in TLS), certificates from trustme, requests through httpx.
"""

from __future__ import annotations

import select
import socket
import ssl
import threading
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import trustme

from agent.delivery.resolver import bounded_transport
from agent.tls import (
    cert_time_error,
    cert_window,
    floor_context,
    time_checks_available,
    tls_context,
)
from standins.iflow import IflowStandin

NOW = datetime.now(UTC).replace(microsecond=0)
DAY = 86400.0
TOKEN = "tok-TLSTIME-77aa"


def server_ctx(issuer: trustme.CA, name: str = "127.0.0.1", **dates) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    issuer.issue_cert(name, **dates).configure_cert(ctx)
    return ctx


def future_leaf(ca: trustme.CA, name: str = "127.0.0.1") -> ssl.SSLContext:
    """Valid from in 30 days to in 90 days: a Pi's wall clock a month behind."""
    return server_ctx(ca, name, not_before=NOW + timedelta(days=30), not_after=NOW + timedelta(days=90))


def ca_file(ca: trustme.CA, tmp_path) -> str:
    path = tmp_path / f"ca-{id(ca)}.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def head(ctx: ssl.SSLContext, standin: IflowStandin, transport: httpx.BaseTransport | None = None,
         **client) -> httpx.Response:
    """The answer, with ``window``: cert_window of its connection, read while the
    connection is open (httpcore gives no ssl_object once it is closed)."""
    with httpx.Client(verify=ctx, transport=transport, trust_env=False, timeout=5.0, **client) as c:
        response = c.head(f"https://127.0.0.1:{standin.port}/")
        ssl_object = response.extensions["network_stream"].get_extra_info("ssl_object")
        response.window, response.ssl_object_type = cert_window(ssl_object), type(ssl_object)
        return response


def refused(ctx: ssl.SSLContext, standin: IflowStandin, **client) -> httpx.ConnectError:
    with pytest.raises(httpx.ConnectError) as info:
        head(ctx, standin, **client)
    assert "CERTIFICATE_VERIFY_FAILED" in str(info.value)
    return info.value


def ssl_error(exc: BaseException) -> ssl.SSLCertVerificationError:
    while not isinstance(exc, ssl.SSLCertVerificationError):
        exc = exc.__cause__ or exc.__context__
    return exc


@pytest.fixture
def ca():
    return trustme.CA()


def test_time_checks_available_on_this_python():
    assert time_checks_available() is True  # CPython 3.11 here: the rest of this file depends on it


def test_leaf_not_yet_valid(ca, tmp_path):
    path = ca_file(ca, tmp_path)
    with IflowStandin(token=TOKEN, ssl_context=future_leaf(ca)) as standin:
        # OpenSSL's own check, at the wall clock
        exc = refused(tls_context(path), standin)
        assert cert_time_error(exc) == "not_yet_valid"
        # at() without a trusted time: the wall clock, the same refusal and the same words
        exc = refused(tls_context(path, at=lambda: None), standin)
        err = ssl_error(exc)
        assert cert_time_error(exc) == "not_yet_valid"
        assert err.verify_code == 9 and err.verify_message == "certificate is not yet valid"
        # a trusted time inside the certificate's life: accepted, and the server answers
        inside = time.time() + 40 * DAY
        assert head(tls_context(path, at=lambda: inside), standin).status_code == 200
        # a trusted time before it: refused, and the text says which clock decided
        exc = refused(tls_context(path, at=lambda: datetime(2026, 12, 1, 10, tzinfo=UTC).timestamp()), standin)
        err = ssl_error(exc)
        assert err.verify_code == 9 and err.verify_message.startswith(
            "certificate is not yet valid (checked at 2026-12-01T10:00:00Z, the agent's trusted time; "
            "the wall clock says ")
    assert standin.stored_count == 0


def test_expired_leaf(ca, tmp_path):
    path = ca_file(ca, tmp_path)
    expired = server_ctx(ca, not_before=NOW - timedelta(days=60), not_after=NOW - timedelta(days=1))
    with IflowStandin(token=TOKEN, ssl_context=expired) as standin:
        err = ssl_error(refused(tls_context(path, at=time.time), standin))
        assert err.verify_code == 10 and err.verify_message.startswith("certificate has expired (checked at ")
        assert cert_time_error(refused(tls_context(path, at=lambda: None), standin)) == "expired"
        back = time.time() - 30 * DAY
        assert head(tls_context(path, at=lambda: back), standin).status_code == 200


def test_ca_and_intermediate_not_yet_valid(ca, tmp_path, monkeypatch):
    """trustme's CAs take no dates; a CA made while its module default says
    "not before in 30 days" carries that notBefore."""
    monkeypatch.setattr(trustme, "DEFAULT_NOT_BEFORE", NOW + timedelta(days=30))
    intermediate = ca.create_child_ca()
    late_root = trustme.CA()
    monkeypatch.undo()
    dates = {"not_before": NOW - timedelta(days=1), "not_after": NOW + timedelta(days=90)}  # the leaf: valid now
    cases = [(ca_file(ca, tmp_path), server_ctx(intermediate, **dates)),
             (ca_file(late_root, tmp_path), server_ctx(late_root, **dates))]
    for path, served in cases:
        with IflowStandin(token=TOKEN, ssl_context=served) as standin:
            assert cert_time_error(refused(tls_context(path), standin)) == "not_yet_valid"
            assert cert_time_error(refused(tls_context(path, at=lambda: None), standin)) == "not_yet_valid"
            err = ssl_error(refused(tls_context(path, at=time.time), standin))
            assert err.verify_code == 9  # the leaf is valid now: the CA above it was caught
            inside = time.time() + 40 * DAY
            assert head(tls_context(path, at=lambda t=inside: t), standin).status_code == 200


def test_a_refused_handshake_closes_the_socket(ca, tmp_path):
    path = ca_file(ca, tmp_path)
    with IflowStandin(token=TOKEN, ssl_context=future_leaf(ca)) as standin:
        ctx = tls_context(path, at=time.time)
        sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", standin.port)), server_hostname="127.0.0.1",
                               do_handshake_on_connect=False)
        with pytest.raises(ssl.SSLCertVerificationError):
            sock.do_handshake()
        assert sock.fileno() == -1  # nothing can be written on it
    assert standin.stored_count == 0


def _modes(path: str) -> dict[str, ssl.SSLContext]:
    inside = time.time() + 40 * DAY
    return {"wall clock": tls_context(path), "at=None": tls_context(path, at=lambda: None),
            "at=inside": tls_context(path, at=lambda: inside), "floor": floor_context(path, time.time() - DAY)}


def test_wrong_host_and_unknown_ca_fail_in_every_mode(ca, tmp_path):
    """The time checks only move the clock: chain and host name stay verified."""
    path = ca_file(ca, tmp_path)
    stranger = ca_file(trustme.CA(), tmp_path)
    for served, trusted, words in [(future_leaf(ca, "iflow.example.com"), path, "match"),
                                   (future_leaf(ca), stranger, "unable to get local issuer")]:
        with IflowStandin(token=TOKEN, ssl_context=served) as standin:
            for mode, ctx in _modes(trusted).items():
                if mode != "wall clock":
                    assert ctx.verify_flags & 0x200000 and ctx.check_hostname
                    assert ctx.verify_mode == ssl.CERT_REQUIRED
                exc = refused(ctx, standin)
                assert words in str(exc), (mode, str(exc))
                assert cert_time_error(exc) is None, mode


@pytest.mark.parametrize("through", ["bounded_transport", "httpx transport"])
def test_floor_passes_a_leaf_not_yet_valid_and_gives_its_window(ca, tmp_path, through):
    path = ca_file(ca, tmp_path)
    with IflowStandin(token=TOKEN, ssl_context=future_leaf(ca)) as standin:
        ctx = floor_context(path, time.time() - DAY)
        transport = bounded_transport(ctx) if through == "bounded_transport" else httpx.HTTPTransport(verify=ctx)
        response = head(ctx, standin, transport=transport)
        assert response.status_code == 200
        # trustme's CA is valid 2000..3000: the leaf bounds the window
        assert response.window == ((NOW + timedelta(days=30)).timestamp(), (NOW + timedelta(days=90)).timestamp())


def test_floor_refuses_a_chain_that_expired_before_the_floor(ca, tmp_path):
    path = ca_file(ca, tmp_path)
    old = server_ctx(ca, not_before=NOW - timedelta(days=400), not_after=NOW - timedelta(days=30))
    with IflowStandin(token=TOKEN, ssl_context=old) as standin:
        exc = refused(floor_context(path, time.time() - DAY), standin)
        err = ssl_error(exc)
        assert err.verify_code == 10 and cert_time_error(exc) == "expired"
        assert err.verify_message.startswith("certificate has expired (before the newest trusted time this device "
                                             "recorded, ")
        # the same chain before its end passes floor mode (the caller then checks the Date against the window)
        early = floor_context(path, (NOW - timedelta(days=31)).timestamp())
        assert head(early, standin).window[1] == (NOW - timedelta(days=30)).timestamp()


def test_cert_time_error_walks_a_bounded_chain():
    inner = ssl.SSLCertVerificationError(1, "certificate verify failed: certificate has expired")
    outer = RuntimeError("wrapped")
    outer.__cause__ = inner
    assert cert_time_error(outer) == "expired"
    a, b = ValueError("a"), ValueError("b")
    a.__context__, b.__context__ = b, a  # a cycle ends
    assert cert_time_error(a) is None
    chain = ssl.SSLCertVerificationError(1, "certificate is not yet valid")
    for _ in range(40):  # deeper than the walk goes
        wrapper = OSError("layer")
        wrapper.__cause__, chain = chain, wrapper
    assert cert_time_error(chain) is None
    assert cert_time_error(OSError("certificate has expired")) is None  # words alone, not from ssl: not trusted


class _HttpsProxy:
    """CONNECT over TLS, then bytes both ways: an HTTPS proxy (TLS in TLS)."""

    def __init__(self, ctx: ssl.SSLContext) -> None:
        self._listener = ctx.wrap_socket(socket.create_server(("127.0.0.1", 0)), server_side=True)
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._tunnel, args=(client,), daemon=True).start()

    @staticmethod
    def _tunnel(client: socket.socket) -> None:
        with client:
            head = b""
            while b"\r\n\r\n" not in head:
                head += client.recv(4096) or b"\r\n\r\n"
            host, _, port = head.split()[1].decode().rpartition(":")
            with socket.create_connection((host, int(port))) as upstream:
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                socks = [client, upstream]
                while True:
                    for s in select.select(socks, [], [], 10)[0]:
                        data = s.recv(65536)
                        if not data:
                            return
                        (upstream if s is client else client).sendall(data)

    def close(self) -> None:
        self._listener.close()


def test_tls_in_tls_through_an_https_proxy(ca, tmp_path):
    path = ca_file(ca, tmp_path)
    proxy = _HttpsProxy(server_ctx(ca))
    try:
        with IflowStandin(token=TOKEN, ssl_context=future_leaf(ca)) as standin:
            via = {"proxy": httpx.Proxy(f"https://127.0.0.1:{proxy.port}", ssl_context=tls_context(path))}
            assert cert_time_error(refused(tls_context(path, at=lambda: None), standin, **via)) == "not_yet_valid"
            err = ssl_error(refused(tls_context(path, at=time.time), standin, **via))
            assert err.verify_code == 9 and "the agent's trusted time" in err.verify_message  # our check, not OpenSSL's
            inside = time.time() + 40 * DAY
            assert head(tls_context(path, at=lambda: inside), standin, **via).status_code == 200
            response = head(floor_context(path, time.time() - DAY), standin, **via)
            assert issubclass(response.ssl_object_type, ssl.SSLObject)  # the inner TLS, checked by our class
            assert response.window == ((NOW + timedelta(days=30)).timestamp(),
                                               (NOW + timedelta(days=90)).timestamp())
    finally:
        proxy.close()
