"""Tests for the Wiegand shell: agent.reading.gpiolines on the real gpiod binding (gpio-sim where
the kernel has it) and agent.reading.wiegandreader fed through standins.wiegand.EdgeFeed."""

from __future__ import annotations

import glob
import os
import random
import select
import sys
import time
import types
from pathlib import Path

import pytest

from agent.reading import base, gpiolines
from agent.reading.gpiolines import GpioUnavailable, open_edges, reset_pulser
from agent.reading.wiegand import WiegandDecoder
from agent.reading.wiegandreader import WiegandReader
from standins.wiegand import RECORD, EdgeFeed, frame_bits, to_edges
from tests.test_readers import FAST, Harness, wait_for

GPIO_SIM = Path("/sys/kernel/config/gpio-sim")
NO_CHIP = not glob.glob(gpiolines.DEV_GLOB)


@pytest.fixture(autouse=True)
def short_tick(monkeypatch):
    """Shorter idle waits so the idle-level check comes sooner; the logic is unchanged."""
    monkeypatch.setattr(base, "_TICK", 0.2)


def reader_on(feed: EdgeFeed, **kw) -> WiegandReader:
    return WiegandReader("door", decoder=WiegandDecoder(**kw), open_source=feed.open,
                         what="Wiegand reader (test feed)", backoff=FAST)


def card_edges(facility: int, card: int, nbits: int = 26, seed: int = 0):
    return to_edges(frame_bits(facility, card, nbits), start_ns=0, rng=random.Random(seed))


# ------------------------------------------------------------ the reader, through EdgeFeed


def test_tags_end_to_end_through_the_feed():
    feed = EdgeFeed()
    reader = reader_on(feed)
    with Harness(reader) as h:
        wait_for(lambda: reader.connected, what="connected")
        assert feed.send(card_edges(161, 45763)) > 0
        assert h.take(1) == ["26:1436586"]
        feed.send(card_edges(0x89D4, 0x1B81, 34, seed=1))
        assert h.take(1) == ["34:313A83703"]  # the CIVINTEC manual's W34 example
        burst = to_edges(frame_bits(161, 45763) * 2, start_ns=0, rng=random.Random(2))
        feed.send(burst)  # a reader repeating its frame without the gap
        assert h.take(2) == ["26:1436586", "26:1436586"]
        assert reader.error is None


def test_drops_are_counted_and_never_emitted():
    feed = EdgeFeed()
    reader = reader_on(feed)
    swapped = [1 - b for b in frame_bits(161, 45763)]
    with Harness(reader) as h:
        wait_for(lambda: reader.connected, what="connected")
        feed.send(to_edges(swapped, start_ns=0, rng=random.Random(3)))
        wait_for(lambda: reader.decoder.dropped["swapped"] == 1, what="swapped drop")
        feed.send(to_edges([0, 1, 0, 1], start_ns=0, rng=random.Random(4)))
        wait_for(lambda: reader.decoder.dropped["keypad"] == 1, what="keypad drop")
        assert h.tags.empty()


def test_a_line_low_at_open_is_an_error_until_it_goes_high():
    feed = EdgeFeed(levels=(0, 1))
    reader = reader_on(feed)
    with Harness(reader) as h:
        wait_for(lambda: reader.error is not None, what="open error")
        assert not reader.connected and not feed.is_open  # the failed open released the lines
        assert "d0_pin is low while idle" in reader.error
        assert "unpowered" in reader.error and "common ground" in reader.error
        assert "level shifter" in reader.error
        feed.set_levels(0, 0)
        wait_for(lambda: "both lines are low" in (reader.error or ""), what="both low")
        opened = feed.opened
        wait_for(lambda: feed.opened > opened + 1, what="retries")  # backs off and retries
        feed.set_levels(1, 1)
        wait_for(lambda: reader.connected, what="recovered")
        assert reader.error is None
        feed.send(card_edges(161, 45763))
        assert h.take(1) == ["26:1436586"]


