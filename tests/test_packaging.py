"""What installs on a Pi: the wheel holds the agent and nothing of the test bench."""

from __future__ import annotations

import shutil
import subprocess
import sys
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
