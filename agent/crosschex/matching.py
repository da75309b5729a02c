"""Compare CrossChex Cloud records with the agent's own scans (pure logic).

A CrossChex record is tied to a card number ("tag") either through a mapping
file (``workno,rfidTag``) or through one of its own fields; a record for which
no tag can be found is reported as ``unmapped``, never guessed.

Matching: a record and a local scan match when their tags are equal (compared
after stripping and upper-casing, so ``00a1b2c3`` == ``00A1B2C3``) and their
times differ by at most ``match_seconds``.  Matching is one-to-one and greedy
by the smallest time difference, with deterministic tie-breaks (earlier record,
then earlier scan, then input order), so the pairs found do not depend on the
order of the inputs.

Scans that an earlier run pushed to iFlow on CrossChex's behalf are local
scans like any other (the caller passes them in), so reconciling again after
a push finds nothing new to push.
"""

from __future__ import annotations

import bisect
import csv
import io
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Iterable, Mapping

from agent.crosschex.wire import CcRecord
from agent.errors import MappingError

__all__ = ["LocalScan", "Report", "MappingError", "load_mapping", "tag_for", "reconcile"]

_HEADER_WORKNO = {"workno", "work_no", "employee.workno", "employee_workno"}
_HEADER_TAG = {"rfidtag", "rfid_tag", "tag", "card", "cardno", "card_number", "rfid"}
_MAX_FIELD = 256


@dataclass(frozen=True)
class LocalScan:
    """A scan the agent recorded (``when`` aware, UTC)."""

    id: str
    tag: str
    when: datetime


@dataclass(frozen=True)
class Report:
    matched: list[tuple[CcRecord, LocalScan]]
    only_crosschex: list[tuple[CcRecord, str]]  # (record, mapped tag)
    only_local: list[LocalScan]
    unmapped: list[CcRecord]  # no card number could be found: reported, never guessed



