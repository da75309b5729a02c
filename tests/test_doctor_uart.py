"""`agent doctor` checks the reader as the service's user, and the reader's tty for a console.

`reader_access.NAME`: as root, doctor judges the device for the state
directory's owner (a real user made with useradd) with the unit's groups, so a
root-only port FAILs although root itself may open it. `reader_console.NAME`:
a `console=` on a fake kernel command line, an enabled serial-getty in a fake
/etc/systemd/system or one systemd-getty-generator made in a fake
/run/systemd/generator, and a real process on the reader's pty (found in the
real /proc) each FAIL with the fix from hardware/README.md. That process has
exactly the argv systemd's serial-getty@.service gives agetty, which does not
name the tty: it is found by its stdin and controlling tty.
"""

from __future__ import annotations

import functools
import grp
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from agent.commands.doctor import console, reader_access
from agent.commands.doctor.base import Ctx
from agent.commands.doctor.readers import check_readers
from agent.config import load
from tests.support.harness import Pty, run_cli, write_config

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "hardware" / "README.md").read_text()
UNIT = (ROOT / "systemd" / "rfid-agent.service").read_text()


def checks(cfg: Path) -> dict[str, dict]:
    """The reader checks, run in this process (so the path constants can point at a fake tree)."""
    return {r.check: r.as_dict() for r in check_readers(Ctx(load(str(cfg))))}


def config(tmp_path: Path, port: str, state: Path | None = None) -> Path:
    return write_config(tmp_path / "c.toml", state_dir=state or tmp_path / "state", port=port,
                        reader={"name": "door", "protocol": "rdm6300"})


# ------------------------------------------------------------------ what doctor assumes


def test_the_unit_sets_what_doctor_assumes():
    def values(key: str) -> list[str]:
        return [v for line in re.findall(rf"^{key}=(.*)$", UNIT, re.MULTILINE) for v in line.split()]

    assert values("User") == [reader_access.UNIT_USER] and values("Group") == [reader_access.UNIT_USER]
    assert tuple(values("SupplementaryGroups")) == reader_access.UNIT_GROUPS
    classes = [v.removeprefix("char-") for v in values("DeviceAllow") if v.startswith("char-")]
    assert tuple(classes) == reader_access.UNIT_DEVICE_CLASSES


def test_the_fix_is_the_one_in_the_hardware_readme():
    steps = ["sudo raspi-config nonint do_serial_cons 1 && sudo raspi-config nonint do_serial_hw 0",
             "console=serial0,115200", "/boot/firmware/cmdline.txt", "/boot/cmdline.txt", "enable_uart=1",
             "/boot/firmware/config.txt"]
    for step in steps:
        assert step in README, step
        assert step in console.FIX_CONSOLE, step
    getty = console.FIX_GETTY.format(units="serial-getty@ttyS0.service")
    assert f"`{getty}`" in README
    for text in (f"{reader_access.RULES}".split("/")[-1], "sudo udevadm control --reload && sudo udevadm trigger",
                 "sudo usermod -aG", "sudo systemctl edit rfid-agent", "DeviceAllow=char-ttyXRUSB rw"):
        assert text in README, text


# ------------------------------------------------------------------ reader access as the service user


def _no_test_user() -> str | None:
    """Why a throwaway system user cannot be made here, or None."""
    if os.geteuid() != 0:
        return "needs root: doctor must be run as root to judge for another user, and useradd"
    if shutil.which("useradd") is None or shutil.which("userdel") is None:
        return "useradd/userdel are not installed"
    try:
        grp.getgrnam("dialout")
    except KeyError:
        return "no dialout group on this machine"
    return None


@pytest.fixture
def test_user():
    name = f"rfidt{os.getpid() % 100000}"
    subprocess.run(["useradd", "-M", "-U", "-d", "/nonexistent", "-s", "/usr/sbin/nologin", name],
                   check=True, capture_output=True)
    try:
        yield name
    finally:
        subprocess.run(["userdel", name], check=False, capture_output=True)
        subprocess.run(["groupdel", name], check=False, capture_output=True)  # in case userdel kept it


