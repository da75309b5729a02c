"""PN532 over UART: the pure frames (agent.reading.pn532wire), the reader shell
(agent.reading.pn532) and the simulator (standins/pn532.py) on real ptys.

Frames written out by hand below follow NXP UM0701 rev. 02 (section numbers
cited per test) and the byte logs of nfcpy's pn532.py and Adafruit's driver.
"""

from __future__ import annotations

import logging
import threading
import time

import pytest
import serial
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.clock.anchors import AnchorStore
from agent.clock.clock import Clock
from agent.clock.sources import ClockSources
from agent.config import ReaderConfig
from agent.journal.store import Journal
from agent.reading import make_reader
from agent.reading import pn532wire as wire
from agent.reading.pn532 import Pn532Error, Pn532Reader, Pn532Silent
from agent.reading.pn532wire import Frame, FrameParser
from agent.reading.tagformat import all_formats
from agent.recording.recorder import Recorder
from standins.pn532 import Pn532Sim
from tests.support.harness import Pty
from tests.test_readers import Harness, wait_for

UID4 = bytes.fromhex("A1B2C3D4")
UID7 = bytes.fromhex("047368A2C72280")
UID10 = bytes.fromhex("0123456789ABCDEF0102")
H = bytes.fromhex
PROPS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def frames(data: bytes, parser: FrameParser | None = None) -> list[Frame]:
    return (parser or FrameParser()).feed(data)


@pytest.fixture
def sim():
    with Pn532Sim() as s:
        yield s


def reader(port: str, **kw) -> Pn532Reader:
    kw.setdefault("poll_seconds", 0.05)
    kw.setdefault("backoff", (0.05, 0.2))
    return Pn532Reader("door", port, **kw)


class Opened:
    """A reader opened and driven from the test thread: one read_ready() at a time."""

    def __init__(self, r: Pn532Reader) -> None:
        self.r = r
        self.ser = r.open()

    def read(self) -> tuple[int, list[str]]:
        return self.r.read_ready(self.ser)

    def close(self) -> None:
        self.r.close_device(self.ser)


@pytest.fixture
def opened(sim):
    o = Opened(reader(sim.port))
    yield o
    o.close()


# -- frames by hand (UM0701 6.2.1, 7.2, 7.3) ----------------------------------


def test_command_frames_match_um0701():
    # 6.2.1.1 normal information frame; 7.2.2 GetFirmwareVersion, as nfcpy sends it
    assert wire.get_firmware_version() == H("0000ff02fed4022a00")
    # 7.2.10 SAMConfiguration normal mode, byte for byte nfcpy's init
    assert wire.sam_configuration() == H("0000ff05fbd4140100001700")
    # 7.3.1 RFConfiguration item 5: MxRtyATR FF, MxRtyPSL 01, MxRtyPassiveActivation 01
    assert wire.rf_max_retries() == H("0000ff06fad43205ff0101f400")
    # 7.3.5 InListPassiveTarget, 1 target at 106 kbps type A (NXP community thread 474941)
    assert wire.in_list_passive_target() == H("0000ff04fcd44a0100e100")
    # 6.2.1.3-5
    assert wire.ACK == H("0000ff00ff00") and wire.NACK == H("0000ffff0000")
    assert wire.ERROR_FRAME == H("0000ff01ff7f8100")
    assert wire.WAKEUP[:2] == b"\x55\x55" and set(wire.WAKEUP[2:]) == {0}
    with pytest.raises(ValueError):
        wire.rf_max_retries(0xFF)


