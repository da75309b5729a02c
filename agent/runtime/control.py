"""The daemon's control socket: how a command asks the one writer.

The daemon answers on ``<state_dir>/agent.sock`` (newline-delimited JSON, one
request per connection; a request may stream progress events before its
final answer) while it holds the journal's lock (:mod:`agent.journal.lock`).
A command such as ``agent status`` first asks it here; when none answers it
takes the same lock and opens the journal itself
(:func:`agent.runtime.access.dispatch`). Two processes therefore never write
the journal at once.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from typing import Any, Callable

from agent.errors import AgentError, CommandError, DaemonError, NoDaemon

log = logging.getLogger("agent.control")

SOCKET_NAME = "agent.sock"
MAX_LINE = 1 << 20

Handler = Callable[[dict, Callable[[dict], None]], dict]
UNIX_PATH_MAX = 100  # sun_path holds 108 bytes; leave room


class _ShortPath:
    """A socket path short enough for AF_UNIX, however deep the state directory:
    long paths go through ``/proc/self/fd/N/`` of an open directory descriptor."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None

    def __enter__(self) -> str:
        if len(os.fsencode(self.path)) <= UNIX_PATH_MAX:
            return self.path
        directory, name = os.path.split(self.path)
        self._fd = os.open(directory or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        return f"/proc/self/fd/{self._fd}/{name}"

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)



def _send_line(conn: socket.socket, obj: dict) -> None:
    conn.sendall(json.dumps(obj, separators=(",", ":"), default=str).encode() + b"\n")


class ControlServer:
    """Serves requests on the Unix socket, one short-lived thread per connection."""

    def __init__(self, state_dir: str, handlers: dict[str, Handler]) -> None:
        self.path = os.path.join(state_dir, SOCKET_NAME)
        self.handlers = handlers
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def start(self) -> None:
        # Only called while holding the state lock, so a socket file left here
        # belongs to a dead daemon.
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            with _ShortPath(self.path) as short:
                sock.bind(short)
        finally:
            os.umask(old)
        sock.listen(16)
        # Blocking accept: an idle daemon must not wake for nothing (a Pi Zero at
        # a door idles all day); stop() shuts the socket down to end the wait.
        self._sock = sock
        self._thread = threading.Thread(target=self._serve, name="control", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                if self._stop.is_set():
                    return
                time.sleep(0.1)
                continue
            threading.Thread(target=self._handle, args=(conn,), name="control-conn", daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(10)
            try:
                request = json.loads(_recv_line(conn))
                if not isinstance(request, dict):
                    raise ValueError("request must be a JSON object")
                handler = self.handlers.get(str(request.get("cmd")))
                if handler is None:
                    _send_line(conn, {"ok": False, "error": f"unknown command {request.get('cmd')!r}"})
                    return
                conn.settimeout(None)
                answer = handler(request, lambda event: _send_line(conn, {"event": event}))
                _send_line(conn, {"ok": True, "result": answer})
            except CommandError as exc:  # the operation's one-line answer (e.g. not configured)
                try:
                    _send_line(conn, {"ok": False, "error": str(exc)})
                except OSError:
                    pass
            except AgentError as exc:  # e.g. a journal write that failed: the daemon's log must show it
                log.error("control request failed: %s", exc)
                try:
                    _send_line(conn, {"ok": False, "error": str(exc)})
                except OSError:
                    pass
            except (OSError, ValueError) as exc:
                log.debug("control connection ended: %s", exc)
                try:
                    _send_line(conn, {"ok": False, "error": str(exc)})
                except OSError:
                    pass
            except Exception as exc:  # never let a request kill the daemon
                log.exception("control request failed")
                try:
                    _send_line(conn, {"ok": False, "error": f"internal error: {exc.__class__.__name__}"})
                except OSError:
                    pass

    def stop(self) -> None:
        self._stop.set()
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
            except OSError:
                pass
            self._sock.close()
        if self._thread is not None:
            self._thread.join(timeout=2)
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def _recv_line(conn: socket.socket) -> bytes:
    buf = bytearray()
    while True:
        chunk = conn.recv(65536)
        if not chunk:
            if buf:
                return bytes(buf)
            raise ConnectionError("connection closed")
        buf += chunk
        nl = buf.find(b"\n")
        if nl >= 0:
            return bytes(buf[:nl])
        if len(buf) > MAX_LINE:
            raise ValueError("line too long")



def ask(state_dir: str, request: dict, on_event: Callable[[Any], None] | None = None,
        timeout: float = 10.0) -> Any:
    """Send one request to the daemon. Returns its result, or raises
    :class:`NoDaemon` when no daemon listens, :class:`DaemonError` on an error
    answer. ``timeout`` bounds each wait for a line (progress keeps it alive)."""
    path = os.path.join(state_dir, SOCKET_NAME)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            with _ShortPath(path) as short:
                sock.connect(short)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise NoDaemon(str(exc)) from None
        _send_line(sock, request)
        reader = sock.makefile("rb")
        for line in reader:
            msg = json.loads(line)
            if "event" in msg:
                if on_event is not None:
                    on_event(msg["event"])
                continue
            if msg.get("ok"):
                return msg.get("result")
            raise DaemonError(msg.get("error", "unknown error"))
        raise DaemonError("the daemon closed the connection without an answer")
    finally:
        sock.close()

