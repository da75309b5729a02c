"""The metrics text (promtool's own checks), the textfile writer, and what a
kill -9 in the middle of a write leaves for Debian's real node_exporter."""

from __future__ import annotations

import logging
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from agent.config import from_dict
from agent.errors import ConfigError
from agent.metrics.exposition import FILE_NAME, METRICS, render
from agent.metrics.textfile import TextfileWriter, remove_stale, tmp_name, write_atomic
from tests.support.harness import run_cli, write_config
from tests.support.nodeexporter import PROMTOOL, NodeExporter, need, parse, value

NOW = 1_796_112_000.0  # 2026-12-01 08:00 UTC

DAEMON_ANSWER = {
    "daemon": True, "version": "9.9.9", "pid": 4242, "started_at": "2026-12-01T06:00:00.000000+00:00",
    "pending": 3, "delivered": 10, "duplicate": 2, "rejected": 1, "failed": 1, "unresolved": 2,
    "quarantined": ["/var/lib/rfid-agent/journal/seg-0007.json.corrupt"],
    "oldest_pending": "2026-12-01T07:00:00+00:00", "last_delivery": "2026-12-01T07:30:00.5+00:00",
    "deliveries": {"delivered": 8, "duplicate": 2, "rejected": 1, "failed": 1},
    "delivery_errors": {"network": 4, "timeout": 1, "http": 0, "auth": 0, "too_long": 0,
                        "bad_answer": 0, "unmatched": 0},
    "backoff_seconds": 12.5, "auth_refused": False, "held": {"wait": 2},
    "readers": [{"name": "door", "connected": True, "error": None, "dropped": 7},
                {"name": 'side "B" \\ 2\nnd', "connected": False, "error": "port gone", "dropped": 0}],
    "scans_by_reader": {"door": {"stored": 14, "already": 3, "error": 0, "invalid": 1},
                        'side "B" \\ 2\nnd': {"stored": 1, "already": 0, "error": 1, "invalid": 0}},
    "time_source": "ntp", "disk_free_bytes": 123_456_789, "disk_size_bytes": 7_000_000_000,
    "last_error": "cannot connect to iflow.example: card 0012345678 refused",
}


def promtool_check(text: str) -> subprocess.CompletedProcess:
    return subprocess.run([need(PROMTOOL, "prometheus"), "check", "metrics"], input=text,
                          capture_output=True, text=True, timeout=60)


def test_daemon_metrics_pass_promtool_and_say_what_the_answer_says():
    text = render(DAEMON_ANSWER, NOW, "0.0.0")
    r = promtool_check(text)
    assert r.returncode == 0 and not r.stdout.strip() and not r.stderr.strip(), r.stdout + r.stderr
    s = parse(text)
    assert value(s, "rfid_agent_build_info", version="9.9.9") == 1
    assert value(s, "rfid_agent_daemon_running") == 1
    assert value(s, "rfid_agent_start_time_seconds") == 1_796_104_800.0
    # the journal's states are disjoint: delivered does not count the duplicates twice
    assert {st: value(s, "rfid_agent_journal_records", state=st)
            for st in ("pending", "delivered", "duplicate", "rejected", "failed")} == \
        {"pending": 3, "delivered": 8, "duplicate": 2, "rejected": 1, "failed": 1}
    assert value(s, "rfid_agent_journal_unresolved_records") == 2
    assert value(s, "rfid_agent_journal_quarantined_files") == 1
    assert value(s, "rfid_agent_oldest_pending_age_seconds") == 3600
    assert value(s, "rfid_agent_last_delivery_timestamp_seconds") == 1_796_110_200.5
    assert value(s, "rfid_agent_deliveries_total", outcome="delivered") == 8
    assert value(s, "rfid_agent_delivery_errors_total", kind="network") == 4
    assert value(s, "rfid_agent_delivery_backoff_seconds") == 12.5
    assert value(s, "rfid_agent_iflow_token_refused") == 0
    odd = 'side "B" \\ 2\nnd'  # escaped in the text, the same name when parsed back
    assert value(s, "rfid_agent_reader_up", reader="door") == 1
    assert ("rfid_agent_reader_up", frozenset({("reader", 'side \\"B\\" \\\\ 2\\nnd')})) in s
    assert value(s, "rfid_agent_scans_total", reader="door") == 14
    assert value(s, "rfid_agent_reader_dropped_input_total", reader="door") == 7
    assert value(s, "rfid_agent_scans_not_recorded_total", reader="door", reason="repeat") == 3
    assert value(s, "rfid_agent_scans_not_recorded_total", reader="door", reason="invalid") == 1
    assert odd not in text
    assert value(s, "rfid_agent_clock_trusted", source="ntp") == 1
    assert {r: value(s, "rfid_agent_held_scans", reason=r)
            for r in ("held_unsynced", "held_insane", "wait", "invalid")} == \
        {"held_unsynced": 0, "held_insane": 0, "wait": 2, "invalid": 0}
    assert value(s, "rfid_agent_disk_free_bytes") == 123_456_789
    assert "0012345678" not in text  # a server's words never reach a label


