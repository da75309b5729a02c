"""The daemon seen through Debian's real prometheus-node-exporter: scans are
taken while iFlow goes down and comes back and the reader is unplugged and
plugged in again, and each scrape over HTTP shows it."""

from __future__ import annotations

import os
import time

from standins.iflow import IflowStandin
from tests.support.harness import Daemon, Pty, run_cli, wait_ready, write_config
from tests.support.nodeexporter import NodeExporter, parse, value

TAGS = ("0004718901", "0004718902", "0004718903", "0004718904")


def _config(tmp_path, url, port, textfile):
    return write_config(tmp_path / "c.toml", state_dir=tmp_path / "state", port=port,
                        iflow={"url": url, "access_token": "tok-node", "backoff_initial": "0.2s",
                               "backoff_max": "1s", "send_delay": 0.05, "read_timeout": 3.0},
                        extra={"time": {"trust_rtc": True},
                               "metrics": {"textfile_dir": str(textfile), "interval": "1s"}})


def pending(n):
    return lambda s: value(s, "rfid_agent_journal_records", state="pending") == n


def test_node_exporter_sees_the_daemon_through_an_outage_and_an_unplug(tmp_path):
    textfile = tmp_path / "node-exporter"
    textfile.mkdir()
    link = tmp_path / "rfid0"
    pty = Pty()
    os.symlink(pty.port, link)
    pty2 = None
    with IflowStandin(token="tok-node") as iflow, NodeExporter(textfile) as ne:
        cfg = _config(tmp_path, iflow.url, str(link), textfile)
        d = Daemon(cfg)
        try:
            wait_ready(cfg)
            s = ne.wait(lambda s: value(s, "rfid_agent_reader_up", reader="reader") == 1, what="reader up")
            assert value(s, "rfid_agent_daemon_running") == 1
            assert value(s, "rfid_agent_clock_trusted", source="rtc") == 1
            assert value(s, "rfid_agent_scans_total", reader="reader") == 0  # there from the start

            pty.send(b"\x00\xff\xfe\r\n" + b"Z" * 300 + b"\r\n")  # line noise at power-up, an overlong line
            ne.wait(lambda s: (value(s, "rfid_agent_reader_dropped_input_total", reader="reader") or 0) >= 1,
                    what="the noise counted")
            pty.send(TAGS[0].encode() + b"\r\n")
            s = ne.wait(lambda s: value(s, "rfid_agent_deliveries_total", outcome="delivered") == 1,
                        what="the first delivery")
            first_delivery = value(s, "rfid_agent_last_delivery_timestamp_seconds")
            assert first_delivery is not None and abs(first_delivery - time.time()) < 60

            iflow.mode = "down"
            for tag in TAGS[1:3]:
                pty.send(tag.encode() + b"\r\n")
            s = ne.wait(lambda s: pending(2)(s) and
                        (value(s, "rfid_agent_delivery_errors_total", kind="network") or 0) >= 1,
                        what="two pending while iFlow is down")
            assert value(s, "rfid_agent_oldest_pending_age_seconds") >= 0
            ne.wait(lambda s: value(s, "rfid_agent_oldest_pending_age_seconds") > 1, what="the backlog ageing")

            os.unlink(link)
            pty.close()  # the USB adapter is pulled
            ne.wait(lambda s: value(s, "rfid_agent_reader_up", reader="reader") == 0, what="reader down")
            pty2 = Pty()
            os.symlink(pty2.port, link)  # and plugged back in
            ne.wait(lambda s: value(s, "rfid_agent_reader_up", reader="reader") == 1, what="reader back")
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and "stored tag=" + TAGS[3] not in " ".join(d.lines):
                pty2.send(TAGS[3].encode() + b"\r\n")
                time.sleep(0.5)
            ne.wait(pending(3), what="three pending")

            iflow.mode = "up"
            s = ne.wait(lambda s: pending(0)(s) and
                        value(s, "rfid_agent_deliveries_total", outcome="delivered") == 4,
                        what="the backlog delivered", timeout=30)
            assert value(s, "rfid_agent_last_delivery_timestamp_seconds") > first_delivery
            assert value(s, "rfid_agent_oldest_pending_age_seconds") == 0
            assert value(s, "rfid_agent_journal_records", state="delivered") == 4
            assert value(s, "rfid_agent_scans_total", reader="reader") == 4
            assert value(s, "rfid_agent_delivery_backoff_seconds") == 0

            text = ne.text()
            for tag in TAGS:
                assert tag not in text  # card numbers are never in a label
            mtime = [v for (name, labels), v in parse(text).items() if name == "node_textfile_mtime_seconds"
                     and any(k == "file" and v.endswith("rfid_agent.prom") for k, v in labels)]
            assert mtime and abs(mtime[0] - time.time()) < 30

            # `agent status --prometheus` asks the daemon: the same families as its file
            r = run_cli(cfg, "status", "--prometheus")
            assert r.returncode == 0, r.stderr
            families = {k[0] for k in parse(r.stdout)}
            assert families == {k[0] for k in parse((textfile / "rfid_agent.prom").read_text())}

            d.kill()  # kill -9: the last whole file stays, nothing partial is read
            s = ne.wait(lambda s: True)
            assert value(s, "rfid_agent_daemon_running") == 1  # stale, which the rules' mtime alert sees
        finally:
            if d.proc.poll() is None:
                d.terminate()
            pty.close()
            if pty2 is not None:
                pty2.close()


