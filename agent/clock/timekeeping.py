"""Time you can trust on a Raspberry Pi without a real-time clock.

A Pi boots with the wall clock it last saved (fake-hwclock / timesyncd's
clock file: hours or days behind) and only learns the true time when NTP
synchronises, which may be never on an isolated network. This module stamps
every scan so that its true time can be recovered later, and decides at
delivery time which UTC instant (if any) may be sent.

Sources (:class:`ClockSources`, all injectable)
-----------------------------------------------
* wall clock: ``time.time_ns()`` (CLOCK_REALTIME, may be wrong or stepped);
* mono clock: ``CLOCK_BOOTTIME`` in ns; starts near 0 at kernel boot, never
  stepped, and is slewed by NTP exactly like the wall clock. Hence within one
  boot ``offset = wall - mono`` is constant except when the wall clock is
  *stepped* (settimeofday, an NTP step, a leap second): that is what makes
  ``true_time = mono + offset`` exact;
* boot id: ``/proc/sys/kernel/random/boot_id`` (mono values only compare
  within one boot);
* sync state: read-only ``adjtimex`` (``TIME_ERROR``/``STA_UNSYNC`` means
  unsynchronised; works with timesyncd and chrony; the kernel sets
  STA_UNSYNC on every settimeofday, so a manual ``date -s`` reads as
  unsynced). The kernel answer is authoritative when available; only when it
  is not (non-Linux, ``adjtimex`` blocked, ``use_adjtimex=False``) the
  timesyncd flag file counts, and only if its mtime falls within this boot.
  ``trust_rtc=True`` declares the clock always trustworthy (a board with a
  real RTC and no NTP).

Stamping (:meth:`Clock.stamp`, no I/O)
--------------------------------------
A scan gets ``captured_at`` (wall clock, UTC ISO 8601 with microseconds),
``boot_id``, ``mono_ns`` and ``synced``. ``synced`` is the sync state cached by
the last :meth:`Clock.observe`, *and* ``wall - mono`` must still agree with
the last observation within ``jump_threshold_s``: a scan taken in the second
after a step, before ``observe()`` noticed it, is stamped unsynced.

Anchors (:class:`AnchorStore`, one JSON file, atomic writes)
------------------------------------------------------------
:meth:`Clock.observe` (about once a second, daemon only) records an anchor
``(mono_ns, offset_ns)`` for the current boot when the clock becomes
synchronised, after a step detected while synchronised, and every
``anchor_every_s`` (10 min) while synchronised, so the last synchronised wall
time of every boot is known. It reads the sync state *before* the clocks, so
an anchor is never taken from a wall time read before the step that
synchronised it. A step is ``|Δ(wall - mono)| > jump_threshold_s`` between two
observations; it is logged as a warning with its size and returned as the
event ``"jump:-3600.0s"``. Boots are kept in the order they were first seen
(the last 50), anchors per boot bounded (the first and the newest).
Only the daemon calls ``observe()``; other processes (``agent flush``) only
read the store (:meth:`AnchorStore.reload`).

Effective time (:meth:`Clock.effective`), in order
--------------------------------------------------
1. The record's boot has an anchor: the time is ``mono_ns + offset`` where
   the offset is that boot's **newest** anchor. Between steps all anchors of
   a boot carry the same offset (to the µs of two back-to-back clock reads),
   so the newest equals the nearest in mono time; they differ only after the
   clock was stepped while synchronised, and then the newest measurement
   wins (a synchronised clock is stepped only to correct it) and applies to
   the whole boot, so times within a boot are ordered by mono time, the
   source of truth for ordering: a record is never given a time earlier
   than one captured before it in the same boot. If the record was stamped
   synced and its stamp agrees with this within ``CONFIRM_TOLERANCE_NS``
   (50 ms: far above the µs between two clock reads) it is sent exactly as
   stamped, status ``"ok"``; otherwise the derived time is sent, status
   ``"corrected"`` (original kept). So ordering within a boot is exact for
   corrected records and good to 50 ms between "ok" ones (a step that small
   is below any detection threshold anyway).
   Limitation: records already delivered before a step cannot be recalled.
2. No anchor, stamped synced (e.g. the anchor file was lost): ``"ok"``.
3. No anchor, stamped unsynced:

   * ``record["released"] is True`` (a person ran
     ``agent flush --release-unsynced``), or policy ``"send"`` and the record
     is from a past boot, or from the current boot and older than
     ``unsynced_grace_s`` (15 min, giving NTP its chance): sent with its
     original stamp, status ``"unsynced_sent"`` (flagged, never silent);
   * else current boot: ``"wait"`` (it will be corrected once this boot
     syncs);
   * else past boot: ``"held_unsynced"``. A past boot can never sync any
     more; if a later boot has synced, ``bound`` gives the interval the true
     time lies in: at most the later boot's start (its first synced wall time
     minus its uptime then, i.e. its offset), at least the last synchronised
     wall time seen in an earlier boot plus the record's own ``mono_ns``
     (the record's boot started after that moment), or the sanity floor if
     no earlier boot synced. ``bound`` is also given for ``unsynced_sent``.

4. Sanity, on whatever would be sent: earlier than ``build_time`` (default
   2020-01-01 UTC: catches a clock at 1970) or more than
   ``future_tolerance_s`` after now gives ``"held_insane"``. "Now" is this
   boot's ``mono + offset`` if it has an anchor, else the newest of the wall
   clock and the last synchronised wall time in the store.

Local time for iFlow (:func:`to_local`)
----------------------------------------
iFlow takes the site's local date and time without an offset. The UTC
instant is converted with the configured ``ZoneInfo`` (never the machine's
TZ); UTC -> local is unambiguous. Seconds are **truncated** (12:00:00.999 ->
12:00:00), never rounded, so a scan never moves into the next second/day.
In the hour repeated at the end of summer time (Europe/Bucharest, last
Sunday of October: 04:00 EEST -> 03:00 EET) the local clock shows
03:00-03:59 twice and both are sent as such; in March 03:00-03:59 does not
exist (03:00 EET -> 04:00 EEST). Records are ordered by their UTC instant.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, NamedTuple
from zoneinfo import ZoneInfo

from agent.errors import CorruptAnchors

try:
    from agent.fsio import atomic_write
except ModuleNotFoundError as exc:  # pragma: no cover - only before fsio exists
    if exc.name != "agent.fsio":
        raise

    def atomic_write(path: str, data: bytes) -> None:
        """Fallback: write a temp file, fsync, rename, fsync the directory."""
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dfd = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


log = logging.getLogger("agent.timekeeping")

__all__ = [
    "AnchorStore",
    "BootAnchors",
    "Clock",
    "ClockSources",
    "Effective",
    "boottime_ns",
    "kernel_synced",
    "read_boot_id",
    "to_local",
]

UTC = timezone.utc
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
DEFAULT_FLOOR = datetime(2020, 1, 1, tzinfo=UTC)
CONFIRM_TOLERANCE_NS = 50_000_000
POLICIES = ("hold", "send")
STATUSES = ("ok", "corrected", "wait", "held_unsynced", "unsynced_sent", "held_insane")
MAX_BOOTS = 50
MAX_ANCHORS_PER_BOOT = 16
TIME_ERROR = 5
STA_UNSYNC = 0x0040
_ANCHOR_RETRY_NS = 60 * 10**9


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
# machine sources


def read_boot_id(path: str = "/proc/sys/kernel/random/boot_id") -> str:
    """The kernel's boot id (changes at every boot). Raises OSError/ValueError."""
    with open(path, encoding="ascii", errors="replace") as f:
        value = f.read(200).strip()
    if not value:
        raise ValueError(f"empty boot id in {path}")
    return value