@pytest.mark.skipif(_no_test_user() is not None, reason=_no_test_user() or "")
def test_root_only_port_fails_for_the_state_owner_then_passes_in_its_group(test_user):
    import pwd

    pw = pwd.getpwnam(test_user)
    base = Path(tempfile.mkdtemp(prefix="doctor-uart-"))
    pty = Pty()
    try:
        base.chmod(0o755)
        state = base / "state"
        state.mkdir(mode=0o700)
        os.chown(state, pw.pw_uid, pw.pw_gid)
        os.chown(pty.port, 0, 0)
        os.chmod(pty.port, 0o600)
        cfg = config(base, pty.port, state)

        r = run_cli(cfg, "doctor", "--json", timeout=60)
        items = {i["check"]: i for i in json.loads(r.stdout)}
        assert r.returncode == 1, r.stdout + r.stderr
        assert items["reader.door"]["status"] == "PASS"  # root itself may open it
        acc = items["reader_access.door"]
        assert acc["status"] == "FAIL", acc
        assert pty.port in acc["detail"] and "root:root 0600" in acc["detail"], acc
        assert f"{test_user} (the owner of {state})" in acc["detail"], acc
        # the rules this machine has, or the checkout's to install (the CLI runs from this checkout)
        rules = reader_access.installed_rules() or reader_access.RULES
        assert rules in acc["fix"] and "group dialout, mode 0660" in acc["fix"], acc
        # a pty's class is not in the unit's DeviceAllow=: said with the fix
        assert "DeviceAllow=char-pts rw" in acc["fix"] and "sudo systemctl edit rfid-agent" in acc["fix"], acc
        assert items["reader_console.door"]["status"] == "PASS", items["reader_console.door"]
        assert list(items).index("reader_access.door") == list(items).index("reader.door") + 1

        # Group tty is not one the unit adds: FAIL naming usermod, PASS once the user is in it.
        os.chown(pty.port, 0, grp.getgrnam("tty").gr_gid)
        os.chmod(pty.port, 0o660)
        acc = checks(cfg)["reader_access.door"]
        assert acc["status"] == "FAIL" and "root:tty 0660" in acc["detail"], acc
        assert f"sudo usermod -aG tty {test_user}" in acc["fix"], acc

        # dialout comes from the unit's SupplementaryGroups= even before the user is in it.
        os.chown(pty.port, 0, grp.getgrnam("dialout").gr_gid)
        acc = checks(cfg)["reader_access.door"]
        assert acc["status"] == "PASS" and "root:dialout 0660" in acc["detail"], acc

        subprocess.run(["usermod", "-aG", "dialout", test_user], check=True, capture_output=True)
        r = run_cli(cfg, "doctor", "--json", timeout=60)
        acc = {i["check"]: i for i in json.loads(r.stdout)}["reader_access.door"]
        assert acc["status"] == "PASS", acc
        assert f"read/write permitted for {test_user}" in acc["detail"], acc
        assert "char-pts" in acc["detail"]  # the DeviceAllow= note stays visible on a PASS

        os.chmod(pty.port, 0o640)  # read alone is not enough
        assert checks(cfg)["reader_access.door"]["status"] == "FAIL"
    finally:
        pty.close()
        shutil.rmtree(base)


@pytest.mark.skipif(_no_test_user() is not None, reason=_no_test_user() or "")
def test_a_directory_the_user_cannot_enter_fails(test_user, tmp_path):
    import pwd

    pw = pwd.getpwnam(test_user)
    pty = Pty()
    try:
        os.chown(pty.port, 0, grp.getgrnam("dialout").gr_gid)
        os.chmod(pty.port, 0o660)
        hidden = tmp_path / "private"
        hidden.mkdir(mode=0o700)
        (hidden / "rfid0").symlink_to(pty.port)
        state = tmp_path / "state"
        state.mkdir(mode=0o700)
        os.chown(state, pw.pw_uid, pw.pw_gid)
        acc = checks(config(tmp_path, str(hidden / "rfid0"), state))["reader_access.door"]
        assert acc["status"] == "FAIL", acc
        assert "no search permission on" in acc["detail"] and test_user in acc["detail"], acc
    finally:
        pty.close()


