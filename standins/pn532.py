"""A PN532 simulator on a pseudo-terminal: the chip's side of NXP UM0701's HSU dialogue.

The agent opens :attr:`Pn532Sim.port` (the pty's slave) as it opens a real
PN532's serial port; a thread reads the master side, parses the host's frames
with their checksums and answers as the chip does:

* the chip starts asleep (libnfc#15) and ignores everything until a wake-up
  preamble (``55 55`` then zeros, UM0701 7.2.11);
* a frame whose LCS or DCS is wrong gets no answer at all: UM0701 6.2.1.4
  defines the NACK as the *host's* request to repeat an answer, and 6.2.2 has
  the host resend when no ACK came, so the chip stays silent (so does this
  simulator);
* a valid frame gets an ACK, then its answer (D5, code + 1); an unknown
  command, a frame not from the host (TFI not D4) or bad parameters get the
  ACK and the syntax error frame (6.2.1.5);
* a host ACK cancels a pending command; a host NACK makes it send its last
  answer again;
* SAMConfiguration (7.2.10) must have set normal mode before
  InListPassiveTarget (7.3.5) activates the field; without it the poll is
  never answered, as a chip left in its power-up mode does not read cards;
* RFConfiguration item 5 (7.3.1) sets MaxRetries: while
  MxRtyPassiveActivation is 0xFF (its default) a poll without a card is
  never answered (the chip keeps looking), otherwise it answers NbTg = 0;
* a card in the field (:meth:`Pn532Sim.present`) is answered as 1 target at
  106 kbps type A with its UID; any length is sent, so that a reader's check
  of 4/7/10 bytes can be tested.

Faults for tests: :meth:`silent_after`, :meth:`nack_next`, :meth:`tear_next`,
:meth:`corrupt_next`; :meth:`reset` is what a pulse on RSTPDN does (asleep,
unconfigured, no longer silent; injected line faults stay).  Thread-safe;
serves until :meth:`close`.
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import threading
import time
import tty

__all__ = ["Pn532Sim"]

_ACK = bytes.fromhex("0000ff00ff00")
_NACK = bytes.fromhex("0000ffff0000")
_SYNTAX_ERROR = bytes.fromhex("0000ff01ff7f8100")
_DEFAULT_RETRIES = (0xFF, 0x01, 0xFF)  # MxRtyATR, MxRtyPSL, MxRtyPassiveActivation (UM0701 7.3.1)
_ANSWER_DELAY = 0.001  # the chip takes a moment between its ACK and its answer


def _chip_frame(payload: bytes) -> bytes:
    """A normal information frame from the chip: TFI D5 then ``payload``."""
    body = b"\xd5" + payload
    n = len(body)
    return bytes([0, 0, 0xFF, n, (0x100 - n) & 0xFF]) + body + bytes([(0x100 - sum(body)) & 0xFF, 0])


def _sens_res(uid: bytes) -> bytes:
    # ATQA: the UID size bits (single/double/triple), as MIFARE Classic 1K and NTAG answer
    return {4: b"\x00\x04", 7: b"\x00\x44", 10: b"\x00\x84"}.get(len(uid), b"\x00\x04")


class Pn532Sim:
    """A simulated PN532 on a pty; see the module docstring."""

    def __init__(self, *, firmware: tuple[int, int, int, int] = (0x32, 0x01, 0x06, 0x07),
                 recover: str = "wake") -> None:
        if recover not in ("wake", "reset"):
            raise ValueError("recover must be 'wake' or 'reset'")
        self.firmware = tuple(firmware)
        self.recover = recover
        self._master, self._slave = os.openpty()
        tty.setraw(self._master)
        tty.setraw(self._slave)  # bytes pass unchanged, whoever opens the slave
        fcntl.fcntl(self._master, fcntl.F_SETFL, fcntl.fcntl(self._master, fcntl.F_GETFL) | os.O_NONBLOCK)
        self.port = os.ttyname(self._slave)
        self._lock = threading.RLock()
        self._stop_r, self._stop_w = os.pipe()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._rx = bytearray()
        self._commands: list[int] = []
        self._wakeups = 0
        self._uid: bytes | None = None
        self._nack = self._tear = self._corrupt = 0
        self._power_up()

    def _power_up(self) -> None:
        self._asleep = True
        self._sam_normal = False
        self._retries = _DEFAULT_RETRIES
        self._silent = False
        self._budget: int | None = None  # commands still answered before going silent
        self._last: bytes | None = None  # the last answer, for a host NACK
        self._rx.clear()

    # control ---------------------------------------------------------

    def start(self) -> Pn532Sim:
        self._thread = threading.Thread(target=self._serve, name="pn532-sim", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        os.write(self._stop_w, b"x")
        if self._thread is not None:
            self._thread.join(5.0)
        for fd in (self._master, self._slave, self._stop_r, self._stop_w):
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self) -> Pn532Sim:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def present(self, uid: bytes | None) -> None:
        """A card with this UID in the field; None: removed."""
        with self._lock:
            self._uid = None if uid is None else bytes(uid)

    def silent_after(self, n: int) -> None:
        """Answer ``n`` more commands, then nothing (not even an ACK)."""
        with self._lock:
            self._budget = int(n)
            self._silent = self._budget <= 0

    def reset(self) -> None:
        """An RSTPDN pulse: the chip restarts asleep and unconfigured."""
        with self._lock:
            self._power_up()

    def nack_next(self, n: int) -> None:
        """Answer the next ``n`` commands with a NACK instead of ACK and answer."""
        with self._lock:
            self._nack = int(n)

    def tear_next(self, n: int) -> None:
        """Cut the next ``n`` answer frames in the middle."""
        with self._lock:
            self._tear = int(n)

    def corrupt_next(self, n: int) -> None:
        """Send the next ``n`` answer frames with a wrong DCS."""
        with self._lock:
            self._corrupt = int(n)

    @property
    def commands(self) -> list[int]:
        """The command codes of the valid frames received while awake (silent or not)."""
        with self._lock:
            return list(self._commands)

    @property
    def wakeups(self) -> int:
        """How many wake-up preambles arrived."""
        with self._lock:
            return self._wakeups

    # the chip ----------------------------------------------------------

    def _serve(self) -> None:
        while True:
            ready, _, _ = select.select([self._master, self._stop_r], [], [])
            if self._stop_r in ready:
                return
            try:
                data = os.read(self._master, 4096)
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EINTR):
                    continue
                if exc.errno == errno.EIO:  # nobody has the slave open right now
                    time.sleep(0.01)
                    continue
                return
            with self._lock:
                self._rx += data
                self._consume()

    def _send(self, data: bytes) -> None:
        try:
            os.write(self._master, data)
        except OSError:  # nobody reads: a chip does not wait for its host either
            pass

    def _consume(self) -> None:
        rx = self._rx
        while rx:
            first = rx[0]
            if first == 0x55:  # a wake-up preamble, outside any frame
                if len(rx) < 2:
                    return
                if rx[1] == 0x55:
                    del rx[:2]
                    self._wake()
                else:
                    del rx[:1]
                continue
            if first != 0x00:
                del rx[:1]
                continue
            if len(rx) < 4:
                if len(rx) >= 2 and rx[1] != 0xFF:
                    del rx[:1]
                    continue
                return
            if rx[1] != 0xFF:
                del rx[:1]
                continue
            length, lcs = rx[2], rx[3]
            if (length, lcs) == (0x00, 0xFF):
                del rx[:4]
                self._host_ack()
                continue
            if (length, lcs) == (0xFF, 0x00):
                del rx[:4]
                self._host_nack()
                continue
            if length == 0 or (length + lcs) % 256:
                del rx[:2]  # not a frame start after all: the chip stays silent
                continue
            if len(rx) < 5 + length:
                return
            body, dcs = bytes(rx[4:4 + length]), rx[4 + length]
            del rx[:5 + length]
            if (sum(body) + dcs) % 256 == 0:
                self._frame(body)

    def _wake(self) -> None:
        self._wakeups += 1
        if self._silent and self.recover == "reset":
            return
        self._asleep = False
        if self._silent:
            self._silent, self._budget = False, None

    def _host_ack(self) -> None:
        pass  # answers go out at once: nothing is left pending to cancel

    def _host_nack(self) -> None:
        if not self._asleep and not self._silent and self._last is not None:
            self._answer(self._last)

    def _frame(self, body: bytes) -> None:
        if self._asleep:
            return
        if len(body) >= 2:
            self._commands.append(body[1])
        if self._silent:
            return
        if self._budget is not None:
            if self._budget <= 0:
                self._silent = True
                return
            self._budget -= 1
        if self._nack > 0:
            self._nack -= 1
            self._send(_NACK)
            return
        self._send(_ACK)
        if body[0] != 0xD4 or len(body) < 2:
            self._answer(_SYNTAX_ERROR)
            return
        payload = self._execute(body[1], body[2:])
        if payload is not None:
            self._answer(_SYNTAX_ERROR if payload == b"" else _chip_frame(payload))

    def _answer(self, frame: bytes) -> None:
        self._last = frame
        if self._corrupt > 0:
            self._corrupt -= 1
            frame = frame[:-2] + bytes([(frame[-2] + 1) % 256]) + frame[-1:]
        if self._tear > 0:
            self._tear -= 1
            frame = frame[: len(frame) // 2]
        time.sleep(_ANSWER_DELAY)
        self._send(frame)

    def _execute(self, code: int, params: bytes) -> bytes | None:
        """The answer's payload after TFI; b"" for the syntax error frame; None: no answer."""
        if code == 0x02:  # GetFirmwareVersion
            return bytes([0x03, *self.firmware])
        if code == 0x14:  # SAMConfiguration
            if not params or params[0] not in (1, 2, 3, 4):
                return b""
            self._sam_normal = params[0] == 1
            return b"\x15"
        if code == 0x32:  # RFConfiguration
            if not params:
                return b""
            if params[0] == 0x05:
                if len(params) != 4:
                    return b""
                self._retries = tuple(params[1:4])
            return b"\x33"
        if code == 0x4A:  # InListPassiveTarget
            if len(params) < 2 or params[0] not in (1, 2) or params[1] != 0x00:
                return b""
            if not self._sam_normal:
                return None
            uid = self._uid
            if uid is not None:
                sel_res = 0x08 if len(uid) == 4 else 0x00
                return b"\x4b\x01\x01" + _sens_res(uid) + bytes([sel_res, len(uid)]) + uid
            return None if self._retries[2] == 0xFF else b"\x4b\x00"
        return b""
