"""The real daemon on a pseudo-terminal: SIGKILL at random points, status while scanning, SIGTERM."""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections import Counter

from agent.journal.store import Journal
from tests.support.harness import Daemon, Pty, run_cli, wait_ready, write_config

KILLS = int(os.environ.get("AGENT_TEST_KILLS", "50"))


def journal_tags(state_dir) -> Counter:
    j = Journal(str(state_dir / "journal"))
    try:
        return Counter(r.tag for r in j.records())
    finally:
        j.close()


def test_sigkill_at_random_points_loses_no_acknowledged_scan(tmp_path):
    pty = Pty()
    state = tmp_path / "state"
    cfg = write_config(tmp_path / "c.toml", state_dir=state, port=pty.port)
    rng = random.Random(20261122)
    acked: set[str] = set()
    sent = 0
    stop = threading.Event()

    def feeder():
        nonlocal sent
        while not stop.is_set():
            try:
                pty.send(f"K{sent:06d}\r\n".encode())
            except OSError:
                pass
            sent += 1
            time.sleep(rng.uniform(0.002, 0.02))

    try:
        for kill in range(KILLS):
            d = Daemon(cfg)
            # Let it take at least one scan in this life, then kill it at a random instant.
            if kill == 0:
                threading.Thread(target=feeder, daemon=True).start()
            assert d.wait_for(lambda lines: any(ln.startswith("stored ") for ln in lines), timeout=20), \
                "".join(d.stderr)
            time.sleep(rng.uniform(0.0, 0.3))
            d.kill()
            acked.update(d.stored())
            # After every restart the journal opens and holds every acknowledged scan, once.
            tags = journal_tags(state)
            assert not (acked - set(tags)), f"kill {kill}: acknowledged scans lost: {sorted(acked - set(tags))[:5]}"
            assert max(tags.values()) == 1, f"kill {kill}: a scan stored twice"
    finally:
        stop.set()
        pty.close()
    assert len(acked) > KILLS
    print(f"SIGKILL loop: {KILLS} kills, {len(acked)} acknowledged scans, 0 lost, 0 twice, {sent} sent")


def test_status_in_a_loop_while_scanning(tmp_path):
    pty = Pty()
    state = tmp_path / "state"
    cfg = write_config(tmp_path / "c.toml", state_dir=state, port=pty.port)
    d = Daemon(cfg)
    try:
        wait_ready(cfg)
        stop = threading.Event()

        def feeder():
            i = 0
            while not stop.is_set():
                pty.send(f"C{i:06d}\n".encode())
                i += 1
                time.sleep(0.005)

        t = threading.Thread(target=feeder, daemon=True)
        t.start()
        seen = []
        deadline = time.monotonic() + 8
        runs = 0
        while time.monotonic() < deadline:
            r = run_cli(cfg, "status", "--json")
            assert r.returncode == 0, r.stderr
            st = json.loads(r.stdout)
            assert st["daemon"] is True
            for k in ("pending", "delivered", "rejected"):
                assert isinstance(st[k], int)
            seen.append(st["pending"])
            runs += 1
        stop.set()
        t.join()
        assert runs >= 5
        assert seen == sorted(seen) and seen[-1] > seen[0]  # only grows: no delivery configured
        time.sleep(0.5)
        acked = set(d.stored())
        assert d.terminate() == 0
    finally:
        pty.close()
    tags = journal_tags(state)
    assert acked <= set(tags) and max(tags.values()) == 1
    assert "Traceback" not in "".join(d.stderr)
    # and without the daemon, status reads the journal itself (taking the lock)
    r = run_cli(cfg, "status", "--json")
    st = json.loads(r.stdout)
    assert r.returncode == 0 and st["daemon"] is False and st["pending"] == len(tags)
    r = run_cli(cfg, "status")
    assert "daemon NOT running" in r.stdout and f"pending {len(tags):>10}".replace(" ", "") in r.stdout.replace(" ", "")


