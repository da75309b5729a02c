"""The :class:`Clock`: stamps scans, follows the sync state and clock steps,
records anchors, and decides the time each record is sent with (the package
docstring has the rules; :mod:`agent.clock.policy` the pure half of them)."""

from __future__ import annotations

import functools
import logging
from datetime import datetime
from typing import Callable

from agent.clock.anchors import AnchorStore
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
