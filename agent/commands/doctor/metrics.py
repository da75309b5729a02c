"""The ``metrics`` check: is ``rfid_agent.prom`` where node_exporter reads it.

Off (no directory, or ``metrics.textfile_dir = ""``) is a PASS: many sites run
no Prometheus. With a daemon running, the file must be fresh; without one, the
service's user must be able to write the directory (its mode, or an ACL entry
as the package sets, which the mode bits do not show).
"""

from __future__ import annotations

import os
import time

from agent.commands.doctor.base import PASS, WARN, Ctx, Result, result
from agent.commands.doctor.reader_access import _permits, service_user
from agent.config import MetricsConfig
from agent.metrics.exposition import FILE_NAME

DEFAULT_DIR = MetricsConfig().textfile_dir

_ACL = "system.posix_acl_access"
_ACL_USER, _ACL_MASK = 0x02, 0x10  # entry tags of the kernel's xattr format (linux/posix_acl_xattr.h)


def _fix(directory: str, user: str) -> str:
    return (f"sudo setfacl -m u:{user}:rwx {directory}; sudo systemctl restart rfid-agent "
            "(journalctl -u rfid-agent | grep metrics says why it cannot write)")


def acl_lets_write(directory: str, uid: int) -> bool:
    """True when the directory's access ACL gives ``uid`` write and search (its
    own entry, and the mask, which bounds it); False without such an entry."""
    try:
        raw = os.getxattr(directory, _ACL)
    except OSError:
        return False
    if len(raw) < 4 or int.from_bytes(raw[:4], "little") != 2:
        return False
    user = mask = None
    for i in range(4, len(raw) - 7, 8):
        tag, perm, eid = (int.from_bytes(raw[i:i + 2], "little"), int.from_bytes(raw[i + 2:i + 4], "little"),
                          int.from_bytes(raw[i + 4:i + 8], "little"))
        if tag == _ACL_USER and eid == uid:
            user = perm
        elif tag == _ACL_MASK:
            mask = perm
    return user is not None and user & 3 == 3 and (mask is None or mask & 3 == 3)


def check_metrics(ctx: Ctx) -> list[Result]:
    mc = ctx.cfg.metrics
    if not mc.textfile_dir:
        return [result("metrics", PASS, 'off (metrics.textfile_dir = "")')]
    directory = mc.textfile_dir
    if not os.path.isdir(directory):
        if directory != DEFAULT_DIR:  # set on purpose: a typo, or node_exporter pointed elsewhere
            return [result("metrics", WARN, f"metrics.textfile_dir {directory} does not exist: no metrics",
                           "create it, or set it to node_exporter's --collector.textfile.directory")]
        return [result("metrics", PASS, f"off: {directory} does not exist (install prometheus-node-exporter "
                                        "for Prometheus to see this door)")]
    path = os.path.join(directory, FILE_NAME)
    user = service_user(ctx.cfg.state_dir)
    if ctx.daemon is not None:
        try:
            age = time.time() - os.stat(path).st_mtime
        except OSError:
            return [result("metrics", WARN, f"the daemon has not written {path}", _fix(directory, user.name))]
        if age > max(3 * mc.interval, 60.0):
            return [result("metrics", WARN, f"{path} was last written {age:.0f} s ago (every {mc.interval:g} s "
                                            "expected)", _fix(directory, user.name))]
        return [result("metrics", PASS, f"{path} written {max(age, 0):.0f} s ago")]
    try:
        st = os.stat(directory)
    except OSError as exc:
        return [result("metrics", WARN, f"cannot read {directory}: {exc.strerror or exc}")]
    if _permits(st, user, 3) or acl_lets_write(directory, user.uid):
        return [result("metrics", PASS, f"{directory}: the daemon writes {FILE_NAME} there when it runs")]
    return [result("metrics", WARN, f"{user.name} ({user.source}) may not write in {directory}",
                   _fix(directory, user.name))]
