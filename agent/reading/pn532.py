"""A PN532 (13.56 MHz ISO/IEC 14443A: MIFARE, NTAG) on a serial port (HSU), through pyserial.

The frames are :mod:`agent.reading.pn532wire`'s; this shell speaks the
dialogue of NXP UM0701 6.2.2: send a command, wait for the ACK, wait for the
answer.  ``open()`` wakes the chip and initialises it (SAMConfiguration
normal mode, a finite MxRtyPassiveActivation, GetFirmwareVersion); every
``read_ready()`` waits ``poll_seconds`` and polls InListPassiveTarget once,
and emits the UID (upper-case hex) while a card is in the field: the recorder
debounces it like a repeating RDM6300.

Self-healing: a PN532 can go silent after hours (esphome/issues#3281,
Tasmota#14236).  Two commands in a row without a valid answer raise
:class:`Pn532Silent`, so the supervision of :class:`agent.reading.base.Reader`
closes the port, backs off ("reader missing" while down) and reopens it,
which pulses the reset line (if configured), re-wakes and re-initialises the
chip.  When no command was answered for ``health_seconds`` a
GetFirmwareVersion asks the chip for a sign of life.

Card numbers are never logged.
"""

from __future__ import annotations

import logging
import select
import time
from typing import TYPE_CHECKING, Any, Callable

import serial

from agent.errors import ReaderError
from agent.reading import pn532wire as wire
from agent.reading.serial import SerialReader

if TYPE_CHECKING:
    from agent.config import ReaderConfig

__all__ = ["Pn532Reader", "Pn532Error", "Pn532Silent"]

log = logging.getLogger("agent.reader")

# UM0701 6.2.2 wants the ACK within 15 ms, but a USB serial adapter adds its
# latency timer (16 ms on an FTDI) and scheduling on a busy Pi Zero: 0.25 s
# still notices a dead chip quickly.  The answer to InListPassiveTarget with
# a finite retry count comes within tens of ms; 0.5 s leaves room for a slow
# card's anticollision and the adapter.  A command then takes at most 1 s
# (ACK, a NACKed resend's ACK, the answer), a read_ready() poll_seconds plus
# two commands: about 2.2 s, and last_alive is refreshed before each attempt
# (the daemon's stall limit is 10 s).
ACK_TIMEOUT = 0.25
ANSWER_TIMEOUT = 0.5
# nfcpy waits 1.5 s for the first ACK after opening a ttyUSB on a Pi: the
# BCM270x USB delays the first bytes after an open by up to ~1 s.
FIRST_ACK_TIMEOUT = 1.5
# nfcpy#257: a PN532 misses a frame that follows the previous one too closely.
_FRAME_GAP = 0.002
_MISSES = 2  # commands in a row without a valid answer before the chip counts as gone


class Pn532Error(ReaderError):
    """The device on the port is not a PN532 that can be used."""


class Pn532Silent(Pn532Error):
    """The PN532 stopped answering (or never answered)."""


