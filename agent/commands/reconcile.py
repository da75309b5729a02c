"""``agent reconcile``: compare CrossChex Cloud with the journal; push what only CrossChex has.

One run (:func:`reconcile_window`):

1. fetch the CrossChex Cloud records of the window ``[begin, end]``
   (:class:`agent.crosschex.client.CrossChexClient`, token cached in
   ``<state_dir>/crosschex-token.json``, calls at least
   ``crosschex.min_interval`` apart);
2. read the local scans of the window, widened by ``match_seconds`` on both
   sides so a scan just outside the window still matches a punch just inside
   it (and that punch is not pushed a second time), from the daemon (request
   ``{"cmd": "scans"}``) or, when none runs, from the journal itself
   (:func:`scans_in_window`; a scan's time is its true time: ``corrected_at``,
   else what the clock anchors say, else ``captured_at``);
3. pair them (:func:`agent.crosschex.matching.reconcile`: card number via the mapping
   file or ``crosschex.tag_from``; a record without one is ``unmapped``, never
   guessed);
4. with ``push``, add the CrossChex-only records to the journal through the
   one writer (request ``{"cmd": "insert"}`` /
   :func:`agent.runtime.operations.insert_external`), each with an ``external_id``
   (``cc:<device serial>:<checktime UTC>:<workno>``), so they are delivered to
   iFlow like any scan. A second run pushes nothing: the pushed records now
   match as local scans, and their external ids are already in the journal.

The daemon runs the same thing every ``crosschex.reconcile_every`` over the
last ``crosschex.reconcile_window`` (:class:`Scheduler`).

Exit codes of the command: 0 done (differences are not an error), 1 CrossChex
Cloud or the journal could not be used, 2 configuration or usage problem.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Callable, Iterable
from zoneinfo import ZoneInfo

from agent.crosschex.matching import LocalScan, MappingError, load_mapping, reconcile

if TYPE_CHECKING:
    from agent.config import Config
    from agent.crosschex.client import CcRecord, CrossChexClient
    from agent.journal.store import Journal

__all__ = [
    "add_arguments",
    "main",
    "reconcile_window",
    "scans_in_window",
    "parse_time",
    "external_id",
    "push_record",
    "Scheduler",
    "ReconcileError",
    "TOKEN_CACHE",
]

log = logging.getLogger("agent.reconciler")

UTC = timezone.utc
TOKEN_CACHE = "crosschex-token.json"
EXIT_OK, EXIT_FAIL, EXIT_CONFIG = 0, 1, 2
TABLE_ROWS = 50  # rows per list in the readable output (--json lists all)

JournalRequest = Callable[[dict], Any]


class ReconcileError(Exception):
    """A run could not be done; ``code`` is the exit code (1 or 2), the message one line."""

    def __init__(self, message: str, code: int = EXIT_FAIL) -> None:
        super().__init__(message)
        self.code = code


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


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat(timespec="seconds")


def _iso_us(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat(timespec="microseconds")


def _aware(dt: Any, name: str) -> datetime:
    if not isinstance(dt, datetime) or dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError(f"{name} must be an aware datetime")
    return dt.astimezone(UTC)


# ------------------------------------------------------------ local scans


def _parse_stamp(value: Any) -> datetime | None:
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        return None
    if dt.tzinfo is None or dt.utcoffset() is None:
        return None
    return dt.astimezone(UTC)


def scan_time(rec: dict, clock: Any | None) -> datetime | None:
    """A journal record's true time: ``corrected_at`` if present, else the
    clock's effective time, else ``captured_at``; None if none is readable."""
    when = _parse_stamp(rec.get("corrected_at"))
    if when is not None:
        return when
    if clock is not None:
        try:
            eff = clock.effective(rec)
        except (ValueError, TypeError, KeyError):
            eff = None
        if eff is not None and eff.when is not None:
            return eff.when.astimezone(UTC)
    return _parse_stamp(rec.get("captured_at"))


