"""agent.runtime.sdnotify against real AF_UNIX datagram sockets (path and abstract)."""

from __future__ import annotations

import logging
import os
import socket
import uuid

import pytest

from agent.runtime.sdnotify import (
    Heartbeat,
    Notifier,
    StatusLine,
    Watchdog,
    report_config_error,
)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for var in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def listener(tmp_path, monkeypatch):
    """A bound datagram socket standing in for systemd; NOTIFY_SOCKET points at it."""
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    yield sock
    sock.close()


def pending(sock: socket.socket) -> list[bytes]:
    """Every datagram waiting on ``sock``, without blocking."""
    out = []
    sock.setblocking(False)
    try:
        while True:
            out.append(sock.recv(4096))
    except BlockingIOError:
        pass
    finally:
        sock.settimeout(2)
    return out


def test_messages_arrive_on_a_path_socket(listener):
    n = Notifier()
    assert n.enabled
    assert n.notify("READY=1", "STATUS=journal open") is True
    assert listener.recv(4096) == b"READY=1\nSTATUS=journal open"
    n.ready("listening")
    assert listener.recv(4096) == b"READY=1\nSTATUS=listening"
    n.ready()
    assert listener.recv(4096) == b"READY=1"
    n.status("3 scans waiting")
    assert listener.recv(4096) == b"STATUS=3 scans waiting"
    n.stopping()
    assert listener.recv(4096) == b"STOPPING=1"


def test_abstract_socket_from_leading_at(monkeypatch):
    name = f"agent-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(2)
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        n = Notifier()
        assert n.enabled
        assert n.notify("WATCHDOG=1")
        assert sock.recv(4096) == b"WATCHDOG=1"
        # an explicit argument wins over the environment
        assert Notifier("@" + name).notify("STATUS=explicit")
        assert sock.recv(4096) == b"STATUS=explicit"
    finally:
        sock.close()


def test_newline_in_status_cannot_inject_a_second_assignment(listener):
    Notifier().status("bad card\nREADY=1")
    assert listener.recv(4096) == b"STATUS=bad card READY=1"


def test_utf8_status(listener):
    Notifier().status("prezență ok")
    assert listener.recv(4096) == "STATUS=prezență ok".encode()


def test_no_socket_is_a_silent_no_op():
    n = Notifier()
    assert not n.enabled
    assert n.notify("READY=1") is False
    n.ready("x")
    n.stopping()
    n.status("x")


def test_relative_path_is_refused(caplog):
    with caplog.at_level(logging.WARNING, logger="agent.sdnotify"):
        n = Notifier("relative/socket")
    assert not n.enabled
    assert "not a unix socket path" in caplog.text


def test_send_failure_never_raises_and_logs_once(tmp_path, caplog):
    n = Notifier(str(tmp_path / "nobody-listens"))
    assert n.enabled
    with caplog.at_level(logging.DEBUG, logger="agent.sdnotify"):
        for _ in range(3):
            assert n.notify("WATCHDOG=1") is False
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "sd_notify failed" in warnings[0].getMessage()


def test_failure_then_recovery(tmp_path, caplog):
    path = str(tmp_path / "later")
    n = Notifier(path)
    assert not n.notify("READY=1")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2)
    try:
        with caplog.at_level(logging.INFO, logger="agent.sdnotify"):
            assert n.notify("READY=1")
        assert sock.recv(4096) == b"READY=1"
        assert "works again" in caplog.text
    finally:
        sock.close()


@pytest.mark.parametrize(
    ("usec", "pid", "expected"),
    [
        ("30000000", None, 15.0),
        ("30000000", "self", 15.0),
        ("30000000", "other", None),
        ("1000000", None, 0.5),
        ("0", None, None),
        ("-5", None, None),
        ("soon", None, None),
        (None, None, None),
        ("30000000", "not-a-pid", None),
    ],
)
def test_watchdog_interval(monkeypatch, usec, pid, expected):
    if usec is not None:
        monkeypatch.setenv("WATCHDOG_USEC", usec)
    if pid == "self":
        monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    elif pid == "other":
        monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    elif pid is not None:
        monkeypatch.setenv("WATCHDOG_PID", pid)
    assert Notifier("/run/unused").watchdog_interval() == expected


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_watchdog_pings_while_healthy_and_stops_when_a_heartbeat_stalls(listener, caplog):
    clock = FakeClock()
    reader = Heartbeat("reader", max_age=20, clock=clock)
    uploader = Heartbeat("uploader", max_age=60, clock=clock)
    wd = Watchdog(Notifier(), [reader, uploader], interval=10)
    assert wd.enabled

    sent = 0
    # healthy for 60 s, ticking every second, both workers beating
    for _ in range(60):
        reader.beat()
        uploader.beat()
        wd.tick(clock.t)
        clock.t += 1
    got = pending(listener)
    assert got == [b"WATCHDOG=1"] * 6  # at most one ping per interval
    sent += len(got)

    # the reader thread hangs: its heartbeat stops advancing
    with caplog.at_level(logging.INFO, logger="agent.sdnotify"):
        for _ in range(60):
            uploader.beat()
            wd.tick(clock.t)
            clock.t += 1
        stalled = pending(listener)
        # pings continue only until the heartbeat is older than max_age (20 s)
        assert 1 <= len(stalled) <= 3
        assert wd.failure is not None and wd.failure.startswith("reader: no heartbeat")
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert errors, "the failing check is logged"
        assert all("reader" in r.getMessage() for r in errors)
        assert len(errors) <= 2  # rate-limited (log_every=30 s over ~40 s of failure)

        # 10 more minutes of hang: nothing at all is sent
        for _ in range(600):
            uploader.beat()
            wd.tick(clock.t)
            clock.t += 1
        assert pending(listener) == []

        # the reader recovers: pings resume at once, recovery is logged
        reader.beat()
        wd.tick(clock.t)
        assert pending(listener) == [b"WATCHDOG=1"]
        assert wd.failure is None
        assert "resume" in caplog.text


