"""`agent export` of a large journal: peak memory beside `agent status` on the same journal.

Each command runs as a grandchild of a small launcher (a bare interpreter that
forks and execs it) and its peak RSS is the launcher's ``wait4`` ru_maxrss:
exact, and not the benchmark's own size (ru_maxrss survives execve, so a child
forked from this large process would report this process). The launcher's
own size, which ru_maxrss includes, is the bare interpreter's: the first row.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
from pathlib import Path

from bench.run import MB, Check, Context, Section, fmt_int, prefill_journal, progress

# Fork and exec argv[1:] with stdout to a file, wait4 it: "exit peak_bytes wall_s" on stderr.
_LAUNCHER = r"""
import os, sys, time
out = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
t0 = time.monotonic()
pid = os.fork()
if pid == 0:
    os.dup2(out, 1)
    os.execvp(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
sys.stderr.write(f"{os.waitstatus_to_exitcode(status)} {usage.ru_maxrss * 1024} {time.monotonic() - t0}\n")
"""


def _measured(python: str, cmd: list[str], stdout: Path) -> tuple[int, int, float, str]:
    """(exit status, peak RSS bytes, wall seconds, stderr) of ``cmd`` run under the launcher."""
    res = subprocess.run([python, "-c", _LAUNCHER, str(stdout), *cmd], capture_output=True, text=True,
                         timeout=600, stdin=subprocess.DEVNULL)
    lines = res.stderr.strip().splitlines()
    rc, peak, wall = lines[-1].split()
    return int(rc), int(peak), float(wall), "\n".join(lines[:-1])


def _journal_records(ctx: Context, n: int) -> list[dict]:
    """The benchmark's records, three in four of them delivered (as a day's history is)."""
    out = []
    for i, rec in enumerate(ctx.records(n)):
        if i % 4:
            rec = dict(rec, state="delivered", attempts=1, done_at=rec["captured_at"],
                       sent_date="2026-11-01", sent_time="08:00:00")
        out.append(rec)
    return out


def bench_export(ctx: Context) -> Section:
    n = ctx.params.memory_backlog
    state = ctx.tmp / "export-state"
    state.mkdir(mode=0o700)
    progress(f"export: pre-filling a journal of {fmt_int(n)} records")
    prefill_journal(state / "journal", _journal_records(ctx, n))
    os.sync()
    config = ctx.tmp / "export.toml"
    config.write_text('timezone = "Europe/Bucharest"\n'
                      f"state_dir = {json.dumps(str(state))}\n"
                      '[feedback]\nbackend = "none"\n', encoding="utf-8")
    base = [ctx.agent_exe, "--config", str(config)]
    # the records span 2026-11-01 06:00 UTC onwards, 2 s apart: this period holds them all
    period = ["--from", "2026-11-01", "--to", "2026-12-31"]
    runs = [
        ("python -c pass (the launcher's own size)", [ctx.python_exe, "-c", "pass"], None),
        ("`agent status --json`, no daemon", base + ["status", "--json"], None),
        ("`agent export`, CSV to stdout", base + ["export", *period], "csv"),
        ("`agent export --format json --hash-tags`", base + ["export", *period, "--format", "json", "--hash-tags"],
         "json"),
    ]
    rows = []
    for title, cmd, fmt in runs:
        progress(f"export: {title}")
        out = ctx.tmp / "export-out"
        rc, peak, wall, err = _measured(ctx.python_exe, cmd, out)
        if rc != 0:
            raise RuntimeError(f"{title} exited {rc}: {err[-2000:]}")
        if fmt == "csv":
            with open(out, newline="", encoding="utf-8") as f:
                got = sum(1 for _ in csv.DictReader(f))
        elif fmt == "json":
            with open(out, encoding="utf-8") as f:
                got = sum(1 for line in f if json.loads(line))
        else:
            got = None
        if got is not None and got != n:
            raise RuntimeError(f"{title} wrote {got} records, not {n}")
        rows.append((title, peak, wall, out.stat().st_size))
        out.unlink()
    status_peak = rows[1][1]
    ratio = max(rows[2][1], rows[3][1]) / status_peak
    body = [
        f"A journal of {fmt_int(n)} records (the journal's own format, 256 per segment; three in four "
        "delivered, the rest pending), no daemon. `agent status --json` opens it (reading every segment "
        "once to count it); `agent export` of a period holding every record reads the segment files "
        "read-only, one at a time, and writes each row as it goes. Each command runs under a small "
        "launcher that forks and execs it; the peak is its `wait4` ru_maxrss (which includes the "
        "launcher's size before the exec: the first row). The row counts of both exports are checked "
        "(CSV through Python's csv module, JSON Lines line by line). MB = 10^6 bytes.",
        "",
        "| Process | Peak RSS | Wall time | Output |",
        "|---|---:|---:|---:|",
    ]
    for title, peak, wall, size in rows:
        body.append(f"| {title} | {peak / MB:.1f} MB | {wall:.2f} s | {size / MB:.1f} MB |")
    body += ["", f"Export peak against `agent status` on the same journal: {ratio:.2f}x "
             f"({fmt_int(n)} records, {n / rows[2][2]:,.0f} records/s as CSV)."]
    checks = [Check(f"Export peak RSS vs `agent status`, {fmt_int(n)} records", f"{ratio:.2f}x", "<= 1.5x",
                    ratio <= 1.5)]
    return Section(f"Export of a {fmt_int(n)}-record journal", body, checks)
