"""Helpers to run the real `agent` daemon against a pseudo-terminal reader."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import tty
from pathlib import Path

AGENT = [sys.executable, "-m", "agent"]


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    return json.dumps(str(v))


def write_config(path: Path, *, state_dir: Path, port: str | None = None, iflow: dict | None = None,
                 extra: dict | None = None, reader: dict | None = None, top: dict | None = None) -> Path:
    lines = ['timezone = "Europe/Bucharest"', f"state_dir = {toml_value(state_dir)}"]
    for k, v in (top or {}).items():
        lines.append(f"{k} = {toml_value(v)}")
    r = {"type": "serial", "port": port or "/dev/null-reader", "protocol": "line", "debounce_seconds": 0}
    r.update(reader or {})
    lines.append("[reader]")
    lines += [f"{k} = {toml_value(v)}" for k, v in r.items()]
    lines += ["[feedback]", 'backend = "console"']
    if iflow is not None:
        lines.append("[iflow]")
        lines += [f"{k} = {toml_value(v)}" for k, v in iflow.items()]
    # Test state dirs live under /tmp, which is a tmpfs on many CI machines: the daemon
    # would refuse them. A test of that refusal passes {"journal": {"allow_volatile": False}}.
    extra = dict(extra or {})
    extra["journal"] = {"allow_volatile": True, **extra.get("journal", {})}
    # Not the machine's node_exporter directory (CI installs node_exporter): a test
    # that wants metrics gives its own.
    extra.setdefault("metrics", {"textfile_dir": ""})
    for section, table in extra.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in table.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


class Pty:
    """A pseudo-terminal standing in for a serial reader: write to `master`."""

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.master)
        tty.setraw(self.slave)
        self.port = os.ttyname(self.slave)

    def send(self, data: bytes) -> None:
        view = memoryview(data)
        while view:  # a pty takes a few KB at a time
            view = view[os.write(self.master, view):]

    def close(self) -> None:
        for fd in (self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass


# Every daemon started, so that one a failed test left running (holding its
# pty's lock, its port) is killed before the next test (tests/conftest.py).
STARTED: list["Daemon"] = []


def kill_left_running(since: int) -> int:
    """Kill the daemons started after the first ``since`` that still run; how many."""
    left = [d for d in STARTED[since:] if d.proc.poll() is None]
    for d in left:
        d.kill()
    return len(left)


class Daemon:
    """`agent run` as a subprocess; collects the console feedback lines."""

    def __init__(self, config: Path, env: dict | None = None) -> None:
        STARTED.append(self)
        self.config = config
        e = dict(os.environ)
        e.update(env or {})
        e.setdefault("PYTHONUNBUFFERED", "1")
        self.proc = subprocess.Popen(AGENT + ["--config", str(config), "run"], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=e)
        self.lines: list[str] = []
        self.stderr: list[str] = []
        self._cv = threading.Condition()
        self._t = threading.Thread(target=self._pump, daemon=True)
        self._t.start()
        self._te = threading.Thread(target=self._pump_err, daemon=True)
        self._te.start()

    def _pump(self) -> None:
        for line in self.proc.stdout:
            if not line.endswith("\n"):
                break  # cut by a kill: not a complete acknowledgement
            with self._cv:
                self.lines.append(line.rstrip("\n"))
                self._cv.notify_all()

    def _pump_err(self) -> None:
        for line in self.proc.stderr:
            self.stderr.append(line)

    def wait_for(self, pred, timeout: float = 15.0) -> bool:
        deadline = time.monotonic() + timeout
        with self._cv:
            while not pred(self.lines):
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None and not pred(self.lines):
                    return pred(self.lines)
                self._cv.wait(min(left, 0.1))
        return True

    def stored(self) -> list[str]:
        """Tags acknowledged as stored so far."""
        return [ln.split("tag=", 1)[1].split()[0] for ln in self.lines if ln.startswith("stored ")]

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._t.join(5)

    def terminate(self, timeout: float = 15.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout)
        self._t.join(5)
        self._te.join(5)
        return rc


def wait_ready(config: Path, timeout: float = 15.0) -> dict:
    """Poll `agent status --json` until the daemon answers."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        r = run_cli(config, "status", "--json")
        if r.returncode == 0:
            last = json.loads(r.stdout)
            if last.get("daemon"):
                return last
        time.sleep(0.1)
    raise AssertionError(f"daemon did not become ready: {last}")


def run_cli(config: Path, *args: str, timeout: float = 60.0, env: dict | None = None) -> subprocess.CompletedProcess:
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run(AGENT + ["--config", str(config), *args], capture_output=True, text=True,
                          timeout=timeout, env=e)
