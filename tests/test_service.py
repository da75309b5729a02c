"""The daemon as a service: sd_notify READY/WATCHDOG, scan-to-feedback latency on mock pins,
GPIO absent, and a reader port that vanishes and returns."""

from __future__ import annotations

import os
import re
import socket
import statistics
import threading
import time
from datetime import UTC, datetime

from agent.commands.run import Daemon
from agent.config import from_dict
from agent.runtime.sdnotify import Notifier
from tests.support.harness import Daemon as DaemonProcess
from tests.support.harness import Pty, run_cli, wait_ready, write_config


class HangableReader:
    """A reader whose loop can be made to hang (it stops refreshing last_alive)."""

    def __init__(self, name="door"):
        self.name = name
        self.connected = True
        self.error = None
        self.last_alive = time.monotonic()
        self.hang = threading.Event()

    def run(self, stop, emit):
        while not stop.is_set():
            if self.hang.is_set():
                stop.wait(0.1)  # stuck: never refreshes last_alive
                continue
            self.last_alive = time.monotonic()
            stop.wait(0.1)


def notify_socket(tmp_path):
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(0.2)
    return path, sock


def messages(sock, seconds):
    out = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            out.append(sock.recv(4096).decode())
        except socket.timeout:
            pass
    return out


def test_ready_after_journal_then_watchdog_only_while_healthy(tmp_path, monkeypatch):
    path, sock = notify_socket(tmp_path)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("WATCHDOG_USEC", "400000")  # ping every 0.2 s
    cfg = from_dict({"timezone": "UTC", "state_dir": str(tmp_path / "state"),
                     "journal": {"allow_volatile": True}})  # /tmp may be a tmpfs on CI
    reader = HangableReader()
    d = Daemon(cfg, feedback=None, notifier=Notifier(), readers=[reader])
    d.feedback = __import__("agent.feedback", fromlist=["Feedback"]).Feedback()
    d.reader_stall_s = 1.0
    t = threading.Thread(target=d.run, daemon=True)
    t.start()
    try:
        first = messages(sock, 1.5)
        assert first and first[0].startswith("READY=1"), first
        assert os.path.exists(tmp_path / "state" / "journal")  # READY only once the journal is open
        assert sum("WATCHDOG=1" in m for m in first) >= 3
        reader.hang.set()
        messages(sock, 1.5)  # the stall threshold passes
        later = messages(sock, 1.5)
        assert not any("WATCHDOG=1" in m for m in later), later
        reader.hang.clear()
        assert any("WATCHDOG=1" in m for m in messages(sock, 1.5))  # healthy again: pings resume
    finally:
        d.stop_event.set()
        t.join(10)
        sock.close()
    assert not t.is_alive()


def test_scan_to_feedback_latency_through_the_serial_path(tmp_path):
    from gpiozero import Device
    from gpiozero.pins.mock import MockFactory, MockPWMPin

    from agent.feedback.gpio import GpioFeedback

    factory = MockFactory(pin_class=MockPWMPin)
    fb = GpioFeedback(green=17, red=27, buzzer=22, pin_factory=factory, time_scale=0.002)
    pty = Pty()
    cfg = from_dict({"timezone": "UTC", "state_dir": str(tmp_path / "state"),
                     "reader": {"port": pty.port, "debounce_seconds": 0},
                     "journal": {"allow_volatile": True}})  # /tmp may be a tmpfs on CI
    d = Daemon(cfg, feedback=fb, notifier=Notifier(None))
    t = threading.Thread(target=d.run, daemon=True)
    t.start()
    green = factory.pin(17)
    latencies = []
    try:
        assert d.ready.wait(10)
        deadline = time.monotonic() + 10
        while not (d.readers and all(r.connected for r in d.readers)) and time.monotonic() < deadline:
            time.sleep(0.01)
        for i in range(150):
            green.clear_states()
            sent = time.monotonic()
            pty.send(f"LAT{i:05d}\r\n".encode())  # the tag's last byte leaves now
            # MockPin timestamps are deltas, so observe the pin going high (0.2 ms polling)
            while not any(s.state for s in green.states) and time.monotonic() - sent < 2:
                time.sleep(0.0002)
            latencies.append(time.monotonic() - sent)
            assert any(s.state for s in green.states), f"scan {i}: no feedback"
            # Let the (scaled) pattern end: a LED still on when the next scan
            # lights it again records no new state, and the scan would look unanswered.
            ended = time.monotonic()
            while green.state and time.monotonic() - ended < 2:
                time.sleep(0.001)
            time.sleep(0.002)
    finally:
        d.stop_event.set()
        t.join(10)
        pty.close()
        Device.pin_factory = None
    latencies.sort()
    p50 = statistics.median(latencies) * 1000
    p99 = latencies[int(len(latencies) * 0.99) - 1] * 1000
    print(f"scan-to-feedback latency over {len(latencies)} scans (fsync included): p50 {p50:.1f} ms, p99 {p99:.1f} ms")
    assert p99 < 50, latencies[-5:]


