"""The supervision every reader shares: one blocking loop per reader, run in a thread.

Each reader's :meth:`Reader.run` blocks until ``stop`` is set and calls
``emit(raw_tag)`` for every tag.  It never exits on device errors and never
spins: on an unplug it closes the device, backs off (exponentially within
``backoff``, interruptible by ``stop``), waits for the device to come back
and reopens it.

An idle reader sleeps in one ``select()`` on the device and on a stop file
descriptor, so it wakes for data, for ``stop`` (within milliseconds) or every
:data:`_TICK` seconds to refresh ``last_alive``: a few wake-ups a minute on a
Pi Zero instead of several a second.  ``last_alive`` therefore advances at
least every :data:`_TICK` seconds in every state, well inside the daemon's
stall limit (10 s), so a watchdog can tell a stuck loop from an idle reader.

Dropped reader noise is logged rate-limited (at most one warning per reader
per :data:`DROP_LOG_INTERVAL` seconds, with counts) on ``agent.reader``.
Tags are never written to the log.

A reader kind is a subclass implementing the hooks below (open, present,
read_ready, close_device) plus one line in :data:`agent.reading.BACKENDS`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import threading
import time
from collections import Counter
from typing import TYPE_CHECKING, Any, Callable, Iterator

from agent.errors import ReaderBusy

if TYPE_CHECKING:
    from agent.config import ReaderConfig

__all__ = ["Reader", "Emit", "DROP_LOG_INTERVAL"]

log = logging.getLogger("agent.reader")

DROP_LOG_INTERVAL = 10.0  # seconds between two "dropped input" warnings per reader
_TICK = 5.0  # longest single wait; bounds how stale last_alive can get (daemon limit: 10 s)
_EMPTY_WAIT = 0.05  # readable but nothing read: wait this long so a broken fd cannot spin

Emit = Callable[[str], None]


class _DropLog:
    """Rate-limited warnings about a decoder's ``dropped`` counter."""

    def __init__(self, name: str, interval: float = DROP_LOG_INTERVAL) -> None:
        self.name = name
        self.interval = interval
        self._seen: Counter[str] = Counter()
        self._last_log = float("-inf")

    def check(self, decoder: Any) -> None:
        now = time.monotonic()
        if now - self._last_log < self.interval:
            return
        dropped: Counter[str] = getattr(decoder, "dropped", Counter())
        new = dropped - self._seen
        if not new:
            return
        self._seen = Counter(dropped)
        self._last_log = now
        counts = ", ".join(f"{k}={v}" for k, v in sorted(new.items()))
        log.warning(
            "reader %s: dropped input (%s); last: %s",
            self.name,
            counts,
            getattr(decoder, "last_drop", None),
        )


class _StopFd:
    """A pipe that becomes readable once ``stop`` is set.

    A ``threading.Event`` cannot be waited on together with a device in one
    ``select()``; a helper thread blocked in ``stop.wait()`` without a timeout
    (it never wakes before stop) writes a byte for it.  The helper owns the
    write end and closes it, so a late write can never hit a reused fd.
    """

    def __init__(self, stop: threading.Event, name: str) -> None:
        self._r, w = os.pipe()
        threading.Thread(target=self._watch, args=(stop, w), name=f"{name}-stop",
                         daemon=True).start()

    @staticmethod
    def _watch(stop: threading.Event, w: int) -> None:
        stop.wait()
        try:
            os.write(w, b"\0")
        except OSError:  # the reader already ended and closed the read end
            pass
        finally:
            os.close(w)

    def fileno(self) -> int:
        return self._r

    def close(self) -> None:
        os.close(self._r)