@pytest.fixture
def denied_port():
    """A regular file only its owner may open, in a directory anyone may enter, and a
    service user that is neither its owner nor root."""
    base = Path(tempfile.mkdtemp(prefix="doctor-rules-"))
    try:
        base.chmod(0o755)
        port = base / "ttyUSB0"
        port.write_text("")
        port.chmod(0o600)
        uid = 65534 if os.getuid() != 65534 else 65533
        yield str(port), reader_access.ServiceUser("svc", uid, uid, frozenset({uid}), "a test")
    finally:
        shutil.rmtree(base)


def test_the_fix_names_the_installed_rules(denied_port, tmp_path, monkeypatch):
    port, user = denied_port
    etc, lib = tmp_path / "etc-99-rfid-agent.rules", tmp_path / "lib-99-rfid-agent.rules"
    monkeypatch.setattr(reader_access, "RULES_INSTALLED", (str(etc), str(lib)))
    lib.write_text("# the package's\n")
    acc = reader_access.check_access("reader_access.door", port, "serial", user).as_dict()
    assert acc["status"] == "FAIL" and "group dialout, mode 0660" in acc["fix"], acc
    assert f"the rules in {lib} do not match this device" in acc["fix"], acc
    assert reader_access.RULES_LOCAL in acc["fix"] and "sudo udevadm control --reload" in acc["fix"], acc
    assert reader_access.RULES not in acc["fix"] and "apt" not in acc["fix"], acc  # nothing to install
    etc.write_text("# scripts/install's, which overrides the package's\n")
    acc = reader_access.check_access("reader_access.door", port, "hid", user).as_dict()
    assert f"the rules in {etc} do not match" in acc["fix"] and "group input" in acc["fix"], acc


def test_without_installed_rules_the_fix_says_how_to_install_them(denied_port, tmp_path, monkeypatch):
    port, user = denied_port
    monkeypatch.setattr(reader_access, "RULES_INSTALLED", (str(tmp_path / "none.rules"),))
    fix = reader_access.check_access("reader_access.door", port, "serial", user).fix
    # run from this checkout
    assert f"sudo install -m 0644 {reader_access.RULES} /etc/udev/rules.d/" in fix and "apt" not in fix, fix
    # run from the package's copy of the program (here: this checkout standing in for /usr/lib/rfid-agent)
    monkeypatch.setattr(reader_access, "PACKAGE_PROGRAM", str(ROOT))
    fix = reader_access.check_access("reader_access.door", port, "serial", user).fix
    assert "sudo apt install --reinstall rfid-agent" in fix and reader_access.RULES not in fix, fix
    assert "group dialout, mode 0660" in fix and "sudo udevadm trigger" in fix, fix


def test_the_rules_constants_are_the_installs_paths():
    assert reader_access.RULES_INSTALLED[0] == "/etc/udev/rules.d/99-rfid-agent.rules"
    assert "/lib/udev/rules.d/99-rfid-agent.rules" in reader_access.RULES_INSTALLED
    assert (ROOT / reader_access.RULES).is_file()
    assert reader_access.RULES_LOCAL in README


def test_json_has_the_new_checks_for_a_present_serial_reader(tmp_path):
    pty = Pty()
    try:
        r = run_cli(config(tmp_path, pty.port), "doctor", "--json", timeout=60)
        names = [i["check"] for i in json.loads(r.stdout)]
        assert {"reader.door", "reader_access.door", "reader_console.door"} <= set(names), names
    finally:
        pty.close()


def test_classes_come_from_proc_devices(tmp_path):
    devices = tmp_path / "devices"
    devices.write_text("Character devices:\n  4 /dev/vc/0\n  4 tty\n  4 ttyS\n188 ttyUSB\n"
                       "Block devices:\n188 notachar\n")
    assert reader_access.char_classes(4, str(devices)) == ["/dev/vc/0", "tty", "ttyS"]
    assert reader_access.char_classes(188, str(devices)) == ["ttyUSB"]
    assert reader_access.char_classes(999, str(devices)) == []


# ------------------------------------------------------------------ console and getty on the tty


