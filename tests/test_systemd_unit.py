"""systemd/rfid-agent.service: settings, `systemd-analyze verify` and `security`; udev rules."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
UNIT = REPO / "systemd" / "rfid-agent.service"
RULES = REPO / "hardware" / "99-rfid-agent.rules"
MAX_EXPOSURE = 2.5


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """Sections -> key -> every value in order (systemd keys repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"key outside a section: {line}"
        key, sep, value = line.partition("=")
        assert sep, f"not key=value: {line}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


@pytest.fixture(scope="module")
def unit() -> dict[str, dict[str, list[str]]]:
    return parse_unit(UNIT.read_text())


def systemd_analyze() -> str:
    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.fail("systemd-analyze is missing: scripts/test installs Debian's `systemd` package "
                    "(apt-get install -y systemd); this check must not be skipped")
    return exe


def ci_copy(tmp_path: Path, text: str | None = None) -> Path:
    """The unit with ExecStart pointed at a binary that exists (verify needs one)."""
    text = UNIT.read_text() if text is None else text
    text, n = re.subn(r"(?m)^ExecStart=.*$", "ExecStart=/bin/true", text)
    assert n == 1
    path = tmp_path / "rfid-agent.service"
    path.write_text(text)
    return path


def one(unit, section: str, key: str) -> str:
    values = unit[section].get(key)
    assert values and len(values) == 1, f"{section}.{key} = {values!r}"
    return values[0]


def test_service_settings(unit):
    s = "Service"
    expected = {
        "Type": "notify",
        "NotifyAccess": "main",
        "WatchdogSec": "30",
        "Restart": "always",
        "RestartSec": "2",
        "RestartPreventExitStatus": "2",  # a config error: restarting cannot fix it
        "SyslogIdentifier": "rfid-agent",
        "User": "rfid-agent",
        "Group": "rfid-agent",
        "StateDirectory": "rfid-agent",
        "StateDirectoryMode": "0700",
        "ConfigurationDirectory": "rfid-agent",
        "WorkingDirectory": "/var/lib/rfid-agent",
        "ExecStart": "/opt/rfid-agent/venv/bin/agent run",
        "UMask": "0077",
        "DevicePolicy": "closed",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "NoNewPrivileges": "yes",
        "CapabilityBoundingSet": "",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
    }
    for key, value in expected.items():
        assert one(unit, s, key) == value, key
    assert one(unit, "Unit", "StartLimitIntervalSec") == "0"
    assert set(one(unit, s, "SupplementaryGroups").split()) == {"dialout", "input", "gpio"}
    env = " ".join(unit[s]["Environment"]).split()
    assert "GPIOZERO_PIN_FACTORY=lgpio" in env
    assert "AGENT_CONFIG=/etc/rfid-agent/config.toml" in env
    assert sorted(unit[s]["DeviceAllow"]) == sorted(
        f"char-{c} rw" for c in ("ttyAMA", "ttyS", "ttyUSB", "ttyACM", "input", "gpiochip"))
    assert re.fullmatch(r"\d+[KMG]", one(unit, s, "MemoryMax"))
    assert one(unit, "Install", "WantedBy") == "multi-user.target"


def test_settings_that_would_break_the_agent_are_absent(unit):
    s = unit["Service"]
    for key in ("PrivateDevices", "ProtectClock", "MemoryDenyWriteExecute", "ProcSubset",
                "PrivateNetwork", "PrivateUsers"):
        assert key not in s, f"{key} breaks devices, adjtimex, cffi, /proc/cpuinfo or the network"
    # no start-up dependency on the network or on a synced clock
    for key in ("Wants", "Requires", "BindsTo"):
        for value in unit["Unit"].get(key, []):
            assert "network-online" not in value and "time-sync" not in value


def test_syscall_filter_allows_read_only_adjtimex(unit):
    filters = unit["Service"]["SystemCallFilter"]
    allowed = [f for f in filters if not f.startswith("~")]
    denied = " ".join(f[1:] for f in filters if f.startswith("~")).split()
    assert "@system-service" in " ".join(allowed).split()
    assert "adjtimex" in " ".join(allowed).split()
    # these groups contain adjtimex, so denying them would undo the allow
    assert not {"@privileged", "@clock", "adjtimex"} & set(denied)


def test_systemd_analyze_verify(tmp_path):
    exe = systemd_analyze()
    path = ci_copy(tmp_path)
    # Documentation=man:agent(1): verify runs man(1) on it, so the page is made
    # the way the package makes it, into a private MANPATH.
    man1 = tmp_path / "man" / "man1"
    man1.mkdir(parents=True)
    page = subprocess.run([sys.executable, "-m", "agent.commands.manual", "man"], capture_output=True,
                          text=True, check=True, cwd=Path(__file__).resolve().parent.parent).stdout
    (man1 / "agent.1").write_text(page)
    env = {**os.environ, "MANPATH": str(tmp_path / "man")}
    r = subprocess.run([exe, "verify", str(path)], capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    # unknown keys or bad values are only warnings: there must be none about our file
    assert str(path) not in r.stdout + r.stderr, r.stdout + r.stderr


def test_systemd_analyze_verify_catches_mistakes(tmp_path):
    exe = systemd_analyze()
    path = ci_copy(tmp_path, UNIT.read_text().replace("Type=notify", "Type=notifyy"))
    r = subprocess.run([exe, "verify", str(path)], capture_output=True, text=True, timeout=60)
    assert "notifyy" in r.stdout + r.stderr


def exposure(exe: str, path: Path, threshold: int) -> tuple[int, float, str]:
    # --threshold is on a 0-100 scale: 25 means an overall exposure of 2.5
    r = subprocess.run([exe, "security", "--offline=true", f"--threshold={threshold}", str(path)],
                       capture_output=True, text=True, timeout=60)
    m = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", r.stdout)
    assert m, r.stdout + r.stderr
    return r.returncode, float(m.group(1)), r.stdout


def test_systemd_analyze_security_score(tmp_path):
    exe = systemd_analyze()
    rc, score, out = exposure(exe, ci_copy(tmp_path), int(MAX_EXPOSURE * 10))
    assert score <= MAX_EXPOSURE, out
    assert rc == 0, out


def test_security_threshold_rejects_a_bare_unit(tmp_path):
    """The score check can fail: an unhardened unit is far above the threshold."""
    exe = systemd_analyze()
    path = tmp_path / "bare.service"
    path.write_text("[Service]\nExecStart=/bin/true\n")
    rc, score, out = exposure(exe, path, int(MAX_EXPOSURE * 10))
    assert score > 5 and rc != 0, out


# ---------------------------------------------------------------- udev rules

RULE_KEY = re.compile(r'^(?:[A-Z_]+(?:\{[^}]+\})?)(?:==|!=|\+=|=|:=)"[^"]*"$')


def test_udev_rules_are_well_formed():
    symlinks: dict[str, int] = {}
    for n, raw in enumerate(RULES.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = [p.strip() for p in line.split(", ")]
        for p in parts:
            assert RULE_KEY.match(p), f"line {n}: {p!r}"
        for p in parts:
            m = re.match(r'ATTRS\{id(Vendor|Product)\}=="(.*)"', p)
            if m:
                assert re.fullmatch(r"[0-9a-f]{4}", m.group(2)), f"line {n}: {p}"
        for p in parts:
            if p.startswith("SYMLINK+="):
                link = p.split('"')[1]
                symlinks[link] = symlinks.get(link, 0) + 1
                assert 'MODE="0660"' in parts and any(q.startswith("GROUP=") for q in parts)
    assert symlinks.get("rfid0", 0) >= 4  # CH340, CP210x, FTDI, PL2303
    assert symlinks.get("input/rfid-kbd", 0) >= 1
    text = RULES.read_text()
    for vid_pid in ("1a86", "10c4", "0403", "067b"):
        assert f'ATTRS{{idVendor}}=="{vid_pid}"' in text
    assert "ID_PATH" in text