def test_a_clean_stop_leaves_a_file_that_says_so(tmp_path):
    textfile = tmp_path / "node-exporter"
    textfile.mkdir()
    with IflowStandin(token="tok-node") as iflow, NodeExporter(textfile) as ne:
        cfg = _config(tmp_path, iflow.url, "/dev/null-reader", textfile)
        d = Daemon(cfg)
        try:
            wait_ready(cfg)
            ne.wait(lambda s: value(s, "rfid_agent_daemon_running") == 1, what="the daemon's file")
        finally:
            assert d.terminate() == 0
        s = ne.wait(lambda s: True)
        assert value(s, "rfid_agent_daemon_running") == 0
        assert value(s, "rfid_agent_reader_up", reader="reader") == 0
        assert not [k for k in s if k[0].startswith("rfid_agent") and k[0].endswith("_total")]


def test_held_scans_are_counted_as_they_come_and_go(tmp_path):
    """The daemon's held count (status, the metrics, the ScansHeld alert) follows
    the scans within a pass, not the uploader's once-a-minute recount."""
    (tmp_path / "boot_id").write_text("this-boot\n")
    flag = tmp_path / "synchronized"  # absent: this boot's clock never synchronised
    textfile = tmp_path / "node-exporter"
    textfile.mkdir()
    pty = Pty()
    with IflowStandin(token="tok-node") as iflow, NodeExporter(textfile) as ne:
        cfg = write_config(tmp_path / "c.toml", state_dir=tmp_path / "state", port=pty.port,
                           iflow={"url": iflow.url, "access_token": "tok-node", "send_delay": 0.05},
                           extra={"time": {"boot_id_path": str(tmp_path / "boot_id"), "timesyncd_flag": str(flag),
                                           "use_adjtimex": False, "http_date_max_error": 0},
                                  "metrics": {"textfile_dir": str(textfile), "interval": "1s"}})
        d = Daemon(cfg)
        try:
            wait_ready(cfg)
            for tag in TAGS[:2]:
                pty.send(tag.encode() + b"\r\n")
            s = ne.wait(lambda s: value(s, "rfid_agent_held_scans", reason="wait") == 2, timeout=20,
                        what="two scans held for the time")
            assert value(s, "rfid_agent_journal_records", state="pending") == 2
            flag.write_text("")  # NTP synchronises: the held scans are corrected and sent
            s = ne.wait(lambda s: pending(0)(s) and value(s, "rfid_agent_held_scans", reason="wait") == 0,
                        timeout=20, what="the held scans delivered and no longer counted")
            assert iflow.stored_count == 2
        finally:
            d.terminate()
            pty.close()