def scans_in_window(journal: Journal, clock: Any | None, begin: datetime, end: datetime) -> list[dict]:
    """Every journal record whose true time lies in ``[begin, end]``, as
    ``{"id", "tag", "when" (UTC ISO 8601), "source"}``, oldest first.

    Pure apart from reading the journal (any state counts: a delivered or
    rejected scan was still made). Records without a readable time or tag
    are left out (logged at DEBUG). Raises ValueError for naive bounds."""
    begin, end = _aware(begin, "begin"), _aware(end, "end")
    out: list[tuple[datetime, int, dict]] = []
    for i, rec in enumerate(journal.records()):
        tag = rec.get("tag")
        when = scan_time(rec, clock)
        if when is None or not isinstance(tag, str) or not tag:
            log.debug("journal record %s has no readable time or tag; not compared", rec.get("id"))
            continue
        if begin <= when <= end:
            out.append((when, i, {"id": str(rec.get("id")), "tag": tag, "when": _iso_us(when),
                                  "source": str(rec.get("source") or "reader")}))
    out.sort(key=lambda t: (t[0], t[1]))
    return [d for _, _, d in out]


def _to_local_scans(rows: Iterable[Any]) -> tuple[list[LocalScan], dict[str, str]]:
    """Daemon/journal answer rows (dicts, or LocalScan) -> LocalScans and {id: source}."""
    scans: list[LocalScan] = []
    sources: dict[str, str] = {}
    for row in rows:
        if isinstance(row, LocalScan):
            scans.append(row)
            continue
        if not isinstance(row, dict):
            raise ReconcileError("the journal answered local scans in an unexpected form")
        when = _parse_stamp(row.get("when"))
        if when is None or not isinstance(row.get("tag"), str):
            raise ReconcileError(f"the journal answered a scan without a usable time or tag ({row.get('id')})")
        scans.append(LocalScan(str(row.get("id")), row["tag"], when))
        sources[str(row.get("id"))] = str(row.get("source") or "reader")
    return scans, sources


# -------------------------------------------------------------- pushing


def external_id(rec: CcRecord) -> str:
    """The journal's key for a CrossChex punch: a second push of it is a no-op."""
    return f"cc:{rec.device_serial}:{_iso(rec.checktime)}:{rec.workno}"


def push_record(rec: CcRecord, tag: str) -> dict:
    """What :func:`agent.runtime.operations.insert_external` stores for a CrossChex-only punch."""
    return {"tag": tag, "captured_at": _iso_us(rec.checktime), "reader": "crosschex",
            "source": "crosschex", "external_id": external_id(rec)}


# ----------------------------------------------------------------- core


def make_client(cfg: Config, *, sleep: Callable[[float], None] = time.sleep) -> CrossChexClient:
    """The CrossChex client for ``cfg`` (raises ValueError for unusable settings)."""
    from agent.crosschex.client import CrossChexClient

    cc = cfg.crosschex
    assert cc is not None
    cache = os.path.join(cfg.state_dir, TOKEN_CACHE) if os.path.isdir(cfg.state_dir) else None
    return CrossChexClient(cc.url, cc.api_key, cc.api_secret, token_cache=cache, min_interval_s=cc.min_interval,
                            sleep=sleep)


def _mapping(cfg: Config) -> dict[str, str] | None:
    cc = cfg.crosschex
    assert cc is not None
    if not cc.mapping_file:
        return None
    try:
        return load_mapping(cc.mapping_file)
    except MappingError as exc:
        raise ReconcileError(f"crosschex.mapping_file: {exc}", EXIT_CONFIG) from None


def _dispatcher(cfg: Config) -> JournalRequest:
    """Ask the daemon, or (none running) do the request on the journal directly."""

    def request(req: dict) -> Any:
        from agent.commands.cli import CliError, dispatch
        from agent.runtime import operations as rejected

        if req["cmd"] == "scans":
            begin, end = datetime.fromisoformat(req["from"]), datetime.fromisoformat(req["to"])

            def local(journal: Journal) -> list[dict]:
                return scans_in_window(journal, _local_clock(cfg), begin, end)
        else:
            records = req["records"]

            def local(journal: Journal) -> dict:
                return rejected.insert_external(journal, records)

        try:
            result, _ = dispatch(cfg, req, local)
        except CliError as exc:
            raise ReconcileError(str(exc), exc.code) from None
        return result

    return request


def _local_clock(cfg: Config) -> Any | None:
    """A read-only clock for effective times (no daemon running); None if unusable."""
    try:
        from agent.commands.run import make_clock

        return make_clock(cfg)
    except (OSError, ValueError) as exc:
        log.warning("cannot read the clock state (%s); comparing scans by their recorded time", exc)
        return None