def boottime_ns() -> int:
    """CLOCK_BOOTTIME in ns (monotonic, counts suspend; never stepped)."""
    clk = getattr(time, "CLOCK_BOOTTIME", None)
    if clk is None:  # pragma: no cover - non-Linux
        return time.monotonic_ns()
    return time.clock_gettime_ns(clk)


_adjtimex_impl: Any = None  # (adjtimex function, struct class), loaded on first use


def _load_adjtimex() -> Any:
    import ctypes

    class Timex(ctypes.Structure):  # the leading fields of struct timex
        _fields_ = [
            ("modes", ctypes.c_uint),
            ("offset", ctypes.c_long),
            ("freq", ctypes.c_long),
            ("maxerror", ctypes.c_long),
            ("esterror", ctypes.c_long),
            ("status", ctypes.c_int),
            ("_rest", ctypes.c_byte * 448),  # total >= 472 > sizeof(struct timex)
        ]

    fn = ctypes.CDLL(None, use_errno=True).adjtimex  # libc, already loaded
    fn.argtypes = [ctypes.POINTER(Timex)]
    fn.restype = ctypes.c_int
    return fn, Timex


def kernel_synced() -> bool | None:
    """Whether the kernel considers the clock NTP-synchronised.

    A read-only ``adjtimex`` (``modes == 0`` on a zeroed buffer larger than any
    ``struct timex``; needs no privilege). False when it returns TIME_ERROR or
    STA_UNSYNC is set; None when unavailable (non-Linux, blocked, any error).
    """
    global _adjtimex_impl
    if not sys.platform.startswith("linux"):
        return None
    try:
        if _adjtimex_impl is None:
            _adjtimex_impl = _load_adjtimex()
        fn, timex = _adjtimex_impl
        tx = timex()  # zeroed: modes = 0 means read only
        rc = fn(tx)
    except Exception:  # noqa: BLE001 - "unavailable" covers everything
        return None
    if rc < 0:
        return None
    return not (rc == TIME_ERROR or tx.status & STA_UNSYNC)


