"""Start-up of the commands a person waits on, and the idle daemon's wake-ups.

Each command is timed as a fresh process, alternating with a bare interpreter
start (``python -c pass``, the same interpreter and venv) so that both see the
same machine state; the figure is the median of each, and the target a ratio
to the bare start. Byte code is compiled first and written (as an installed
package has it): PYTHONDONTWRITEBYTECODE would otherwise recompile every
module on every start and measure the compiler.

Wake-ups: the sum of voluntary and involuntary context switches of every
thread of an idle `agent run` (``/proc/PID/task/*/status``) over a window,
per second. A door sits idle almost all day; each wake-up costs a Pi Zero
power and, for a reader polled by timeouts, CPU.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import time
from pathlib import Path
from typing import Callable

from bench.run import (
    DAEMON_START_TIMEOUT_S,
    Check,
    Context,
    Section,
    _tail,
    agent_status,
    prefill_journal,
    progress,
)

SMALL_JOURNAL = 300  # records in the "small journal" of the no-daemon status


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def _timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    res = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                         env=_env(), timeout=60)
    took = time.perf_counter() - t0
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {res.returncode}: {res.stderr.decode(errors='replace')[-500:]}")
    return took


def _median_pair(bare: list[str], cmd: list[str], rounds: int) -> tuple[float, float]:
    """Medians of ``bare`` and ``cmd``, run alternately ``rounds`` times each (after a warm-up)."""
    _timed(bare)
    _timed(cmd)
    a, b = [], []
    for _ in range(rounds):
        a.append(_timed(bare))
        b.append(_timed(cmd))
    return statistics.median(a), statistics.median(b)


def _switches(pid: int) -> int:
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            text = (task / "status").read_text()
        except OSError:
            continue  # a thread that just ended
        for line in text.splitlines():
            if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                total += int(line.split()[1])
    return total


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads), from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _idle(agent: str, config: Path, state: Path, window_s: float, log_path: Path,
          while_up: Callable[[], None] | None = None) -> tuple[float, float, int]:
    """Start ``agent run``, let it settle, then (wake-ups/s, CPU share, threads) over ``window_s``.
    ``while_up`` runs once the daemon answers (the running-daemon status timing)."""
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([agent, "--config", str(config), "run"], stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=_env())
    try:
        deadline = time.monotonic() + DAEMON_START_TIMEOUT_S
        while not ((state / "agent.sock").exists() and (agent_status(agent, config) or {}).get("daemon")):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the daemon did not start:\n" + _tail(log_path))
            time.sleep(0.2)
        if while_up is not None:
            while_up()
        time.sleep(2.0)  # let start-up work (first delivery attempt, clock file) settle
        progress(f"startup: counting the idle daemon's context switches for {window_s:g} s ({config.stem})")
        before, cpu0, t0 = _switches(proc.pid), _cpu_s(proc.pid), time.monotonic()
        time.sleep(window_s)
        took = time.monotonic() - t0
        wakeups = (_switches(proc.pid) - before) / took
        cpu = (_cpu_s(proc.pid) - cpu0) / took
        threads = len(list(Path(f"/proc/{proc.pid}/task").iterdir()))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return wakeups, cpu, threads


def _config(ctx: Context, state: Path, port: str, protocol: str = "line", name: str = "startup",
            metrics: bool = True) -> Path:
    """The bench's config; its metrics go to a directory of the bench's own (a
    fleet's door has them on), or are off."""
    textfile = ctx.tmp / f"{name}-textfile"
    textfile.mkdir(exist_ok=True)
    config = ctx.tmp / f"{name}.toml"
    config.write_text(
        'timezone = "Europe/Bucharest"\n'
        f"state_dir = {json.dumps(str(state))}\n\n"
        f'[reader]\ntype = "serial"\nport = {json.dumps(port)}\nprotocol = "{protocol}"\n\n'
        '[feedback]\nbackend = "none"\n\n'
        '[iflow]\nurl = "http://127.0.0.1:9/api/store_attendances"\naccess_token = "bench-token"\n\n'
        f'[metrics]\ntextfile_dir = {json.dumps(str(textfile) if metrics else "")}\n',
        encoding="utf-8")
    return config


def bench_startup(ctx: Context) -> Section:
    p = ctx.params
    rounds = 5 if p.quick else 21
    window_s = 2.0 if p.quick else 20.0
    py = ctx.python_exe
    subprocess.run([py, "-m", "compileall", "-q", str(Path(__file__).resolve().parents[1] / "agent")],
                   check=True, stdout=subprocess.DEVNULL, env=_env())
    state = ctx.tmp / "startup-state"
    state.mkdir(mode=0o700)
    prefill_journal(state / "journal", ctx.records(SMALL_JOURNAL))
    master, slave = os.openpty()
    config = _config(ctx, state, os.ttyname(slave))
    bare = [py, "-c", "pass"]
    agent = ctx.agent_exe
    status = [agent, "--config", str(config), "status", "--json"]
    rows: list[tuple[str, float, float]] = []
    try:
        progress(f"startup: {rounds} alternating rounds each of `python -c pass` and the command")
        rows.append(("`agent --version`", *_median_pair(bare, [agent, "--version"], rounds)))
        rows.append((f"`agent status --json`, no daemon, {SMALL_JOURNAL} records",
                     *_median_pair(bare, status, rounds)))
        wakeups, cpu, threads = _idle(
            agent, config, state, window_s, ctx.tmp / "startup-daemon.log",
            lambda: rows.append(("`agent status --json`, daemon running", *_median_pair(bare, status, rounds))))
        # The same daemon without metrics: what writing rfid_agent.prom every 15 s costs.
        off_config = _config(ctx, state, os.ttyname(slave), name="startup-no-metrics", metrics=False)
        off_wakeups, off_cpu, _ = _idle(agent, off_config, state, window_s, ctx.tmp / "startup-no-metrics.log")
    finally:
        os.close(master)
        os.close(slave)
    # The same idle daemon with a PN532, which must be asked: it polls every poll_seconds.
    # Lazy: only this measurement speaks to a simulated chip.
    from standins.pn532 import Pn532Sim

    nfc_state = ctx.tmp / "startup-pn532-state"
    nfc_state.mkdir(mode=0o700)
    with Pn532Sim() as sim:
        nfc_config = _config(ctx, nfc_state, sim.port, protocol="pn532", name="startup-pn532")
        nfc_wakeups, nfc_cpu, nfc_threads = _idle(agent, nfc_config, nfc_state, window_s,
                                                  ctx.tmp / "startup-pn532.log")
    polls = 1 / 0.2  # the default poll_seconds

    limits = {"`agent --version`": 2.5, "daemon running": 3.0, "no daemon": 4.0}
    body = [
        "Each command runs as a fresh process, alternating with a bare `python -c pass` of the same "
        f"interpreter and venv, {rounds} rounds after one warm-up; figures are medians. Byte code is "
        "compiled and written first (as an installed package has it). The config has one serial reader "
        "on a pty, `[feedback] backend = \"none\"` and an `[iflow]` URL on a closed local port; the "
        f"no-daemon status reads a journal of {SMALL_JOURNAL} pending records and counts held scans.",
        "",
        "| Command | median | bare `python -c pass` | ratio |",
        "|---|---:|---:|---:|",
    ]
    checks: list[Check] = []
    for name, base, took in rows:
        ratio = took / base
        body.append(f"| {name} | {took * 1000:.0f} ms | {base * 1000:.0f} ms | {ratio:.2f}x |")
        limit = next(v for k, v in limits.items() if k in name)
        checks.append(Check(f"Start-up: {name}", f"{ratio:.2f}x bare", f"<= {limit}x", ratio <= limit))
    body += [
        "",
        f"Idle daemon (the same config, {threads} threads, nothing to deliver after its first attempt): "
        f"{wakeups:.2f} wake-ups per second over {window_s:g} s (context switches of all its threads "
        f"from `/proc/PID/task/*/status`), {cpu * 100:.2f} % of one core, with its metrics written for "
        f"node_exporter every 15 s (the default); the same daemon with `metrics.textfile_dir = \"\"`: "
        f"{off_wakeups:.2f} wake-ups per second, {off_cpu * 100:.2f} % of one core (the file is written "
        "from the supervisor's existing tick: no wake-up of its own).",
        "",
        f"The same daemon with a PN532 reader (`protocol = \"pn532\"`, the project's simulator on a pty, no "
        f"card in the field, the default `poll_seconds` = 0.2, {nfc_threads} threads): "
        f"{nfc_wakeups:.1f} wake-ups per second, {nfc_cpu * 100:.2f} % of one core of this machine (a Pi "
        "Zero 2 W is about ten times slower). A PN532 speaks only when asked, so every poll wakes the "
        "reader thread: to send InListPassiveTarget, for its ACK and for its answer. That is the price "
        "of noticing a card within a poll and a silent chip within two; a larger `poll_seconds` lowers it.",
    ]
    checks.append(Check("Idle daemon wake-ups", f"{wakeups:.2f}/s", "<= 1/s", wakeups <= 1.0))
    # at most four wake-ups per poll (wait, ACK, answer, a split read) and the line daemon's own
    nfc_limit = 4 * polls + 1
    checks.append(Check("Idle daemon wake-ups, PN532 reader", f"{nfc_wakeups:.1f}/s", f"<= {nfc_limit:g}/s",
                        nfc_wakeups <= nfc_limit))
    return Section("Start-up and idle wake-ups", body, checks)
