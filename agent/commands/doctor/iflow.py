"""The iFlow checks, one step at a time so the first failing step is named:
``iflow_dns``, ``iflow_connect``, ``iflow_tls`` and ``iflow_answers``.

Every step is bounded: DNS and the request run under a hard deadline in a
helper thread, the socket steps have their own timeouts. The TLS handshake
uses the agent's one TLS context (:func:`agent.tls.tls_context`) and the
request is the delivery client's own (:meth:`IflowClient.answer_empty_batch`),
so doctor accepts exactly the certificates and sends exactly the request
the daemon does.
"""

from __future__ import annotations

import socket
import ssl
from typing import Callable
from urllib.parse import urlsplit

from agent.commands.doctor.base import (
    FAIL,
    PASS,
    WARN,
    Ctx,
    Result,
    bounded,
    errtext,
    result,
)
from agent.config import Config, IflowConfig
from agent.runtime.wiring import make_clock
from agent.tls import tls_context

NET_TIMEOUT_S = 5.0  # DNS, TCP connect, TLS handshake
READ_TIMEOUT_MAX_S = 10.0  # the test request never waits longer than this for an answer
DOCTOR_USER_AGENT = "rfid-agent-doctor"  # iFlow's logs tell doctor's probe apart


def _timed_out_or(exc: BaseException) -> str:
    return "timed out" if isinstance(exc, TimeoutError) else errtext(exc)


def _connect(infos: list, host: str, port: int) -> tuple[socket.socket | None, list[str]]:
    """A TCP connection to the first of the first few addresses that accepts, each bounded."""
    errors = []
    for family, socktype, proto, _, sockaddr in infos[:3]:
        s = socket.socket(family, socktype, proto)
        s.settimeout(NET_TIMEOUT_S)
        try:
            s.connect(sockaddr)
        except OSError as exc:
            s.close()
            errors.append(f"{sockaddr[0]}: {_timed_out_or(exc)}")
            continue
        return s, errors
    return None, errors


def _trusted_time(cfg: Config) -> Callable[[], float | None] | None:
    """When the daemon checks certificates: this boot's trusted time (an HTTPS
    Date or NTP anchor) while the kernel's clock is not synchronised."""
    try:
        return make_clock(cfg).trusted_now_s
    except Exception:  # noqa: BLE001 - no state dir yet, unreadable boot id: the wall clock, as OpenSSL would
        return None


def _handshake(sock: socket.socket, host: str, ca_bundle: str | None,
               at: Callable[[], float | None] | None = None) -> Result:
    """The TLS handshake over ``sock``, with the agent's trust settings, SNI, and
    certificate times checked at the time the daemon checks them."""
    try:
        with tls_context(ca_bundle, at=at).wrap_socket(sock, server_hostname=host) as tls:
            version = tls.version()
    except ssl.SSLCertVerificationError as exc:
        if exc.verify_code in (9, 10):  # not yet valid, expired: at the wall clock, which may be wrong
            return result("iflow_tls", FAIL, f"the certificate of {host} is not valid now: "
                          f"{exc.verify_message or exc.reason}",
                          "check the clock (date -u): if it is wrong, let NTP through (UDP 123) or set it "
                          "(sudo date -s 'YYYY-MM-DD HH:MM:SS'); the daemon learns the time from iFlow's own "
                          "Date when it can (agent status: cert_time_problem)")
        return result("iflow_tls", FAIL, f"the certificate of {host} is not trusted: "
                      f"{exc.verify_message or exc.reason}",
                      "check the clock (a wrong date breaks certificates), iflow.ca_bundle, "
                      "and whether a proxy intercepts TLS")
    except (ssl.SSLError, OSError) as exc:
        return result("iflow_tls", FAIL, f"TLS handshake with {host} failed: {_timed_out_or(exc)}",
                      "check that iflow.url is the https address of iFlow and no proxy is in the way")
    return result("iflow_tls", PASS, f"{version} handshake passed, certificate valid for {host}"
                  + (f" (CA bundle {ca_bundle})" if ca_bundle else ""))


