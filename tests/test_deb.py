"""The Debian package: scripts/package builds it, lintian passes it, and it
installs, upgrades, is removed and purged inside a minimal Debian bookworm root
(tests/support/debroot.py) with the network off.

The package is built once per module, twice: the checkout's version and a
bumped one (the upgrade). One root goes through the whole life of the package
in file order (install, upgrade, remove, purge), as a site's Pi would.

No systemd runs in a chroot, so the root gets stand-ins for ``systemctl``,
``modprobe`` and ``udevadm`` (in /usr/sbin, first on the PATH apt gives
maintainer scripts; the real systemctl is in /usr/bin) that record each call
with the agent version whose files are on disk at that moment, and
/run/systemd/system (how the maintainer scripts tell that systemd runs). The
systemctl stand-in keeps whether the service runs in a file (start, stop,
is-active): that is how the tests see the service stopped before an upgrade
unpacks and started again after it configures, or after dpkg rolls back.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.support import debroot

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "package"
NEW = "+test1"  # appended to the checkout's version for the upgrade build
STATE = "/var/lib/rfid-agent"

pytestmark = pytest.mark.skipif(debroot.missing() is not None, reason=str(debroot.missing()))

CALLS = "var/log/standin-calls"
ACTIVE = "var/lib/systemctl-standin/rfid-agent.active"  # exists while the service "runs"
WAS_ACTIVE = "run/rfid-agent-upgrade/was-active"  # the package's own mark (prerm -> postinst)
STANDIN = f"""#!/bin/sh
# Stand-in in a chroot: records the call and the agent version on disk; as
# systemctl, keeps whether rfid-agent.service runs in /{ACTIVE}.
name=${{0##*/}}
v=$(sed -n 's/^__version__ = "\\(.*\\)"$/\\1/p' /usr/lib/rfid-agent/agent/__init__.py 2>/dev/null)
echo "$name $* [files=$v]" >> /{CALLS}
[ "$name" = systemctl ] || exit 0
case "$*" in
    --root=*) exec /usr/bin/systemctl "$@" ;;  # works on files alone (enable/preset)
    *--version*) echo "systemd 252 (252.22-1~deb12u1)"; exit 0 ;;
    *is-enabled*) echo enabled; exit 0 ;;
    *is-active*) if [ -e /{ACTIVE} ]; then exit 0; else exit 3; fi ;;
    *ActiveState*) if [ -e /{ACTIVE} ]; then cat /{ACTIVE}; else echo inactive; fi; exit 0 ;;
esac
for word in "$@"; do
    case "$word" in
        start|restart) mkdir -p "$(dirname /{ACTIVE})" && echo active > /{ACTIVE} ;;
        stop) rm -f /{ACTIVE} ;;
    esac
done
exit 0
"""

# A door as a test would set it up: console feedback, a serial reader whose
# port is missing, iFlow on a closed local port, the packaged state directory.
SAMPLE_CONFIG = f"""timezone = "Europe/Bucharest"
state_dir = "{STATE}"

[reader]
type = "serial"
port = "/dev/ttyNOSUCH"
protocol = "rdm6300"

[iflow]
url = "https://127.0.0.1:9/api/rfid_v2/offline_attendance/store_attendances"
access_token_file = "/etc/rfid-agent/token"

[feedback]
backend = "console"
"""

# Writes scans (argv[1] of them) through the installed agent's own journal
# API, as the service user, the way the recorder does; with "deliver", marks
# every pending one delivered instead.
JOURNAL = f"""
import sys
sys.path[0] = "/usr/lib/rfid-agent"
import os
from agent.journal.store import Journal
from agent.runtime.wiring import JOURNAL_DIR
j = Journal(os.path.join("{STATE}", JOURNAL_DIR))
if sys.argv[1] == "deliver":
    j.update([(r, {{"state": "delivered", "done_at": "2026-11-20T09:00:00+00:00"}}) for r in j.pending()])
else:
    for i in range(int(sys.argv[1])):
        j.append({{"tag": str(4000 + i), "raw": str(4000 + i), "reader": "reader", "source": "reader",
                  "captured_at": "2026-11-20T08:00:0%d.000000+00:00" % i, "boot_id": "external",
                  "mono_ns": 0, "synced": True}})
