"""The storage checks: ``state_dir``, ``state_dir_mode``, ``state_durable``, ``disk_space``, ``journal``.

The journal is read through the running daemon when there is one; otherwise
doctor takes the state lock without waiting and opens the journal itself,
acting as the state directory's owner so that the files it may create (the
lock file) stay the daemon's.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from typing import Any

from agent.commands.doctor.base import (
    FAIL,
    MB,
    PASS,
    START_HINT,
    WARN,
    Ctx,
    Result,
    errtext,
    result,
)
from agent.delivery.backlog import count_backlog
from agent.fsinfo import PERSISTENT, VOLATILE, nearest_existing, storage_of
from agent.journal.lock import StateLock
from agent.journal.pins import PINS_FILE
from agent.runtime.access import acting_as_owner
from agent.runtime.wiring import JOURNAL_DIR, make_clock, open_journal

DISK_FAIL_BYTES = 50 * MB
DISK_WARN_BYTES = 500 * MB
_NOT_A_DIR_FIX = "set state_dir to a directory path (default /var/lib/rfid-agent)"

_EMPTY: dict[str, Any] = {"pending": 0, "delivered": 0, "rejected": 0, "oldest_pending": None,
                          "quarantined": [], "held": {}}


def _missing_state_dir(sd: str) -> tuple[Result, str | None]:
    """The state_dir result for a path that does not exist, and where to measure free space."""
    anc = nearest_existing(sd)
    if not os.path.isdir(anc):
        return result("state_dir", FAIL, f"{sd} cannot be created: {anc} is not a directory", _NOT_A_DIR_FIX), None
    if os.geteuid() != 0 and not os.access(anc, os.W_OK | os.X_OK):
        return result("state_dir", FAIL, f"{sd} cannot be created: no write permission on {anc}",
                      f"create it: install -d -m 700 -o <agent user> {sd}"), anc
    return result("state_dir", WARN, f"{sd} does not exist yet (the daemon creates it)", START_HINT), anc


def _existing_state_dir(ctx: Ctx, sd: str) -> list[Result]:
    out: list[Result] = []
    try:
        with acting_as_owner(sd):
            fd, tmp = tempfile.mkstemp(prefix=".doctor-", dir=sd)
            os.close(fd)
            os.unlink(tmp)
    except OSError as exc:
        out.append(result("state_dir", FAIL, f"{sd} is not writable: {errtext(exc)}",
                          f"chown <agent user> {sd}; chmod 700 {sd} (and check the file system is "
                          "mounted read-write)"))
    else:
        ctx.state_ok = True
        out.append(result("state_dir", PASS, f"{sd} exists and is writable"))
    mode = stat.S_IMODE(os.stat(sd).st_mode)
    if mode & 0o077:
        out.append(result("state_dir_mode", WARN, f"{sd} is accessible to other users (mode {mode:04o}); "
                          "the journal identifies people", f"chmod 700 {sd}"))
    else:
        out.append(result("state_dir_mode", PASS, f"mode {mode:04o}"))
    return out


def _disk_space(at: str) -> Result:
    try:
        free = shutil.disk_usage(at).free
    except OSError as exc:
        return result("disk_space", WARN, f"cannot measure free space at {at}: {errtext(exc)}")
    text = f"{free / MB:.0f} MB free at {at}"
    fix = "free space on that file system (old logs: journalctl --vacuum-size=50M)"
    if free < DISK_FAIL_BYTES:
        return result("disk_space", FAIL, f"only {text}: scans may fail to be stored", fix)
    if free < DISK_WARN_BYTES:
        return result("disk_space", WARN, f"only {text}", fix)
    return result("disk_space", PASS, text)


def _durable(ctx: Ctx, sd: str) -> Result:
    """The same judgement `agent run` makes before it acknowledges any scan."""
    storage = storage_of(sd)
    if storage.kind == PERSISTENT:
        return result("state_durable", PASS, f"on {storage.what}")
    fix = ("put state_dir on a persistent partition (e.g. /var/lib/rfid-agent on the SD card or a USB disk); "
           "journal.allow_volatile = true is for demos and tests only")
    if storage.kind == VOLATILE:
        if ctx.cfg.journal.allow_volatile:
            return result("state_durable", WARN, f"on {storage.what}: scans do NOT survive a power cut "
                          "(allowed by journal.allow_volatile)", fix)
        return result("state_durable", FAIL, f"on {storage.what}: every scan is lost at the next power cut; "
                      "agent run refuses to start", fix)
    return result("state_durable", WARN, f"cannot tell whether it survives a power cut: {storage.what}",
                  "check with findmnt -T " + sd + " that it is on a disk partition, not in RAM")


def check_state_dir(ctx: Ctx) -> list[Result]:
    sd = ctx.cfg.state_dir
    space_at: str | None = sd
    if not os.path.lexists(sd):
        first, space_at = _missing_state_dir(sd)
        out = [first]
    elif not os.path.isdir(sd):
        space_at = None
        out = [result("state_dir", FAIL, f"{sd} exists but is not a directory", _NOT_A_DIR_FIX)]
    else:
        out = _existing_state_dir(ctx, sd)
    if space_at is not None:
        out.append(_durable(ctx, sd))
        out.append(_disk_space(space_at))
    return out


def _corrupt_files(state_dir: str) -> list[str]:
    jdir = os.path.join(state_dir, JOURNAL_DIR)
    try:
        names = os.listdir(jdir)
    except OSError:
        return []
    return sorted(os.path.join(jdir, n) for n in names if ".corrupt-" in n)


def _read_locally(ctx: Ctx) -> tuple[dict, str] | Result:
    """(summary with "held", where it came from), or the journal result when it cannot be read."""
    cfg = ctx.cfg
    sd = cfg.state_dir
    try:
        lock = StateLock(sd)
        with acting_as_owner(sd):  # the lock file may be created: it must stay the daemon's
            got = lock.acquire(timeout=0)
        if not got:
            return result("journal", WARN, "not checked: locked by another agent command",
                          "run agent doctor again in a moment")
        try:
            if not os.path.isdir(os.path.join(sd, JOURNAL_DIR)):
                return dict(_EMPTY), "empty: no scan recorded yet"
            # Opening creates nothing (the directory exists); it may only
            # delete stray temp files and move unreadable segments aside.
            journal = open_journal(cfg)
            try:
                snap = journal.summary()
                backlog = count_backlog(journal, make_clock(cfg), cfg.time.unsynced)
                snap["held"], snap["held_detail"] = dict(backlog.held), backlog.detail
            finally:
                journal.close()
        finally:
            lock.release()
    except OSError as exc:
        return result("journal", FAIL, f"the journal in {sd} cannot be opened: {errtext(exc)}",
                      f"check ownership and permissions of {sd} (chown -R <agent user> {sd})")
    except Exception as exc:  # noqa: BLE001 - any open failure is a finding
        return result("journal", FAIL, f"the journal in {sd} cannot be opened: {type(exc).__name__}: {exc}",
                      "see journalctl -u rfid-agent; keep a copy of the state directory")
    return snap, "read directly (no daemon running)"


def check_journal(ctx: Ctx) -> list[Result]:
    sd = ctx.cfg.state_dir
    if ctx.daemon is not None:
        snap, source = ctx.daemon, "via the running daemon"
    elif not os.path.isdir(sd):
        ctx.snapshot = dict(_EMPTY)
        return [result("journal", WARN, "no journal yet (the state directory does not exist)", START_HINT)]
    elif ctx.daemon_problem is not None:
        return [result("journal", WARN, f"not checked: {ctx.daemon_problem[0]}", ctx.daemon_problem[1])]
    else:
        found = _read_locally(ctx)
        if isinstance(found, Result):
            return [found]
        snap, source = found
        ctx.snapshot = snap
    quarantined = sorted(set(snap.get("quarantined") or []) | set(_corrupt_files(sd)))
    failed = f", {snap['failed']} failed" if snap.get("failed") else ""
    counts = (f"{snap.get('pending', 0)} pending, {snap.get('delivered', 0)} delivered, "
              f"{snap.get('rejected', 0)} rejected{failed}")
    pins = [q for q in quarantined if os.path.basename(q).startswith(PINS_FILE + ".corrupt-")]
    segments = [q for q in quarantined if q not in pins]
    if segments:
        return [result("journal", FAIL, f"{len(segments)} unreadable segment(s) moved aside, their scans are NOT "
                       f"delivered: {', '.join(segments)} ({counts})",
                       "keep the file(s) for inspection; recover the records by hand, then delete them")]
    if pins:
        return [result("journal", WARN, f"the send-time pins file was unreadable and moved aside: "
                       f"{', '.join(pins)}; scans resent after an interruption may reach iFlow twice if the "
                       f"clock was corrected ({counts})",
                       "check the disk (agent doctor, dmesg); delete the file once the backlog is delivered")]
    old = snap.get("unresolved_old") or 0
    if old:
        # Kept past retention only because nobody has acted on them: say so.
        days = ctx.cfg.journal.retention_days
        since = str(snap.get("oldest_unresolved") or "")[:10]
        return [result("journal", WARN, f"{old} rejected or failed record(s) older than retention_days "
                       f"({days:g} d) still wait for a person, the oldest since {since} ({counts})",
                       "agent rejected lists them; then agent rejected --retry ID... (or --all) once the "
                       "cause is fixed in iFlow, or --dismiss ID... (or --all) to let retention delete them")]
    return [result("journal", PASS, f"{counts} ({source})")]