def _name(rec: CcRecord) -> str:
    return f"{rec.first_name} {rec.last_name}".strip()


def _cc_row(rec: CcRecord, tag: str | None = None) -> dict:
    row = {"checktime": _iso(rec.checktime), "workno": rec.workno, "name": _name(rec),
           "device": rec.device_name, "device_serial": rec.device_serial, "checktype": rec.checktype}
    if tag is not None:
        row["tag"] = tag
        row["external_id"] = external_id(rec)
    return row


def _run(cfg: Config, begin: datetime, end: datetime, *, push: bool, client: CrossChexClient,
         local_scans: Callable[[datetime, datetime], list[Any]],
         insert: Callable[[list[dict]], dict], mapping: dict[str, str] | None,
         stop: threading.Event | None = None) -> dict:
    """One reconciliation with the journal reached through ``local_scans``/``insert``."""
    cc = cfg.crosschex
    assert cc is not None
    records = list(client.records(begin, end))
    log.debug("CrossChex: %d records in %s .. %s", len(records), _iso(begin), _iso(end))
    margin = timedelta(seconds=cc.match_seconds)
    scans, sources = _to_local_scans(local_scans(begin - margin, end + margin))
    report = reconcile(records, scans, tag_from=cc.tag_from, mapping=mapping, match_seconds=cc.match_seconds)
    # Scans outside the window were read only to match punches near its edges.
    only_local = [s for s in report.only_local if begin <= s.when <= end]
    out: dict[str, Any] = {
        "from": _iso(begin), "to": _iso(end),
        "crosschex_records": len(records),
        "local_scans": sum(1 for s in scans if begin <= s.when <= end),
        "matched": len(report.matched),
        "only_crosschex": len(report.only_crosschex),
        "only_local": len(only_local),
        "unmapped": len(report.unmapped),
        "lists": {
            "matched": [dict(_cc_row(r), scan_id=s.id, scan_tag=s.tag, scan_when=_iso_us(s.when),
                             delta_seconds=round((s.when - r.checktime).total_seconds(), 3))
                        for r, s in report.matched],
            "only_crosschex": [_cc_row(r, tag) for r, tag in report.only_crosschex],
            "only_local": [{"id": s.id, "tag": s.tag, "when": _iso_us(s.when), "source": sources.get(s.id, "reader")}
                           for s in only_local],
            "unmapped": [_cc_row(r) for r in report.unmapped],
        },
    }
    if push:
        out["pushed"] = 0
        out["already_in_journal"] = 0
        if report.only_crosschex and not (stop is not None and stop.is_set()):
            result = insert([push_record(r, tag) for r, tag in report.only_crosschex])
            if not isinstance(result, dict):
                raise ReconcileError("the journal answered the push in an unexpected form")
            out["pushed"] = int(result.get("added", 0))
            out["already_in_journal"] = int(result.get("skipped", 0))
            out["pushed_ids"] = list(result.get("ids", []))
    return out


def reconcile_window(cfg: Config, begin: datetime, end: datetime, *, push: bool,
                     journal_request: JournalRequest | None = None, client: CrossChexClient | None = None) -> dict:
    """Reconcile CrossChex Cloud with the journal over ``[begin, end]``.

    ``journal_request(request) -> result`` answers ``{"cmd": "scans", "from",
    "to"}`` (a list of ``{"id", "tag", "when", "source"}``) and ``{"cmd":
    "insert", "records"}`` (``{"added", "ids", "skipped"}``) the way the
    daemon's handlers do; by default the daemon is asked, or the journal used
    directly when none runs. ``client`` is reused if given (and then not
    closed). Returns a JSON-ready dict: integer counts ``crosschex_records``,
    ``local_scans``, ``matched``, ``only_crosschex``, ``only_local``,
    ``unmapped`` (with ``push`` also ``pushed``, ``already_in_journal``), the
    window ``from``/``to`` and ``lists`` of each kind.

    Raises :class:`agent.crosschex.client.CrossChexError` (CrossChex unusable),
    :class:`ReconcileError` (journal or mapping problem, with its exit code),
    ValueError (naive or inverted window)."""
    if cfg.crosschex is None:
        raise ReconcileError(f"{cfg.path}: [crosschex] is not configured", EXIT_CONFIG)
    begin, end = _aware(begin, "begin"), _aware(end, "end")
    if begin > end:
        raise ValueError("the window's start is after its end")
    mapping = _mapping(cfg)
    request = journal_request or _dispatcher(cfg)

    def local_scans(b: datetime, e: datetime) -> list[Any]:
        rows = request({"cmd": "scans", "from": _iso_us(b), "to": _iso_us(e)})
        if not isinstance(rows, list):
            raise ReconcileError("the journal answered local scans in an unexpected form")
        return rows

    def insert(records: list[dict]) -> dict:
        return request({"cmd": "insert", "records": records})

    own = client is None
    if own:
        try:
            client = make_client(cfg)
        except ValueError as exc:
            raise ReconcileError(f"{cfg.path}: crosschex: {exc}", EXIT_CONFIG) from None
    assert client is not None
    try:
        return _run(cfg, begin, end, push=push, client=client, local_scans=local_scans, insert=insert,
                    mapping=mapping)
    finally:
        if own:
            client.close()


