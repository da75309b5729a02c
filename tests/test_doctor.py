"""`agent doctor`: every failing check shows its line and makes the exit status 1.

A module-wide "site" runs the real daemon on a pseudo-terminal against the
iFlow stand-in over HTTPS (a trustme CA), so each test can break exactly one
thing and see that only that check fails. The clock check may WARN here (this
machine's clock reports unsynchronised), and WARNs alone exit 0.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import socket
import ssl
import sys
import tempfile
import threading
import time
import types
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import trustme

from agent.commands import doctor
from agent.commands.doctor import readers, wiegand
from agent.config import load
from agent.fsinfo import PERSISTENT, storage_of
from agent.journal.store import Journal
from standins.iflow import IflowStandin
from standins.pn532 import Pn532Sim
from tests.support.harness import Daemon, Pty, run_cli, wait_ready, write_config

TOKEN = "s3cret-Token-4242"
# The site's state lives under the temp directory: a tmpfs on some CI machines, where
# the harness's journal.allow_volatile = true makes state_durable a WARN.
TMP_DURABLE = storage_of(tempfile.gettempdir()).kind == PERSISTENT
ALLOWED_WARN = {"clock"} | (set() if TMP_DURABLE else {"state_durable"})


def run(cfg_path: Path, capsys, *, as_json: bool = False) -> tuple[int, list[str], str]:
    rc = doctor.main(load(str(cfg_path)), argparse.Namespace(json=as_json))
    out = capsys.readouterr().out
    return rc, out.splitlines(), out


def lines_for(lines: list[str], check: str) -> list[str]:
    return [ln for ln in lines if ln.split()[1:2] == [check]]


def statuses(lines: list[str]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for ln in lines[:-1]:  # the last line is the summary
        status, check = ln.split()[:2]
        out.setdefault(status, set()).add(check)
    return out


class Site:
    """Paths and servers shared by the tests; `config()` writes a variant."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.state = root / "state"
        self.token_file = root / "token"
        self.token_file.write_text(TOKEN + "\n")
        self.token_file.chmod(0o600)
        ca = trustme.CA()
        self.ca_file = root / "ca.pem"
        ca.cert_pem.write_to_path(str(self.ca_file))
        server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
        self.standin = IflowStandin(token=TOKEN, ssl_context=server_ctx).start()
        self.pty = Pty()
        self.n = 0

    def iflow(self, **over) -> dict:
        d = {"url": self.standin.url, "access_token_file": str(self.token_file), "ca_bundle": str(self.ca_file),
             "connect_timeout": 2, "read_timeout": 3}
        d.update(over)
        return {k: v for k, v in d.items() if v is not None}

    def config(self, *, iflow: dict | None = None, reader: dict | None = None, top: dict | None = None,
               state: Path | None = None, extra: dict | None = None) -> Path:
        self.n += 1
        r = {"name": "door", "protocol": "rdm6300"}
        r.update(reader or {})
        path = write_config(self.root / f"c{self.n}.toml", state_dir=state or self.state, port=self.pty.port,
                            iflow=self.iflow() if iflow is None else iflow, reader=r, top=top, extra=extra)
        path.chmod(0o600)
        return path


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    s = Site(tmp_path_factory.mktemp("site"))
    d = Daemon(s.config())
    try:
        wait_ready(s.config())
        yield s
    finally:
        rc = d.terminate()
        s.standin.stop()
        s.pty.close()
        assert rc == 0, "".join(d.stderr)
        assert TOKEN not in "".join(d.stderr)


# ------------------------------------------------------------------ all green


