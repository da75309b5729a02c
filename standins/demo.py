"""`scripts/demo`: the whole path on one machine, no Pi needed.

A pseudo-terminal plays the serial reader, the project's iFlow stand-in plays
iFlow, and the real `agent run` daemon sits between them:

1. iFlow is down; cards are scanned: each is journaled (fsynced) and
   acknowledged at once, nothing waits for the network;
2. the daemon is killed with SIGKILL and started again: every scan is still
   there;
3. iFlow comes up: the daemon delivers on its own; one card is unknown to
   iFlow and is rejected with iFlow's reason;
4. `agent flush`, `agent status` and `agent rejected` show what a technician sees.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import tty
from pathlib import Path

from standins.iflow import IflowStandin

TOKEN = "demo-token-0123456789"
KNOWN = {"0010597059", "0013961168", "0040856634"}
CARDS = [  # (what the RDM6300 sends, who)
    ("0F00A1B2C3", "Ana"), ("0000D507D0", "Mihai"), ("01026F6C3A", "Ioana"), ("0B00FFEE11", "a visitor"),
]


def frame(hex10: str) -> bytes:
    data = bytes.fromhex(hex10)
    chk = 0
    for b in data:
        chk ^= b
    return b"\x02" + hex10.encode() + f"{chk:02X}".encode() + b"\x03"


def say(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m" if sys.stdout.isatty() else f"\n== {text}", flush=True)


def agent(cfg: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agent", "--config", str(cfg), *args],
                          capture_output=True, text=True, timeout=120)


def start_daemon(cfg: Path) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-m", "agent", "--config", str(cfg), "run"],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                         env=dict(os.environ, PYTHONUNBUFFERED="1"))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        r = agent(cfg, "status", "--json")
        if r.returncode == 0 and json.loads(r.stdout).get("daemon"):
            return p
        time.sleep(0.1)
    raise SystemExit("the daemon did not start")


def read_feedback(p: subprocess.Popen, stored: int) -> None:
    """Echo the door's feedback until ``stored`` scans were acknowledged."""
    while stored > 0:
        line = p.stdout.readline()
        if not line:
            break
        line = line.strip()
        if line.split()[:1] and line.split()[0] in ("stored", "already", "error"):
            print(f"   door: {line}", flush=True)
            stored -= line.startswith("stored ")


def main() -> int:
    work = Path(os.environ.get("AGENT_DEMO_DIR") or tempfile.mkdtemp(prefix="agent-demo-"))
    master, slave = os.openpty()
    tty.setraw(master)
    tty.setraw(slave)
    standin = IflowStandin(token=TOKEN, known_cards=KNOWN).start()
    standin.mode = "down"
    cfg = work / "config.toml"
    cfg.write_text(f'''timezone = "Europe/Bucharest"
state_dir = "{work / 'state'}"
[reader]
name = "door"
port = "{os.ttyname(slave)}"
protocol = "rdm6300"
tag_format = "decimal10"
[iflow]
url = "{standin.url}"
access_token = "{TOKEN}"
backoff_initial = "1s"
backoff_max = "2s"
[feedback]
backend = "console"
[time]
trust_rtc = true   # the demo machine's clock is taken as right
[journal]
allow_volatile = true   # the demo's state lives under /tmp, a tmpfs on many machines; a real door never does this
''')
    os.chmod(cfg, 0o600)
    print(f"demo directory: {work}\nconfig: {cfg}\niFlow stand-in: {standin.url} (down for now)")

    try:
        say("1. iFlow is unreachable. Cards are scanned at the door (RDM6300 frames on a pseudo-terminal).")
        daemon = start_daemon(cfg)
        for raw, who in CARDS[:3]:
            print(f"   {who} holds a card to the reader", flush=True)
            os.write(master, frame(raw) * 3)  # the reader repeats while the card is held
            time.sleep(0.3)
        read_feedback(daemon, 3)
        print(agent(cfg, "status").stdout)

        say("2. Power cut (SIGKILL) and restart: the acknowledged scans are all still there.")
        daemon.send_signal(signal.SIGKILL)
        daemon.wait()
        daemon = start_daemon(cfg)
        print(agent(cfg, "status").stdout)
        print("   a visitor's card, unknown to iFlow, is scanned too", flush=True)
        os.write(master, frame(CARDS[3][0]))
        read_feedback(daemon, 1)

        say("3. iFlow is back. The daemon delivers on its own, oldest first.")
        standin.mode = "up"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            st = json.loads(agent(cfg, "status", "--json").stdout)
            if st["pending"] == 0:
                break
            time.sleep(0.3)
        for s in standin.stored:
            print(f"   iFlow stored: {s['date']} {s['time']}  card {s['rfidTag']}  (id {s['id']})")

        say("4. What the technician sees: agent flush, agent status, agent rejected")
        r = agent(cfg, "flush")
        print(r.stdout + r.stderr)
        print(agent(cfg, "status").stdout)
        print(agent(cfg, "rejected").stdout)

        ok = len(standin.stored) == 3 and len({(s["date"], s["time"], s["rfidTag"]) for s in standin.stored}) == 3
        daemon.send_signal(signal.SIGTERM)
        rc = daemon.wait(20)
        say(f"Done: {len(standin.stored)} scans stored in iFlow exactly once, 1 unknown card rejected "
            f"with iFlow's reason; daemon exited {rc}.")
        return 0 if ok and rc == 0 else 1
    finally:
        standin.stop()
        os.close(master)
        os.close(slave)


if __name__ == "__main__":
    raise SystemExit(main())