# ------------------------------------------------------------ the command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--from``, ``--to``, ``--push``, ``--json`` on the ``reconcile`` sub-parser."""
    # Let "--from -24h" read "-24h" as a value, as argparse already does for
    # "-24" ("--from=-24h" works whatever argparse does).
    if hasattr(parser, "_negative_number_matcher"):
        parser._negative_number_matcher = re.compile(r"^-\d+(?:\.\d+)?[smhdw]?$|^-\.\d+$")
    parser.add_argument("--from", dest="begin", metavar="TIME",
                        help="start of the window: ISO 8601, 'YYYY-MM-DD[ HH:MM[:SS]]' in the site time zone, "
                             "or relative like '-24h' (default: crosschex.reconcile_window before --to)")
    parser.add_argument("--to", dest="end", metavar="TIME",
                        help="end of the window, same forms; a date alone means its end (default: now)")
    parser.add_argument("--push", action="store_true",
                        help="add the records only CrossChex has to the journal (then delivered to iFlow)")
    parser.add_argument("--json", action="store_true", help="one JSON object")


def _window(cfg: Config, args: argparse.Namespace, now: datetime) -> tuple[datetime, datetime]:
    cc = cfg.crosschex
    assert cc is not None
    try:
        end = parse_time(args.end, cfg.timezone, now=now, end_of_day=True) if getattr(args, "end", None) else now
    except ValueError as exc:
        raise ReconcileError(f"--to: {exc}", EXIT_CONFIG) from None
    try:
        begin = (parse_time(args.begin, cfg.timezone, now=now) if getattr(args, "begin", None)
                 else end - timedelta(seconds=cc.reconcile_window))
    except ValueError as exc:
        raise ReconcileError(f"--from: {exc}", EXIT_CONFIG) from None
    if begin >= end:
        raise ReconcileError(f"--from ({_iso(begin)}) must be before --to ({_iso(end)})", EXIT_CONFIG)
    return begin, end


def main(cfg: Config, args: argparse.Namespace) -> int:
    """``agent reconcile``. Returns the exit code; errors are one line on stderr."""
    from agent.crosschex.client import CrossChexError

    try:
        if cfg.crosschex is None:
            raise ReconcileError(f"{cfg.path}: [crosschex] is not configured: nothing to compare with",
                                 EXIT_CONFIG)
        begin, end = _window(cfg, args, datetime.now(UTC))
        result = reconcile_window(cfg, begin, end, push=bool(getattr(args, "push", False)))
    except ReconcileError as exc:
        print(f"agent: {exc}", file=sys.stderr)
        return exc.code
    except CrossChexError as exc:
        print(f"agent: CrossChex Cloud: {exc}", file=sys.stderr)
        return EXIT_FAIL
    except Exception as exc:  # the journal (JournalError, OSError): one line, never a traceback
        from agent import redact

        log.debug("reconcile failed", exc_info=True)
        print(f"agent: reconcile failed: {redact.redact(f'{type(exc).__name__}: {exc}')}", file=sys.stderr)
        return EXIT_FAIL
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


# ----------------------------------------------------------- the schedule


class _Stopping(Exception):
    """Raised inside a background run when the scheduler is stopped."""