j.close()
"""


def code_version() -> str:
    text = (REPO / "agent" / "__init__.py").read_text()
    return re.search(r'^__version__ = "(.*)"$', text, re.MULTILINE).group(1)


def package(out: Path, *args: str) -> tuple[Path, str]:
    proc = subprocess.run([str(SCRIPT), "--out", str(out), *args], check=False, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    deb = Path(proc.stdout.strip().splitlines()[-1])
    assert deb.is_file() and deb.parent == out, proc.stdout
    return deb, proc.stderr


@pytest.fixture(scope="module")
def debs(tmp_path_factory):
    out = tmp_path_factory.mktemp("debs")
    version = code_version()
    old, lint = package(out)
    new, _ = package(out, "--version", version + NEW, "--no-lintian")
    return {"old": old, "new": new, "lint": lint, "version_after": code_version(),
            "version": version}


@pytest.fixture(scope="module")
def root(tmp_path_factory, debs):
    r = debroot.fresh_root(tmp_path_factory.mktemp("debroot"))
    for deb in (debs["old"], debs["new"]):
        (r / "tmp" / deb.name).write_bytes(deb.read_bytes())
    # The real systemctl is in /usr/bin, after /usr/sbin; the root has no modprobe or udevadm.
    assert (r / "usr/bin/systemctl").exists()
    assert not [p for p in ("usr/bin/modprobe", "usr/bin/udevadm") if (r / p).exists()]
    for name in ("systemctl", "modprobe", "udevadm"):
        stub = r / "usr/sbin" / name
        assert not stub.exists(), stub
        stub.write_text(STANDIN)
        stub.chmod(0o755)
    (r / "run/systemd/system").mkdir(parents=True, exist_ok=True)
    (r / "root/sample.toml").write_text(SAMPLE_CONFIG)
    # Enough to count the journal, whatever holds the token (as prerm counts it).
    (r / "root/count.toml").write_text(f'timezone = "UTC"\nstate_dir = "{STATE}"\n')
    return r


def run(root: Path, *cmd: str, check: bool = True, env: dict[str, str] | None = None):
    proc = debroot.run_in(root, *cmd, env=env, check=False)
    if check:
        assert proc.returncode == 0, f"{cmd}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def apt(root: Path, *args: str, env: dict[str, str] | None = None):
    return run(root, "apt-get", "-y", *args, env=env)


def calls(root: Path) -> list[str]:
    log = root / CALLS
    return log.read_text().splitlines() if log.exists() else []


def starts(log: list[str]) -> list[int]:
    return [i for i, c in enumerate(log) if re.search(r"^systemctl .*\bstart rfid-agent\.service", c)]


def stops(log: list[str]) -> list[int]:
    return [i for i, c in enumerate(log) if re.search(r"^systemctl .*\bstop rfid-agent\.service", c)]


def service(root: Path, running: bool, state: str = "active") -> None:
    """Sets the stand-in's state: the service runs (its ActiveState ``state``), or not."""
    active = root / ACTIVE
    if running:
        active.parent.mkdir(parents=True, exist_ok=True)
        active.write_text(state + "\n")
    else:
        active.unlink(missing_ok=True)


def status(root: Path) -> str:
    return run(root, "dpkg-query", "-W", "-f=${Status} ${Version}", "rfid-agent", check=False).stdout


# A full disk where dpkg writes: a tmpfs of one page, filled, over the directory
# (in the command's own mount namespace: gone when it ends).
def on_a_full_disk(directory: str, *cmd: str) -> list[str]:
    script = (f'mount -t tmpfs -o size=16k,mode=0755 tmpfs "{directory}" '
              f'&& {{ dd if=/dev/zero of="{directory}/fill" bs=4k 2>/dev/null; true; }} && exec "$@"')
    return ["sh", "-c", script, "sh", *cmd]


def journal_status(root: Path) -> dict:
    return json.loads(run(root, "agent", "--config", "/root/count.toml", "status", "--json").stdout)


def undelivered(root: Path) -> int:
    st = journal_status(root)
    return st["pending"] + st["unresolved"]


def journal(root: Path, what: str) -> None:
    run(root, "setpriv", "--reuid=rfid-agent", "--regid=rfid-agent", "--init-groups",
        "python3", "-c", JOURNAL, what)


