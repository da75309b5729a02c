"""The clock anchors of every boot in one JSON file (the package docstring,
"Anchors"): ``state_dir/clock.json``, rewritten atomically."""

from __future__ import annotations

import json
import logging
import math
import os
import threading
from typing import Any, Callable, NamedTuple

from agent.errors import CorruptAnchors
from agent.fsio import atomic_write

log = logging.getLogger("agent.timekeeping")

__all__ = ["MAX_ANCHORS_PER_BOOT", "MAX_BOOTS", "AnchorStore", "BootAnchors"]

MAX_BOOTS = 50
MAX_ANCHORS_PER_BOOT = 16


class BootAnchors(NamedTuple):
    """What is known about one boot's clock (a snapshot)."""

    boot_id: str
    anchors: tuple[tuple[int, int], ...]  # (mono_ns, offset_ns), oldest first
    first: tuple[int, int] | None  # (wall_ns, mono_ns) first synced observation
    last: tuple[int, int] | None  # (wall_ns, mono_ns) last synced observation
    ntp: bool = True  # an anchor came from the kernel's clock (NTP, or time.trust_rtc)
    https: dict | None = None  # the HTTPS Date estimate its anchors came from (see add_anchor)
    disagree: dict | None = None  # {"seconds", "wall_ns"}: an HTTPS Date NTP overruled, last seen

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


_HTTPS_KEYS = ("error_ns", "mono_ns", "confirmed_ns")


def _number(v: Any) -> bool:
    """A finite number a clock could hold (json reads NaN, Infinity and 1e300 too)."""
    return (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            and abs(v) < 2**62)


def _ints(v: Any, keys: tuple[str, ...]) -> dict | None:
    """An optional detail of a boot: kept when whole, else dropped (never worth
    moving the anchors aside for)."""
    if not isinstance(v, dict) or not all(_number(v.get(k)) for k in keys):
        return None
    return {k: v[k] for k in keys} | ({"origin": v["origin"]} if isinstance(v.get("origin"), str) else {})


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
                # files written before the HTTPS Date source have NTP anchors only
                "ntp": b["ntp"] if isinstance(b.get("ntp"), bool) else bool(anchors),
                "https": _ints(b.get("https"), _HTTPS_KEYS),
                "disagree": _ints(b.get("disagree"), ("seconds", "wall_ns")),
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
        return BootAnchors(boot_id, tuple(tuple(a) for a in b["anchors"]), b["first"], b["last"],
                           b["ntp"], b["https"], b["disagree"])

    # -- writing
    def register_boot(self, boot_id: str) -> bool:
        """Note that ``boot_id`` exists (its place in the boot order). True if new."""
        with self._lock:
            if boot_id in self._boots:
                return False
            self._add_boot(boot_id)
            self._save()
            return True

    def add_anchor(self, boot_id: str, wall_ns: int, mono_ns: int, *, https: dict | None = None) -> bool:
        """Record a synchronised observation (wall_ns, mono_ns) of ``boot_id``:
        the kernel's clock, or (``https``: ``error_ns``, ``mono_ns``,
        ``confirmed_ns``, ``origin``) the true time an HTTPS Date gave. An
        HTTPS anchor is refused (False) once the boot has one from the kernel:
        NTP wins, decided here under the lock so that no race can undo it."""
        with self._lock:
            b = self._boots.get(boot_id) or self._add_boot(boot_id)
            if https is None:
                b["ntp"] = True
            elif b["ntp"]:
                return False
            else:
                b["https"] = dict(https)
            anchors = b["anchors"]
            anchors.append((mono_ns, wall_ns - mono_ns))
            if len(anchors) > MAX_ANCHORS_PER_BOOT:  # keep the first and the newest
                del anchors[1 : len(anchors) - MAX_ANCHORS_PER_BOOT + 1]
            if b["first"] is None:
                b["first"] = (wall_ns, mono_ns)
            b["last"] = (wall_ns, mono_ns)
            self._latest = None
            self._save()
            return True

    def set_detail(self, boot_id: str, key: str, value: dict | None) -> None:
        """Replace a boot's ``"https"`` (a new confirmation) or ``"disagree"`` detail."""
        if key not in ("https", "disagree"):
            raise ValueError(f"unknown boot detail {key!r}")
        with self._lock:
            b = self._boots.get(boot_id) or self._add_boot(boot_id)
            if key == "https" and b["ntp"]:
                return
            b[key] = None if value is None else dict(value)
            self._save()

    def _add_boot(self, boot_id: str) -> dict[str, Any]:
        entry: dict[str, Any] = {"anchors": [], "first": None, "last": None, "ntp": False, "https": None,
                                 "disagree": None}
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
                 "last": None if b["last"] is None else list(b["last"]),
                 "ntp": b["ntp"], "https": b["https"], "disagree": b["disagree"]}
                for k, b in self._boots.items()
            ],
        }
        self._write(self.path, json.dumps(doc, separators=(",", ":")).encode())
