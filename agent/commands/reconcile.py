"""``agent reconcile``: compare CrossChex Cloud with the journal; push what only CrossChex has.

The work is :func:`agent.runtime.reconciliation.reconcile_window` (the daemon
runs the same on a schedule, :class:`agent.runtime.scheduler.Scheduler`);
this module reads the window from the command line and prints the report.

Exit codes of the command: 0 done (differences are not an error), 1 CrossChex
Cloud or the journal could not be used, 2 configuration or usage problem.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from agent import redact
from agent.config import Config
from agent.crosschex.wire import iso_utc
from agent.errors import EXIT_CONFIG, EXIT_OK, CommandError, CrossChexFailure
from agent.runtime.reconciliation import reconcile_window

__all__ = ["add_arguments", "main", "parse_time", "format_report"]

log = logging.getLogger("agent.reconciler")

UTC = UTC
TABLE_ROWS = 50  # rows per list in the readable output (--json lists all)
TIME_OPTIONS = ("--from", "--to")


# ------------------------------------------------------------------ times

_RELATIVE = re.compile(r"^-\s*(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def parse_time(text: str, tz: ZoneInfo, *, now: datetime | None = None, end_of_day: bool = False) -> datetime:
    """A command-line time -> aware UTC datetime.

    Accepts ISO 8601 with an offset (``2024-05-01T08:00:00+03:00``, ``...Z``);
    a local time in ``tz``: ``YYYY-MM-DD``, ``YYYY-MM-DD HH:MM[:SS]`` (or with
    ``T``); ``now``; or relative to now: ``-90s``, ``-30m``, ``-24h``, ``-7d``,
    ``-2w``. A date alone is its midnight, or with ``end_of_day`` its last
    second. A local time that does not exist (skipped when clocks go forward)
    is an error; a repeated one means its first occurrence.
    Raises ValueError with a one-line reason."""
    now = now or datetime.now(UTC)
    value = text.strip() if isinstance(text, str) else ""
    if not value:
        raise ValueError("empty time")
    if value.lower() == "now":
        return now.astimezone(UTC)
    m = _RELATIVE.match(value.lower())
    if m:
        return (now - timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2)])).astimezone(UTC)
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"cannot read {value!r}: use ISO 8601 (2024-05-01T08:00:00+03:00), "
                         "'YYYY-MM-DD[ HH:MM[:SS]]' in the site time zone, or relative like '-24h'") from None
    if dt.tzinfo is not None and dt.utcoffset() is not None:
        return dt.astimezone(UTC)
    if end_of_day and _DATE_ONLY.match(value):
        dt = dt + timedelta(days=1) - timedelta(seconds=1)
    local = dt.replace(tzinfo=tz, fold=0)
    back = local.astimezone(UTC).astimezone(tz).replace(tzinfo=None)
    if back != dt:
        raise ValueError(f"{value} does not exist in {tz.key} (the clocks skip it)")
    return local.astimezone(UTC)


# ------------------------------------------------------------ the command


def _names_time_option(arg: str) -> bool:
    """``--from``/``--to``, or an abbreviation argparse would accept for one."""
    return len(arg) > 2 and "=" not in arg and any(opt.startswith(arg) for opt in TIME_OPTIONS)


def _attach_relative_times(argv: list[str]) -> list[str]:
    """``--from -24h`` -> ``--from=-24h``.

    argparse takes a word after an option that starts with "-" for another
    option unless it is a plain negative number ("-24" passes, "-24h" does
    not); the attached form is read as meant whatever the word looks like."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":  # after it nothing is an option
            out.extend(argv[i:])
            break
        if i + 1 < len(argv) and _names_time_option(arg) and _RELATIVE.match(argv[i + 1].lower()):
            out.append(f"{arg}={argv[i + 1]}")
            i += 2
        else:
            out.append(arg)
            i += 1
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--from``, ``--to``, ``--push``, ``--json`` on the ``reconcile`` sub-parser."""
    parser.add_argument("--from", dest="begin", metavar="TIME",
                        help="start of the window: ISO 8601, 'YYYY-MM-DD[ HH:MM[:SS]]' in the site time zone, "
                             "or relative like '-24h' (default: crosschex.reconcile_window before --to)")
    parser.add_argument("--to", dest="end", metavar="TIME",
                        help="end of the window, same forms; a date alone means its end (default: now)")
    parser.add_argument("--push", action="store_true",
                        help="add the records only CrossChex has to the journal (then delivered to iFlow)")
    parser.add_argument("--json", action="store_true", help="one JSON object")
    # The command's words reach this parser through parse_known_args, both
    # when it is the `agent` sub-parser and when it parses on its own.
    parse_known_args = parser.parse_known_args

    def parse_with_relative_times(args: Any = None, namespace: Any = None) -> Any:
        words = sys.argv[1:] if args is None else list(args)
        return parse_known_args(_attach_relative_times(words), namespace)

    parser.parse_known_args = parse_with_relative_times  # type: ignore[method-assign]


def _window(cfg: Config, args: argparse.Namespace, now: datetime) -> tuple[datetime, datetime]:
    cc = cfg.crosschex
    assert cc is not None
    try:
        end = parse_time(args.end, cfg.timezone, now=now, end_of_day=True) if getattr(args, "end", None) else now
    except ValueError as exc:
        raise CommandError(f"--to: {exc}", EXIT_CONFIG) from None
    try:
        begin = (parse_time(args.begin, cfg.timezone, now=now) if getattr(args, "begin", None)
                 else end - timedelta(seconds=cc.reconcile_window))
    except ValueError as exc:
        raise CommandError(f"--from: {exc}", EXIT_CONFIG) from None
    if begin >= end:
        raise CommandError(f"--from ({iso_utc(begin)}) must be before --to ({iso_utc(end)})", EXIT_CONFIG)
    return begin, end


def main(cfg: Config, args: argparse.Namespace) -> int:
    """``agent reconcile``. Returns the exit code; a failure is an AgentError, which
    :func:`agent.commands.cli.main` reports in one line with its exit code."""
    if cfg.crosschex is None:
        raise CommandError(f"{cfg.path}: [crosschex] is not configured: nothing to compare with", EXIT_CONFIG)
    begin, end = _window(cfg, args, datetime.now(UTC))
    try:
        result = reconcile_window(cfg, begin, end, push=bool(getattr(args, "push", False)))
    except CommandError:
        raise
    except CrossChexFailure as exc:
        raise CommandError(f"CrossChex Cloud: {exc}") from None
    except Exception as exc:  # the journal (JournalError, OSError): one line, never a traceback
        log.debug("reconcile failed", exc_info=True)
        raise CommandError(f"reconcile failed: {redact.redact(f'{type(exc).__name__}: {exc}')}") from None
    if getattr(args, "json", False):
        print(json.dumps(result, sort_keys=True))
    else:
        print(format_report(result, cfg.timezone, pushed=bool(getattr(args, "push", False)),
                            delivered=cfg.iflow is not None))
    return EXIT_OK


# ------------------------------------------------------------- the table


def _local(iso: str, tz: ZoneInfo) -> str:
    try:
        return datetime.fromisoformat(iso).astimezone(tz).strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return iso


def _cell(value: Any, width: int) -> str:
    """One table cell: printable, at most ``width`` characters, padded (0: as is)."""
    text = "".join(c if c.isprintable() else "?" for c in str(value if value is not None else ""))
    if not width:
        return text
    if len(text) > width:
        text = text[: width - 1] + "…"
    return text.ljust(width)


def _table(title: str, header: list[tuple[str, int]], rows: list[list[Any]]) -> list[str]:
    lines = ["", f"{title}:", "  " + "  ".join(_cell(h, w) for h, w in header).rstrip()]
    for row in rows[:TABLE_ROWS]:
        lines.append("  " + "  ".join(_cell(v, w) for v, (_, w) in zip(row, header)).rstrip())
    if len(rows) > TABLE_ROWS:
        lines.append(f"  ... and {len(rows) - TABLE_ROWS} more (--json lists all)")
    return lines


def _device(row: dict) -> str:
    name, serial = row.get("device") or "", row.get("device_serial") or ""
    return f"{name} ({serial})" if name and serial else name or serial


def format_report(result: dict, tz: ZoneInfo, *, pushed: bool, delivered: bool = True) -> str:
    """The readable form of a :func:`reconcile_window` result (times in ``tz``)."""
    lists = result["lists"]
    lines = [f"CrossChex Cloud vs journal, {_local(result['from'], tz)} .. {_local(result['to'], tz)} ({tz.key})",
             f"  CrossChex records  {result['crosschex_records']:>6}   local scans {result['local_scans']}",
             f"  matched            {result['matched']:>6}"]
    only_cc = f"  only in CrossChex  {result['only_crosschex']:>6}"
    if pushed:
        only_cc += f"   pushed {result.get('pushed', 0)} to the journal"
        if result.get("already_in_journal"):
            only_cc += f" ({result['already_in_journal']} were already there)"
    lines += [only_cc,
              f"  only local         {result['only_local']:>6}",
              f"  unmapped           {result['unmapped']:>6}"
              + ("   (no card number: add their worknos to the mapping file)" if result["unmapped"] else "")]
    if lists["only_crosschex"]:
        lines += _table("only in CrossChex",
                        [("time", 19), ("workno", 10), ("name", 22), ("device", 36), ("card", 0)],
                        [[_local(r["checktime"], tz), r["workno"], r["name"], _device(r), r["tag"]]
                         for r in lists["only_crosschex"]])
    if lists["only_local"]:
        lines += _table("only local", [("time", 19), ("card", 16), ("source", 10), ("id", 0)],
                        [[_local(s["when"], tz), s["tag"], s["source"], s["id"][:12]] for s in lists["only_local"]])
    if lists["unmapped"]:
        lines += _table("unmapped (no card number)", [("time", 19), ("workno", 10), ("name", 22), ("device", 0)],
                        [[_local(r["checktime"], tz), r["workno"], r["name"], _device(r)] for r in lists["unmapped"]])
    if result["only_crosschex"] and not pushed:
        lines += ["", "to add the records only CrossChex has to the journal (and deliver them): "
                  "agent reconcile --push with the same window"]
    elif pushed and result.get("pushed") and not delivered:
        lines += ["", "note: [iflow] is not configured, so the pushed records stay pending"]
    return "\n".join(lines)
