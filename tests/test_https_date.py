"""iFlow's HTTPS Date as a second time source, through the real daemon (issue 14).

The daemon runs under libfaketime with its wall clock hours off
(tests/support/faketime.py), the kernel and timesyncd sources saying "not
synchronised" throughout (no adjtimex, a timesyncd flag that does not
exist), and the stand-in iFlow on 127.0.0.1 over TLS from a trustme CA
given as ``iflow.ca_bundle``. The stand-in runs in this process on the
real clock: its ``Date`` is the true time (``date_offset_s`` moves it to a
DST edge or makes it wrong), and ``time.time()`` here when a card is fed is
the true moment of the scan.
"""

from __future__ import annotations

import json
import re
import ssl
import time
import uuid
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
import trustme

from standins.iflow import IflowStandin
from tests.support import faketime
from tests.support.harness import Daemon, Pty, run_cli, wait_ready, write_config

TOKEN = "tok-HTTPSDATE-5c1e"
TZ = ZoneInfo("Europe/Bucharest")
BEHIND = -3 * 3600.0  # the daemon's wall clock: 3 hours behind
WAIT = 90.0  # generous: a failed time probe is retried on the delivery back-off (agent.delivery.timeprobe)

needs_faketime = pytest.mark.skipif(faketime.missing() is not None, reason=str(faketime.missing()))


# ------------------------------------------------------------------ a site