def test_gpio_backend_without_gpio_is_a_one_line_error(tmp_path):
    cfg = write_config(tmp_path / "c.toml", state_dir=tmp_path / "state")
    cfg.write_text(cfg.read_text().replace('backend = "console"', 'backend = "gpio"\ngreen_pin = 17'))
    env = {"GPIOZERO_PIN_FACTORY": ""}
    r = run_cli(cfg, "run", env=env, timeout=30)
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "feedback.backend" in r.stderr and "GPIO" in r.stderr
    cfg.write_text(cfg.read_text().replace('backend = "gpio"', 'backend = "gpio"\nfallback = "console"'))
    d = DaemonProcess(cfg, env=env)
    try:
        wait_ready(cfg)
    finally:
        assert d.terminate() == 0


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_reader_unplugged_and_back_without_restart_at_near_zero_cpu(tmp_path):
    link = tmp_path / "rfid0"
    pty = Pty()
    os.symlink(pty.port, link)
    cfg = write_config(tmp_path / "c.toml", state_dir=tmp_path / "state", port=str(link))
    d = DaemonProcess(cfg)
    pty2 = None
    try:
        wait_ready(cfg)
        pty.send(b"BEFORE\r\n")
        assert d.wait_for(lambda ls: "stored tag=BEFORE" in " ".join(ls))
        os.unlink(link)
        pty.close()  # the USB adapter is pulled
        time.sleep(1.0)
        c0, t0 = cpu_seconds(d.proc.pid), time.monotonic()
        time.sleep(3.0)
        cpu = (cpu_seconds(d.proc.pid) - c0) / (time.monotonic() - t0)
        assert cpu < 0.05, f"daemon used {cpu:.1%} CPU while the port was gone"
        assert d.wait_for(lambda ls: "reader_missing on" in ls, timeout=5)
        pty2 = Pty()  # plugged back in
        os.symlink(pty2.port, link)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and "stored tag=AFTER" not in " ".join(d.lines):
            pty2.send(b"AFTER\r\n")
            time.sleep(0.5)
        assert "stored tag=AFTER" in " ".join(d.lines)
        assert d.proc.poll() is None  # never restarted
        print(f"daemon CPU while the reader was unplugged: {cpu:.2%}")
    finally:
        d.terminate()
        pty.close()
        if pty2:
            pty2.close()


# ------------------------------------------------------------- STATUS= line


class ScriptedReader:
    """A reader the test drives: ``scan(tag)`` emits a read; ``connected`` can be cleared."""

    def __init__(self, name="door"):
        self.name = name
        self.connected = True
        self.error = None
        self.last_alive = time.monotonic()
        self._queue: list[str] = []
        self._lock = threading.Lock()

    def scan(self, tag: str) -> None:
        with self._lock:
            self._queue.append(tag)

    def run(self, stop, emit):
        while not stop.is_set():
            self.last_alive = time.monotonic()
            with self._lock:
                tags, self._queue = self._queue, []
            for tag in tags:
                emit(tag)
            stop.wait(0.05)


