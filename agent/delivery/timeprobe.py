"""Learning the true time from iFlow before sending scans that need it.

A boot whose clock never synchronised holds its scans (``"wait"``) until it
knows the time. Every answer of iFlow teaches it (the client hands each
Date to the clock), but the first one may come before any scan may leave: so
a request that stores nothing and carries no token, a ``HEAD`` of the iFlow
host's root, asks for it first (any web server answers it with a Date, even
with a 404 or a redirect to a login page). ``Cache-Control: no-cache`` asks a
cache on the way not to answer from an old copy; an ``Age`` it sends anyway
is counted (:mod:`agent.clock.httpdate`).

When the wall clock is so far off that iFlow's certificate is not valid
at it (a Pi image months old), the handshake fails before any Date. Then,
where this Python gives the verified chain (:func:`agent.tls.time_checks_available`),
the HEAD is repeated with the chain verified except its start date, each
certificate still valid at the newest trusted time this device ever recorded
(:func:`agent.tls.floor_context`), and the server's Date is believed only if
the chain is valid at that Date and it is not before that floor: the time
the server claims must be one its own certificate was valid at. Once the
boot has a time, certificates are checked against it
(:meth:`agent.clock.clock.Clock.trusted_now_s`), so delivery works too.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Callable

import httpx

from agent.clock.httpdate import DateSample, parse_http_date
from agent.clock.policy import ns_to_datetime
from agent.delivery.resolver import bounded_transport
from agent.redact import redact
from agent.tls import (
    cert_time_error,
    cert_window,
    floor_context,
    plain_http_context,
    time_checks_available,
    tls_context,
)

log = logging.getLogger("agent.timekeeping")

__all__ = ["TimeProbe"]

REFRESH_S = 3600.0  # a boot on the HTTPS Date re-checks it at least this often


def _day(seconds: float) -> str:
    return ns_to_datetime(int(seconds * 1e9)).strftime("%Y-%m-%d %H:%M UTC")


class TimeProbe:
    """HEADs of the iFlow host's root, when the clock needs the time (see the module docstring)."""

    def __init__(self, url: str, clock: Any, *, ca_bundle: str | None = None, insecure: bool = False,
                 connect_timeout: float = 5.0, read_timeout: float = 15.0, user_agent: str = "rfid-agent",
                 transport: httpx.BaseTransport | None = None,
                 retry_initial: float = 2.0, retry_max: float = 300.0,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        parsed = httpx.URL(url)
        self.origin = str(parsed.copy_with(userinfo=b"", path="/", query=None, fragment=None))  # no password
        self.host = parsed.host
        self.https = parsed.scheme == "https"
        #: a Date from this server may be believed (verified TLS, or allowed by time.http_date_insecure)
        self.usable = self.https or insecure
        self.clock = clock
        self._ca = ca_bundle
        self._timeout = httpx.Timeout(read_timeout, connect=connect_timeout)
        self._headers = {"User-Agent": user_agent, "Cache-Control": "no-cache", "Pragma": "no-cache"}
        self._transport = transport
        self._monotonic = monotonic
        self._retry = (retry_initial, retry_max)  # as delivery's back-off: iFlow back means the time back soon
        self._client: httpx.Client | None = None
        self._failures = 0
        self._next = float("-inf")
        self._last_ok = float("-inf")
        self.last_problem: str | None = None  # why the last probe taught nothing

    def due(self) -> bool:
        """Whether a probe would help now: the boot has no trusted time (or its
        HTTPS Date is due a re-check), and no failed probe is still cooling down."""
        if not self.usable or self._monotonic() < self._next:
            return False
        if self.clock.needs_time():
            return True
        return (self.clock.time_source()["time_source"] == "https-date"
                and self._monotonic() - self._last_ok >= REFRESH_S)

    def wait_s(self) -> float:
        """Seconds until a probe is due while this boot needs the time (inf when
        it does not): the uploader passes then, so the time comes soon after iFlow does."""
        if not self.usable or not self.clock.needs_time():
            return float("inf")
        return max(0.0, self._next - self._monotonic())

    def learn(self) -> bool:
        """One HEAD (two when the certificate is not valid at the wall clock);
        True when the boot has a trusted time afterwards. Never raises."""
        try:
            taught = self._probe()
        except Exception as exc:  # noqa: BLE001 - a probe must never stop delivery
            log.exception("learning the time from %s failed", self.host)
            taught, self.last_problem = False, f"{type(exc).__name__}: {redact(str(exc))[:200]}"
        if taught and not self.clock.needs_time():
            self._failures, self._next, self._last_ok = 0, float("-inf"), self._monotonic()
            self.last_problem = None
            return True
        first, most = self._retry
        self._next = self._monotonic() + min(most, first * 2 ** min(self._failures, 30))
        self._failures += 1
        return False

    def _probe(self) -> bool:
        if self._client is None:
            ctx = tls_context(self._ca, at=self.clock.trusted_now_s) if self.https else plain_http_context()
            self._client = self._make_client(ctx)
        try:
            sample, _ = self._head(self._client)
        except httpx.HTTPError as exc:
            why = cert_time_error(exc)
            if why is None or not self.clock.needs_time():  # checked at a trusted time: really invalid
                self.last_problem = f"cannot reach {self.host}: {redact(str(exc))[:200] or type(exc).__name__}"
                log.info("learning the time: %s", self.last_problem)
                return False
            return self._below_floor(why)
        self.clock.note_cert_problem(None)
        self.clock.observe_answer(sample)
        return True

    def _make_client(self, ctx: Any) -> httpx.Client:
        transport = self._transport
        if transport is None and not any(k.lower().endswith("_proxy") for k in os.environ):
            transport = bounded_transport(ctx)  # as the client: behind a proxy, the proxy resolves the name
        return httpx.Client(timeout=self._timeout, verify=ctx, transport=transport, follow_redirects=False,
                            headers=self._headers)

    def _head(self, client: httpx.Client) -> tuple[DateSample, Any]:
        """HEAD the root: the answer's Date sample, and the connection's TLS object."""
        sent = self.clock.mono_ns()
        response = client.send(client.build_request("HEAD", self.origin), stream=True)
        try:
            received = self.clock.mono_ns()
            stream = response.extensions.get("network_stream")
            ssl_object = stream.get_extra_info("ssl_object") if stream is not None else None
            sample = DateSample(response.headers.get("date"), response.headers.get("age"), sent, received,
                                self.usable, self.host)
        finally:
            response.close()
        return sample, ssl_object

    def _below_floor(self, why: str) -> bool:
        """The wall clock is outside the certificate's validity: check the chain
        at the server's own Date, not before the newest trusted time (the module docstring)."""
        wall = time.time()
        floor = self.clock.cert_floor_s()
        said = "before the start" if why == "not_yet_valid" else "after the end"
        problem = f"the wall clock ({_day(wall)}) is {said} of {self.host}'s certificate's validity"
        if not time_checks_available():
            self._cert_problem(f"{problem}, and this Python cannot check the chain at another time: set the "
                               "clock by hand (sudo date -s 'YYYY-MM-DD HH:MM') or let NTP through (UDP 123)")
            return False
        with self._make_client(floor_context(self._ca, floor)) as client:
            try:
                sample, ssl_object = self._head(client)
            except httpx.HTTPError as exc:
                self._cert_problem(f"{problem}, and its certificate is not valid at the newest trusted time "
                                   f"this device recorded ({_day(floor)}) either: {redact(str(exc))[:160]}")
                return False
        window = cert_window(ssl_object)
        date = parse_http_date(sample.date)
        cached = (sample.age or "0").strip() != "0"  # the Date checked below must be the time it claims
        if cached or window is None or date is None or not (floor <= date and window[0] <= date <= window[1]):
            shown = "none" if date is None else _day(date) + (" from a cache" if cached else "")
            self._cert_problem(f"{problem}, and the Date it sent ({shown}) is not one its certificate chain "
                               f"is valid at, or is before {_day(floor)}: not used")
            return False
        self.clock.observe_answer(sample)
        if self.clock.needs_time():  # refused all the same (too loose, contradicting): say so
            self._cert_problem(f"{problem}, and its Date ({_day(date)}) could not be used (see the log)")
            return False
        self.clock.note_cert_problem(f"{problem}: the time was learned with the chain checked at its own Date "
                                     f"(not before {_day(floor)}, the newest trusted time this device recorded)")
        return True

    def _cert_problem(self, text: str) -> None:
        self.last_problem = text
        self.clock.note_cert_problem(text)
        log.warning("learning the time: %s", text)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
