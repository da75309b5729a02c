"""The PN532's host-link frames (UART/HSU), built and parsed (pure logic, no I/O).

From NXP UM0701 (PN532 User Manual rev. 02), section 6.2.1, checked against
nfcpy (``src/nfc/clf/pn53x.py``) and Adafruit's CircuitPython driver:

* normal information frame (6.2.1.1): ``00 00 FF LEN LCS TFI PD0..PDn DCS 00``
  with LEN = bytes from TFI to PDn, LEN + LCS = 0 and TFI + PD... + DCS = 0
  (mod 256); TFI is D4 host -> PN532, D5 PN532 -> host;
* extended information frame (6.2.1.2): ``00 00 FF FF FF LENM LENL LCS TFI
  ... DCS 00`` with LENM + LENL + LCS = 0;
* ACK ``00 00 FF 00 FF 00`` (6.2.1.3), NACK ``00 00 FF FF 00 00`` (6.2.1.4),
  the syntax error frame ``00 00 FF 01 FF 7F 81 00`` (6.2.1.5).

:class:`FrameParser` finds frames in a byte stream split anywhere, like
:class:`agent.reading.frames.Decoder`: nothing malformed is returned, every
bad frame is counted in ``dropped`` (reason -> count) with a short
``last_drop`` that never holds card data, and ``feed`` never raises.  Zero
bytes between frames (preambles, postambles) are not noise.
"""

from __future__ import annotations

import collections
from typing import NamedTuple

__all__ = [
    "ACK", "NACK", "ERROR_FRAME", "WAKEUP", "HOST", "CHIP", "PN532_IC", "UID_LENGTHS",
    "GET_FIRMWARE_VERSION", "SAM_CONFIGURATION", "RF_CONFIGURATION", "IN_LIST_PASSIVE_TARGET",
    "Frame", "FrameParser", "checksum", "build_frame", "command_frame",
    "get_firmware_version", "sam_configuration", "rf_max_retries", "in_list_passive_target",
    "answer_params", "parse_firmware", "parse_target",
]

ACK = b"\x00\x00\xff\x00\xff\x00"
NACK = b"\x00\x00\xff\xff\x00\x00"
ERROR_FRAME = b"\x00\x00\xff\x01\xff\x7f\x81\x00"
# HSU wake-up (UM0701 7.2.11, Adafruit's uart.py): 0x55 gives the falling
# edge that wakes the chip; the zeros give its oscillator time to start
# (14 bytes ~ 1.2 ms at 115200 baud) before the first real frame.
WAKEUP = b"\x55\x55" + bytes(14)
HOST, CHIP, _ERROR_TFI = 0xD4, 0xD5, 0x7F
PN532_IC = 0x32  # GetFirmwareVersion's IC byte for a PN532
UID_LENGTHS = (4, 7, 10)  # ISO/IEC 14443-3 single, double and triple size UIDs

GET_FIRMWARE_VERSION = 0x02
SAM_CONFIGURATION = 0x14
RF_CONFIGURATION = 0x32
IN_LIST_PASSIVE_TARGET = 0x4A

_START = b"\x00\xff"
_MAX_BODY = 300  # the chip's frames are at most 265 bytes (nfcpy host_command_frame_max_size)


class Frame(NamedTuple):
    """``kind`` is "ack", "nack", "error" or "data"; for data frames ``tfi``
    is the frame identifier and ``data`` the bytes after it (command or
    answer code first)."""

    kind: str
    tfi: int | None = None
    data: bytes = b""


def checksum(data: bytes) -> int:
    """The byte that makes ``data`` plus it sum to 0 mod 256 (LCS, DCS)."""
    return -sum(data) & 0xFF


def build_frame(tfi: int, data: bytes) -> bytes:
    """A normal information frame (UM0701 6.2.1.1); ``data`` is 1..254 bytes."""
    body = bytes([tfi]) + bytes(data)
    if not 2 <= len(body) <= 255:
        raise ValueError(f"a normal frame carries 1..254 data bytes, not {len(data)}")
    return b"\x00\x00\xff" + bytes([len(body), checksum(bytes([len(body)]))]) + body + bytes([checksum(body), 0])


def command_frame(code: int, params: bytes = b"") -> bytes:
    return build_frame(HOST, bytes([code]) + bytes(params))


def get_firmware_version() -> bytes:
    """UM0701 7.2.2: answered with D5 03 IC Ver Rev Support."""
    return command_frame(GET_FIRMWARE_VERSION)


def sam_configuration() -> bytes:
    """UM0701 7.2.10, mode 1 = normal (no SAM); timeout 0 and IRQ 0 as nfcpy
    sends them: the HSU link needs no P70_IRQ line."""
    return command_frame(SAM_CONFIGURATION, b"\x01\x00\x00")


def rf_max_retries(passive_activation: int = 1) -> bytes:
    """UM0701 7.3.1 RFConfiguration item 5 (MaxRetries): MxRtyATR and
    MxRtyPSL at their defaults (0xFF, 0x01), MxRtyPassiveActivation finite:
    the default 0xFF makes InListPassiveTarget wait for a card forever."""
    if not 0 <= passive_activation < 0xFF:
        raise ValueError("MxRtyPassiveActivation must be 0..254 (0xFF waits forever)")
    return command_frame(RF_CONFIGURATION, bytes([0x05, 0xFF, 0x01, passive_activation]))