def test_every_family_is_documented_and_no_sample_has_a_timestamp():
    text = render(DAEMON_ANSWER, NOW, "0.0.0")
    written = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")}
    assert written == {name for name, _, _ in METRICS}  # the daemon's answer has them all
    for line in text.splitlines():
        if not line.startswith("#"):
            after_labels = line.rsplit("}", 1)[-1] if "{" in line else line.split(None, 1)[1]
            assert len(after_labels.split()) == 1, line  # the value alone: no timestamp


def test_without_a_daemon_there_are_no_counters_and_the_clock_is_told():
    st = {"daemon": False, "pending": 0, "delivered": 0, "duplicate": 0, "rejected": 0,
          "oldest_pending": None, "readers": [], "time_source": None, "held": {}}
    text = render(st, NOW, "1.2.3")
    assert promtool_check(text).returncode == 0
    s = parse(text)
    assert value(s, "rfid_agent_daemon_running") == 0
    assert value(s, "rfid_agent_build_info", version="1.2.3") == 1
    assert value(s, "rfid_agent_clock_trusted", source="none") == 0
    assert not any(name.endswith("_total") for name, _ in s)
    assert "rfid_agent_last_delivery_timestamp_seconds" not in text  # unknown, not 1970


def test_the_readme_table_lists_every_metric():
    readme = open(os.path.join(os.path.dirname(__file__), "..", "README.md"), encoding="utf-8").read()
    for name, kind, _ in METRICS:
        assert f"`{name}`" in readme, name


# ------------------------------------------------------------------ config


def _cfg(**metrics):
    return from_dict({"timezone": "UTC", "metrics": metrics})


def test_metrics_config_keys():
    cfg = _cfg()
    assert cfg.metrics.textfile_dir == "/var/lib/prometheus/node-exporter" and cfg.metrics.interval == 15
    assert _cfg(textfile_dir="", interval="1m").metrics == ("", 60.0)
    for bad, words in (({"textfile_dir": "node-exporter"}, "absolute path"), ({"interval": 0.5}, "between"),
                       ({"interval": "3m"}, "between"), ({"intervall": 3}, "unknown key")):
        with pytest.raises(ConfigError, match=words):
            _cfg(**bad)


# ------------------------------------------------------------------ writer


class Ticks:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_writer_waits_for_its_directory_then_writes_on_interval_and_on_change(tmp_path, caplog):
    caplog.set_level(logging.INFO, "agent.metrics")
    d = tmp_path / "textfile"
    clock, fp, n = Ticks(), [0], [0]

    def text():
        n[0] += 1
        return f"# TYPE x gauge\nx {n[0]}\n"

    w = TextfileWriter(str(d), 15.0, text, lambda: fp[0], monotonic=clock)
    assert not w.tick() and not w.tick(force=True)
    assert sum("does not exist" in r.message for r in caplog.records) == 1  # said once
    d.mkdir()
    clock.t += 15
    assert w.tick()
    assert (d / FILE_NAME).read_text() == "# TYPE x gauge\nx 1\n"
    assert (d / FILE_NAME).stat().st_mode & 0o777 == 0o644  # node_exporter runs as another user
    clock.t += 5
    assert not w.tick()  # nothing changed, not due
    fp[0] = 1
    assert w.tick()  # a change that matters: now
    clock.t += 15
    assert w.tick()
    assert (d / FILE_NAME).read_text().endswith("x 3\n")
    assert os.listdir(d) == [FILE_NAME]


def test_a_write_that_fails_is_logged_once_and_never_raised(tmp_path, caplog):
    (tmp_path / tmp_name(os.getpid())).mkdir()  # the temp file cannot be created
    clock = Ticks()
    w = TextfileWriter(str(tmp_path), 1.0, lambda: "x 1\n", lambda: 0, monotonic=clock)
    for _ in range(5):
        clock.t += 2
        assert not w.tick()
    assert sum("cannot write" in r.message for r in caplog.records) == 1
    assert not (tmp_path / FILE_NAME).exists()


# ------------------------------------------------- kill -9 during a write