class ClockSources:
    """The machine's clocks and sync state, every piece injectable."""

    def __init__(
        self,
        *,
        use_adjtimex: bool = True,
        timesyncd_flag: str = "/run/systemd/timesync/synchronized",
        trust_rtc: bool = False,
        boot_id_path: str = "/proc/sys/kernel/random/boot_id",
        wall_ns: Callable[[], int] = time.time_ns,
        mono_ns: Callable[[], int] = boottime_ns,
        adjtimex: Callable[[], bool | None] = kernel_synced,
    ) -> None:
        self._use_adjtimex = use_adjtimex
        self._flag = timesyncd_flag
        self._trust_rtc = trust_rtc
        self._boot_id_path = boot_id_path
        self._wall_ns = wall_ns
        self._mono_ns = mono_ns
        self._adjtimex = adjtimex

    def synced(self) -> bool:
        """Is the wall clock trustworthy now (see the module docstring)."""
        if self._trust_rtc:
            return True
        if self._use_adjtimex:
            state = self._adjtimex()
            if state is not None:
                return bool(state)
        return self._flag_this_boot()

    def _flag_this_boot(self) -> bool:
        if not self._flag:
            return False
        try:
            mtime_ns = os.stat(self._flag).st_mtime_ns
        except OSError:
            return False
        wall, mono = self.now()
        return mtime_ns > wall - mono  # touched after this boot started

    def boot_id(self) -> str:
        return read_boot_id(self._boot_id_path)

    def now(self) -> tuple[int, int]:
        """(wall_ns, mono_ns), read back to back."""
        return self._wall_ns(), self._mono_ns()


# --------------------------------------------------------------------------
# persisted anchors


@dataclass(frozen=True)
class BootAnchors:
    """What is known about one boot's clock (a snapshot)."""

    boot_id: str
    anchors: tuple[tuple[int, int], ...]  # (mono_ns, offset_ns), oldest first
    first: tuple[int, int] | None  # (wall_ns, mono_ns) first synced observation
    last: tuple[int, int] | None  # (wall_ns, mono_ns) last synced observation

    @property
    def offset(self) -> int | None:
        """wall - mono of the newest anchor (= this boot's start in true time)."""
        return self.anchors[-1][1] if self.anchors else None



def _pair(v: Any, what: str) -> tuple[int, int]:
    if (
        not isinstance(v, list)
        or len(v) != 2
        or not all(isinstance(x, int) and not isinstance(x, bool) for x in v)
    ):
        raise CorruptAnchors(f"{what}: expected [int, int], got {v!r:.60}")
    return v[0], v[1]


