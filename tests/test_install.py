"""scripts/install --root TMP: layout, modes, manifest, idempotence, upgrade, uninstall.

Installs the repository into fresh venvs offline (``--no-index --find-links``)
from a wheelhouse the module fetches once: the files requirements.lock pins
(hash-checked by the install, evdev compiled from its sdist unless the OS has
it) and the build backend pyproject.toml asks for. The first install takes the
pinned dependencies; later ones pass ``--no-deps`` and install the agent alone.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "install"
WHEELHOUSE: Path | None = None  # set by fetched_wheelhouse()


def venv_python() -> str:
    """Debian's python3 as on the Pi when it can make venvs, else this interpreter's base."""
    debian = "/usr/bin/python3"
    if os.path.exists(debian) and subprocess.run(
            [debian, "-c", "import ensurepip, sys; sys.exit(sys.version_info < (3, 11))"],
            capture_output=True).returncode == 0:
        return debian
    return getattr(sys, "_base_executable", sys.executable)


def run(root: Path, *args: str, source: Path = REPO, check: bool = True, deps: bool = False,
        wheelhouse: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENT_", "VIRTUAL_ENV"))}
    pip_args = f"--no-index --find-links {wheelhouse or fetched_wheelhouse()}" + ("" if deps else " --no-deps")
    cmd = ["bash", str(SCRIPT), "--root", str(root), "--source", str(source),
           "--python", PYTHON, "--pip-args", pip_args, *args]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=root, timeout=120)
    if check:
        assert r.returncode == 0, f"{cmd}\n{r.stdout}\n{r.stderr}"
    return r


def snapshot(root: Path) -> dict[str, tuple]:
    """path -> (type, mode, uid, gid, sha256 or link target) for everything under root."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            st = p.lstat()
            if stat.S_ISLNK(st.st_mode):
                what = os.readlink(p)
            elif stat.S_ISREG(st.st_mode):
                what = hashlib.sha256(p.read_bytes()).hexdigest()
            else:
                what = None
            out[str(p.relative_to(root))] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode),
                                             st.st_uid, st.st_gid, what)
    return out


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


PYTHON = venv_python()


def locked() -> dict[str, str]:
    """name -> version pinned in requirements.lock."""
    return dict(line.split(" ")[0].split("==") for line in (REPO / "requirements.lock").read_text().splitlines()
                if "==" in line and not line.startswith("#"))


def fetched_wheelhouse(where: Path | None = None) -> Path:
    """The only network use: what the installs below then take offline. Fetched
    once per run, on first use (other test modules install through :func:`run` too)."""
    global WHEELHOUSE
    if WHEELHOUSE is None:
        if where is None:
            where = Path(tempfile.mkdtemp(prefix="agent-wheelhouse-"))
            atexit.register(shutil.rmtree, where, True)
        backend = tomllib.loads((REPO / "pyproject.toml").read_text())["build-system"]["requires"]
        for what in (["--require-hashes", "-r", str(REPO / "requirements.lock")], backend):
            r = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(where),
                                *what], capture_output=True, text=True, timeout=300)
            assert r.returncode == 0, r.stderr[-2000:]
        WHEELHOUSE = where
    return WHEELHOUSE


@pytest.fixture(scope="module", autouse=True)
def wheelhouse(tmp_path_factory) -> Path:
    return fetched_wheelhouse(None if WHEELHOUSE else tmp_path_factory.mktemp("wheelhouse"))


def os_evdev() -> bool:
    """Whether the venv's interpreter already has evdev >= 1.6 (Debian's python3-evdev)."""
    check = ("import sys, evdev, importlib.metadata as m; "
             "sys.exit(tuple(map(int, m.version('evdev').split('.')[:2])) < (1, 6))")
    return subprocess.run([PYTHON, "-c", check], capture_output=True).returncode == 0


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    root = tmp_path_factory.mktemp("root")
    return root, run(root, deps=True)


def test_dependencies_are_the_locked_ones(installed):
    root, r = installed
    venv_py = root / "opt/rfid-agent/venv/bin/python"
    versions = "import importlib.metadata as m, json, sys; print(json.dumps({n: m.version(n) for n in sys.argv[1:]}))"
    got = subprocess.run([str(venv_py), "-c", versions, *locked()], capture_output=True, text=True, timeout=60)
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout) == locked()
    assert "installing the pinned dependencies (requirements.lock" in r.stdout
    assert ("evdev from the OS" if os_evdev() else "evdev compiled") in r.stdout
    # the program's own imports resolve in the venv (httpx, serial, evdev, tinydb, gpiozero, rich)
    imp = subprocess.run([str(venv_py), "-c", "import httpx, serial, evdev, tinydb, gpiozero, rich"],
                         capture_output=True, text=True, timeout=60)
    assert imp.returncode == 0, imp.stderr