def test_all_green_with_the_daemon_running_exits_zero(site):
    cfg = site.config()
    r = run_cli(cfg, "doctor", timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    st = statuses(lines)
    assert "FAIL" not in st, r.stdout
    assert st.get("WARN", set()) <= ALLOWED_WARN, r.stdout
    for check in ("config", "token", "state_dir", "state_dir_mode", "disk_space", "journal", "reader.door",
                  "gpio", "iflow_dns", "iflow_connect", "iflow_tls", "iflow_answers", "daemon", "backlog",
                  *(["state_durable"] if TMP_DURABLE else [])):
        assert lines_for(lines, check) and lines_for(lines, check)[0].startswith("PASS"), (check, r.stdout)
    assert "held by the running daemon (connected)" in lines_for(lines, "reader.door")[0]
    assert "HTTP 200" in lines_for(lines, "iflow_answers")[0]
    assert "certificate valid for 127.0.0.1" in lines_for(lines, "iflow_tls")[0]
    assert lines[-1].startswith("doctor: 0 FAIL")
    assert TOKEN not in r.stdout + r.stderr

    j = run_cli(cfg, "doctor", "--json", timeout=30)
    assert j.returncode == 0
    items = json.loads(j.stdout)
    assert [set(i) for i in items] == [{"check", "status", "detail", "fix"}] * len(items)
    assert [i["check"] for i in items][:3] == ["config", "token", "state_dir"]
    assert items[-2:][0]["check"] == "daemon" and items[-1]["check"] == "backlog"
    assert {i["status"] for i in items} <= {"PASS", "WARN"}


def test_only_warnings_exit_zero():
    warn = doctor.Result("clock", doctor.WARN, "not synchronised", "check NTP")
    ok = doctor.Result("config", doctor.PASS, "fine")
    assert doctor.exit_code([ok, warn]) == 0
    assert doctor.exit_code([ok, warn, doctor.Result("daemon", doctor.FAIL, "x", "y")]) == 1
    assert doctor.format_line(doctor.Result("daemon", doctor.FAIL, "daemon not running", "systemctl start rfid-agent")) \
        == "FAIL  daemon          daemon not running -> systemctl start rfid-agent"


# --------------------------------------------------------- one thing broken


def test_token_refused_is_the_only_failure(site, capsys):
    hits = []

    class Refuse(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            hits.append(self.path)
            body = b'{"error":"invalid access_token"}'
            self.send_response(401)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Refuse)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}/api/rfid_v2/offline_attendance/store_attendances"
        rc, lines, out = run(site.config(iflow=site.iflow(url=url, ca_bundle=None)), capsys)
    finally:
        srv.shutdown()
        srv.server_close()
    assert rc == 1
    assert statuses(lines)["FAIL"] == {"iflow_answers"}, out
    line = lines_for(lines, "iflow_answers")[0]
    assert line.startswith("FAIL") and "refused the access token (HTTP 401)" in line
    assert "settings -> rfid devices" in line
    assert len(hits) == 1 and TOKEN in hits[0] and "csv_data=%5B%5D" in hits[0]  # it was sent...
    assert TOKEN not in out  # ...and never shown
    assert lines_for(lines, "iflow_tls")[0].startswith("WARN")  # plain http


def test_iflow_unreachable_is_a_bounded_failure(site, capsys):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    url = f"https://127.0.0.1:{port}/api/rfid_v2/offline_attendance/store_attendances"
    t0 = time.monotonic()
    rc, lines, out = run(site.config(iflow=site.iflow(url=url)), capsys)
    assert time.monotonic() - t0 < 10
    assert rc == 1
    assert statuses(lines)["FAIL"] == {"iflow_connect"}, out
    line = lines_for(lines, "iflow_connect")[0]
    assert f"cannot connect to 127.0.0.1 port {port}" in line and "refused" in line.lower()
    assert not lines_for(lines, "iflow_answers")  # nothing further to try


def test_untrusted_certificate_fails_tls(site, capsys):
    rc, lines, out = run(site.config(iflow=site.iflow(ca_bundle=None)), capsys)
    assert rc == 1
    assert statuses(lines)["FAIL"] == {"iflow_tls"}, out
    assert "is not trusted" in lines_for(lines, "iflow_tls")[0]


