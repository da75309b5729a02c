"""Tests for the reader shells (agent.reading.base, .serial, .hid) on real pseudo-terminals
and a fake evdev device."""

from __future__ import annotations

import errno
import itertools
import logging
import os
import queue
import socket
import threading
import time
from pathlib import Path
from typing import ClassVar

import pytest
import serial
from evdev import InputEvent, ecodes

from agent.commands.run import READER_STALL_S
from agent.config import ReaderConfig
from agent.errors import ReaderBusy
from agent.journal.store import Journal
from agent.reading import BACKENDS, PROTOCOL_BACKENDS, base, make_reader
from agent.reading.frames import make_decoder
from agent.reading.hid import HidReader
from agent.reading.hidkeys import HidDecoder
from agent.reading.serial import SerialReader
from tests.support.harness import Daemon, Pty, wait_ready, write_config

FAST = (0.05, 0.2)  # backoff for tests
IDLE_TICK = base._TICK  # before the fixture below shortens it
EXAMPLE = b"\x020F00A1B2C3DF\x03"


def rdm_frame(hex10: str, *, bad: bool = False) -> bytes:
    data = bytes.fromhex(hex10)
    check = 0
    for b in data:
        check ^= b
    return b"\x02" + (hex10.upper() + f"{check ^ bad:02X}").encode() + b"\x03"


