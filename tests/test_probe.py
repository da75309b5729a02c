"""`agent probe` on a pseudo-terminal reader: every format per card, once per card;
a clear one-line refusal while the daemon (or anything else) holds the reader."""

from __future__ import annotations

import argparse
import os
import queue
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import serial
from evdev import InputEvent

from agent.commands import probe
from agent.config import load
from agent.reading.hid import HidReader
from agent.reading.hidkeys import HidDecoder
from tests.support.harness import AGENT, Daemon, Pty, wait_ready, write_config


def frame(hex10: str) -> bytes:
    check = 0
    for b in bytes.fromhex(hex10):
        check ^= b
    return b"\x02" + hex10.encode() + f"{check:02X}".encode() + b"\x03"


def test_frame_helper_matches_the_documented_example():
    assert frame("0F00A1B2C3") == b"\x020F00A1B2C3DF\x03"


@pytest.fixture
def pty():
    p = Pty()
    yield p
    p.close()


def config(tmp_path: Path, pty: Pty, **reader) -> Path:
    r = {"name": "door", "protocol": "rdm6300", "tag_format": "decimal10"}
    r.update(reader)
    return write_config(tmp_path / "c.toml", state_dir=tmp_path / "state", port=pty.port, reader=r)


def args(**kw) -> argparse.Namespace:
    d = {"reader": None, "count": None, "timeout": None}
    d.update(kw)
    return argparse.Namespace(**d)


