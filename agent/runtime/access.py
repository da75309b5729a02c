"""One writer: reach the journal through the daemon, or take it when none runs.

The daemon owns the journal. A command first asks it over the control socket;
when nobody answers it takes the state directory's lock and opens the journal
itself, as the directory's owner (so the service's files stay the service's).
Both ways end in the same operation function (:mod:`agent.runtime.operations`),
given the same typed request (:mod:`agent.runtime.requests`).
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any, Callable, Iterator, TypeVar

from agent.config import Config
from agent.errors import CommandError, DaemonError, NoDaemon
from agent.fsinfo import not_a_directory, state_dir_error
from agent.journal.lock import StateLock
from agent.runtime.control import ask
from agent.runtime.requests import Request

LOCK_WAIT_S = 15.0  # how long a command waits for a journal locked by a silent process

T = TypeVar("T")


def owner_of(path: str) -> tuple[int, int, list[int]] | None:
    """(uid, gid, supplementary groups) to take on for the owner of ``path`` when
    this process runs as root and the owner is someone else; None when nothing is
    to change.

    What ``initgroups(3)`` gives a login: the primary group from the owner's
    passwd entry (not the directory's group, which may be anyone's) and every
    group that lists the owner. A uid with no passwd entry has no groups to
    look up: the directory's group only."""
    if os.geteuid() != 0:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    if st.st_uid == 0:
        return None
    import pwd  # only root pays for the passwd lookup

    try:
        entry = pwd.getpwuid(st.st_uid)
    except KeyError:
        return st.st_uid, st.st_gid, [st.st_gid]
    return st.st_uid, entry.pw_gid, os.getgrouplist(entry.pw_name, entry.pw_gid)


def become_state_owner(state_dir: str) -> None:
    """Run as root with no daemon? Drop to the state directory's owner for good,
    with exactly that user's groups (root's supplementary groups go too):
    setgroups first, while still root, then the gid, the uid last."""
    ids = owner_of(state_dir)
    if ids is None:
        return
    uid, gid, groups = ids
    os.setgroups(groups)
    os.setgid(gid)
    os.setuid(uid)


@contextlib.contextmanager
def acting_as_owner(path: str) -> Iterator[None]:
    """Act as the owner of ``path`` meanwhile (effective ids only, restored after),
    so that files created there (the lock file, the journal directory) stay usable
    by the daemon's dedicated user: for checks that must come back to root."""
    ids = owner_of(path)
    if ids is None:
        yield
        return
    uid, gid, groups = ids
    old_groups, egid = os.getgroups(), os.getegid()
    os.setgroups(groups)
    os.setegid(gid)
    try:
        os.seteuid(uid)
        try:
            yield
        finally:
            os.seteuid(0)
    finally:
        os.setegid(egid)
        os.setgroups(old_groups)


def call(cfg: Config, req: Request, progress: Callable[[dict], None] | None = None, *,
         timeout: float = 30.0) -> tuple[Any, bool]:
    """Run the operation ``req`` where the journal is: in the daemon, or here
    under the lock. Returns (answer, answered_by_daemon)."""

    def here() -> Any:
        # Imported only when no daemon answered: the journal, the clock and the
        # backlog count are what `agent status` with a daemon must not load.
        from agent.runtime.operations import run_here

        return run_here(cfg, req, progress)

    return dispatch(cfg, req.to_wire(), here, progress, timeout=timeout)


def dispatch(cfg: Config, request: dict, local: Callable[[], T],
             on_event: Callable[[Any], None] | None = None, *, timeout: float = 30.0) -> tuple[T, bool]:
    """Ask the daemon; if none runs, take the lock, drop to the state owner and
    run ``local()``. Returns (result, answered_by_daemon)."""
    blocked = not_a_directory(cfg.state_dir)  # under a regular file: a config error, not "no journal yet"
    if blocked is not None:
        raise blocked
    if not os.path.isdir(cfg.state_dir):
        raise CommandError(f"no journal yet: {cfg.state_dir} does not exist (has `agent run` ever started?)")
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        try:
            return ask(cfg.state_dir, request, on_event, timeout=timeout), True
        except NoDaemon:
            pass
        except DaemonError as exc:
            raise CommandError(f"the daemon answered: {exc}") from None
        except PermissionError:
            raise CommandError(f"permission denied on {cfg.state_dir}/agent.sock: "
                               "run as root or as the agent's user") from None
        lock = StateLock(cfg.state_dir)
        try:
            with acting_as_owner(cfg.state_dir):  # a lock file root made would lock the daemon out
                got = lock.acquire(timeout=0.3)
        except PermissionError:
            raise CommandError(f"permission denied on {cfg.state_dir}: run as root or as the agent's user") from None
        except OSError as exc:  # read-only, full: one line naming the directory (exit 2)
            raise state_dir_error(cfg.state_dir, exc) from None
        if got:
            try:
                become_state_owner(cfg.state_dir)
                return local(), False
            finally:
                lock.release()
        if time.monotonic() > deadline:
            raise CommandError("the journal is locked by a process that does not answer on the control "
                               "socket (another `agent` command?); try again")
