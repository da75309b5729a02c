"""A reader on a serial port (RDM6300, line or regex protocol), through pyserial.

The supervision (reopen, back-off, idle waits, liveness) is
:class:`agent.reading.base.Reader`'s; this module only opens the port
exclusively and reads what is ready.
"""

from __future__ import annotations

import errno
import io
import os
from typing import TYPE_CHECKING, Any, Callable

import serial

from agent.errors import ReaderBusy
from agent.reading.base import Reader
from agent.reading.frames import Decoder, make_decoder

if TYPE_CHECKING:
    from agent.config import ReaderConfig

__all__ = ["SerialReader"]

# Bounds a blocking read where the port has no fd to select() on (URL ports
# such as loop://) and keeps `agent probe`'s own polling loop responsive.
_SERIAL_TIMEOUT = 0.25
_BUSY_ERRNOS = frozenset({errno.EBUSY, errno.EAGAIN, errno.EWOULDBLOCK})


class SerialReader(Reader):
    """A reader on a serial port (RDM6300, line or regex protocol)."""

    device_errors = (serial.SerialException, OSError)

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

    @classmethod
    def from_config(cls, rc: ReaderConfig) -> SerialReader:
        decoder = make_decoder(rc.protocol, max_len=rc.max_len,
                               pattern=rc.pattern if rc.protocol == "regex" else None)
        return cls(rc.name, rc.port, baudrate=rc.baudrate, decoder=decoder)

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

    def _what(self) -> str:
        return f"serial port {self.port}"

    def _present(self) -> bool:
        # URLs such as loop:// or socket:// have no path to wait for
        return "://" in self.port or os.path.exists(self.port)

    def input_fd(self, ser: Any) -> int | None:
        try:
            return ser.fileno()
        except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
            return None  # loop:// and test doubles: the timed read() is the wait

    def read_ready(self, ser: Any) -> tuple[int, list[str]]:
        # a hung-up port is readable and then raises here: that is the unplug
        data = ser.read(max(1, min(ser.in_waiting, 4096)))
        return len(data), self.decoder.feed(data) if data else []
