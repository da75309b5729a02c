"""``agent export``: every journal record of a period, as CSV or JSON Lines.

Reads the journal's files directly and read-only
(:class:`agent.journal.readonly.JournalReader`): it works the same with and
without a running daemon, never waits for the journal's lock, never talks to
the daemon (its memory cannot grow for an export) and writes nothing under
``state_dir``. One segment is in memory at a time and each row is written as
it is made, so a journal of any size exports in bounded memory.

Order: journal order (the order scans were recorded, segment by segment). A
strict sort by time would need every record in memory; the two differ only
for punches added later with an older time (``agent reconcile --push``).

With ``--hash-tags`` no card number is written: ``tag`` becomes
``tag_hmac``, HMAC-SHA256 of the card number under a key (random for each
export and never shown, or read from ``--hash-key-file``), ``raw`` is left
out, and the card number, its raw form and any number of 6 or more (hex)
digits are masked in the message. A plain hash would not do: there are only about 10^10
card numbers, and trying them all against a SHA-256 takes minutes.
"""

from __future__ import annotations

import argparse
import csv
import hmac
import json
import os
import re
import sys
from datetime import UTC, date, datetime, timedelta
from hashlib import sha256
from typing import IO, Any, Callable, Iterator
from zoneinfo import ZoneInfo

from agent.config import Config
from agent.errors import EXIT_CONFIG, EXIT_OK, CommandError
from agent.fsinfo import not_a_directory
from agent.journal.readonly import JournalReader
from agent.records import Record, State
from agent.runtime.operations import scan_time

JOURNAL_DIR = "journal"  # agent.runtime.wiring.JOURNAL_DIR, whose import would build the whole daemon
STATES = tuple(s.value for s in State)
# The columns, in this order (public: README "agent export"); with --hash-tags,
# "tag" is "tag_hmac" and "raw" is left out.
COLUMNS = ("id", "captured_at", "local_time", "sent_date", "sent_time", "delivered_at", "state",
           "dismissed_at", "message", "reader", "source", "tag", "raw", "time_note")
# Set by delivery on a record sent with its stamp as captured (agent flush --release-unsynced,
# time.unsynced = "send"): the time iFlow received was not confirmed by any source.
TIME_NOTES = ("unsynced_sent", "insane_sent")
HASHED_COLUMNS = tuple("tag_hmac" if c == "tag" else c for c in COLUMNS if c != "raw")
MIN_KEY_BYTES = 16
# 6 or more digits, or a word of 6 or more hex digits with a digit: a card number in some form
_NUMBERS = re.compile(r"\d{6,}|(?<![0-9A-Za-z])(?=[0-9A-Fa-f]*\d)[0-9A-Fa-f]{6,}(?![0-9A-Za-z])")

