"""`scripts/demo`, a newcomer's first minute: it speaks at once, keeps speaking
while the venv is made, its flush really delivers (a progress bar on a
terminal, plain lines otherwise), and it leaves nothing behind in TMPDIR, on
success and on Ctrl-C."""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import stat
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DONE = "3 scans stored in iFlow exactly once, 1 unknown card rejected with iFlow's reason; daemon exited 0."


def demo_env(tmp: Path, **extra: str) -> dict[str, str]:
    tmp.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_")}
    env.update(TMPDIR=str(tmp), PYTHONDONTWRITEBYTECODE="1", **extra)
    return env


def lines_of(p: subprocess.Popen, on_line=lambda line: None) -> tuple[int, list[str]]:
    """Every line ``p`` prints (each handed to ``on_line`` as it comes), and its exit status."""
    lines = []
    try:
        for line in p.stdout:
            lines.append(line.rstrip("\n"))
            on_line(line)
        return p.wait(120), lines
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        p.stdout.close()


def fake_venv(tmp_path: Path) -> Path:
    """A venv whose python is the test's own, except that `python -m pip` only
    notes its call and waits for the test's go-ahead (the real venv is not
    touched and nothing is downloaded)."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    py = venv / "bin" / "python"
    py.write_text(f'''#!/bin/sh
if [ "$1" = "-m" ] && [ "$2" = "pip" ]; then
    echo "pip $*" >> "{venv}/pip-calls"
    i=0
    while [ ! -e "{venv}/go" ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
    exit 0
fi
exec "{sys.executable}" "$@"
''')
    py.chmod(py.stat().st_mode | stat.S_IXUSR)
    # No package is installed on the machine by this test, whatever the set-up asks.
    for tool in ("apt-get", "sudo"):
        fake = venv / "nobin" / tool
        fake.parent.mkdir(exist_ok=True)
        fake.write_text("#!/bin/sh\nexit 1\n")
        fake.chmod(0o755)
    return venv


def test_script_speaks_first_keeps_speaking_during_set_up_and_leaves_tmp_empty(tmp_path):
    venv = fake_venv(tmp_path)
    tmp = tmp_path / "tmp"
    env = demo_env(tmp, AGENT_VENV=str(venv), PATH=f"{venv / 'nobin'}:{os.environ['PATH']}")
    p = subprocess.Popen([str(ROOT / "scripts" / "demo")], cwd=tmp_path, env=env, stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def on_line(line: str) -> None:
        if line.startswith("  still setting up"):
            (venv / "go").touch()  # the set-up may end once it was seen to progress

    try:
        rc, lines = lines_of(p, on_line)
    finally:
        (venv / "go").touch()
    out = "\n".join(lines)
    assert rc == 0, out
    assert lines[0].startswith("agent demo: a simulated card reader"), out
    assert (venv / "pip-calls").exists(), out  # the set-up ran, after the first line
    first_tick = next(i for i, line in enumerate(lines) if line.startswith("  still setting up"))
    assert 0 < first_tick < next(i for i, line in enumerate(lines) if line.startswith("demo directory:")), out
    # Not a terminal: flush's plain progress lines, then its summary.
    assert "delivered 4 of 4" in out and re.search(r"delivered \(new in iFlow\)\s+3\b", out), out
    assert re.search(r"rejected by iFlow\s+1\b", out), out
    assert DONE in out, out
    assert list(tmp.iterdir()) == [], "the demo left files in TMPDIR"


def test_the_pn532_variant_tells_its_reader_and_tells_the_same_story(tmp_path):
    venv = fake_venv(tmp_path)
    (venv / "go").touch()  # the set-up's speaking is the test above's: no wait here
    tmp = tmp_path / "tmp"
    env = demo_env(tmp, AGENT_VENV=str(venv), PATH=f"{venv / 'nobin'}:{os.environ['PATH']}")
    p = subprocess.Popen([str(ROOT / "scripts" / "demo"), "--reader", "pn532"], cwd=tmp_path, env=env,
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    rc, lines = lines_of(p)
    out = "\n".join(lines)
    assert rc == 0, out
    assert lines[0].startswith("agent demo: a simulated card reader (PN532, 13.56 MHz MIFARE)"), out
    assert "Cards are scanned at the door (a PN532 simulator on a pseudo-terminal" in out, out
    # the simulator's UIDs read as the same card numbers as the RDM6300 cards: iFlow knows them
    for tag in ("0010597059", "0013961168", "0040856634"):
        assert f"door: stored tag={tag} " in out and f"card {tag}" in out, out
    # a card left in the field is read at every poll: one scan, one signal, no chirps
    assert "door: already" not in out and out.count("door: stored tag=0010597059 ") == 1, out
    assert DONE in out, out
    assert list(tmp.iterdir()) == [], "the demo left files in TMPDIR"


def test_on_a_terminal_flush_draws_its_progress_bar(tmp_path):
    tmp = tmp_path / "tmp"
    master, slave = pty.openpty()
    try:
        p = subprocess.Popen([sys.executable, "-m", "standins.demo"], cwd=ROOT,
                             env=demo_env(tmp, TERM="xterm"), stdin=subprocess.DEVNULL,
                             stdout=slave, stderr=slave)
        os.close(slave)
        slave = -1
        out = b""
        while True:
            ready, _, _ = select.select([master], [], [], 120)
            try:
                chunk = os.read(master, 65536) if ready else b""
            except OSError:  # EIO: every writer closed the terminal
                chunk = b""
            if not chunk:
                break
            out += chunk
        rc = p.wait(120)
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)
    text = out.decode(errors="replace")
    assert rc == 0, text
    assert "delivering" in text and "4/4" in text, text  # rich's bar, drawn while it sent
    assert DONE in text, text
    assert list(tmp.iterdir()) == [], "the demo left files in TMPDIR"


def test_ctrl_c_stops_the_daemon_and_removes_config_token_and_journal(tmp_path):
    tmp = tmp_path / "tmp"
    p = subprocess.Popen([sys.executable, "-m", "standins.demo"], cwd=ROOT, env=demo_env(tmp),
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    daemons, made = [], []

    def on_line(line: str) -> None:
        daemons.extend(int(pid) for pid in re.findall(r"daemon running \(pid (\d+)", line))
        if "a visitor's card, unknown to iFlow" in line:  # step 2, its daemon's pid shown
            made.extend(f.name for f in tmp.rglob("*"))
            p.send_signal(signal.SIGINT)

    rc, lines = lines_of(p, on_line)
    out = "\n".join(lines)
    assert "config.toml" in made and "state" in made, made  # there was something to remove
    assert rc == 130, out
    assert "interrupted" in out and "Done:" not in out, out
    assert daemons, out
    daemon = daemons[-1]
    try:
        os.kill(daemon, 0)
        alive = True
    except ProcessLookupError:
        alive = False
    assert not alive, f"the demo's daemon (pid {daemon}) outlived it"
    assert list(tmp.iterdir()) == [], "the demo left files in TMPDIR"