def test_token_file_readable_by_others_fails(site, capsys):
    loose = site.root / "loose-token"
    loose.write_text(TOKEN)
    loose.chmod(0o644)
    rc, lines, out = run(site.config(iflow=site.iflow(access_token_file=str(loose))), capsys)
    assert rc == 1
    assert statuses(lines)["FAIL"] == {"token"}, out
    line = lines_for(lines, "token")[0]
    assert "readable by other users (mode 0644)" in line and f"chmod 600 {loose}" in line
    assert not [ln for ln in lines_for(lines, "config") if "WARN" in ln]  # reported once, by the token check


def test_inline_token_in_world_readable_config_fails(site, capsys):
    cfg = site.config(iflow=site.iflow(access_token_file=None, access_token=TOKEN))
    cfg.chmod(0o644)
    rc, lines, out = run(cfg, capsys)
    assert rc == 1 and statuses(lines)["FAIL"] == {"token"}, out
    assert "holds the token and is readable by all users" in lines_for(lines, "token")[0]
    cfg.chmod(0o640)
    rc, lines, out = run(cfg, capsys)
    assert rc == 0 and lines_for(lines, "token")[0].startswith("PASS"), out
    assert TOKEN not in out


def test_missing_token_file(site, capsys, tmp_path):
    tok = tmp_path / "token"
    tok.write_text(TOKEN)
    tok.chmod(0o600)
    path = site.config(iflow=site.iflow(access_token_file=str(tok)))
    cfg = load(str(path))
    tok.unlink()  # lost after the config was read (e.g. a bad deploy)
    rc = doctor.main(cfg, argparse.Namespace(json=False))
    lines = capsys.readouterr().out.splitlines()
    assert rc == 1 and statuses(lines)["FAIL"] == {"token"}
    line = lines_for(lines, "token")[0]
    assert f"cannot read the token file {tok}: No such file or directory" in line
    assert "chmod 600" in line
    # Missing from the start: the config itself does not load; one line, exit 2.
    r = run_cli(path, "doctor")
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and str(tok) in r.stderr and "cannot read" in r.stderr


def test_absent_reader_fails(site, capsys, tmp_path):
    # A second, absent reader next to the one the daemon holds.
    path = site.config(extra={})
    text = path.read_text().replace("[feedback]", f'[[reader]]\nname = "back"\nport = "{tmp_path}/ttyUSB9"\n[feedback]')
    text = text.replace("[reader]", "[[reader]]", 1)
    path.write_text(text)
    rc, lines, out = run(path, capsys)
    assert rc == 1 and statuses(lines)["FAIL"] == {"reader.back"}, out
    line = lines_for(lines, "reader.back")[0]
    assert f"serial port {tmp_path}/ttyUSB9 is not present" in line and "cable" in line
    assert "raspi-config" not in line  # not a Pi UART: the USB hint


@pytest.mark.parametrize("port", [
    pytest.param(p, marks=pytest.mark.skipif(os.path.exists(p), reason=f"{p} exists on this machine"))
    for p in ("/dev/serial9", "/dev/ttyAMA99", "/dev/ttyS99")])
def test_absent_pi_uart_gets_the_uart_fix(site, capsys, tmp_path, port):
    path = site.config(state=tmp_path / "state")
    path.write_text(path.read_text().replace(site.pty.port, port))
    rc, lines, out = run(path, capsys)
    line = lines_for(lines, "reader.door")[0]
    assert rc == 1 and line.startswith("FAIL") and f"serial port {port} is not present" in line, out
    assert readers.FIX_UART in line and "hardware/README.md, Pi UARTs" in line, out
    assert "USB adapter" not in line


def test_the_uart_fix_is_the_one_in_the_hardware_readme():
    text = (Path(__file__).resolve().parent.parent / "hardware" / "README.md").read_text()
    assert readers.FIX_UART in " ".join(text.replace("`", "").split())
    assert "\n## Pi UARTs" in text and "/usr/share/doc/rfid-agent/hardware/README.md.gz" in text
    assert "Pi UARTs" in readers.UART_README and "/usr/share/doc/rfid-agent/hardware/README.md.gz" in readers.UART_README


