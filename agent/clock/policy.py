"""The pure rules of :mod:`agent.clock`: conversions, reading a record's stamp,
and which UTC time (if any) a record is sent with.

The rules themselves are written out in the package docstring ("Effective
time", "Local time for iFlow"). Nothing here reads a clock or a file: the
present (:class:`Now`) and the anchors are passed in, so every rule can be
tested with plain values. Standard library and :mod:`agent.records` only.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any, Callable, NamedTuple, Protocol, Sequence
from zoneinfo import ZoneInfo

from agent.records import Record

log = logging.getLogger("agent.timekeeping")

__all__ = [
    "CONFIRM_TOLERANCE_NS",
    "DEFAULT_FLOOR",
    "POLICIES",
    "STATUSES",
    "Effective",
    "Now",
    "Stamp",
    "bound",
    "check_policy",
    "datetime_to_ns",
    "decide",
    "now_estimate",
    "ns_to_datetime",
    "parse_stamp",
    "to_local",
]

UTC = UTC
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
DEFAULT_FLOOR = datetime(2020, 1, 1, tzinfo=UTC)
CONFIRM_TOLERANCE_NS = 50_000_000
POLICIES = ("hold", "send")
STATUSES = ("ok", "corrected", "wait", "held_unsynced", "unsynced_sent", "held_insane", "insane_sent")


# --------------------------------------------------------------------------
# conversions


def ns_to_datetime(ns: int) -> datetime:
    """UTC datetime (µs precision, floored) for ns since the epoch."""
    return EPOCH + timedelta(microseconds=ns // 1000)


def datetime_to_ns(dt: datetime) -> int:
    """ns since the epoch for an aware datetime."""
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError(f"naive datetime {dt!r}: a time zone is required")
    return ((dt - EPOCH) // timedelta(microseconds=1)) * 1000


def to_local(when_utc: datetime, tz: ZoneInfo) -> tuple[str, str]:
    """("YYYY-MM-DD", "HH:MM:SS") of ``when_utc`` in ``tz``.

    Seconds are truncated, not rounded. Independent of the machine's TZ;
    ``when_utc`` must be aware (any offset; it is an instant).
    """
    if when_utc.tzinfo is None or when_utc.utcoffset() is None:
        raise ValueError(f"naive datetime {when_utc!r}: pass an aware UTC datetime")
    text = when_utc.astimezone(tz).isoformat()  # YYYY-MM-DDTHH:MM:SS[.ffffff]+HH:MM
    return text[:10], text[11:19]


# --------------------------------------------------------------------------
# the decision


class Effective(NamedTuple):
    """The decision for one record (see the package docstring)."""

    when: datetime | None  # the UTC time to send, or None when not sendable now
    status: str  # one of STATUSES
    original: datetime  # the stamp as captured (UTC)
    bound: tuple[datetime, datetime] | None = None  # where the true time lies
    overdue: bool = False  # "wait" only: NTP has had its grace period and this boot is still unsynced

    @property
    def sendable(self) -> bool:
        return self.when is not None


class Stamp(NamedTuple):
    """The clock fields of a journal record, checked."""

    original: datetime
    original_ns: int
    boot_id: str | None
    mono_ns: int | None
    synced: bool
    released: bool


class BootView(Protocol):
    """What :func:`bound` reads of a boot (an :class:`agent.clock.anchors.BootAnchors`)."""

    @property
    def boot_id(self) -> str: ...

    @property
    def offset(self) -> int | None: ...

    @property
    def last(self) -> tuple[int, int] | None: ...


class Now(NamedTuple):
    """The present as one decision pass sees it (read once per pass)."""

    boot_id: str  # the current boot
    mono_ns: int  # its mono clock
    latest_ns: int  # the latest instant that may be sent (now + future tolerance)
    floor_ns: int  # the build-time floor
    grace_ns: int  # how long a current-boot unsynced record waits for NTP
    policy: str  # one of POLICIES


def parse_stamp(record: Record | dict[str, Any]) -> Stamp:
    """The clock fields of ``record`` (a journal record, or its JSON object);
    ValueError names the malformed one."""
    if isinstance(record, dict):
        record = Record.from_doc(record)
    elif not isinstance(record, Record):
        raise ValueError(f"record must be a Record or a dict, got {type(record).__name__}")
    cap = record.captured_at
    if not isinstance(cap, str):
        raise ValueError(f"record captured_at missing or not a string: {cap!r:.40}")
    try:
        original = datetime.fromisoformat(cap)
    except ValueError:
        raise ValueError(f"record captured_at is not ISO 8601: {cap!r:.40}") from None
    if original.tzinfo is None or original.utcoffset() is None:
        raise ValueError(f"record captured_at has no UTC offset: {cap!r:.40}")
    original = original.astimezone(UTC)
    original_ns = (original - EPOCH) // _MICROSECOND * 1000
    boot_id = record.boot_id
    if boot_id is not None and not isinstance(boot_id, str):
        raise ValueError(f"record boot_id must be a string: {boot_id!r:.40}")
    mono = record.mono_ns
    if mono is not None and (not isinstance(mono, int) or isinstance(mono, bool)):
        raise ValueError(f"record mono_ns must be an int: {mono!r:.40}")
    synced = record.synced
    if not isinstance(synced, bool):
        raise ValueError(f"record synced must be a bool: {synced!r:.40}")
    return Stamp(original, original_ns, boot_id or None, mono, synced,
                 record.extra.get("released") is True)


def check_policy(policy: str) -> None:
    if policy not in POLICIES:
        raise ValueError(f"unknown unsynced policy {policy!r} (use one of {POLICIES})")


def now_estimate(wall_ns: int, mono_ns: int, offset: int | None, latest_synced_wall: int | None) -> int:
    """"Now" for the sanity check: this boot's ``mono + offset`` if it has an
    anchor, else the newest of the wall clock and the last synchronised wall time."""
    if offset is not None:
        return mono_ns + offset
    return wall_ns if latest_synced_wall is None else max(wall_ns, latest_synced_wall)


def decide(
    record: dict,
    now: Now,
    offset_of: Callable[[str], int | None],
    boots: Callable[[], Sequence[BootView]],
) -> Effective:
    """The time to send ``record`` with, or why not. ``offset_of(boot_id)`` is
    that boot's newest anchor offset; ``boots()`` every known boot, oldest first
    (asked only for an unsynced record of a past boot). ValueError: malformed."""
    r = parse_stamp(record)
    bounds: tuple[datetime, datetime] | None = None
    off = offset_of(r.boot_id) if r.boot_id and r.mono_ns is not None else None
    if off is not None:
        derived = r.mono_ns + off  # type: ignore[operator]
        if r.synced and abs(derived - r.original_ns) <= CONFIRM_TOLERANCE_NS:
            cand, status = r.original_ns, "ok"
        else:
            cand, status = derived, "corrected"
    elif r.synced:
        cand, status = r.original_ns, "ok"
    else:
        current = r.boot_id == now.boot_id
        bounds = None if current else bound(boots(), r, now.floor_ns)
        aged = r.mono_ns is None or now.mono_ns - r.mono_ns >= now.grace_ns
        if r.released or (now.policy == "send" and (not current or aged)):
            cand, status = r.original_ns, "unsynced_sent"
        elif current:
            return Effective(None, "wait", r.original, None, aged)
        else:
            return Effective(None, "held_unsynced", r.original, bounds)
    # The build-time floor judges a stamp of this device's clock taken while it
    # was not trusted (a clock at 1970): a synchronised or anchored time before
    # the build is real (an upgrade after an outage spanning the build), and a
    # punch from another system (source "crosschex") carries that system's time.
    untrusted = off is None and not r.synced and record.get("source") in (None, "reader")
    if (untrusted and cand < now.floor_ns) or cand > now.latest_ns:
        if not r.released:
            return Effective(None, "held_insane", r.original, bounds)
        # A person checked it and released it: sent as captured, flagged.
        return Effective(r.original, "insane_sent", r.original, bounds)
    when = r.original if cand == r.original_ns else ns_to_datetime(cand)
    return Effective(when, status, r.original, bounds)


def bound(boots: Sequence[BootView], r: Stamp, floor_ns: int) -> tuple[datetime, datetime] | None:
    """Where the true time of an unsynced record of a past boot lies (the
    package docstring, rule 3), or None when no later boot synchronised."""
    if r.boot_id is None:
        return None
    idx = next((i for i, b in enumerate(boots) if b.boot_id == r.boot_id), None)
    if idx is None:
        return None
    upper = next((b.offset for b in boots[idx + 1 :] if b.offset is not None), None)
    if upper is None:
        return None
    earlier = [b.last[0] for b in boots[:idx] if b.last is not None]
    lower = max(floor_ns, max(earlier) + (r.mono_ns or 0) if earlier else 0)
    if lower > upper:
        log.warning("inconsistent clock bounds for boot %s; giving none", r.boot_id)
        return None
    return ns_to_datetime(lower), ns_to_datetime(upper)
