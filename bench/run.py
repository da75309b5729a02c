"""The agent's benchmarks; writes ``docs/benchmarks.md``.

    scripts/bench                         everything, about a minute on 2 cores
    scripts/bench --quick --out /tmp/b.md a few hundred records, to see it works
    scripts/bench --only insert           one benchmark (names: see --help)

Each benchmark is one function ``(Context) -> Section`` in :data:`REGISTRY`;
a section carries its Markdown and its :class:`Check` objects (targets). The
program prints progress to stderr, writes the report, and exits 1 when a
target is missed (naming it), 2 on bad usage. ``--quick`` shows the targets
but does not enforce them: a few hundred records say nothing about 100,000.

Every figure is paired with a baseline measured in the same run: the journal
against plain TinyDB (its default ``JSONStorage``), and the daemon's memory
against a bare interpreter and one that only imports the agent's libraries.
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import os
import platform
import random
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Callable, Iterable

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "docs" / "benchmarks.md"
SEGMENT_SIZE = 256  # the journal's default (config journal.segment_size)
BOOT_ID = "5b0f3c2e-8d1a-4e7b-9c6f-2a4d8e1b7c90"
MB = 1_000_000  # figures are in MB = 10^6 bytes (the kernel reports KiB)
DAEMON_START_TIMEOUT_S = 180.0

_T0 = time.monotonic()


def progress(msg: str) -> None:
    print(f"[bench {time.monotonic() - _T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ params


@dataclass(frozen=True)
class Params:
    """How much work each benchmark does."""

    quick: bool
    backlogs: tuple[int, ...]  # pending scans before timing inserts; first is 0
    journal_inserts: int  # timed per backlog (a multiple of SEGMENT_SIZE in full mode)
    journal_block: int  # inserts per backlog per round; rounds alternate the backlogs
    tinydb_inserts: dict[int, int]  # timed plain-TinyDB inserts per backlog
    memory_backlog: int
    idle_s: float


FULL = Params(quick=False, backlogs=(0, 10_000, 100_000), journal_inserts=512, journal_block=1,
              tinydb_inserts={0: 256, 10_000: 64, 100_000: 15}, memory_backlog=100_000, idle_s=3.0)
QUICK = Params(quick=True, backlogs=(0, 300), journal_inserts=32, journal_block=1,
               tinydb_inserts={0: 8, 300: 8}, memory_backlog=300, idle_s=0.3)


# ------------------------------------------------------------------ results


@dataclass
class Check:
    """One target: ``ok`` is None when it could not be measured."""

    name: str
    measured: str
    limit: str
    ok: bool | None


@dataclass
class Section:
    title: str
    body: list[str]
    checks: list[Check] = field(default_factory=list)
    failed: bool = False  # the benchmark crashed


@dataclass
class Context:
    params: Params
    tmp: Path
    agent_exe: str
    python_exe: str
    _records: list[dict] = field(default_factory=list)

    def records(self, n: int) -> list[dict]:
        """The first ``n`` of one fixed sequence of journal records (built once)."""
        if len(self._records) < n:
            rng = random.Random(len(self._records) or 1)
            start = len(self._records)
            self._records.extend(journal_record(i, rng) for i in range(start, n))
        return self._records[:n]


@dataclass(frozen=True)
class Benchmark:
    name: str
    title: str
    run: Callable[[Context], Section] | None  # None: a placeholder another benchmark fills
    placeholder: str = ""


# ------------------------------------------------------------------ records

_EPOCH = datetime(2026, 11, 1, 6, 0, tzinfo=UTC)


def scan_fields(i: int) -> dict[str, Any]:
    """What the recorder passes to ``Journal.append`` for scan number ``i``."""
    number = 10_000_000 + (i * 7919) % 89_999_999
    return {
        "tag": f"{number:010d}",
        "raw": f"0F{number & 0xFFFFFFFF:08X}",
        "reader": "door",
        "source": "reader",
        "captured_at": (_EPOCH + timedelta(seconds=2 * i, microseconds=i % 1_000_000))
        .isoformat(timespec="microseconds"),
        "boot_id": BOOT_ID,
        "mono_ns": 123_456_789_012 + i * 2_000_000_000,
        "synced": True,
    }


def journal_record(i: int, rng: random.Random) -> dict[str, Any]:
    """A pending record exactly as ``Journal.append`` stores it (same key order)."""
    rec: dict[str, Any] = {"id": f"{rng.getrandbits(128):032x}", "state": "pending", "attempts": 0,
                           "error": None, "message": None, "done_at": None}
    rec.update(scan_fields(i))
    return rec


def no_sync_fs() -> Any:
    """The real file system with fsync (file and directory) turned into a no-op."""
    from agent.fsio import RealFS

    class NoSyncFS(RealFS):
        def fsync_file(self, path: str) -> None:
            pass

        def fsync_dir(self, path: str) -> None:
            pass

    return NoSyncFS()


def prefill_journal(directory: Path, records: list[dict], segment_size: int = SEGMENT_SIZE) -> int:
    """Write ``records`` as journal segments, in the journal's own file format.

    Uses :class:`agent.journal.storage.AtomicJSONStorage` (so the bytes are what the
    journal writes) over a file system without fsync: pre-filling is not what
    is measured. The caller syncs once afterwards. Returns the bytes written.
    """
    from agent.journal.segments import TABLE
    from agent.journal.storage import AtomicJSONStorage

    fs = no_sync_fs()
    directory.mkdir(parents=True, mode=0o700, exist_ok=True)
    written = 0
    for number, start in enumerate(range(0, len(records), segment_size), 1):
        chunk = records[start:start + segment_size]
        path = directory / f"seg-{number:08d}.json"
        AtomicJSONStorage(str(path), fs=fs).write({TABLE: {str(k): rec for k, rec in enumerate(chunk, 1)}})
        written += path.stat().st_size
    return written


def prefill_tinydb(path: Path, records: list[dict]) -> int:
    """One ``json.dump`` of the whole TinyDB document, as ``JSONStorage`` writes it."""
    if records:
        with open(path, "w", encoding="utf-8") as f:
            json.dump({"scans": {str(k): rec for k, rec in enumerate(records, 1)}}, f)
    return path.stat().st_size if path.exists() else 0


# ------------------------------------------------------------------ stats


def percentile(samples_ns: list[int], q: float) -> float:
    """Nearest-rank percentile, in milliseconds."""
    ordered = sorted(samples_ns)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1] / 1e6


def fmt_ms(v: float) -> str:
    return f"{v:.2f}" if v < 100 else f"{v:.0f}"


def fmt_int(n: int) -> str:
    return f"{n:,}"


def fmt_bytes(n: float) -> str:
    return f"{n / MB:.1f} MB" if n >= 100_000 else f"{n / 1000:.1f} kB"


class FsyncCounter:
    """Counts ``os.fsync`` calls while active (used on one untimed insert)."""

    def __init__(self) -> None:
        self.calls = 0
        self._orig = os.fsync

    def __enter__(self) -> "FsyncCounter":
        def counting(fd: int) -> None:
            self.calls += 1
            self._orig(fd)

        os.fsync = counting  # type: ignore[assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        os.fsync = self._orig  # type: ignore[assignment]


# ------------------------------------------------------------------ insert latency


class _Scans:
    """Fresh scan fields for timed inserts, numbered apart from the backlogs."""

    def __init__(self, start: int) -> None:
        self.i = start
        self.rng = random.Random(start)

    def fields(self) -> dict[str, Any]:
        self.i += 1
        return scan_fields(self.i)

    def record(self) -> dict[str, Any]:
        self.i += 1
        return journal_record(self.i, self.rng)


@dataclass
class _Timings:
    samples: dict[int, list[int]] = field(default_factory=dict)  # ns per insert, by backlog
    open_s: dict[int, float] = field(default_factory=dict)
    file_bytes: dict[int, int] = field(default_factory=dict)  # plain TinyDB's file after the inserts
    fsyncs: int = 0  # os.fsync calls in one insert


def _time_journals(ctx: Context, scans: _Scans, *, fs: Any = None, n: int) -> _Timings:
    """Open the journals pre-filled under ctx.tmp, one untimed insert each, then
    ``n`` timed inserts per backlog, alternating between backlogs."""
    from agent.fsio import REAL_FS
    from agent.journal.store import Journal

    p, out = ctx.params, _Timings()
    journals: dict[int, Journal] = {}
    before: dict[int, int] = {}
    for b in p.backlogs:
        t0 = time.perf_counter()
        journals[b] = Journal(str(ctx.tmp / f"journal-{b}"), segment_size=SEGMENT_SIZE, fs=fs or REAL_FS)
        out.open_s[b] = time.perf_counter() - t0
        before[b] = journals[b].summary()["pending"]
        with FsyncCounter() as fc:
            journals[b].append(scans.fields())  # warm-up: opens the active segment
        out.fsyncs = fc.calls
        out.samples[b] = []
    clock = time.perf_counter_ns
    for _ in range(n // p.journal_block):
        for b in p.backlogs:
            journal, samples = journals[b], out.samples[b]
            for _ in range(p.journal_block):
                fields = scans.fields()
                t0 = clock()
                journal.append(fields)
                samples.append(clock() - t0)
    for b, journal in journals.items():
        pending = journal.summary()["pending"]
        if pending != before[b] + 1 + n:
            raise RuntimeError(f"journal at backlog {b} holds {pending} pending, expected {before[b] + 1 + n}")
        journal.close()
    return out


def _time_tinydb(ctx: Context, scans: _Scans) -> _Timings:
    """Plain TinyDB (default JSONStorage), the same records in one file per backlog."""
    from tinydb import TinyDB

    out = _Timings()
    clock = time.perf_counter_ns
    for b in ctx.params.backlogs:
        path = ctx.tmp / f"tinydb-{b}.json"
        progress(f"insert: pre-filling a plain TinyDB file with {fmt_int(b)} scans")
        prefill_tinydb(path, ctx.records(b))
        os.sync()
        t0 = time.perf_counter()
        db = TinyDB(str(path))
        table = db.table("scans")
        with FsyncCounter() as fc:
            table.insert(scans.record())  # warm-up: reads the file, computes the next id
        out.open_s[b] = time.perf_counter() - t0
        out.fsyncs = fc.calls
        n = ctx.params.tinydb_inserts[b]
        progress(f"insert: timing {n} plain TinyDB inserts at {fmt_int(b)}")
        samples = out.samples[b] = []
        for _ in range(n):
            rec = scans.record()
            t0 = clock()
            table.insert(rec)
            samples.append(clock() - t0)
        if len(table) != b + 1 + n:
            raise RuntimeError(f"plain TinyDB at backlog {b} holds {len(table)} records, expected {b + 1 + n}")
        db.close()
        out.file_bytes[b] = path.stat().st_size
    return out


def bench_insert(ctx: Context) -> Section:
    """Insert latency vs backlog: the journal against plain TinyDB."""
    from tinydb import __version__ as tinydb_version
    from tinydb.storages import JSONStorage

    from agent.journal.store import Journal

    p = ctx.params
    backlogs, top = p.backlogs, p.backlogs[-1]
    scans = _Scans(top + 1_000_000)

    for b in backlogs:
        progress(f"insert: pre-filling a journal with {fmt_int(b)} pending scans")
        prefill_journal(ctx.tmp / f"journal-{b}", ctx.records(b))
        check = Journal(str(ctx.tmp / f"journal-{b}"))
        got = check.summary()["pending"]
        check.close()
        if got != b:
            raise RuntimeError(f"pre-filled journal reads {got} pending scans, expected {b}")
    os.sync()
    progress(f"insert: timing {p.journal_inserts} journal inserts per backlog, alternating "
             f"between backlogs every {p.journal_block} insert(s)")
    jt = _time_journals(ctx, scans, n=p.journal_inserts)
    progress("insert: timing journal inserts with fsync disabled (CPU part)")
    ct = _time_journals(ctx, scans, fs=no_sync_fs(), n=p.journal_inserts // 2)
    tt = _time_tinydb(ctx, scans)

    jp50 = {b: percentile(jt.samples[b], 50) for b in backlogs}
    jp99 = {b: percentile(jt.samples[b], 99) for b in backlogs}
    cp50 = {b: percentile(ct.samples[b], 50) for b in backlogs}
    tp50 = {b: percentile(tt.samples[b], 50) for b in backlogs}
    tp99 = {b: percentile(tt.samples[b], 99) for b in backlogs}
    r50, r99, speedup = jp50[top] / jp50[0], jp99[top] / jp99[0], tp50[top] / jp50[top]
    seg_full = max(f.stat().st_size for f in (ctx.tmp / f"journal-{top}").glob("seg-*.json"))
    tiny_fsyncs = "os.fsync" in inspect.getsource(JSONStorage.write)

    body = [
        f"One scan record is ~{len(json.dumps(ctx.records(1)[0])):,} bytes of JSON (tag, raw, reader, "
        "source, captured_at, boot_id, mono_ns, synced, plus the journal's id/state/attempts/error/"
        "message/done_at). Each store is pre-filled with a backlog of pending scans, synced to disk, "
        "given one untimed warm-up insert, then timed insert by insert with `time.perf_counter_ns`.",
        "",
        f"- **Journal**: `Journal.append` (segment_size {SEGMENT_SIZE}, real fsyncs), in a temp dir on "
        "the disk described above. Backlog segments are written in the journal's own format through "
        f"`AtomicJSONStorage`. {p.journal_inserts} timed inserts per backlog, "
        + ("alternating between the backlogs insert by insert" if p.journal_block == 1 else
           f"in rounds of {p.journal_block} that alternate between the backlogs")
        + " so disk noise hits all of them alike"
        + (f"; {p.journal_inserts} is a multiple of {SEGMENT_SIZE}, so every backlog sees the same mix "
           "of active-segment fill levels" if p.journal_inserts % SEGMENT_SIZE == 0 else "")
        + f". fsync calls per insert: {jt.fsyncs} (temp file, then directory after the rename).",
        f"- **Plain TinyDB** {tinydb_version}: `TinyDB(path).table(\"scans\").insert(rec)` with the "
        "default `JSONStorage`, the same records in one file (pre-filled by one `json.dump`). "
        f"Its `write` {'calls' if tiny_fsyncs else 'does NOT call'} `os.fsync` "
        f"({tt.fsyncs} per insert measured): it seeks to 0, rewrites the whole JSON in place, flushes, "
        "fsyncs and truncates; no temp file, no rename, no directory fsync. Every insert also re-reads "
        "and parses the whole file. Because an insert at a large backlog takes long, fewer are timed: "
        + ", ".join(f"{p.tinydb_inserts[b]} at {fmt_int(b)}" for b in backlogs)
        + " (with so few samples its p99 is close to the maximum).",
        "",
        "| Backlog (pending) | Journal p50 ms | Journal p99 ms | n | Journal open s | Plain TinyDB p50 ms "
        "| Plain TinyDB p99 ms | n | TinyDB file | Journal p50 speed-up |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for b in backlogs:
        body.append(f"| {fmt_int(b)} | {fmt_ms(jp50[b])} | {fmt_ms(jp99[b])} | {len(jt.samples[b])} "
                    f"| {jt.open_s[b]:.2f} | {fmt_ms(tp50[b])} | {fmt_ms(tp99[b])} | {len(tt.samples[b])} "
                    f"| {fmt_bytes(tt.file_bytes[b])} | {tp50[b] / jp50[b]:.1f}x |")
    body += [
        "",
        f"Ratios, backlog {fmt_int(top)} against 0: journal p50 {r50:.2f}x, journal p99 {r99:.2f}x; "
        f"plain TinyDB p50 {tp50[top] / tp50[0]:.1f}x. The journal rewrites only its newest segment "
        f"(at most {SEGMENT_SIZE} records, {fmt_bytes(seg_full)} when full) where plain TinyDB rewrites "
        f"all {fmt_bytes(tt.file_bytes[top])}. 'Journal open' is `Journal(...)` reading every segment "
        "once to summarise it (what the daemon does at start-up).",
        "",
        f"Where a journal insert's time goes: with fsync turned off (same journals, {p.journal_inserts // 2} "
        "more inserts each) the p50 is "
        + ", ".join(f"{fmt_ms(cp50[b])} ms at {fmt_int(b)}" for b in backlogs)
        + ": serialising the active segment (JSON of up to "
        f"{SEGMENT_SIZE} records), writing its temp file and renaming it over the segment. The "
        "difference from the timed figures above is what the two fsyncs add on this disk.",
    ]
    label = f"{fmt_int(top)} vs 0 backlog"
    checks = [
        Check(f"Journal insert p50, {label}", f"{r50:.2f}x ({fmt_ms(jp50[top])} / {fmt_ms(jp50[0])} ms)",
              "<= 1.5x", r50 <= 1.5),
        Check(f"Journal insert p99, {label}", f"{r99:.2f}x ({fmt_ms(jp99[top])} / {fmt_ms(jp99[0])} ms)",
              "<= 2x", r99 <= 2.0),
        Check(f"Journal speed-up over plain TinyDB per insert (p50) at {fmt_int(top)}",
              f"{speedup:.0f}x ({fmt_ms(tp50[top])} / {fmt_ms(jp50[top])} ms)", ">= 50x", speedup >= 50),
    ]
    return Section("Insert latency", body, checks)


# ------------------------------------------------------------------ memory


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM (bytes) and Threads of a process, from /proc/PID/status."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) * 1024
            elif key == "Threads":
                out[key] = int(value)
    return out


def idle_python(python: str, code: str, settle_s: float) -> dict[str, int]:
    """RSS of an idle interpreter after running ``code``."""
    script = f"{code}\nimport sys, time\nprint('ready', flush=True)\ntime.sleep(60)\n"
    proc = subprocess.Popen([python, "-c", script], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != b"ready":
            raise RuntimeError(f"baseline interpreter failed: {python} -c {code!r}")
        time.sleep(settle_s)
        return proc_status(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def agent_status(agent: str, config: Path) -> dict[str, Any] | None:
    res = subprocess.run([agent, "--config", str(config), "status", "--json"], capture_output=True,
                         text=True, timeout=60, stdin=subprocess.DEVNULL)
    if res.returncode != 0:
        return None
    try:
        return json.loads(res.stdout)
    except ValueError:
        return None


def _tail(path: Path, n: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def bench_memory(ctx: Context) -> Section:
    """Resident memory of an idle `agent run` holding a large backlog."""
    p = ctx.params
    backlog = p.memory_backlog
    state = ctx.tmp / "daemon-state"
    state.mkdir(mode=0o700)
    progress(f"memory: pre-filling a state dir with {fmt_int(backlog)} pending scans")
    prefill_journal(state / "journal", ctx.records(backlog))
    os.sync()

    master, slave = os.openpty()
    port = os.ttyname(slave)
    config = ctx.tmp / "agent.toml"
    config.write_text(
        'timezone = "Europe/Bucharest"\n'
        f"state_dir = {json.dumps(str(state))}\n\n"
        f'[reader]\ntype = "serial"\nport = {json.dumps(port)}\nprotocol = "line"\n\n'
        '[feedback]\nbackend = "none"\n', encoding="utf-8")
    log_path = ctx.tmp / "daemon.log"
    cmd = [ctx.agent_exe, "--config", str(config), "run"]
    progress(f"memory: starting {' '.join(cmd[:1] + ['--config', 'CFG', 'run'])}")
    checks: list[Check] = []
    with open(log_path, "wb") as log:
        t_start = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        status = None
        while time.monotonic() - t_start < DAEMON_START_TIMEOUT_S:
            if proc.poll() is not None:
                raise RuntimeError(f"the daemon exited with {proc.returncode} before answering:\n"
                                   + _tail(log_path))
            # Ask only once the socket exists: before that `agent status` would
            # open the journal itself and compete with the daemon for its lock.
            if (state / "agent.sock").exists():
                status = agent_status(ctx.agent_exe, config)
                if status and status.get("daemon") is True and status.get("pending") == backlog:
                    break
            time.sleep(0.2)
        else:
            raise RuntimeError(f"the daemon did not answer `agent status` with daemon=true and "
                               f"pending={backlog} within {DAEMON_START_TIMEOUT_S:.0f} s; last answer "
                               f"{status!r}; log:\n{_tail(log_path)}")
        ready_s = time.monotonic() - t_start
        progress(f"memory: daemon answered after {ready_s:.1f} s; idling {p.idle_s:g} s")
        time.sleep(p.idle_s)
        daemon = proc_status(proc.pid)
        progress("memory: stopping the daemon with SIGTERM")
        t_stop = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            rc: int | None = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            rc = None
        stop_s = time.monotonic() - t_stop
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        os.close(master)
        os.close(slave)

    progress("memory: baselines (bare interpreter, interpreter importing the agent's libraries)")
    bare = idle_python(ctx.python_exe, "import time", p.idle_s)
    libs = idle_python(ctx.python_exe, "import tinydb, serial, httpx, gpiozero", p.idle_s)

    rss, hwm = daemon["VmRSS"], daemon["VmHWM"]
    body = [
        f"A state dir holding {fmt_int(backlog)} pending scans ({math.ceil(backlog / SEGMENT_SIZE)} segments "
        "of the journal's format), a config with `timezone = \"Europe/Bucharest\"`, one `[reader]` "
        "`type = \"serial\"` on a pty slave from `os.openpty()` with `protocol = \"line\"`, "
        "`[feedback] backend = \"none\"` and no `[iflow]` (so the daemon only journals). "
        f"`{Path(ctx.agent_exe).name} --config CFG run` is started; once `agent status --json` answers "
        f"`\"daemon\": true` with `pending` = {fmt_int(backlog)} (after {ready_s:.1f} s), it idles "
        f"{p.idle_s:g} s and VmRSS/VmHWM are read from `/proc/PID/status`. Baselines: the same "
        "interpreter idle after `import time`, and after `import tinydb, serial, httpx, gpiozero`. "
        "MB = 10^6 bytes.",
        "",
        "| Process | VmRSS | VmHWM (peak) | Threads |",
        "|---|---:|---:|---:|",
        f"| `agent run`, {fmt_int(backlog)} pending, idle | {rss / MB:.1f} MB | {hwm / MB:.1f} MB "
        f"| {daemon.get('Threads', '?')} |",
        f"| python, `import time` only | {bare['VmRSS'] / MB:.1f} MB | {bare['VmHWM'] / MB:.1f} MB "
        f"| {bare.get('Threads', '?')} |",
        f"| python, imports tinydb, serial, httpx, gpiozero | {libs['VmRSS'] / MB:.1f} MB "
        f"| {libs['VmHWM'] / MB:.1f} MB | {libs.get('Threads', '?')} |",
        "",
        f"The daemon uses {(rss - libs['VmRSS']) / MB:+.1f} MB against the import-only interpreter "
        f"and {(rss - bare['VmRSS']) / MB:+.1f} MB against the bare one (without `[iflow]` it need "
        "not import httpx, so the first difference can be small or negative). Its peak (VmHWM) "
        "includes reading every segment once at start-up.",
        "",
        f"SIGTERM: exit status {rc if rc is not None else 'none (killed after 30 s)'} "
        f"after {stop_s:.1f} s.",
    ]
    checks.append(Check(f"Idle daemon RSS with {fmt_int(backlog)} pending", f"{rss / MB:.1f} MB",
                        "< 60 MB", rss < 60 * MB))
    checks.append(Check("Daemon exits 0 on SIGTERM", f"exit {rc}" if rc is not None else "did not exit",
                        "0", rc == 0))
    return Section(f"Idle daemon memory with a {fmt_int(backlog)} backlog", body, checks)


# ------------------------------------------------------------------ flush

# The baseline: the same batches, sent from a bare loop of httpx calls with no
# journal (records built in memory, answers parsed as JSON, nothing written).
_BARE_HTTPX = r"""
import json, sys, time, httpx
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo
url, token, n, batch = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
tz = ZoneInfo("Europe/Bucharest")
epoch = datetime(2026, 11, 1, 6, 0, tzinfo=timezone.utc)
def item(i):
    number = 10_000_000 + (i * 7919) % 89_999_999
    local = (epoch + timedelta(seconds=2 * i)).astimezone(tz)
    return {"date": local.strftime("%Y-%m-%d"), "time": local.strftime("%H:%M:%S"),
            "rfidTag": f"{number:010d}", "errorMsg": ""}