def test_old_backlog_warns_then_fails():
    now = datetime(2026, 1, 2, 12, 0, tzinfo=UTC)
    def snap(age: timedelta) -> dict:
        return {"pending": 7, "oldest_pending": (now - age).isoformat()}
    assert doctor.backlog_result(snap(timedelta(minutes=30)), now.timestamp()).status == doctor.PASS
    r = doctor.backlog_result(snap(timedelta(hours=2)), now.timestamp())
    assert r.status == doctor.WARN and "7 scan(s) pending" in r.detail and "2.0 h" in r.detail
    r = doctor.backlog_result(snap(timedelta(hours=25)), now.timestamp())
    assert r.status == doctor.FAIL and "25.0 h" in r.detail and "agent flush" in r.fix
    assert doctor.backlog_result({"pending": 0, "oldest_pending": None}).status == doctor.PASS


# ---------------------------------------------------------- without a daemon


def test_daemon_not_running_and_local_journal(site, capsys, tmp_path):
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    j = Journal(str(state / "journal"))
    old = (datetime.now(UTC) - timedelta(hours=30)).isoformat(timespec="microseconds")
    j.append({"tag": "1", "raw": "1", "reader": "door", "source": "reader", "captured_at": old,
              "boot_id": "b", "mono_ns": 1, "synced": True})
    j.close()
    rc, lines, out = run(site.config(state=state), capsys)
    assert rc == 1
    assert statuses(lines)["FAIL"] == {"daemon", "backlog"}, out
    assert lines_for(lines, "daemon")[0] == "FAIL  daemon          daemon not running -> systemctl start rfid-agent"
    assert "1 pending" in lines_for(lines, "journal")[0] and "no daemon running" in lines_for(lines, "journal")[0]
    assert "1 scan(s) pending" in lines_for(lines, "backlog")[0]
    assert lines_for(lines, "reader.door")[0].startswith("PASS")


def state_with_journal_file(tmp_path, name: str, text: str):
    """A state directory whose journal holds one file ``name`` with ``text``."""
    state = tmp_path / "state"
    (state / "journal").mkdir(parents=True, mode=0o700)
    state.chmod(0o700)
    (state / "journal" / name).write_text(text)
    return state


def test_quarantined_segment_fails_with_its_path(site, capsys, tmp_path):
    state = state_with_journal_file(tmp_path, "seg-00000001.json", '{"scans": {"1": {"tag": ')  # torn
    rc, lines, out = run(site.config(state=state), capsys)
    assert rc == 1
    line = lines_for(lines, "journal")[0]
    aside = next((state / "journal").glob("seg-00000001.json.corrupt-*"))
    assert line.startswith("FAIL") and str(aside) in line and "NOT delivered" in line
    # still reported on the next run, when the file was already moved aside
    rc, lines, out = run(site.config(state=state), capsys)
    assert str(aside) in lines_for(lines, "journal")[0] and lines_for(lines, "journal")[0].startswith("FAIL")


def test_unreadable_pins_file_is_a_warning_with_its_path(site, capsys, tmp_path):
    state = state_with_journal_file(tmp_path, "pins.json", '{"version": 1, "pins": ')  # torn
    rc, lines, out = run(site.config(state=state), capsys)
    line = lines_for(lines, "journal")[0]
    aside = next((state / "journal").glob("pins.json.corrupt-*"))
    assert line.startswith("WARN") and str(aside) in line and "NOT delivered" not in line