def test_answers_from_um0701_parse():
    # 7.2.2: D5 03 IC Ver Rev Support, firmware 1.6 (log in Adafruit_Python_PN532#14)
    (fw,) = frames(H("0000ff06fad50332010607e800"))
    assert fw == Frame("data", 0xD5, H("0332010607"))
    assert wire.parse_firmware(wire.answer_params(fw, wire.GET_FIRMWARE_VERSION)) == (0x32, 1, 6, 7)
    assert wire.answer_params(fw, wire.IN_LIST_PASSIVE_TARGET) is None
    # 7.2.10 SAMConfiguration's answer D5 15 (nfcpy)
    assert frames(H("0000ff02fed5151600")) == [Frame("data", 0xD5, b"\x15")]
    # 7.3.5 with a 7-byte UID and an ATS (DESFire; the same log, its DCS computed)
    (tg,) = frames(H("0000ff15ebd54b010103442007047368a2c722800675778102809100"))
    assert wire.parse_target(wire.answer_params(tg, wire.IN_LIST_PASSIVE_TARGET)) == (UID7, None)
    # a MIFARE Classic 1K: SENS_RES 00 04, SEL_RES 08, 4-byte UID
    (tg,) = frames(H("0000ff0cf4d54b010100040804a1b2c3d4e400"))
    assert wire.parse_target(tg.data[1:]) == (UID4, None)
    # no card: NbTg 0
    (none,) = frames(H("0000ff03fdd54b00e000"))
    assert wire.parse_target(none.data[1:]) == (None, None)
    assert frames(wire.ACK + wire.NACK + wire.ERROR_FRAME) == [Frame("ack"), Frame("nack"), Frame("error")]


@pytest.mark.parametrize("params, reason", [
    (b"", "bad_target"),
    (b"\x00\x01", "bad_target"),                          # NbTg 0 with more bytes
    (b"\x02\x01\x00\x04\x08\x04" + UID4, "bad_target"),   # 2 targets when 1 was asked for
    (b"\x01\x01\x00\x04\x08\x05" + UID4 + b"\x01", "bad_uid_length"),
    (b"\x01\x01\x00\x04\x08\x00", "bad_uid_length"),
    (b"\x01\x01\x00\x04\x08\x07" + UID4, "bad_target"),   # shorter than its length byte
    (b"\x01\x01\x00\x04\x08\x04" + UID4 + b"\x99", "bad_target"),  # trailing bytes, no ATS
    (b"\x01\x01\x00\x04", "bad_target"),
])
def test_malformed_target_answers_are_rejected(params, reason):
    assert wire.parse_target(params) == (None, reason)


def test_ten_byte_uids_are_accepted():
    assert wire.parse_target(b"\x01\x01\x00\x84\x00\x0a" + UID10) == (UID10, None)


def test_bad_frames_are_counted_by_reason():
    p = FrameParser()
    good = H("0000ff0cf4d54b010100040804a1b2c3d4e400")
    bad_dcs = good[:-2] + b"\xe5\x00"
    bad_lcs = good[:4] + b"\xf5" + good[5:]
    assert p.feed(b"\x13\x37" + bad_lcs + bad_dcs + good) == [frames(good)[0]]
    assert p.dropped["noise"] >= 1 and p.dropped["bad_lcs"] == 1 and p.dropped["bad_dcs"] == 1
    # a frame cut short by the next one: named torn, and the next one still found
    assert p.feed(good[:9] + good) == [frames(good)[0]]
    assert p.dropped["torn"] == 1
    # a frame cut short and nothing after it: the reader's timeout abandons it
    assert p.feed(good[:9]) == [] and p.partial
    p.abandon()
    assert p.dropped["torn"] == 2 and not p.partial
    assert "A1B2" not in (p.last_drop or "") and "a1b2" not in (p.last_drop or "")


# -- Hypothesis on the parser ---------------------------------------------------

payloads = st.binary(min_size=1, max_size=40)
data_frames = payloads.map(lambda b: wire.build_frame(wire.CHIP, b))
any_frame = data_frames | st.sampled_from([wire.ACK, wire.NACK, wire.ERROR_FRAME])
# Noise cannot hold a start code (00 FF) or begin with FF (it would make one
# with the postamble before it): what such noise hides is undecidable.
noise = st.binary(max_size=12).filter(lambda b: b"\x00\xff" not in b and not b.startswith(b"\xff")
                                      and not b.endswith(b"\x00"))


