"""The daemon's CrossChex schedule: reconcile (with push) every
``crosschex.reconcile_every`` over the last ``crosschex.reconcile_window``.

A run is :func:`agent.runtime.reconciliation.run_reconciliation` in a
background thread, with the journal reached through the callables the daemon
passes in (it owns the journal; its main loop must never wait for CrossChex).
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Callable

from agent import redact
from agent.config import Config
from agent.crosschex.matching import LocalScan
from agent.errors import CommandError, CrossChexFailure
from agent.runtime.operations import Parts, perform
from agent.runtime.reconciliation import (
    Insert,
    LocalScans,
    mapping_for,
    run_reconciliation,
)
from agent.runtime.requests import InsertRequest, ScansRequest
from agent.runtime.wiring import make_crosschex_client

if TYPE_CHECKING:
    from agent.crosschex.client import CrossChexClient

__all__ = ["Scheduler", "daemon_scheduler"]

log = logging.getLogger("agent.reconciler")

UTC = UTC


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

    def __init__(self, cfg: Config, insert: Insert, local_scans: LocalScans, *,
                 now: Callable[[], float] = time.time, first_delay: float | None = None,
                 synced: Callable[[], bool] | None = None, clock: Any = None) -> None:
        self.cfg = cfg
        self._clock = clock  # each CrossChex answer's Date is one more reading for it
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
            learn = {} if self._clock is None else {"on_answer": self._clock.observe_answer,
                                                     "mono_ns": self._clock.mono_ns}
            self._client = make_crosschex_client(self.cfg, sleep=self._sleep, **learn)
        return self._client

    def _run_once(self, started: float) -> None:
        cc = self.cfg.crosschex
        assert cc is not None and self.interval is not None
        end = datetime.fromtimestamp(started, UTC)
        begin = end - timedelta(seconds=cc.reconcile_window)
        try:
            result = run_reconciliation(self.cfg, begin, end, push=True, client=self._client_for_run(),
                                        local_scans=self._local_scans, insert=self._insert,
                                        mapping=mapping_for(self.cfg), stop=self._stop)
        except _Stopping:
            log.info("CrossChex reconcile stopped")
            return
        except CrossChexFailure as exc:
            self.last_error = f"CrossChex Cloud: {exc}"
            log.warning("CrossChex reconcile failed: %s", exc)
            return
        except CommandError as exc:
            self.last_error = str(exc)
            log.warning("CrossChex reconcile failed: %s", exc)
            return
        except Exception as exc:  # noqa: BLE001 - never let the schedule die
            self.last_error = redact.redact(f"{type(exc).__name__}: {exc}")
            log.error("CrossChex reconcile failed: %s", self.last_error)
            return
        self.last_result = result
        self.last_error = None
        log.info("CrossChex reconcile %s .. %s: %d matched, %d only in CrossChex (%d pushed), "
                 "%d only local, %d unmapped", result["from"], result["to"], result["matched"],
                 result["only_crosschex"], result.get("pushed", 0), result["only_local"], result["unmapped"])


def daemon_scheduler(parts: Parts) -> Scheduler | None:
    """The daemon's schedule, when ``crosschex.reconcile_every`` asks for one: its
    runs reach the journal through the daemon's own operations."""
    cfg = parts.cfg
    if cfg.crosschex is None or not cfg.crosschex.reconcile_every:
        return None

    def local_scans(begin: datetime, end: datetime) -> list[LocalScan]:
        return [LocalScan(s["id"], s["tag"], datetime.fromisoformat(s["when"]))
                for s in perform(parts, ScansRequest(begin.isoformat(), end.isoformat()))]

    def insert(records: list[dict]) -> dict:
        return perform(parts, InsertRequest(tuple(records)))

    return Scheduler(cfg, insert, local_scans, synced=lambda: parts.clock.synced, clock=parts.clock)