def test_check_results_false_string_and_exception(listener, caplog):
    state = {"result": True}

    def journal_writable():
        r = state["result"]
        if isinstance(r, Exception):
            raise r
        return r

    wd = Watchdog(Notifier(), [journal_writable], interval=5, log_every=0)
    t = 0.0
    with caplog.at_level(logging.ERROR, logger="agent.sdnotify"):
        for result, expect_ping, reason in [
            (True, True, None),
            (False, False, "journal_writable"),
            ("disk full", False, "journal_writable: disk full"),
            (OSError("EIO"), False, "journal_writable raised OSError: EIO"),
            (1, False, "journal_writable"),  # only True itself is healthy
            (True, True, None),
        ]:
            state["result"] = result
            wd.tick(t)
            assert pending(listener) == ([b"WATCHDOG=1"] if expect_ping else [])
            assert wd.failure == reason
            t += 5
    assert "disk full" in caplog.text and "OSError" in caplog.text


def test_watchdog_interval_from_environment(listener, monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "4000000")
    wd = Watchdog(Notifier(), [lambda: True])
    assert wd.interval == 2.0
    wd.tick(0.0)
    wd.tick(1.9)
    wd.tick(2.0)
    assert pending(listener) == [b"WATCHDOG=1", b"WATCHDOG=1"]


def test_watchdog_off_without_interval_or_socket(listener, tmp_path):
    calls = []

    def check():
        calls.append(1)
        return True

    Watchdog(Notifier(), [check]).tick(0.0)  # no WATCHDOG_USEC
    Watchdog(Notifier(""), [check], interval=1).tick(0.0)  # notifications off
    assert pending(listener) == []
    assert calls == []  # checks are not even run


def test_watchdog_with_real_monotonic_clock(listener):
    wd = Watchdog(Notifier(), [lambda: True], interval=0.05)
    import time

    end = time.monotonic() + 0.3
    while time.monotonic() < end:
        wd.tick()
        time.sleep(0.01)
    n = len(pending(listener))
    assert 4 <= n <= 7


def test_heartbeat_reason_text():
    clock = FakeClock()
    hb = Heartbeat("uploader", max_age=30, clock=clock)
    assert hb() is True
    clock.t += 31
    assert hb() == "no heartbeat for 31 s (limit 30 s)"
    hb.beat()
    assert hb() is True
    assert hb.__name__ == "uploader"


# ---------------------------------------------------------------- STATUS= line


def test_status_line_is_sent_on_change_only(listener):
    clock = FakeClock()
    line = StatusLine(Notifier(), min_interval=1.0, clock=clock)
    assert line.update("0 pending · reader door ok") is True
    for _ in range(5):  # the same text every loop: nothing is sent
        clock.t += 2
        assert line.update("0 pending · reader door ok") is False
    clock.t += 2
    assert line.update("1 pending · reader door ok") is True
    assert pending(listener) == [b"STATUS=0 pending \xc2\xb7 reader door ok",
                                 b"STATUS=1 pending \xc2\xb7 reader door ok"]
    assert line.sent == "1 pending · reader door ok"


def test_status_line_sends_at_most_once_per_interval_and_catches_up(listener):
    clock = FakeClock()
    line = StatusLine(Notifier(), min_interval=1.0, clock=clock)
    assert line.update("1 pending")
    clock.t += 0.3
    assert not line.update("2 pending")  # too soon: held back, not lost
    clock.t += 0.3
    assert not line.update("3 pending")
    clock.t += 0.5
    assert line.update("3 pending")  # the next loop after the interval sends the newest text
    assert pending(listener) == [b"STATUS=1 pending", b"STATUS=3 pending"]


def test_status_line_without_systemd_does_nothing():
    line = StatusLine(Notifier(), clock=FakeClock())
    assert line.update("1 pending") is False
    assert line.sent is None


def test_status_line_retries_a_failed_send(tmp_path):
    path = str(tmp_path / "later")
    clock = FakeClock()
    line = StatusLine(Notifier(path), min_interval=1.0, clock=clock)
    assert line.update("1 pending") is False  # nobody listens yet
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    try:
        clock.t += 1
        assert line.update("1 pending") is True  # unchanged text, but systemd never got it
        assert pending(sock) == [b"STATUS=1 pending"]
    finally:
        sock.close()


def test_config_error_goes_to_the_status_line(listener):
    assert report_config_error("/etc/rfid-agent/config.toml: timezone: unknown\ntime zone") is True
    assert listener.recv(4096) == b"STATUS=config error: /etc/rfid-agent/config.toml: timezone: unknown time zone"
    assert report_config_error("x", Notifier("")) is False  # outside systemd: nothing, no error
