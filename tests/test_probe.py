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
from agent.commands.probeview import noise_lines
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
    d = {"reader": None, "count": None, "timeout": None, "expect": None}
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
    # issue 16: every format in both byte orders (little: the five bytes as sent reversed), the
    # configured cell starred; the big column's numbers are the ones this test asserted before
    assert out.splitlines() == [
        f'card read on "door" (serial {pty.port}, rdm6300):',
        "  format         big            little",
        "  raw            0F00A1B2C3   (as sent, either byte order)",
        "  decimal10      0010597059 *   2996895759",  # 0xB2A1000F
        "  hex            00A1B2C3       B2A1000F",
        "  wiegand26      161,45763      161,00015",
        "  decimal        64435106499    840515518479",  # 0x0F00A1B2C3, 0xC3B2A1000F
        "  facility_card  161,45763      45729,15",
        '  * = what the agent records (tag_format "decimal10", byte_order "big")',
        f'card read on "door" (serial {pty.port}, rdm6300):',
        "  format         big            little",
        "  raw            1234567890   (as sent, either byte order)",
        "  decimal10      0878082192 *   2018915346",  # 0x78563412
        "  hex            34567890       78563412",
        "  wiegand26      086,30864      086,13330",
        "  decimal        78187493520    620494205970",
        "  facility_card  13398,30864    30806,13330",
        '  * = what the agent records (tag_format "decimal10", byte_order "big")',
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
    assert "  raw            0F00A1B2C3   (as sent, either byte order)\n" in out
    assert "  hex            00A1B2C3       B2A1000F *\n" in out
    assert "  decimal10      0010597059     2996895759\n" in out
    assert '* = what the agent records (tag_format "hex", byte_order "little")' in out
    assert out.index("input ignored") < out.index("card read on")


def test_card_block_marks_a_configured_format_that_does_not_apply():
    none = {"raw": "ABC-1", "decimal10": None, "hex": None, "wiegand26": None, "decimal": None,
            "facility_card": None}
    text = probe.card_block("kbd", "hid /dev/input/event3", "ABC-1", {"big": none, "little": none},
                            "wiegand26", "big")
    assert text.splitlines() == [
        'card read on "kbd" (hid /dev/input/event3):',
        "  format         big    little",
        "  raw            ABC-1   (as sent, either byte order)",
        "  decimal10      -      -",
        "  hex            -      -",
        "  wiegand26      - *    -",
        "  decimal        -      -",
        "  facility_card  -      -",
        '  * = what the agent records (tag_format "wiegand26", byte_order "big"): DOES NOT APPLY to this card',
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


# ------------------------------------------------------------ --expect (issue 16)


def test_expect_exact_hit_prints_the_config_lines_and_exits_0(tmp_path, pty):
    p = start_probe(config(tmp_path, pty, tag_format="hex"), "--count", "1", "--timeout", "10",
                    "--expect", "0010597059")
    pty.send(frame("0F00A1B2C3"))
    out, err = p.communicate(timeout=10)
    assert p.returncode == 0, err
    assert out.splitlines()[-5:] == [
        "  --expect 0010597059 is given by:",
        "    decimal10      big     0010597059  exact",
        '  to record it, in [reader] "door":',
        '    tag_format = "decimal10"',
        '    byte_order = "big"',
    ]
    assert err == ""


def test_expect_lenient_hits_say_what_iflow_must_hold(tmp_path, pty, capsys):
    cfg = load(str(config(tmp_path, pty)))  # tag_format decimal10, byte_order big
    threading.Timer(0.2, lambda: pty.send(frame("0F00A1B2C3"))).start()
    assert probe.main(cfg, args(count=1, timeout=5, expect="10597059")) == 0
    out = capsys.readouterr().out
    assert "    decimal10      big     0010597059  lenient: iFlow must then hold it as 0010597059\n" in out
    assert '  the current config gives it, in [reader] "door":\n    tag_format = "decimal10"\n' in out
    # the facility/card separator and leading zeros: both 8-digit forms match, the first is recommended
    threading.Timer(0.2, lambda: pty.send(frame("0F00A1B2C3"))).start()
    assert probe.main(cfg, args(count=1, timeout=5, expect="161/045763")) == 0
    out = capsys.readouterr().out
    assert "    wiegand26      big     161,45763  lenient: iFlow must then hold it as 161,45763\n" in out
    assert "    facility_card  big     161,45763  lenient: iFlow must then hold it as 161,45763\n" in out
    assert '  to record it, in [reader] "door":\n    tag_format = "wiegand26"\n    byte_order = "big"\n' in out


def test_expect_several_matches_recommend_the_current_config(tmp_path, pty, capsys):
    cfg = load(str(config(tmp_path, pty, tag_format="facility_card")))
    threading.Timer(0.2, lambda: pty.send(frame("0F00A1B2C3"))).start()
    assert probe.main(cfg, args(count=1, timeout=5, expect="161,45763")) == 0
    out = capsys.readouterr().out
    assert "    wiegand26      big     161,45763  exact\n    facility_card  big     161,45763  exact\n" in out
    assert '  the current config gives it, in [reader] "door":\n    tag_format = "facility_card"\n' in out


def test_expect_miss_explains_and_exits_1(tmp_path, pty):
    p = start_probe(config(tmp_path, pty), "--count", "2", "--timeout", "10", "--expect", "2996895759")
    pty.send(frame("1234567890"))  # another card: no format gives the number
    time.sleep(0.3)
    pty.send(frame("0F00A1B2C3"))  # the card the number belongs to, read little-endian
    out, err = p.communicate(timeout=10)
    assert p.returncode == 1
    assert "  --expect 2996895759: NO format of this card gives it, in either byte order. Likely:\n" in out
    assert "    - another card: the number belongs to a different badge than the one held\n" in out
    assert "    decimal10      little  2996895759  exact\n" in out
    assert '    tag_format = "decimal10"\n    byte_order = "little"\n' in out
    assert err.splitlines() == ["agent: 1 of 2 cards read did not give --expect 2996895759"]


def test_expect_miss_on_ctrl_c_still_exits_1(tmp_path, pty):
    p = start_probe(config(tmp_path, pty), "--expect", "42")
    pty.send(frame("0F00A1B2C3"))
    for line in p.stdout:  # ends at EOF should probe stop early: then the assertions below say why
        if "Likely:" in line:
            break
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=10)
    assert p.returncode == 1 and "did not give --expect 42" in err and "Traceback" not in err


def test_help_documents_expect_and_its_exit_status():
    r = subprocess.run(AGENT + ["probe", "--help"], capture_output=True, text=True, timeout=20)
    assert r.returncode == 0
    text = " ".join(r.stdout.split())
    assert "--expect NUMBER" in text and "exit 1 at the end if a card read did not give it" in text


@pytest.mark.parametrize("bad", ["", "   ", "-5", "161,,45763", "card#1", "9" * 70])
def test_expect_must_look_like_a_card_number(tmp_path, pty, bad):
    r = subprocess.run(AGENT + ["--config", str(config(tmp_path, pty)), "probe", "--expect", bad],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 2 and "expected a card number" in r.stderr, r.stderr
    assert "reading" not in r.stdout  # refused before the reader was opened


@pytest.mark.parametrize("good", ["04:A2:2B:1A", "04 A2 2B 1A", "161 - 45763", "161/45763", "0010597059"])
def test_expect_takes_numbers_as_cards_and_apps_print_them(tmp_path, pty, good):
    r = subprocess.run(AGENT + ["--config", str(config(tmp_path, pty)), "probe", "--expect", good, "--timeout", "0.3"],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 1 and "no card read within 0.3 s" in r.stderr, r.stderr  # accepted: it read
    assert r.stdout.startswith('reading "door"'), r.stdout


def test_probe_shows_the_configs_warnings_first(tmp_path, pty, capsys):
    path = config(tmp_path, pty, d0_pin=5)  # a wiegand key on a serial reader: ignored, and said
    rc = probe.main(load(str(path)), args(timeout=0.2))
    err = capsys.readouterr().err
    assert rc == 1 and "agent: warning: " in err and "reader.d0_pin: ignored" in err, err


# ------------------------------------------------------------ new reader kinds


def test_describe_new_reader_kinds():
    from agent.config import ReaderConfig

    assert probe.describe(ReaderConfig(port="/dev/ttyAMA0", protocol="pn532", baudrate=115200)) == \
        "serial /dev/ttyAMA0, pn532 at 115200 baud"
    assert probe.describe(ReaderConfig(type="wiegand", d0_pin=17, d1_pin=27)) == "wiegand D0 GPIO17 D1 GPIO27"
    assert probe.describe(ReaderConfig(type="wiegand", d0_pin="WG_D0", d1_pin="WG_D1", gpiochip="gpiochip4",
                                       swap_lines=True, byte_order="little")) == (
        "wiegand D0 WG_D0 D1 WG_D1, chip gpiochip4, swap_lines, byte_order little")


def test_noise_lines_swapped_wiegand_gets_its_own_line():
    from collections import Counter

    lines = noise_lines("gate", Counter(swapped=2, parity=1), "a 26-bit frame ...", "wiegand")
    assert lines[0] == ('  (reader "gate": D0 and D1 look swapped: set swap_lines = true in [reader] '
                        "or swap the wires)")
    assert lines[1].startswith('  (reader "gate": input ignored: parity=1; last: ')
    assert "level shifter" in lines[1] and "baudrate" not in lines[1]
    assert noise_lines("gate", Counter(swapped=1), None, "wiegand") == lines[:1]
    # already swapped in the config, and the frames pass only unswapped: the advice is the other way
    assert "set swap_lines = false in [reader]" in noise_lines("gate", Counter(swapped=1), None, "wiegand",
                                                               swapped=True)[0]


def test_pn532_card_every_format_and_expect(tmp_path, capsys):
    from standins.pn532 import Pn532Sim

    with Pn532Sim() as sim:
        sim.start()
        path = write_config(tmp_path / "c.toml", state_dir=tmp_path / "state", port=sim.port,
                            reader={"name": "door", "protocol": "pn532", "tag_format": "hex", "poll_seconds": 0.05})
        threading.Timer(0.3, lambda: sim.present(bytes.fromhex("A1B2C3D4"))).start()
        rc = probe.main(load(str(path)), args(count=1, timeout=10, expect="3569595041"))
        sim.present(None)
    out = capsys.readouterr().out
    assert rc == 0, out
    assert out.splitlines()[1:16] == [
        f'card read on "door" (serial {sim.port}, pn532 at 115200 baud):',
        "  UID of 4 bytes",
        "  format         big            little",
        "  raw            A1B2C3D4   (as sent, either byte order)",
        "  decimal10      2712847316     3569595041",
        "  hex            A1B2C3D4 *     D4C3B2A1",
        "  wiegand26      178,50132      195,45729",
        "  decimal        2712847316     3569595041",
        "  facility_card  41394,50132    54467,45729",
        '  * = what the agent records (tag_format "hex", byte_order "big")',
        "  --expect 3569595041 is given by:",
        "    decimal10      little  3569595041  exact",
        "    decimal        little  3569595041  exact",
        '  to record it, in [reader] "door":',
        '    tag_format = "decimal10"',
    ]


def test_pn532_seven_byte_uid_once_while_held(tmp_path, capsys):
    from standins.pn532 import Pn532Sim

    with Pn532Sim() as sim:
        sim.start()
        path = write_config(tmp_path / "c.toml", state_dir=tmp_path / "state", port=sim.port,
                            reader={"name": "door", "protocol": "pn532", "tag_format": "decimal",
                                    "poll_seconds": 0.05})
        sim.present(bytes.fromhex("04A23B5A6C2F80"))  # held for the whole run: polled many times
        rc = probe.main(load(str(path)), args(timeout=1.5, expect="1304275710652288"))
    out = capsys.readouterr().out
    assert rc == 0, out
    assert out.count("card read on") == 1
    assert "  UID of 7 bytes (the 32-bit forms need at most 4)\n" in out
    assert "  decimal10      -                   -\n" in out
    assert "    decimal        big     1304275710652288  exact\n" in out
    assert '  the current config gives it, in [reader] "door":\n' in out


def _wiegand_loop(feed):
    from agent.reading.wiegand import WiegandDecoder
    from agent.reading.wiegandreader import WiegandReader

    reader = WiegandReader("gate", decoder=WiegandDecoder(), open_source=feed.open, what="Wiegand test feed")
    dev = reader.open()
    q: queue.Queue = queue.Queue()
    stop = threading.Event()
    t = threading.Thread(target=probe.read_loop, args=(reader, dev, stop, q.put))
    t.start()
    return q, stop, t


def test_wiegand_swapped_lines_detected_in_probe():
    from standins.wiegand import EdgeFeed, frame_bits, to_edges

    feed = EdgeFeed()
    q, stop, t = _wiegand_loop(feed)
    try:
        bits = frame_bits(161, 45763)
        feed.send(to_edges([1 - b for b in bits], start_ns=0))  # D0 and D1 wired the wrong way round
        kind, name, (counts, last) = q.get(timeout=5)
        assert (kind, name, counts) == ("noise", "gate", {"swapped": 1})
        assert noise_lines(name, counts, last, "wiegand") == [
            '  (reader "gate": D0 and D1 look swapped: set swap_lines = true in [reader] or swap the wires)']
        feed.send(to_edges(bits, start_ns=0))  # the same card correctly wired
        assert q.get(timeout=5) == ("tag", "gate", "26:1436586")
    finally:
        stop.set()
        # the reader's own wait between edges is several seconds: only the stop fd probe gives it ends it sooner
        t.join(4)
        feed.close()
    assert not t.is_alive()


def test_wiegand_card_through_probe_every_format():
    from agent.config import ReaderConfig
    from standins.wiegand import EdgeFeed, frame_bits, to_edges

    feed = EdgeFeed()
    q, stop, t = _wiegand_loop(feed)
    try:
        feed.send(to_edges(frame_bits(4660, 22136, 34), start_ns=0))
        kind, name, raw = q.get(timeout=5)
    finally:
        stop.set()
        t.join(4)
        feed.close()
    rc = ReaderConfig(name="gate", type="wiegand", d0_pin=17, d1_pin=27, tag_format="facility_card")
    text, matched = probe.show_card(rc, raw, "4660-22136")
    assert matched and raw == "34:22468ACF1"
    assert text.splitlines()[:3] == [
        'card read on "gate" (wiegand D0 GPIO17 D1 GPIO27):',
        "  Wiegand frame of 34 bits (parity bits first and last): facility 4660, card 22136 (card_bits 16); "
        "decimal = with parity, decimal10 = without",
        "  format         big           little",
    ]
    assert "  decimal        9200774385    " in text  # the whole frame 0x22468ACF1, parity bits included
    assert "  decimal10      0305419896    " in text  # the data bits 0x12345678 without them
    assert "    facility_card  big     4660,22136  lenient: iFlow must then hold it as 4660,22136\n" in text
    _, missed = probe.show_card(rc, raw, "4660,22137")
    assert not missed