sent = 0
with httpx.Client(timeout=httpx.Timeout(15.0, connect=5.0)) as client:
    for start in range(0, n, batch):
        items = [item(i) for i in range(start, min(n, start + batch))]
        r = client.get(url, params={"access_token": token, "csv_data": json.dumps(items, separators=(",", ":")),
                                    "version": "1.0"})
        r.raise_for_status()
        sent += sum(1 for x in r.json() if not any(v for k, v in x.items() if k.startswith("error_")))
print(sent)
"""


def _run_measured(cmd: list[str], log_path: Path) -> tuple[float, int, int]:
    """Run ``cmd``; (wall seconds, exit status, peak RSS in bytes).

    The peak is the child's own VmHWM, read from /proc while it runs: wait4's
    ru_maxrss is kept across execve, so it would report this (large) process.
    """
    peak = 0
    with open(log_path, "wb") as log:
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        while proc.poll() is None:
            try:
                peak = max(peak, proc_status(proc.pid).get("VmHWM", 0))
            except (OSError, ValueError):
                pass  # exiting
            time.sleep(0.05)
        wall = time.monotonic() - t0
    return wall, proc.returncode, peak


def flush_config(path: Path, state: Path, url: str, token: str, iflow_extra: str = "") -> Path:
    """The config of an `agent flush` run against a stand-in (mode 0600, as the agent wants)."""
    path.write_text(
        'timezone = "Europe/Bucharest"\n'
        f"state_dir = {json.dumps(str(state))}\n"
        f'[iflow]\nurl = {json.dumps(url)}\naccess_token = "{token}"\n{iflow_extra}'
        '[time]\ntrust_rtc = true\n', encoding="utf-8")
    os.chmod(path, 0o600)
    return path


def bench_flush(ctx: Context) -> Section:
    """`agent flush` of a large backlog to the stand-in, beside a bare httpx loop."""
    import shutil

    from standins.iflow import IflowStandin

    backlog = ctx.params.memory_backlog
    # best of 3: this VM's speed drifts by a fifth between runs a minute apart
    rounds = 1 if ctx.params.quick else int(os.environ.get("BENCH_ROUNDS", "3"))
    token = "bench-token-0123456789"
    seed = ctx.tmp / "flush-seed"
    seed.mkdir(mode=0o700)
    progress(f"flush: pre-filling {fmt_int(backlog)} pending scans")
    prefill_journal(seed / "journal", ctx.records(backlog))
    os.sync()
    agent_runs: list[tuple[float, int, int, dict]] = []
    bare_runs: list[tuple[float, int, int]] = []
    for rnd in range(rounds):
        # the agent: a fresh copy of the backlog, a fresh stand-in, no daemon
        state = ctx.tmp / f"flush-state-{rnd}"
        shutil.copytree(seed, state)
        os.chmod(state, 0o700)
        os.sync()  # else the agent's first fsync also writes out the fresh copy (ext4 data=ordered)
        with IflowStandin(token=token) as standin:
            config = flush_config(ctx.tmp / f"flush-{rnd}.toml", state, standin.url, token)
            progress(f"flush: round {rnd + 1}: agent flush of {fmt_int(backlog)}")
            log = ctx.tmp / f"flush-{rnd}.log"
            wall, rc, peak = _run_measured([ctx.agent_exe, "--config", str(config), "flush", "--json"], log)
            lines = log.read_text(errors="replace").strip().splitlines()
            summary = json.loads(lines[-1])["summary"] if lines and lines[-1].startswith("{") else {}
            if rc != 0 or standin.stored_count != backlog:
                raise RuntimeError(f"agent flush exited {rc} with {standin.stored_count} stored:\n{_tail(log)}")
            agent_runs.append((wall, rc, peak, summary))
        shutil.rmtree(state)
        batch = max(1, round(backlog / max(1, summary.get("requests", 1))))
        with IflowStandin(token=token) as standin:
            progress(f"flush: round {rnd + 1}: bare httpx loop, batches of {batch}")
            log = ctx.tmp / f"bare-{rnd}.log"
            wall, rc, peak = _run_measured([ctx.python_exe, "-c", _BARE_HTTPX, standin.url, token,
                                            str(backlog), str(batch)], log)
            if rc != 0 or standin.stored_count != backlog:
                raise RuntimeError(f"the bare loop exited {rc} with {standin.stored_count} stored:\n{_tail(log)}")
            bare_runs.append((wall, rc, peak))
    best_agent = min(agent_runs, key=lambda r: r[0])
    best_bare = min(bare_runs, key=lambda r: r[0])
    rate, bare_rate = backlog / best_agent[0], backlog / best_bare[0]
    peak = max(r[2] for r in agent_runs)
    s = best_agent[3]
    body = [
        f"{fmt_int(backlog)} pending scans (the journal's format, {SEGMENT_SIZE} per segment) are flushed by "
        f"`agent flush --json` (no daemon: the command locks the journal and sends itself) to the project's "
        f"iFlow stand-in on 127.0.0.1 (`standins.iflow`, in the benchmark process), with the default "
        f"`max_url_bytes` = 7000. Every record goes through the whole path: read from its segment, clock "
        f"check, local time, send time pinned durably before the first send (the journal's pins file, one "
        f"write per refill of about a segment), URL-budgeted batch, HTTP GET (the next one prepared while "
        f"one is in flight), per-record outcome, outcomes written durably once per segment. "
        f"Baseline, side by side in the same run: a bare loop of httpx GETs sending the same records in batches "
        f"of the same size ({batch}) with no journal (records built in memory, answers parsed). Each is run "
        f"{rounds}x alternately; the best wall time of each counts. Wall time includes interpreter start-up; "
        "peak memory is the process's own VmHWM, read from `/proc` while it runs.",
        "",
        "| Run | Wall time | Scans/s | Peak RSS | Requests |",
        "|---|---:|---:|---:|---:|",
    ]
    for i, (wall, _, pk, summ) in enumerate(agent_runs):
        body.append(f"| `agent flush`, round {i + 1} | {wall:.1f} s | {backlog / wall:,.0f} | {pk / MB:.1f} MB "
                    f"| {summ.get('requests', '?')} |")
    for i, (wall, _, pk) in enumerate(bare_runs):
        body.append(f"| bare httpx loop, round {i + 1} | {wall:.1f} s | {backlog / wall:,.0f} | {pk / MB:.1f} MB "
                    f"| {math.ceil(backlog / batch)} |")
    pairs = ", ".join(f"{b[0] / a[0]:.2f}" for a, b in zip(agent_runs, bare_runs))
    body += ["", f"The journal costs {(1 - rate / bare_rate):.0%} of the bare loop's rate "
             f"(agent {rate:,.0f} scans/s vs bare {bare_rate:,.0f} scans/s, ratio {rate / bare_rate:.2f}; "
             f"round by round, each agent run against the bare run after it: {pairs}). "
             f"Summary of the best agent run: delivered {s.get('delivered')}, duplicates {s.get('duplicate')}, "
             f"still pending {s.get('still_pending')}."]
    checks = [
        Check(f"Flush rate, {fmt_int(backlog)} backlog", f"{rate:,.0f} scans/s", ">= 2,000 scans/s", rate >= 2000),
        Check("Flush peak memory", f"{peak / MB:.1f} MB", "<= 80 MB", peak <= 80 * MB),
        Check("Flush rate vs bare httpx loop", f"{rate / bare_rate:.2f}x", ">= 0.67x", rate / bare_rate >= 0.67),
    ]
    return Section(f"Flush of a {fmt_int(backlog)} backlog to the local iFlow stand-in", body, checks)


# ------------------------------------------------------------------ registry

# Order here is the order of the report. A benchmark with run=None is a
# placeholder: its section is printed with the placeholder text until someone
# supplies the function (then `--only NAME` works for it too).
def bench_startup(ctx: Context) -> Section:
    from bench.startup import bench_startup as run  # it imports this module's helpers

    return run(ctx)


def bench_wan(ctx: Context) -> Section:
    from bench.wan import bench_wan as run  # it imports this module's helpers

    return run(ctx)


def bench_latency(ctx: Context) -> Section:
    from bench.latency import bench_latency as run  # it imports this module's helpers

    return run(ctx)


def bench_export(ctx: Context) -> Section:
    from bench.export import bench_export as run  # it imports this module's helpers

    return run(ctx)


REGISTRY: dict[str, Benchmark] = {
    b.name: b for b in (
        Benchmark("insert", "Insert latency", bench_insert),
        Benchmark("memory", "Idle daemon memory", bench_memory),
        Benchmark("flush", "Flush to the local iFlow stand-in", bench_flush),
        Benchmark("startup", "Start-up and idle wake-ups", bench_startup),
        Benchmark("wan", "Flush over a 50 ms link", bench_wan),
        Benchmark("latency", "Scan to feedback latency: serial line and PN532", bench_latency),
        Benchmark("export", "Export of a large journal", bench_export),
    )
}


# ------------------------------------------------------------------ machine


def _first_match(path: str, keys: Iterable[str]) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for key in keys:
        for line in lines:
            k, sep, v = line.partition(":")
            if sep and k.strip() == key and v.strip():
                return v.strip()
    return None


def _mount_of(path: Path) -> tuple[str, str, str, str]:
    """(device, mount point, fs type, options) of the mount holding ``path``."""
    real = os.path.realpath(path)
    best = ("?", "/", "?", "")
    try:
        with open("/proc/self/mounts", encoding="utf-8", errors="replace") as f:
            for line in f:
                parts = line.split()
                if len(parts) < 4:
                    continue
                dev, mnt, fstype, opts = parts[0], parts[1].replace("\\040", " "), parts[2], parts[3]
                inside = real == mnt or real.startswith(mnt.rstrip("/") + "/")
                if inside and len(mnt) >= len(best[1]):
                    best = (dev, mnt, fstype, opts)
    except OSError:
        pass
    return best


def _block_info(dev: str) -> str:
    """Rotational flag and model of the disk behind ``dev`` (best effort)."""
    name = os.path.basename(os.path.realpath(dev)) if dev.startswith("/dev/") else ""
    if not name:
        return ""
    sys_dev = Path("/sys/class/block") / name
    disk = sys_dev.resolve().parent.name if (sys_dev / "partition").exists() else name
    parts = []
    try:
        rot = (Path("/sys/block") / disk / "queue" / "rotational").read_text().strip()
        parts.append(f"queue/rotational={rot}")
    except OSError:
        pass
    for attr in ("device/model", "device/name"):
        try:
            model = (Path("/sys/block") / disk / attr).read_text().strip()
        except OSError:
            continue
        if model:
            parts.append(model)
            break
    return f"{disk}: {', '.join(parts)}" if parts else disk


def machine_info(tmp: Path, python_exe: str) -> list[tuple[str, str]]:
    from importlib.metadata import PackageNotFoundError, version

    cpu = (_first_match("/proc/cpuinfo", ("model name", "Model", "Hardware", "Processor"))
           or platform.processor() or "?")
    cores = os.cpu_count() or 0
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    mem = _first_match("/proc/meminfo", ("MemTotal",)) or "?"
    try:
        mem = f"{int(mem.split()[0]) * 1024 / 2**30:.1f} GiB"
    except ValueError:
        pass
    uname = platform.uname()
    dev, mnt, fstype, opts = _mount_of(tmp)
    block = _block_info(dev)
    libs = []
    for pkg in ("tinydb", "pyserial", "httpx", "gpiozero"):
        try:
            libs.append(f"{pkg} {version(pkg)}")
        except PackageNotFoundError:
            libs.append(f"{pkg} (not installed)")
    disk = f"`{tmp.parent}` on `{dev}` mounted at `{mnt}`, {fstype} ({opts})"
    if block:
        disk += f"; {block}"
    if fstype in ("tmpfs", "ramfs"):
        disk += " **(memory file system: fsync costs nothing here, so insert figures flatter both stores)**"
    return [
        ("CPU", f"{cpu} ({cores} cores, {usable} usable by this process)"),
        ("RAM", mem),
        ("Kernel", f"{uname.system} {uname.release} {uname.machine}"),
        ("Load average at start", " ".join(f"{x:.2f}" for x in os.getloadavg())
         + " (1, 5, 15 min; other work on the machine shows here)"),
        ("Python", f"{platform.python_implementation()} {platform.python_version()} (`{python_exe}`)"),
        ("Libraries", ", ".join(libs)),
        ("Temp dir (disk, file system)", disk),
    ]


# ------------------------------------------------------------------ report


def render(sections: list[Section], machine: list[tuple[str, str]], command: str, started: datetime,
           elapsed_s: float, params: Params) -> tuple[str, list[Check]]:
    checks = [c for s in sections for c in s.checks]
    missed = [c for c in checks if c.ok is not True]
    lines = [
        "# Benchmarks",
        "",
        "<!-- GENERATED by bench/run.py: do not edit by hand, run scripts/bench. -->",
        "",
        f"Generated {started.strftime('%Y-%m-%d %H:%M UTC')} by `{command}` "
        f"in {elapsed_s:.0f} s{' (--quick: tiny sizes, targets not enforced)' if params.quick else ''}.",
        "",
        "## Targets",
        "",
        "| Target | Measured | Limit | Result |",
        "|---|---|---|---|",
    ]
    for c in checks:
        result = {True: "met", False: "**MISSED**", None: "not measured"}[c.ok]
        if params.quick:
            result += " (not enforced in --quick)"
        lines.append(f"| {c.name} | {c.measured} | {c.limit} | {result} |")
    if not checks:
        lines.append("| (no benchmark with targets ran) | | | |")
    lines += ["", f"{len(checks) - len(missed)} of {len(checks)} targets met.", "", "## Machine", "",
              "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in machine]
    lines += [f"| Date | {started.isoformat(timespec='seconds')} |", f"| Command | `{command}` |"]
    for s in sections:
        lines += ["", f"## {s.title}", ""] + s.body
    return "\n".join(lines).rstrip() + "\n", missed


def _pick_tmp_parent(explicit: str | None) -> Path:
    """A temp dir on a real disk: the default one, unless that is in memory."""
    if explicit:
        return Path(explicit)
    for cand in (tempfile.gettempdir(), "/var/tmp", str(REPO)):
        in_memory = _mount_of(Path(cand))[2] in ("tmpfs", "ramfs")
        if os.path.isdir(cand) and os.access(cand, os.W_OK) and not in_memory:
            return Path(cand)
    return Path(tempfile.gettempdir())


def _python_of(agent_exe: str) -> str:
    """The interpreter in the agent script's shebang, else this one."""
    try:
        with open(agent_exe, "rb") as f:
            first = f.readline().decode(errors="replace").strip()
    except OSError:
        return sys.executable
    if first.startswith("#!"):
        exe = first[2:].split()[0] if first[2:].split() else ""
        if os.path.isabs(exe) and os.access(exe, os.X_OK) and not exe.endswith("/env"):
            return exe
    return sys.executable