def load_mapping(path: str) -> dict[str, str]:
    """Read a ``workno,rfidTag`` CSV (header row optional) into {workno: tag}.

    Blank lines and lines starting with ``#`` are skipped; cells are stripped.
    A line without exactly two non-empty cells, or a workno mapped to two
    different tags, raises :class:`MappingError` naming the line."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise MappingError(f"{path}: cannot read the mapping file ({exc.strerror or type(exc).__name__})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise MappingError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    mapping: dict[str, str] = {}
    seen_line: dict[str, int] = {}
    first = True
    try:
        rows = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as exc:
        raise MappingError(f"{path}: not a CSV file ({exc})") from None
    for lineno, row in enumerate(rows, start=1):
        cells = [c.strip() for c in row]
        while cells and cells[-1] == "":  # "123,ABC," from spreadsheets
            cells.pop()
        if not cells or cells[0].startswith("#"):
            continue
        if first:
            first = False
            if len(cells) == 2 and cells[0].lower() in _HEADER_WORKNO and cells[1].lower() in _HEADER_TAG:
                continue
        if len(cells) != 2:
            raise MappingError(f"{path}:{lineno}: expected 'workno,rfidTag', got {len(cells)} cells")
        workno, tag = cells
        if not workno or not tag:
            raise MappingError(f"{path}:{lineno}: empty {'workno' if not workno else 'rfidTag'}")
        if len(workno) > _MAX_FIELD or len(tag) > _MAX_FIELD:
            raise MappingError(f"{path}:{lineno}: cell longer than {_MAX_FIELD} characters")
        if workno in mapping and mapping[workno] != tag:
            raise MappingError(
                f"{path}:{lineno}: workno {workno!r} already mapped to another tag on line {seen_line[workno]}"
            )
        mapping[workno] = tag
        seen_line.setdefault(workno, lineno)
    return mapping


def _field(raw: Mapping, dotted: str) -> object:
    cur: object = raw
    for part in dotted.split("."):
        if not isinstance(cur, Mapping) or part not in cur:
            return None
        cur = cur[part]
    return cur


def tag_for(record: CcRecord, *, tag_from: str = "workno", mapping: Mapping[str, str] | None = None) -> str | None:
    """The card number for ``record``, or None.

    With a ``mapping`` only the mapping is used (a workno absent from it gives
    None: an explicit mapping means the CrossChex fields are not card numbers).
    Otherwise ``tag_from`` names the field: ``"workno"`` or a dotted path into
    the raw record such as ``"employee.card_number"``.  Empty values give None."""
    if mapping is not None:
        tag = mapping.get(record.workno.strip())
    elif tag_from == "workno":
        tag = record.workno
    else:
        value = _field(record.raw, tag_from)
        if isinstance(value, bool):
            return None
        tag = str(value) if isinstance(value, int) else value if isinstance(value, str) else None
    if tag is None:
        return None
    tag = tag.strip()
    return tag or None


def _key(tag: str) -> str:
    return tag.strip().upper()


def reconcile(
    cc: Iterable[CcRecord],
    local: Iterable[LocalScan],
    *,
    tag_from: str = "workno",
    mapping: Mapping[str, str] | None = None,
    match_seconds: int = 60,
) -> Report:
    """Pair CrossChex records with local scans (see the module docstring).

    Lists in the report are in time order (input order for equal times).
    Raises ValueError for a naive datetime or a negative window."""
    if match_seconds < 0:
        raise ValueError("match_seconds must not be negative")
    window = timedelta(seconds=match_seconds)
    records = list(cc)
    scans = list(local)
    for s in scans:
        if s.when.tzinfo is None or s.when.utcoffset() is None:
            raise ValueError(f"local scan {s.id!r} has a naive time")
    for r in records:
        if r.checktime.tzinfo is None or r.checktime.utcoffset() is None:
            raise ValueError("CrossChex record with a naive checktime")

    unmapped: list[CcRecord] = []
    tags: dict[int, str] = {}
    by_tag_cc: dict[str, list[int]] = {}
    for i, r in enumerate(records):
        tag = tag_for(r, tag_from=tag_from, mapping=mapping)
        if tag is None:
            unmapped.append(r)
            continue
        tags[i] = tag
        by_tag_cc.setdefault(_key(tag), []).append(i)

    by_tag_local: dict[str, list[int]] = {}
    for j, s in enumerate(scans):
        by_tag_local.setdefault(_key(s.tag), []).append(j)

    # Candidate pairs within the window, found by bisecting each tag's scans by time.
    candidates: list[tuple[timedelta, datetime, datetime, int, int]] = []
    for key, cc_idx in by_tag_cc.items():
        loc_idx = sorted(by_tag_local.get(key, ()), key=lambda j: (scans[j].when, j))
        times = [scans[j].when for j in loc_idx]
        for i in cc_idx:
            t = records[i].checktime
            lo = bisect.bisect_left(times, t - window)
            hi = bisect.bisect_right(times, t + window)
            for j in loc_idx[lo:hi]:
                candidates.append((abs(scans[j].when - t), t, scans[j].when, i, j))
    candidates.sort()

    pair_of_cc: dict[int, int] = {}
    used_local: set[int] = set()
    for *_, i, j in candidates:
        if i in pair_of_cc or j in used_local:
            continue
        pair_of_cc[i] = j
        used_local.add(j)

    def cc_order(i: int) -> tuple[datetime, int]:
        return (records[i].checktime, i)

    matched = [(records[i], scans[pair_of_cc[i]]) for i in sorted(pair_of_cc, key=cc_order)]
    only_cc = [(records[i], tags[i]) for i in sorted(tags, key=cc_order) if i not in pair_of_cc]
    only_local = [scans[j] for j in sorted(range(len(scans)), key=lambda j: (scans[j].when, j)) if j not in used_local]
    unmapped.sort(key=lambda r: r.checktime)
    return Report(matched=matched, only_crosschex=only_cc, only_local=only_local, unmapped=unmapped)