def mode(root: Path, path: str) -> tuple[str, str, int]:
    st = run(root, "stat", "-c", "%U %G %a", path).stdout.split()
    return st[0], st[1], int(st[2], 8)


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def locked() -> set[tuple[str, str]]:
    text = (REPO / "requirements.lock").read_text()
    return {(norm(m.group(1)), m.group(2))
            for m in re.finditer(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^ ;\\]+)", text, re.MULTILINE)}


def locked_version(name: str) -> str:
    return dict(locked())[name]


def vendored(paths: set[str]) -> set[tuple[str, str]]:
    found = set()
    for path in paths:
        m = re.fullmatch(r"/usr/lib/rfid-agent/([^/]+)-([^-/]+)\.dist-info/?", path)
        if m:
            found.add((norm(m.group(1)), m.group(2)))
    return found


# ------------------------------------------------------------ build and lint


# What a build in the checkout itself would leave there.
BUILD_LEFTOVERS = ("debian/vendor", "debian/generated", "debian/rfid-agent", "debian/files",
                   "debian/.debhelper", "debian/debhelper-build-stamp", "debian/rfid-agent.service",
                   "debian/rfid-agent.udev", "debian/rfid-agent.substvars")


def test_build_leaves_the_checkout_as_it_was(debs):
    assert debs["version_after"] == debs["version"]  # the bumped build changed its copy only
    assert not (REPO / "debian/changelog").read_text().startswith(f"rfid-agent ({debs['version']}{NEW})")
    assert [p for p in BUILD_LEFTOVERS if (REPO / p).exists()] == []
    for where in (REPO, REPO.parent):
        assert not list(where.glob("rfid-agent_*")), where
    assert debs["old"].name == f"rfid-agent_{code_version()}_all.deb"
    assert debs["new"].name == f"rfid-agent_{code_version()}{NEW}_all.deb"


def test_lintian_finds_no_errors(debs):
    assert "scripts/package: lintian" in debs["lint"]
    errors = [line for line in debs["lint"].splitlines() if line.startswith("E:")]
    assert errors == []


def test_contents(debs):
    deb = debs["old"]
    listing = subprocess.run(["dpkg-deb", "--contents", str(deb)], capture_output=True,
                             text=True, check=True).stdout
    paths = {line.split()[-1].removeprefix(".") for line in listing.splitlines()}
    for want in ("/usr/bin/agent", "/usr/lib/rfid-agent/agent/commands/cli.py",
                 "/usr/lib/rfid-agent/agent/journal/store.py",
                 "/usr/lib/rfid-agent/httpx/__init__.py", "/usr/lib/rfid-agent/tinydb/__init__.py",
                 "/usr/lib/rfid-agent/serial/__init__.py", "/usr/lib/rfid-agent/gpiozero/__init__.py",
                 "/usr/lib/rfid-agent/rich/__init__.py",
                 "/lib/systemd/system/rfid-agent.service", "/lib/udev/rules.d/99-rfid-agent.rules",
                 "/usr/lib/modules-load.d/rfid-agent.conf", "/etc/rfid-agent/config.toml",
                 "/usr/share/doc/rfid-agent/README.Debian", "/usr/share/doc/rfid-agent/copyright"):
        assert want in paths, want
    # The unit's Documentation=man:agent(1): the page is part of every build.
    assert "/usr/share/man/man1/agent.1.gz" in paths
    assert "/usr/share/bash-completion/completions/agent" in paths
    # Every locked distribution but evdev, at its pinned version, whatever
    # Python built the package (the lock's markers taken for 3.11, the oldest).
    assert vendored(paths) == locked() - {("evdev", locked_version("evdev"))}
    for path in paths:
        assert not re.search(r"/(tests?|standins)/|\.pyc$|__pycache__|/evdev/|\.so$", path) \
            or path.startswith("/usr/lib/rfid-agent/certifi/tests"), path
    assert "/etc/rfid-agent/token" not in paths

    def field(name: str) -> str:
        return subprocess.run(["dpkg-deb", "-f", str(deb), name], capture_output=True,
                              text=True, check=True).stdout
    assert "python3-evdev (>= 1.6)" in field("Depends")
    assert "python3 (>= 3.11)" in field("Depends")
    assert "python3-lgpio" in field("Recommends")
    conffiles = subprocess.run(["dpkg-deb", "--ctrl-tarfile", str(deb)], capture_output=True,
                               check=True).stdout
    assert b"/etc/rfid-agent/config.toml" in subprocess.run(
        ["tar", "-xO", "./conffiles"], input=conffiles, capture_output=True, check=True).stdout


