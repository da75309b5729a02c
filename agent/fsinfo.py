"""What a directory is stored on, and why it cannot be used: the state directory's checks.

An fsync on tmpfs, ramfs, a zram device or an overlay whose upper layer is in
RAM (Raspberry Pi OS's read-only "overlay file system", log2ram-style setups)
returns at once and promises nothing: every scan is gone at the next power
cut. :func:`storage_of` tells, from ``/proc/self/mountinfo``, whether a path
lives on such a file system; the parsing (:func:`parse_mountinfo`) and the
verdict (:func:`classify`) are pure, so they are tested with real lines.

An unusable state directory (read-only, under a regular file, no permission,
no space) is a :class:`StateDirError`: one line, exit 2, a person must change
something. A full disk is the exception (:class:`StateDirFull`, exit 1): it can
clear by itself (a log rotated, a quota raised), so systemd must keep retrying,
and the unit's ``RestartPreventExitStatus=2`` stops retrying only on exit 2.
"""

from __future__ import annotations

import errno
import os
import re
from typing import Callable, NamedTuple

from agent.errors import EXIT_FAIL, ConfigError

__all__ = [
    "PERSISTENT",
    "UNKNOWN",
    "VOLATILE",
    "Mount",
    "StateDirError",
    "StateDirFull",
    "Storage",
    "classify",
    "mount_of",
    "nearest_existing",
    "not_a_directory",
    "parse_mountinfo",
    "state_dir_error",
    "storage_of",
]

PERSISTENT, VOLATILE, UNKNOWN = "persistent", "volatile", "unknown"
MOUNTINFO = "/proc/self/mountinfo"

# File systems whose content lives only in RAM ("rootfs" is the initramfs).
RAM_FS = frozenset({"tmpfs", "ramfs", "rootfs"})
_ZRAM = re.compile(r"zram\d+")
_ESCAPE = re.compile(r"\\([0-7]{3})")
_UPPERDIR = re.compile(r"(?:^|,)upperdir=((?:\\.|[^,\\])*)")
_MAX_DEPTH = 8  # overlays stacked deeper than this are not followed


class StateDirError(ConfigError):
    """``state_dir`` cannot hold the journal (or not durably); one line, exit 2."""


class StateDirFull(StateDirError):
    """No space or quota left in ``state_dir``: exit 1, since it can clear without a
    config change and the service must then start again by itself."""

    exit_code = EXIT_FAIL


class Mount(NamedTuple):
    """One line of ``/proc/self/mountinfo`` (proc(5)), with escapes decoded."""

    mount_id: int
    parent_id: int
    device: str  # "major:minor"
    root: str
    mount_point: str
    options: str
    fstype: str
    source: str
    super_options: str


class Storage(NamedTuple):
    """Where a path is stored: ``kind`` is PERSISTENT, VOLATILE or UNKNOWN; ``what`` says why."""

    kind: str
    what: str


def _unescape(field: str) -> str:
    # mountinfo writes space, tab, newline and backslash as \040 \011 \012 \134
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


def parse_mountinfo(text: str) -> list[Mount]:
    """Every well-formed line of a mountinfo text, in order; malformed lines are skipped."""
    mounts: list[Mount] = []
    for line in text.splitlines():
        fields = line.split(" ")
        try:
            sep = fields.index("-", 6)  # optional fields (shared:N, master:N) end at "-"
            mounts.append(Mount(int(fields[0]), int(fields[1]), fields[2], _unescape(fields[3]),
                                _unescape(fields[4]), fields[5], fields[sep + 1], _unescape(fields[sep + 2]),
                                fields[sep + 3] if len(fields) > sep + 3 else ""))
        except (ValueError, IndexError):
            continue
    return mounts


def _inside(path: str, mount_point: str) -> bool:
    return mount_point == "/" or path == mount_point or path.startswith(mount_point.rstrip("/") + "/")


def mount_of(path: str, mounts: list[Mount]) -> Mount | None:
    """The mount holding absolute ``path``: the longest mount point above it; of
    mounts stacked on one point, the last (the one on top)."""
    best: Mount | None = None
    for m in mounts:
        if _inside(path, m.mount_point) and (best is None or len(m.mount_point) >= len(best.mount_point)):
            best = m
    return best


def _upperdir(m: Mount) -> str | None:
    found = _UPPERDIR.search(m.super_options)
    return _unescape(found.group(1)).replace("\\", "") if found else None


