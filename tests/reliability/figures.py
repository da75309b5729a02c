"""Measured figures of the reliability suite, and the report built from them.

Tests call :func:`record`; when ``$AGENT_FIGURES`` names a file, the figures
are merged into it (a JSON object keyed by section). ``scripts/reliability``
sets it, runs the suite, then renders ``docs/reliability.md`` with
``python -m tests.reliability.figures render FIGURES.json``.

Lengths: ``$AGENT_RELIABILITY=long`` selects the long run; the default is the
short CI run (:func:`scale`).
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
from typing import Any

LONG = os.environ.get("AGENT_RELIABILITY", "short") == "long"


def scale(short, long):
    """The CI length or, with ``AGENT_RELIABILITY=long``, the long one."""
    return long if LONG else short


def record(section: str, **figures: Any) -> None:
    """Merge ``figures`` into ``section`` of the ``$AGENT_FIGURES`` file (if set)."""
    path = os.environ.get("AGENT_FIGURES")
    if not path:
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with os.fdopen(os.dup(fd), "r+") as f:
            text = f.read()
            try:
                data = json.loads(text) if text.strip() else {}
            except ValueError:
                data = {}
            data.setdefault(section, {}).update(figures)
            data[section]["length"] = "long" if LONG else "short"
            f.seek(0)
            f.truncate()
            json.dump(data, f, indent=2, sort_keys=True, default=str)
    finally:
        os.close(fd)


# ---------------------------------------------------------------- report

PROMISES = [
    ("model", "Every acknowledged scan survives any sequence of scans, uploads with faults, process kills, "
              "power cuts (durable and torn), restarts, flushes from a second process, full disks and "
              "clock synchronisation; nothing is invented; nothing is stored twice as new in iFlow; "
              "once faults stop, everything drains.",
     "tests/reliability/test_model.py", "Hypothesis `RuleBasedStateMachine` over the CrashFS power-cut "
     "double, the real Recorder/Journal/Deliverer/IflowClient, and an in-process iFlow (the stand-in's "
     "store logic behind an httpx MockTransport) whose answers are drawn per request."),
    ("fault_server", "A record leaves `pending` only on iFlow's own per-record verdict; every request is "
                     "bounded in time; back-off honours Retry-After.",
     "tests/reliability/test_fault_server.py", "Uploads through the real client to the real stand-in on "
     "127.0.0.1, 30 % of requests faulted (resets before and after storing, hangs, slow and short bodies, "
     "5xx with and without Retry-After, captive-portal HTML, truncated/deep/huge-number JSON, wrong "
     "lengths, unmatched results)."),
    ("resources", "No scan is acknowledged unless it is on disk; the door signals \"could not be stored\"; "
                  "the agent recovers by itself when the disk does.",
     "tests/reliability/test_resources.py", "The real daemon on a 256 KiB tmpfs filled to ENOSPC and "
     "remounted read-only; `os.fsync` raising EIO under the in-process Recorder."),
    ("concurrency", "The daemon keeps taking scans while many `agent flush` and `agent status` run at "
                    "once; no corruption, nothing lost, duplicates only as iFlow-reported duplicates.",
     "tests/reliability/test_concurrency.py", "Real daemon on a pseudo-terminal, the stand-in injecting "
     "stored-then-dropped faults, parallel CLI processes."),
    ("soak", "Memory and open files stay flat; the backlog drains each time iFlow is back.",
     "tests/reliability/test_soak.py", "Compressed operation: a scan every few ms, iFlow up and down on a "
     "schedule, daemon restarts (SIGTERM and SIGKILL), VmRSS and /proc/PID/fd sampled."),
    ("tls", "TLS verification is always on: self-signed, wrong host name and expired certificates are "
            "refused and the records stay pending; a private CA via `ca_bundle` works.",
     "tests/reliability/test_tls.py", "trustme certificates, the stand-in serving HTTPS."),
    ("fuzz", "Every parser of outside input answers with a result or its own clear error, never a crash.",
     "tests/reliability/test_fuzz_parsers.py, fuzz/*.py", "Hypothesis in CI (config, Retry-After, journal "
     "segment files, tag formats; the frame, HID, iFlow and CrossChex parsers are fuzzed in their own "
     "test files) and atheris coverage-guided fuzzing (`scripts/fuzz`)."),
    ("isolation", "Nothing blocks a site's delivery: a record iFlow refuses as a whole is isolated and set "
                  "aside while every other scan is delivered in order, once; an outage of the whole run "
                  "(refused connections, every request 500, a database down that still answers the empty "
                  "batch) marks nothing; answers echoed as a PHP server writes them are matched without a "
                  "resend; a refused send leaves the time open to a clock correction, a send that may have "
                  "reached iFlow keeps it.",
     "tests/reliability/test_isolation.py", "The real Deliverer and IflowClient against the stand-in's "
     "Laravel-like modes on 127.0.0.1 (poison records with 500 and 422, outages, echo formats), real "
     "journals, the real Clock over injected clock sources."),
    ("https_date", "No wrong time sent, even when NTP never answers: a boot whose clock is hours off and "
                   "never synchronised holds its scans until iFlow's Date over verified TLS gives the "
                   "true time (learned by a HEAD that carries no token, before any scan is sent), then "
                   "every scan of the boot is delivered with its true local time; a plain-HTTP Date, or "
                   "one from a certificate that does not verify, is never used; NTP wins over a Date "
                   "that disagrees.",
     "tests/reliability/test_https_date.py, tests/test_https_date.py", "The real daemon under libfaketime "
     "(wall clock 3 h behind, kernel and timesyncd sources unsynchronised) on a pseudo-terminal, the "
     "stand-in iFlow over TLS from a trustme CA, unreachable while the cards are scanned, then up; "
     "delivered times compared with the true moment each card was fed."),
    ("sigkill", "Every acknowledged scan survives SIGKILL of the daemon at any instant.",
     "tests/test_daemon.py, tests/test_delivery.py", "SIGKILL loops of the daemon while scanning and of "
     "`agent flush` while delivering."),
    ("power_cut", "The journal survives a power cut at every write, fsync and rename.",
     "tests/test_journal.py", "CrashFS: a crash at every file-system operation of a mixed workload, "
     "keeping only fsynced state or tearing unsynced writes, plus 500 random crash points."),
]


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    if isinstance(v, dict):
        return ", ".join(f"{k} {_fmt(x)}" for k, x in sorted(v.items()))
    if isinstance(v, list):
        return ", ".join(_fmt(x) for x in v)
    return str(v)


def render(data: dict[str, Any], command: str, when: str, machine: str) -> str:
    out = ["# Reliability: what the agent promises and how it is proven", "",
           "<!-- generated by scripts/reliability from a real run; do not edit by hand -->", "",
           f"Last run: {when}, on {machine}.  ",
           f"Command: `{command}`", "",
           "Lengths: the normal test run (`scripts/test`) runs every test below at a short CI length. "
           "`AGENT_RELIABILITY=long` (what `scripts/reliability --long` sets) runs the long one; "
           "`AGENT_TEST_KILLS=N` sets the SIGKILL loops. `scripts/fuzz --seconds 60` runs the atheris "
           "targets.", ""]
    run = data.get("run", {})
    if run:
        out += [f"Run length: {run.get('mode', '?')}; wall time {run.get('seconds', '?')} s; "
                f"exit status {run.get('pytest_exit', '?')} (0: every test passed).", ""]
    out += ["Every figure below was measured in that run. \"Lost\", \"stored twice\" and "
            "\"wrongly marked delivered\" are asserted to be 0 by the tests: a non-zero value fails the run "
            "and no document is written.", ""]
    out += ["## Promises and tests", ""]
    for key, promise, where, how in PROMISES:
        out += [f"### {key.replace('_', ' ').capitalize()}", "", f"**Promise.** {promise}", "",
                f"**Test.** {how} (`{where}`)", ""]
        figs = data.get(key)
        if figs:
            out += ["| figure | value |", "|---|---|"]
            for k, v in sorted(figs.items()):
                out.append(f"| {k.replace('_', ' ')} | {_fmt(v)} |")
            out.append("")
        else:
            out += ["_No figures in this run._", ""]
    return "\n".join(out) + "\n"


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "render":
        with open(argv[1]) as f:
            data = json.load(f)
        command = argv[2] if len(argv) > 2 else "scripts/reliability"
        when = argv[3] if len(argv) > 3 else "unknown"
        machine = argv[4] if len(argv) > 4 else "unknown"
        sys.stdout.write(render(data, command, when, machine))
        return 0
    if len(argv) >= 3 and argv[0] == "add":  # add SECTION KEY=VALUE...
        figs: dict[str, Any] = {}
        for kv in argv[2:]:
            k, _, v = kv.partition("=")
            try:
                figs[k] = json.loads(v)
            except ValueError:
                figs[k] = v
        record(argv[1], **figs)
        return 0
    print("usage: python -m tests.reliability.figures render FIGURES.json [COMMAND WHEN MACHINE]\n"
          "       python -m tests.reliability.figures add SECTION KEY=VALUE...", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