def test_unit_is_the_repositorys_with_the_packaged_execstart(debs, tmp_path):
    subprocess.run(["dpkg-deb", "-x", str(debs["old"]), str(tmp_path)], check=True)
    packaged = (tmp_path / "lib/systemd/system/rfid-agent.service").read_text().splitlines()
    repo = (REPO / "systemd/rfid-agent.service").read_text().splitlines()
    assert [x for x in packaged if x.startswith("ExecStart=")] == ["ExecStart=/usr/bin/agent run"]
    assert [x for x in packaged if not x.startswith("ExecStart=")] == \
        [x for x in repo if not x.startswith("ExecStart=")]
    assert (tmp_path / "etc/rfid-agent/config.toml").read_bytes() == \
        (REPO / "examples/site-config.toml").read_bytes()


# ------------------------------------------------------------ the life of a package


TEXTFILE = "/var/lib/prometheus/node-exporter"
ACL_HINT = f"setfacl -m u:rfid-agent:rwx {TEXTFILE}"


def test_install_offline(root, debs):
    # node_exporter came first (its textfile directory is there); no acl package yet
    (root / TEXTFILE.lstrip("/")).mkdir(parents=True)
    assert not [p for p in ("usr/bin/setfacl", "bin/setfacl") if (root / p).exists()]
    out = apt(root, "install", f"/tmp/{debs['old'].name}")
    assert ACL_HINT in out.stderr  # how to let the service write its metrics there
    assert run(root, "agent", "--version").stdout.strip() == f"agent {code_version()}"
    groups = run(root, "id", "-nG", "rfid-agent").stdout.split()
    assert set(groups) >= {"rfid-agent", "dialout", "input", "gpio"}
    assert mode(root, STATE) == ("rfid-agent", "rfid-agent", 0o700)
    assert mode(root, "/etc/rfid-agent") == ("root", "rfid-agent", 0o750)
    assert mode(root, "/etc/rfid-agent/config.toml") == ("root", "rfid-agent", 0o640)
    assert mode(root, "/etc/rfid-agent/token") == ("rfid-agent", "rfid-agent", 0o600)
    assert (root / "etc/rfid-agent/token").read_bytes() == b""
    assert (root / "etc/systemd/system/multi-user.target.wants/rfid-agent.service").is_symlink()
    # Byte-compiled for the read-only /usr of the service.
    assert list((root / "usr/lib/rfid-agent/agent/commands/__pycache__").glob("cli.cpython-*.pyc"))
    assert list((root / "usr/lib/rfid-agent/httpx/__pycache__").glob("*.pyc"))
    # The modules and udev rules applied now, as scripts/install does, for a reader already plugged in.
    log = [c.split(" [files=")[0] for c in calls(root)]
    trigger = "udevadm trigger --settle --action=change --subsystem-match=tty --subsystem-match=input"
    for want in ("modprobe -a usbserial cdc_acm", "udevadm control --reload",
                 f"{trigger} --subsystem-match=gpio"):
        assert want in log, log
    # An empty token is a config error: enabled, not started, and the site is told what to do.
    assert not starts(calls(root)) and not (root / ACTIVE).exists()
    assert "not started" in out.stderr and "/etc/rfid-agent/token" in out.stderr


def test_every_module_imports_with_bookworms_python3_evdev(root):
    """The OS's python3-evdev (1.6.1 on bookworm) with the vendored rest: every
    agent module imports, and the evdev calls the HID reader makes exist."""
    code = """
import sys, pkgutil, importlib
sys.path[0] = "/usr/lib/rfid-agent"
import agent, evdev
assert evdev.__file__.startswith("/usr/lib/python3/dist-packages/"), evdev.__file__
for m in pkgutil.walk_packages(agent.__path__, "agent."):
    if not m.name.endswith(".__main__"):  # that one runs the command line
        importlib.import_module(m.name)
from agent.reading.hid import find_input_device
for writable in (True, False):
    found = find_input_device(device_name="No Such Reader", writable=writable)
    assert found.path is None, found
for name in ("grab", "ungrab", "read", "close", "fileno"):
    assert hasattr(evdev.InputDevice, name), name
assert evdev.ecodes.EV_KEY == 1
import httpx, tinydb, serial, gpiozero, rich
for mod in (httpx, tinydb, serial, gpiozero, rich):
    assert mod.__file__.startswith("/usr/lib/rfid-agent/"), mod.__file__
print("ok")
"""
    assert run(root, "python3", "-c", code).stdout.strip() == "ok"