def feed_split(parser: FrameParser, data: bytes, cuts: list[int]) -> list[Frame]:
    out, last = [], 0
    for c in sorted({c % (len(data) + 1) for c in cuts}) + [len(data)]:
        out += parser.feed(data[last:c])
        last = c
    return out


@PROPS
@given(st.binary(max_size=400), st.lists(st.integers(0, 400), max_size=12))
def test_any_stream_split_anywhere_never_raises(data, cuts):
    p = FrameParser()
    for f in feed_split(p, data, cuts):
        assert f.kind in ("ack", "nack", "error", "data")
        if f.kind == "data":
            assert 1 <= len(f.data) <= 299
    assert "internal_error" not in p.dropped


@PROPS
@given(st.lists(st.tuples(noise, any_frame), min_size=1, max_size=6), noise, st.lists(st.integers(0, 500)))
def test_valid_frames_in_noise_are_all_found(parts, tail, cuts):
    stream = b"".join(n + f for n, f in parts) + tail
    expected = [frames(f)[0] for _, f in parts]
    assert feed_split(FrameParser(), stream, cuts) == expected


@PROPS
@given(payloads, st.data())
def test_one_flipped_byte_never_gives_another_valid_answer(payload, data):
    good = wire.build_frame(wire.CHIP, payload)
    i = data.draw(st.integers(0, len(good) - 1))
    flip = data.draw(st.integers(1, 255))
    bad = bytearray(good)
    bad[i] ^= flip
    found = [f for f in frames(bytes(bad)) if f.kind == "data"]
    assert found in ([], [Frame("data", wire.CHIP, payload)])  # only a flipped postamble still reads


# -- the simulator as a chip ----------------------------------------------------


def host(sim: Pn532Sim) -> serial.Serial:
    return serial.Serial(sim.port, 115200, timeout=0.3)


def test_simulator_sleeps_until_woken_and_ignores_bad_checksums(sim):
    with host(sim) as s:
        s.write(wire.get_firmware_version())
        assert s.read(6) == b"" and sim.commands == []  # asleep
        s.write(wire.WAKEUP)
        fw = wire.get_firmware_version()
        s.write(fw[:-2] + bytes([fw[-2] ^ 1, 0]))  # bad DCS: the chip stays silent, no NACK
        s.write(fw[:4] + bytes([fw[4] ^ 1]) + fw[5:])  # bad LCS
        assert s.read(6) == b""
        s.write(fw)
        assert s.read(19) == wire.ACK + H("0000ff06fad50332010607e800")
        assert sim.commands == [0x02] and sim.wakeups == 1
        s.write(wire.NACK)  # the host asks for the last answer again
        assert s.read(13) == H("0000ff06fad50332010607e800")
        s.write(wire.command_frame(0x99))  # unknown command: ACK, then the error frame
        assert s.read(14) == wire.ACK + wire.ERROR_FRAME


def test_simulator_without_max_retries_waits_for_a_card_forever(sim):
    with host(sim) as s:
        s.write(wire.WAKEUP + wire.sam_configuration())
        assert s.read(15) == wire.ACK + H("0000ff02fed5151600")
        s.write(wire.in_list_passive_target())
        assert s.read(20) == wire.ACK  # the default MxRtyPassiveActivation 0xFF: no answer


def test_simulator_in_reset_mode_needs_the_pulse():
    with Pn532Sim(recover="reset") as sim, host(sim) as s:
        s.write(wire.WAKEUP)
        sim.silent_after(0)
        s.write(wire.WAKEUP + wire.get_firmware_version())
        assert s.read(6) == b""
        sim.reset()
        s.write(wire.WAKEUP + wire.get_firmware_version())
        assert s.read(6) == wire.ACK


# -- the reader, driven one poll at a time ------------------------------------