class Pn532Reader(SerialReader):
    """A PN532 over UART; see the module docstring."""

    def __init__(
        self,
        name: str,
        port: str,
        *,
        baudrate: int = 115200,
        poll_seconds: float = 0.2,
        health_seconds: float = 30.0,
        reset: Callable[[], None] | None = None,
        backoff: tuple[float, float] = (0.5, 5.0),
        serial_factory: Callable[..., Any] = serial.Serial,
    ) -> None:
        if not poll_seconds > 0 or not health_seconds > 0:
            raise ValueError("poll_seconds and health_seconds must be > 0")
        super().__init__(name, port, baudrate=baudrate, decoder=wire.FrameParser(),  # type: ignore[arg-type]
                         backoff=backoff, serial_factory=serial_factory)
        self.poll_seconds = float(poll_seconds)
        self.health_seconds = float(health_seconds)
        self.reset = reset
        self.firmware: tuple[int, int, int, int] | None = None
        self._misses = 0
        self._answered_at = time.monotonic()
        self._last_write = 0.0
        self._frames: list[wire.Frame] = []  # parsed and not yet looked at
        self._reset_error: str | None = None

    @classmethod
    def from_config(cls, rc: ReaderConfig) -> Pn532Reader:
        reset = None
        if rc.reset_pin is not None:
            # lazily: gpiod is only needed when a reset line is wired
            from agent.reading.gpiolines import reset_pulser
            reset = reset_pulser(rc.gpiochip, rc.reset_pin)
        return cls(rc.name, rc.port, baudrate=rc.baudrate, poll_seconds=rc.poll_seconds,
                   health_seconds=rc.health_seconds, reset=reset)

    def _what(self) -> str:
        return f"PN532 on serial port {self.port}"

    def _opened(self) -> str:
        fw = self.firmware
        version = f" (firmware {fw[1]}.{fw[2]})" if fw else ""
        return f"{self._what()} ready{version}"

    # the device --------------------------------------------------------

    def open(self) -> Any:
        """Open the port, pulse reset, wake and initialise the chip.

        Raises ReaderBusy, OSError/SerialException, or a Pn532Error when the
        chip does not answer or is not a PN532 (the port is closed again).
        """
        ser = super().open()
        try:
            self._initialise(ser)
        except BaseException:
            self.close_device(ser)
            raise
        return ser

    def _initialise(self, ser: Any) -> None:
        if self.reset is not None:
            try:
                self.reset()
            except Exception as exc:  # a broken reset line must not keep a chip that answers from reading
                message = f"could not pulse the PN532's reset line: {exc}"
                if message != self._reset_error:  # once, not at every reopen of a silent chip
                    log.warning("reader %s: %s", self.name, message)
                self._reset_error = message
            else:
                self._reset_error = None
        self.decoder.reset()
        self._misses = 0
        if self.firmware is None:  # never answered since the agent started: set-up advice
            hint = " (check the wiring, the HSU/UART setting of the board's switches and the baud rate)"
        elif self.reset is None:  # it worked, then hung: only power or RSTPDN brings it back
            hint = (" (it answered before, so it hung: power-cycle it, and wire its RSTPDN to a GPIO "
                    "and set reader.reset_pin so the agent resets it; see hardware/README.md)")
        elif self._reset_error is not None:
            hint = f" (it answered before, so it hung, and {self._reset_error}: power-cycle it)"
        else:
            hint = " (it answered before and did not come back after the reset pulse: power-cycle it)"
        # A chip that was asleep may lose the first frame after the wake-up
        # (Adafruit asks twice at start): wake it and try once more.
        for _ in range(2):
            self._write(ser, wire.WAKEUP)
            if self._command(ser, wire.sam_configuration(), wire.SAM_CONFIGURATION,
                             ack_timeout=FIRST_ACK_TIMEOUT) is not None:
                break
        else:
            raise Pn532Silent(f"no answer to SAMConfiguration{hint}")
        if self._command(ser, wire.rf_max_retries(), wire.RF_CONFIGURATION) is None:
            raise Pn532Silent(f"no answer to RFConfiguration{hint}")
        fw = self._firmware(ser)
        if fw is None:
            raise Pn532Silent(f"no answer to GetFirmwareVersion{hint}")
        if fw[0] != wire.PN532_IC:
            raise Pn532Error(f"the chip reports IC 0x{fw[0]:02X}, not a PN532 (0x32)")
        self.firmware = fw
        self._misses = 0
        self._answered_at = time.monotonic()

    def input_fd(self, ser: Any) -> int | None:
        return None  # read_ready() paces itself: it waits poll_seconds, then asks the chip

    def read_ready(self, ser: Any) -> tuple[int, list[str]]:
        """Wait poll_seconds, poll once: (1 if the chip answered else 0, [uid hex] or [])."""
        if self._sleep_slices(self.poll_seconds):
            return 0, []
        if time.monotonic() - self._answered_at >= self.health_seconds:
            fw = self._firmware(ser)
            if fw is not None and fw[0] != wire.PN532_IC:
                self.decoder.drop("bad_firmware", f"firmware answer with IC 0x{fw[0]:02X}")
                fw = None
            self._count(fw is not None)
        params = self._command(ser, wire.in_list_passive_target(), wire.IN_LIST_PASSIVE_TARGET)
        # An answer whose checksums passed shows the chip is alive even when the
        # target in it is unusable (an odd UID length): dropped, never a reset.
        self._count(params is not None)
        if params is None:
            return 0, []
        uid, reason = wire.parse_target(params)
        if reason is not None:
            self.decoder.drop(reason, "malformed InListPassiveTarget answer")
        return 1, ([uid.hex().upper()] if uid else [])

    def _sleep_slices(self, seconds: float) -> bool:
        """Wait ``seconds``, keeping last_alive fresh; True if stopping."""
        deadline = time.monotonic() + seconds
        while not self._stopping():
            self._alive()
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._wait(None, min(left, 1.0))
        return True

    # the dialogue ------------------------------------------------------

    def _count(self, answered: bool) -> None:
        """Track answers; the second command in a row without one raises Pn532Silent."""
        if answered:
            self._misses = 0
            self._answered_at = time.monotonic()
            return
        if self._stopping():
            return
        self._misses += 1
        if self._misses >= _MISSES:
            self._misses = 0
            raise Pn532Silent(f"no valid answer to {_MISSES} commands in a row")

    def _firmware(self, ser: Any) -> tuple[int, int, int, int] | None:
        params = self._command(ser, wire.get_firmware_version(), wire.GET_FIRMWARE_VERSION)
        if params is None:
            return None
        fw = wire.parse_firmware(params)
        if fw is None:
            self.decoder.drop("bad_firmware", "malformed GetFirmwareVersion answer")
        return fw

    def _command(self, ser: Any, frame: bytes, code: int, *, ack_timeout: float = ACK_TIMEOUT) -> bytes | None:
        """Send one command; its answer's parameters, or None (no valid answer)."""
        for attempt in range(2):  # a NACK: send it once more
            self._alive()  # each attempt is bounded; the daemon's stall limit counts from here
            self._flush(ser)
            self._write(ser, frame)
            got = self._next(ser, ack_timeout, code)
            # no resend at the first contact: its long ACK wait would double an open's time
            if got == "nack" and attempt == 0 and ack_timeout == ACK_TIMEOUT:
                self.decoder.drop("nack", "the chip answered a command with NACK")
                continue
            break
        if isinstance(got, bytes):
            return got  # the answer came without its ACK (seen in the field): checksums passed
        if got == "ack":
            got = self._next(ser, ANSWER_TIMEOUT, code, after_ack=True)
            if isinstance(got, bytes):
                return got
        if got == "error":
            self.decoder.drop("error_frame", "the chip sent its syntax error frame")
        elif got == "nack":
            self.decoder.drop("nack", "the chip answered with NACK")
        elif got is None and not self._stopping():
            # Not a "drop" (no input was refused): the silence is the reader's error, said once.
            # UM0701 6.2.2: an ACK from the host aborts the pending command,
            # so its late answer cannot arrive during the next one.
            self._write(ser, wire.ACK)
        return None

    def _next(self, ser: Any, timeout: float, code: int, after_ack: bool = False) -> bytes | str | None:
        """The next meaningful frame within ``timeout``: the answer's params
        (bytes), "ack", "nack" or "error"; None on timeout or stop."""
        deadline = time.monotonic() + timeout
        while True:
            while self._frames:  # the ACK and the answer often come in one read
                frame = self._frames.pop(0)
                if frame.kind == "ack" and after_ack:
                    self.decoder.drop("unexpected", "a second ACK")
                    continue
                if frame.kind != "data":
                    return frame.kind
                params = wire.answer_params(frame, code)
                if params is not None:
                    return params
                self.decoder.drop("unexpected", "a frame that does not answer this command")
            left = deadline - time.monotonic()
            if left <= 0 or self._stopping():
                self.decoder.abandon()
                return None
            self._frames += self.decoder.feed(self._read_some(ser, left))

    def _read_some(self, ser: Any, timeout: float) -> bytes:
        fd = SerialReader.input_fd(self, ser)
        if fd is None:
            return ser.read(max(1, ser.in_waiting))  # bounded by the port's own timeout
        if not self._wait(fd, min(timeout, 0.5)):
            return b""
        return ser.read(max(1, min(ser.in_waiting, 4096)))

    def _flush(self, ser: Any) -> None:
        """Drop what arrived before this command: a late answer to an earlier
        one must not be taken for this one's."""
        if ser.in_waiting:
            self.decoder.drop("stale", "bytes that arrived between two commands")
        ser.reset_input_buffer()
        self.decoder.reset()
        self._frames.clear()

    def _write(self, ser: Any, data: bytes) -> None:
        gap = self._last_write + _FRAME_GAP - time.monotonic()
        if gap > 0:
            time.sleep(gap)
        ser.write(data)
        ser.flush()
        self._last_write = time.monotonic()

    def _stopping(self) -> bool:
        fd = self._stop_fd
        return fd is not None and bool(select.select([fd.fileno()], [], [], 0)[0])
