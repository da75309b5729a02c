"""requirements.lock agrees with pyproject.toml and with what the program really needs.

All offline: the dependency closure is walked in this venv's installed metadata
(which scripts/_env.sh installs from the lock), evaluated for Python 3.11 on
Linux, the platform the lock is made for.
"""

from __future__ import annotations

import importlib.metadata as md
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parent.parent
LOCK = REPO / "requirements.lock"
TARGET = {"python_version": "3.11", "python_full_version": "3.11.2", "sys_platform": "linux",
          "platform_system": "Linux", "os_name": "posix", "implementation_name": "cpython",
          "platform_python_implementation": "CPython", "platform_machine": "aarch64", "extra": ""}


def lock_entries() -> dict[str, tuple[Requirement, list[str]]]:
    """name -> (requirement with its marker, sha256 hashes), from the lock's continued lines."""
    text = re.sub(r"\\\n", " ", LOCK.read_text())
    out = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        hashes = re.findall(r"--hash=sha256:(\S+)", line)
        req = Requirement(re.sub(r"\s*--hash=\S+", "", line).strip())
        assert canonicalize_name(req.name) not in out, f"{req.name} twice in the lock"
        out[canonicalize_name(req.name)] = (req, hashes)
    return out


def pinned(req: Requirement) -> str:
    (spec,) = req.specifier
    assert spec.operator == "==", f"{req} is not pinned with =="
    return spec.version


def skipped() -> set[str]:
    """The names the lock's header leaves out on purpose."""
    (line,) = [ln for ln in LOCK.read_text().splitlines() if ln.startswith("# Left out on purpose:")]
    return {canonicalize_name(m) for m in re.findall(r"([A-Za-z0-9._-]+) \(", line)}


def project_requirements() -> list[Requirement]:
    return [Requirement(r) for r in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]]


def closure() -> set[str]:
    """Every distribution the project needs at run time on the target, from installed metadata."""
    need: set[str] = set()
    todo = [r for r in project_requirements() if not r.marker or r.marker.evaluate(TARGET)]
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in need:
            continue
        need.add(name)
        for text in md.distribution(req.name).requires or []:
            dep = Requirement(text)
            if not dep.marker or dep.marker.evaluate(TARGET):
                todo.append(dep)
    return need


def test_every_project_dependency_is_locked_at_a_version_it_admits():
    lock = lock_entries()
    for req in project_requirements():
        name = canonicalize_name(req.name)
        assert name in lock, f"{req} (pyproject.toml) is not in requirements.lock: run scripts/lock"
        locked, _ = lock[name]
        version = pinned(locked)
        assert req.specifier.contains(version, prereleases=True), \
            f"requirements.lock pins {name}=={version}, pyproject.toml asks {req.specifier}: run scripts/lock"
        # the same platforms: evdev stays Linux-only in both
        assert (str(locked.marker) if locked.marker else None) == (str(req.marker) if req.marker else None), name
    assert str(lock["evdev"][0].marker) == str(Marker('sys_platform == "linux"'))


def test_every_entry_is_pinned_with_hashes():
    for name, (req, hashes) in lock_entries().items():
        pinned(req)
        assert hashes, f"{name} has no --hash"
        assert all(re.fullmatch(r"[0-9a-f]{64}", h) for h in hashes), name
        assert len(set(hashes)) == len(hashes), name
    header = LOCK.read_text().split("\n\n")[0]
    assert "scripts/lock" in header and "--upgrade" in header  # how to update it


def test_the_lock_is_exactly_the_dependency_closure():
    locked = set(lock_entries())
    need = closure()
    assert need - locked <= skipped(), f"needed but not locked: {sorted(need - locked - skipped())}"
    assert locked <= need, f"locked but nothing needs them: {sorted(locked - need)}"
    assert skipped() <= need, f"left out, but nothing declares them any more: {sorted(skipped() - need)}"


def test_this_venv_runs_the_locked_versions():
    """scripts/_env.sh installs the runtime part from the lock: the suite tests what a Pi gets."""
    for name, (req, _) in lock_entries().items():
        assert Version(md.version(name)) == Version(pinned(req)), \
            f"{name}: the venv has {md.version(name)}, the lock {pinned(req)} (re-run scripts/test to refresh it)"


def test_what_is_left_out_is_never_imported():
    """The lock omits setuptools (colorzero declares it): no locked package may import it."""
    banned = skipped() | {"pkg_resources"} if "setuptools" in skipped() else skipped()
    names = "|".join(re.escape(b.replace("-", "_")) for b in banned)
    pattern = re.compile(rf"^\s*(?:import|from)\s+({names})\b", re.MULTILINE)
    offenders = []
    for name in lock_entries():
        dist = md.distribution(name)
        for f in dist.files or []:
            if f.suffix == ".py":
                m = pattern.search(Path(dist.locate_file(f)).read_text(errors="replace"))
                if m:
                    offenders.append(f"{name}: {f} imports {m.group(1)}")
    assert not offenders, offenders


def test_pip_accepts_the_lock_with_required_hashes():
    """pip's own parser, offline: with everything already installed nothing is fetched."""
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-index", "--require-hashes",
                        "--no-deps", "--disable-pip-version-check", "-r", str(LOCK)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Would install" not in r.stdout
    assert r.stdout.count("Requirement already satisfied") == len(lock_entries())
