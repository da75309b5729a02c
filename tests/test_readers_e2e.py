"""The new readers end to end: a card at the reader reaches the iFlow stand-in.

* PN532: the real `agent run` daemon (a subprocess) on the PN532 simulator's
  pty (standins/pn532.py), delivering to the iFlow stand-in on 127.0.0.1:
  4- and 7-byte UIDs in "hex" and "decimal", a card held longer than the
  debounce window, and a chip that goes silent and comes back without the
  daemon being restarted.
* Wiegand: the daemon in this process with a WiegandReader whose GPIO shell
  is replaced at its injection point (``open_source``) by standins.wiegand's
  EdgeFeed, so generated edges with real timing reach the decoder: 26- and
  34-bit frames become the right facility/card numbers in iFlow, a frame with
  a parity error never gets there.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter

from agent.journal.store import Journal
from tests.support.harness import Daemon, run_cli, wait_ready

TOKEN = "tok-readers-e2e-123456"


def iflow_table(url: str) -> dict:
    return {"url": url, "access_token": TOKEN, "backoff_initial": "0.2s", "backoff_max": "1s",
            "read_timeout": 5.0}


def wait_until(pred, timeout: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


def in_iflow(standin) -> Counter:
    return Counter(s["rfidTag"] for s in standin.stored)


def reader_state(cfg, name: str) -> dict:
    r = run_cli(cfg, "status", "--json")
    assert r.returncode == 0, r.stderr
    st = json.loads(r.stdout)
    return {"pid": st.get("pid"), **next(x for x in st["readers"] if x["name"] == name)}


def journal_tags(state_dir) -> Counter:
    j = Journal(str(state_dir / "journal"))
    try:
        return Counter((r.reader, r.tag, r.raw) for r in j.records())
    finally:
        j.close()


# ------------------------------------------------------------------ PN532


def pn532_config(tmp_path, door_port: str, exit_port: str, url: str):
    """Two PN532 readers, as a site with an entry and an exit has: "hex" and "decimal"."""
    state = tmp_path / "state"
    cfg = tmp_path / "c.toml"
    readers = ""
    for name, port, fmt in (("door", door_port, "hex"), ("exit", exit_port, "decimal")):
        readers += (f'[[reader]]\nname = "{name}"\ntype = "serial"\nprotocol = "pn532"\nport = "{port}"\n'
                    f'tag_format = "{fmt}"\ndebounce_seconds = 3\n')
    iflow = "".join(f"{k} = {json.dumps(v)}\n" for k, v in iflow_table(url).items())
    cfg.write_text(f'timezone = "Europe/Bucharest"\nstate_dir = "{state}"\n{readers}'
                   f'[feedback]\nbackend = "console"\n[iflow]\n{iflow}'
                   '[time]\ntrust_rtc = true\n[journal]\nallow_volatile = true  # /tmp may be a tmpfs on CI\n')
    return cfg, state


def tap(d: Daemon, sim, uid: bytes, tag: str) -> None:
    """A card into the field until the daemon acknowledges it, then away."""
    before = sum(ln.startswith(f"stored tag={tag} ") for ln in d.lines)
    sim.present(uid)
    try:
        assert d.wait_for(lambda ls: sum(ln.startswith(f"stored tag={tag} ") for ln in ls) > before, timeout=20), \
            "".join(d.stderr)[-3000:]
    finally:
        sim.present(None)


def test_pn532_cards_reach_iflow_once_and_a_silent_chip_heals_without_a_restart(tmp_path):
    from standins.iflow import IflowStandin
    from standins.pn532 import Pn532Sim

    uid4, uid7 = bytes.fromhex("04A1B2C3"), bytes.fromhex("04112233445566")
    held = bytes.fromhex("08D2E4F6")
    after = bytes.fromhex("04C0FFEE123480")
    with IflowStandin(token=TOKEN) as iflow, Pn532Sim() as door, Pn532Sim() as exit_:
        cfg, state = pn532_config(tmp_path, door.port, exit_.port, iflow.url)
        d = Daemon(cfg)
        try:
            wait_ready(cfg)
            pid = d.proc.pid
            wait_until(lambda: all(reader_state(cfg, n)["connected"] for n in ("door", "exit")),
                       what="both readers connected")
            expected = {
                "04A1B2C3": (door, uid4),  # hex: every UID byte, 2 digits each
                "04112233445566": (door, uid7),
                str(int.from_bytes(uid4, "big")): (exit_, uid4),  # decimal: all the bytes as one number
                str(int.from_bytes(uid7, "big")): (exit_, uid7),
            }
            assert set(expected) == {"04A1B2C3", "04112233445566", "77705923", "1144738493519206"}
            for tag, (sim, uid) in expected.items():
                tap(d, sim, uid, tag)
            wait_until(lambda: set(in_iflow(iflow)) >= set(expected), what="the four scans in iFlow")

            # Held for 5 s, longer than the 3 s debounce window: the reader keeps
            # reading it, one record, and the door stays quiet while it lies there;
            # taken away and shown again within the window, it gets the "already" signal.
            door.present(held)
            assert d.wait_for(lambda ls: "stored tag=08D2E4F6" in " ".join(ls))
            time.sleep(5.0)
            door.present(None)
            time.sleep(1.0)
            assert not any(ln.startswith("already tag=08D2E4F6") for ln in d.lines), d.lines[-20:]
            door.present(held)
            assert d.wait_for(lambda ls: any(ln.startswith("already tag=08D2E4F6") for ln in ls))
            door.present(None)
            wait_until(lambda: in_iflow(iflow)["08D2E4F6"] == 1, what="the held card in iFlow")

            # The chip stops answering for a moment: two polls without an answer,
            # the reader closes, re-wakes and re-initialises it, by itself.
            wakeups = door.wakeups
            door.silent_after(0)
            wait_until(lambda: door.wakeups > wakeups, what="the chip woken again")
            tap(d, door, bytes.fromhex("04BEEF01"), "04BEEF01")
            assert "no valid answer to 2 commands in a row" in "".join(d.stderr)

            # Now it stays silent through the wake-ups (as a chip that needs a power
            # cycle): status shows the reader down with the reason, and the door
            # shows "reader missing"; once the chip answers a wake-up again the
            # reader comes back on its own.
            door.recover = "reset"
            mark = len(d.lines)  # conditions are printed when they change: look from here on
            door.silent_after(0)
            down: dict = {}

            def seen_down() -> bool:
                st = reader_state(cfg, "door")
                if not st["connected"] and st["error"]:
                    down.update(st)
                return bool(down)

            wait_until(seen_down, what="status showing the door reader disconnected")
            assert door.port in down["error"], down  # which device, in words
            assert d.wait_for(lambda ls: "reader_missing on" in ls[mark:], timeout=20), d.lines[-20:]
            assert reader_state(cfg, "exit")["connected"]  # the other reader is not touched
            assert not reader_state(cfg, "door")["connected"]
            wakeups = door.wakeups
            door.recover = "wake"
            assert d.wait_for(lambda ls: "reader_missing off" in ls[mark:], timeout=30), d.lines[-20:]
            assert door.wakeups > wakeups
            wait_until(lambda: reader_state(cfg, "door")["connected"], what="the door reader back")
            assert reader_state(cfg, "door")["error"] is None
            tap(d, door, after, "04C0FFEE123480")
            wait_until(lambda: in_iflow(iflow)["04C0FFEE123480"] == 1, what="the card after the recovery")
            assert d.proc.poll() is None and reader_state(cfg, "door")["pid"] == pid  # never restarted
            assert d.terminate() == 0
        finally:
            if d.proc.poll() is None:
                d.kill()
        stored = in_iflow(iflow)
    assert stored == Counter({**dict.fromkeys(expected, 1), "08D2E4F6": 1, "04BEEF01": 1, "04C0FFEE123480": 1})
    raws = {(reader, tag): raw for reader, tag, raw in journal_tags(state)}
    assert raws[("door", "04112233445566")] == raws[("exit", "1144738493519206")] == "04112233445566"
    assert max(journal_tags(state).values()) == 1
    assert "Traceback" not in "".join(d.stderr)


# ------------------------------------------------------------------ Wiegand


def test_wiegand_frames_reach_iflow_with_their_numbers_and_a_parity_error_never_does(tmp_path):
    from agent.commands.run import Daemon as InProcessDaemon
    from agent.config import from_dict
    from agent.feedback import Feedback
    from agent.reading.wiegand import WiegandDecoder
    from agent.reading.wiegandreader import WiegandReader
    from agent.runtime.sdnotify import Notifier
    from standins.iflow import IflowStandin
    from standins.wiegand import EdgeFeed, frame_bits, to_edges

    w26 = frame_bits(161, 45763, 26)
    # The example common to the notes: facility 161, card 45763 is data
    # 0xA1B2C3 between two parity bits that are both 0.
    assert int("".join(map(str, w26)), 2) == 0xA1B2C3 << 1
    w34 = frame_bits(1234, 56789, 34)
    bad = list(frame_bits(200, 12345, 26))
    bad[5] ^= 1  # one data bit flipped on the wire: the even parity of the first half fails

    with IflowStandin(token=TOKEN) as iflow:
        cfg = from_dict({"timezone": "Europe/Bucharest", "state_dir": str(tmp_path / "state"),
                         "journal": {"allow_volatile": True}, "time": {"trust_rtc": True},
                         "reader": {"type": "wiegand", "name": "gate", "d0_pin": 17, "d1_pin": 27,
                                    "tag_format": "facility_card", "card_bits": 16},
                         "iflow": iflow_table(iflow.url)})
        rc = cfg.reader
        feed = EdgeFeed()
        reader = WiegandReader(rc.name, decoder=WiegandDecoder(gap_s=rc.frame_gap_seconds),
                               open_source=feed.open, what="Wiegand edge feed (test)")
        d = InProcessDaemon(cfg, feedback=Feedback(), notifier=Notifier(None), readers=[reader])
        t = threading.Thread(target=d.run, daemon=True)
        t.start()
        try:
            assert d.ready.wait(10)
            wait_until(lambda: reader.connected and feed.is_open, what="the Wiegand reader open")
            for i, bits in enumerate((w26, bad, w34)):
                start = time.monotonic_ns()
                assert feed.send(to_edges(bits, start_ns=start, rng=random.Random(i))) == 2 * len(bits)
                time.sleep(4 * rc.frame_gap_seconds)  # the gap ends the frame
            wait_until(lambda: len(iflow.stored) >= 2, what="two frames in iFlow")
            time.sleep(0.5)  # anything else would have followed by now
            stored = in_iflow(iflow)
            dropped = Counter(reader.decoder.dropped)
            counts = dict(d.recorder.counts)
            records = sorted((r.tag, r.raw) for r in d.journal.records())
        finally:
            d.stop_event.set()
            t.join(10)
    assert not t.is_alive()
    assert stored == Counter({"161,45763": 1, "1234,56789": 1})
    # raw: the bit count and every bit of the frame, parity included, in hex
    assert records == [("1234,56789", "34:" + f"{int(''.join(map(str, w34)), 2):09X}"), ("161,45763", "26:1436586")]
    assert sum(dropped.values()) == 1, dropped  # the bad frame was read, and dropped by the decoder
    assert counts["stored"] == 2 and counts["invalid"] == 0
