"""`scripts/demo`: the whole path on one machine, no Pi needed.

A pseudo-terminal plays the serial reader (an RDM6300 sending its frames, or
with ``--reader pn532`` the project's PN532 simulator, standins/pn532.py, that
the agent polls for cards entering its field), the project's iFlow stand-in
plays iFlow, and the real `agent run` daemon sits between them:

1. iFlow is down; cards are scanned: each is journaled (fsynced) and
   acknowledged at once, nothing waits for the network;
2. the daemon is killed with SIGKILL and started again: every scan is still
   there; a card unknown to iFlow is scanned too;
3. iFlow comes back while the daemon waits out its back-off: `agent flush`
   asks the daemon to send now (a progress bar on a terminal, plain lines
   otherwise) and sums up: 3 scans stored, the unknown card rejected with
   iFlow's reason;
4. `agent status` and `agent rejected` show what a technician sees.

Everything it makes (the config with its token, the journal) lives in one
temporary directory, removed at the end, on Ctrl-C and on error; the daemon
and the pseudo-terminal go with it.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import shutil
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
# The PN532 variant's cards are 4-byte MIFARE UIDs equal to the low 4 bytes of
# the RDM6300 cards: `tag_format = "decimal10"` gives the same card numbers, so
# iFlow knows the same people.
READERS = {  # --reader: (how step 1 says it, the [reader] keys that differ)
    "rdm6300": ("RDM6300 frames on a pseudo-terminal", 'protocol = "rdm6300"'),
    "pn532": ("a PN532 simulator on a pseudo-terminal: each card enters its field, then leaves",
              'protocol = "pn532"   # 115200 baud, polled every 0.2 s'),
}
# Long enough that the daemon is still waiting when iFlow comes back, so the
# flush finds every scan; jitter makes the wait 30 to 60 s.
BACKOFF = "1m"
# iFlow's answer time, as over a WAN link: one scan per request then keeps the
# progress bar on screen for a moment instead of a blink.
LATENCY_S = 0.4


def frame(hex10: str) -> bytes:
    data = bytes.fromhex(hex10)
    chk = 0
    for b in data:
        chk ^= b
    return b"\x02" + hex10.encode() + f"{chk:02X}".encode() + b"\x03"


def say(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m" if sys.stdout.isatty() else f"\n== {text}", flush=True)


def step(text: str) -> None:
    print(f"   {text}", flush=True)


def agent(cfg: Path, *args: str) -> int:
    """Run an `agent` command as a technician would, its output straight to ours
    (a terminal stays a terminal: flush draws its progress bar)."""
    print(f"$ agent {' '.join(args)}", flush=True)
    return subprocess.run([sys.executable, "-m", "agent", "--config", str(cfg), *args],
                          stdin=subprocess.DEVNULL, timeout=120, check=False).returncode


def status(cfg: Path) -> dict:
    r = subprocess.run([sys.executable, "-m", "agent", "--config", str(cfg), "status", "--json"],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120, check=False)
    return json.loads(r.stdout) if r.returncode == 0 else {}


def wait_for(cfg: Path, what: str, done, seconds: float = 30.0) -> dict:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        st = status(cfg)
        if st and done(st):
            return st
        time.sleep(0.1)
    raise RuntimeError(f"gave up waiting for {what}")


class Demo:
    """The demo's parts, each closed by :meth:`close` whatever happened."""

    def __init__(self, reader: str = "rdm6300") -> None:
        self.reader = reader
        self.sim = None  # the PN532 simulator, with --reader pn532
        given = os.environ.get("AGENT_DEMO_DIR")
        self.own_dir = not given
        self.work = Path(given or tempfile.gettempdir())
        self.cfg = self.work / "config.toml"
        self.state = self.work / "state"
        self.daemon: subprocess.Popen | None = None
        self.standin: IflowStandin | None = None
        self.ptys: tuple[int, ...] = ()

    def setup(self) -> None:
        if self.own_dir:
            self.work = Path(tempfile.mkdtemp(prefix="agent-demo-"))
            self.cfg, self.state = self.work / "config.toml", self.work / "state"
        self.work.mkdir(parents=True, exist_ok=True)
        if self.reader == "pn532":
            from standins.pn532 import Pn532Sim

            self.sim = Pn532Sim().start()
            port = self.sim.port
        else:
            self.master, self.slave = self.ptys = os.openpty()
            tty.setraw(self.master)
            tty.setraw(self.slave)
            port = os.ttyname(self.slave)
        self.standin = IflowStandin(token=TOKEN, known_cards=KNOWN, latency_s=LATENCY_S).start()
        self.standin.mode = "down"
        text = f'''timezone = "Europe/Bucharest"
state_dir = "{self.state}"
[reader]
name = "door"
port = "{port}"
{READERS[self.reader][1]}
tag_format = "decimal10"
[iflow]
url = "{self.standin.url}"
access_token = "{TOKEN}"
backoff_initial = "{BACKOFF}"   # the demo's flush, not the daemon's next retry, sends once iFlow is back
backoff_max = "{BACKOFF}"
batch_max = 1   # one scan per request, so the demo's four scans move the progress bar (a door: leave out)
[feedback]
backend = "console"
[time]
trust_rtc = true   # the demo machine's clock is taken as right
[journal]
allow_volatile = true   # the demo's state lives under /tmp, a tmpfs on many machines; a real door never does this
'''
        # 0600 from the start: it holds the token (AGENT_DEMO_DIR may be readable by others).
        with open(os.open(self.cfg, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            f.write(text)

    def start_daemon(self) -> None:
        step("starting the daemon: agent run")
        self.daemon = subprocess.Popen([sys.executable, "-m", "agent", "--config", str(self.cfg), "run"],
                                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                       stderr=subprocess.DEVNULL, env=dict(os.environ, PYTHONUNBUFFERED="1"))
        self._out = b""
        wait_for(self.cfg, "the daemon to start", lambda st: st.get("daemon"))

    def stop_daemon(self, sig: int = signal.SIGTERM) -> int | None:
        p, self.daemon = self.daemon, None
        if p is None:
            return None
        try:
            if p.poll() is None:
                p.send_signal(sig)
            try:
                return p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                return p.wait()
        finally:
            p.stdout.close()

    def scan(self, raw: str, who: str, held: int = 1) -> None:
        """One card held to the reader for ``held`` frames; echo the door's
        feedback: the scan stored, once (the repeats are the card still lying
        there: one scan, one signal)."""
        step(f"{who} holds a card to the reader")
        if self.sim is not None:
            # in the field for `held` of the reader's polls; it reads the card at each
            self.sim.present(bytes.fromhex(raw)[-4:])
        else:
            os.write(self.master, frame(raw) * held)  # the reader repeats while the card is held
        try:
            self._acknowledged()
        finally:
            if self.sim is not None:
                self.sim.present(None)  # taken away

    def _acknowledged(self) -> None:
        """Echo the door's feedback for one card: stored (or an error)."""
        while True:
            line = self._feedback(20.0)
            if line is None:
                raise RuntimeError("the daemon acknowledged no scan")
            word = line.split()[:1]
            if word in (["error"], ["stored"]):
                step(f"door: {line}")
                if word == ["error"]:
                    raise RuntimeError("the door signalled an error: see journalctl or the daemon's log")
                return

    def _feedback(self, seconds: float) -> str | None:
        """The daemon's next line of door feedback, or None after ``seconds``."""
        deadline = time.monotonic() + seconds
        while b"\n" not in self._out:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.daemon.stdout], [], [], left)[0]:
                return None
            chunk = os.read(self.daemon.stdout.fileno(), 4096)
            if not chunk:
                raise RuntimeError("the daemon stopped")
            self._out += chunk
        line, self._out = self._out.split(b"\n", 1)
        return line.decode(errors="replace").strip()

    def close(self) -> None:
        try:
            self.stop_daemon()
        finally:
            if self.standin is not None:
                self.standin.stop()
            if self.sim is not None:
                self.sim.close()
            for fd in self.ptys:
                os.close(fd)
            if self.own_dir and self.work.name.startswith("agent-demo-"):
                shutil.rmtree(self.work, ignore_errors=True)
            else:
                self.cfg.unlink(missing_ok=True)
                shutil.rmtree(self.state, ignore_errors=True)

    def run(self) -> int:
        cfg = self.cfg
        print(f"demo directory: {self.work} (removed at the end)\nconfig: {cfg}\n"
              f"iFlow stand-in: {self.standin.url} (down for now)\n"
              f"each `$ agent ...` below is `agent --config {cfg} ...`", flush=True)

        say(f"1. iFlow is unreachable. Cards are scanned at the door ({READERS[self.reader][0]}).")
        self.start_daemon()
        for raw, who in CARDS[:3]:
            self.scan(raw, who, held=3)
        agent(cfg, "status")

        say("2. Power cut (SIGKILL) and restart: the acknowledged scans are all still there.")
        step(f"SIGKILL to the daemon (pid {self.daemon.pid})")
        self.stop_daemon(signal.SIGKILL)
        self.start_daemon()
        agent(cfg, "status")
        step("a visitor's card, unknown to iFlow, is scanned too")
        self.scan(*CARDS[3])

        say("3. iFlow is back. The daemon would retry at the end of its back-off; agent flush sends now.")
        st = wait_for(cfg, "the daemon's failed attempt", lambda st: st.get("backoff_seconds", 0) > 0)
        self.standin.mode = "up"
        step(f"{st['pending']} scans pending; the daemon's next retry is in {st['backoff_seconds']:.0f} s")
        flushed = agent(cfg, "flush")
        for s in self.standin.stored:
            step(f"iFlow stored: {s['date']} {s['time']}  card {s['rfidTag']}  (id {s['id']})")

        say("4. What the technician sees afterwards: agent status, agent rejected")
        agent(cfg, "status")
        agent(cfg, "rejected")

        stored = self.standin.stored
        once = len(stored) == 3 and len({(s["date"], s["time"], s["rfidTag"]) for s in stored}) == 3
        rejected = status(cfg).get("rejected")
        step("stopping the daemon: SIGTERM (it finishes the write in progress)")
        rc = self.stop_daemon()
        say(f"Done: {len(stored)} scans stored in iFlow exactly once, {rejected} unknown card rejected "
            f"with iFlow's reason; daemon exited {rc}.")
        print("Your turn: .venv/bin/agent --help (or source .venv/bin/activate, then agent --help).", flush=True)
        return 0 if once and rejected == 1 and flushed == 0 and rc == 0 else 1


def _interrupted(signum: int, _frame) -> None:
    raise KeyboardInterrupt  # the same clean-up as Ctrl-C


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="scripts/demo", description="The agent end to end on one machine: "
                                 "a simulated reader, the real daemon and a local iFlow stand-in.")
    ap.add_argument("--reader", choices=sorted(READERS), default="rdm6300",
                    help="the simulated reader: an RDM6300 (125 kHz EM cards, the default) or a PN532 "
                    "(13.56 MHz MIFARE)")
    args = ap.parse_args(argv)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupted)
    demo = Demo(args.reader)
    try:
        demo.setup()
        return demo.run()
    except KeyboardInterrupt:
        print("\ninterrupted: the demo's daemon, config, token and journal are removed", file=sys.stderr)
        return 130
    finally:
        demo.close()


if __name__ == "__main__":
    raise SystemExit(main())