def wait_for(pred, timeout=5.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def thread_cpu(t: threading.Thread) -> float:
    return time.clock_gettime(time.pthread_getcpuclockid(t.ident))


class Harness:
    """Runs a reader in a thread and collects what it emits."""

    def __init__(self, reader) -> None:
        self.reader = reader
        self.stop = threading.Event()
        self.tags: queue.Queue[str] = queue.Queue()
        self.thread = threading.Thread(target=reader.run, args=(self.stop, self.emit), daemon=True)

    def emit(self, tag: str) -> None:
        self.tags.put(tag)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(3.0)
        assert not self.thread.is_alive(), "reader did not honour stop"

    def take(self, n: int, timeout: float = 5.0) -> list[str]:
        return [self.tags.get(timeout=timeout) for _ in range(n)]

    def nothing_more(self, wait: float = 0.3) -> bool:
        time.sleep(wait)
        return self.tags.empty()


@pytest.fixture(autouse=True)
def short_tick(monkeypatch):
    """Shorter waits so stop is seen sooner; the logic under test is unchanged."""
    monkeypatch.setattr(base, "_TICK", 0.1)


@pytest.fixture
def pty():
    p = Pty()
    yield p
    p.close()


def serial_reader(port: str, protocol: str = "rdm6300", **kw) -> SerialReader:
    return SerialReader("door", port, decoder=make_decoder(protocol, **kw), backoff=FAST)


# ------------------------------------------------------------ serial on a pty


def test_rdm6300_over_pty_exactly_the_valid_frames(pty):
    reader = serial_reader(pty.port)
    with Harness(reader) as h:
        wait_for(lambda: reader.connected, what="connected")
        assert reader.error is None
        # a frame split across writes (separate reads on the reader side)
        for piece in (EXAMPLE[:3], EXAMPLE[3:9], EXAMPLE[9:]):
            pty.send(piece)
            time.sleep(0.05)
        assert h.take(1) == ["0F00A1B2C3"]
        # two frames in one write, a bad checksum, noise with stray STX/ETX
        noise = b"\x00\xff\x02\x03\x02\x02AB\x03\x0312\r\n\x02"
        pty.send(
            rdm_frame("1234567890")
            + rdm_frame("A1B2C3D4E5")
            + rdm_frame("0F00A1B2C3", bad=True)
            + noise
            + rdm_frame("0000000001")
            + noise
        )
        assert h.take(3) == ["1234567890", "A1B2C3D4E5", "0000000001"]
        assert h.nothing_more()
        assert reader.decoder.dropped["bad_checksum"] == 1
        assert reader.decoder.dropped["noise"] >= 1


def test_line_over_pty_terminators_and_overlong_bounded(pty):
    reader = serial_reader(pty.port, "line", max_len=16)
    with Harness(reader) as h:
        wait_for(lambda: reader.connected, what="connected")
        pty.send(b"0010597059\r0000000002\n0000000003\r\n")
        assert h.take(3) == ["0010597059", "0000000002", "0000000003"]
        for _ in range(20):  # 80 KB with no terminator
            pty.send(b"7" * 4096)
            assert len(reader.decoder._buf) <= 16 + 16
        pty.send(b"\r\n42\n")
        assert h.take(1) == ["42"]
        assert h.nothing_more()
        assert reader.decoder.dropped["too_long"] == 1


# Line noise when a reader powers up (NUL, 0xFF, a glitch's partial bytes) and
# a reader's own framing around the number: each line is still the one scan.
NOISY_LINES = [
    (b"\x00\xff0004512345\r\n", "0004512345"),
    (b"\x1b\x00 0004512346 \xff\n", "0004512346"),
    (b"\xff\xfe\xf0\xc0\x800004512347\x00\r", "0004512347"),
    (b"\x020004512348\x03\r\n", "0004512348"),
]
GARBAGE = b"\x00\xff\x1b\x00\r\n\xff\xff\xff\n\x00\x07\r\n"


def test_line_noise_around_tags_over_pty_each_recorded_once(pty):
    reader = serial_reader(pty.port, "line")
    with Harness(reader) as h:
        wait_for(lambda: reader.connected, what="connected")
        for line, _ in NOISY_LINES:
            pty.send(line)
            time.sleep(0.02)
        assert h.take(len(NOISY_LINES)) == [tag for _, tag in NOISY_LINES]
        assert h.nothing_more()
        assert not reader.decoder.dropped


def test_line_pure_garbage_records_nothing_and_logs_one_line(pty, caplog):
    reader = serial_reader(pty.port, "line")
    with caplog.at_level(logging.WARNING, logger="agent.reader"):
        with Harness(reader) as h:
            wait_for(lambda: reader.connected, what="connected")
            for _ in range(5):
                pty.send(GARBAGE)
                time.sleep(0.02)
            pty.send(b"0004512349\r\n")  # the next real scan still comes through
            assert h.take(1) == ["0004512349"]
            assert h.nothing_more()
    drops = [r for r in caplog.records if "dropped input" in r.getMessage()]
    assert len(drops) == 1, [r.getMessage() for r in drops]
    assert drops[0].name == "agent.reader" and "noise=" in drops[0].getMessage()
    assert reader.decoder.dropped["noise"] == 15


def test_noisy_lines_through_the_daemon_are_stored_like_clean_tags(tmp_path, pty):
    state = tmp_path / "state"
    d = Daemon(write_config(tmp_path / "c.toml", state_dir=state, port=pty.port))
    try:
        wait_ready(d.config)
        pty.send(GARBAGE)
        for line, _ in NOISY_LINES:
            pty.send(line)
            time.sleep(0.02)
        pty.send(b"0004512350\r\n")  # a clean tag: the feedback the noisy ones must equal
        want = [tag for _, tag in NOISY_LINES] + ["0004512350"]
        assert d.wait_for(lambda ls: sum(ln.startswith("stored ") for ln in ls) >= len(want)), d.lines
        assert d.stored() == want
        assert d.terminate() == 0
    finally:
        if d.proc.poll() is None:
            d.kill()
    j = Journal(str(state / "journal"))
    try:
        assert sorted(r.tag for r in j.records()) == sorted(want)  # each once, the garbage not at all
    finally:
        j.close()
    drops = [ln for ln in d.stderr if "dropped input" in ln]
    assert len(drops) == 1 and "noise=" in drops[0], d.stderr


def test_hot_unplug_and_replug_without_restart(tmp_path):
    link = tmp_path / "ttyRFID"
    first = Pty()
    link.symlink_to(first.port)
    reader = serial_reader(str(link))
    try:
        with Harness(reader) as h:
            wait_for(lambda: reader.connected, what="connected")
            first.send(EXAMPLE)
            assert h.take(1) == ["0F00A1B2C3"]

            # unplug: the device goes away and so does its udev name
            first.close()
            link.unlink()
            wait_for(lambda: not reader.connected, what="disconnect")
            wait_for(lambda: reader.error is not None and "not present" in reader.error,
                     what="not-present error")

            # while the port is gone the thread sleeps, it does not spin
            cpu0, wall0, alive0 = thread_cpu(h.thread), time.monotonic(), reader.last_alive
            time.sleep(1.5)
            cpu, wall = thread_cpu(h.thread) - cpu0, time.monotonic() - wall0
            assert cpu < 0.05 * wall, f"reader used {cpu:.3f}s CPU in {wall:.1f}s"
            assert reader.last_alive > alive0
            assert time.monotonic() - reader.last_alive < 1.0  # watchdog stays happy

            # plug back in on a different tty
            second = Pty()
            try:
                link.symlink_to(second.port)
                wait_for(lambda: reader.connected, what="reconnect")
                assert reader.error is None
                second.send(rdm_frame("1234567890"))
                assert h.take(1) == ["1234567890"]
            finally:
                h.stop.set()
                h.thread.join(3)
                second.close()
    finally:
        first.close()


def test_port_absent_at_start_then_appears(tmp_path):
    link = tmp_path / "ttyLATE"
    reader = serial_reader(str(link), "line")
    pty = Pty()
    try:
        with Harness(reader) as h:
            wait_for(lambda: reader.error is not None, what="error")
            assert not reader.connected
            link.symlink_to(pty.port)
            wait_for(lambda: reader.connected, what="connected")
            pty.send(b"99\n")
            assert h.take(1) == ["99"]
    finally:
        pty.close()


def test_open_failures_back_off_exponentially(tmp_path):
    port = tmp_path / "ttyX"
    port.touch()  # present, but opening fails every time
    calls: list[float] = []

    def factory(*a, **kw):
        calls.append(time.monotonic())
        raise serial.SerialException("permission denied")

    reader = SerialReader("door", str(port), decoder=make_decoder("line"),
                          backoff=(0.05, 0.4), serial_factory=factory)
    with Harness(reader):
        time.sleep(1.0)
        assert "cannot open" in reader.error and not reader.connected
    # waits 0.05, 0.1, 0.2, 0.4, 0.4: about 5 attempts in 1 s, not thousands
    assert 3 <= len(calls) <= 8
    gaps = [b - a for a, b in itertools.pairwise(calls)]
    assert gaps[-1] >= 0.35


def test_serial_busy_is_reported(pty):
    holder = serial.Serial(pty.port, 9600, timeout=0.2, exclusive=True)
    try:
        reader = serial_reader(pty.port)
        with pytest.raises(ReaderBusy, match="held by another process"):
            reader.open()
        with Harness(reader):
            wait_for(lambda: reader.error is not None and "held by another process" in reader.error,
                     what="busy error")
            assert not reader.connected
            holder.close()  # the other process goes away
            wait_for(lambda: reader.connected, what="connected after release")
    finally:
        holder.close()


def test_emit_exception_is_logged_and_loop_survives(pty, caplog):
    got: list[str] = []

    def emit(tag):
        got.append(tag)
        if len(got) == 1:
            raise RuntimeError("downstream broke")

    reader = serial_reader(pty.port, "line")
    stop = threading.Event()
    t = threading.Thread(target=reader.run, args=(stop, emit), daemon=True)
    with caplog.at_level(logging.ERROR, logger="agent.reader"):
        t.start()
        try:
            wait_for(lambda: reader.connected, what="connected")
            pty.send(b"0010597059\n")
            wait_for(lambda: len(got) == 1, what="first emit")
            pty.send(b"0000000002\n")
            wait_for(lambda: len(got) == 2, what="second emit")
        finally:
            stop.set()
            t.join(3)
    assert got == ["0010597059", "0000000002"]
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "emit() failed" in errors[0].getMessage()
    # the card number is not in the log
    assert "0010597059" not in caplog.text


def test_dropped_noise_logged_rate_limited(pty, caplog):
    reader = serial_reader(pty.port)
    with caplog.at_level(logging.WARNING, logger="agent.reader"):
        with Harness(reader) as h:
            wait_for(lambda: reader.connected, what="connected")
            for _ in range(10):
                pty.send(rdm_frame("0F00A1B2C3", bad=True) + b"junk")
                time.sleep(0.05)
            pty.send(EXAMPLE)
            assert h.take(1) == ["0F00A1B2C3"]
    drops = [r.getMessage() for r in caplog.records if "dropped input" in r.getMessage()]
    assert len(drops) == 1, drops
    assert "bad_checksum=1" in drops[0] or "noise=" in drops[0]
    assert "0F00A1B2C3" not in caplog.text
    assert reader.decoder.dropped["bad_checksum"] == 10


def test_stop_is_prompt_even_in_long_backoff(tmp_path):
    reader = SerialReader("door", str(tmp_path / "missing"), decoder=make_decoder("line"),
                          backoff=(5.0, 60.0))
    h = Harness(reader)
    h.thread.start()
    time.sleep(0.2)
    t0 = time.monotonic()
    h.stop.set()
    h.thread.join(2.0)
    assert not h.thread.is_alive() and time.monotonic() - t0 < 1.0


def test_last_alive_advances_while_idle_and_connected(pty):
    reader = serial_reader(pty.port)
    with Harness(reader):
        wait_for(lambda: reader.connected, what="connected")
        a = reader.last_alive
        time.sleep(0.7)
        assert reader.last_alive > a
        assert time.monotonic() - reader.last_alive < 0.6
        assert IDLE_TICK * 2 <= READER_STALL_S  # the real idle wait, well inside the stall limit


def test_bad_backoff_rejected():
    with pytest.raises(ValueError):
        SerialReader("x", "/dev/null", decoder=make_decoder("line"), backoff=(0, 1))
    with pytest.raises(ValueError):
        SerialReader("x", "/dev/null", decoder=make_decoder("line"), backoff=(2, 1))


# ------------------------------------------------------------ HID with a fake device


class FakeDevice:
    """evdev.InputDevice look-alike: a real socket for select(), queued events."""

    def __init__(self, grab_errno: int | None = None) -> None:
        self._r, self._w = socket.socketpair()
        self._r.setblocking(False)
        self._events: list[InputEvent] = []
        self._lock = threading.Lock()
        self._gone = False
        self.grab_errno = grab_errno
        self.grabbed = False
        self.closed = False
        self.reads = 0

    # test side
    def send(self, events) -> None:
        with self._lock:
            self._events.extend(events)
        self._w.send(b"x")

    def unplug(self) -> None:
        self._gone = True
        self._w.send(b"x")  # a dead evdev fd is readable; read() raises ENODEV

    # evdev side
    def fileno(self) -> int:
        return self._r.fileno()

    def read(self):
        self.reads += 1
        if self._gone:
            raise OSError(errno.ENODEV, "No such device")
        try:
            self._r.recv(4096)
        except BlockingIOError:
            pass
        with self._lock:
            events, self._events = self._events, []
        if not events:
            raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")
        return iter(events)

    def grab(self) -> None:
        if self.grab_errno:
            raise OSError(self.grab_errno, os.strerror(self.grab_errno))
        self.grabbed = True

    def ungrab(self) -> None:
        self.grabbed = False

    def close(self) -> None:
        self.closed = True
        self._r.close()
        self._w.close()


def keys(text: str, t0: float = 1_700_000_000.0) -> list[InputEvent]:
    evs, t = [], t0
    for ch in text:
        code = ecodes.ecodes[f"KEY_{ch}"] if ch != "\n" else ecodes.KEY_ENTER
        t += 0.01
        s, us = int(t), int((t % 1) * 1e6)
        evs += [
            InputEvent(s, us, ecodes.EV_MSC, ecodes.MSC_SCAN, 0x70000),
            InputEvent(s, us, ecodes.EV_KEY, code, 1),
            InputEvent(s, us, ecodes.EV_SYN, 0, 0),
            InputEvent(s, us + 1000, ecodes.EV_KEY, code, 0),
            InputEvent(s, us + 1000, ecodes.EV_SYN, 0, 0),
        ]
    return evs


class Opener:
    def __init__(self) -> None:
        self.device: FakeDevice | None = FakeDevice()
        self.calls = 0

    def __call__(self) -> FakeDevice:
        self.calls += 1
        if self.device is None:
            raise FileNotFoundError(errno.ENOENT, "no input device")
        return self.device


def test_hid_reader_emits_and_recovers_from_enodev():
    opener = Opener()
    first = opener.device
    reader = HidReader("wedge", decoder=HidDecoder(), backoff=FAST, open_device=opener)
    with Harness(reader) as h:
        wait_for(lambda: reader.connected, what="connected")
        assert first.grabbed
        first.send(keys("0010597059\n"))
        first.send(keys("42\n", t0=1_700_000_100.0))
        assert h.take(2) == ["0010597059", "42"]

        # unplug: read raises ENODEV, device closed, opener fails for a while
        opener.device = None
        first.send(keys("12"))  # a partial number that must not survive the unplug
        time.sleep(0.1)
        first.unplug()
        wait_for(lambda: not reader.connected and first.closed, what="disconnect")
        assert "failed" in reader.error or "cannot open" in reader.error

        calls0 = opener.calls
        cpu0, wall0 = thread_cpu(h.thread), time.monotonic()
        time.sleep(1.2)
        cpu, wall = thread_cpu(h.thread) - cpu0, time.monotonic() - wall0
        assert cpu < 0.05 * wall, f"reader used {cpu:.3f}s CPU in {wall:.1f}s"
        assert opener.calls - calls0 <= 10  # backing off, not hammering
        assert time.monotonic() - reader.last_alive < 1.0

        # plug back in
        second = FakeDevice()
        opener.device = second
        wait_for(lambda: reader.connected, what="reconnect")
        assert second.grabbed and reader.error is None
        second.send(keys("34\n", t0=1_700_000_200.0))
        assert h.take(1) == ["34"]  # not "1234": the partial was discarded
    assert second.closed and not second.grabbed


def test_hid_reader_busy_grab_reported():
    dev = FakeDevice(grab_errno=errno.EBUSY)
    reader = HidReader("wedge", decoder=HidDecoder(), backoff=FAST, open_device=lambda: dev)
    with pytest.raises(ReaderBusy, match="grabbed by another process"):
        reader.open()
    assert dev.closed


def test_hid_reader_busy_in_run_then_free():
    opener = Opener()
    opener.device = FakeDevice(grab_errno=errno.EBUSY)
    reader = HidReader("wedge", decoder=HidDecoder(), backoff=FAST, open_device=opener)
    with Harness(reader) as h:
        wait_for(lambda: reader.error is not None and "another process" in reader.error,
                 what="busy error")
        opener.device = FakeDevice()
        wait_for(lambda: reader.connected, what="connected")
        opener.device.send(keys("7\n"))
        assert h.take(1) == ["7"]


def test_hid_reader_emit_exception_does_not_kill_loop():
    opener = Opener()
    got = []

    def emit(tag):
        got.append(tag)
        raise ValueError("boom")

    reader = HidReader("wedge", decoder=HidDecoder(), backoff=FAST, open_device=opener)
    stop = threading.Event()
    t = threading.Thread(target=reader.run, args=(stop, emit), daemon=True)
    t.start()
    try:
        wait_for(lambda: reader.connected, what="connected")
        opener.device.send(keys("1\n"))
        wait_for(lambda: got == ["1"], what="first")
        opener.device.send(keys("2\n", t0=1_700_000_050.0))
        wait_for(lambda: got == ["1", "2"], what="second")
        assert reader.connected
    finally:
        stop.set()
        t.join(3)
    assert not t.is_alive()


def test_hid_reader_missing_path_waits_quietly(tmp_path):
    reader = HidReader("wedge", path=str(tmp_path / "event99"), decoder=HidDecoder(), backoff=FAST)
    with Harness(reader) as h:
        wait_for(lambda: reader.error is not None, what="error")
        assert "not present" in reader.error
        cpu0, wall0 = thread_cpu(h.thread), time.monotonic()
        time.sleep(0.5)
        assert thread_cpu(h.thread) - cpu0 < 0.05 * (time.monotonic() - wall0)


def test_hid_reader_find_by_name_not_found():
    reader = HidReader("wedge", device_name="No Such RFID Reader 1234", decoder=HidDecoder())
    with pytest.raises(OSError):
        reader.open()


def test_hid_reader_argument_validation():
    with pytest.raises(ValueError, match="path, device_name or usb_id"):
        HidReader("wedge", decoder=HidDecoder())
    with pytest.raises(ValueError, match="vvvv:pppp"):
        HidReader("wedge", usb_id="ffff", decoder=HidDecoder())
    HidReader("wedge", usb_id="08ff:0009", decoder=HidDecoder())


def test_path_fixture_is_a_real_tty(pty):
    # guard: the serial tests really run on a terminal device
    assert os.isatty(pty.slave) and Path(pty.port).exists()


# ------------------------------------------------------------ idle wake-ups (real tick)


def voluntary_switches(t: threading.Thread) -> int:
    with open(f"/proc/self/task/{t.native_id}/status") as f:
        for line in f:
            if line.startswith("voluntary_ctxt_switches"):
                return int(line.split()[1])
    raise AssertionError("no voluntary_ctxt_switches")


def assert_idle_then_prompt_stop(h: Harness, seconds: float = 1.5) -> None:
    """An idle reader sleeps in one select(); stop still wakes it at once."""
    n0 = voluntary_switches(h.thread)
    time.sleep(seconds)
    woke = voluntary_switches(h.thread) - n0
    assert woke <= 2, f"idle reader woke {woke} times in {seconds} s"
    t0 = time.monotonic()
    h.stop.set()
    h.thread.join(2.0)
    assert not h.thread.is_alive() and time.monotonic() - t0 < 0.5


def test_idle_serial_reader_blocks_until_data_or_stop(pty, monkeypatch):
    monkeypatch.setattr(base, "_TICK", IDLE_TICK)
    reader = serial_reader(pty.port, "line")
    with Harness(reader) as h:
        wait_for(lambda: reader.connected, what="connected")
        pty.send(b"11\n")
        assert h.take(1) == ["11"]  # data wakes it at once
        assert_idle_then_prompt_stop(h)


def test_idle_hid_reader_blocks_until_data_or_stop(monkeypatch):
    monkeypatch.setattr(base, "_TICK", IDLE_TICK)
    opener = Opener()
    reader = HidReader("wedge", decoder=HidDecoder(), backoff=FAST, open_device=opener)
    with Harness(reader) as h:
        wait_for(lambda: reader.connected, what="connected")
        opener.device.send(keys("5\n"))
        assert h.take(1) == ["5"]
        assert_idle_then_prompt_stop(h)
    assert opener.device.closed and not opener.device.grabbed


def test_stop_is_prompt_in_long_backoff_with_the_real_tick(tmp_path, monkeypatch):
    monkeypatch.setattr(base, "_TICK", IDLE_TICK)
    reader = SerialReader("door", str(tmp_path / "missing"), decoder=make_decoder("line"),
                          backoff=(5.0, 60.0))
    with Harness(reader) as h:
        wait_for(lambda: reader.error is not None, what="error")
        assert_idle_then_prompt_stop(h, seconds=1.0)


def test_liveness_refreshed_within_the_tick_while_idle(pty, monkeypatch):
    monkeypatch.setattr(base, "_TICK", 0.3)
    reader = serial_reader(pty.port)
    with Harness(reader):
        wait_for(lambda: reader.connected, what="connected")
        time.sleep(1.0)
        assert time.monotonic() - reader.last_alive < 0.3 + 0.2


# ------------------------------------------------------------ the registry


def test_make_reader_builds_each_type_from_its_config(tmp_path):
    s = make_reader(ReaderConfig(name="door", type="serial", port=str(tmp_path / "tty"),
                                 baudrate=19200, protocol="rdm6300"))
    assert isinstance(s, SerialReader) and (s.name, s.port, s.baudrate) == ("door", str(tmp_path / "tty"), 19200)
    assert type(s.decoder).__name__ == "Rdm6300Decoder"
    r = make_reader(ReaderConfig(type="serial", protocol="regex", pattern=r"ID:(?P<tag>\w+)", max_len=80))
    assert r.decoder.pattern.pattern == r"ID:(?P<tag>\w+)" and r.decoder.max_len == 80
    h = make_reader(ReaderConfig(name="wedge", type="hid", usb_id="08ff:0009", gap_seconds=0.2, max_len=12))
    assert isinstance(h, HidReader) and h.usb_id == "08ff:0009"
    assert (h.decoder.gap_seconds, h.decoder.max_len) == (0.2, 12)
    with pytest.raises(ValueError, match="unknown reader type"):
        make_reader(ReaderConfig(type="carrier-pigeon"))


def test_every_backend_is_a_reader_with_from_config():
    import importlib

    for kind, (module, cls) in [*BACKENDS.items(), *PROTOCOL_BACKENDS.items()]:
        klass = getattr(importlib.import_module(module), cls)
        assert issubclass(klass, base.Reader), kind
        assert klass.from_config.__func__ is not base.Reader.from_config.__func__, kind
    for rtype, protocol in PROTOCOL_BACKENDS:
        assert rtype in BACKENDS, (rtype, protocol)  # a protocol refines a type that exists


def test_a_pn532_and_a_wiegand_table_build_their_readers():
    from agent.config import ReaderConfig
    from agent.reading.pn532 import Pn532Reader
    from agent.reading.wiegandreader import WiegandReader

    p = make_reader(ReaderConfig(name="mifare", protocol="pn532", port="/dev/ttyAMA0", baudrate=115200,
                                 poll_seconds=0.1, health_seconds=7.0))
    assert isinstance(p, Pn532Reader) and (p.port, p.baudrate) == ("/dev/ttyAMA0", 115200)
    assert (p.poll_seconds, p.health_seconds, p.reset) == (0.1, 7.0, None)
    w = make_reader(ReaderConfig(name="gate", type="wiegand", d0_pin=5, d1_pin="GPIO6", swap_lines=True,
                                 frame_gap_seconds=0.03))
    assert isinstance(w, WiegandReader) and "D0 GPIO5, D1 GPIO6" in w.what
    assert (w.decoder.swap, w.decoder.gap_ns) == (True, 30_000_000)


# ------------------------------------------------------------ the device search


class FakeInfo:
    def __init__(self, vendor: int, product: int) -> None:
        self.vendor, self.product = vendor, product


class FakeInputDevice:
    table: ClassVar[dict[str, tuple[str, int, int] | None]] = {
        "/dev/input/event0": ("AT Translated Set 2 keyboard", 0x0001, 0x0001),
        "/dev/input/event1": None,  # not readable by this user
        "/dev/input/event2": ("Sycreader RFID Technology Co., Ltd SYC ID&IC USB Reader", 0xFFFF, 0x0035),
    }
    closed: ClassVar[list[str]] = []

    def __init__(self, path: str) -> None:
        entry = self.table[path]
        if entry is None:
            raise PermissionError(errno.EACCES, "Permission denied", path)
        self.path, (self.name, v, p) = path, entry
        self.info = FakeInfo(v, p)

    def close(self) -> None:
        FakeInputDevice.closed.append(self.path)


@pytest.fixture
def fake_evdev(monkeypatch):
    import evdev

    asked: list[bool] = []

    def list_devices(writable=True):
        asked.append(writable)
        return sorted(FakeInputDevice.table)

    monkeypatch.setattr(evdev, "list_devices", list_devices)
    monkeypatch.setattr(evdev, "InputDevice", FakeInputDevice)
    FakeInputDevice.closed = []
    return asked


def test_find_input_device_by_name_or_usb_id(fake_evdev):
    from agent.reading.hid import DeviceSearch, find_input_device

    name = "Sycreader RFID Technology Co., Ltd SYC ID&IC USB Reader"
    assert find_input_device(device_name=name) == DeviceSearch("/dev/input/event2", f"name {name!r}", 3, 1)
    assert find_input_device(usb_id="ffff:0035").path == "/dev/input/event2"
    assert find_input_device(usb_id="FFFF:0035").what == "USB id FFFF:0035"
    miss = find_input_device(device_name="No Such Reader", writable=False)
    assert miss == DeviceSearch(None, "name 'No Such Reader'", 3, 1)
    assert fake_evdev == [True, True, True, False]
    assert FakeInputDevice.closed.count("/dev/input/event0") == 4  # every device looked at is closed


def test_find_input_device_path_and_arguments(fake_evdev):
    from agent.reading.hid import find_input_device

    assert find_input_device("/dev/input/by-id/x", device_name="ignored").path == "/dev/input/by-id/x"
    assert fake_evdev == []  # a path is taken as given
    with pytest.raises(ValueError, match="vvvv:pppp"):
        find_input_device(usb_id="ffff")
    with pytest.raises(ValueError, match="path, device_name or usb_id"):
        find_input_device()


def test_hid_reader_opens_what_the_search_found(fake_evdev):
    reader = HidReader("wedge", usb_id="ffff:0035", decoder=HidDecoder())
    assert reader._find_device().path == "/dev/input/event2"
    with pytest.raises(FileNotFoundError, match="no input device with USB id 0000:0001"):
        HidReader("wedge", usb_id="0000:0001", decoder=HidDecoder())._find_device()