def test_a_line_that_stays_low_while_idle_means_the_reader_went_away():
    feed = EdgeFeed()
    reader = reader_on(feed)
    with Harness(reader) as h:
        wait_for(lambda: reader.connected, what="connected")
        feed.set_levels(1, 0)
        wait_for(lambda: not reader.connected and "d1_pin is low" in (reader.error or ""),
                 what="reader missing")
        feed.set_levels(1, 1)
        wait_for(lambda: reader.connected, what="reconnected")
        feed.send(card_edges(1, 2))
        assert len(h.take(1)) == 1


def test_stop_ends_an_idle_reader_in_its_wait(monkeypatch):
    monkeypatch.setattr(base, "_TICK", 120.0)  # a tick far longer than the join: only the stop fd ends it
    feed = EdgeFeed()
    reader = reader_on(feed)
    h = Harness(reader)
    h.thread.start()
    wait_for(lambda: reader.connected, what="connected")
    time.sleep(0.2)  # into its idle wait
    h.stop.set()
    h.thread.join(60.0)
    assert not h.thread.is_alive()
    assert not feed.is_open  # the lines were released


def test_the_feed_keeps_partial_records_and_rebases_time():
    feed = EdgeFeed().open()
    edges = card_edges(161, 45763)
    before = time.monotonic_ns()
    feed.send(edges, realtime=False)
    got = []
    while len(got) < len(edges):
        got += feed.read()
    assert [(e.line, e.falling) for e in got] == [(e.line, e.falling) for e in edges]
    assert got[0].t_ns >= before and got[-1].t_ns - got[0].t_ns == edges[-1].t_ns - edges[0].t_ns
    w = feed._w
    os.write(w, RECORD.pack(5, 1, 1)[:7])  # half a record: nothing yet
    assert feed.read() == []
    os.write(w, RECORD.pack(5, 1, 1)[7:])
    assert feed.read() == [(1, 5, True)]
    feed.close()
    assert feed.send(edges) == 0  # nobody listens


def test_from_config_builds_the_decoder_and_the_gpio_opener():
    from agent.config import ReaderConfig
    from agent.reading import make_reader

    rc = ReaderConfig(name="gate", type="wiegand", d0_pin=17, d1_pin="GPIO27", gpiochip="gpiochip0",
                      swap_lines=True, frame_gap_seconds=0.04, keypad=True)
    reader = make_reader(rc)
    assert isinstance(reader, WiegandReader) and reader.name == "gate"
    dec = reader.decoder
    assert (dec.gap_ns, dec.swap, dec.keypad) == (40_000_000, True, True)
    assert reader.what == "Wiegand reader (D0 GPIO17, D1 GPIO27 on gpiochip0)"
    with pytest.raises(GpioUnavailable):  # the real opener: no chip here, or no such line
        reader.open()


# ------------------------------------------------------------ the GPIO shell, real gpiod


@pytest.mark.skipif(not NO_CHIP, reason="this machine has a GPIO chip")
def test_no_gpio_chip_is_a_clear_error():
    import gpiod  # the real binding (libgpiod v2) is installed: the chip is what is missing

    assert hasattr(gpiod, "request_lines")
    with pytest.raises(GpioUnavailable) as err:
        open_edges(None, 17, 27)
    assert str(err.value).startswith("no GPIO chip: /dev/gpiochip* does not exist")
    assert "\n" not in str(err.value)
    with pytest.raises(GpioUnavailable, match="no GPIO chip"):
        reset_pulser(None, 25)()  # nothing happens before the first pulse


def test_a_reader_without_gpio_backs_off_with_the_message():
    reader = WiegandReader("door", decoder=WiegandDecoder(), what="Wiegand reader (D0 17, D1 27)",
                           open_source=lambda: open_edges("/dev/null", 17, 27), backoff=FAST)
    with Harness(reader):
        wait_for(lambda: reader.error is not None, what="error")
        assert reader.error.startswith("cannot open Wiegand reader (D0 17, D1 27): cannot use /dev/null")
        assert not reader.connected


def test_missing_chip_paths_and_labels():
    with pytest.raises(GpioUnavailable, match=r"/dev/gpiochip99 does not exist"):
        open_edges("gpiochip99", 17, 27)
    if NO_CHIP:
        with pytest.raises(GpioUnavailable, match="no GPIO chip"):
            open_edges("pinctrl-rp1", 17, 27)


