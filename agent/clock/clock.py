"""The :class:`Clock`: stamps scans, follows the sync state and clock steps,
records anchors, and decides the time each record is sent with (the package
docstring has the rules; :mod:`agent.clock.policy` the pure half of them)."""

from __future__ import annotations

import functools
import logging
import threading
from datetime import datetime
from typing import Any, Callable

from agent.clock.anchors import AnchorStore
from agent.clock.httpdate import Bound, DateSample, aged_error, bound_of
from agent.clock.policy import (
    DEFAULT_FLOOR,
    Effective,
    Now,
    check_policy,
    datetime_to_ns,
    decide,
    now_estimate,
    ns_to_datetime,
)
from agent.clock.sources import ClockSources

log = logging.getLogger("agent.timekeeping")

__all__ = ["Clock"]

_ANCHOR_RETRY_NS = 60 * 10**9
_S = 10**9
# An HTTPS Date NTP overrules only when it falls outside its own interval by
# more than this: the server's clock has its own (NTP) error.
_DISAGREE_SLACK_NS = _S
_NOTE_EVERY_NS = 3600 * _S  # the same disagreement is logged (and rewritten) at most this often


def _iso(ns: int | None) -> str | None:
    return None if ns is None else ns_to_datetime(ns).isoformat(timespec="seconds")


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
        http_date_max_error_s: float = 5.0,
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
        self._max_error_ns = int(http_date_max_error_s * 1e9)
        self._https_lock = threading.Lock()  # answers arrive on the uploader's thread
        self._https: Bound | None = None  # what this boot's newest HTTPS anchor says
        self._confirmed_ns: int | None = None  # true time of the last answer that agreed with it
        self._saved_confirm_mono = 0
        self._noted: dict[str, int] = {}  # kind of note -> when it was last logged (boot clock)
        self._cert_problem: str | None = None
        self._load_https()

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
        synced = self._sources.synced()  # before the clocks: see the package docstring
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

    # ------------------------------------------------- HTTPS Date (httpdate)

    def _load_https(self) -> None:
        """A restart within the boot keeps what an earlier run learned."""
        b = self._store.get(self._boot_id)
        if b is not None and b.https is not None and b.offset is not None and not b.ntp:
            h = b.https
            self._https = Bound(b.offset, int(h["error_ns"]), int(h["mono_ns"]))
            self._confirmed_ns = int(h["confirmed_ns"])

    def mono_ns(self) -> int:
        """The boot clock the records' ``mono_ns`` and the HTTP samples are read on."""
        return self._sources.now()[1]

    def observe_answer(self, sample: DateSample) -> list[str]:
        """Learn from an answer's Date header (see :mod:`agent.clock.httpdate`).

        While the kernel's clock is not trusted and this boot has no NTP anchor,
        an authenticated sample whose error is within ``http_date_max_error``
        anchors the boot (event ``"https-date"``), or confirms or tightens the
        anchor it has. Otherwise NTP (or a trusted RTC) wins: a Date that
        disagrees with it is logged and kept for ``agent doctor`` (event
        ``"disagree:+60.0s"``). Never raises for a bad sample."""
        if self._max_error_ns <= 0 or not sample.authenticated:
            return []
        bound = bound_of(sample)
        if bound is None:
            return []
        with self._https_lock:
            try:
                return self._learn(bound, sample.origin)
            except OSError as exc:
                log.warning("cannot save clock anchors %s: %s", self._store.path, exc)
                return ["anchor_write_failed"]

    def _learn(self, bound: Bound, origin: str) -> list[str]:
        synced, _ = self._state
        b = self._store.get(self._boot_id)
        if synced or (b is not None and b.ntp and b.offset is not None):
            wall, mono = self._sources.now()
            trusted = wall - mono if synced else b.offset  # type: ignore[union-attr]
            return self._compare(bound, trusted, origin, mono + trusted)
        if bound.error_ns > self._max_error_ns:
            log.debug("Date of %s too loose to use (±%.1f s)", origin, bound.error_ns / _S)
            return []
        floor = int(self.cert_floor_s() * _S)
        if bound.true_ns + bound.error_ns < floor:  # time only moves forward: a server clock set in the past
            self._note("past", f"the Date of {origin} ({ns_to_datetime(bound.true_ns):%Y-%m-%d %H:%M} UTC) is "
                       f"before the newest trusted time this device recorded "
                       f"({ns_to_datetime(floor):%Y-%m-%d %H:%M} UTC): not used", bound.mono_ns)
            return []
        current = self._https
        if current is not None and abs(bound.offset_ns - current.offset_ns) > (
                bound.error_ns + aged_error(current, bound.mono_ns)):
            self._note("contradicts", f"the Date of {origin} disagrees by {(bound.offset_ns - current.offset_ns) / _S:+.1f} s "
                       "with the time learned from it earlier in this boot; keeping the earlier one", bound.mono_ns)
            return []
        if current is None or self._tighter(bound, current):
            first = current is None
            if not self._save_https(bound, origin, anchor=True):
                return []  # the kernel's clock anchored the boot meanwhile: NTP wins
            self._https, self._confirmed_ns = bound, bound.true_ns
            if first:
                wall, mono = self._sources.now()
                off = (wall - mono - bound.offset_ns) / _S
                log.warning("time learned from the HTTPS Date of %s (±%.1f s): the wall clock is %.1f s %s; "
                            "this boot's scans are sent with the true time", origin, bound.error_ns / _S,
                            abs(off), "behind" if off < 0 else "ahead")
                return ["https-date"]
        else:
            self._confirmed_ns = bound.true_ns
            if bound.mono_ns - self._saved_confirm_mono >= self._every_ns:
                self._save_https(current, origin, anchor=False)
        return []

    @staticmethod
    def _tighter(new: Bound, old: Bound) -> bool:
        """Worth a new anchor: clearly tighter than the old one has become by now."""
        old_now = aged_error(old, new.mono_ns)
        return new.error_ns < old_now - max(old_now // 10, 100_000_000)

    def _save_https(self, bound: Bound, origin: str, *, anchor: bool) -> bool:
        """The HTTPS anchor (or only its confirmation); False if NTP's came first."""
        confirmed = bound.true_ns if anchor else self._confirmed_ns
        detail = {"error_ns": bound.error_ns, "mono_ns": bound.mono_ns, "confirmed_ns": confirmed, "origin": origin}
        self._saved_confirm_mono = bound.mono_ns
        if anchor:
            return self._store.add_anchor(self._boot_id, bound.true_ns, bound.mono_ns, https=detail)
        self._store.set_detail(self._boot_id, "https", detail)
        return True

    def _compare(self, bound: Bound, trusted_off: int, origin: str, now_ns: int) -> list[str]:
        diff = bound.offset_ns - trusted_off
        b = self._store.get(self._boot_id)
        if abs(diff) <= bound.error_ns + _DISAGREE_SLACK_NS:
            if b is not None and b.disagree is not None:
                self._store.set_detail(self._boot_id, "disagree", None)
                log.info("the Date of %s agrees with NTP again", origin)
            return []
        source = "the RTC (time.trust_rtc)" if self._sources.trust_rtc else "NTP"
        logged = self._note("ntp", f"the Date of {origin} disagrees with {source} by {diff / _S:+.1f} s "
                            f"(±{bound.error_ns / _S:.1f} s); {source} wins", bound.mono_ns)
        if logged or b is None or b.disagree is None:  # doctor always sees one; rewritten at most hourly
            self._store.set_detail(self._boot_id, "disagree", {"seconds": round(diff / _S, 3), "wall_ns": now_ns})
        return [f"disagree:{diff / _S:+.1f}s"]

    def _note(self, kind: str, text: str, mono: int) -> bool:
        """Log ``text`` unless a note of this kind was logged within the hour; True if logged."""
        last = self._noted.get(kind)
        if last is not None and mono - last < _NOTE_EVERY_NS:
            return False
        self._noted[kind] = mono
        log.warning("%s", text)
        return True

    def note_cert_problem(self, text: str | None) -> None:
        """What the time probe found wrong with the wall clock and iFlow's certificate (None: nothing)."""
        self._cert_problem = text

    def needs_time(self) -> bool:
        """Whether this boot has no trusted time yet (a Date would anchor it)."""
        return not self._state[0] and self._store.offset(self._boot_id) is None

    def trusted_now_s(self) -> float | None:
        """Now, from this boot's anchor, while the kernel's clock is not trusted
        (what to check certificates against); None when the wall clock is trusted or nothing is known."""
        if self._state[0]:
            return None
        offset = self._store.offset(self._boot_id)
        return None if offset is None else (self.mono_ns() + offset) / _S

    def cert_floor_s(self) -> float:
        """The newest trusted time this device ever recorded, at least the build date."""
        return max(self._store.latest_synced_wall() or 0, self._floor_ns) / _S

    def time_source(self) -> dict[str, Any]:
        """Which source the time comes from now, its error, when it last confirmed
        (the ``time_*`` fields of ``agent status --json``)."""
        wall, mono = self._sources.now()
        b = self._store.get(self._boot_id)
        out: dict[str, Any] = {"time_source": None, "time_error_seconds": None, "time_confirmed_at": None,
                               "time_disagreement_seconds": None, "time_disagreement_at": None,
                               "wall_clock_error_seconds": None, "cert_time_problem": self._cert_problem}
        if b is not None and b.disagree is not None:
            out["time_disagreement_seconds"] = b.disagree["seconds"]
            out["time_disagreement_at"] = _iso(int(b.disagree["wall_ns"]))
        if self._state[0]:
            out.update(time_source="rtc" if self._sources.trust_rtc else "ntp",
                       time_error_seconds=self._sources.error_s(), time_confirmed_at=_iso(wall))
        elif b is not None and b.offset is not None:
            https = self._https if not b.ntp else None
            if https is not None:
                out.update(time_source="https-date", time_confirmed_at=_iso(self._confirmed_ns),
                           time_error_seconds=round(aged_error(https, mono) / _S, 3))
            else:
                out.update(time_source="ntp", time_confirmed_at=_iso(b.last[0] if b.last else None))
            out["wall_clock_error_seconds"] = round((wall - mono - b.offset) / _S, 3)
        return out

    def effective(self, record: dict, *, policy: str = "hold") -> Effective:
        """The time to send ``record`` with, or why not (see the package docstring).

        Raises ValueError for an unknown policy or a malformed record.
        """
        return self.decider(policy)(record)

    def decider(self, policy: str = "hold") -> Callable[[dict], Effective]:
        """:meth:`effective` for many records as of one instant: the clocks and
        each boot's anchor are read once, not once per record (a delivery pass
        decides a few hundred at a time). Raises ValueError for an unknown policy;
        the function it returns raises ValueError for a malformed record."""
        check_policy(policy)
        wall_now, mono_now = self._sources.now()
        estimate = now_estimate(wall_now, mono_now, self._store.offset(self._boot_id),
                                self._store.latest_synced_wall())
        now = Now(self._boot_id, mono_now, estimate + self._future_ns, self._floor_ns,
                  self._grace_ns, policy)
        offsets: dict[str, int | None] = {}

        def offset_of(boot_id: str) -> int | None:
            if boot_id not in offsets:
                offsets[boot_id] = self._store.offset(boot_id)
            return offsets[boot_id]

        return functools.partial(decide, now=now, offset_of=offset_of, boots=self._store.boots)