def test_state_dir_that_cannot_be_created(site, capsys, tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("not a directory")
    rc, lines, out = run(site.config(state=blocker / "state"), capsys)
    assert rc == 1
    line = lines_for(lines, "state_dir")[0]
    assert line.startswith("FAIL") and f"{blocker} is not a directory" in line
    assert "FAIL" not in lines_for(lines, "journal")[0]  # one cause, one FAIL
    # a regular file as the state directory itself
    rc, lines, out = run(site.config(state=blocker), capsys)
    assert lines_for(lines, "state_dir")[0].startswith("FAIL") and "is not a directory" in lines_for(lines, "state_dir")[0]


def test_state_dir_mode_warns(site, capsys, tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(0o755)
    rc, lines, out = run(site.config(state=state), capsys)
    line = lines_for(lines, "state_dir_mode")[0]
    assert line.startswith("WARN") and "mode 0755" in line and f"chmod 700 {state}" in line
    assert lines_for(lines, "state_dir")[0].startswith("PASS")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to hand the directory to another user")
def test_as_root_files_created_in_the_state_dir_belong_to_its_owner(site, capsys):
    base = Path(tempfile.mkdtemp(prefix="doctor-owner-"))
    try:
        base.chmod(0o755)
        state = base / "state"
        state.mkdir(mode=0o700)
        j = Journal(str(state / "journal"))
        j.append({"tag": "1", "raw": "1", "reader": "door", "source": "reader",
                  "captured_at": datetime.now(UTC).isoformat(), "boot_id": "b", "mono_ns": 1,
                  "synced": True})
        j.close()
        for p in [state, *state.rglob("*")]:
            os.chown(p, 65534, 65534)
        rc, lines, out = run(site.config(state=state), capsys)
        assert lines_for(lines, "journal")[0].startswith("PASS"), out
        assert lines_for(lines, "state_dir")[0].startswith("PASS"), out
        assert (state / "agent.lock").stat().st_uid == 65534  # the daemon's user can still lock it
        assert os.geteuid() == 0 and os.getegid() == 0
    finally:
        shutil.rmtree(base)


def test_gpio_check(site, capsys, monkeypatch, tmp_path):
    from gpiozero import Device

    path = site.config(state=tmp_path / "state")  # no daemon there: the pins themselves are set up
    path.write_text(path.read_text().replace('backend = "console"', 'backend = "gpio"\ngreen_pin = 17'))
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "no-such-factory")
    rc, lines, out = run(path, capsys)
    line = lines_for(lines, "gpio")[0]
    assert line.startswith("FAIL") and "no gpiozero pin factory works" in line
    assert "no-such-factory" in line
    # the unit already sets the factory: the fix is the OS package, or feedback without GPIO
    assert "sudo apt install python3-lgpio" in line and "GPIOZERO_PIN_FACTORY" not in line, line
    assert 'feedback.backend = "console" or "none"' in line and 'feedback.fallback = "console"' in line, line
    path.write_text(path.read_text().replace('backend = "gpio"', 'backend = "gpio"\nfallback = "console"'))
    rc, lines, out = run(path, capsys)
    line = lines_for(lines, "gpio")[0]
    assert line.startswith("WARN") and "falls back to console feedback" in line, out
    assert "sudo apt install python3-lgpio" in line and "feedback.fallback" not in line, line
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "mock")
    try:
        rc, lines, out = run(path, capsys)
    finally:
        if Device.pin_factory is not None:
            Device.pin_factory.close()
            Device.pin_factory = None
    line = lines_for(lines, "gpio")[0]
    assert line.startswith("PASS") and "MockFactory" in line and "pins green=17 set up" in line, out


def test_hid_reader_not_found_by_name(site, capsys, tmp_path):
    path = site.config(state=tmp_path / "state",
                       reader={"type": "hid", "device_name": "No Such Reader", "protocol": "line"})
    rc, lines, out = run(path, capsys)
    line = lines_for(lines, "reader.door")[0]
    assert rc == 1 and line.startswith("FAIL") and "no input device with name 'No Such Reader'" in line


