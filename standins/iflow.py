"""A local stand-in for iFlow's ``store_attendances`` endpoint (demo, tests, benchmarks).

It implements the contract in /work/shared/api/iflow-store-attendances.md:
each (date, time, rfidTag) is stored once; a repeat gets ``error_check_in_out``
"Nu se poate adăuga - prezență duplicată: <id>"; an unknown card gets
``error_authenticate``; a malformed date/time gets ``error_csv``; a wrong
token gets 401; a URL over ``max_url_bytes`` gets 414.

Faults for tests are queued in :attr:`IflowStandin.faults` and consumed one
per request (before anything else):

=====================  ==========================================================
``reset_before``        connection reset (RST) before storing anything
``none``                answer normally (to fault a later request, not this one)
``reset_after_store``   store the batch, then reset without answering
``close_after_store``   store the batch, then close (FIN) without answering
``hang``                answer nothing for ``hang_seconds``, then close (no store)
``slow_body``           store, send half the answer, pause ``hang_seconds``, finish
``short_body``          store, announce the full length, send half, close
``500``, ``503``, ...   that status, plain-text body (no store); any 3-digit code
``503:retry_after=2``   that status with ``Retry-After: 2`` (any value after ``=``)
``401``, ``403``        refused token (no store)
``414``                 request URI too long (no store)
``html200``             200 with a captive-portal HTML page (no store)
``truncated``           store, answer with the JSON cut in half (complete HTTP)
``wrong_length``        store, answer without the last result
``unmatched_last``      store, echo a wrong rfidTag in the last result
``not_list``            200 with a JSON object (no store)
``not_objects``         200 with a list of numbers of the right length (no store)
``malformed_deep``      200 with ``[`` x 100000 (no store)
``huge_number``         200 with a 5000-digit integer in a list (no store)
=====================  ==========================================================

``ssl_context`` (server side) makes it serve HTTPS, for TLS verification tests.

``mode = "down"`` stops listening (connections are refused) and shuts every
open connection; ``mode = "up"`` listens again on the same port.

Opt-in modes (attributes, also constructor keywords; every one is off by
default, so the defaults answer exactly as above). They act on every request
until switched off, after a queued fault (which still comes first):

=========================  ====================================================
``latency_s = 0.05``        every request (GET and HEAD) waits that long before
                            it is answered (a WAN round trip)
``outage = 503``            every GET answers that status (Laravel's page, see
                            ``error_pages``), nothing stored: iFlow down
``poison_tags = {"X"}``     a batch holding one of these tags is refused as a
``poison_longer_than = N``  whole (or holding a tag longer than N chars):
``poison_status = 500``     500 (Laravel's "Server Error" page) or 422
                            (Laravel's validation JSON ``{"message": ...,
                            "errors": {"csv_data.I.rfidTag": [...]}}``);
                            nothing stored, unless ``poison_stores_before``
                            (no database transaction: the records before the
                            poison one are stored, then the error)
``error_pages = "json"``    how Laravel writes a 5xx: "json" (``{"message":
                            "Server Error"}``, what ``Accept: application/json``
                            gets), "html" (its error page), "debug"
                            (APP_DEBUG's exception JSON with the database's
                            own message)
``echo = {...}``            results echo fields as PHP may: "tag_number"
                            (an all-digit tag as a JSON number), "hour_no_zero"
                            (``8:05:07``), "no_seconds" (``08:05``),
                            "reversed" (results in reverse order)
``echo_date = "%d.%m.%Y"``  results echo the date in this strftime format
``extra_fields = {...}``    merged into every result (``{"error_code": 0}``)
``error_msgs = {tag: t}``   a record with that tag is not stored; its result
                            has ``errorMsg`` = t and every ``error_*`` empty
``object_answer = {...}``   every GET answers 200 with this JSON object,
                            nothing stored (``{"message": "Unauthenticated."}``)
``wrap_data = True``        results are stored and answered as ``{"data":
                            [...]}`` (a Laravel API resource)
``date_offset_s = 60``      the server's clock is that far ahead (its ``Date``)
``send_date = False``       answers carry no ``Date`` (RFC 9110 allows it only
                            for a server without a clock)
``log_requests = True``     :attr:`IflowStandin.request_log` lists every GET
                            and HEAD as (method, time.time(), target) in the
                            order they arrived (what came before the time was
                            learned)
=========================  ====================================================

Every answer carries a ``Date`` header from the stand-in's clock, as nginx
and Apache write one on every response, HEAD and errors included.

A batch ``csv_data=[]`` is answered ``[]`` (200, nothing stored); ``HEAD``
on any path is answered 200 with no body. :attr:`IflowStandin.requests`
counts GETs, :attr:`IflowStandin.head_requests` HEADs;
:attr:`IflowStandin.last_target` is the request target of the last GET, as
received.

Run: ``python -m standins.iflow --port 8080 --token T --known-cards 1,2,3``.
"""

