"""The real daemon taking scans while many `agent flush` and `agent status` run at once.

No corruption (every segment opens), nothing lost (every acknowledged scan is
in the journal and, at the end, in iFlow), and duplicates only as iFlow-reported
duplicates (never a second "new" attendance).
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections import Counter

import pytest

from agent.journal.store import Journal
from standins.iflow import IflowStandin
from tests.reliability.figures import record
from tests.support.harness import AGENT, Daemon, Pty, run_cli, wait_ready, write_config

TOKEN = "tok-CONC-31337"


def config(tmp_path, url, port, **iflow):
    ic = {"url": url, "access_token": TOKEN, "client_version": "1.0", "backoff_initial": "0.2s",
          "backoff_max": "1s", "read_timeout": 2.0, "send_delay": 0.05, "max_url_bytes": 1500}
    ic.update(iflow)
    return write_config(tmp_path / "c.toml", state_dir=tmp_path / "state", port=port, iflow=ic,
                        extra={"time": {"trust_rtc": True}})


@pytest.mark.slow
def test_daemon_with_parallel_flush_and_status(tmp_path):
    # The size in every run (only the soak and fuzzing are shortened in CI).
    seconds = 30
    workers = 20
    pty = Pty()
    with IflowStandin(token=TOKEN) as standin:
        cfg = config(tmp_path, standin.url, pty.port)
        d = Daemon(cfg)
        stop = threading.Event()
        rcs: Counter = Counter()
        problems: list[str] = []
        runs = Counter()
        try:
            wait_ready(cfg)

            def feeder():
                i = 0
                while not stop.is_set():
                    pty.send(f"P{i:06d}\r\n".encode())
                    i += 1
                    time.sleep(0.01)

            def faults():  # iFlow stores, then the answer is lost: resends become duplicates
                while not stop.wait(0.7):
                    standin.faults.append("reset_after_store")

            def worker(k: int):
                cmd = "flush" if k % 2 == 0 else "status"
                while not stop.is_set():
                    p = subprocess.run(AGENT + ["--config", str(cfg), cmd, "--json"], capture_output=True,
                                       text=True, timeout=60)
                    rcs[(cmd, p.returncode)] += 1
                    runs[cmd] += 1
                    if "Traceback" in p.stderr or TOKEN in p.stdout + p.stderr:
                        problems.append(f"{cmd}: {p.stderr[-500:]}")
                    if cmd == "status" and p.returncode == 0:
                        st = json.loads(p.stdout)
                        if not isinstance(st.get("pending"), int):
                            problems.append(f"bad status {st}")

            threads = [threading.Thread(target=feeder, daemon=True), threading.Thread(target=faults, daemon=True)]
            threads += [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(workers)]
            for t in threads:
                t.start()
            time.sleep(seconds)
            stop.set()
            for t in threads:
                t.join(90)
            standin.faults.clear()
            time.sleep(0.3)
            r = run_cli(cfg, "flush", "--json")
            assert r.returncode == 0, r.stdout + r.stderr
            acked = set(d.stored())
            assert d.terminate() == 0
        finally:
            stop.set()
            if d.proc.poll() is None:
                d.kill()
            pty.close()
        assert not problems, problems[:3]
        # flush exits 1 only when iFlow failed mid-way (the injected faults); never 2 or a crash
        assert set(rc for _, rc in rcs) <= {0, 1}, rcs
        j = Journal(str(tmp_path / "state" / "journal"))
        recs = list(j.records())
        assert not j.quarantined
        j.close()
        tags = Counter(r.tag for r in recs)
        assert max(tags.values()) == 1, "a scan is in the journal twice"
        assert acked <= set(tags), f"lost: {sorted(acked - set(tags))[:5]}"
        states = Counter(r.state for r in recs)
        assert states["pending"] == 0 and set(states) <= {"delivered", "duplicate"}, states
        stored = Counter(s["rfidTag"] for s in standin.stored)
        assert max(stored.values()) == 1, "stored twice as new in iFlow"
        assert set(tags) <= set(stored)
        record("concurrency", seconds=seconds, parallel_commands=workers, flush_runs=runs["flush"],
               status_runs=runs["status"], exit_codes={f"{c} {rc}": n for (c, rc), n in rcs.items()},
               scans_acknowledged=len(acked), lost=0, corrupt_segments=0, stored_twice_as_new=0,
               duplicates_reported_by_iflow=states["duplicate"], requests=standin.requests)