def test_held_count_agrees_with_delivery_on_pinned_records(site, capsys, tmp_path):
    # A pinned record goes out with its pinned time whatever the clock says
    # (agent.delivery.backlog): doctor must not count it as held.
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    j = Journal(str(state / "journal"))
    stamp = (datetime.now(UTC) - timedelta(minutes=5)).isoformat(timespec="microseconds")
    ids = [j.append({"tag": str(i), "raw": str(i), "reader": "door", "source": "reader", "captured_at": stamp,
                     "boot_id": "an-earlier-boot", "mono_ns": 1, "synced": False}).id for i in range(2)]
    j.pin([(ids[0], "2026-01-01", "08:00:00")])
    j.close()
    unsynced = {"use_adjtimex": False, "timesyncd_flag": str(tmp_path / "no-flag")}
    rc, lines, out = run(site.config(state=state, extra={"time": unsynced}), capsys)
    line = lines_for(lines, "clock")[0]
    assert line.startswith("WARN") and "; 1 scan(s) held until the time is known" in line, out
    assert "2 pending" in lines_for(lines, "journal")[0]


# ------------------------------------------------------------ PN532 and Wiegand readers

WIEGAND_GATE = {"name": "gate", "type": "wiegand", "d0_pin": 5, "d1_pin": 6}
NO_GPIOCHIP = pytest.mark.skipif(bool(glob.glob("/dev/gpiochip*")), reason="this machine has a GPIO chip")


def gpiod_v2_importable() -> bool:
    try:
        import gpiod
    except ImportError:
        return False
    return hasattr(gpiod, "request_lines")


@NO_GPIOCHIP
def test_wiegand_reader_without_a_gpio_chip_fails_with_the_fix(site, capsys):
    rc, lines, out = run(site.config(reader=WIEGAND_GATE), capsys)  # beside the running daemon
    assert rc == 1 and statuses(lines)["FAIL"] == {"reader.gate"}, out
    line = lines_for(lines, "reader.gate")[0]
    assert "no GPIO chip: /dev/gpiochip* does not exist on this machine" in line, line
    assert wiegand.FIX_NO_CHIP in line and "--device /dev/gpiochip0" in line
    assert not lines_for(lines, "reader_access.gate") and not lines_for(lines, "reader_lines.gate")
    (liveness,) = lines_for(lines, "reader_liveness.gate")
    assert liveness.startswith("WARN") and wiegand.NO_LIVENESS in liveness and "agent probe --count 1" in liveness
    (binding,) = lines_for(lines, "reader_gpiod.gate")
    if gpiod_v2_importable():  # scripts/_env.sh installs gpiod 2.5.0 in the test venv
        assert binding.startswith("PASS") and "libgpiod v2 Python binding" in binding, binding


def test_the_no_liveness_warning_stays_whatever_else_passes(site, capsys):
    rc, lines, out = run(site.config(reader=WIEGAND_GATE), capsys)
    (liveness,) = lines_for(lines, "reader_liveness.gate")
    assert liveness.startswith("WARN") and "a dead, unpowered or unplugged reader cannot be told from a quiet door" \
        in liveness
    assert "idle level" in liveness
    assert lines_for(lines, "reader.door") == []  # only the configured readers are checked


@pytest.mark.parametrize("module, expect", [
    (None, "the gpiod Python module (libgpiod v2) is not installed"),
    ("v1", "is libgpiod v1 (1.6.3)"),
])
def test_wiegand_reader_without_the_gpiod_v2_binding_says_what_to_install(site, capsys, monkeypatch, module, expect):
    if module == "v1":
        # what Debian bookworm's python3-libgpiod 1.6 looks like: the same name, no request_lines
        module = types.ModuleType("gpiod")
        module.__version__ = "1.6.3"
        module.Chip = type("Chip", (), {})
        module.LINE_REQ_EV_BOTH_EDGES = 6
    monkeypatch.setitem(sys.modules, "gpiod", module)
    rc, lines, out = run(site.config(reader=WIEGAND_GATE), capsys)
    (binding,) = lines_for(lines, "reader_gpiod.gate")
    assert rc == 1 and binding.startswith("FAIL") and expect in binding, binding
    assert "sudo apt install python3-libgpiod" in binding and "sudo pip3 install --break-system-packages gpiod==2.5.0" in binding
    assert "bookworm" in binding


