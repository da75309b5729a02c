"""The daemon's background sender: soon after a scan, backing off when iFlow is away.

An idle daemon must cost a Pi Zero next to nothing: with nothing to send and
no back-off running, the uploader sleeps on its wake-up event for up to
``idle_poll`` (it passes then anyway: a clock sync may have freed held scans),
waking earlier only to refresh its heartbeat for the watchdog
(:data:`HEARTBEAT_S`, well inside the daemon's 60 s stall limit).
"""

from __future__ import annotations

import logging
import threading
import time

from agent.delivery.deliverer import Deliverer

log = logging.getLogger("agent.delivery")

HEARTBEAT_S = 30.0  # longest sleep without refreshing last_alive


class Uploader:
    """The daemon's background sender: soon after a scan, backing off when iFlow is away."""

    def __init__(self, deliverer: Deliverer, *, send_delay: float = 0.5, idle_poll: float = 30.0) -> None:
        self.deliverer = deliverer
        self.send_delay = send_delay
        self.idle_poll = idle_poll
        self._wake = threading.Event()
        self._owed = False  # woken during a back-off: pass as soon as it ends
        self._counted = float("-inf")
        self._counted_pending: int | None = None  # pending at the last count
        self.count_every = 60.0
        self.last_alive = time.monotonic()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def wake(self) -> None:
        self._wake.set()

    def _beat(self) -> None:
        self.last_alive = time.monotonic()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="uploader", daemon=True)
        self._thread.start()

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _sleep(self, poll_at: float) -> bool:
        """Wait for a reason to pass; False when only the heartbeat is due."""
        backoff = self.deliverer.in_backoff()
        if backoff > 0:
            # Scans during a back-off wait for it (a flush does not): note them
            # and sleep on; the event is cleared so it does not spin.
            if self._wake.wait(min(backoff, HEARTBEAT_S)):
                self._wake.clear()
                self._owed = True
            return False
        if self._owed:
            return True
        if self._wake.wait(min(max(0.0, poll_at - time.monotonic()), HEARTBEAT_S)):
            return True
        return time.monotonic() >= poll_at

    def _count_due(self) -> bool:
        if self.deliverer.journal.summary()["pending"] != self._counted_pending:
            return True
        return time.monotonic() - self._counted > self.count_every

    def _run(self) -> None:
        self._wake.set()  # a pass at start: drain what an earlier run left
        poll_at = time.monotonic() + self.idle_poll
        while not self._stop.is_set():
            self._beat()
            if not self._sleep(poll_at) or self._stop.is_set():
                continue
            self._owed = False
            self._wake.clear()
            poll_at = time.monotonic() + self.idle_poll
            if self.send_delay:
                self._stop.wait(self.send_delay)  # gather a burst of scans into one request
            try:
                done = self.deliverer.drain(stop=self._stop, count=False, wait=1.0,
                                            progress=lambda _event: self._beat())
                if done is None:  # a flush is running; try again after it
                    self._wake.set()
                elif done.error is None and self._count_due():
                    # Drained: what is left pending is held. Count it for `agent status`
                    # and the metrics (a pass over held records only): when what is
                    # pending changed since the last count, else at most once a minute.
                    self._counted = time.monotonic()
                    with self.deliverer.lock:
                        self.deliverer.count()
                    self._counted_pending = self.deliverer.journal.summary()["pending"]
            except Exception:
                log.exception("uploader pass failed")
                self._stop.wait(5.0)
            # scans wait for the time: pass again when the next time probe is due
            poll_at = min(poll_at, time.monotonic() + self.deliverer.probe_in())
