"""The fleet rollout in deploy/ansible: the playbook parses, ansible-lint's
production profile passes, and a real run installs the package into a minimal
Debian bookworm root through Ansible's chroot connection, writes the door's
config and its token from Ansible Vault, takes the Pi's UART for the reader,
and ends with ``agent doctor --json`` in the play's output; ``--check`` runs
through; a restart owed by a failed run is kept for the next; a door
without python3-evdev fails before the package goes on, with the fix.

The Ansible tools come from scripts/_ansible.sh (pinned, cached). The .deb is
``$AGENT_DEB`` when set (scripts/test builds it once for every package test),
else built here by scripts/package.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tomllib
from pathlib import Path

import pytest

from standins.iflow import IflowStandin
from tests.support import debroot

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy" / "ansible"
TOKEN = "tok-door1-Vault-s3cret"
ROTATED = "tok-door1-rotated"
VAULT_PASSWORD = "only-for-this-test"


@pytest.fixture(scope="module")
def tools() -> Path:
    got = subprocess.run([str(REPO / "scripts" / "_ansible.sh")], check=False,
                         capture_output=True, text=True, timeout=900)
    assert got.returncode == 0, f"scripts/_ansible.sh failed:\n{got.stderr[-3000:]}"
    return Path(got.stdout.strip().splitlines()[-1])


def _env(tools: Path, tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PATH=f"{tools / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}",
        ANSIBLE_CONFIG=str(DEPLOY / "ansible.cfg"),
        ANSIBLE_COLLECTIONS_PATH=str(tools / "collections"),
        ANSIBLE_HOME=str(tmp / "ansible-home"),  # not the user's ~/.ansible
        ANSIBLE_LOCAL_TEMP=str(tmp / "ansible-local"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
        NO_COLOR="1",
    )
    return env


def _run(tools: Path, tmp: Path, *cmd: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(tools / "bin" / cmd[0]), *cmd[1:]], cwd=DEPLOY, env=_env(tools, tmp),
                          check=False, capture_output=True, text=True, timeout=timeout)


def test_playbook_parses_and_rolls_out_in_batches(tools: Path, tmp_path: Path) -> None:
    got = _run(tools, tmp_path, "ansible-playbook", "-i", "inventory.example.yml", "site.yml",
               "--syntax-check")
    assert got.returncode == 0, got.stdout + got.stderr
    assert "playbook: site.yml" in got.stdout
    # PyYAML is in the Ansible venv, not the test venv.
    parsed = _run(tools, tmp_path, "python", "-c",
                  "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))", "site.yml")
    (play,) = json.loads(parsed.stdout)
    # Batches, the first a single canary door, and a rollout that stops on failures.
    assert play["serial"][0] == 1 and len(play["serial"]) > 1
    assert 0 <= play["max_fail_percentage"] < 100


def test_dependency_check_matches_the_package(tools: Path, tmp_path: Path) -> None:
    """The role checks a door for the lowest versions debian/control names."""
    parsed = _run(tools, tmp_path, "python", "-c",
                  "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))",
                  "roles/rfid_agent/vars/main.yml")
    checked = json.loads(parsed.stdout)["rfid_agent_depends"]
    control = (REPO / "debian" / "control").read_text()
    depends = control[control.index("\nPackage: rfid-agent\n"):].split("\nDepends:", 1)[1]
    depends = re.split(r"\n\S", depends, maxsplit=1)[0]
    versioned = dict(re.findall(r"([a-z0-9.+-]+) \(>= ([^)]+)\)", depends))
    assert checked == versioned, (checked, depends)


def test_ansible_lint_production_profile(tools: Path, tmp_path: Path) -> None:
    got = _run(tools, tmp_path, "ansible-lint", "--offline", "--profile", "production", "--nocolor")
    out = got.stdout + got.stderr
    assert got.returncode == 0, out
    assert "Profile 'production' was required, and it passed" in out, out


def _deb(tmp: Path) -> Path:
    given = os.environ.get("AGENT_DEB")
    if given:
        assert Path(given).is_file(), f"$AGENT_DEB={given} is not a file"
        return Path(given)
    got = subprocess.run([str(REPO / "scripts" / "package"), "--no-lintian", "--out", str(tmp / "dist")],
                         check=False, capture_output=True, text=True, timeout=900)
    assert got.returncode == 0, got.stderr[-3000:]
    return Path(got.stdout.strip().splitlines()[-1])


def _doctor_report(out: str) -> list[dict]:
    """The report the play printed (the debug task's JSON object after '=> ')."""
    at = out.index('"rfid_agent_doctor_report": [')
    start = out.rindex("=> {", 0, at) + 3
    return json.JSONDecoder().raw_decode(out, start)[0]["rfid_agent_doctor_report"]


def _recap(out: str) -> dict[str, int]:
    line = re.search(r"^door1\s+:(.*)$", out, re.MULTILINE)
    assert line, out
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line.group(1))}