def test_sigterm_finishes_and_exits_zero_and_debounce_survives_restart(tmp_path):
    pty = Pty()
    state = tmp_path / "state"
    cfg = write_config(tmp_path / "c.toml", state_dir=state, port=pty.port, reader={"debounce_seconds": 30})
    d = Daemon(cfg)
    try:
        wait_ready(cfg)
        pty.send(b"CARD1\r\n")
        assert d.wait_for(lambda ls: "stored tag=CARD1" in " ".join(ls))
        time.sleep(0.6)  # taken away and shown again (a read closer than HELD_S is the card still lying there)
        pty.send(b"CARD1\r\n")
        assert d.wait_for(lambda ls: any(ln.startswith("already tag=CARD1") for ln in ls))
        assert d.terminate() == 0
        d2 = Daemon(cfg)
        wait_ready(cfg)
        pty.send(b"CARD1\r\n")  # the card still held across the restart: not punched twice
        assert d2.wait_for(lambda ls: any(ln.startswith("already tag=CARD1") for ln in ls))
        pty.send(b"CARD2\r\n")
        assert d2.wait_for(lambda ls: "stored tag=CARD2" in " ".join(ls))
        assert d2.terminate() == 0
    finally:
        pty.close()
    assert journal_tags(state) == Counter({"CARD1": 1, "CARD2": 1})


def test_reader_noise_is_dropped_not_recorded(tmp_path):
    pty = Pty()
    state = tmp_path / "state"
    cfg = write_config(tmp_path / "c.toml", state_dir=state, port=pty.port, reader={"max_len": 16})
    d = Daemon(cfg)
    try:
        wait_ready(cfg)
        pty.send(b"\x00\x01\xff garbage line\r\n" + b"9" * 500 + b"\r\nGOOD1\r\n\x1b[A\r\n")
        assert d.wait_for(lambda ls: "stored tag=GOOD1" in " ".join(ls))
        assert d.terminate() == 0
    finally:
        pty.close()
    assert journal_tags(state) == Counter({"GOOD1": 1})


def test_two_readers_entry_and_exit_each_recorded_with_its_name(tmp_path):
    entry, exit_ = Pty(), Pty()
    state = tmp_path / "state"
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'''timezone = "Europe/Bucharest"
state_dir = "{state}"
[[reader]]
name = "entry"
port = "{entry.port}"
debounce_seconds = 5
[[reader]]
name = "exit"
port = "{exit_.port}"
protocol = "rdm6300"
tag_format = "decimal10"
debounce_seconds = 5
[feedback]
backend = "console"
[journal]
allow_volatile = true  # /tmp may be a tmpfs on CI
''')
    d = Daemon(cfg)
    try:
        wait_ready(cfg)
        entry.send(b"0010597059\r\n")
        assert d.wait_for(lambda ls: "stored tag=0010597059" in " ".join(ls))
        time.sleep(0.2)
        exit_.send(b"\x020F00A1B2C3DF\x03")  # the same card at the exit reader: a separate scan
        assert d.wait_for(lambda ls: sum(ln.startswith("stored tag=0010597059") for ln in ls) == 2)
        st = json.loads(run_cli(cfg, "status", "--json").stdout)
        assert sorted(r["name"] for r in st["readers"]) == ["entry", "exit"]
        assert d.terminate() == 0
    finally:
        entry.close()
        exit_.close()
    j = Journal(str(state / "journal"))
    assert sorted((r.reader, r.tag, r.raw) for r in j.records()) == [
        ("entry", "0010597059", "0010597059"), ("exit", "0010597059", "0F00A1B2C3")]


def test_a_deep_state_directory_still_gets_its_control_socket(tmp_path):
    """sun_path holds 108 bytes; a state_dir deeper than that must still work."""
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    pty = Pty()
    cfg = write_config(tmp_path / "c.toml", state_dir=deep / "state", port=pty.port)
    d = Daemon(cfg)
    try:
        assert len(str(deep / "state" / "agent.sock")) > 108
        st = wait_ready(cfg)
        assert st["daemon"] is True
        assert d.terminate() == 0
    finally:
        pty.close()