def test_a_file_that_does_not_match_the_lock_is_refused(tmp_path):
    house = tmp_path / "house"
    shutil.copytree(WHEELHOUSE, house)
    (wheel,) = house.glob("tinydb-*.whl")
    with zipfile.ZipFile(wheel, "a") as z:
        z.writestr("tinydb/planted.py", "print('not what the lock pinned')\n")
    root = tmp_path / "root"
    root.mkdir()
    r = run(root, deps=True, wheelhouse=house, check=False)
    assert r.returncode != 0
    assert "do not match the hashes" in (r.stdout + r.stderr).lower()
    assert not list((root / "opt/rfid-agent/venv/lib").glob("python3*/site-packages/tinydb"))


def test_layout_and_modes(installed):
    root, r = installed
    venv = root / "opt/rfid-agent/venv"
    assert mode(root / "opt/rfid-agent") == 0o755
    agent = venv / "bin/agent"
    assert agent.is_file() and os.access(agent, os.X_OK)
    cfg = (venv / "pyvenv.cfg").read_text()
    assert "include-system-site-packages = true" in cfg

    # the package is importable from the venv, from its site-packages (not the checkout)
    probe = subprocess.run([str(venv / "bin/python"), "-c",
                            "import agent, agent.runtime.sdnotify; print(agent.__file__, agent.__version__)"],
                           capture_output=True, text=True, cwd=root, timeout=60)
    assert probe.returncode == 0, probe.stderr
    where, version = probe.stdout.split()
    assert where.startswith(str(venv)) and "site-packages" in where
    import agent as repo_agent
    assert version == repo_agent.__version__

    for rel, src in [("etc/systemd/system/rfid-agent.service", "systemd/rfid-agent.service"),
                     ("etc/udev/rules.d/99-rfid-agent.rules", "hardware/99-rfid-agent.rules"),
                     ("etc/modules-load.d/rfid-agent.conf", "hardware/modules-load.conf")]:
        assert (root / rel).read_bytes() == (REPO / src).read_bytes()
        assert mode(root / rel) == 0o644

    assert mode(root / "etc/rfid-agent") == 0o750
    assert mode(root / "etc/rfid-agent/config.toml") == 0o640
    token = root / "etc/rfid-agent/token"
    assert token.read_bytes() == b"" and mode(token) == 0o600
    assert mode(root / "var/lib/rfid-agent") == 0o700
    assert list((root / "var/lib/rfid-agent").iterdir()) == []

    # a staging root changes no owners: everything belongs to whoever ran the script
    for rel in ("etc/rfid-agent", "etc/rfid-agent/token", "var/lib/rfid-agent", "opt/rfid-agent/venv"):
        st = (root / rel).stat()
        assert (st.st_uid, st.st_gid) == (os.getuid(), os.getgid())
    # ... and the owners they must get are in the manifest
    manifest = (root / "opt/rfid-agent/ownership").read_text().splitlines()
    for line in ("root rfid-agent 0750 /etc/rfid-agent",
                 "root rfid-agent 0640 /etc/rfid-agent/config.toml",
                 "rfid-agent rfid-agent 0600 /etc/rfid-agent/token",
                 "rfid-agent rfid-agent 0700 /var/lib/rfid-agent",
                 "root root 0644 /etc/systemd/system/rfid-agent.service",
                 "root root 0644 /etc/udev/rules.d/99-rfid-agent.rules"):
        assert line in manifest
    assert not any(str(root) in line for line in manifest)

    link = root / "usr/local/bin/agent"
    assert link.is_symlink() and os.readlink(link) == "/opt/rfid-agent/venv/bin/agent"

    # the checkout is left clean (the build ran on a copy)
    assert not (REPO / "build").exists()
    assert "installed under" in r.stdout