def test_the_old_v1_binding_is_refused_naming_what_to_install(monkeypatch):
    v1 = types.ModuleType("gpiod")  # what Debian bookworm's python3-libgpiod 1.6 provides
    v1.Chip, v1.__version__ = object, "1.6.3"
    monkeypatch.setitem(sys.modules, "gpiod", v1)
    with pytest.raises(GpioUnavailable) as err:
        open_edges(None, 17, 27)
    msg = str(err.value)
    assert "libgpiod v1 (1.6.3)" in msg and "pip install gpiod==2.5.0" in msg
    assert "python3-libgpiod" in msg and "trixie" in msg


def test_no_binding_at_all(monkeypatch):
    monkeypatch.setitem(sys.modules, "gpiod", None)  # import gpiod raises ImportError
    with pytest.raises(GpioUnavailable, match="not installed: .*pip install gpiod==2.5.0"):
        open_edges(None, 17, 27)


def test_the_line_settings_suit_the_real_binding():
    import gpiod
    from gpiod.line_settings import _line_settings_to_ext

    s = gpiolines._edge_settings(gpiod)
    assert s.direction == gpiod.line.Direction.INPUT and s.edge_detection == gpiod.line.Edge.BOTH
    assert s.event_clock == gpiod.line.Clock.MONOTONIC and s.debounce_period.total_seconds() == 0
    _line_settings_to_ext(s)  # the C extension accepts every field


# ------------------------------------------------------------ gpio-sim, where the kernel has it


class GpioSim:
    """One simulated chip with named lines (configfs gpio-sim); pulls drive the inputs."""

    def __init__(self, names: list[str]) -> None:
        self.dev = GPIO_SIM / f"rfid-agent-test-{os.getpid()}"
        self.dev.mkdir()
        bank = self.dev / "bank0"
        bank.mkdir()
        (bank / "num_lines").write_text(str(len(names)))
        for i, name in enumerate(names):
            (bank / f"line{i}").mkdir()
            (bank / f"line{i}" / "name").write_text(name)
        self.pull(None)
        (self.dev / "live").write_text("1")
        self.chip = "/dev/" + (bank / "chip_name").read_text().strip()
        self._sys = Path("/sys/devices/platform") / (self.dev / "dev_name").read_text().strip() / \
            (bank / "chip_name").read_text().strip()
        self.names = names

    def pull(self, line: int | None, up: bool = True) -> None:
        if line is not None:
            (self._sys / f"sim_gpio{line}" / "pull").write_text("pull-up" if up else "pull-down")

    def close(self) -> None:
        (self.dev / "live").write_text("0")
        for i in range(len(self.names)):
            (self.dev / "bank0" / f"line{i}").rmdir()
        (self.dev / "bank0").rmdir()
        self.dev.rmdir()


@pytest.mark.skipif(not GPIO_SIM.is_dir(),
                    reason="no gpio-sim: /sys/kernel/config/gpio-sim is absent (no configfs or module)")
def test_gpio_sim_edges_through_the_real_kernel_interface():
    sim = GpioSim(["WIEGAND_D0", "WIEGAND_D1", "RST"])
    try:
        sim.pull(0)
        sim.pull(1)
        source = open_edges(sim.chip, "WIEGAND_D0", "WIEGAND_D1")
        try:
            assert source.levels() == (1, 1)
            with pytest.raises(GpioUnavailable, match="busy.*rfid-agent"):
                open_edges(sim.chip, "WIEGAND_D0", "WIEGAND_D1")
            for bit in frame_bits(161, 45763):
                sim.pull(bit, up=False)
                time.sleep(0.0001)
                sim.pull(bit)
                time.sleep(0.001)
            dec, tags, end = WiegandDecoder(), [], time.monotonic() + 5
            while not tags and time.monotonic() < end:
                readable = select.select([source.fileno()], [], [], 0.1)[0]
                tags += dec.feed(source.read()) if readable else dec.flush(time.monotonic_ns())
            assert tags == ["26:1436586"]
        finally:
            source.close()
        with pytest.raises(GpioUnavailable, match="no GPIO line named NOPE"):
            open_edges(None, "NOPE", "WIEGAND_D1")
        reset_pulser(sim.chip, "RST", low_seconds=0.01, settle_seconds=0)()
    finally:
        sim.close()