from __future__ import annotations

import argparse
import collections
import datetime as _dt
import email.utils
import hmac
import json
import re
import selectors
import signal
import socket
import ssl
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from standins import laravel

__all__ = ["IflowStandin", "ENDPOINT", "main"]

ENDPOINT = "/api/rfid_v2/offline_attendance/store_attendances"
DUPLICATE = "Nu se poate adăuga - prezență duplicată: {id}"
UNKNOWN_CARD = "Niciun angajat nu este asociat acestei cartele de tip RFID: {tag}"
BAD_CSV = "Format invalid pentru data sau ora: {date} {time}"

_DATE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})")
_TIME = re.compile(r"([0-9]{2}):([0-9]{2}):([0-9]{2})")
_STORING_FAULTS = {
    "reset_after_store",
    "close_after_store",
    "slow_body",
    "short_body",
    "truncated",
    "wrong_length",
    "unmatched_last",
}
_PORTAL = (
    b"<!DOCTYPE html><html><head><title>Wi-Fi login</title></head>"
    b"<body><h1>Please log in to use the hotspot</h1><form action='/login'></form></body></html>"
)


def _valid_date(value: object) -> bool:
    if not isinstance(value, str):
        return False
    m = _DATE.fullmatch(value)
    if not m:
        return False
    try:
        _dt.date(int(m[1]), int(m[2]), int(m[3]))
    except ValueError:
        return False
    return True


