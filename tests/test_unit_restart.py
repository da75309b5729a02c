"""The unit does not restart on exit 2 (a config error), and does restart on exit 1:
a real systemd, running the real `agent run` under the unit's own restart policy.

PID 1 here need not be systemd: the test starts a private systemd *user*
manager (``systemd --user``: the same service state machine as PID 1's) inside
new mount, PID and cgroup namespaces, with its own /run and its own view of
the cgroup file system, in a cgroup made for the test. The manager can then
move only its own processes (a manager started in the root cgroup moves every
process there into its init.scope), and everything it started dies with the
PID namespace. The cgroup is removed afterwards.

The units carry the restart lines of systemd/rfid-agent.service word for word
(Restart*, StartLimit*, Type, NotifyAccess), not the sandboxing, which a user
manager cannot apply.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.support.harness import write_config
from tests.test_systemd_unit import UNIT, parse_unit

REPO = Path(__file__).resolve().parent.parent
SYSTEMD = "/usr/lib/systemd/systemd"
CGROUP = Path("/sys/fs/cgroup")


def _cgroup_layout() -> tuple[str, list[Path]] | None:
    """("unified" | "hybrid" | "legacy", the host hierarchies the manager's cgroup
    is made in), or None when no usable layout is mounted."""
    fstype = subprocess.run(["stat", "-f", "-c", "%T", str(CGROUP)], capture_output=True, text=True,
                            check=False).stdout.strip()
    if fstype == "cgroup2fs":
        return "unified", [CGROUP]
    named = CGROUP / "systemd"
    if not (named / "cgroup.procs").exists():
        return None
    unified = CGROUP / "unified"
    if (unified / "cgroup.procs").exists():
        return "hybrid", [named, unified]
    return "legacy", [named]


def missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root (namespaces, mounts and a cgroup for the test's systemd)"
    if not os.path.exists(SYSTEMD):
        return f"{SYSTEMD} is missing (Debian's systemd package)"
    for tool in ("unshare", "systemctl"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if _cgroup_layout() is None:
        return "no cgroup hierarchy for systemd is mounted at /sys/fs/cgroup"
    return None


def policy_lines() -> tuple[list[str], list[str]]:
    """The real unit's restart policy: ([Unit] lines, [Service] lines)."""
    unit = parse_unit(UNIT.read_text())
    unit_lines = [f"{k}={v}" for k, vs in unit["Unit"].items() if k.startswith("StartLimit") for v in vs]
    keep = ("Restart", "StartLimit", "Type", "NotifyAccess", "SuccessExitStatus")
    service = [f"{k}={v}" for k, vs in unit["Service"].items() if k.startswith(keep) for v in vs]
    return unit_lines, service


def write_unit(units: Path, name: str, config: Path, log: Path) -> None:
    unit_lines, service = policy_lines()
    text = "\n".join([
        "[Unit]", f"Description=rfid-agent restart policy test ({name})", *unit_lines,
        "[Service]", *service,
        f"ExecStart={sys.executable} -m agent --config {config} run",
        f"WorkingDirectory={REPO}",
        f"Environment=PYTHONPATH={REPO} PYTHONUNBUFFERED=1",
        f"StandardOutput=append:{log}", "StandardError=inherit",  # no journald in here
    ]) + "\n"
    (units / f"{name}.service").write_text(text)


# Runs inside the namespaces, after the manager started: start both units, then
# watch until the one that exits 1 has been restarted twice (RestartSec later
# each time), by which time the exit-2 unit would have been restarted too.
DRIVER = r"""
import json, os, subprocess, sys, time
sock = os.path.join(os.environ["XDG_RUNTIME_DIR"], "systemd", "private")
deadline = time.monotonic() + 30
while not os.path.exists(sock) and time.monotonic() < deadline:
    time.sleep(0.05)
ctl = ["systemctl", "--user"]
subprocess.run(ctl + ["start", "--no-block", "agent-badconfig.service", "agent-diskfull.service"], check=True)
props = "NRestarts,ActiveState,SubState,Result,ExecMainStatus,StatusText"

def show(unit):
    out = subprocess.run(ctl + ["show", "-p", props, unit], capture_output=True, text=True).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    full = show("agent-diskfull.service")
    if int(full.get("NRestarts") or 0) >= 2:
        break
    time.sleep(0.2)
status = subprocess.run(ctl + ["status", "--no-pager", "agent-badconfig.service"], capture_output=True,
                        text=True).stdout
print(json.dumps({"badconfig": show("agent-badconfig.service"), "diskfull": show("agent-diskfull.service"),
                  "status": status}))
"""