_WRITER = textwrap.dedent("""
    import sys
    from agent.metrics.textfile import write_atomic
    head = ["# HELP big_metric A family large enough that a write takes a while.",
            "# TYPE big_metric gauge"]
    # Built once: the loop is (almost) only writes, so a kill lands in one.
    texts = ["\\n".join(head + [f'big_metric{{i="{i}"}} {n}' for i in range(50000)] + ["complete 1", ""])
             for n in (1, 2)]
    n = 0
    while True:
        n += 1
        write_atomic(sys.argv[1], texts[n % 2])
        if n == 1:
            print("first", flush=True)
""")


def _scraper(ne: NodeExporter, stop: threading.Event, seen: list) -> None:
    while not stop.is_set():
        lines = ne.text().splitlines()  # the two lines only: parsing 50,000 would slow the scrapes
        err = [float(ln.split()[1]) for ln in lines if ln.startswith("node_textfile_scrape_error ")]
        done = [float(ln.split()[1]) for ln in lines if ln.startswith("complete ")]
        seen.append((err[0] if err else None, done[0] if done else None))


def test_kill_9_during_metrics_writes_never_gives_node_exporter_a_partial_file(tmp_path):
    d = tmp_path / "textfile"
    d.mkdir()
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    rng = random.Random(17)
    seen: list = []
    stop = threading.Event()
    kills = torn = 0
    with NodeExporter(d) as ne:
        t = threading.Thread(target=_scraper, args=(ne, stop, seen), daemon=True)
        t.start()
        try:
            for _ in range(30):
                p = subprocess.Popen([sys.executable, "-c", _WRITER, str(d)], stdout=subprocess.PIPE, env=env)
                assert p.stdout.readline() == b"first\n"
                time.sleep(rng.uniform(0.0, 0.15))
                p.send_signal(signal.SIGKILL)
                p.wait(10)
                kills += 1
                torn += (d / tmp_name(p.pid)).exists()  # killed with a write half done
                text = (d / FILE_NAME).read_text()
                assert text.endswith("complete 1\n")  # what is in place is always whole
        finally:
            stop.set()
            t.join(30)
    assert remove_stale(str(d)) == torn  # what the next writer clears
    assert os.listdir(d) == [FILE_NAME]
    print(f"{kills} kills, {torn} of them during a write; {len(seen)} scrapes, none with an error")
    assert torn >= 5, f"only {torn} of {kills} kills landed during a write"
    assert all(err == 0 for err, _ in seen), seen[:5]
    since_first = seen[[done for _, done in seen].index(1):]  # before the first write: no file yet
    assert len(since_first) >= 5
    assert all(done == 1 for _, done in since_first)  # never gone, never cut


def test_the_same_scrapes_do_see_a_file_written_in_place(tmp_path):
    """The check above can fail: a writer that rewrites the file in place is
    caught half way by node_exporter (a scrape error)."""
    d = tmp_path / "textfile"
    d.mkdir()
    body = "# TYPE big_metric gauge\n" + "".join(f'big_metric{{i="{i}"}} 1\n' for i in range(20000))
    errors = 0
    with NodeExporter(d) as ne:
        stop = threading.Event()

        def naive():
            while not stop.is_set():
                with open(d / FILE_NAME, "w") as f:
                    for i in range(0, len(body), 4096):
                        f.write(body[i:i + 4096])
                        f.flush()

        t = threading.Thread(target=naive, daemon=True)
        t.start()
        try:
            for _ in range(200):
                if value(ne.scrape(), "node_textfile_scrape_error") == 1:
                    errors += 1
                    if errors >= 3:
                        break
        finally:
            stop.set()
            t.join(10)
    assert errors >= 3


# ------------------------------------------------------ status --prometheus


def test_status_prometheus_without_a_daemon(tmp_path):
    cfg = write_config(tmp_path / "c.toml", state_dir=tmp_path / "state",
                       iflow={"url": "http://127.0.0.1:9/api", "access_token": "t"})
    r = run_cli(cfg, "status", "--prometheus")
    assert r.returncode == 0, r.stderr
    assert promtool_check(r.stdout).returncode == 0
    s = parse(r.stdout)
    assert value(s, "rfid_agent_daemon_running") == 0
    assert value(s, "rfid_agent_journal_records", state="pending") == 0
    r = run_cli(cfg, "status", "--prometheus", "--json")
    assert r.returncode == 2 and "not allowed with" in r.stderr


def test_write_atomic_replaces_whole(tmp_path):
    write_atomic(str(tmp_path), "a 1\n")
    write_atomic(str(tmp_path), "a 2\n")
    assert (tmp_path / FILE_NAME).read_text() == "a 2\n"
    assert sorted(os.listdir(tmp_path)) == [FILE_NAME]
