"""`agent flush` on a real terminal never crashes for a missing library (issue 13).

The agent is installed by scripts/install (the machinery of tests/test_install.py:
a venv with Debian's system site packages, the checkout pip-installed offline
with --no-deps) and its runtime dependencies are made visible to that venv,
all but rich: as on a site where rich did not get installed. `agent flush`
then runs on a pseudo-terminal against the stand-in iFlow and must deliver
with plain progress lines, exit 0, and print no traceback. The same flush
with rich present (the test venv) draws its bar on the terminal.
"""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent.journal.store import Journal
from standins.iflow import IflowStandin
from tests.support.harness import AGENT, write_config
from tests.test_install import run as install

TOKEN = "tty-token-1234"
SCANS = 5
# Packages of the test venv the installed agent must not see: rich (the point
# of the test), and the test venv's own editable install of the checkout.
HIDDEN = ("rich", "__editable__", "_distutils_hack", "distutils-precedence", "__pycache__")


def site_packages(python: str) -> Path:
    out = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         capture_output=True, text=True, check=True, timeout=30)
    return Path(out.stdout.strip())


@pytest.fixture(scope="module")
def installed_without_rich(tmp_path_factory) -> Path:
    """The `agent` command of a scripts/install tree, with every dependency but rich."""
    root = tmp_path_factory.mktemp("root")
    install(root, "--no-apt")
    venv = root / "opt/rfid-agent/venv"
    deps = root / "deps"
    deps.mkdir()
    for entry in site_packages(sys.executable).iterdir():
        if not entry.name.startswith(HIDDEN) and not entry.name.startswith("rfid_agent"):
            (deps / entry.name).symlink_to(entry)
    (site_packages(str(venv / "bin/python")) / "test-deps.pth").write_text(f"{deps}\n")
    probe = subprocess.run([str(venv / "bin/python"), "-c", "import httpx, tinydb, serial; import rich"],
                           capture_output=True, text=True, cwd=root, timeout=30)
    assert "No module named 'rich'" in probe.stderr, probe.stderr  # hidden, the rest found
    return venv / "bin/agent"


def on_a_terminal(cmd: list[str], cwd: Path, timeout: float = 30.0) -> tuple[int, str]:
    """Run ``cmd`` with a pseudo-terminal as stdin, stdout and stderr; (exit status, all it wrote)."""
    master, slave = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENT_", "VIRTUAL_ENV", "PYTHONPATH"))}
    env.update(TERM="xterm-256color", COLUMNS="100", LINES="30")
    proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, cwd=cwd, env=env, close_fds=True)
    os.close(slave)
    out = b""
    try:
        while True:
            ready, _, _ = select.select([master], [], [], timeout)
            if not ready:
                proc.kill()
                raise AssertionError(f"no output for {timeout} s: {out.decode(errors='replace')}")
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: every writer closed the terminal
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(master)
    return proc.wait(timeout), out.decode(errors="replace")


def site(tmp_path: Path, standin: IflowStandin) -> Path:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    cfg = write_config(tmp_path / "c.toml", state_dir=state, iflow={"url": standin.url, "access_token": TOKEN})
    cfg.chmod(0o600)
    j = Journal(str(state / "journal"))
    start = datetime.now(UTC) - timedelta(hours=1)
    for i in range(SCANS):
        j.append({"tag": f"T{i}", "raw": f"T{i}", "reader": "door", "source": "reader",
                  "captured_at": (start + timedelta(seconds=i)).isoformat(timespec="microseconds"),
                  "boot_id": "a-past-boot", "mono_ns": 10**9 + i, "synced": True})
    j.close()
    return cfg


def test_flush_on_a_terminal_without_rich(installed_without_rich, tmp_path):
    with IflowStandin(token=TOKEN) as standin:
        cfg = site(tmp_path, standin)
        rc, out = on_a_terminal([str(installed_without_rich), "--config", str(cfg), "flush"], tmp_path)
        assert "Traceback" not in out and "ModuleNotFoundError" not in out, out
        assert rc == 0, out
        assert standin.stored_count == SCANS
        assert f"delivered {SCANS} of {SCANS}" in out  # plain lines instead of the bar
        assert "nothing sendable is left pending" in out


def test_flush_on_a_terminal_with_rich(tmp_path):
    with IflowStandin(token=TOKEN) as standin:
        cfg = site(tmp_path, standin)
        rc, out = on_a_terminal([*AGENT, "--config", str(cfg), "flush"], Path(__file__).parent.parent)
        assert rc == 0 and "Traceback" not in out, out
        assert standin.stored_count == SCANS
        assert "nothing sendable is left pending" in out
