"""I/O shells for RFID readers: one blocking loop per reader, run in a thread.

Each reader's :meth:`Reader.run` blocks until ``stop`` is set and calls
``emit(raw_tag)`` for every tag.  It never exits on device errors and never
spins: on an unplug it closes the device, backs off (exponentially within
``backoff``, interruptible by ``stop``), waits for the device to come back
and reopens it.  ``last_alive`` advances at least every ~0.5 s in every state
so a watchdog can tell a stuck loop from an idle reader.

Dropped reader noise is logged rate-limited (at most one warning per reader
per :data:`DROP_LOG_INTERVAL` seconds, with counts) on ``agent.reader``.
Tags are never written to the log.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import select
import threading
import time
from collections import Counter
from typing import Any, Callable

import serial

from agent.errors import ReaderBusy
from agent.reading.frames import Decoder
from agent.reading.hidkeys import HidDecoder

__all__ = ["Reader", "SerialReader", "HidReader", "ReaderBusy", "DROP_LOG_INTERVAL"]

log = logging.getLogger("agent.reader")

DROP_LOG_INTERVAL = 10.0  # seconds between two "dropped input" warnings per reader
_TICK = 0.5  # longest single wait; bounds how stale last_alive can get
_SERIAL_TIMEOUT = 0.25  # serial read timeout
_BUSY_ERRNOS = frozenset({errno.EBUSY, errno.EAGAIN, errno.EWOULDBLOCK})
_USB_ID = re.compile(r"[0-9a-fA-F]{4}:[0-9a-fA-F]{4}")

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


class Reader:
    """Base for every reader; see the module docstring for the contract."""

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

    def run(self, stop: threading.Event, emit: Emit) -> None:
        """Open, read until an error, back off, reopen: never exits before
        ``stop``, never spins. Subclasses provide the hooks below."""
        delay = self.backoff[0]
        while not stop.is_set():
            self._alive()
            missing = self._absent()
            if missing:
                self._fail(missing)
            else:
                try:
                    dev = self.open()
                except ReaderBusy as exc:
                    self._fail(str(exc))
                except Exception as exc:  # OSError, SerialException, or a custom opener's error
                    self._fail(self._open_failed(exc))
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
        self.connected = False

    # hooks -------------------------------------------------------------

    def open(self) -> Any:  # pragma: no cover
        raise NotImplementedError

    def _absent(self) -> str | None:
        """Why the device cannot be opened right now (it is not there), or None."""
        return None

    def _open_failed(self, exc: Exception) -> str:  # pragma: no cover
        return f"cannot open: {exc}"

    def _opened(self) -> str:  # pragma: no cover
        return "open"

    def _read_loop(self, dev: Any, stop: threading.Event, emit: Emit) -> bool:  # pragma: no cover
        """Read until stop or an error; True if any data arrived."""
        raise NotImplementedError

    # helpers -----------------------------------------------------------

    def _alive(self) -> None:
        self.last_alive = time.monotonic()

    def _sleep(self, stop: threading.Event, seconds: float) -> bool:
        """Wait ``seconds`` in short slices, keeping last_alive fresh. True if stopped."""
        deadline = time.monotonic() + seconds
        while True:
            self._alive()
            left = deadline - time.monotonic()
            if left <= 0:
                return stop.is_set()
            if stop.wait(min(_TICK, left)):
                return True

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


class SerialReader(Reader):
    """A reader on a serial port (RDM6300, line or regex protocol)."""

    def __init__(
        self,
        name: str,
        port: str,
        *,
        baudrate: int = 9600,
        decoder: Decoder,
        backoff: tuple[float, float] = (0.5, 5.0),
        serial_factory: Callable[..., Any] = serial.Serial,
    ) -> None:
        super().__init__(name, backoff)
        self.port = port
        self.baudrate = baudrate
        self.decoder = decoder
        self._factory = serial_factory

    def open(self) -> Any:
        """Open the port exclusively. Raises ReaderBusy, or OSError/SerialException."""
        try:
            return self._factory(
                self.port, self.baudrate, timeout=_SERIAL_TIMEOUT, exclusive=True
            )
        except (serial.SerialException, OSError) as exc:
            if getattr(exc, "errno", None) in _BUSY_ERRNOS:
                raise ReaderBusy(
                    f"serial port {self.port} is held by another process "
                    "(is the agent daemon running?)"
                ) from None
            raise

    def _port_present(self) -> bool:
        # URLs such as loop:// or socket:// have no path to wait for
        return "://" in self.port or os.path.exists(self.port)

    def _absent(self) -> str | None:
        return None if self._port_present() else f"serial port {self.port} is not present"

    def _open_failed(self, exc: Exception) -> str:
        return f"cannot open serial port {self.port}: {exc}"

    def _opened(self) -> str:
        return f"serial port {self.port} open"

    def _read_loop(self, ser: Any, stop: threading.Event, emit: Emit) -> bool:
        """Read until stop or an error. Returns True if any data arrived."""
        got_data = False
        try:
            while not stop.is_set():
                self._alive()
                data = ser.read(max(1, min(ser.in_waiting, 4096)))
                if data:
                    got_data = True
                    for tag in self.decoder.feed(data):
                        self._emit(emit, tag)
                self._drops.check(self.decoder)
        except (serial.SerialException, OSError) as exc:
            self._fail(f"serial port {self.port} failed: {exc}")
        except Exception as exc:  # unexpected: still never exit the run loop
            log.exception("reader %s: unexpected error", self.name)
            self._fail(f"serial port {self.port} failed: {type(exc).__name__}")
        finally:
            self.connected = False
            try:
                ser.close()
            except Exception:
                pass
        return got_data


class HidReader(Reader):
    """A USB keyboard-emulating reader read through evdev (grabbed exclusively)."""

    def __init__(
        self,
        name: str,
        *,
        path: str | None = None,
        device_name: str | None = None,
        usb_id: str | None = None,
        decoder: HidDecoder,
        backoff: tuple[float, float] = (0.5, 5.0),
        open_device: Callable[[], Any] | None = None,
    ) -> None:
        super().__init__(name, backoff)
        if open_device is None and not (path or device_name or usb_id):
            raise ValueError("HidReader needs path, device_name or usb_id")
        if usb_id is not None and not _USB_ID.fullmatch(usb_id):
            raise ValueError(f"usb_id must look like 'vvvv:pppp' (hex), got {usb_id!r}")
        self.path = path
        self.device_name = device_name
        self.usb_id = usb_id
        self.decoder = decoder
        self._open_device = open_device or self._find_device

    def _find_device(self) -> Any:
        """Open the device by path, else by name, else by USB id (not grabbed)."""
        import evdev  # lazy: only HID setups pay for it

        if self.path:
            return evdev.InputDevice(self.path)
        want = None
        if self.usb_id:
            v, p = self.usb_id.split(":")
            want = (int(v, 16), int(p, 16))
        for candidate in evdev.list_devices():
            try:
                dev = evdev.InputDevice(candidate)
            except OSError:
                continue
            if (self.device_name and dev.name == self.device_name) or (
                want and (dev.info.vendor, dev.info.product) == want
            ):
                return dev
            dev.close()
        what = f"name {self.device_name!r}" if self.device_name else f"USB id {self.usb_id}"
        raise FileNotFoundError(errno.ENOENT, f"no input device with {what}")

    def _describe(self) -> str:
        return self.path or self.device_name or self.usb_id or self.name

    def open(self) -> Any:
        """Open and grab the device. Raises ReaderBusy or OSError."""
        dev = self._open_device()
        try:
            dev.grab()
        except OSError as exc:
            _close_quietly(dev)
            if exc.errno == errno.EBUSY:
                raise ReaderBusy(
                    f"input device {self._describe()} is grabbed by another process "
                    "(is the agent daemon running?)"
                ) from None
            raise
        return dev

    def _absent(self) -> str | None:
        if self.path and not os.path.exists(self.path) and self._open_device == self._find_device:
            return f"input device {self.path} is not present"
        return None

    def _open_failed(self, exc: Exception) -> str:
        return f"cannot open input device {self._describe()}: {exc}"

    def _opened(self) -> str:
        return f"input device {self._describe()} grabbed"

    def _read_loop(self, dev: Any, stop: threading.Event, emit: Emit) -> bool:
        got_data = False
        try:
            while not stop.is_set():
                self._alive()
                ready, _, _ = select.select([dev], [], [], _TICK)
                if not ready:
                    continue
                n = 0
                try:
                    for event in dev.read():
                        n += 1
                        tag = self.decoder.feed(event)
                        if tag:
                            self._emit(emit, tag)
                except BlockingIOError:
                    pass
                if n:
                    got_data = True
                elif stop.wait(0.05):  # readable but empty: never spin
                    break
                self._drops.check(self.decoder)
        except OSError as exc:
            self._fail(f"input device {self._describe()} failed: {exc}")
        except Exception as exc:
            log.exception("reader %s: unexpected error", self.name)
            self._fail(f"input device {self._describe()} failed: {type(exc).__name__}")
        finally:
            self.connected = False
            if stop.is_set():
                try:
                    dev.ungrab()
                except Exception:
                    pass
            _close_quietly(dev)
        return got_data


def _close_quietly(dev: Any) -> None:
    try:
        dev.close()
    except Exception:
        pass
