"""The scan path's signals: one "stored" per scan, "already" for a card shown
again within the debounce window, and silence for a card that lies on the
reader and is read again and again (a PN532 at every poll, an RDM6300 ten
times a second). Real journal; the clock is a real Clock whose sources a test
moves by hand, so every gap is exact."""

from __future__ import annotations

import pytest

from agent.clock.anchors import AnchorStore
from agent.clock.clock import Clock
from agent.clock.sources import ClockSources
from agent.config import ReaderConfig
from agent.journal.store import Journal
from agent.recording.recorder import HELD_S, Recorder, held_ns

S = 1_000_000_000


class Sources(ClockSources):
    """The machine's clock sources, with a boot clock the test sets."""

    def __init__(self, tmp_path) -> None:
        (tmp_path / "boot_id").write_text("boot-recorder\n")
        super().__init__(timesyncd_flag=str(tmp_path / "none"), boot_id_path=str(tmp_path / "boot_id"))
        self.mono = 1000 * S

    def now(self) -> tuple[int, int]:
        return 1_800_000_000 * S + self.mono, self.mono


class Door:
    def __init__(self) -> None:
        self.events: list[str] = []

    def event(self, name: str, detail: str = "") -> None:
        self.events.append(name)


@pytest.fixture
def rig(tmp_path):
    sources = Sources(tmp_path)
    clock = Clock(sources, AnchorStore(str(tmp_path / "clock.json")))
    journal = Journal(str(tmp_path / "journal"))
    door = Door()

    def make(**reader):
        rc = ReaderConfig(name="door", **reader)
        return Recorder(journal, clock, door, readers=[rc])

    def at(rec: Recorder, seconds: float, raw: str = "CARD1") -> str:
        sources.mono = int(1000 * S + seconds * S)
        return rec.handle("door", raw)

    yield make, at, door, journal
    journal.close()


def test_a_card_lying_on_the_reader_is_signalled_once(rig):
    make, at, door, journal = rig
    rec = make(debounce_seconds=3.0)
    reads = [at(rec, t / 10) for t in range(0, 60)]  # ten reads a second for 6 s, as an RDM6300 sends
    assert reads[0] == "stored" and set(reads[1:30]) == {"already"}
    assert reads.count("stored") == 1  # the window slides while the card stays: one scan
    assert door.events == ["stored"]  # and no chirps while it lies there
    assert len(list(journal.records())) == 1


def test_shown_again_within_the_window_gets_already(rig):
    make, at, door, journal = rig
    rec = make(debounce_seconds=3.0)
    assert at(rec, 0.0) == "stored"
    assert at(rec, HELD_S + 0.05) == "already"  # taken away and shown again
    assert door.events == ["stored", "already"]
    assert at(rec, 4.0) == "stored"  # past the window: a new scan
    assert door.events == ["stored", "already", "stored"]


def test_a_pn532_cycle_is_its_poll_and_an_exchange(rig):
    make, at, door, journal = rig
    rc = ReaderConfig(protocol="pn532", poll_seconds=0.4, debounce_seconds=3.0)
    assert held_ns(rc) == int(3 * (0.4 + 0.1) * S)  # a missed cycle at the field's edge still holds
    rec = make(protocol="pn532", poll_seconds=0.4, debounce_seconds=3.0)
    assert [at(rec, t) for t in (0.0, 0.5, 1.0, 2.4)] == ["stored", "already", "already", "already"]
    assert door.events == ["stored"]  # every gap below 1.5 s: the card never left
    assert at(rec, 4.0) == "already" and door.events == ["stored", "already"]  # 1.6 s away: shown again


def test_held_never_reaches_the_debounce_window(rig):
    # a slow poll would otherwise hide every second tap inside the window
    assert held_ns(ReaderConfig(protocol="pn532", poll_seconds=2.0, debounce_seconds=3.0)) == int(2.4 * S)
    assert held_ns(ReaderConfig(debounce_seconds=0.5)) == int(0.4 * S)
    make, at, door, journal = rig
    rec = make(protocol="pn532", poll_seconds=2.0, debounce_seconds=3.0)
    assert at(rec, 0.0) == "stored" and at(rec, 2.5) == "already"
    assert door.events == ["stored", "already"]


def test_without_debounce_every_read_is_a_scan_with_its_signal(rig):
    make, at, door, journal = rig
    rec = make(debounce_seconds=0.0)
    assert [at(rec, t) for t in (0.0, 0.1, 0.2)] == ["stored"] * 3
    assert door.events == ["stored"] * 3


def test_held_counts_from_when_the_scan_was_stored(rig, monkeypatch):
    make, at, door, journal = rig
    rec = make(debounce_seconds=3.0)
    append = journal.append

    def slow_append(fields):  # an SD card's fsync: the boot clock moves on while it writes
        out = append(fields)
        rec.clock._sources.mono += int(0.45 * S)
        return out

    monkeypatch.setattr(journal, "append", slow_append)
    assert at(rec, 0.0) == "stored"
    assert at(rec, 0.55) == "already"  # 0.1 s after the write ended: the card still lying there
    assert door.events == ["stored"]


def test_a_restart_seeds_the_window_and_the_first_read_after_it_is_signalled(rig):
    make, at, door, journal = rig
    first = make(debounce_seconds=30.0)
    assert at(first, 0.0) == "stored"
    second = make(debounce_seconds=30.0)  # the daemon again, same boot
    second.seed_debounce("boot-recorder")
    assert at(second, 5.0) == "already" and at(second, 5.1) == "already"
    assert door.events == ["stored", "already"]