def _valid_time(value: object) -> bool:
    if not isinstance(value, str):
        return False
    m = _TIME.fullmatch(value)
    return bool(m) and int(m[1]) < 24 and int(m[2]) < 60 and int(m[3]) < 60


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    standin: IflowStandin

    def server_activate(self) -> None:
        super().server_activate()
        self._wake_r, self._wake_w = socket.socketpair()
        self._stop = False

    def serve(self) -> None:
        """Accept until :meth:`halt`; sleeps in select() without polling."""
        with selectors.DefaultSelector() as selector:
            selector.register(self, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            while not self._stop:
                for key, _ in selector.select():
                    if key.fileobj is self and not self._stop:
                        self._handle_request_noblock()

    def halt(self) -> None:
        self._stop = True
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass

    def server_close(self) -> None:
        super().server_close()
        self._wake_r.close()
        self._wake_w.close()

    def handle_error(self, request, client_address) -> None:  # noqa: ANN001
        # Resets and hang-ups are the point of this server; stay quiet.
        if self.standin.verbose:
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "iflow-standin/1"
    disable_nagle_algorithm = True
    server: _Server

    # -- plumbing ------------------------------------------------------------

    def setup(self) -> None:
        super().setup()
        self.server.standin._track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass
        finally:
            self.server.standin._track(self.connection, False)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        if self.server.standin.verbose:
            from agent.redact import redact

            sys.stderr.write(redact(f"{self.address_string()} {format % args}") + "\n")

    def _reply(self, status: int, body: bytes, content_type: str, extra: dict[str, str] | None = None,
               close: bool = False) -> None:
        head = [f"HTTP/1.1 {status} {self.responses.get(status, ('Status',))[0]}",
                f"Server: {self.server_version}", *self._date(),
                f"Content-Type: {content_type}",
                f"Content-Length: {len(body)}"]
        for name, value in (extra or {}).items():
            head.append(f"{name}: {value}")
        if close:
            head.append("Connection: close")
            self.close_connection = True
        data = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
        try:
            self.wfile.write(data)  # one write: no Nagle/delayed-ACK stall
        except OSError:
            self.close_connection = True
        self.log_request(status, len(body))

    def _date(self) -> list[str]:
        """The Date header every real server sends (RFC 9110 §6.6.1), from the
        stand-in's own clock: the real one plus ``date_offset_s``; none if ``send_date`` is off."""
        st = self.server.standin
        if not st.send_date:
            return []
        return [f"Date: {email.utils.formatdate(time.time() + st.date_offset_s, usegmt=True)}"]

    def _json(self, status: int, value: object, **kw: object) -> None:
        body = json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        self._reply(status, body, "application/json; charset=utf-8", **kw)  # type: ignore[arg-type]

    def _reset(self) -> None:
        """Abort the connection with a TCP RST."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.rfile.close()  # drop makefile's reference so close() is real
            self.connection.close()
        except OSError:
            pass

    def _read_body(self) -> bytes | None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            return None
        if length < 0 or length > 64 * 1024 * 1024:
            return None
        return self.rfile.read(length) if length else b""

    # -- the endpoint ----------------------------------------------------------

    def do_POST(self) -> None:  # noqa: N802
        self._read_body()
        self._json(405, {"error": "method not allowed"}, extra={"Allow": "GET"})

    def do_HEAD(self) -> None:  # noqa: N802
        st = self.server.standin
        with st._lock:
            st._heads += 1
            st._log("HEAD", self.path)
        self._read_body()
        if st.latency_s > 0:
            st._stopping.wait(st.latency_s)
        crlf = "\r\n"
        head = (f"HTTP/1.1 200 OK\r\nServer: {self.server_version}\r\n{''.join(d + crlf for d in self._date())}"
                "Content-Type: text/plain; charset=utf-8\r\nContent-Length: 0\r\n\r\n")
        try:
            self.wfile.write(head.encode("latin-1"))
        except OSError:
            self.close_connection = True
        self.log_request(200, 0)

    def do_GET(self) -> None:  # noqa: N802
        st = self.server.standin
        st._count(self.path)
        body = self._read_body()  # keep the connection in sync even in query mode
        if st.mode == "down":
            self._reset()
            return
        if st.latency_s > 0:
            st._stopping.wait(st.latency_s)
        fault = st._next_fault()
        if fault is not None and self._fault_before(fault):
            return
        if st.outage is not None:
            self._laravel_error(st.outage)
            return

        full_url = f"http://{self.headers.get('Host', '')}{self.path}"
        if len(full_url) > st.max_url_bytes:
            self._reply(414, b"Request-URI Too Long", "text/plain", close=True)
            return
        split = urlsplit(self.path)
        if split.path != ENDPOINT:
            self._json(404, {"error": "not found"})
            return
        query = parse_qs(split.query, keep_blank_values=True)
        token = query.get("access_token", [""])[0]
        if not hmac.compare_digest(token.encode("utf-8", "replace"), st.token.encode("utf-8")):
            self._json(401, {"error": "invalid access_token"})
            return

        if st.csv_data_in == "json-body":
            raw: str | None = None if body is None else body.decode("utf-8", "replace")
        else:
            raw = query.get("csv_data", [None])[0]
        if not raw:
            self._json(400, {"error": "csv_data missing"})
            return
        try:
            records = json.loads(raw)
        except (ValueError, RecursionError):
            self._json(400, {"error": "csv_data is not valid JSON"})
            return
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            self._json(400, {"error": "csv_data must be a JSON array of objects"})
            return

        if st.object_answer is not None:
            self._json(200, st.object_answer)
            return
        poison = st._poison(records)
        if poison is not None:
            if st.poison_stores_before:
                st._store(records[:poison])
            self._poisoned(records, poison)
            return
        results = st._echo(st._store(records))
        if fault is not None:
            self._fault_after(fault, results)
            return
        self._json(200, {"data": results} if st.wrap_data else results)

    # -- Laravel's answers -------------------------------------------------------

    def _laravel_error(self, status: int, detail: str | None = None) -> None:
        body, content_type = laravel.error_page(status, self.server.standin.error_pages, detail)
        self._reply(status, body, content_type)

    def _poisoned(self, records: list[dict], index: int) -> None:
        st = self.server.standin
        tag = records[index].get("rfidTag")
        field = f"csv_data.{index}.rfidTag"
        if st.poison_status == 422:
            if st.poison_longer_than is not None and isinstance(tag, str) and len(tag) > st.poison_longer_than:
                text = f"The {field} field must not be greater than {st.poison_longer_than} characters."
            else:
                text = f"The selected {field} is invalid."
            self._json(422, laravel.validation_error(field, text))
            return
        detail = ("SQLSTATE[22001]: String data, right truncated: 1406 Data too long for column 'rfid_tag' "
                  "at row 1 (Connection: mysql, SQL: insert into `attendances` ...)")
        self._laravel_error(st.poison_status, detail)

    # -- faults ------------------------------------------------------------------

    def _fault_before(self, fault: str) -> bool:
        """Apply a fault that needs no storing; True when the request is done."""
        st = self.server.standin
        if fault in _STORING_FAULTS:
            return False
        if fault == "reset_before":
            self._reset()
        elif fault == "hang":
            st._stopping.wait(st.hang_seconds)
            self._reset()
        elif fault == "html200":
            self._reply(200, _PORTAL, "text/html; charset=utf-8")
        elif fault == "not_list":
            self._json(200, {"status": "ok", "message": "stored"})
        elif fault == "not_objects":
            self._json(200, [1, 2, 3])
        elif fault == "malformed_deep":
            self._reply(200, b"[" * 100_000, "application/json")
        elif fault == "huge_number":
            self._reply(200, b"[" + b"9" * 5000 + b"]", "application/json")
        elif re.fullmatch(r"[0-9]{3}(:retry_after=.*)?", fault):
            status = int(fault[:3])
            extra = {}
            if ":retry_after=" in fault:
                extra["Retry-After"] = fault.split(":retry_after=", 1)[1]
            body = f"stand-in fault {status}".encode()
            self._reply(status, body, "text/plain; charset=utf-8", extra=extra, close=status in (414, 431))
        else:
            self._reply(500, f"unknown stand-in fault {fault!r}".encode(), "text/plain")
        return True

    def _fault_after(self, fault: str, results: list[dict]) -> None:
        st = self.server.standin
        body = json.dumps(results, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        if fault == "reset_after_store":
            self._reset()
        elif fault == "close_after_store":
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        elif fault == "truncated":
            self._reply(200, body[: max(1, len(body) // 2)], "application/json")
        elif fault == "wrong_length":
            self._json(200, results[:-1])
        elif fault == "unmatched_last":
            if results:
                results[-1] = dict(results[-1], rfidTag=f"{results[-1].get('rfidTag')}-other")
            self._json(200, results)
        elif fault in ("slow_body", "short_body"):
            head = (f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n").encode("latin-1")
            half = len(body) // 2
            self.close_connection = True
            try:
                self.wfile.write(head + body[:half])
                if fault == "slow_body":
                    st._stopping.wait(st.hang_seconds)
                    self.wfile.write(body[half:])
            except OSError:
                pass


class IflowStandin:
    """The stand-in server; use as a context manager or start()/stop()."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str = "demo-token",
        known_cards: set[str] | None = None,
        csv_data_in: str = "query",
        max_url_bytes: int = 8192,
        hang_seconds: float = 3.0,
        verbose: bool = False,
        ssl_context: ssl.SSLContext | None = None,
        latency_s: float = 0.0,
        outage: int | None = None,
        poison_tags: set[str] | None = None,
        poison_longer_than: int | None = None,
        poison_status: int = 500,
        poison_stores_before: bool = False,
        error_pages: str = "json",
        echo: set[str] | None = None,
        echo_date: str | None = None,
        extra_fields: dict | None = None,
        error_msgs: dict[str, str] | None = None,
        object_answer: dict | None = None,
        wrap_data: bool = False,
        date_offset_s: float = 0.0,
        send_date: bool = True,
        log_requests: bool = False,
    ) -> None:
        if csv_data_in not in ("query", "json-body"):
            raise ValueError("csv_data_in must be 'query' or 'json-body'")
        self.host = host
        self.port = port
        self.token = token
        self.known_cards = None if known_cards is None else set(known_cards)
        self.csv_data_in = csv_data_in
        self.max_url_bytes = max_url_bytes
        self.hang_seconds = hang_seconds
        self.verbose = verbose
        self.ssl_context = ssl_context
        self.faults: collections.deque[str] = collections.deque()
        self.latency_s = latency_s
        self.date_offset_s = date_offset_s
        self.send_date = send_date
        self.log_requests = log_requests
        self.request_log: list[tuple[str, float, str]] = []
        self.outage = outage
        self.poison_tags = set(poison_tags or ())
        self.poison_longer_than = poison_longer_than
        self.poison_status = poison_status
        self.poison_stores_before = poison_stores_before
        self.error_pages = error_pages
        self.echo = set(echo or ())
        self.echo_date = echo_date
        self.extra_fields = dict(extra_fields or {})
        self.error_msgs = dict(error_msgs or {})
        self.object_answer = object_answer
        self.wrap_data = wrap_data
        self._heads = 0
        self.last_target: str | None = None
        self._lock = threading.Lock()
        self._stored: list[dict] = []
        self._index: dict[tuple[str, str, str], int] = {}
        self._next_id = 53201
        self._requests = 0
        self._connections = 0
        self._mode = "up"
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._conns: set[socket.socket] = set()
        self._stopping = threading.Event()

    # -- lifecycle -----------------------------------------------------------

    @property
    def url(self) -> str:
        if not self.port:
            raise RuntimeError("the stand-in is not started")
        host = f"[{self.host}]" if ":" in self.host else self.host
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://{host}:{self.port}{ENDPOINT}"

    def _listen(self) -> None:
        server = _Server((self.host, self.port), _Handler)
        server.standin = self
        if self.ssl_context is not None:
            server.socket = self.ssl_context.wrap_socket(server.socket, server_side=True)
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve, name="iflow-standin", daemon=True)
        self._thread.start()

    def _unlisten(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.halt()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if server is not None:
            server.server_close()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def start(self) -> IflowStandin:
        if self._server is None:
            self._stopping.clear()
            self._listen()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._unlisten()

    def __enter__(self) -> IflowStandin:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, value: str) -> None:
        if value not in ("up", "down"):
            raise ValueError("mode is 'up' or 'down'")
        if value == self._mode:
            return
        self._mode = value
        if value == "down":
            self._unlisten()
        elif not self._stopping.is_set():
            self._listen()

    # -- state -----------------------------------------------------------------

    @property
    def stored(self) -> list[dict]:
        """A snapshot of every stored attendance."""
        with self._lock:
            return list(self._stored)

    @property
    def stored_count(self) -> int:
        with self._lock:
            return len(self._stored)

    @property
    def requests(self) -> int:
        with self._lock:
            return self._requests

    @property
    def connections(self) -> int:
        """How many TCP connections were accepted (keep-alive shows as few)."""
        with self._lock:
            return self._connections

    @property
    def head_requests(self) -> int:
        with self._lock:
            return self._heads

    def _count(self, target: str) -> None:
        with self._lock:
            self._requests += 1
            self.last_target = target
            self._log("GET", target)

    def _log(self, method: str, target: str) -> None:
        """Under ``_lock``: one line of :attr:`request_log` when ``log_requests``."""
        if self.log_requests:
            self.request_log.append((method, time.time(), target))

    def _poison(self, records: list[dict]) -> int | None:
        """Index of the first record that makes the whole batch fail, or None."""
        if not self.poison_tags and self.poison_longer_than is None:
            return None
        for i, rec in enumerate(records):
            tag = rec.get("rfidTag")
            if tag in self.poison_tags or (
                self.poison_longer_than is not None and isinstance(tag, str) and len(tag) > self.poison_longer_than
            ):
                return i
        return None

    def _echo(self, results: list[dict]) -> list[dict]:
        if self.extra_fields:
            results = [dict(r, **self.extra_fields) for r in results]
        if self.echo or self.echo_date:
            results = [laravel.echo(r, self.echo, self.echo_date) for r in results]
        if "reversed" in self.echo:
            results.reverse()
        return results

    def _track(self, conn: socket.socket, add: bool) -> None:
        with self._lock:
            if add:
                self._conns.add(conn)
                self._connections += 1
            else:
                self._conns.discard(conn)

    def _next_fault(self) -> str | None:
        try:
            fault = self.faults.popleft()
        except IndexError:
            return None
        return None if fault == "none" else fault

    def _store(self, records: list[dict]) -> list[dict]:
        results = []
        known = self.known_cards
        with self._lock:
            for rec in records:
                date, time_, tag = rec.get("date"), rec.get("time"), rec.get("rfidTag")
                result = {
                    "date": date,
                    "time": time_,
                    "rfidTag": tag,
                    "errorMsg": "",
                    "error_authenticate": "",
                    "error_check_in_out": "",
                    "error_csv": "",
                }
                if not (_valid_date(date) and _valid_time(time_) and isinstance(tag, str)):
                    result["error_csv"] = BAD_CSV.format(date=date, time=time_)
                elif tag in self.error_msgs:
                    result["errorMsg"] = self.error_msgs[tag]
                elif not tag or (known is not None and tag not in known):
                    result["error_authenticate"] = UNKNOWN_CARD.format(tag=tag)
                else:
                    triple = (date, time_, tag)
                    existing = self._index.get(triple)
                    if existing is not None:
                        result["error_check_in_out"] = DUPLICATE.format(id=existing)
                    else:
                        ident = self._next_id
                        self._next_id += 1
                        self._index[triple] = ident
                        self._stored.append({"date": date, "time": time_, "rfidTag": tag, "id": ident})
                results.append(result)
        return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m standins.iflow", description="Local iFlow stand-in server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--token", default="demo-token")
    parser.add_argument("--known-cards", default=None, help="comma-separated card tags (default: every card)")
    parser.add_argument("--csv-data-in", choices=("query", "json-body"), default="query")
    parser.add_argument("--max-url-bytes", type=int, default=8192)
    parser.add_argument("--verbose", action="store_true", help="log every request (token redacted)")
    args = parser.parse_args(argv)
    known = None if args.known_cards is None else {c.strip() for c in args.known_cards.split(",") if c.strip()}

    done = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: done.set())
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    try:
        standin = IflowStandin(
            host=args.host,
            port=args.port,
            token=args.token,
            known_cards=known,
            csv_data_in=args.csv_data_in,
            max_url_bytes=args.max_url_bytes,
            verbose=args.verbose,
        ).start()
    except OSError as exc:
        print(f"cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    print(standin.url, flush=True)
    try:
        done.wait()
    finally:
        standin.stop()
        print(f"stored {standin.stored_count} attendances in {standin.requests} requests", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