def test_open_wakes_then_initialises(sim, opened):
    assert sim.wakeups == 1
    assert sim.commands[:3] == [wire.SAM_CONFIGURATION, wire.RF_CONFIGURATION, wire.GET_FIRMWARE_VERSION]
    assert opened.r.firmware == (0x32, 1, 6, 7)
    assert opened.read() == (1, [])  # no card: answered at once thanks to the finite retries
    sim.present(UID4)
    assert opened.read() == (1, ["A1B2C3D4"])


def test_open_refuses_another_chip():
    with Pn532Sim(firmware=(0x33, 2, 7, 7)) as sim, pytest.raises(Pn532Error, match="IC 0x33, not a PN532"):
        reader(sim.port).open()


def test_a_broken_reset_line_is_logged_and_the_chip_still_read(sim, caplog):
    def broken() -> None:
        raise OSError("GPIO line busy")

    o = Opened(reader(sim.port, reset=broken))
    try:
        sim.present(UID4)
        assert o.read() == (1, ["A1B2C3D4"])
        assert "could not pulse the PN532's reset line: GPIO line busy" in caplog.text
    finally:
        o.close()


def test_open_fails_clearly_when_nothing_answers():
    pty = Pty()
    try:
        with pytest.raises(Pn532Silent, match="no answer to SAMConfiguration"):
            reader(pty.port).open()
    finally:
        pty.close()


@pytest.mark.parametrize("inject, reason", [
    ("corrupt_next", "bad_dcs"),
    ("tear_next", "torn"),
    ("nack_next", "nack"),
])
def test_bad_checksums_torn_frames_and_nacks_never_scan(sim, opened, inject, reason):
    sim.present(UID7)
    # NACKed twice (the one resend too), torn or corrupted: no scan from that poll
    getattr(sim, inject)(2 if inject == "nack_next" else 1)
    assert opened.read() == (0, [])
    assert opened.r.decoder.dropped[reason] >= 1
    assert opened.read() == (1, [UID7.hex().upper()])  # the card was there all along


def test_one_nack_is_answered_by_sending_again(sim, opened):
    sim.present(UID4)
    sim.nack_next(1)
    assert opened.read() == (1, ["A1B2C3D4"])
    assert opened.r.decoder.dropped["nack"] == 1


def test_uids_of_other_lengths_are_dropped(sim, opened):
    sim.present(b"\x01\x02\x03\x04\x05")
    # the chip answered: the odd card is dropped, the chip is not taken for silent
    assert opened.read() == (1, [])
    assert opened.read() == (1, [])
    assert opened.read() == (1, [])
    assert opened.r.decoder.dropped["bad_uid_length"] == 3
    sim.present(UID10)
    assert opened.read() == (1, [UID10.hex().upper()])


def test_two_unanswered_commands_in_a_row_raise(sim, opened):
    sim.silent_after(0)
    assert opened.read() == (0, [])
    with pytest.raises(Pn532Silent):
        opened.read()
    assert "no_answer" not in opened.r.decoder.dropped  # silence is the reader's error, not refused input


def test_idle_chip_is_asked_for_its_firmware_version(sim):
    o = Opened(reader(sim.port, health_seconds=0.01))
    try:
        before = len(sim.commands)
        time.sleep(0.02)
        assert o.read() == (1, [])
        assert sim.commands[before:] == [wire.GET_FIRMWARE_VERSION, wire.IN_LIST_PASSIVE_TARGET]
    finally:
        o.close()


def test_from_config():
    rc = ReaderConfig(name="door", type="serial", protocol="pn532", port="/dev/ttyAMA0", baudrate=115200,
                      poll_seconds=0.3, health_seconds=12.0)
    r = make_reader(rc)
    assert isinstance(r, Pn532Reader)
    assert (r.port, r.baudrate, r.poll_seconds, r.health_seconds, r.reset) == ("/dev/ttyAMA0", 115200, 0.3, 12.0, None)


# -- the reader in its own thread ----------------------------------------------