def _default_agent() -> str:
    sibling = Path(sys.executable).parent / "agent"
    return str(sibling) if os.access(sibling, os.X_OK) else "agent"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    names = [n for n, b in REGISTRY.items() if b.run is not None]
    ap = argparse.ArgumentParser(prog="scripts/bench", description="Benchmark the agent's journal "
                                 "and daemon against baselines; writes docs/benchmarks.md.")
    ap.add_argument("--quick", action="store_true",
                    help="a few hundred records: checks the program works; figures mean nothing")
    ap.add_argument("--only", metavar="NAMES", help=f"comma-separated subset of: {', '.join(names)}")
    ap.add_argument("--out", metavar="PATH", default=str(DEFAULT_OUT),
                    help="report to write (default: docs/benchmarks.md)")
    ap.add_argument("--tmp", metavar="DIR", help="where to make the temp dir (default: the system's, "
                    "unless it is in memory); the disk under it is what inserts measure")
    ap.add_argument("--agent", metavar="PATH", default=_default_agent(),
                    help="the agent command to start (default: the one beside this python)")
    args = ap.parse_args(argv)
    if args.only:
        wanted = [n.strip() for n in args.only.split(",") if n.strip()]
        bad = [n for n in wanted if n not in names]
        if bad or not wanted:
            ap.error(f"--only: unknown or unavailable benchmark {', '.join(bad) or '(none)'}; "
                     f"choose from {', '.join(names)}")
        args.only = wanted
    else:
        args.only = names
    return args


