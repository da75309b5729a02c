"""Real mounts for tests (a tmpfs, a read-only bind mount), unmounted afterwards.

They need root with CAP_SYS_ADMIN; elsewhere the test that needs one is
skipped with the reason, decided before it runs by trying once (the marks
below; a tmpfs without options falls back to /dev/shm when that is one).
"""

from __future__ import annotations

import contextlib
import functools
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


def _shm_is_tmpfs() -> bool:
    return os.path.isdir("/dev/shm") and storage_of("/dev/shm").kind == VOLATILE


@functools.cache
def tmpfs_unavailable(with_options: bool = False) -> str | None:
    """Why :func:`tmpfs` cannot give a tmpfs here (``with_options``: a mounted one), or None."""
    with tempfile.TemporaryDirectory() as d:
        why = _mount("-t", "tmpfs", "none", d)
        if why is None:
            _umount(Path(d))
            return None
    if not with_options and _shm_is_tmpfs():
        return None
    return f"cannot mount a tmpfs here ({why})" + ("" if with_options else " and /dev/shm is no tmpfs to use instead")


@functools.cache
def read_only_unavailable() -> str | None:
    """Why :func:`read_only` cannot work here, or None."""
    with tempfile.TemporaryDirectory() as d:
        why = _mount("--bind", d, d)
        if why is None:
            why = _mount("-o", "remount,ro,bind", d)
            _umount(Path(d))
    return None if why is None else f"cannot make a read-only bind mount here: {why}"


NEEDS_TMPFS = pytest.mark.skipif(tmpfs_unavailable() is not None, reason=str(tmpfs_unavailable()))
NEEDS_MOUNTED_TMPFS = pytest.mark.skipif(tmpfs_unavailable(True) is not None, reason=str(tmpfs_unavailable(True)))
NEEDS_READ_ONLY = pytest.mark.skipif(read_only_unavailable() is not None, reason=str(read_only_unavailable()))


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
    if options or not _shm_is_tmpfs():  # the test's mark said this would work: a failure, not a skip
        raise RuntimeError(f"cannot mount a tmpfs at {target}: {why}")
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
    if why is not None:  # the test's mark said this would work: a failure, not a skip
        raise RuntimeError(f"cannot make a read-only bind mount at {target}: {why}")
    try:
        yield target
    finally:
        _umount(target)