@pytest.mark.parametrize("uid", [UID4, UID7], ids=["4-byte", "7-byte"])
def test_uids_read_in_every_format(sim, uid):
    sim.present(uid)
    with Harness(reader(sim.port)) as h:
        (tag,) = h.take(1)
    assert tag == uid.hex().upper()
    value, rev = int.from_bytes(uid, "big"), int.from_bytes(uid, "little")
    big, little = all_formats(tag, kind="uid"), all_formats(tag, kind="uid", byte_order="little")
    assert big["raw"] == little["raw"] == tag
    assert big["hex"] == uid.hex().upper() and little["hex"] == uid[::-1].hex().upper()
    assert big["decimal"] == str(value) and little["decimal"] == str(rev)
    if len(uid) == 4:
        assert big["decimal10"] == f"{value:010d}" and little["decimal10"] == f"{rev:010d}"
    else:
        assert big["decimal10"] is None and little["decimal10"] is None


class Recording(Harness):
    """Each read goes through the recorder the daemon uses: debounce, journal, feedback."""

    def __init__(self, r: Pn532Reader, recorder: Recorder) -> None:
        self.recorder, self.reads = recorder, []
        super().__init__(r)

    def emit(self, tag: str) -> None:
        self.reads.append(tag)
        self.recorder.handle("door", tag)


class Door:
    def __init__(self) -> None:
        self.events: list[str] = []

    def event(self, name: str, detail: str = "") -> None:
        self.events.append(name)


def test_card_held_for_ten_seconds_is_recorded_once(sim, tmp_path):
    (tmp_path / "boot_id").write_text("boot-pn532\n")
    clock = Clock(ClockSources(timesyncd_flag=str(tmp_path / "none"), boot_id_path=str(tmp_path / "boot_id")),
                  AnchorStore(str(tmp_path / "clock.json")))
    journal = Journal(str(tmp_path / "journal"))
    rc = ReaderConfig(name="door", type="serial", protocol="pn532", tag_format="hex", debounce_seconds=3.0)
    door = Door()
    h = Recording(reader(sim.port), Recorder(journal, clock, door, readers=[rc]))
    with h:
        wait_for(lambda: h.reader.connected, what="reader up")
        sim.present(UID4)
        time.sleep(10.0)
        sim.present(None)
        time.sleep(0.3)
    reads = h.reads
    assert len(reads) > 10 and set(reads) == {"A1B2C3D4"}  # read again and again while held (polls of 0.05 s)
    assert [(r.tag, r.raw) for r in journal.records()] == [("A1B2C3D4", "A1B2C3D4")]
    # one "stored" signal; the card lying there all along gets no "already" chirps
    assert door.events.count("stored") == 1 and door.events.count("already") == 0
    journal.close()


class Watch:
    """Samples reader.connected often, so a short outage cannot go unseen."""

    def __init__(self, r: Pn532Reader) -> None:
        self.r, self.seen, self._stop = r, [], threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            c = self.r.connected
            if not self.seen or self.seen[-1] != c:
                self.seen.append(c)
            time.sleep(0.002)

    def close(self) -> None:
        self._stop.set()
        self._t.join()


def recovers(sim: Pn532Sim, r: Pn532Reader, h: Harness) -> None:
    """Silence the chip; the reader must notice, go down and come back by itself."""
    wait_for(lambda: r.connected, what="reader up")
    watch = Watch(r)
    thread, wakeups, start = h.thread, sim.wakeups, len(sim.commands)
    sim.silent_after(0)
    wait_for(lambda: sim.wakeups > wakeups, timeout=10, what="re-wake")
    wait_for(lambda: r.connected, timeout=10, what="reader back")
    # the watch samples every 2 ms: let it see the return too before it stops
    wait_for(lambda: len(watch.seen) >= 3, timeout=5, what="the watch to see the reader back")
    watch.close()
    assert watch.seen[:3] == [True, False, True]  # "reader missing" while it was down
    # Detected within 2 health periods: two unanswered commands (each bounded by
    # the ACK timeout, 0.25 s, after a 0.05 s poll) end it, well inside 2 x 0.5 s;
    # no GetFirmwareVersion was needed.
    after = sim.commands[start:]
    assert after[:3] == [wire.IN_LIST_PASSIVE_TARGET] * 2 + [wire.SAM_CONFIGURATION]
    sim.present(UID7)
    assert h.take(1) == [UID7.hex().upper()]
    assert h.thread is thread and thread.is_alive()