def run_one(bench: Benchmark, ctx: Context) -> Section:
    """Run one benchmark; a crash becomes a failed section (the rest still runs)."""
    assert bench.run is not None
    try:
        return bench.run(ctx)
    except Exception as exc:
        traceback.print_exc()
        first = str(exc).splitlines()[0] if str(exc) else ""
        return Section(bench.title, [f"**The benchmark failed:** `{exc.__class__.__name__}: {first}`"],
                       [Check(f"{bench.title} benchmark ran", "failed", "runs", False)], failed=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    params = QUICK if args.quick else FULL
    command = os.environ.get("BENCH_COMMAND") or shlex.join(
        ["python", "-m", "bench"] + (sys.argv[1:] if argv is None else argv))
    started = datetime.now(UTC)
    t0 = time.monotonic()
    parent = _pick_tmp_parent(args.tmp)
    sections: list[Section] = []
    crashed: list[str] = []
    with tempfile.TemporaryDirectory(prefix="agent-bench-", dir=parent) as tmpdir:
        ctx = Context(params=params, tmp=Path(tmpdir), agent_exe=args.agent,
                      python_exe=_python_of(args.agent))
        progress(f"temp dir {tmpdir}; benchmarks: {', '.join(args.only)}")
        machine = machine_info(ctx.tmp, ctx.python_exe)
        for name, bench in REGISTRY.items():
            if bench.run is None:
                sections.append(Section(bench.title, [bench.placeholder]))
            elif name not in args.only:
                sections.append(Section(bench.title, [f"(not run this time: `--only {','.join(args.only)}`)"]))
            else:
                section = run_one(bench, ctx)
                sections.append(section)
                if section.failed:
                    crashed.append(name)
    text, missed = render(sections, machine, command, started, time.monotonic() - t0, params)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    progress(f"wrote {out}")
    if crashed:
        progress(f"benchmark failed: {', '.join(crashed)}")
        return 1
    if missed:
        for c in missed:
            progress(f"target missed: {c.name}: {c.measured} (limit {c.limit})")
        if params.quick:
            progress("--quick: targets are not enforced")
            return 0
        return 1
    progress("all targets met")
    return 0


if __name__ == "__main__":  # `python -m bench.run`: run the one importable copy (see bench/__main__.py)
    from bench.run import main as _main

    raise SystemExit(_main())