def _uid_gid(root: Path, user: str) -> tuple[int, int]:
    for line in (root / "etc" / "passwd").read_text().splitlines():
        f = line.split(":")
        if f[0] == user:
            return int(f[2]), int(f[3])
    raise AssertionError(f"no user {user} in the root")


@pytest.mark.skipif(debroot.missing() is not None, reason=str(debroot.missing()))
def test_rollout_into_debian_root_over_chroot(tools: Path, tmp_path: Path) -> None:
    deb = _deb(tmp_path)
    root = debroot.fresh_root(tmp_path)
    # A Pi's boot partition, with the serial console on the reader's UART.
    boot = root / "boot" / "firmware"
    boot.mkdir(parents=True)
    (boot / "config.txt").write_text("[pi4]\narm_boost=1\n\n[all]\n#enable_uart=0\ndtparam=audio=on\n")
    (boot / "cmdline.txt").write_text("console=serial0,115200 console=tty1 root=PARTUUID=6c586e13-02 "
                                      "rootfstype=ext4 fsck.repair=yes rootwait\n")

    (tmp_path / "vault-password").write_text(VAULT_PASSWORD)
    vault = ("--vault-password-file", str(tmp_path / "vault-password"))
    enc = _run(tools, tmp_path, "ansible-vault", "encrypt_string", *vault, "--name", "rfid_agent_token", TOKEN)
    assert enc.returncode == 0 and "$ANSIBLE_VAULT" in enc.stdout and TOKEN not in enc.stdout, enc.stderr
    (tmp_path / "secrets.yml").write_text(enc.stdout)

    marker = root / "run" / "rfid-agent.restart-pending"
    with IflowStandin(token=TOKEN) as iflow:
        door = {
            "ansible_connection": "community.general.chroot",
            "ansible_host": str(root),
            "ansible_python_interpreter": "/usr/bin/python3",
            "rfid_agent_deb": str(deb),
            "rfid_agent_timezone": "America/Sao_Paulo",
            "rfid_agent_reader": {"name": "front", "type": "serial", "port": "/dev/serial0",
                                  "protocol": "rdm6300", "tag_format": "decimal10", "byte_order": "little"},
            "rfid_agent_iflow_url": iflow.url,
            "rfid_agent_feedback": {"backend": "gpio", "fallback": "console",
                                    "green_pin": 5, "red_pin": 6, "buzzer_pin": 13},
            # A root with no reader wired: the lab's allowance (the daemon's FAIL
            # is allowed by the role itself where systemd does not run).
            "rfid_agent_doctor_allow_fail": ["reader.front"],
        }
        inventory = tmp_path / "inventory.yml"
        inventory.write_text(json.dumps({"doors": {"hosts": {"door1": door}}}))
        play = ("ansible-playbook", "-i", str(inventory), "-e", f"@{tmp_path / 'secrets.yml'}", *vault, "site.yml")

        first = _run(tools, tmp_path, *play)
        out = first.stdout + first.stderr
        assert first.returncode == 0, out[-6000:]
        # Doctor's JSON is in the play's output, and it checked this door's setup.
        report = {r["check"]: r for r in _doctor_report(first.stdout)}
        assert {"config", "token", "journal", "reader.front", "iflow_answers", "daemon"} <= set(report)
        assert report["config"]["status"] == "PASS" and report["token"]["status"] == "PASS"
        assert report["iflow_answers"]["status"] == "PASS", report["iflow_answers"]
        assert report["reader.front"]["status"] == "FAIL"  # allowed, and said so:
        assert "no FAIL, except the allowed reader.front, daemon" in first.stdout
        assert TOKEN not in out
        # Package, token and config were written: the restart they owe was
        # remembered, then done (skipped here, no systemd) and forgotten.
        assert re.search(r"Remember the service owes a restart for the package\][ *]*\nchanged: \[door1\]", out), out
        assert not marker.exists()

        # A dry run after a real one: the read-only steps run, nothing would change.
        dry = _run(tools, tmp_path, *play, "--check")
        out_dry = dry.stdout + dry.stderr
        assert dry.returncode == 0, out_dry[-6000:]
        assert _recap(dry.stdout)["changed"] == 0, out_dry[-6000:]
        assert {r["check"] for r in _doctor_report(dry.stdout)} == set(report)

        # Run again with no allowance: nothing changes, and the missing reader fails the door.
        second = _run(tools, tmp_path, *play, "-e", '{"rfid_agent_doctor_allow_fail": []}')
        out2 = second.stdout + second.stderr
        # A bad value is refused before it replaces the door's config, with the agent's own words.
        # Here with a new token, written before the config is refused: the door
        # owes a restart on it, which outlives the failed run...
        third = _run(tools, tmp_path, *play, "-e", "rfid_agent_timezone=Mars/Olympus",
                     "-e", f"rfid_agent_token={ROTATED}")
        owed_after_failure = marker.exists()
        rotated = (root / "etc" / "rfid-agent" / "token").read_text().strip()
        # ... and the next good run does it (the token back as well).
        again = _run(tools, tmp_path, *play)
        out_again = again.stdout + again.stderr
        # A door without python3-evdev stops before the package, saying how to fix it.
        debroot.run_in(root, "dpkg", "--purge", "--force-depends", "python3-evdev")
        fourth = _run(tools, tmp_path, *play)

    recap = _recap(first.stdout)
    assert recap["failed"] == 0 and recap["changed"] > 0
    assert second.returncode != 0, out2[-6000:]
    assert _recap(second.stdout)["changed"] == 0, out2[-6000:]
    assert _recap(second.stdout)["failed"] == 1
    assert "FAIL reader.front: serial port /dev/serial0 is not present" in second.stdout

    assert third.returncode != 0
    assert "unknown time zone 'Mars/Olympus'" in third.stdout + third.stderr, third.stdout[-6000:]
    assert rotated == ROTATED and owed_after_failure
    assert ROTATED not in third.stdout + third.stderr
    assert again.returncode == 0, out_again[-6000:]
    assert re.search(r"Forget the restart once done\][ *]*\nchanged: \[door1\]", again.stdout), out_again[-6000:]
    assert not marker.exists()

    assert fourth.returncode != 0
    assert ("python3-evdev is missing: apt-get install python3-evdev (needs the network or a local mirror), "
            "or set rfid_agent_allow_apt_deps: true to let apt fetch it") in fourth.stdout, fourth.stdout[-6000:]
    assert _recap(fourth.stdout)["changed"] == 0

    uid, gid = _uid_gid(root, "rfid-agent")
    conf = root / "etc" / "rfid-agent" / "config.toml"
    cfg = tomllib.loads(conf.read_text())
    assert cfg["timezone"] == "America/Sao_Paulo"
    assert cfg["reader"] == door["rfid_agent_reader"]
    assert cfg["iflow"] == {"url": iflow.url, "access_token_file": "/etc/rfid-agent/token"}
    assert cfg["feedback"]["green_pin"] == 5 and cfg["feedback"]["buzzer_pin"] == 13
    st = conf.stat()
    assert (st.st_mode & 0o777, st.st_uid, st.st_gid) == (0o640, 0, gid)

    token = root / "etc" / "rfid-agent" / "token"
    assert token.read_text().strip() == TOKEN
    st = token.stat()
    assert (st.st_mode & 0o777, st.st_uid) == (0o600, uid)

    # The UART is the reader's: on, and no kernel console or getty on it.
    assert (boot / "config.txt").read_text() == ("[pi4]\narm_boost=1\n\n[all]\ndtoverlay=disable-bt\n"
                                                 "enable_uart=1\ndtparam=audio=on\n")
    assert (boot / "cmdline.txt").read_text() == ("console=tty1 root=PARTUUID=6c586e13-02 rootfstype=ext4 "
                                                  "fsck.repair=yes rootwait\n")
    # The package really is installed in the root (dpkg's own record).
    status = (root / "var" / "lib" / "dpkg" / "status").read_text()
    assert re.search(r"^Package: rfid-agent\nStatus: install ok installed$", status, re.MULTILINE)
