"""Real mounts for tests (a tmpfs, a read-only bind mount), unmounted afterwards.

They need root with CAP_SYS_ADMIN; elsewhere the test that needs one is
skipped with the reason (a tmpfs falls back to /dev/shm when that is one).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from agent.fsinfo import VOLATILE, storage_of


def _mount(*args: str) -> str | None:
    """None on success, else why not."""
    try:
        r = subprocess.run(["mount", *args], capture_output=True, text=True, timeout=30)
    except OSError as exc:
        return str(exc)
    return None if r.returncode == 0 else (r.stderr.strip() or f"mount exited {r.returncode}")


def _umount(target: Path) -> None:
    subprocess.run(["umount", "-l", str(target)], capture_output=True, timeout=30, check=False)


@contextlib.contextmanager
def tmpfs(target: Path, options: str = "") -> Iterator[Path]:
    """A fresh tmpfs at ``target`` (or a directory in /dev/shm when mounting is not allowed)."""
    target.mkdir(parents=True, exist_ok=True)
    why = _mount("-t", "tmpfs", *(["-o", options] if options else []), "none", str(target))
    if why is None:
        try:
            yield target
        finally:
            _umount(target)
        return
    if options or not os.path.isdir("/dev/shm") or storage_of("/dev/shm").kind != VOLATILE:
        pytest.skip(f"cannot mount a tmpfs here ({why}) and /dev/shm is no tmpfs to use instead")
    with tempfile.TemporaryDirectory(dir="/dev/shm") as d:
        yield Path(d)


@contextlib.contextmanager
def read_only(target: Path) -> Iterator[Path]:
    """``target`` bind-mounted read-only onto itself (root ignores permission bits, not this)."""
    target.mkdir(parents=True, exist_ok=True)
    why = _mount("--bind", str(target), str(target))
    if why is None:
        why = _mount("-o", "remount,ro,bind", str(target))
        if why is not None:
            _umount(target)
    if why is not None:
        pytest.skip(f"cannot make a read-only bind mount here: {why}")
    try:
        yield target
    finally:
        _umount(target)