HELP = ("columns: " + ", ".join(COLUMNS) + ". captured_at is the scan's true time (UTC, ISO 8601: the "
        "corrected time when the agent corrected the clock, else the wall clock at capture), local_time the "
        "same in the config's time zone; sent_date/sent_time what iFlow received (or will); delivered_at "
        "when iFlow answered (or the record was set aside); message iFlow's message or why it failed; "
        "time_note unsynced_sent or insane_sent when the time sent was the stamp as captured, unconfirmed. "
        "A record is in the period when --from <= captured_at < --to; a naive time is in the config's "
        "time zone, a date alone its midnight, and a date as --to takes in that whole day.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = HELP
    parser.add_argument("--from", dest="begin", required=True, metavar="T",
                        help="first moment, inclusive: ISO 8601 date or date-time")
    parser.add_argument("--to", dest="end", required=True, metavar="T",
                        help="end: a date-time is exclusive; a date alone includes that whole day")
    parser.add_argument("--format", choices=("csv", "json"), default="csv",
                        help="csv (default, with a header row) or json (JSON Lines: one object a line)")
    parser.add_argument("--state", action="append", choices=STATES, metavar="STATE",
                        help=f"only records in this state (repeatable): {', '.join(STATES)}")
    parser.add_argument("--hash-tags", action="store_true",
                        help="no card numbers: tag_hmac (HMAC-SHA256 under a random key, the same card the "
                             "same value within this export) instead of tag, no raw, numbers masked in messages")
    parser.add_argument("--hash-key-file", metavar="PATH",
                        help="with --hash-tags: the HMAC key (at least 16 bytes), for the same values "
                             "across exports; keep it secret")
    parser.add_argument("--output", metavar="PATH",
                        help="write here, atomically, mode 0600 (default: standard output)")


# ------------------------------------------------------------------ period


def parse_moment(text: str, tz: ZoneInfo, option: str, *, end: bool = False) -> datetime:
    """An ISO 8601 date or date-time as an aware UTC datetime (a naive one in ``tz``;
    with ``end``, a date alone is the next midnight). CommandError (exit 2) else."""
    value = text.strip()
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise CommandError(f"{option} {text!r}: not an ISO 8601 date or date-time "
                           "(2026-11-01, 2026-11-01T08:00, 2026-11-01T08:00:00+02:00)", EXIT_CONFIG) from None
    if dt.tzinfo is not None and dt.utcoffset() is not None:
        return dt.astimezone(UTC)
    date_alone = _is_date(value)
    if end and date_alone:  # a date alone: the whole day
        dt += timedelta(days=1)
    local = dt.replace(tzinfo=tz, fold=0)  # a repeated local time: its first occurrence
    # A day whose midnight the clocks skip (DST at 00:00: Santiago, Cairo) starts
    # at the skip, which is where zoneinfo puts the skipped time with fold=0.
    if not date_alone and local.astimezone(UTC).astimezone(tz).replace(tzinfo=None) != dt:
        raise CommandError(f"{option} {text!r}: that local time does not exist in {tz.key} "
                           "(the clocks skip it)", EXIT_CONFIG)
    return local.astimezone(UTC)


def _is_date(value: str) -> bool:
    """A date alone (2026-11-01, 20261101), not a date-time."""
    try:
        date.fromisoformat(value)
    except ValueError:
        return False
    return True


def period(cfg: Config, args: argparse.Namespace) -> tuple[datetime, datetime]:
    begin = parse_moment(args.begin, cfg.timezone, "--from")
    end = parse_moment(args.end, cfg.timezone, "--to", end=True)
    if begin >= end:
        raise CommandError(f"--from {args.begin} is not before --to {args.end}", EXIT_CONFIG)
    return begin, end


# ------------------------------------------------------------------ rows


def read_key(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            key = f.read(4096).rstrip(b"\r\n")
    except OSError as exc:
        raise CommandError(f"--hash-key-file {path}: {exc.strerror or exc}", EXIT_CONFIG) from None
    if len(key) < MIN_KEY_BYTES:
        raise CommandError(f"--hash-key-file {path}: a key needs at least {MIN_KEY_BYTES} bytes "
                           "(e.g. head -c 32 /dev/urandom | base64 > FILE)", EXIT_CONFIG)
    return key


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def row_maker(tz: ZoneInfo, key: bytes | None) -> Callable[[Record, datetime], dict[str, Any]]:
    """The row of a record and its true time; with ``key``, without card numbers."""

    def row(rec: Record, when: datetime) -> dict[str, Any]:
        out = {
            "id": _text(rec.id),
            "captured_at": when.isoformat(timespec="microseconds"),
            "local_time": when.astimezone(tz).isoformat(timespec="seconds"),
            "sent_date": _text(rec.sent_date),
            "sent_time": _text(rec.sent_time),
            "delivered_at": _text(rec.done_at),
            "state": rec.state.value,
            "dismissed_at": _text(rec.get("dismissed_at")),
            "message": _text(rec.message),
            "reader": _text(rec.reader),
            "source": _text(rec.source),
            "time_note": next((n for n in TIME_NOTES if rec.get(n)), None),
        }
        tag, raw = _text(rec.tag), _text(rec.raw)
        if key is None:
            out["tag"], out["raw"] = tag, raw
            return out
        digest = None if tag is None else hmac.new(key, tag.encode(), sha256).hexdigest()
        out["tag_hmac"] = digest
        if out["message"]:
            out["message"] = _mask(out["message"], (tag, raw))
        return out

    return row


def _mask(message: str, secrets: tuple[str | None, ...]) -> str:
    """``message`` with the card number, its raw form and any long (hex) number masked:
    iFlow's answers may quote the card."""
    for s in sorted((s for s in secrets if s), key=len, reverse=True):
        message = re.sub(re.escape(s), "[card]", message, flags=re.IGNORECASE)
    # iFlow (PHP) echoes a numeric card as a number: 0000012345 comes back as 12345
    for run in {r.lstrip("0") for s in secrets if s for r in re.findall(r"\d{4,}", s)} - {""}:
        message = re.sub(rf"(?<![0-9A-Za-z])0*{run}(?![0-9A-Za-z])", "[card]", message)
    return _NUMBERS.sub("[number]", message)


def rows(reader: JournalReader, begin: datetime, end: datetime, states: set[str] | None,
         make: Callable[[Record, datetime], dict[str, Any]], skipped: list[int]) -> Iterator[dict[str, Any]]:
    """The rows of the period, in journal order; ``skipped[0]`` counts records
    without a readable time (they cannot be placed in any period)."""
    for rec in reader.records():
        if states is not None and rec.state.value not in states:
            continue
        when = scan_time(rec, None)
        if when is None:
            skipped[0] += 1
            continue
        if begin <= when < end:
            yield make(rec, when)


# ------------------------------------------------------------------ output


def write_rows(out: IO[str], fmt: str, columns: tuple[str, ...], items: Iterator[dict[str, Any]]) -> int:
    n = 0
    if fmt == "csv":
        w = csv.DictWriter(out, fieldnames=columns, lineterminator="\r\n", extrasaction="raise")
        w.writeheader()
        for item in items:
            w.writerow({k: "" if v is None else v for k, v in item.items()})
            n += 1
    else:
        for item in items:
            out.write(json.dumps({c: item[c] for c in columns}, ensure_ascii=False, separators=(",", ":")) + "\n")
            n += 1
    return n


class AtomicOutput:
    """A new file at ``path``, mode 0600, in place only once whole (temp file, fsync, rename)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.tmp = os.path.join(os.path.dirname(os.path.abspath(path)),
                                f".{os.path.basename(path)}.{os.getpid()}.tmp")
        try:
            fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise CommandError(f"--output {path}: {exc.strerror or exc}", EXIT_CONFIG) from None
        os.fchmod(fd, 0o600)  # whatever the umask
        self.file = open(fd, "w", encoding="utf-8", newline="")

    def commit(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        os.replace(self.tmp, self.path)
        dfd = os.open(os.path.dirname(os.path.abspath(self.path)), os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    def discard(self) -> None:
        self.file.close()
        try:
            os.unlink(self.tmp)
        except FileNotFoundError:
            pass


def main(cfg: Config, args: argparse.Namespace) -> int:
    begin, end = period(cfg, args)
    if args.hash_key_file and not args.hash_tags:
        raise CommandError("--hash-key-file needs --hash-tags", EXIT_CONFIG)
    key = None
    if args.hash_tags:
        key = read_key(args.hash_key_file) if args.hash_key_file else os.urandom(32)
    blocked = not_a_directory(cfg.state_dir)
    if blocked is not None:
        raise blocked
    if not os.path.isdir(cfg.state_dir):
        raise CommandError(f"no journal yet: {cfg.state_dir} does not exist (has `agent run` ever started?)")
    reader = JournalReader(os.path.join(cfg.state_dir, JOURNAL_DIR))
    try:
        reader.segment_count()  # before the header row: a journal we may not read is one line, no output
    except PermissionError:
        raise CommandError(f"cannot read {reader.directory}: permission denied (run as root or as the "
                           "agent's user)") from None
    columns = COLUMNS if key is None else HASHED_COLUMNS
    skipped = [0]
    items = rows(reader, begin, end, set(args.state) if args.state else None, row_maker(cfg.timezone, key), skipped)
    target = AtomicOutput(args.output) if args.output else None
    if target is None:
        sys.stdout.reconfigure(encoding="utf-8", newline="")  # CSV rows end in CRLF as written
    try:
        n = write_rows(target.file if target else sys.stdout, args.format, columns, items)
        if target:
            target.commit()
        else:
            sys.stdout.flush()
    except BrokenPipeError:
        raise  # `agent export | head`: the command line ends quietly (agent.commands.cli)
    except PermissionError as exc:
        raise CommandError(f"cannot read {exc.filename}: permission denied (run as root or as the "
                           "agent's user)") from None
    except OSError as exc:
        raise CommandError(f"export failed: {exc.filename or ''}: {exc.strerror or exc}") from None
    finally:
        if target and not target.file.closed:
            target.discard()
    if skipped[0]:
        print(f"agent: {skipped[0]} record(s) without a readable capture time left out", file=sys.stderr)
    if reader.unreadable:
        names = ", ".join(f"{os.path.basename(p)} ({why})" for p, why in reader.unreadable)
        raise CommandError(f"export incomplete: {len(reader.unreadable)} unreadable journal segment(s) left "
                           f"out: {names}; `agent run` moves them aside, `agent doctor` names them")
    if target:
        print(f"agent: {n} record(s) written to {args.output}", file=sys.stderr)
    return EXIT_OK
