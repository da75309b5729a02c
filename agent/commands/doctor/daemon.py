"""The daemon's side: asking it for its status first, then the ``daemon`` and ``backlog`` checks.

The daemon is asked once, before any check: while it runs it owns the
journal and the devices, and the other checks read its answer instead.
"""

from __future__ import annotations

import os
import time
from datetime import datetime

from agent.commands.doctor.base import FAIL, PASS, START_HINT, WARN, Ctx, Result, result
from agent.errors import DaemonError, NoDaemon
from agent.runtime.control import ask
from agent.runtime.requests import StatusRequest

BACKLOG_WARN_S = 3600.0
BACKLOG_FAIL_S = 86400.0
DAEMON_ASK_TIMEOUT_S = 5.0
_RESTART_HINT = "systemctl restart rfid-agent; journalctl -u rfid-agent"


def ask_daemon(ctx: Ctx) -> None:
    """Fill ``ctx.daemon`` (and ``ctx.snapshot``) from the daemon's status, or
    ``ctx.daemon_problem`` when one seems to run but cannot be asked."""
    sd = ctx.cfg.state_dir
    if not os.path.isdir(sd):
        return
    try:
        answer = ask(sd, StatusRequest().to_wire(), timeout=DAEMON_ASK_TIMEOUT_S)
    except NoDaemon:
        return
    except PermissionError:
        ctx.daemon_problem = (f"permission denied on {sd}/agent.sock",
                              "run agent doctor as root or as the agent's user")
        return
    except DaemonError as exc:
        ctx.daemon_problem = (f"the daemon answered with an error: {exc}", _RESTART_HINT)
        return
    except (OSError, ValueError) as exc:  # timeout, reset, garbage
        why = f"the daemon does not answer on {sd}/agent.sock ({type(exc).__name__}: {exc})"
        ctx.daemon_problem = (why, _RESTART_HINT)
        return
    if isinstance(answer, dict):
        ctx.daemon = answer
        ctx.snapshot = answer
    else:
        ctx.daemon_problem = ("the daemon gave an unexpected status answer", "systemctl restart rfid-agent")


def check_daemon(ctx: Ctx) -> list[Result]:
    d = ctx.daemon
    if d is not None:
        up = float(d.get("uptime_seconds") or 0)
        return [result("daemon", PASS,
                       f"running (pid {d.get('pid')}, version {d.get('version')}, up {up / 60:.0f} min)")]
    if ctx.daemon_problem is not None:
        return [result("daemon", FAIL, ctx.daemon_problem[0], ctx.daemon_problem[1])]
    return [result("daemon", FAIL, "daemon not running", START_HINT)]


def backlog_result(snapshot: dict | None, now: float | None = None) -> Result:
    """The backlog check from a status/summary dict (pure)."""
    if snapshot is None:
        return result("backlog", WARN, "unknown: the journal could not be read", "see the journal check")
    pending = int(snapshot.get("pending") or 0)
    oldest = snapshot.get("oldest_pending")
    if not pending or not oldest:
        return result("backlog", PASS, "nothing waiting to be delivered" if not pending else f"{pending} pending")
    try:
        age = (time.time() if now is None else now) - datetime.fromisoformat(str(oldest)).timestamp()
    except ValueError:
        return result("backlog", WARN, f"{pending} pending; oldest has an unreadable time {oldest!r}")
    hours = age / 3600
    text = f"{pending} scan(s) pending, the oldest captured {hours:.1f} h ago"
    fix = "agent status / agent flush show why; check the iflow and clock lines above"
    if age > BACKLOG_FAIL_S:
        return result("backlog", FAIL, text, fix)
    if age > BACKLOG_WARN_S:
        return result("backlog", WARN, text, fix)
    return result("backlog", PASS, text)


def check_backlog(ctx: Ctx) -> list[Result]:
    return [backlog_result(ctx.snapshot)]
