"""A command run as root drops to the state directory's owner with exactly that
user's groups (what initgroups(3) gives it), and root's own groups are gone.

A real system user, made for the test with useradd in a supplementary group of
its own, owns a real state directory; the directory's group is deliberately
another group, so a drop that took the directory's gid would show. The parent
gives the child an extra supplementary group of root's with setgroups first:
a drop that forgot setgroups would keep it.
"""

from __future__ import annotations

import contextlib
import grp
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

from tests.support.harness import write_config

REPO = Path(__file__).resolve().parent.parent
TOOLS = ("useradd", "userdel", "groupadd", "groupdel")


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root: it creates a system user and drops privileges to it"
    for tool in TOOLS:
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian's passwd package)"
    return None


pytestmark = pytest.mark.skipif(_missing() is not None, reason=_missing() or "")


def _run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=60)


@pytest.fixture
def owner():
    """(user name, its supplementary group, a group of root's it is not in, a
    world-traversable directory holding its 0700 state directory)."""
    tag = uuid.uuid4().hex[:8]
    user, extra, roots = f"rfidt{tag}", f"rfidg{tag}", f"rfidr{tag}"
    made: list[tuple[str, str]] = []
    base = Path(tempfile.mkdtemp(prefix="privdrop-", dir="/tmp"))  # pytest's tmp_path is 0700 to root
    try:
        for group in (extra, roots):
            _run("groupadd", "--system", group)
            made.append(("groupdel", group))
        _run("useradd", "--system", "--user-group", "--no-create-home", "--shell", "/usr/sbin/nologin",
             "--groups", extra, user)
        made.insert(0, ("userdel", user))
        base.chmod(0o755)
        state = base / "state"
        state.mkdir(mode=0o700)
        # the directory's group is another one than the user's primary group
        os.chown(state, pwd.getpwnam(user).pw_uid, grp.getgrnam(extra).gr_gid)
        yield user, extra, roots, state
    finally:
        shutil.rmtree(base, ignore_errors=True)
        for tool, name in made:
            with contextlib.suppress(subprocess.CalledProcessError):
                _run(tool, name)


CHILD = r"""
import json, os, sys
from agent.runtime.access import become_state_owner
before = sorted(os.getgroups())
become_state_owner(sys.argv[1])
ids = {"before": before, "uid": os.getuid(), "euid": os.geteuid(), "gid": os.getgid(), "egid": os.getegid(),
       "groups": sorted(os.getgroups())}
try:
    os.setuid(0)
    ids["back_to_root"] = True
except PermissionError:
    ids["back_to_root"] = False
print(json.dumps(ids))
"""


def test_drop_keeps_exactly_the_owners_groups(owner):
    user, extra, roots, state = owner
    entry = pwd.getpwnam(user)
    roots_gid = grp.getgrnam(roots).gr_gid

    def with_roots_groups() -> None:  # root's supplementary groups, as sudo may leave them
        os.setgroups([0, roots_gid])

    r = subprocess.run([sys.executable, "-c", CHILD, str(state)], capture_output=True, text=True, timeout=60,
                       cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, preexec_fn=with_roots_groups,
                       check=False)
    assert r.returncode == 0, r.stderr
    ids = json.loads(r.stdout)
    assert roots_gid in ids["before"]  # the child really started with root's extra group
    assert ids["uid"] == ids["euid"] == entry.pw_uid
    assert ids["gid"] == ids["egid"] == entry.pw_gid  # passwd's primary group, not the directory's
    expected = {entry.pw_gid, grp.getgrnam(extra).gr_gid}
    assert set(os.getgrouplist(user, entry.pw_gid)) == expected  # what initgroups(3) would set
    assert set(ids["groups"]) == expected, ids
    assert roots_gid not in ids["groups"] and 0 not in ids["groups"]
    assert ids["back_to_root"] is False  # for good: the saved ids went too


def _system_python() -> str | None:
    """A Python the dropped user can read: the test's own may live under /root (0700),
    and a command imports modules after the drop. The package uses /usr/bin/python3."""
    exe = "/usr/bin/python3"
    if not os.path.exists(exe):
        return None
    major, minor = sys.version_info[:2]
    r = subprocess.run([exe, "-c", f"import sys; print(sys.version_info[:2] == ({major}, {minor}))"],
                       capture_output=True, text=True, check=False)
    return exe if r.stdout.strip() == "True" else None


@pytest.mark.skipif(_system_python() is None,
                    reason="no /usr/bin/python3 of the test's Python version for the dropped user to run")
def test_a_real_command_as_root_leaves_the_owners_files(owner, tmp_path):
    """`agent status --json` as root with no daemon: every file it makes in the state
    directory (lock, clock, journal) is the owner's, so the service can still open them."""
    user, _extra, _roots, state = owner
    exe = _system_python()
    entry = pwd.getpwnam(user)
    cfg = write_config(tmp_path / "c.toml", state_dir=state)
    site = [p for p in sys.path if p.endswith("site-packages") and p.startswith(sys.prefix)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), *site])}
    r = subprocess.run([exe, "-m", "agent", "--config", str(cfg), "status", "--json"], capture_output=True,
                       text=True, timeout=60, cwd=REPO, env=env, check=False)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["daemon"] is False
    made = [state, *state.rglob("*")]
    assert {p.name for p in made} >= {"agent.lock", "journal"}, made
    for p in made:
        st = p.stat()
        assert (st.st_uid, st.st_gid if p != state else entry.pw_gid) == (entry.pw_uid, entry.pw_gid), p