def classify(path: str, mounts: list[Mount],
             block_name: Callable[[str], str | None] | None = None) -> Storage:
    """Whether absolute ``path`` survives a power cut, judged from ``mounts``.

    ``block_name`` maps a "major:minor" to the kernel's device name (zram0),
    for a zram device mounted under another name; without it only the mount's
    source is looked at. An overlay is judged by the mount holding its upper
    layer; an upper layer that cannot be found in ``mounts`` is UNKNOWN."""
    seen: list[str] = []
    for _ in range(_MAX_DEPTH):
        m = mount_of(path, mounts)
        if m is None:
            return Storage(UNKNOWN, f"no mount found for {path}")
        where = f"{m.fstype} at {m.mount_point}"
        seen.append(where)
        chain = " whose upper layer is on ".join(seen)
        if m.fstype in RAM_FS:
            return Storage(VOLATILE, f"{chain} (in RAM)")
        device = os.path.basename(m.source) if m.source.startswith("/dev/") else None
        if not (device and _ZRAM.fullmatch(device)) and block_name is not None:
            device = block_name(m.device)
        if device and _ZRAM.fullmatch(device):
            return Storage(VOLATILE, f"{chain} (the compressed RAM disk /dev/{device})")
        if m.fstype != "overlay":
            return Storage(PERSISTENT, f"{chain} ({m.source})")
        upper = _upperdir(m)
        if not upper or not upper.startswith("/"):
            return Storage(UNKNOWN, f"{chain}: its upper layer is not named")
        holder = mount_of(os.path.normpath(upper), mounts)
        if holder is None or holder is m:
            # e.g. in a container, or an initramfs mount the new root no longer shows
            return Storage(UNKNOWN, f"{chain}: its upper layer {upper} is not visible here")
        path = os.path.normpath(upper)
    return Storage(UNKNOWN, f"{' on '.join(seen)}: overlays nested too deep to follow")


def nearest_existing(path: str) -> str:
    """``path`` itself, or its nearest ancestor that exists (a directory not created yet)."""
    p = os.path.abspath(path)
    while not os.path.lexists(p):
        parent = os.path.dirname(p)
        if parent == p:
            break
        p = parent
    return p


def _sys_block_name(device: str) -> str | None:
    try:
        return os.path.basename(os.readlink(f"/sys/dev/block/{device}"))
    except OSError:
        return None


def storage_of(path: str, mountinfo: str = MOUNTINFO) -> Storage:
    """:func:`classify` for ``path`` (or, not created yet, where it would be) on this machine."""
    try:
        with open(mountinfo, encoding="utf-8", errors="surrogateescape") as f:
            mounts = parse_mountinfo(f.read())
    except OSError as exc:
        return Storage(UNKNOWN, f"cannot read {mountinfo}: {exc.strerror or exc}")
    return classify(os.path.realpath(nearest_existing(path)), mounts, _sys_block_name)


_PROBLEMS = {
    errno.EROFS: ("is on a read-only file system", "put state_dir on a file system mounted read-write"),
    errno.EACCES: ("permission denied", "run as root or as the agent's user, or chown the directory to it"),
    errno.ENOSPC: ("no space left on the device", "free space on that file system (agent doctor shows how much)"),
    errno.ENOTDIR: ("a part of the path is a file, not a directory", "set state_dir to a directory path"),
}
_PROBLEMS[errno.EPERM] = _PROBLEMS[errno.EACCES]
_PROBLEMS[errno.EDQUOT] = _PROBLEMS[errno.ENOSPC]
_PROBLEMS[errno.EEXIST] = _PROBLEMS[errno.ENOTDIR]


def not_a_directory(path: str) -> StateDirError | None:
    """The error for a ``path`` that is, or lies under, something other than a directory."""
    found = nearest_existing(path)
    if os.path.isdir(found):
        return None
    what = f"{found} is not a directory" if found == os.path.abspath(path) else \
        f"it cannot be created: {found} is not a directory"
    return StateDirError(f"state_dir {path}: {what}; set state_dir to a directory path "
                         "(default /var/lib/rfid-agent)")


def state_dir_error(path: str, exc: OSError) -> StateDirError:
    """One line naming ``path`` and why ``exc`` makes it unusable, with what to do."""
    if exc.errno in (errno.ENOTDIR, errno.EEXIST):
        blocked = not_a_directory(path)
        if blocked is not None:
            return blocked
    problem, fix = _PROBLEMS.get(exc.errno or 0, (exc.strerror or str(exc) or type(exc).__name__,
                                                   "check the directory and its file system"))
    cls = StateDirFull if exc.errno in (errno.ENOSPC, errno.EDQUOT) else StateDirError
    return cls(f"state_dir {path}: {problem}; {fix}")
