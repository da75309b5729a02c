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

Run: ``python -m standins.iflow --port 8080 --token T --known-cards 1,2,3``.
"""

from __future__ import annotations

import argparse
import collections
import datetime as _dt
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
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

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
                f"Server: {self.server_version}",
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

    def do_GET(self) -> None:  # noqa: N802
        st = self.server.standin
        st._count()
        body = self._read_body()  # keep the connection in sync even in query mode
        if st.mode == "down":
            self._reset()
            return
        fault = st._next_fault()
        if fault is not None and self._fault_before(fault):
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

        results = st._store(records)
        if fault is not None:
            self._fault_after(fault, results)
            return
        self._json(200, results)

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

    def _count(self) -> None:
        with self._lock:
            self._requests += 1

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