class Scheduler:
    """Runs a reconciliation (with push) of the last ``crosschex.reconcile_window``
    every ``crosschex.reconcile_every`` seconds, in a background thread.

    :meth:`tick` is called from the daemon's main loop: it only compares
    times and maybe starts the thread, so it never blocks; a run is never
    started while one is going. The first run is due ``first_delay`` seconds
    after construction (default: a minute, or the interval if shorter), the
    next ``reconcile_every`` after the previous one started. One CrossChex
    client is kept across runs, so its minimum interval between calls and its
    token hold across runs too. ``synced`` (optional) is asked before each
    run; while it says False the run is postponed (the window is "the last N
    hours" by the wall clock). Errors are logged in one line, never raised.
    """

    def __init__(self, cfg: Config, insert: Callable[[list[dict]], dict],
                 local_scans: Callable[[datetime, datetime], list[LocalScan]], *,
                 now: Callable[[], float] = time.time, first_delay: float | None = None,
                 synced: Callable[[], bool] | None = None) -> None:
        self.cfg = cfg
        self._insert = insert
        self._local_scans = local_scans
        self._now = now
        self._synced = synced
        cc = cfg.crosschex
        self.interval = float(cc.reconcile_every) if cc is not None and cc.reconcile_every else None
        if first_delay is None:
            first_delay = min(60.0, self.interval or 60.0)
        self._due = now() + first_delay
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._client: CrossChexClient | None = None
        self.runs = 0  # runs started
        self.last_result: dict | None = None
        self.last_error: str | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def tick(self) -> None:
        """Start a run if one is due and none is going. Never blocks."""
        if self.interval is None or self._stop.is_set() or self.running:
            return
        t = self._now()
        if self._due - t > self.interval:  # the wall clock went back: do not wait for ages
            self._due = t + self.interval
        if t < self._due:
            return
        if self._synced is not None and not self._synced():
            log.debug("CrossChex reconcile postponed: the clock is not synchronised")
            self._due = t + min(60.0, self.interval)
            return
        self._due = t + self.interval
        self.runs += 1
        self._thread = threading.Thread(target=self._run_once, args=(t,), name="reconcile", daemon=True)
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        """Wait for a run in progress (tests, shutdown)."""
        if self._thread is not None:
            self._thread.join(timeout)

    def stop(self, timeout: float = 5.0) -> None:
        """No further runs; abort a run that is waiting (rate limit) and wait for it."""
        self._stop.set()
        self.join(timeout)
        if not self.running and self._client is not None:
            self._client.close()
            self._client = None

    def _sleep(self, seconds: float) -> None:
        if self._stop.wait(seconds):
            raise _Stopping

    def _client_for_run(self) -> CrossChexClient:
        if self._client is None:
            # its waits (rate limit) end early, aborting the run, when stopped
            self._client = make_client(self.cfg, sleep=self._sleep)
        return self._client

    def _run_once(self, started: float) -> None:
        from agent.crosschex.client import CrossChexError

        cc = self.cfg.crosschex
        assert cc is not None and self.interval is not None
        end = datetime.fromtimestamp(started, UTC)
        begin = end - timedelta(seconds=cc.reconcile_window)
        try:
            result = _run(self.cfg, begin, end, push=True, client=self._client_for_run(),
                          local_scans=self._local_scans, insert=self._insert, mapping=_mapping(self.cfg),
                          stop=self._stop)
        except _Stopping:
            log.info("CrossChex reconcile stopped")
            return
        except CrossChexError as exc:
            self.last_error = f"CrossChex Cloud: {exc}"
            log.warning("CrossChex reconcile failed: %s", exc)
            return
        except ReconcileError as exc:
            self.last_error = str(exc)
            log.warning("CrossChex reconcile failed: %s", exc)
            return
        except Exception as exc:  # noqa: BLE001 - never let the schedule die
            from agent import redact

            self.last_error = redact.redact(f"{type(exc).__name__}: {exc}")
            log.error("CrossChex reconcile failed: %s", self.last_error)
            return
        self.last_result = result
        self.last_error = None
        log.info("CrossChex reconcile %s .. %s: %d matched, %d only in CrossChex (%d pushed), "
                 "%d only local, %d unmapped", result["from"], result["to"], result["matched"],
                 result["only_crosschex"], result.get("pushed", 0), result["only_local"], result["unmapped"])