def test_silent_chip_is_detected_and_the_reader_heals_itself(sim):
    r = reader(sim.port, health_seconds=0.5, backoff=(0.2, 0.4))
    with Harness(r) as h:
        recovers(sim, r, h)


def test_silent_chip_recovers_through_the_reset_pulse():
    with Pn532Sim(recover="reset") as sim:
        pulses = []

        def pulse() -> None:
            pulses.append(1)
            sim.reset()

        r = reader(sim.port, health_seconds=0.5, backoff=(0.2, 0.4), reset=pulse)
        with Harness(r) as h:
            recovers(sim, r, h)
        assert len(pulses) >= 2  # at the first open and at the reopen


def test_without_a_reset_line_the_reader_stays_missing_until_the_chip_is_reset():
    with Pn532Sim(recover="reset") as sim:
        r = reader(sim.port, health_seconds=0.5, backoff=(0.05, 0.1))
        with Harness(r) as h:
            wait_for(lambda: r.connected, what="reader up")
            sim.silent_after(0)
            wait_for(lambda: not r.connected, what="reader missing")
            wakeups = sim.wakeups
            wait_for(lambda: "SAMConfiguration" in (r.error or ""), what="a failed reopen")
            wait_for(lambda: sim.wakeups >= wakeups + 3, what="repeated re-wakes")
            assert not r.connected
            sim.reset()
            wait_for(lambda: r.connected, what="reader back after the reset")
            sim.present(UID4)
            assert h.take(1) == ["A1B2C3D4"]


def test_logs_never_show_the_uid(sim, caplog):
    caplog.set_level(logging.DEBUG, logger="agent.reader")
    sim.present(UID4)
    r = reader(sim.port, health_seconds=0.5)
    with Harness(r) as h:
        h.take(1)
        sim.corrupt_next(1)
        sim.tear_next(1)
        wait_for(lambda: r.decoder.dropped["torn"] >= 1, what="torn frame")
        sim.silent_after(0)
        wait_for(lambda: not r.connected, what="reader down")
        wait_for(lambda: r.connected, what="reader back")
    text = "\n".join(rec.getMessage() for rec in caplog.records)
    assert "dropped input" in text and "failed" in text
    assert "A1B2C3D4" not in text.upper()


@pytest.mark.parametrize("case", ["first", "hung", "hung_with_reset", "reset_broken"])
def test_an_open_that_fails_says_what_to_do_for_what_happened(case):
    def broken_reset() -> None:
        raise OSError("no GPIO chip")

    with Pn532Sim(recover="reset") as sim:
        reset = {"hung_with_reset": lambda: None, "reset_broken": broken_reset}.get(case)
        r = reader(sim.port, reset=reset)
        if case != "first":  # it worked once, then hung
            r.close_device(r.open())
        sim.silent_after(0)
        with pytest.raises(Pn532Silent) as err:
            r.open()
    text = str(err.value)
    if case == "first":
        assert "check the wiring, the HSU/UART setting" in text, text
    elif case == "hung":
        assert "it answered before, so it hung: power-cycle it" in text and "reader.reset_pin" in text, text
    elif case == "hung_with_reset":
        assert "did not come back after the reset pulse: power-cycle it" in text, text
    else:
        assert "could not pulse the PN532's reset line: no GPIO chip" in text, text


def test_a_broken_reset_line_is_logged_once_not_at_every_reopen(sim, caplog):
    def broken_reset() -> None:
        raise OSError("no GPIO chip")

    r = reader(sim.port, reset=broken_reset)
    with caplog.at_level("WARNING", logger="agent.reader"):
        for _ in range(3):
            r.close_device(r.open())
    assert sum("could not pulse" in m for m in caplog.messages) == 1, caplog.messages