INNER = r"""
set -e
mount -t tmpfs tmpfs /run
mkdir -p /run/systemd/system "$XDG_RUNTIME_DIR"
mount -t tmpfs -o nr_inodes=1 none "$FULL"
mount -t tmpfs cgroup /sys/fs/cgroup
case "$LAYOUT" in
  unified) umount /sys/fs/cgroup; mount -t cgroup2 cgroup2 /sys/fs/cgroup ;;
  *) mkdir /sys/fs/cgroup/systemd
     mount -t cgroup -o none,name=systemd cgroup /sys/fs/cgroup/systemd
     if [ "$LAYOUT" = hybrid ]; then mkdir /sys/fs/cgroup/unified; mount -t cgroup2 cgroup2 /sys/fs/cgroup/unified; fi ;;
esac
"$SYSTEMD" --user >"$MANAGER_LOG" 2>&1 &
exec "$PYTHON" -c "$DRIVER"
"""

# Joins the test's cgroup (so the manager's cgroup root is that, not the host's
# root cgroup), then enters the namespaces. --kill-child: a timeout kills it all.
OUTER = r"""
set -e
for h in $HIERARCHIES; do mkdir -p "$h/$CG"; echo $$ > "$h/$CG/cgroup.procs"; done
exec unshare --cgroup --mount --pid --fork --kill-child --mount-proc --propagation private sh -c "$INNER"
"""


def remove_cgroup(hierarchies: list[Path], name: str) -> None:
    for h in hierarchies:
        top = h / name
        if not top.exists():
            continue
        for d in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
            d.rmdir()
        top.rmdir()


@pytest.mark.skipif(missing() is not None, reason=missing() or "")
def test_exit_2_is_not_restarted_and_exit_1_is(tmp_path):
    layout, hierarchies = _cgroup_layout()  # type: ignore[misc]
    units = tmp_path / "home" / ".config" / "systemd" / "user"
    units.mkdir(parents=True)
    bad = write_config(tmp_path / "bad.toml", state_dir=tmp_path / "state-bad")
    bad.write_text(bad.read_text().replace('timezone = "Europe/Bucharest"', 'timezone = "Mars/Olympus"'))
    full = tmp_path / "full"  # a tmpfs with no inode left (mounted inside the namespace)
    full.mkdir()
    fullcfg = write_config(tmp_path / "full.toml", state_dir=full / "state")
    write_unit(units, "agent-badconfig", bad, tmp_path / "badconfig.log")
    write_unit(units, "agent-diskfull", fullcfg, tmp_path / "diskfull.log")

    cg = f"rfid-agent-test-{uuid.uuid4().hex[:12]}"
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "HOME": str(tmp_path / "home"),
           "XDG_RUNTIME_DIR": "/run/user/0", "LAYOUT": layout, "CG": cg,
           "HIERARCHIES": " ".join(map(str, hierarchies)), "FULL": str(full), "SYSTEMD": SYSTEMD,
           "MANAGER_LOG": str(tmp_path / "manager.log"), "PYTHON": sys.executable, "DRIVER": DRIVER,
           "INNER": INNER}
    try:
        r = subprocess.run(["sh", "-c", OUTER], env=env, capture_output=True, text=True, timeout=150,
                           check=False)
    finally:
        remove_cgroup(hierarchies, cg)
    assert r.returncode == 0, r.stdout + r.stderr + (tmp_path / "manager.log").read_text()
    got = json.loads(r.stdout.strip().splitlines()[-1])
    badconfig, diskfull = got["badconfig"], got["diskfull"]
    logs = {n: (tmp_path / f"{n}.log").read_text() for n in ("badconfig", "diskfull")}

    # exit 2: failed, never restarted, and `systemctl status` says why
    assert badconfig["ExecMainStatus"] == "2", (badconfig, logs)
    assert badconfig["ActiveState"] == "failed" and badconfig["NRestarts"] == "0", (badconfig, logs)
    assert "Mars/Olympus" in logs["badconfig"] and logs["badconfig"].count("config error") == 1, logs
    assert badconfig["StatusText"].startswith("config error: ") and "Mars/Olympus" in badconfig["StatusText"]
    assert 'Status: "config error: ' in got["status"], got["status"]

    # exit 1 (a full disk can clear by itself): restarted again and again
    # (its exit status is reset by each new start; test_state_dir checks it is 1)
    assert int(diskfull["NRestarts"]) >= 2, (diskfull, logs)
    assert diskfull["ActiveState"] != "failed", diskfull
    assert logs["diskfull"].count("no space left") >= 2 and "Traceback" not in logs["diskfull"], logs
