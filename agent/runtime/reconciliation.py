"""Compare CrossChex Cloud with the journal; push what only CrossChex has.

One run (:func:`run_reconciliation`):

1. fetch the CrossChex Cloud records of the window ``[begin, end]``
   (:class:`agent.crosschex.client.CrossChexClient`, built by
   :func:`agent.runtime.wiring.make_crosschex_client`: token cached in
   ``<state_dir>/crosschex-token.json``, calls at least
   ``crosschex.min_interval`` apart);
2. read the local scans of the window, widened by ``match_seconds`` on both
   sides so a scan just outside the window still matches a punch just inside
   it (and that punch is not pushed a second time), through
   :class:`agent.runtime.operations.ScansRequest`: from the daemon, or, when
   none runs, from the journal itself (a scan's time is its true time:
   ``corrected_at``, else what the clock anchors say, else ``captured_at``);
3. pair them (:func:`agent.crosschex.matching.reconcile`: card number via the mapping
   file or ``crosschex.tag_from``; a record without one is ``unmapped``, never
   guessed);
4. with ``push``, add the CrossChex-only records to the journal through the
   one writer (:class:`agent.runtime.operations.InsertRequest`), each with an
   ``external_id`` (``cc:<device serial>:<checktime UTC>:<workno>``), so they
   are delivered to iFlow like any scan. A second run pushes nothing: the
   pushed records now match as local scans, and their external ids are
   already in the journal.

`agent reconcile` runs it once (:func:`reconcile_window`); the daemon runs it
on a schedule (:class:`agent.runtime.scheduler.Scheduler`) with the journal
reached through callables of its own.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Callable, Iterable

from agent.config import Config
from agent.crosschex.matching import LocalScan, load_mapping, reconcile
from agent.crosschex.wire import iso_utc
from agent.errors import EXIT_CONFIG, CommandError, MappingError
from agent.runtime.access import call
from agent.runtime.operations import aware_utc, parse_stamp
from agent.runtime.requests import InsertRequest, Request, ScansRequest
from agent.runtime.wiring import make_crosschex_client

if TYPE_CHECKING:
    from agent.crosschex.client import CrossChexClient
    from agent.crosschex.wire import CcRecord

__all__ = [
    "reconcile_window",
    "run_reconciliation",
    "mapping_for",
    "external_id",
    "push_record",
    "LocalScans",
    "Insert",
]

log = logging.getLogger("agent.reconciler")

UTC = UTC

#: ``(begin, end) -> rows``: the local scans whose true time lies in the window,
#: as LocalScans or as the ``{"id", "tag", "when", "source"}`` rows of a ScansRequest.
LocalScans = Callable[[datetime, datetime], list[Any]]
#: ``records -> {"added", "ids", "skipped"}``: the answer of an InsertRequest.
Insert = Callable[[list[dict]], dict]


def _iso_us(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat(timespec="microseconds")


# ------------------------------------------------------------ local scans


def _to_local_scans(rows: Iterable[Any]) -> tuple[list[LocalScan], dict[str, str]]:
    """Daemon/journal answer rows (dicts, or LocalScan) -> LocalScans and {id: source}."""
    scans: list[LocalScan] = []
    sources: dict[str, str] = {}
    for row in rows:
        if isinstance(row, LocalScan):
            scans.append(row)
            continue
        if not isinstance(row, dict):
            raise CommandError("the journal answered local scans in an unexpected form")
        when = parse_stamp(row.get("when"))
        if when is None or not isinstance(row.get("tag"), str):
            raise CommandError(f"the journal answered a scan without a usable time or tag ({row.get('id')})")
        scans.append(LocalScan(str(row.get("id")), row["tag"], when))
        sources[str(row.get("id"))] = str(row.get("source") or "reader")
    return scans, sources


# -------------------------------------------------------------- pushing


def external_id(rec: CcRecord) -> str:
    """The journal's key for a CrossChex punch: a second push of it is a no-op."""
    return f"cc:{rec.device_serial}:{iso_utc(rec.checktime)}:{rec.workno}"


def push_record(rec: CcRecord, tag: str) -> dict:
    """What :func:`agent.runtime.operations.insert_external` stores for a CrossChex-only punch."""
    return {"tag": tag, "captured_at": _iso_us(rec.checktime), "reader": "crosschex",
            "source": "crosschex", "external_id": external_id(rec)}


# ----------------------------------------------------------------- core


