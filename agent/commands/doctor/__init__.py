"""``agent doctor``: the technician's checklist, one line per check.

Each check gives ``PASS``, ``WARN`` or ``FAIL``, its name, what it found and,
when it did not pass, what to do. In order:

=================  =============================================================
``config``         the file loaded (else the CLI already stopped with exit 2);
                   every config warning as a WARN
``token``          the iFlow token is present; its file (``access_token_file``)
                   is not readable by group/others, or the config file holding
                   it inline is not world-readable
``state_dir``      exists (or can be created) and is writable (a temp file is
                   created and removed)
``state_dir_mode`` 0700 (WARN otherwise: scans identify people)
``state_durable``  not in RAM (tmpfs, ramfs, zram, an overlay whose upper
                   layer is in RAM): FAIL, as ``agent run`` refuses it; WARN
                   when ``journal.allow_volatile`` allows it or it cannot tell
``disk_space``     FAIL under 50 MB free, WARN under 500 MB
``journal``        opens (the daemon's status when it runs; otherwise the
                   journal lock is taken without waiting and the journal
                   opened); a quarantined (unreadable) segment is a FAIL,
                   an unreadable send-time pins file a WARN
``reader.NAME``    the device is present and permitted (or the running daemon
                   holds it, which is fine); a present device then gets
                   ``reader_access.NAME``: the service's user (the state
                   directory's owner, else ``rfid-agent``) with the unit's
                   groups may read and write it, and for a serial port
                   ``reader_console.NAME``: no kernel console (``console=``)
                   and no getty on its tty. A PN532 (``protocol = "pn532"``)
                   then gets ``reader_pn532.NAME``: with no daemon running it
                   is opened as the daemon would and must answer
                   GetFirmwareVersion; with ``reset_pin``, ``reader_reset.NAME``
                   (the line is found and gpiod imports). A Wiegand reader's device is its GPIO
                   chip (``reader_access.NAME``: group gpio), then
                   ``reader_gpiod.NAME`` (libgpiod v2's binding imports; v1
                   is named with what to install), ``reader_lines.NAME`` (D0
                   and D1 found, held by nobody else, idle high when no daemon
                   runs) and ``reader_liveness.NAME``, a WARN that stays: a
                   dead Wiegand reader cannot be told from a quiet door
``gpio``           the gpiozero pin factory constructs (only when
                   ``feedback.backend = "gpio"``)
``clock``          where the time comes from (NTP, iFlow's HTTPS Date, RTC)
                   and its error; WARN/FAIL with what to do when neither
                   works; WARN on a Date/NTP disagreement or a wall clock
                   outside iFlow's certificate
``iflow_dns``      the iFlow host resolves
``iflow_connect``  a TCP connection opens
``iflow_tls``      the TLS handshake passes (https; a WARN for http://)
``iflow_answers``  one GET with the token and ``csv_data=[]`` gets an HTTP
                   answer; 401/403 means the token was refused (FAIL)
``metrics``        node_exporter's textfile directory: off when absent; with a
                   daemon, ``rfid_agent.prom`` written within 3 intervals;
                   without, the service's user may write there (mode or ACL)
``daemon``         the daemon answers on its control socket
``backlog``        the oldest pending scan: WARN over 1 h, FAIL over 24 h
=================  =============================================================

Every network step is bounded (DNS and the GET run under a hard deadline in a
helper thread). The access token is never printed: every detail goes through
:func:`agent.redact.redact`. Exit status: 1 if any check FAILs, else 0.

One module per subsystem (:mod:`.config_token`, :mod:`.storage`,
:mod:`.readers` with :mod:`.reader_access`, :mod:`.console` and :mod:`.wiegand`, :mod:`.gpio`,
:mod:`.clock`, :mod:`.iflow`, :mod:`.daemon`, :mod:`.metrics`);
each check calls the part of the agent it checks (the reader's device search,
the feedback backend's pin factory, the delivery client, the backlog count)
rather than a copy of it, so doctor cannot pass what the daemon would fail.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from agent.commands.doctor.base import (
    FAIL,
    MB,
    PASS,
    WARN,
    Ctx,
    Result,
    exit_code,
    format_line,
    result,
)
from agent.commands.doctor.clock import check_clock
from agent.commands.doctor.config_token import check_config, check_token
from agent.commands.doctor.daemon import (
    ask_daemon,
    backlog_result,
    check_backlog,
    check_daemon,
)
from agent.commands.doctor.gpio import check_gpio
from agent.commands.doctor.iflow import check_iflow
from agent.commands.doctor.metrics import check_metrics
from agent.commands.doctor.readers import check_readers
from agent.commands.doctor.storage import check_journal, check_state_dir
from agent.config import Config
from agent.redact import register_secret

__all__ = [
    "FAIL",
    "MB",
    "PASS",
    "WARN",
    "Result",
    "add_arguments",
    "backlog_result",
    "exit_code",
    "format_line",
    "main",
    "run_checks",
]

CHECKS: tuple[tuple[str, Callable[[Ctx], list[Result]]], ...] = (
    ("config", check_config),
    ("token", check_token),
    ("state_dir", check_state_dir),
    ("journal", check_journal),
    ("reader", check_readers),
    ("gpio", check_gpio),
    ("clock", check_clock),
    ("iflow", check_iflow),
    ("metrics", check_metrics),
    ("daemon", check_daemon),
    ("backlog", check_backlog),
)


def run_checks(cfg: Config, on_result: Callable[[Result], None] | None = None) -> list[Result]:
    """Run every check in order; a check that crashes is itself a FAIL."""
    if cfg.iflow is not None:
        register_secret(cfg.iflow.access_token)
    ctx = Ctx(cfg)
    ask_daemon(ctx)
    results: list[Result] = []
    for name, fn in CHECKS:
        try:
            found = fn(ctx)
        except Exception as exc:  # noqa: BLE001 - doctor must finish its list
            found = [result(name, FAIL, f"the check itself failed: {type(exc).__name__}: {exc}",
                            "report this as a bug in agent doctor")]
        for r in found:
            results.append(r)
            if on_result is not None:
                on_result(r)
    return results


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true",
                        help='a JSON list of {"check","status","detail","fix"} objects')


def main(cfg: Config, args: argparse.Namespace) -> int:
    as_json = bool(getattr(args, "json", False))

    def show(r: Result) -> None:
        print(format_line(r), flush=True)

    results = run_checks(cfg, None if as_json else show)
    if as_json:
        print(json.dumps([r.as_dict() for r in results], indent=1))
    else:
        n = {s: sum(r.status == s for r in results) for s in (FAIL, WARN, PASS)}
        print(f"doctor: {n[FAIL]} FAIL, {n[WARN]} WARN, {n[PASS]} PASS", flush=True)
    sys.stdout.flush()
    return exit_code(results)