class Reader:
    """Base for every reader; see the module docstring for the contract."""

    decoder: Any
    #: what a device failure raises besides OSError (e.g. serial.SerialException)
    device_errors: tuple[type[BaseException], ...] = (OSError,)

    def __init__(self, name: str, backoff: tuple[float, float] = (0.5, 5.0)) -> None:
        lo, hi = backoff
        if not 0 < lo <= hi:
            raise ValueError(f"backoff must be (min, max) with 0 < min <= max, got {backoff!r}")
        self.name = name
        self.backoff = (float(lo), float(hi))
        self.connected = False
        self.last_alive = time.monotonic()
        self.error: str | None = None
        self._drops = _DropLog(name)
        self._stop_fd: _StopFd | None = None

    @classmethod
    def from_config(cls, rc: ReaderConfig) -> Reader:  # pragma: no cover
        """The reader for one ``[reader]`` table."""
        raise NotImplementedError

    def run(self, stop: threading.Event, emit: Emit) -> None:
        """Open, read until an error, back off, reopen: never exits before
        ``stop``, never spins. Subclasses provide the hooks below."""
        with self.watching(stop, f"reader-{self.name}"):
            try:
                self._supervise(stop, emit)
            finally:
                self.connected = False

    @contextlib.contextmanager
    def watching(self, stop: threading.Event, name: str) -> Iterator[None]:
        """Every wait inside the hooks ends as soon as ``stop`` is set, for
        whoever drives them: :meth:`run`, or ``agent probe``'s own loop."""
        self._stop_fd = _StopFd(stop, name)
        try:
            yield
        finally:
            self._stop_fd.close()
            self._stop_fd = None

    @property
    def what(self) -> str:
        """The device as messages name it, e.g. "serial port /dev/ttyUSB0"."""
        return self._what()

    def _supervise(self, stop: threading.Event, emit: Emit) -> None:
        delay = self.backoff[0]
        while not stop.is_set():
            self._alive()
            if not self._present():
                self._fail(f"{self._what()} is not present")
            else:
                try:
                    dev = self.open()
                except ReaderBusy as exc:
                    self._fail(str(exc))
                except Exception as exc:  # OSError, SerialException, or a custom opener's error
                    self._fail(f"cannot open {self._what()}: {exc}")
                else:
                    self.decoder.reset()
                    self.connected, self.error = True, None
                    log.info("reader %s: %s", self.name, self._opened())
                    if self._read_loop(dev, stop, emit):
                        delay = self.backoff[0]  # it worked for a while: start over gently
                    if stop.is_set():
                        break
            if self._sleep(stop, delay):
                break
            delay = min(delay * 2, self.backoff[1])

    # hooks -------------------------------------------------------------

    def open(self) -> Any:  # pragma: no cover
        """Open the device exclusively. Raises ReaderBusy, or the device's error."""
        raise NotImplementedError

    def _what(self) -> str:  # pragma: no cover
        """The device as messages name it, e.g. "serial port /dev/ttyUSB0"."""
        raise NotImplementedError

    def _present(self) -> bool:
        """False while the device is certainly not there (no use opening it)."""
        return True

    def _opened(self) -> str:
        return f"{self._what()} open"

    def input_fd(self, dev: Any) -> int | None:
        """The fd to wait on for input, or None if ``read_ready`` blocks by itself."""
        return dev.fileno()

    def read_ready(self, dev: Any) -> tuple[int, list[str]]:  # pragma: no cover
        """Read what is ready: (units read, complete tags). May raise device_errors."""
        raise NotImplementedError

    def close_device(self, dev: Any, stopping: bool = True) -> None:
        _quietly(dev.close)

    # the loop ----------------------------------------------------------

    def _read_loop(self, dev: Any, stop: threading.Event, emit: Emit) -> bool:
        """Read until stop or an error; True if any data arrived."""
        got_data = False
        try:
            fd = self.input_fd(dev)
            while not stop.is_set():
                self._alive()
                if fd is not None and not self._wait(fd, _TICK):
                    continue  # stop, or time to refresh last_alive
                self._alive()  # the read and emit (a journal fsync) count from here, not from before the wait
                n, tags = self.read_ready(dev)
                for tag in tags:
                    self._emit(emit, tag)
                if n:
                    got_data = True
                elif fd is not None and stop.wait(_EMPTY_WAIT):  # readable but empty: never spin
                    break
                self._drops.check(self.decoder)
        except self.device_errors as exc:
            self._fail(f"{self._what()} failed: {exc}")
        except Exception as exc:  # unexpected: still never exit the run loop
            log.exception("reader %s: unexpected error", self.name)
            self._fail(f"{self._what()} failed: {type(exc).__name__}")
        finally:
            self.connected = False
            self.close_device(dev, stop.is_set())
        return got_data

    # helpers -----------------------------------------------------------

    def _alive(self) -> None:
        self.last_alive = time.monotonic()

    def _wait(self, fd: int | None, seconds: float) -> bool:
        """Block until ``fd`` is readable (True), stop, or ``seconds`` pass (False)."""
        fds = [] if fd is None else [fd]
        if self._stop_fd is not None:
            fds.append(self._stop_fd.fileno())
        ready, _, _ = select.select(fds, [], [], seconds)
        return fd is not None and fd in ready

    def _sleep(self, stop: threading.Event, seconds: float) -> bool:
        """Wait ``seconds`` in slices of at most _TICK, keeping last_alive fresh. True if stopped."""
        deadline = time.monotonic() + seconds
        while True:
            self._alive()
            left = deadline - time.monotonic()
            if left <= 0 or stop.is_set():
                return stop.is_set()
            self._wait(None, min(_TICK, left))

    def _emit(self, emit: Emit, tag: str) -> None:
        try:
            emit(tag)
        except Exception:
            log.exception("reader %s: emit() failed; the reader keeps running", self.name)

    def _fail(self, message: str, level: int = logging.WARNING) -> None:
        """Record a device error; log it once per distinct message."""
        self.connected = False
        if message != self.error:
            log.log(level, "reader %s: %s", self.name, message)
        self.error = message


def _quietly(method: Callable[[], Any]) -> None:
    try:
        method()
    except Exception:
        pass