def check_iflow(ctx: Ctx) -> list[Result]:
    ic = ctx.cfg.iflow
    if ic is None:
        return []
    parts = urlsplit(ic.url)
    host = parts.hostname or ""
    https = parts.scheme == "https"
    try:
        port = parts.port or (443 if https else 80)
    except ValueError:
        return [result("iflow_dns", FAIL, f"iflow.url has an invalid port: {ic.url}", "fix iflow.url")]

    # getaddrinfo has no timeout of its own
    try:
        infos = bounded(lambda: socket.getaddrinfo(host, port, type=socket.SOCK_STREAM), NET_TIMEOUT_S)
    except TimeoutError:
        return [result("iflow_dns", FAIL, f"resolving {host} took over {NET_TIMEOUT_S:g} s",
                       "check /etc/resolv.conf and the DNS server")]
    except (OSError, UnicodeError) as exc:
        return [result("iflow_dns", FAIL, f"cannot resolve {host}: {errtext(exc)}",
                       "check the network and DNS (/etc/resolv.conf), and the host name in iflow.url")]
    addrs = list(dict.fromkeys(info[4][0] for info in infos))
    out = [result("iflow_dns", PASS, f"{host} resolves to {', '.join(addrs[:3])}")]

    sock, errors = _connect(infos, host, port)
    if sock is None:
        out.append(result("iflow_connect", FAIL, f"cannot connect to {host} port {port}: {'; '.join(errors)}",
                          f"check the network, DNS and firewall (outgoing TCP port {port}), and iflow.url"))
        return out
    out.append(result("iflow_connect", PASS, f"TCP connection to {sock.getpeername()[0]} port {port}"))
    at = _trusted_time(ctx.cfg) if https else None

    try:
        if https:
            tls = _handshake(sock, host, ic.ca_bundle, at)
            out.append(tls)
            if tls.status != PASS:
                return out
        else:
            out.append(result("iflow_tls", WARN, "not used: iflow.url is http://, the token travels unencrypted",
                              "use an https:// URL unless iFlow is on a trusted local network"))
    finally:
        sock.close()

    out.append(_answers(ic, at))
    return out


def _no_answer(host: str | None, seconds: float) -> Result:
    return result("iflow_answers", FAIL, f"{host} did not answer within {seconds:g} s",
                  "iFlow may be overloaded or a firewall drops the traffic; try again later")


def _answers(ic: IflowConfig, at: Callable[[], float | None] | None = None) -> Result:
    """One real request with the token and no scans, built and sent by the delivery client."""
    # lazy: httpx (~0.2 s to import on a Pi) is only needed when [iflow] is configured
    from agent.delivery.client import DeliveryError, IflowClient

    host = urlsplit(ic.url).hostname
    connect_t = min(ic.connect_timeout, NET_TIMEOUT_S)
    read_t = min(ic.read_timeout, READ_TIMEOUT_MAX_S)

    def ask() -> tuple[int, float]:
        # doctor's own capped timeouts and User-Agent; otherwise the daemon's client settings
        with IflowClient(ic.url, ic.access_token, ic.client_version, csv_data_in=ic.csv_data_in,
                         max_url_bytes=ic.max_url_bytes, connect_timeout=connect_t, read_timeout=read_t,
                         verify=ic.ca_bundle or True, user_agent=DOCTOR_USER_AGENT, verify_at=at) as client:
            return client.answer_empty_batch()

    try:
        status, took = bounded(ask, connect_t + read_t + 2.0)
    except TimeoutError:
        return _no_answer(host, connect_t + read_t)
    except DeliveryError as exc:
        if exc.kind == "timeout":
            return _no_answer(host, read_t)
        return result("iflow_answers", FAIL, f"request to {host} failed: {exc}", "check the network and iflow.url")
    except Exception as exc:  # noqa: BLE001 - e.g. a URL the client refuses
        return result("iflow_answers", FAIL, f"request to {host} failed: {type(exc).__name__}: {exc}",
                      "check the network and iflow.url")
    took_ms = f"{took * 1000:.0f} ms"
    if status in (401, 403):
        return result("iflow_answers", FAIL, f"{host} refused the access token (HTTP {status})",
                      "check the token registered in iFlow under settings -> rfid devices, and "
                      "iflow.access_token_file")
    if 200 <= status < 300 or status in (400, 422):
        return result("iflow_answers", PASS, f"{host} answered HTTP {status} to an empty batch in {took_ms}")
    return result("iflow_answers", WARN, f"{host} answers, but with HTTP {status} to an empty batch",
                  "check the path in iflow.url (it ends in /store_attendances); a 5xx is iFlow's side")