def in_list_passive_target() -> bytes:
    """UM0701 7.3.5: at most 1 target, BrTy 0 = 106 kbps type A (ISO/IEC 14443A)."""
    return command_frame(IN_LIST_PASSIVE_TARGET, b"\x01\x00")


def answer_params(frame: Frame, command: int) -> bytes | None:
    """The parameters of ``frame`` if it is the chip's answer to ``command``."""
    if frame.kind == "data" and frame.tfi == CHIP and frame.data[:1] == bytes([command + 1]):
        return frame.data[1:]
    return None


def parse_firmware(params: bytes) -> tuple[int, int, int, int] | None:
    """GetFirmwareVersion's (IC, Ver, Rev, Support), or None if malformed."""
    if len(params) != 4:
        return None
    ic, ver, rev, support = params
    return ic, ver, rev, support


def parse_target(params: bytes) -> tuple[bytes | None, str | None]:
    """InListPassiveTarget's answer for 1 type A target (UM0701 7.3.5):
    ``NbTg [Tg SENS_RES(2) SEL_RES NFCIDLength NFCID1 [ATS]]``.

    Returns (uid, None) for one card, (None, None) for none, and
    (None, reason) for a malformed answer.
    """
    if not params:
        return None, "bad_target"
    if params[0] == 0:
        return (None, None) if len(params) == 1 else (None, "bad_target")
    if params[0] != 1 or len(params) < 6 or params[1] != 1:
        return None, "bad_target"
    n = params[5]
    if n not in UID_LENGTHS:
        return None, "bad_uid_length"
    uid, rest = params[6:6 + n], params[6 + n:]
    if len(uid) != n:
        return None, "bad_target"
    # Only an ISO/IEC 14443-4 card (SEL_RES bit 6) adds its ATS, whose first
    # byte TL counts the ATS itself.
    if rest and not (params[4] & 0x20 and rest[0] == len(rest)):
        return None, "bad_target"
    return bytes(uid), None


class FrameParser:
    """Incremental PN532 frame parser; see the module docstring."""

    def __init__(self) -> None:
        self.dropped: collections.Counter[str] = collections.Counter()
        self.last_drop: str | None = None
        self._buf = bytearray()

    def reset(self) -> None:
        """Forget any partial input (the port was reopened or flushed)."""
        self._buf.clear()

    @property
    def partial(self) -> bool:
        """True while a frame has begun and not ended."""
        return _START in self._buf

    def abandon(self) -> None:
        """The rest of a begun frame will not come (a read timed out): drop it as torn."""
        if self.partial:
            self.drop("torn", "frame cut off before its end")
        self._buf.clear()

    def drop(self, reason: str, description: str) -> None:
        self.dropped[reason] += 1
        self.last_drop = description

    def feed(self, data: bytes) -> list[Frame]:
        """Consume ``data``; return the complete, valid frames it finishes."""
        try:
            self._buf += bytes(data)
            return self._scan()
        except Exception as exc:  # defensive: a parser bug must not kill a reader
            self._buf.clear()
            self.drop("internal_error", f"parser error: {type(exc).__name__}")
            return []

    def _scan(self) -> list[Frame]:
        out: list[Frame] = []
        buf = self._buf
        while True:
            i = buf.find(_START)
            if i < 0:
                self._skip(len(buf) - (1 if buf[-1:] == b"\x00" else 0))  # keep a 00 that may start 00 FF
                return out
            self._skip(i)
            if len(buf) < 4:
                return out
            ln, lcs = buf[2], buf[3]
            if (ln, lcs) == (0x00, 0xFF):
                out.append(Frame("ack"))
                del buf[:4]
                continue
            if (ln, lcs) == (0xFF, 0x00):
                out.append(Frame("nack"))
                del buf[:4]
                continue
            if (ln, lcs) == (0xFF, 0xFF):  # extended frame
                if len(buf) < 7:
                    return out
                if sum(buf[4:7]) & 0xFF:
                    self._resync("bad_lcs", "extended frame with a bad length checksum")
                    continue
                head, size = 7, buf[4] << 8 | buf[5]
            elif (ln + lcs) & 0xFF:
                self._resync("bad_lcs", "frame with a bad length checksum")
                continue
            else:
                head, size = 4, ln
            if not 1 <= size <= _MAX_BODY:
                self._resync("bad_len", f"frame length {size} out of range")
                continue
            if len(buf) < head + size + 1:
                return out
            body = bytes(buf[head:head + size])
            if (sum(body) + buf[head + size]) & 0xFF:
                # A frame cut short and followed by the next one fails here:
                # name it, and look for the next frame inside what was read.
                torn = b"\x00\x00\xff" in body
                self._resync("torn" if torn else "bad_dcs",
                             "frame cut off by another frame" if torn else "frame with a bad data checksum")
                continue
            del buf[:head + size + 1]
            tfi = body[0]
            if tfi == _ERROR_TFI and size == 1:
                out.append(Frame("error"))
            elif size < 2:
                self.drop("bad_len", "data frame without a command code")
            else:
                out.append(Frame("data", tfi, body[1:]))

    def _skip(self, n: int) -> None:
        """Discard ``n`` bytes outside any frame; zeros are padding, the rest noise."""
        if n <= 0:
            return
        junk = self._buf[:n]
        del self._buf[:n]
        if junk.strip(b"\x00"):
            self.drop("noise", f"{n} byte(s) outside a frame")

    def _resync(self, reason: str, description: str) -> None:
        self.drop(reason, description)
        del self._buf[:2]  # past this start code: the next frame may begin inside