def statuses_until(sock, pred, timeout=15.0) -> list[str]:
    """Every STATUS= text received until one satisfies ``pred`` (or the timeout)."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for m in messages(sock, 0.2):
            seen += [line[len("STATUS="):] for line in m.split("\n") if line.startswith("STATUS=")]
        if seen and pred(seen[-1]):
            break
    return seen


def test_status_line_follows_pending_delivery_and_the_reader(tmp_path, monkeypatch):
    from standins.iflow import IflowStandin

    path, sock = notify_socket(tmp_path)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    with IflowStandin(token="tok-123456") as iflow:
        iflow.mode = "down"  # the first scan waits
        cfg = from_dict({"timezone": "Europe/Bucharest", "state_dir": str(tmp_path / "state"),
                         "journal": {"allow_volatile": True}, "time": {"trust_rtc": True},
                         "iflow": {"url": iflow.url, "access_token": "tok-123456", "backoff_initial": 0.2,
                                   "backoff_max": 0.5}})
        reader = ScriptedReader()
        d = Daemon(cfg, notifier=Notifier(), readers=[reader])
        d.feedback = __import__("agent.feedback", fromlist=["Feedback"]).Feedback()
        t = threading.Thread(target=d.run, daemon=True)
        t.start()
        try:
            seen = statuses_until(sock, lambda s: "reader door ok" in s)
            assert seen[-1] == "0 pending · no delivery since start · reader door ok", seen
            reader.scan("12345678")
            # the scan is counted before the uploader's first failure is: wait for both
            seen = statuses_until(sock, lambda s: s.startswith("1 pending") and "delivery failing" in s)
            assert seen[-1].startswith("1 pending · delivery failing · no delivery since start"), seen
            iflow.mode = "up"
            reader.scan("87654321")  # wakes the uploader (it retries a failure only at its idle poll)
            seen = statuses_until(sock, lambda s: "last delivery" in s)
            last = seen[-1]
            assert re.fullmatch(r"0 pending · last delivery \d\d:\d\d:\d\d · reader door ok", last), seen
            reader.connected = False  # the USB adapter is pulled
            seen = statuses_until(sock, lambda s: "missing" in s)
            assert seen[-1] == last.replace("reader door ok", "reader door missing"), seen
            # nothing changes now: the line is not sent again
            assert statuses_until(sock, lambda s: False, timeout=4.5) == []
        finally:
            d.stop_event.set()
            t.join(10)
            sock.close()
    assert not t.is_alive()


def test_status_line_words():
    from zoneinfo import ZoneInfo

    from agent.commands.run import status_line

    tz = ZoneInfo("Europe/Bucharest")
    assert status_line(3, [("door", True)], delivery=(None, None), tz=tz) == \
        "3 pending · no delivery since start · reader door ok"
    assert status_line(0, [("in", True), ("out", False)]) == "0 pending · reader in ok · reader out missing"
    text = status_line(5, [("door", True)], delivery=("2020-01-02T03:04:05.000001+00:00", "delivery failing"),
                       held={"wait": 2, "held_unsynced": 1, "invalid": 0}, rejected=4, tz=tz)
    assert text == ("5 pending · 3 held (1 held_unsynced, 2 wait) · 4 rejected · delivery failing · "
                    "last delivery 2020-01-02 05:04 · reader door ok")  # not today: with the date, local time
    now = datetime.now(UTC)
    local = now.astimezone(tz).strftime("%H:%M:%S")
    assert f"last delivery {local}" in status_line(0, [], delivery=(now.isoformat(), None), tz=tz)


def test_run_with_a_bad_config_tells_systemd_why(tmp_path):
    path, sock = notify_socket(tmp_path)
    cfg = write_config(tmp_path / "c.toml", state_dir=tmp_path / "state")
    cfg.write_text(cfg.read_text().replace('timezone = "Europe/Bucharest"', 'timezone = "Mars/Olympus"'))
    r = run_cli(cfg, "run", env={"NOTIFY_SOCKET": path}, timeout=30)
    assert r.returncode == 2, r.stderr
    line = r.stderr.strip()
    assert line.startswith("agent: config error: ") and "Mars/Olympus" in line
    assert messages(sock, 1.0) == ["STATUS=" + line.removeprefix("agent: ")]
    # a problem found after loading (gpio feedback without a pin) is told too
    cfg.write_text(cfg.read_text().replace("Mars/Olympus", "UTC").replace('backend = "console"', 'backend = "gpio"'))
    r = run_cli(cfg, "run", env={"NOTIFY_SOCKET": path, "GPIOZERO_PIN_FACTORY": ""}, timeout=30)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and "needs at least one of green, red, buzzer" in r.stderr
    assert messages(sock, 1.0) == ["STATUS=config error: " + r.stderr.strip().removeprefix("agent: ")]
    # other commands never talk to systemd
    r = run_cli(cfg.with_name("missing.toml"), "status", env={"NOTIFY_SOCKET": path}, timeout=30)
    assert r.returncode == 2 and messages(sock, 0.5) == []
    sock.close()
