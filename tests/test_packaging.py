"""What installs on a Pi: the wheel holds the agent and nothing of the test bench;
the sdist holds the whole project (how it is installed and tested, the lock, the license)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _copy_of_checkout(dest: Path) -> Path:
    """The tracked and untracked-but-not-ignored files, as a fresh clone has them:
    setuptools builds in the source tree (build/), which must stay clean."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def test_wheel_holds_no_stand_in_demo_or_test_helper(tmp_path):
    src = _copy_of_checkout(tmp_path / "src")
    assert (src / "standins").is_dir() and (src / "tests").is_dir()  # there to be left out
    # Built as pip builds it for an install (isolated, with the declared backend).
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(src)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    (wheel,) = tmp_path.glob("rfid_agent-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    code = [n for n in names if ".dist-info/" not in n]
    assert code and all(n.startswith("agent/") for n in code), sorted(set(code) - {n for n in code
                                                                               if n.startswith("agent/")})
    assert not [n for n in code if any(w in n for w in ("standin", "demo", "tests/", "bench", "support/"))]
    # the pieces a Pi needs are there
    for needed in ("agent/commands/cli.py", "agent/runtime/wiring.py", "agent/journal/store.py"):
        assert needed in names or any(n.startswith(needed.rsplit("/", 1)[0] + "/") for n in names)
    # the license travels with the wheel (PEP 639: license-files in pyproject.toml)
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names), [n for n in names if "dist-info" in n]
    meta = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "License-Expression: MIT" in meta


# What the sdist must carry besides the program: how it is installed and tested.
SDIST_DIRS = ("systemd", "hardware", "scripts", "examples", "docs", "standins", "bench", "fuzz",
              "tests", "tests/support", "tests/reliability")
SDIST_FILES = ("LICENSE", "README.md", "pyproject.toml", "requirements.lock", "MANIFEST.in")


def test_sdist_is_the_whole_project(tmp_path):
    src = _copy_of_checkout(tmp_path / "src")
    wanted = {str(p.relative_to(src)) for p in src.rglob("*") if p.is_file() and p.name != ".gitignore"}
    (src / "stray.pyc").write_bytes(b"")  # caches in a working tree stay out
    (src / "tests" / "__pycache__").mkdir(exist_ok=True)
    (src / "tests" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"")
    # The declared build backend in a throwaway venv, then its PEP 517 sdist hook (what `python -m build` does).
    backend = tomllib.loads((src / "pyproject.toml").read_text())["build-system"]["requires"]
    subprocess.run([sys.executable, "-m", "venv", str(tmp_path / "venv")], check=True, timeout=120)
    py = str(tmp_path / "venv" / "bin" / "python")
    res = subprocess.run([py, "-m", "pip", "install", "-q", "--disable-pip-version-check", *backend],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    res = subprocess.run([py, "-c", "import sys, setuptools.build_meta as b; print(b.build_sdist(sys.argv[1]))",
                          str(tmp_path / "dist")], cwd=src, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    sdist = tmp_path / "dist" / res.stdout.split()[-1]
    with tarfile.open(sdist) as tar:
        members = tar.getnames()
        tar.extractall(tmp_path / "unpacked", filter="data")
    top = members[0].split("/")[0]
    inside = {m.split("/", 1)[1] for m in members if "/" in m}
    for d in SDIST_DIRS + tuple(d for d in ("debian", "deploy") if (src / d).is_dir()):
        assert d in inside, f"{d}/ is not in the sdist (MANIFEST.in)"
    for f in SDIST_FILES:
        assert f in inside, f
    # every file of a fresh clone is in it (so nothing new is forgotten), and no cache
    assert wanted - inside == set(), sorted(wanted - inside)
    assert not [m for m in inside if m.endswith(".pyc") or "__pycache__" in m or m.startswith(".venv")]
    # ... and pip builds the same agent-only wheel from it, as it would from PyPI
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "w"),
                          str(tmp_path / "unpacked" / top)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    (wheel,) = (tmp_path / "w").glob("rfid_agent-*.whl")
    code = [n for n in zipfile.ZipFile(wheel).namelist() if ".dist-info/" not in n]
    assert code and all(n.startswith("agent/") for n in code)
