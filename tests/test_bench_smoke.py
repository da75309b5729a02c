"""The benchmark program (bench/run.py) runs end to end in --quick mode.

This checks that the program works and writes a report with every section;
it does not judge the figures (a few hundred records say nothing about them).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run_bench(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env.pop("BENCH_COMMAND", None)
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def section(text: str, heading: str) -> str:
    """The body of one ``## heading`` section."""
    lines = text.splitlines()
    start = lines.index(heading) + 1
    end = next((i for i in range(start, len(lines)) if lines[i].startswith("## ")), len(lines))
    return "\n".join(lines[start:end]).strip()


def test_quick_run_writes_a_complete_report(tmp_path: Path) -> None:
    out = tmp_path / "report" / "benchmarks.md"
    # No bound on its time here (a test is not a benchmark); the timeout only catches a hang.
    res = run_bench("--quick", "--out", str(out), "--tmp", str(tmp_path), timeout=180)

    assert res.returncode == 0, res.stderr[-3000:]
    assert "insert: timing" in res.stderr and f"wrote {out}" in res.stderr  # progress goes to stderr
    assert res.stdout == ""

    text = out.read_text(encoding="utf-8")
    headings = [line for line in text.splitlines() if line.startswith("#")]
    assert headings == ["# Benchmarks", "## Targets", "## Machine", "## Insert latency",
                        "## Idle daemon memory with a 300 backlog",
                        "## Flush of a 300 backlog to the local iFlow stand-in", "## Start-up and idle wake-ups",
                        "## Flush of 300 over a 50 ms link", "## Scan to feedback latency: serial line and PN532",
                        "## Export of a 300-record journal"]

    targets = [r for r in section(text, "## Targets").splitlines() if r.startswith("| ") and "---" not in r]
    # header + insert p50, p99, speed-up, RSS, SIGTERM, flush rate, memory, ratio,
    # --version, status without and with a daemon, idle wake-ups (line reader, PN532 reader), WAN flush,
    # records per request, scan-to-feedback p99 of the line and the PN532 paths, export's peak RSS
    assert len(targets) == 1 + 8 + 5 + 2 + 2 + 1
    assert all(("met" in r or "MISSED" in r) and "not enforced in --quick" in r for r in targets[1:])

    machine = section(text, "## Machine")
    for row in ("| CPU |", "| RAM |", "| Kernel |", "| Load average at start |", "| Python |",
                "| Temp dir (disk, file system) |", "| Date |", "| Command |"):
        assert row in machine
    assert "--quick" in machine.split("| Command |")[1]

    inserts = section(text, "## Insert latency")
    assert "\n| 0 | " in inserts and "\n| 300 | " in inserts
    assert "Ratios, backlog 300 against 0" in inserts

    memory = section(text, "## Idle daemon memory with a 300 backlog")
    assert "| `agent run`, 300 pending, idle |" in memory
    assert "SIGTERM: exit status 0" in memory

    flush = section(text, "## Flush of a 300 backlog to the local iFlow stand-in")
    assert "| `agent flush`, round 1 |" in flush and "| bare httpx loop, round 1 |" in flush

    startup = section(text, "## Start-up and idle wake-ups")
    for row in ("| `agent --version` |", "| `agent status --json`, no daemon, 300 records |",
                "| `agent status --json`, daemon running |"):
        assert row in startup
    assert "wake-ups per second" in startup
    assert "The same daemon with a PN532 reader" in startup and "% of one core" in startup
    assert "with its metrics written for node_exporter" in startup and "`metrics.textfile_dir = \"\"`" in startup

    export = section(text, "## Export of a 300-record journal")
    assert "| `agent export`, CSV" in export and "`agent status --json`" in export

    latency = section(text, "## Scan to feedback latency: serial line and PN532")
    assert "| serial line (`protocol = \"line\"`)" in latency and "| PN532 (`protocol = \"pn532\"`" in latency


def test_unknown_benchmark_name_is_a_usage_error(tmp_path: Path) -> None:
    out = tmp_path / "never.md"
    res = run_bench("--only", "insert,nosuch", "--out", str(out), timeout=30)
    assert res.returncode == 2
    assert "nosuch" in res.stderr and "insert, memory" in res.stderr
    assert not out.exists()
