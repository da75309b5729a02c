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
from agent.metrics.exposition import FILE_NAME

_ACL = "system.posix_acl_access"


def _fix(directory: str, user: str) -> str:
    return (f"sudo setfacl -m u:{user}:rwx {directory}; sudo systemctl restart rfid-agent "
            "(journalctl -u rfid-agent | grep metrics says why it cannot write)")


def _has_acl(directory: str) -> bool:
    try:
        return _ACL in os.listxattr(directory)
    except OSError:
        return False


def check_metrics(ctx: Ctx) -> list[Result]:
    mc = ctx.cfg.metrics
    if not mc.textfile_dir:
        return [result("metrics", PASS, 'off (metrics.textfile_dir = "")')]
    directory = mc.textfile_dir
    if not os.path.isdir(directory):
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
    if _permits(st, user, 3) or _has_acl(directory):
        return [result("metrics", PASS, f"{directory}: the daemon writes {FILE_NAME} there when it runs")]
    return [result("metrics", WARN, f"{user.name} ({user.source}) may not write in {directory}",
                   _fix(directory, user.name))]