def test_pn532_reader_answers_its_firmware_version(site, capsys, tmp_path):
    with Pn532Sim(firmware=(0x32, 0x01, 0x06, 0x07)) as sim:
        path = site.config(state=tmp_path / "state", reader={"name": "nfc", "protocol": "pn532", "port": sim.port})
        assert load(str(path)).reader.baudrate == 115200
        rc, lines, out = run(path, capsys)
        commands = list(sim.commands)
    assert lines_for(lines, "reader.nfc")[0].startswith("PASS"), out
    (fw,) = lines_for(lines, "reader_pn532.nfc")
    assert fw.startswith("PASS") and f"the PN532 on {sim.port} answers: PN532 firmware 1.6" in fw, fw
    assert 0x02 in commands  # GetFirmwareVersion was asked, not assumed


def test_silent_pn532_fails_with_the_wiring_fix(site, capsys, tmp_path):
    with Pn532Sim(recover="reset") as sim:
        sim.silent_after(0)
        path = site.config(state=tmp_path / "state", reader={"name": "nfc", "protocol": "pn532", "port": sim.port})
        rc, lines, out = run(path, capsys)
    (fw,) = lines_for(lines, "reader_pn532.nfc")
    assert rc == 1 and fw.startswith("FAIL"), fw
    assert f"the PN532 on {sim.port} at 115200 baud does not answer" in fw and readers.FIX_PN532 in fw, fw


def test_pn532_is_not_asked_while_the_daemon_runs(site, capsys):
    with Pn532Sim() as sim:
        rc, lines, out = run(site.config(reader={"name": "nfc", "protocol": "pn532", "port": sim.port}), capsys)
        asked = list(sim.commands)
    (fw,) = lines_for(lines, "reader_pn532.nfc")
    assert fw.startswith("PASS") and "not asked: the running daemon has the port" in fw and "after 30 s without an answer" in fw, fw
    assert asked == []  # the port was left alone


def test_absent_pn532_port_is_reported_once(site, capsys, tmp_path):
    path = site.config(state=tmp_path / "state",
                       reader={"name": "nfc", "protocol": "pn532", "port": str(tmp_path / "ttyUSB7")})
    rc, lines, out = run(path, capsys)
    assert f"serial port {tmp_path}/ttyUSB7 is not present" in lines_for(lines, "reader.nfc")[0]
    assert lines_for(lines, "reader_pn532.nfc") == []  # no second FAIL for the same cause


@NO_GPIOCHIP
def test_a_reset_pin_the_agent_cannot_pulse_fails_now_not_when_the_chip_hangs(site, capsys, caplog, tmp_path):
    # no /dev/gpiochip*: the line cannot be found (or, without gpiod, not even looked for), and doctor says so
    with Pn532Sim() as sim:
        path = site.config(state=tmp_path / "state",
                           reader={"name": "nfc", "protocol": "pn532", "port": sim.port, "reset_pin": 23})
        with caplog.at_level("WARNING", logger="agent.reader"):
            rc, lines, out = run(path, capsys)
    (reset,) = lines_for(lines, "reader_reset.nfc")
    assert rc == 1 and reset.startswith("FAIL") and "reset_pin GPIO23 cannot be pulsed" in reset, reset
    if gpiod_v2_importable():  # scripts/_env.sh installs gpiod 2.5.0 in the test venv
        assert "no GPIO chip" in reset and wiegand.FIX_NO_CHIP in reset, reset
    else:
        assert "gpiod" in reset and "sudo apt install python3-libgpiod" in reset, reset
    assert not any("could not pulse" in m for m in caplog.messages)  # doctor asks the chip, never resets it
    assert lines_for(lines, "reader_pn532.nfc")[0].startswith("PASS"), out  # the chip itself answers


def test_a_pn532_without_reset_pin_gets_no_reset_check(site, capsys, tmp_path):
    with Pn532Sim() as sim:
        path = site.config(state=tmp_path / "state", reader={"name": "nfc", "protocol": "pn532", "port": sim.port})
        rc, lines, out = run(path, capsys)
    assert lines_for(lines, "reader_reset.nfc") == []
