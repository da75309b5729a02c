"""A local stand-in for the CrossChex Cloud API (tests and demos).

A real HTTP server on 127.0.0.1 (``ThreadingHTTPServer``, port 0 by default)
that speaks the two calls the agent uses, ``authorize.token`` and
``attendance.record/getrecord``, as the contract describes them
(/work/shared/api/crosschex-cloud.md), plus switchable misbehaviour:

* records given by the test (list of dicts shaped like the API's list
  elements), filtered by ``begin_time``/``end_time`` and served in the given
  order (``order="desc"`` reverses), with real paging (``page``, ``per_page``
  <= ``max_per_page``, ``pageCount``);
* tokens with a configurable lifetime; ``expire_token_after_calls=N``: after
  N successful getrecord calls with one token, that token is revoked and the
  next call gets ``TOKEN_EXPIRES`` (fires once); unknown tokens also get
  ``TOKEN_EXPIRES``;
* wrong api_key/api_secret -> ``AUTH_ERROR``;
* ``min_interval_s``: calls closer together than that get ``FREQUENT_REQUEST``;
* one-shot faults, queued with :meth:`queue_fault` (see :data:`FAULTS`);
* ``wrapped=True`` answers ``{"code": 200, "data": {"header", "payload"}}``.

Counters: ``calls[nameSpace]`` (every request, faulted or not), ``requests``
(every parsed request body, in order), ``issued`` (every token handed out).

``python -m standins.crosschex`` serves a demo data set until Ctrl-C.
"""

from __future__ import annotations

import json
import math
import secrets
import threading
import time
import uuid
from collections import Counter, deque
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterable

__all__ = ["CrossChexStandIn", "FAULTS", "make_record"]

#: One-shot faults for :meth:`CrossChexStandIn.queue_fault`.
FAULTS = frozenset(
    {
        "frequent",  # FREQUENT_REQUEST exception envelope
        "token_expires",  # TOKEN_EXPIRES exception envelope (token stays valid)
        "auth_error",  # AUTH_ERROR exception envelope
        "html",  # 200 text/html captive-portal page
        "html500",  # 500 text/html error page
        "truncated",  # the real answer cut in half (Content-Length matches the cut)
        "no_pagecount",  # the real answer without payload.pageCount
        "not_object",  # a JSON array
        "unknown_exception",  # exception envelope of a type the client does not know
    }
)

_NS_TOKEN = "authorize.token"
_NS_RECORD = "attendance.record"


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat(timespec="seconds")


def make_record(
    workno: str | int,
    checktime: datetime | str,
    *,
    first_name: str = "",
    last_name: str = "",
    serial: str = "1750120622290025",
    device_name: str = "FaceDeep3-IRT10",
    checktype: int | None = 128,
    **extra: Any,
) -> dict:
    """A list element shaped like the API's (``extra`` merges into ``employee``)."""
    employee: dict[str, Any] = {"first_name": first_name, "last_name": last_name, "workno": str(workno)}
    employee.update(extra)
    return {
        "checktype": checktype,
        "checktime": checktime if isinstance(checktime, str) else _iso(checktime),
        "device": {"serial_number": serial, "name": device_name},
        "employee": employee,
    }


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        return None
    return dt if dt.tzinfo is not None else None


def _as_int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 9:
        return int(value)
    return None


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are separate writes: avoid the 40 ms delayed-ACK stall

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence stderr
        pass

    def do_POST(self) -> None:  # noqa: N802
        length = _as_int(self.headers.get("Content-Length", "0")) or 0
        body = self.rfile.read(min(length, 1 << 20))
        status, ctype, data = self.server.owner._handle(body)
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802
        data = b"<html><body>CrossChex stand-in: POST JSON here</body></html>"
        self.send_response(405)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: CrossChexStandIn