def test_config_skeleton_is_valid(installed, tmp_path):
    root, _ = installed
    written = (root / "etc/rfid-agent/config.toml").read_text()
    assert written == (REPO / "examples/site-config.toml").read_text()  # one skeleton, also the package's
    doc = tomllib.loads(written)
    assert doc["timezone"] and doc["state_dir"] == "/var/lib/rfid-agent"
    assert {"type", "port", "baudrate", "protocol", "debounce_seconds"} <= doc["reader"].keys()
    assert {"url", "access_token_file", "client_version"} <= doc["iflow"].keys()
    assert doc["iflow"]["access_token_file"] == "/etc/rfid-agent/token"
    assert "access_token" not in doc["iflow"]  # the secret lives only in the 0600 file
    # the agent's own validator accepts it once a token is in place
    from agent import config
    token = tmp_path / "token"
    token.write_text("abcd-1234-efgh\n")
    token.chmod(0o600)
    doc["iflow"]["access_token_file"] = str(token)
    cfg = config.from_dict(doc, "skeleton")
    assert cfg.reader.protocol == "rdm6300" and cfg.feedback.backend == "gpio"
    assert (cfg.feedback.green_pin, cfg.feedback.red_pin, cfg.feedback.buzzer_pin) == (17, 27, 22)


def test_second_run_changes_nothing(installed):
    root, _ = installed
    run(root)  # whatever earlier tests did, start from an installed tree
    before = snapshot(root)
    r = run(root)
    assert snapshot(root) == before
    assert "installing" not in r.stdout and "wrote" not in r.stdout and "creating" not in r.stdout


def test_site_config_is_never_overwritten_but_modes_are_restored(installed):
    root, _ = installed
    cfg = root / "etc/rfid-agent/config.toml"
    token = root / "etc/rfid-agent/token"
    cfg.write_text('timezone = "Europe/Vienna"\n')
    token.write_text("site-token-value\n")
    token.chmod(0o644)
    (root / "var/lib/rfid-agent").chmod(0o755)
    (root / "var/lib/rfid-agent/journal.json").write_text("{}")
    run(root)
    assert cfg.read_text() == 'timezone = "Europe/Vienna"\n'
    assert token.read_text() == "site-token-value\n"
    assert mode(token) == 0o600
    assert mode(root / "var/lib/rfid-agent") == 0o700
    assert (root / "var/lib/rfid-agent/journal.json").read_text() == "{}"


def test_changed_source_is_reinstalled(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE", "requirements.lock", "agent", "systemd", "hardware",
                 "examples"):
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif (REPO / name).exists():
            shutil.copy2(REPO / name, src / name)
    root = tmp_path / "root"
    (root / "usr/local/bin").mkdir(parents=True)
    (root / "usr/local/bin/agent").write_text("someone else's agent\n")
    r = run(root, source=src)
    assert "/usr/local/bin/agent exists and is not ours" in r.stdout
    assert (root / "usr/local/bin/agent").read_text() == "someone else's agent\n"
    site_init = next((root / "opt/rfid-agent/venv/lib").glob("python3*/site-packages/agent/__init__.py"))
    with open(src / "agent/__init__.py", "a") as f:
        f.write("\nUPGRADED = True\n")
    r = run(root, source=src)
    assert "installing the agent" in r.stdout
    assert "UPGRADED = True" in site_init.read_text()
    # and the unit is replaced when the project's copy changes
    unit = src / "systemd/rfid-agent.service"
    unit.write_text(unit.read_text().replace("RestartSec=2", "RestartSec=3"))
    r = run(root, source=src)
    assert "wrote /etc/systemd/system/rfid-agent.service" in r.stdout
    assert "RestartSec=3" in (root / "etc/systemd/system/rfid-agent.service").read_text()


def test_uninstall_keeps_config_and_state(tmp_path):
    root = tmp_path
    run(root)
    token = root / "etc/rfid-agent/token"
    token.write_text("keep-me\n")
    (root / "var/lib/rfid-agent/scans").write_text("undelivered")
    r = run(root, "--uninstall")
    for gone in ("opt/rfid-agent", "etc/systemd/system/rfid-agent.service", "usr/local/bin/agent",
                 "etc/udev/rules.d/99-rfid-agent.rules", "etc/modules-load.d/rfid-agent.conf"):
        assert not (root / gone).exists(), gone
    assert (root / "etc/rfid-agent/config.toml").is_file()
    assert token.read_text() == "keep-me\n"
    assert (root / "var/lib/rfid-agent/scans").read_text() == "undelivered"
    assert "kept /etc/rfid-agent" in r.stdout and "/var/lib/rfid-agent" in r.stdout
    # uninstalling twice is harmless
    run(root, "--uninstall")


def test_bad_arguments_are_clear_errors(tmp_path):
    r = run(tmp_path, "--frobnicate", check=False)
    assert r.returncode != 0 and "unknown argument: --frobnicate" in r.stderr
    r = run(tmp_path, source=tmp_path, check=False)
    assert r.returncode != 0 and "not an rfid-agent checkout" in r.stderr
    assert not (tmp_path / "opt").exists()