def test_doctor_json_with_a_sample_config(root):
    (root / "etc/rfid-agent/token").write_text("t0k3n-for-the-test\n")
    proc = run(root, "agent", "--config", "/root/sample.toml", "doctor", "--json", check=False)
    assert proc.returncode in (0, 1), proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    checks = {c["check"]: c for c in json.loads(proc.stdout)}
    assert checks["config"]["status"] == "PASS"
    assert checks["token"]["status"] == "PASS"
    assert checks["reader.reader"]["status"] in ("WARN", "FAIL")
    assert "/dev/ttyNOSUCH" in checks["reader.reader"]["detail"]
    assert "t0k3n-for-the-test" not in proc.stdout


def test_systemd_analyze_verifies_the_installed_unit(root):
    proc = run(root, "systemd-analyze", "verify", "/lib/systemd/system/rfid-agent.service",
               check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "rfid-agent.service" not in proc.stderr, proc.stderr
    # The check can fail: the same unit pointing at a program that is not there.
    broken = (root / "lib/systemd/system/rfid-agent.service").read_text().replace(
        "ExecStart=/usr/bin/agent run", "ExecStart=/usr/bin/agent-not-installed run")
    (root / "tmp/rfid-agent-broken.service").write_text(broken)
    proc = run(root, "systemd-analyze", "verify", "/tmp/rfid-agent-broken.service", check=False)
    assert proc.returncode != 0 and "agent-not-installed" in proc.stderr


def test_maintainer_scripts_refuse_a_dpkg_root(root):
    """Their paths, users and python3 are this system's: with DPKG_ROOT set
    (another root, acted on from outside) they stop before changing anything."""
    service(root, running=True)
    before = calls(root)
    for script, arg in (("postinst", "configure"), ("prerm", "upgrade"), ("postrm", "purge")):
        proc = run(root, "env", "DPKG_ROOT=/srv/other-root", "sh",
                   f"/var/lib/dpkg/info/rfid-agent.{script}", arg, check=False)
        assert proc.returncode == 1, (script, proc.stdout, proc.stderr)
        assert "DPKG_ROOT=/srv/other-root is not supported" in proc.stderr, proc.stderr
    assert calls(root) == before  # nothing stopped
    assert (root / "etc/rfid-agent/config.toml").exists()  # nothing purged
    assert not (root / WAS_ACTIVE).exists()
    service(root, running=False)


def test_upgrade_restarts_a_running_service_whatever_holds_its_token(root, debs):
    journal(root, "3")
    assert undelivered(root) == 3
    # This site keeps its token inline: the token file stays empty.
    site = root / "etc/rfid-agent/config.toml"
    edited = site.read_text().replace('timezone = "Europe/Bucharest"', 'timezone = "Europe/Berlin"') \
        .replace('access_token_file = "/etc/rfid-agent/token"', 'access_token = "t0k3n-inline"')
    assert edited != site.read_text() and "t0k3n-inline" in edited
    site.write_text(edited)
    (root / "etc/rfid-agent/token").write_bytes(b"")
    # caught starting (before READY=1, or between restarts): it counts as running
    service(root, running=True, state="activating")
    (root / CALLS).unlink(missing_ok=True)
    setfacl = root / "usr/sbin/setfacl"  # acl is installed now: the upgrade sets the entry itself
    setfacl.write_text(STANDIN)
    setfacl.chmod(0o755)

    out = apt(root, "install", f"/tmp/{debs['new'].name}")
    assert ACL_HINT not in out.stderr
    assert [c for c in calls(root) if c.startswith(f"setfacl -m u:rfid-agent:rwx {TEXTFILE} ")], calls(root)
    new = code_version() + NEW
    assert run(root, "agent", "--version").stdout.strip() == f"agent {new}"
    # The site's edit stays, without a question (the package's copy did not change).
    assert site.read_text() == edited
    assert "Configuration file" not in out.stdout + out.stderr
    assert not list((root / "etc/rfid-agent").glob("config.toml.dpkg-*"))
    assert mode(root, "/etc/rfid-agent/config.toml") == ("root", "rfid-agent", 0o640)
    assert (root / "etc/rfid-agent/token").read_bytes() == b""
    assert undelivered(root) == 3
    assert list((root / "usr/lib/rfid-agent/agent/commands/__pycache__").glob("cli.cpython-*.pyc"))
    # Stopped while the old files were there; started once the new ones are
    # configured and the rules applied; the mark consumed.
    log = calls(root)
    stop, start = stops(log), starts(log)
    assert stop and start, log
    assert log[stop[0]].endswith(f"[files={code_version()}]"), log
    assert log[start[-1]].endswith(f"[files={new}]"), log
    assert stop[0] < start[-1]
    assert max(i for i, c in enumerate(log) if c.startswith("udevadm trigger")) < start[-1], log
    assert not [c for c in log if "restart" in c], log
    assert (root / ACTIVE).exists() and not (root / WAS_ACTIVE).exists()


def test_upgrade_of_a_stopped_service_leaves_it_stopped_and_a_deleted_conffile_deleted(root, debs):
    """A non-empty token does not start what the site had stopped; a config.toml
    the admin deleted stays deleted (dpkg's rule) and the configure still succeeds."""
    (root / "etc/rfid-agent/token").write_text("t0k3n-for-the-test\n")
    site = root / "etc/rfid-agent/config.toml"
    kept = site.read_text()
    site.unlink()
    service(root, running=False)
    (root / CALLS).unlink(missing_ok=True)
    proc = run(root, "dpkg", "-i", f"/tmp/{debs['new'].name}", check=False)  # the same version again
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert status(root) == f"install ok installed {code_version()}{NEW}"
    assert not site.exists()
    assert not starts(calls(root)) and not (root / ACTIVE).exists(), calls(root)
    assert "left stopped" in proc.stderr
    assert not (root / WAS_ACTIVE).exists()
    site.write_text(kept)


def test_a_failed_unpack_brings_the_old_version_back_running(root, debs):
    """A downgrade whose unpack hits a full disk: dpkg puts the files back and
    calls postinst abort-upgrade, which compiles them again and starts the
    service prerm stopped."""
    service(root, running=True)
    (root / CALLS).unlink(missing_ok=True)
    new = code_version() + NEW
    proc = run(root, *on_a_full_disk("/usr/share/doc/rfid-agent/hardware",
                                     "dpkg", "-i", f"/tmp/{debs['old'].name}"), check=False)
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "No space left on device" in proc.stdout + proc.stderr
    assert status(root) == f"install ok installed {new}"
    assert run(root, "agent", "--version").stdout.strip() == f"agent {new}"
    assert list((root / "usr/lib/rfid-agent/agent/commands/__pycache__").glob("cli.cpython-*.pyc"))
    log = calls(root)
    stop, start = stops(log), starts(log)
    assert stop and start and stop[0] < start[-1], log
    assert log[start[-1]].endswith(f"[files={new}]"), log
    assert (root / ACTIVE).exists() and not (root / WAS_ACTIVE).exists()


def test_remove_keeps_config_and_journal(root):
    service(root, running=True)
    (root / CALLS).unlink(missing_ok=True)
    metrics = root / TEXTFILE.lstrip("/") / "rfid_agent.prom"
    metrics.write_text("rfid_agent_daemon_running 0\n")  # the last file of the service's clean stop
    (root / TEXTFILE.lstrip("/") / "node_other.prom").write_text("other 1\n")
    apt(root, "remove", "rfid-agent")
    assert not metrics.exists()  # node_exporter would report a stopped agent for ever
    assert (root / TEXTFILE.lstrip("/") / "node_other.prom").exists()
    assert not (root / "usr/bin/agent").exists()
    assert not (root / "usr/lib/rfid-agent").exists()  # the bytecode went too
    assert (root / "etc/rfid-agent/config.toml").exists()
    assert (root / "etc/rfid-agent/token").read_text() == "t0k3n-for-the-test\n"
    assert list((root / STATE.lstrip("/")).glob("*")), "journal removed"
    assert stops(calls(root)) and not starts(calls(root)), calls(root)
    assert not (root / ACTIVE).exists()
    assert (root / WAS_ACTIVE).exists()  # a reinstall before the next boot starts it again
    note = (root / STATE.lstrip("/") / "PACKAGE-REMOVED.txt").read_text()
    assert "undelivered=3" in note and "sudo RFID_AGENT_PURGE_JOURNAL=yes apt purge rfid-agent" in note
    assert mode(root, f"{STATE}/PACKAGE-REMOVED.txt") == ("root", "root", 0o600)
    assert not (root / STATE.lstrip("/") / "PACKAGE-REMOVED.txt.new").exists()


def test_purge_keeps_a_journal_with_pending_scans(root):
    out = apt(root, "purge", "rfid-agent")
    assert not (root / "etc/rfid-agent").exists()
    assert not (root / WAS_ACTIVE).exists()
    state = root / STATE.lstrip("/")
    assert state.is_dir() and [p for p in state.iterdir() if p.name != "PACKAGE-REMOVED.txt"]
    assert f"KEPT {STATE}" in out.stderr and "3 scans not delivered" in out.stderr
    assert "sudo RFID_AGENT_PURGE_JOURNAL=yes apt purge rfid-agent" in out.stderr
    assert f"sudo rm -rf {STATE}" in out.stderr


def test_remove_on_a_full_disk_succeeds_and_purge_keeps_the_journal(root, debs):
    """No temporary file (TMPDIR gone) and no room for the note: the removal
    still succeeds, says so, and purge keeps the journal as holding an unknown
    number of scans."""
    apt(root, "install", f"/tmp/{debs['new'].name}")
    proc = run(root, "env", "TMPDIR=/nonexistent",
               *on_a_full_disk(STATE, "dpkg", "--remove", "rfid-agent"), check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert status(root) == f"deinstall ok config-files {code_version()}{NEW}"
    assert "could not write" in proc.stderr and "PACKAGE-REMOVED.txt" in proc.stderr
    state = root / STATE.lstrip("/")
    assert not (state / "PACKAGE-REMOVED.txt").exists()
    out = apt(root, "purge", "rfid-agent")
    assert state.is_dir() and (state / "journal").is_dir()
    assert "KEPT" in out.stderr and "an unknown number of scans" in out.stderr, out.stderr


def test_reinstall_finds_the_journal_and_purge_with_the_override_deletes_it(root, debs):
    apt(root, "install", f"/tmp/{debs['new'].name}")
    assert not (root / STATE.lstrip("/") / "PACKAGE-REMOVED.txt").exists()
    (root / "etc/rfid-agent/token").write_text("t0k3n-for-the-test\n")
    assert undelivered(root) == 3
    out = apt(root, "purge", "rfid-agent", env={"RFID_AGENT_PURGE_JOURNAL": "yes"})
    assert not (root / STATE.lstrip("/")).exists(), out.stderr
    assert not (root / "etc/rfid-agent").exists()


def test_purge_with_nothing_undelivered_deletes_the_state(root, debs):
    apt(root, "install", f"/tmp/{debs['new'].name}")
    (root / "etc/rfid-agent/token").write_text("t0k3n-for-the-test\n")
    journal(root, "2")
    journal(root, "deliver")
    st = json.loads(run(root, "agent", "--config", "/root/sample.toml", "status", "--json").stdout)
    assert st["pending"] == 0 and st["delivered"] == 2
    out = apt(root, "purge", "rfid-agent")
    assert not (root / STATE.lstrip("/")).exists(), out.stderr
    assert "KEPT" not in out.stderr


def test_purge_keeps_a_journal_with_an_unreadable_segment(root, debs):
    """Every scan delivered, but a segment nobody can read may hold more: the
    count is unknown and purge keeps the journal."""
    apt(root, "install", f"/tmp/{debs['new'].name}")
    journal(root, "2")
    journal(root, "deliver")
    segments = root / STATE.lstrip("/") / "journal"
    (segments / "seg-00000098.json").write_text('{"_default": {"1": ')
    st = journal_status(root)
    assert st["pending"] == 0 and st["unresolved"] == 0 and st["quarantined"], st
    (segments / "seg-00000099.json").write_text("not json at all")  # one for prerm to find
    apt(root, "remove", "rfid-agent")
    note = (root / STATE.lstrip("/") / "PACKAGE-REMOVED.txt").read_text()
    assert "undelivered=unknown" in note, note
    out = apt(root, "purge", "rfid-agent")
    assert "KEPT" in out.stderr and "an unknown number of scans" in out.stderr, out.stderr
    assert len(list(segments.glob("*.corrupt-*"))) == 2
