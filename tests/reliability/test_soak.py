"""Soak: compressed operation with iFlow coming and going and the daemon restarting.

A scan every few milliseconds; iFlow up and down on a schedule; the daemon
stopped (SIGTERM or SIGKILL) and restarted periodically. Within each life,
memory (VmRSS) and open file descriptors stay flat; each time iFlow is up the
backlog drains; at the end every acknowledged scan is in iFlow exactly once.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter

import pytest

from standins.iflow import IflowStandin
from tests.reliability.figures import record, scale
from tests.reliability.test_concurrency import TOKEN, config
from tests.support.harness import Daemon, Pty, run_cli, wait_ready

RSS_TOLERANCE_KIB = 4096
FD_TOLERANCE = 2


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def pending(cfg) -> int:
    r = run_cli(cfg, "status", "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["pending"]


@pytest.mark.slow
def test_soak_memory_fds_flat_and_backlog_drains(tmp_path):
    total = scale(60, 600)
    lives = scale(3, 10)
    phase = 5.0  # iFlow up / down every few seconds
    pty = Pty()
    acked: set[str] = set()
    samples = []
    drains = []
    stop = threading.Event()
    sent = Counter()

    def feeder():
        i = 0
        while not stop.is_set():
            try:
                pty.send(f"Z{i:07d}\r\n".encode())
            except OSError:
                pass
            i += 1
            sent["scans"] = i
            time.sleep(0.02)

    with IflowStandin(token=TOKEN) as standin:
        cfg = config(tmp_path, standin.url, pty.port, max_url_bytes=7000)
        feed = threading.Thread(target=feeder, daemon=True)
        try:
            for life in range(lives):
                d = Daemon(cfg)
                wait_ready(cfg)
                if life == 0:
                    feed.start()
                t_end = time.monotonic() + total / lives
                time.sleep(2.0)  # warm-up: imports, first connection, caches
                start = (rss_kib(d.proc.pid), fds(d.proc.pid))
                while time.monotonic() < t_end:
                    standin.mode = "down"
                    time.sleep(min(phase, max(0.0, t_end - time.monotonic())))
                    backlog = pending(cfg)
                    standin.mode = "up"
                    time.sleep(min(phase, max(0.5, t_end - time.monotonic())))
                    after = pending(cfg)
                    drains.append((backlog, after))
                end = (rss_kib(d.proc.pid), fds(d.proc.pid))
                samples.append({"life": life, "rss_start_kib": start[0], "rss_end_kib": end[0],
                                "fds_start": start[1], "fds_end": end[1]})
                if life % 2:
                    d.kill()
                else:
                    assert d.terminate() == 0
                acked.update(d.stored())
                assert "Traceback" not in "".join(d.stderr)
            stop.set()
            feed.join(5)
            d = Daemon(cfg)  # the last life: drain everything
            wait_ready(cfg)
            deadline = time.monotonic() + 60
            while pending(cfg) and time.monotonic() < deadline:
                time.sleep(0.5)
            assert pending(cfg) == 0
            assert d.terminate() == 0
        finally:
            stop.set()
            pty.close()
        stored = Counter(s["rfidTag"] for s in standin.stored)
    lost = acked - set(stored)
    assert not lost, f"lost {len(lost)}: {sorted(lost)[:5]}"
    assert max(stored.values()) == 1, "stored twice as new in iFlow"
    for s in samples:
        assert s["rss_end_kib"] - s["rss_start_kib"] <= RSS_TOLERANCE_KIB, samples
        assert s["fds_end"] - s["fds_start"] <= FD_TOLERANCE, samples
    # each time iFlow was up, the backlog came down to what the last moments brought
    assert drains and all(after <= max(60, backlog // 5) for backlog, after in drains), drains
    record("soak", seconds=total, daemon_lives=lives, restarts=f"{lives} ({lives // 2} by SIGKILL)",
           scans_acknowledged=len(acked), lost=len(lost), stored_twice_as_new=0,
           rss_kib_start_end=[(s["rss_start_kib"], s["rss_end_kib"]) for s in samples],
           fds_start_end=[(s["fds_start"], s["fds_end"]) for s in samples],
           backlog_before_after_each_up_phase=drains, iflow_up_down_phase_s=phase,
           rss_tolerance_kib=RSS_TOLERANCE_KIB, fd_tolerance=FD_TOLERANCE)