@pytest.fixture
def fake_os(tmp_path, monkeypatch):
    """A fake /dev with serial0 -> ttyS0, and empty kernel, boot and systemd files."""
    dev = tmp_path / "dev"
    dev.mkdir()
    (dev / "ttyS0").write_text("")
    (dev / "ttyAMA0").write_text("")
    (dev / "serial0").symlink_to("ttyS0")
    (tmp_path / "proc").mkdir()
    (tmp_path / "boot" / "firmware").mkdir(parents=True)
    (tmp_path / "systemd").mkdir()
    monkeypatch.setattr(console, "DEV", str(dev))
    monkeypatch.setattr(console, "PROC_CMDLINE", str(tmp_path / "proc" / "cmdline"))
    monkeypatch.setattr(console, "CONSOLE_ACTIVE", str(tmp_path / "proc" / "active"))
    monkeypatch.setattr(console, "SYSTEMD_SYSTEM", str(tmp_path / "systemd"))
    monkeypatch.setattr(console, "SYSTEMD_GENERATOR", str(tmp_path / "generator"))
    monkeypatch.setattr(console, "BOOT_CMDLINES", (str(tmp_path / "boot" / "firmware" / "cmdline.txt"),
                                                   str(tmp_path / "boot" / "cmdline.txt")))
    (tmp_path / "proc" / "cmdline").write_text("console=tty1 root=PARTUUID=1234-02 rootwait\n")
    return tmp_path


@pytest.mark.parametrize("arg", ["console=serial0,115200", "console=ttyS0,115200", "console=/dev/ttyS0"])
def test_kernel_console_on_the_readers_uart_fails_with_the_fix(fake_os, arg):
    cfg = config(fake_os, str(fake_os / "dev" / "serial0"))
    (fake_os / "proc" / "cmdline").write_text(f"coherent_pool=1M {arg} console=tty1 root=PARTUUID=1234-02\n")
    (fake_os / "boot" / "firmware" / "cmdline.txt").write_text(f"{arg} console=tty1 root=PARTUUID=1234-02\n")
    c = checks(cfg)["reader_console.door"]
    assert c["status"] == "FAIL", c
    assert f"has {arg}" in c["detail"] and "tty ttyS0" in c["detail"], c
    assert console.FIX_CONSOLE in c["fix"] and "hardware/README.md" in c["fix"], c
    by_hand = f"remove {arg} from {fake_os}/boot/firmware/cmdline.txt by hand"
    assert (by_hand in c["fix"]) == (arg != "console=serial0,115200"), c  # raspi-config removes serial0 only


def test_no_console_on_the_readers_uart_passes(fake_os):
    cfg = config(fake_os, str(fake_os / "dev" / "serial0"))
    (fake_os / "proc" / "cmdline").write_text("console=ttyAMA0,115200 console=tty1 -- console=ttyS0\n")
    (fake_os / "proc" / "active").write_text("tty1 ttyAMA0\n")
    c = checks(cfg)["reader_console.door"]
    assert c["status"] == "PASS" and "ttyS0" in c["detail"], c  # another UART; init's args after --


def test_an_active_console_without_console_arg_fails(fake_os):
    cfg = config(fake_os, str(fake_os / "dev" / "ttyS0"))
    (fake_os / "proc" / "active").write_text("tty1 ttyS0\n")
    c = checks(cfg)["reader_console.door"]
    assert c["status"] == "FAIL" and "lists ttyS0" in c["detail"], c


@pytest.mark.parametrize("linked", ["ttyS0", "serial0"])
def test_an_enabled_serial_getty_fails_and_the_fix_names_its_link(fake_os, linked):
    """Enabled as serial-getty@serial0.service, the link carries the alias: the fix
    must name that link, or doctor keeps failing after its own advice."""
    cfg = config(fake_os, str(fake_os / "dev" / "serial0"))
    wants = fake_os / "systemd" / "getty.target.wants"
    wants.mkdir()
    (wants / f"serial-getty@{linked}.service").symlink_to("/lib/systemd/system/serial-getty@.service")
    c = checks(cfg)["reader_console.door"]
    assert c["status"] == "FAIL" and f"serial-getty@{linked}.service enabled" in c["detail"], c
    assert f"sudo systemctl disable --now serial-getty@{linked}.service" in c["fix"], c
    other = {"ttyS0": "serial0", "serial0": "ttyS0"}[linked]
    assert f"serial-getty@{other}" not in c["fix"], c
    assert console.FIX_CONSOLE not in c["fix"]  # the kernel command line is clean


