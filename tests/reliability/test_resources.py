"""Resource faults: a full disk, fsync failing with EIO, a read-only file system.

No scan is acknowledged unless it is on disk; the door gets the "could not be
stored" signal; the agent recovers by itself, without a restart, when the disk
does. The full and read-only disks are a real 256 KiB tmpfs under the real
daemon (this needs root to mount; without it the same faults are injected
through CrashFS under the in-process Recorder, and the figures say which ran).
"""

from __future__ import annotations

import errno
import os
import stat
import subprocess
from pathlib import Path

import pytest

from agent.config import ReaderConfig
from agent.journal.store import Journal
from agent.recording.recorder import Recorder
from tests.reliability.figures import record
from tests.reliability.test_model import Door, FakeTime
from tests.support.crashfs import CrashFS
from tests.support.harness import Daemon, Pty, wait_ready, write_config

READERS = [ReaderConfig(name="door", tag_format="raw", debounce_seconds=0.0)]


def _mount(path: Path, size: str) -> bool:
    if os.geteuid() != 0:
        return False
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
                       capture_output=True)
    return r.returncode == 0


def _remount(path: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(path)], check=True, capture_output=True)


def _fill(path: Path) -> Path:
    filler = path / "filler.bin"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 1024)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return filler


def _lines(d: Daemon, prefix: str) -> list[str]:
    return [ln for ln in d.lines if ln.startswith(prefix)]


def test_full_and_read_only_disk_under_the_real_daemon(tmp_path):
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    mnt = state / "journal"  # the journal on its own small disk (the lock file stays open, outside it)
    if not _mount(mnt, "256k"):
        _crashfs_fallback(tmp_path)
        return
    pty = Pty()
    d = None
    try:
        cfg = write_config(tmp_path / "c.toml", state_dir=state, port=pty.port)
        d = Daemon(cfg)
        wait_ready(cfg)
        pty.send(b"S0\r\n")
        assert d.wait_for(lambda ls: "stored tag=S0" in " ".join(ls))

        filler = _fill(mnt)  # the disk is full
        for t in ("E1", "E2", "E3"):
            pty.send(f"{t}\r\n".encode())
        assert d.wait_for(lambda ls: sum(ln.startswith("error tag=E") for ln in ls) == 3), d.lines
        filler.unlink()  # space returns: no restart
        pty.send(b"R1\r\n")
        assert d.wait_for(lambda ls: "stored tag=R1" in " ".join(ls)), d.lines

        _remount(mnt, "ro")  # the file system goes read-only
        for t in ("O1", "O2"):
            pty.send(f"{t}\r\n".encode())
        assert d.wait_for(lambda ls: sum(ln.startswith("error tag=O") for ln in ls) == 2), d.lines
        _remount(mnt, "rw")
        pty.send(b"W1\r\n")
        assert d.wait_for(lambda ls: "stored tag=W1" in " ".join(ls)), d.lines
        assert d.proc.poll() is None, "the daemon must survive disk faults"
        acked = set(d.stored())
        errors = [ln.split("tag=", 1)[1] for ln in _lines(d, "error tag=")]
        assert d.terminate() == 0
        j = Journal(str(mnt))
        tags = [r.tag for r in j.records()]
        j.close()
        assert acked == {"S0", "R1", "W1"} and set(tags) == acked and len(tags) == 3
        assert not acked & set(errors)
        assert "SCAN NOT STORED" in "".join(d.stderr) and "Traceback" not in "".join(d.stderr)
        record("resources", method="real daemon, journal on a 256 KiB tmpfs (filled to ENOSPC, then remounted ro)",
               scans_refused_disk_full=3, scans_refused_read_only=2, acknowledged=len(acked),
               acknowledged_but_not_stored=0, error_feedback_given=len(errors),
               recovered_without_restart=True)
    finally:
        if d is not None and d.proc.poll() is None:
            d.kill()
        pty.close()
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def _crashfs_fallback(tmp_path) -> None:
    """No tmpfs (not root): the same sequence with CrashFS injecting the errors."""
    for code in (errno.ENOSPC, errno.EROFS):
        fs = CrashFS()
        j = Journal("/s/journal", segment_size=8, fs=fs)
        door = Door()
        rec = Recorder(j, FakeTime(True, 0).clock(tmp_path), door, readers=READERS)
        assert rec.handle("door", "S0") == "stored"
        fs.fail_at = {fs.ops + i: code for i in range(1, 10)}
        assert [rec.handle("door", t) for t in ("E1", "E2")] == ["error", "error"]
        fs.fail_at = {}
        assert rec.handle("door", "R1") == "stored"
        assert [r.tag for r in Journal("/s/journal", fs=fs).records()] == ["S0", "R1"]
        assert door.events.count("error") == 2
    record("resources", method="CrashFS fail_at (ENOSPC, EROFS): tmpfs mount not available",
           acknowledged_but_not_stored=0, recovered_without_restart=True)


@pytest.mark.parametrize("target", ["file", "directory"])
def test_fsync_eio_is_never_acknowledged(tmp_path, monkeypatch, target):
    """fsync -> EIO on the temp file (nothing visible) or on the directory (visible,
    durability unknown): either way the door says "not stored", and the next scan
    after the disk recovers is stored without a restart."""
    real_fsync = os.fsync
    failing = {"on": False, "hits": 0}

    def fsync(fd: int) -> None:
        is_dir = stat.S_ISDIR(os.fstat(fd).st_mode)
        if failing["on"] and is_dir == (target == "directory"):
            failing["hits"] += 1
            raise OSError(errno.EIO, "Input/output error")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    j = Journal(str(tmp_path / "journal"), segment_size=8)
    door = Door()
    rec = Recorder(j, FakeTime(True, 0).clock(tmp_path), door, readers=READERS)
    assert rec.handle("door", "A") == "stored"
    failing["on"] = True
    assert rec.handle("door", "B") == "error" and door.events[-1] == "error"
    failing["on"] = False
    assert rec.handle("door", "C") == "stored"
    assert failing["hits"] == 1
    live = [r.tag for r in j.records()]
    pending = j.summary()["pending"]
    assert pending == len(live), "the in-memory summary must match the journal after an I/O error"
    j.close()
    after = [r.tag for r in Journal(str(tmp_path / "journal")).records()]
    assert after == live
    assert {"A", "C"} <= set(after)
    if target == "file":
        assert after == ["A", "C"]  # the failed write never became visible
    record("resources", **{f"fsync_eio_on_{target}": f"scan refused ({'absent' if 'B' not in after else 'present, not acknowledged'}), next scan stored"})
