"""What every doctor check shares: the result line, the thresholds, the context.

A check is a function ``check(ctx) -> list[Result]``. Every text goes through
:func:`result`, which redacts it, so no check can print a secret by mistake.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agent.config import Config
from agent.redact import redact

PASS, WARN, FAIL = "PASS", "WARN", "FAIL"
MB = 1024 * 1024
START_HINT = "systemctl start rfid-agent"


@dataclass(frozen=True)
class Result:
    check: str
    status: str  # PASS | WARN | FAIL
    detail: str
    fix: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"check": self.check, "status": self.status, "detail": self.detail, "fix": self.fix}


def result(check: str, status: str, detail: str, fix: str = "") -> Result:
    """A result with every text redacted (no secret ever reaches the output)."""
    return Result(check, status, redact(detail), redact(fix) if status != PASS else "")


def format_line(r: Result) -> str:
    """``FAIL  daemon          not running -> systemctl start rfid-agent``."""
    line = f"{r.status:<4}  {r.check:<15} {r.detail}"
    if r.fix and r.status != PASS:
        line += f" -> {r.fix}"
    return line


def exit_code(results: list[Result]) -> int:
    return 1 if any(r.status == FAIL for r in results) else 0


@dataclass
class Ctx:
    cfg: Config
    daemon: dict | None = None  # the daemon's status answer, when it runs
    daemon_problem: tuple[str, str] | None = None  # (detail, fix) when it could not be asked
    snapshot: dict | None = None  # journal summary (+ "held"), from the daemon or read locally
    state_ok: bool = False  # the state directory exists and is writable


def bounded(fn: Callable[[], Any], timeout: float) -> Any:
    """``fn()`` in a helper thread; TimeoutError if it takes longer than ``timeout``.

    For calls with no hard deadline of their own (getaddrinfo; an HTTP answer
    whose head trickles in). A call that overruns is abandoned in its daemon
    thread; doctor exits soon after."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            box["error"] = exc

    t = threading.Thread(target=run, name="doctor-bounded", daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise TimeoutError(f"no result within {timeout:g} s")
    if "error" in box:
        raise box["error"]
    return box.get("value")


def errtext(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