def start_probe(cfg: Path, *extra: str) -> subprocess.Popen:
    p = subprocess.Popen(AGENT + ["--config", str(cfg), "probe", *extra], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    first = p.stdout.readline()
    assert first.startswith('reading "door"') and "hold a card" in first, first + p.stderr.read()
    return p


# ------------------------------------------------------------------- cards


def test_each_card_once_with_every_format(tmp_path, pty):
    p = start_probe(config(tmp_path, pty), "--count", "2", "--timeout", "10")
    pty.send(frame("0F00A1B2C3") * 4)  # the RDM6300 repeats while the card is held
    time.sleep(0.3)
    pty.send(frame("0F00A1B2C3") + frame("1234567890"))
    out, err = p.communicate(timeout=10)
    assert p.returncode == 0, err
    assert out.splitlines() == [
        f'card read on "door" (serial {pty.port}, rdm6300):',
        "  raw        0F00A1B2C3",
        "  decimal10  0010597059   <- configured (reader.tag_format)",
        "  hex        00A1B2C3",
        "  wiegand26  161,45763",
        f'card read on "door" (serial {pty.port}, rdm6300):',
        "  raw        1234567890",
        "  decimal10  0878082192   <- configured (reader.tag_format)",
        "  hex        34567890",
        "  wiegand26  086,30864",
    ]
    assert err == ""


def test_little_endian_reader_and_line_noise_in_process(tmp_path, pty, capsys):
    cfg = load(str(config(tmp_path, pty, byte_order="little", tag_format="hex")))
    threading.Timer(0.3, lambda: pty.send(b"\x02ZZ\x03junk" + frame("0F00A1B2C3"))).start()
    rc = probe.main(cfg, args(count=1, timeout=5))
    out = capsys.readouterr().out
    assert rc == 0
    assert "input ignored" in out and "check reader.protocol and baudrate" in out
    assert f"(serial {pty.port}, rdm6300, byte_order little)" in out
    # byte_order little: the five bytes as sent are reversed (C3B2A1000F); the ID is the low 32 bits
    assert "  raw        0F00A1B2C3\n" in out
    assert "  hex        B2A1000F     <- configured (reader.tag_format)" in out
    assert "  decimal10  2996895759\n" in out
    assert out.index("input ignored") < out.index("card read on")


def test_card_block_marks_a_configured_format_that_does_not_apply():
    text = probe.card_block("kbd", "hid /dev/input/event3", "ABC-1",
                            {"raw": "ABC-1", "decimal10": None, "hex": None, "wiegand26": None}, "wiegand26")
    assert text.splitlines() == [
        'card read on "kbd" (hid /dev/input/event3):',
        "  raw        ABC-1",
        "  decimal10  -            (does not apply to this input)",
        "  hex        -            (does not apply to this input)",
        "  wiegand26  -            <- configured (reader.tag_format): DOES NOT APPLY to this card",
    ]


def test_read_loop_turns_key_events_into_tags():
    r, w = os.pipe()

    class FakeDevice:
        """select() sees the pipe; read() hands over one card's key events."""

        def __init__(self):
            self.pending = []
            self.closed = self.ungrabbed = False

        def fileno(self):
            return r

        def read(self):
            os.read(r, 1)
            events, self.pending = self.pending, []
            return iter(events)

        def ungrab(self):
            self.ungrabbed = True

        def close(self):
            self.closed = True

    keys = {str(d): 2 + (d - 1) % 10 for d in range(10)}  # KEY_1..KEY_0 = 2..11
    dev = FakeDevice()
    t0 = 1000
    for i, ch in enumerate("0010597059"):
        dev.pending += [InputEvent(t0, i * 1000, 1, keys[ch], 1), InputEvent(t0, i * 1000 + 10, 1, keys[ch], 0)]
    dev.pending.append(InputEvent(t0, 20000, 1, 28, 1))
    q: queue.Queue = queue.Queue()
    stop = threading.Event()
    reader = HidReader("kbd", decoder=HidDecoder(), open_device=lambda: dev)
    t = threading.Thread(target=probe.read_loop, args=(reader, dev, stop, q.put))
    t.start()
    os.write(w, b"x")
    try:
        assert q.get(timeout=3) == ("tag", "kbd", "0010597059")
    finally:
        stop.set()
        t.join(3)
        os.close(r)
        os.close(w)
    assert dev.ungrabbed and dev.closed


# ------------------------------------------------------------ refusals, exits


def test_daemon_running_is_one_line_exit_1(tmp_path, pty):
    cfg = config(tmp_path, pty)
    d = Daemon(cfg)
    try:
        wait_ready(cfg)
        r = subprocess.run(AGENT + ["--config", str(cfg), "probe", "--timeout", "3"], capture_output=True,
                           text=True, timeout=20)
    finally:
        assert d.terminate() == 0
    assert r.returncode == 1
    assert r.stderr.splitlines() == ["agent: " + probe.DAEMON_HOLDS]
    assert r.stdout == ""


def test_reader_held_by_another_process(tmp_path, pty, capsys):
    cfg = load(str(config(tmp_path, pty)))
    holder = serial.Serial(pty.port, 9600, exclusive=True)
    try:
        rc = probe.main(cfg, args(timeout=1))
    finally:
        holder.close()
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1
    assert f"serial port {pty.port} is held by another process" in err and "systemctl stop rfid-agent" in err


def test_no_card_within_timeout_exits_1(tmp_path, pty, capsys):
    cfg = load(str(config(tmp_path, pty)))
    t0 = time.monotonic()
    rc = probe.main(cfg, args(timeout=0.4))
    assert 0.3 < time.monotonic() - t0 < 3
    assert rc == 1 and "no card read within 0.4 s" in capsys.readouterr().err


def test_fewer_cards_than_count_before_timeout_exits_1(tmp_path, pty, capsys):
    cfg = load(str(config(tmp_path, pty)))
    threading.Timer(0.2, lambda: pty.send(frame("0F00A1B2C3"))).start()
    rc = probe.main(cfg, args(count=2, timeout=1))
    captured = capsys.readouterr()
    assert rc == 1 and "0010597059" in captured.out and "only 1 of 2 cards" in captured.err


def test_ctrl_c_ends_cleanly(tmp_path, pty):
    p = start_probe(config(tmp_path, pty))
    pty.send(frame("0F00A1B2C3"))
    assert p.stdout.readline().startswith('card read on "door"')
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=10)
    assert p.returncode == 0, err
    assert "Traceback" not in err and "interrupted" not in err


def test_absent_port_and_unknown_reader(tmp_path, pty, capsys):
    path = config(tmp_path, pty, port=str(tmp_path / "ttyUSB7"))
    rc = probe.main(load(str(path)), args(timeout=1))
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1 and f"serial port {tmp_path}/ttyUSB7 is not present" in err
    rc = probe.main(load(str(path)), args(reader=["back"], timeout=1))
    err = capsys.readouterr().err
    assert rc == 2 and "no reader named 'back'" in err and "configured: door" in err