class AnchorStore:
    """Sync anchors per boot in one JSON file, rewritten atomically.

    Thread-safe. A missing file is an empty store; an undecodable one is moved
    aside to ``<path>.corrupt`` with a warning and the store starts empty
    (unsynced records of old boots then stay held, never mis-corrected).
    Mutations update memory first, then write; a failed write raises OSError
    but the anchor stays in memory and is written with the next one.
    """

    def __init__(self, path: str, write: Callable[[str, bytes], None] = atomic_write) -> None:
        self.path = path
        self._write = write
        self._lock = threading.Lock()
        self._boots: dict[str, dict[str, Any]] = {}  # insertion order = boot order
        self._latest: tuple[int | None] | None = None  # cached latest_synced_wall(); None: stale
        self.reload()

    # -- reading
    def reload(self) -> None:
        """Re-read the file (for processes other than the daemon)."""
        with self._lock:
            self._boots = self._load()
            self._latest = None

    def _load(self) -> dict[str, dict[str, Any]]:
        try:
            with open(self.path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            log.warning("cannot read clock anchors %s (%s); starting without them", self.path, exc)
            return {}
        try:
            return self._parse(raw)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            aside = self.path + ".corrupt"
            try:
                os.replace(self.path, aside)
                log.warning("clock anchors %s unreadable (%s); moved aside to %s", self.path, exc, aside)
            except OSError as mv:
                log.warning("clock anchors %s unreadable (%s); cannot move aside: %s", self.path, exc, mv)
            return {}

    @staticmethod
    def _parse(raw: bytes) -> dict[str, dict[str, Any]]:
        doc = json.loads(raw.decode("utf-8"))
        if not isinstance(doc, dict) or doc.get("version") != 1 or not isinstance(doc.get("boots"), list):
            raise CorruptAnchors("not a version 1 anchor file")
        boots: dict[str, dict[str, Any]] = {}
        for b in doc["boots"]:
            if not isinstance(b, dict) or not isinstance(b.get("boot_id"), str) or not b["boot_id"]:
                raise CorruptAnchors(f"bad boot entry {b!r:.60}")
            anchors = b.get("anchors")
            if not isinstance(anchors, list):
                raise CorruptAnchors("anchors: expected a list")
            entry = {
                "anchors": [_pair(a, "anchor") for a in anchors][-MAX_ANCHORS_PER_BOOT:],
                "first": None if b.get("first") is None else _pair(b["first"], "first"),
                "last": None if b.get("last") is None else _pair(b["last"], "last"),
            }
            boots[b["boot_id"]] = entry
        return dict(list(boots.items())[-MAX_BOOTS:])

    def get(self, boot_id: str) -> BootAnchors | None:
        with self._lock:
            b = self._boots.get(boot_id)
            return None if b is None else self._snap(boot_id, b)

    def boots(self) -> list[BootAnchors]:
        """All known boots, oldest first."""
        with self._lock:
            return [self._snap(k, b) for k, b in self._boots.items()]

    def offset(self, boot_id: str) -> int | None:
        with self._lock:
            b = self._boots.get(boot_id)
            return b["anchors"][-1][1] if b and b["anchors"] else None

    def latest_synced_wall(self) -> int | None:
        """The newest synchronised wall time seen in any boot (ns)."""
        with self._lock:
            if self._latest is None:  # computed once per change (asked once per record sent)
                walls = [b["last"][0] for b in self._boots.values() if b["last"] is not None]
                self._latest = (max(walls) if walls else None,)
            return self._latest[0]

    @staticmethod
    def _snap(boot_id: str, b: dict[str, Any]) -> BootAnchors:
        return BootAnchors(boot_id, tuple(tuple(a) for a in b["anchors"]), b["first"], b["last"])

    # -- writing
    def register_boot(self, boot_id: str) -> bool:
        """Note that ``boot_id`` exists (its place in the boot order). True if new."""
        with self._lock:
            if boot_id in self._boots:
                return False
            self._add_boot(boot_id)
            self._save()
            return True

    def add_anchor(self, boot_id: str, wall_ns: int, mono_ns: int) -> None:
        """Record a synchronised observation (wall_ns, mono_ns) of ``boot_id``."""
        with self._lock:
            b = self._boots.get(boot_id) or self._add_boot(boot_id)
            anchors = b["anchors"]
            anchors.append((mono_ns, wall_ns - mono_ns))
            if len(anchors) > MAX_ANCHORS_PER_BOOT:  # keep the first and the newest
                del anchors[1 : len(anchors) - MAX_ANCHORS_PER_BOOT + 1]
            if b["first"] is None:
                b["first"] = (wall_ns, mono_ns)
            b["last"] = (wall_ns, mono_ns)
            self._latest = None
            self._save()

    def _add_boot(self, boot_id: str) -> dict[str, Any]:
        entry: dict[str, Any] = {"anchors": [], "first": None, "last": None}
        self._boots[boot_id] = entry
        self._latest = None
        while len(self._boots) > MAX_BOOTS:
            del self._boots[next(iter(self._boots))]
        return entry

    def _save(self) -> None:
        doc = {
            "version": 1,
            "boots": [
                {"boot_id": k, "anchors": [list(a) for a in b["anchors"]],
                 "first": None if b["first"] is None else list(b["first"]),
                 "last": None if b["last"] is None else list(b["last"])}
                for k, b in self._boots.items()
            ],
        }
        self._write(self.path, json.dumps(doc, separators=(",", ":")).encode())


# --------------------------------------------------------------------------
# the clock


class Effective(NamedTuple):
    """The decision for one record (see the module docstring)."""

    when: datetime | None  # the UTC time to send, or None when not sendable now
    status: str  # one of STATUSES
    original: datetime  # the stamp as captured (UTC)
    bound: tuple[datetime, datetime] | None = None  # where the true time lies

    @property
    def sendable(self) -> bool:
        return self.when is not None


class _Rec(NamedTuple):
    original: datetime
    original_ns: int
    boot_id: str | None
    mono_ns: int | None
    synced: bool
    released: bool


def _parse_record(record: dict) -> _Rec:
    if not isinstance(record, dict):
        raise ValueError(f"record must be a dict, got {type(record).__name__}")
    cap = record.get("captured_at")
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
    boot_id = record.get("boot_id")
    if boot_id is not None and not isinstance(boot_id, str):
        raise ValueError(f"record boot_id must be a string: {boot_id!r:.40}")
    mono = record.get("mono_ns")
    if mono is not None and (not isinstance(mono, int) or isinstance(mono, bool)):
        raise ValueError(f"record mono_ns must be an int: {mono!r:.40}")
    synced = record.get("synced")
    if not isinstance(synced, bool):
        raise ValueError(f"record synced must be a bool: {synced!r:.40}")
    return _Rec(original, original_ns, boot_id or None, mono, synced,
                record.get("released") is True)


class Clock:
    """Stamps scans, tracks sync/steps, decides the time each record is sent with."""

    def __init__(
        self,
        sources: ClockSources,
        anchors: AnchorStore,
        *,
        jump_threshold_s: float = 2.0,
        build_time: datetime | None = None,
        future_tolerance_s: float = 86400,
        anchor_every_s: float = 600.0,
        unsynced_grace_s: float = 900.0,
    ) -> None:
        self._sources = sources
        self._store = anchors
        self._jump_ns = int(jump_threshold_s * 1e9)
        self._floor_ns = datetime_to_ns(build_time if build_time is not None else DEFAULT_FLOOR)
        self._future_ns = int(future_tolerance_s * 1e9)
        self._every_ns = int(anchor_every_s * 1e9)
        self._grace_ns = int(unsynced_grace_s * 1e9)
        self._boot_id = sources.boot_id()
        synced = sources.synced()
        wall, mono = sources.now()
        # (cached sync state, wall - mono at the last observation): one tuple so
        # stamp() in another thread never sees a torn pair.
        self._state: tuple[bool, int] = (synced, wall - mono)
        self._observed_synced: bool | None = None  # None before the first observe()
        self._next_anchor_mono: int | None = None  # None: anchor at the first synced observe
        self._registered = False

    @property
    def boot_id(self) -> str:
        return self._boot_id

    @property
    def synced(self) -> bool:
        """The cached sync state (as of the last observe())."""
        return self._state[0]

    def stamp(self) -> dict:
        """Stamp a scan now: captured_at, boot_id, mono_ns, synced. No I/O."""
        wall, mono = self._sources.now()
        synced, last_off = self._state
        if synced and abs((wall - mono) - last_off) > self._jump_ns:
            synced = False  # stepped since the last observe(): don't trust it
        return {
            "captured_at": ns_to_datetime(wall).isoformat(timespec="microseconds"),
            "boot_id": self._boot_id,
            "mono_ns": mono,
            "synced": synced,
        }

    def observe(self) -> list[str]:
        """Refresh the sync state, detect steps, record anchors. Returns events."""
        synced = self._sources.synced()  # before the clocks: see module docstring
        wall, mono = self._sources.now()
        off = wall - mono
        events: list[str] = []
        if not self._registered:
            self._registered = True
            try:
                self._store.register_boot(self._boot_id)
            except OSError as exc:
                log.warning("cannot save clock anchors %s: %s", self._store.path, exc)
        prev_synced = self._observed_synced
        if synced and not prev_synced:
            events.append("synced")
            log.info("wall clock synchronised")
        elif not synced and prev_synced:
            events.append("unsynced")
            log.warning("wall clock no longer synchronised; scans will be corrected from the last anchor")
        _, prev_off = self._state
        delta = off - prev_off
        jumped = abs(delta) > self._jump_ns
        if jumped:
            events.append(f"jump:{delta / 1e9:+.1f}s")
            log.warning("wall clock stepped by %+.1f s (%s)", delta / 1e9,
                        "synchronised: new anchor" if synced else "unsynchronised")
        if synced and (
            "synced" in events or jumped or self._next_anchor_mono is None or mono >= self._next_anchor_mono
        ):
            try:
                self._store.add_anchor(self._boot_id, wall, mono)
                self._next_anchor_mono = mono + self._every_ns
            except OSError as exc:
                log.warning("cannot save clock anchor to %s: %s", self._store.path, exc)
                events.append("anchor_write_failed")
                self._next_anchor_mono = mono + min(_ANCHOR_RETRY_NS, self._every_ns)
        self._observed_synced = synced
        self._state = (synced, off)
        return events

    def effective(self, record: dict, *, policy: str = "hold") -> Effective:
        """The time to send ``record`` with, or why not (see the module docstring).

        Raises ValueError for an unknown policy or a malformed record.
        """
        return self.decider(policy)(record)

    def decider(self, policy: str = "hold") -> Callable[[dict], Effective]:
        """:meth:`effective` for many records as of one instant: the clocks and
        each boot's anchor are read once, not once per record (a delivery pass
        decides a few hundred at a time). Raises ValueError for an unknown policy;
        the function it returns raises ValueError for a malformed record."""
        if policy not in POLICIES:
            raise ValueError(f"unknown unsynced policy {policy!r} (use one of {POLICIES})")
        wall_now, mono_now = self._sources.now()
        latest_ns = self._now_estimate(wall_now, mono_now) + self._future_ns
        offsets: dict[str, int | None] = {}

        def decide(record: dict) -> Effective:
            r = _parse_record(record)
            bound: tuple[datetime, datetime] | None = None
            off = None
            if r.boot_id and r.mono_ns is not None:
                off = offsets.get(r.boot_id, -1)
                if off == -1:
                    off = offsets[r.boot_id] = self._store.offset(r.boot_id)
            if off is not None:
                derived = r.mono_ns + off  # type: ignore[operator]
                if r.synced and abs(derived - r.original_ns) <= CONFIRM_TOLERANCE_NS:
                    cand, status = r.original_ns, "ok"
                else:
                    cand, status = derived, "corrected"
            elif r.synced:
                cand, status = r.original_ns, "ok"
            else:
                current = r.boot_id == self._boot_id
                bound = None if current else self._bound(r)
                aged = r.mono_ns is None or mono_now - r.mono_ns >= self._grace_ns
                if r.released or (policy == "send" and (not current or aged)):
                    cand, status = r.original_ns, "unsynced_sent"
                elif current:
                    return Effective(None, "wait", r.original, None)
                else:
                    return Effective(None, "held_unsynced", r.original, bound)
            # The build-time floor judges this device's clock; a punch from another
            # system (source "crosschex") carries that system's trusted time.
            external = record.get("source") not in (None, "reader")
            if (cand < self._floor_ns and not external) or cand > latest_ns:
                return Effective(None, "held_insane", r.original, bound)
            when = r.original if cand == r.original_ns else ns_to_datetime(cand)
            return Effective(when, status, r.original, bound)

        return decide

    def _now_estimate(self, wall_now: int, mono_now: int) -> int:
        off = self._store.offset(self._boot_id)
        if off is not None:
            return mono_now + off
        latest = self._store.latest_synced_wall()
        return wall_now if latest is None else max(wall_now, latest)

    def _bound(self, r: _Rec) -> tuple[datetime, datetime] | None:
        if r.boot_id is None:
            return None
        boots = self._store.boots()
        idx = next((i for i, b in enumerate(boots) if b.boot_id == r.boot_id), None)
        if idx is None:
            return None
        upper = next((b.offset for b in boots[idx + 1 :] if b.offset is not None), None)
        if upper is None:
            return None
        earlier = [b.last[0] for b in boots[:idx] if b.last is not None]
        lower = max(self._floor_ns, max(earlier) + (r.mono_ns or 0) if earlier else 0)
        if lower > upper:
            log.warning("inconsistent clock bounds for boot %s; giving none", r.boot_id)
            return None
        return ns_to_datetime(lower), ns_to_datetime(upper)