class CrossChexStandIn:
    """See the module docstring.  Use as a context manager or start()/stop()."""

    def __init__(
        self,
        records: Iterable[dict] = (),
        *,
        api_key: str = "standin-api-key",
        api_secret: str = "standin-api-secret",
        token_lifetime_s: float = 3 * 86400,
        expire_token_after_calls: int | None = None,
        min_interval_s: float = 0.0,
        wrapped: bool = False,
        max_per_page: int = 1000,
        host: str = "127.0.0.1",
        port: int = 0,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.records: list[dict] = list(records)
        self.api_key = api_key
        self.api_secret = api_secret
        self.token_lifetime_s = token_lifetime_s
        self.expire_token_after_calls = expire_token_after_calls
        self.min_interval_s = min_interval_s
        self.wrapped = wrapped
        self.max_per_page = max_per_page
        self.now = now
        self.calls: Counter[str] = Counter()
        self.requests: list[Any] = []
        self.tokens: dict[str, datetime] = {}  # live token -> expiry
        self.issued: list[str] = []  # every token ever handed out
        self._uses: Counter[str] = Counter()
        self._expiry_fired = False
        self._faults: deque[tuple[str, str | None]] = deque()
        self._last_call: float | None = None
        self._lock = threading.Lock()
        self._host, self._port = host, port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- control

    def queue_fault(self, fault: str, *, namespace: str | None = None) -> None:
        """Answer the next call (of ``namespace``, if given) with ``fault``."""
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; one of {sorted(FAULTS)}")
        with self._lock:
            self._faults.append((fault, namespace))

    def expire_all_tokens(self) -> None:
        with self._lock:
            self.tokens.clear()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("stand-in not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/"

    def start(self) -> CrossChexStandIn:
        if self._server is not None:
            return self
        server = _Server((self._host, self._port), _Handler)
        server.owner = self
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> CrossChexStandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- answers

    def _envelope(self, namespace: str, action: str, payload: dict, request_id: object) -> dict:
        env = {
            "header": {
                "nameSpace": namespace,
                "nameAction": action,
                "version": "1.0",
                "requestId": request_id if isinstance(request_id, str) else str(uuid.uuid4()),
                "timestamp": _iso(self.now()),
            },
            "payload": payload,
        }
        if self.wrapped:
            return {"code": 200, "data": env, "description": "", "error": {}}
        return env

    def _exception(self, etype: str, message: str, request_id: object) -> dict:
        env = self._envelope("System", "Exception", {"type": etype, "message": message}, request_id)
        (env["data"] if self.wrapped else env)["header"]["name"] = "Exception"
        return env

    def _take_fault(self, namespace: str) -> str | None:
        for i, (fault, ns) in enumerate(self._faults):
            if ns is None or ns == namespace:
                del self._faults[i]
                return fault
        return None

    def _handle(self, body: bytes) -> tuple[int, str, bytes]:
        try:
            req = json.loads(body.decode("utf-8"))
        except (ValueError, RecursionError):
            req = None
        with self._lock:
            self.requests.append(req)
            header = req.get("header") if isinstance(req, dict) else None
            if not isinstance(header, dict):
                self.calls["?"] += 1
                return self._json(400, self._exception("PARAMETER_ERROR", "request is not an API envelope", None))
            ns, action, rid = header.get("nameSpace"), header.get("nameAction"), header.get("requestId")
            self.calls[str(ns)] += 1
            now_mono = time.monotonic()
            too_soon = self._last_call is not None and now_mono - self._last_call < self.min_interval_s
            self._last_call = now_mono
            if too_soon:
                return self._json(200, self._exception("FREQUENT_REQUEST", "Request too frequent", rid))
            fault = self._take_fault(str(ns))
            if fault == "html":
                return 200, "text/html", b"<!DOCTYPE html><html><body><h1>Welcome to the hotel Wi-Fi</h1></body></html>"
            if fault == "html500":
                return 500, "text/html", b"<html><body><h1>500 Internal Server Error</h1></body></html>"
            if fault == "not_object":
                return 200, "application/json", b"[1, 2, 3]"
            if fault in ("frequent", "token_expires", "auth_error", "unknown_exception"):
                etype = {
                    "frequent": "FREQUENT_REQUEST",
                    "token_expires": "TOKEN_EXPIRES",
                    "auth_error": "AUTH_ERROR",
                    "unknown_exception": "SERVER_BUSY",
                }[fault]
                return self._json(200, self._exception(etype, f"stand-in fault {fault}", rid))
            if (ns, action) == (_NS_TOKEN, "token"):
                answer = self._token(req, rid)
            elif (ns, action) == (_NS_RECORD, "getrecord"):
                answer = self._getrecord(req, rid)
            else:
                answer = self._exception("PARAMETER_ERROR", f"unknown call {ns}/{action}", rid)
            if fault == "no_pagecount":
                inner = answer["data"] if self.wrapped else answer
                inner["payload"].pop("pageCount", None)
            status, ctype, data = self._json(200, answer)
            if fault == "truncated":
                data = data[: len(data) // 2]
            return status, ctype, data

    @staticmethod
    def _json(status: int, obj: object) -> tuple[int, str, bytes]:
        return status, "application/json", json.dumps(obj).encode()

    def _token(self, req: dict, rid: object) -> dict:
        payload = req.get("payload")
        if not isinstance(payload, dict) or (payload.get("api_key"), payload.get("api_secret")) != (
            self.api_key,
            self.api_secret,
        ):
            return self._exception("AUTH_ERROR", "api_key or api_secret is wrong", rid)
        token = "standin." + secrets.token_hex(24)
        expires = self.now() + timedelta(seconds=self.token_lifetime_s)
        self.tokens[token] = expires
        self.issued.append(token)
        return self._envelope(_NS_TOKEN, "token", {"token": token, "expires": _iso(expires)}, rid)

    def _getrecord(self, req: dict, rid: object) -> dict:
        auth = req.get("authorize")
        token = auth.get("token") if isinstance(auth, dict) and auth.get("type") == "token" else None
        if not isinstance(token, str) or token not in self.tokens or self.now() >= self.tokens[token]:
            return self._exception("TOKEN_EXPIRES", "token expired", rid)
        limit = self.expire_token_after_calls
        if limit is not None and not self._expiry_fired and self._uses[token] >= limit:
            self._expiry_fired = True
            del self.tokens[token]
            return self._exception("TOKEN_EXPIRES", "token expired", rid)
        payload = req.get("payload")
        if not isinstance(payload, dict):
            return self._exception("PARAMETER_ERROR", "payload missing", rid)
        begin, end = _parse_time(payload.get("begin_time")), _parse_time(payload.get("end_time"))
        page, per_page = _as_int(payload.get("page")), _as_int(payload.get("per_page"))
        if begin is None or end is None:
            return self._exception("PARAMETER_ERROR", "begin_time/end_time must be ISO 8601 with offset", rid)
        if page is None or page < 1 or per_page is None or not 1 <= per_page <= self.max_per_page:
            return self._exception("PARAMETER_ERROR", f"page >= 1 and 1 <= per_page <= {self.max_per_page}", rid)
        self._uses[token] += 1
        workno = payload.get("workno")
        selected = []
        for rec in self.records:
            t = _parse_time(rec.get("checktime")) if isinstance(rec, dict) else None
            if t is not None and not begin <= t <= end:
                continue  # records with unreadable times are always served (to test the client)
            if workno not in (None, "") and isinstance(rec, dict):
                emp = rec.get("employee")
                if not isinstance(emp, dict) or str(emp.get("workno")) != str(workno):
                    continue
            selected.append(rec)
        if payload.get("order") == "desc":
            selected.reverse()
        count = len(selected)
        page_count = math.ceil(count / per_page)
        chunk = selected[(page - 1) * per_page : page * per_page]
        return self._envelope(
            _NS_RECORD,
            "getrecord",
            {"count": count, "list": chunk, "page": page, "perPage": per_page, "pageCount": page_count},
            rid,
        )


def _demo() -> None:  # pragma: no cover - manual demo
    import argparse

    parser = argparse.ArgumentParser(description="Serve a CrossChex Cloud stand-in with demo records.")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--records", type=int, default=25, help="number of demo records (last 24 h)")
    parser.add_argument("--api-key", default="demo-key")
    parser.add_argument("--api-secret", default="demo-secret")
    args = parser.parse_args()
    now = datetime.now(UTC).replace(microsecond=0)
    recs = [
        make_record(1000 + i % 5, now - timedelta(hours=24) + timedelta(minutes=57 * i), first_name=f"Demo{i % 5}")
        for i in range(args.records)
    ]
    with CrossChexStandIn(recs, api_key=args.api_key, api_secret=args.api_secret, port=args.port) as srv:
        print(f"CrossChex stand-in at {srv.url} (api_key={args.api_key}, api_secret={args.api_secret}); Ctrl-C stops")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":  # pragma: no cover
    _demo()