def server_ctx(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(ctx)
    return ctx


def standin_on(tmp_path, *, tls: bool = True, trusted: bool = True, **kw) -> tuple[IflowStandin, str | None]:
    """The stand-in (started) and the CA bundle to give the daemon: its own
    CA's, or with ``trusted=False`` another CA's (the certificate does not verify)."""
    if not tls:
        return IflowStandin(token=TOKEN, log_requests=True, **kw).start(), None
    ca, other = trustme.CA(), trustme.CA()
    bundle = tmp_path / "ca.pem"
    (ca if trusted else other).cert_pem.write_to_path(str(bundle))
    return IflowStandin(token=TOKEN, ssl_context=server_ctx(ca), log_requests=True, **kw).start(), str(bundle)


def site(tmp_path, standin: IflowStandin, port: str, *, ca: str | None, synced: bool = False,
         **time_keys) -> tuple:
    """Config for a site whose kernel clock says "not synchronised" (unless
    ``synced``: timesyncd's flag touched in this boot); returns (config, boot id)."""
    boot = f"boot-{uuid.uuid4()}"
    (tmp_path / "boot_id").write_text(boot + "\n")
    flag = tmp_path / "timesyncd-synchronized"
    if synced:
        flag.touch()
    iflow = {"url": standin.url, "access_token": TOKEN, "backoff_initial": 0.2, "backoff_max": 1.0,
             "send_delay": 0.05, "connect_timeout": 2.0, "read_timeout": 5.0}
    if ca is not None:
        iflow["ca_bundle"] = ca
    cfg = write_config(tmp_path / "agent.toml", state_dir=tmp_path / "state", port=port, iflow=iflow,
                       extra={"time": {"use_adjtimex": False, "timesyncd_flag": str(flag),
                                       "boot_id_path": str(tmp_path / "boot_id"), **time_keys}})
    return cfg, boot


class Door:
    """The real daemon on a pseudo-terminal reader; ``scan`` notes the true moment of each card."""

    def __init__(self, tmp_path, standin: IflowStandin, *, behind: float | None = BEHIND, ca=None,
                 **site_kw) -> None:
        self.pty = Pty()
        self.cfg, self.boot = site(tmp_path, standin, self.pty.port, ca=ca, **site_kw)
        self.state = tmp_path / "state"
        env = faketime.env(f"{behind:+.0f}s") if behind is not None else {}
        self.daemon = Daemon(self.cfg, env=env)
        self.scanned: dict[str, float] = {}  # tag -> true time.time() when fed
        wait_ready(self.cfg)
        # a card fed before the reader has opened the port could be flushed away with its input
        assert until(lambda: all(r["connected"] for r in self.status()["readers"]), 15.0), self.status()

    def scan(self, tag: str) -> None:
        self.scanned[tag] = time.time()
        self.pty.send(f"{tag}\r\n".encode())
        assert self.daemon.wait_for(lambda _: tag in self.daemon.stored(), 30.0), \
            self.daemon.lines + self.daemon.stderr

    def status(self) -> dict:
        r = run_cli(self.cfg, "status", "--json")
        assert r.returncode == 0, r.stdout + r.stderr
        return json.loads(r.stdout)

    def flush(self) -> dict:
        """One delivery pass of the daemon's own deliverer (and a fresh count of what is held)."""
        r = run_cli(self.cfg, "flush", "--json")
        assert "Traceback" not in r.stderr, r.stderr
        return json.loads(r.stdout.strip().splitlines()[-1])

    def anchors(self) -> dict[str, dict]:
        """clock.json as the daemon wrote it: boot id -> that boot's entry."""
        path = self.state / "clock.json"
        doc = json.loads(path.read_text()) if path.exists() else {"boots": []}
        return {b["boot_id"]: b for b in doc["boots"]}

    def close(self) -> str:
        if self.daemon.proc.poll() is None:
            try:
                assert self.daemon.terminate() == 0
            finally:
                self.pty.close()
        err = "".join(self.daemon.stderr)
        assert TOKEN not in err and "Traceback" not in err, err
        return err


@pytest.fixture
def closing():
    opened: list = []
    yield opened.append
    for thing in reversed(opened):
        if isinstance(thing, Door):
            thing.close()
        else:
            thing.stop()


def until(pred, timeout: float = WAIT, every: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return False
        time.sleep(every)
    return True


def local(rec: dict) -> str:
    return f"{rec['date']} {rec['time']}"


def error_s(rec: dict, true_s: float) -> float:
    """Delivered local time minus the true moment, in seconds (the fold nearest
    the truth: a local time in the repeated hour names two instants)."""
    naive = datetime.strptime(local(rec), "%Y-%m-%d %H:%M:%S")
    return min((naive.replace(tzinfo=TZ, fold=f).timestamp() - true_s for f in (0, 1)), key=abs)


def rendered(true_s: float, slack: int = 2) -> set[str]:
    """The local times (unambiguous renderings) of the instants within ``slack`` s of ``true_s``."""
    return {datetime.fromtimestamp(int(true_s) + d, TZ).strftime("%Y-%m-%d %H:%M:%S")
            for d in range(-slack, slack + 1)}


def by_tag(standin: IflowStandin) -> dict[str, dict]:
    return {s["rfidTag"]: s for s in standin.stored}


def gets(standin: IflowStandin) -> list[tuple[str, float, str]]:
    return [r for r in standin.request_log if r[0] == "GET"]


# ------------------------------------------------------------------ the tests


@needs_faketime
def test_boot_3h_behind_iflow_down_then_up_true_times(tmp_path, closing):
    standin, ca = standin_on(tmp_path)
    closing(standin)
    standin.mode = "down"
    door = Door(tmp_path, standin, ca=ca)
    closing(door)
    tags = [f"H{i}" for i in range(4)]
    for tag in tags:
        door.scan(tag)
        time.sleep(1.0)
    door.flush()  # a pass while iFlow is away: nothing sent, what is held counted
    st = door.status()
    assert st["held"] == {"wait": 4}, st
    assert st["held_detail"]["waiting_for"] == "ntp or https-date", st
    assert st["time_source"] is None and st["clock_synced"] is False, st
    assert standin.request_log == []

    standin.mode = "up"
    door.scan("H4")  # a scan after iFlow is back, too
    tags.append("H4")
    assert until(lambda: standin.stored_count == 5), (standin.request_log, door.daemon.stderr[-20:])
    got = by_tag(standin)
    errors = {t: error_s(got[t], door.scanned[t]) for t in tags}
    assert all(abs(e) <= 2.0 for e in errors.values()), errors
    assert [got[t]["date"] for t in tags] == [datetime.fromtimestamp(door.scanned[t], TZ).strftime("%Y-%m-%d")
                                              for t in tags]
    # learned before anything was sent: a HEAD without the token came first
    assert standin.head_requests >= 1
    first = standin.request_log[0]
    assert first[0] == "HEAD" and "access_token" not in first[2], standin.request_log
    st = door.status()
    assert st["time_source"] == "https-date", st
    assert st["time_error_seconds"] is not None and 0 <= st["time_error_seconds"] <= 5, st
    assert abs(st["wall_clock_error_seconds"] - BEHIND) <= 5, st
    assert st["time_confirmed_at"], st
    assert st["held"] == {} and st["pending"] == 0, st
    boot = door.anchors()[door.boot]
    assert boot["https"]["origin"] == "127.0.0.1" and boot["ntp"] is False and boot["anchors"], boot


@needs_faketime
def test_plain_http_date_is_not_believed(tmp_path, closing):
    standin, _ = standin_on(tmp_path, tls=False)
    closing(standin)
    door = Door(tmp_path, standin)
    closing(door)
    for tag in ("P0", "P1", "P2"):
        door.scan(tag)
        time.sleep(0.3)
    for _ in range(3):  # several passes of the daemon's deliverer, iFlow up throughout
        summary = door.flush()
        assert summary["by_daemon"] is True and summary.get("delivered", 0) == 0, summary
        time.sleep(0.5)
    assert standin.stored_count == 0 and standin.request_log == [], standin.request_log
    st = door.status()
    assert st["held"] == {"wait": 3}, st
    assert st["held_detail"]["waiting_for"] == "ntp", st
    assert st["time_source"] is None and st["pending"] == 3, st
    text = run_cli(door.cfg, "status").stdout
    assert "NTP" in text, text


@needs_faketime
def test_plain_http_date_with_the_lab_switch(tmp_path, closing):
    standin, _ = standin_on(tmp_path, tls=False)
    closing(standin)
    door = Door(tmp_path, standin, http_date_insecure=True)
    closing(door)
    for tag in ("L0", "L1", "L2"):
        door.scan(tag)
        time.sleep(0.5)
    assert until(lambda: standin.stored_count == 3), standin.request_log
    got = by_tag(standin)
    errors = {t: error_s(got[t], door.scanned[t]) for t in door.scanned}
    assert all(abs(e) <= 2.0 for e in errors.values()), errors
    assert standin.request_log[0][0] == "HEAD", standin.request_log
    st = door.status()
    assert st["time_source"] == "https-date" and abs(st["wall_clock_error_seconds"] - BEHIND) <= 5, st


def test_ntp_wins_over_a_date_a_minute_off_and_doctor_warns(tmp_path, closing):
    standin, ca = standin_on(tmp_path, date_offset_s=60)
    closing(standin)
    door = Door(tmp_path, standin, ca=ca, behind=None, synced=True)
    closing(door)
    for tag in ("N0", "N1"):
        door.scan(tag)
        time.sleep(0.5)
    assert until(lambda: standin.stored_count == 2), standin.request_log
    got = by_tag(standin)
    errors = {t: error_s(got[t], door.scanned[t]) for t in door.scanned}
    assert all(abs(e) <= 2.0 for e in errors.values()), errors  # the wall clock's time, not the Date's
    st = door.status()
    assert st["time_source"] == "ntp" and st["clock_synced"] is True, st
    assert st["time_disagreement_seconds"] is not None and abs(st["time_disagreement_seconds"] - 60) <= 3, st
    assert st["time_disagreement_at"], st
    assert standin.head_requests == 0  # a synchronised clock needs no probe
    r = run_cli(door.cfg, "doctor")
    warn = [ln for ln in r.stdout.splitlines() if ln.startswith("WARN") and "clock" in ln]
    assert any(re.search(r"differs from NTP by \+(59|60)\.\d s", ln) and "NTP wins" in ln for ln in warn), r.stdout


@needs_faketime
def test_a_date_from_a_certificate_that_does_not_verify_is_never_used(tmp_path, closing):
    standin, ca = standin_on(tmp_path, trusted=False, date_offset_s=-86400 * 30)
    closing(standin)
    door = Door(tmp_path, standin, ca=ca)
    closing(door)
    door.scan("X0")
    for _ in range(2):
        door.flush()
        time.sleep(0.3)
    assert standin.stored_count == 0 and standin.request_log == []
    boot = door.anchors()[door.boot]  # registered, and nothing learned
    assert boot["https"] is None and boot["anchors"] == [] and boot["disagree"] is None, boot
    st = door.status()
    assert st["time_source"] is None and st["wall_clock_error_seconds"] is None, st
    assert st["held"] == {"wait": 1} and st["pending"] == 1, st
    err = door.close()
    assert "CERTIFICATE_VERIFY_FAILED" in err or "certificate verify failed" in err, err


# DST in Europe/Bucharest: the true time (the stand-in's Date) just before a
# change, the daemon's wall clock hours off and never synchronised.
EDGES = {
    # October: 04:00 EEST becomes 03:00 EET (the hour 03:00-03:59 is repeated)
    "october": datetime(2027, 10, 31, 1, 0, tzinfo=UTC),
    # March: 03:00 EET becomes 04:00 EEST (03:00-03:59 does not exist)
    "march": datetime(2027, 3, 28, 1, 0, tzinfo=UTC),
}


@needs_faketime
@pytest.mark.parametrize("edge", list(EDGES))
def test_dst_edges_through_the_https_date(tmp_path, closing, edge):
    change = EDGES[edge].timestamp()
    start = change - 3.5  # the true time at the first scan
    offset = start - time.time() - 12.0  # the daemon is ready in under 12 s: then wait for `start`
    standin, ca = standin_on(tmp_path, date_offset_s=offset)
    closing(standin)
    door = Door(tmp_path, standin, ca=ca)
    closing(door)
    assert time.time() + offset < start, "the daemon took too long to start"
    time.sleep(start - (time.time() + offset))
    tags = [f"D{i}" for i in range(7)]
    for tag in tags:
        door.scan(tag)
        time.sleep(max(0.0, start + 1.0 * (len(door.scanned)) - (time.time() + offset)))
    true = {t: door.scanned[t] + offset for t in tags}
    assert until(lambda: standin.stored_count == len(tags)), standin.request_log
    got = by_tag(standin)
    for t in tags:
        assert local(got[t]) in rendered(true[t]), (t, local(got[t]), datetime.fromtimestamp(true[t], TZ))
    before = [t for t in tags if true[t] < change - 1]
    after = [t for t in tags if true[t] > change + 1]
    assert before and after
    day = EDGES[edge].strftime("%Y-%m-%d")
    if edge == "october":
        assert all(local(got[t]).startswith(f"{day} 03:59:5") for t in before), got
        assert all(local(got[t]).startswith(f"{day} 03:00:0") for t in after), got
    else:
        assert all(local(got[t]).startswith(f"{day} 02:59:5") for t in before), got
        assert all(local(got[t]).startswith(f"{day} 04:00:0") for t in after), got
        assert not any(got[t]["time"].startswith("03:") for t in tags), got
    assert door.status()["time_source"] == "https-date"
