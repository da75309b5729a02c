"""An unusable state_dir is one line naming the directory and the problem, exit 2:
for `agent run` and for every command that opens the journal without a daemon.
A full disk is the one exception, exit 1: it can clear by itself, and systemd
restarts the unit on 1 but never on 2 (RestartPreventExitStatus=2).

The tests run as root here, and root ignores permission bits: "read-only" is a
real read-only bind mount, "no space" a real tmpfs without a free inode.
"""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from agent.fsinfo import StateDirError, StateDirFull, not_a_directory, state_dir_error
from agent.journal.store import Journal
from tests.support.harness import run_cli, write_config
from tests.support.mounts import NEEDS_MOUNTED_TMPFS, NEEDS_READ_ONLY, read_only, tmpfs

COMMANDS = [("run",), ("status",), ("flush",), ("rejected",)]
IFLOW = {"url": "http://127.0.0.1:9/store_attendances", "access_token": "tok-123456"}  # never reached


def config(tmp_path: Path, state: Path, **kw) -> Path:
    return write_config(tmp_path / "c.toml", state_dir=state, iflow=IFLOW, **kw)


def one_line(r) -> str:
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr  # no traceback
    assert "Traceback" not in r.stderr
    return lines[0]


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: a[0])
def test_state_dir_under_a_regular_file(tmp_path, args):
    blocker = tmp_path / "afile"
    blocker.write_text("not a directory")
    cfg = config(tmp_path, blocker / "state")
    r = run_cli(cfg, *args, timeout=30)
    assert r.returncode == 2, (r.returncode, r.stderr)
    line = one_line(r)
    assert str(blocker / "state") in line and f"{blocker} is not a directory" in line, line


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: a[0])
def test_state_dir_that_is_a_regular_file(tmp_path, args):
    blocker = tmp_path / "afile"
    blocker.write_text("not a directory")
    r = run_cli(config(tmp_path, blocker), *args, timeout=30)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert f"{blocker} is not a directory" in one_line(r)


@NEEDS_READ_ONLY
@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: a[0])
def test_state_dir_on_a_read_only_file_system(tmp_path, args):
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    Journal(str(state / "journal")).close()  # an existing journal, then the disk goes read-only
    with read_only(state):
        cfg = config(tmp_path, state)
        r = run_cli(cfg, *args, timeout=30)
    assert r.returncode == 2, (r.returncode, r.stderr)
    line = one_line(r)
    assert str(state) in line and "read-only file system" in line and "read-write" in line, line


@NEEDS_READ_ONLY
def test_a_read_only_state_dir_not_created_yet(tmp_path):
    parent = tmp_path / "ro"
    with read_only(parent):
        r = run_cli(config(tmp_path, parent / "state"), "run", timeout=30)
    assert r.returncode == 2 and "read-only file system" in one_line(r), r.stderr


@NEEDS_MOUNTED_TMPFS
def test_no_space_to_create_the_state_dir_exits_1_so_systemd_retries(tmp_path):
    with tmpfs(tmp_path / "full", "nr_inodes=1") as full:
        cfg = config(tmp_path, full / "state", extra={"journal": {"allow_volatile": True}})
        r = run_cli(cfg, "run", timeout=30)
    assert r.returncode == 1, r.stderr  # was 2 before issue 15: a full disk is no config error
    line = one_line(r)
    assert str(full / "state") in line and "no space left" in line, line


@NEEDS_MOUNTED_TMPFS
def test_no_space_in_an_existing_state_dir_exits_1(tmp_path):
    """The directory exists and holds a journal; the disk then fills up (a tmpfs
    with every block taken): `agent run` cannot start, exit 1, not 2."""
    with tmpfs(tmp_path / "full", "size=256k") as full:
        state = full / "state"
        state.mkdir(mode=0o700)
        Journal(str(state / "journal")).close()
        filler = full / "filler"
        with open(filler, "wb") as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
        r = run_cli(config(tmp_path, state), "run", timeout=30)
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]  # after the warning that a tmpfs loses scans
    assert last.startswith(f"agent: state_dir {state}: no space left"), r.stderr


def test_state_dir_error_texts():
    assert isinstance(state_dir_error("/x", OSError(errno.EROFS, "Read-only file system")), StateDirError)
    assert state_dir_error("/x", OSError(errno.EROFS, "x")).exit_code == 2
    for full in (errno.ENOSPC, errno.EDQUOT):  # can clear by itself: systemd must keep retrying
        err = state_dir_error("/x", OSError(full, "x"))
        assert isinstance(err, StateDirFull) and isinstance(err, StateDirError) and err.exit_code == 1
        assert "no space left" in str(err)
    text = str(state_dir_error("/var/lib/a", PermissionError(errno.EACCES, "Permission denied")))
    assert text.startswith("state_dir /var/lib/a: permission denied") and "chown" in text
    assert "Input/output error" in str(state_dir_error("/x", OSError(errno.EIO, "Input/output error")))
    assert not_a_directory(str(Path("/"))) is None