def test_a_serial_getty_made_by_the_generator_fails(fake_os):
    """systemd-getty-generator links serial-getty@ for a console= tty at every boot: only the console's fix helps."""
    cfg = config(fake_os, str(fake_os / "dev" / "serial0"))
    wants = fake_os / "generator" / "getty.target.wants"
    wants.mkdir(parents=True)
    (wants / "serial-getty@ttyAMA0.service").symlink_to("/lib/systemd/system/serial-getty@.service")
    assert checks(cfg)["reader_console.door"]["status"] == "PASS"  # another UART's
    (wants / "serial-getty@ttyS0.service").symlink_to("/lib/systemd/system/serial-getty@.service")
    c = checks(cfg)["reader_console.door"]
    assert c["status"] == "FAIL", c
    assert f"{wants}/serial-getty@ttyS0.service made by systemd-getty-generator" in c["detail"], c
    assert "ttyAMA0" not in c["detail"], c
    assert console.FIX_CONSOLE in c["fix"] and "systemctl disable" not in c["fix"], c


def fake_getty(*args: str) -> subprocess.Popen:
    """A process whose argv is ``agetty -c CODE ARGS`` (python ignores what follows -c's code).

    Returned once it has said it runs: right after exec the kernel may not have
    set up the new command line yet, so /proc/PID/cmdline could still read empty."""
    p = subprocess.Popen(["agetty", "-c", "print('up', flush=True); import time; time.sleep(120)", *args],
                         executable=sys.executable, stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stdout.readline() == "up\n"
    return p


# What systemd runs for serial-getty@.service: ExecStart=-/sbin/agetty -o '-p -- \\u' --keep-baud
# 115200,57600,38400,9600 - $TERM (systemd turns \\ into \ and $TERM into vt220), the tty given by TTYPath=.
SYSTEMD_AGETTY = ("/sbin/agetty", "-o", "-p -- \\u", "--keep-baud", "115200,57600,38400,9600", "-", "vt220")

# Run by the child: take the controlling tty if asked, then write the wanted argv
# over its own (same length, so /proc/PID/cmdline reads exactly it).
_BECOME = r"""
import fcntl, os, termios, time
if os.environ["CTTY"]:
    fd = os.open(os.environ["CTTY"], os.O_RDWR | os.O_NOCTTY)
    fcntl.ioctl(fd, termios.TIOCSCTTY, 0)
    os.close(fd)
want = bytes.fromhex(os.environ["ARGV"])
with open("/proc/self/stat", "rb") as f:
    start, end = map(int, f.read().rsplit(b")", 1)[1].split()[45:47])  # arg_start, arg_end
assert end - start == len(want), (start, end, len(want))
try:
    with open("/proc/self/mem", "r+b", buffering=0) as m:
        m.seek(start)
        m.write(want)
except OSError as e:
    print("no", e, flush=True)
else:
    print("up", flush=True)
time.sleep(120)
"""


def _spawn(stdin: int | None, ctty: str | None, argv: tuple[str, ...]) -> tuple[subprocess.Popen, str]:
    want = b"\0".join(a.encode() for a in argv) + b"\0"
    head = [argv[0], "-c", "import os;exec(os.environ['BECOME'])"]
    pad = len(want) - sum(len(a) + 1 for a in head) - 1
    assert pad >= 0, "argv too short to be written over python's"
    env = dict(os.environ, BECOME=_BECOME, ARGV=want.hex(), CTTY=ctty or "")
    p = subprocess.Popen([*head, "x" * pad], executable=sys.executable, env=env, start_new_session=True,
                         stdin=subprocess.DEVNULL if stdin is None else stdin, stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None
    return p, p.stdout.readline()


@functools.cache
def argv_unwritable() -> str | None:
    """Why this kernel does not let a process write its own argv (tried once), or None."""
    p, said = _spawn(None, None, SYSTEMD_AGETTY)
    p.kill()
    p.communicate()
    return None if said == "up\n" else f"this kernel does not let a process write its own argv: {said.strip()}"


NEEDS_ARGV = pytest.mark.skipif(argv_unwritable() is not None, reason=str(argv_unwritable()))


def systemd_getty(stdin: int | None, ctty: str | None, argv: tuple[str, ...] = SYSTEMD_AGETTY) -> subprocess.Popen:
    """A process in a session of its own whose argv is exactly ``argv``, with ``stdin``
    and the controlling tty ``ctty`` (either may be None: /dev/null, none)."""
    want = b"\0".join(a.encode() for a in argv) + b"\0"
    p, said = _spawn(stdin, ctty, argv)
    assert said == "up\n", said  # NEEDS_ARGV said this kernel allows it
    with open(f"/proc/{p.pid}/cmdline", "rb") as f:
        assert f.read() == want
    return p


def stop(p: subprocess.Popen) -> None:
    p.kill()
    p.communicate()


@NEEDS_ARGV
@pytest.mark.parametrize("on", ["stdin and controlling tty", "stdin", "controlling tty"])
def test_systemds_getty_on_the_readers_tty_fails(fake_os, monkeypatch, on):
    """serial-getty@.service's agetty: the tty is its stdin and controlling tty, its argv says only ``-``."""
    monkeypatch.setattr(console, "DEV", "/dev")  # the pty is a real tty, found in the real /proc
    pty = Pty()
    getty = systemd_getty(pty.slave if "stdin" in on else None, pty.port if "controlling" in on else None)
    try:
        c = checks(config(fake_os, pty.port))["reader_console.door"]
        assert c["status"] == "FAIL", c
        assert f"getty pid {getty.pid}: {' '.join(SYSTEMD_AGETTY)}" in c["detail"], c
        unit = pty.port.removeprefix("/dev/").replace("/", "-")
        assert f"sudo systemctl disable --now serial-getty@{unit}.service" in c["fix"], c
    finally:
        stop(getty)
        pty.close()


@NEEDS_ARGV
def test_systemds_getty_on_another_tty_passes(fake_os, monkeypatch):
    monkeypatch.setattr(console, "DEV", "/dev")
    reader, other = Pty(), Pty()
    getty = systemd_getty(other.slave, other.port)
    try:
        c = checks(config(fake_os, reader.port))["reader_console.door"]
        assert c["status"] == "PASS", c
        _, names = console.tty_names(other.port)
        found = console.getty_processes(names, os.stat(other.port).st_rdev)
        assert getty.pid in [pid for pid, _ in found], found  # the scan does see it, on its own tty
    finally:
        stop(getty)
        reader.close()
        other.close()


@pytest.mark.parametrize("form", ["name", "path"])
def test_a_getty_naming_the_readers_tty_fails(fake_os, monkeypatch, form):
    """A getty started with the tty in its argv (inittab's ``getty -L ttyS0 115200 vt100``)."""
    monkeypatch.setattr(console, "DEV", "/dev")
    pty = Pty()
    tty_name = pty.port.removeprefix("/dev/")
    arg = tty_name if form == "name" else pty.port
    getty = fake_getty("-L", arg, "115200", "vt100")
    try:
        c = checks(config(fake_os, pty.port))["reader_console.door"]
        assert c["status"] == "FAIL", c
        assert f"getty pid {getty.pid}: agetty" in c["detail"] and f"-L {arg} 115200 vt100" in c["detail"], c
    finally:
        stop(getty)
        pty.close()


def test_a_getty_naming_another_tty_passes(fake_os, monkeypatch):
    monkeypatch.setattr(console, "DEV", "/dev")
    pty = Pty()
    getty = fake_getty("115200", "ttyNOPE9", "vt220")
    try:
        c = checks(config(fake_os, pty.port))["reader_console.door"]
        assert c["status"] == "PASS", c
        assert console.getty_processes({"ttyNOPE9"})[0][0] == getty.pid  # the scan does see it
    finally:
        stop(getty)
        pty.close()