def mapping_for(cfg: Config) -> dict[str, str] | None:
    """The ``crosschex.mapping_file`` as {workno: tag}; None when not configured.
    An unusable file is a :class:`CommandError` with exit code 2."""
    cc = cfg.crosschex
    assert cc is not None
    if not cc.mapping_file:
        return None
    try:
        return load_mapping(cc.mapping_file)
    except MappingError as exc:
        raise CommandError(f"crosschex.mapping_file: {exc}", EXIT_CONFIG) from None


def _name(rec: CcRecord) -> str:
    return f"{rec.first_name} {rec.last_name}".strip()


def _cc_row(rec: CcRecord, tag: str | None = None) -> dict:
    row = {"checktime": iso_utc(rec.checktime), "workno": rec.workno, "name": _name(rec),
           "device": rec.device_name, "device_serial": rec.device_serial, "checktype": rec.checktype}
    if tag is not None:
        row["tag"] = tag
        row["external_id"] = external_id(rec)
    return row


def run_reconciliation(cfg: Config, begin: datetime, end: datetime, *, push: bool, client: CrossChexClient,
                       local_scans: LocalScans, insert: Insert, mapping: dict[str, str] | None,
                       stop: threading.Event | None = None) -> dict:
    """One reconciliation with the journal reached through ``local_scans``/``insert``
    (the result is described at :func:`reconcile_window`). Nothing is pushed
    once ``stop`` is set."""
    cc = cfg.crosschex
    assert cc is not None
    records = list(client.records(begin, end))
    log.debug("CrossChex: %d records in %s .. %s", len(records), iso_utc(begin), iso_utc(end))
    margin = timedelta(seconds=cc.match_seconds)
    scans, sources = _to_local_scans(local_scans(begin - margin, end + margin))
    report = reconcile(records, scans, tag_from=cc.tag_from, mapping=mapping, match_seconds=cc.match_seconds)
    # Scans outside the window were read only to match punches near its edges.
    only_local = [s for s in report.only_local if begin <= s.when <= end]
    out: dict[str, Any] = {
        "from": iso_utc(begin), "to": iso_utc(end),
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
                raise CommandError("the journal answered the push in an unexpected form")
            out["pushed"] = int(result.get("added", 0))
            out["already_in_journal"] = int(result.get("skipped", 0))
            out["pushed_ids"] = list(result.get("ids", []))
    return out


def reconcile_window(cfg: Config, begin: datetime, end: datetime, *, push: bool,
                     ask: Callable[[Request], Any] | None = None, client: CrossChexClient | None = None) -> dict:
    """Reconcile CrossChex Cloud with the journal over ``[begin, end]``.

    ``ask(request) -> answer`` runs a :class:`ScansRequest` (a list of
    ``{"id", "tag", "when", "source"}``) or an :class:`InsertRequest`
    (``{"added", "ids", "skipped"}``) where the journal is; by default
    :func:`agent.runtime.access.call` (the daemon, or the journal directly
    when none runs). ``client`` is reused if given (and then not closed).
    Returns a JSON-ready dict: integer counts ``crosschex_records``,
    ``local_scans``, ``matched``, ``only_crosschex``, ``only_local``,
    ``unmapped`` (with ``push`` also ``pushed``, ``already_in_journal``), the
    window ``from``/``to`` and ``lists`` of each kind.

    Raises :class:`agent.crosschex.wire.CrossChexError` (CrossChex unusable),
    :class:`agent.errors.CommandError` (journal, mapping or settings problem,
    with its exit code), ValueError (naive or inverted window)."""
    if cfg.crosschex is None:
        raise CommandError(f"{cfg.path}: [crosschex] is not configured", EXIT_CONFIG)
    begin, end = aware_utc(begin, "begin"), aware_utc(end, "end")
    if begin > end:
        raise ValueError("the window's start is after its end")
    mapping = mapping_for(cfg)
    run = ask or (lambda req: call(cfg, req)[0])

    def local_scans(b: datetime, e: datetime) -> list[Any]:
        rows = run(ScansRequest(_iso_us(b), _iso_us(e)))
        if not isinstance(rows, list):
            raise CommandError("the journal answered local scans in an unexpected form")
        return rows

    def insert(records: list[dict]) -> dict:
        return run(InsertRequest(records))

    own = client is None
    if own:
        try:
            client = make_crosschex_client(cfg)
        except ValueError as exc:
            raise CommandError(f"{cfg.path}: crosschex: {exc}", EXIT_CONFIG) from None
    assert client is not None
    try:
        return run_reconciliation(cfg, begin, end, push=push, client=client, local_scans=local_scans,
                                  insert=insert, mapping=mapping)
    finally:
        if own:
            client.close()
