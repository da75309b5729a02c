"""Incremental byte-stream decoders for RFID readers (pure logic, no I/O).

Every decoder is fed arbitrary chunks of bytes as they arrive from a serial
port and returns the complete, well-formed tags found so far, in order.
Chunks may split a frame anywhere or hold several frames; state is kept
between calls.  Anything malformed is dropped and counted in ``dropped``
(reason -> count) with a short description in ``last_drop``, which never
contains card data.  Buffers are bounded, so a noisy line cannot grow memory.
``feed`` never raises for bytes-like input.

Protocols (see :func:`make_decoder`):

``line``
    One tag per line, terminated by CR, LF or CRLF.  Surrounding noise is
    stripped: spaces, tabs, control bytes (NUL, ESC, STX/ETX...), DEL and
    bytes 0x80-0xFF, none of which can be part of a tag (a reader powering up
    sends NUL and 0xFF).  A tag is 1..max_len characters of ``[0-9A-Za-z]``.
    Empty or blank lines are ignored without being counted; a line that was
    nothing but noise is dropped and counted as ``noise``.
``rdm6300``
    EM4100 frames from an RDM6300 (9600 8N1): STX (0x02), 10 ASCII hex
    characters (version byte plus 4-byte ID), 2 ASCII hex characters of
    checksum (XOR of the 5 data bytes), ETX (0x03).  Returns the 10 hex
    characters in upper case.  The decoder does not debounce: the reader
    repeats the frame while a card is held, and every valid frame is returned.
``regex``
    Vendor-specific ASCII lines (CR/LF terminated).  Each line, with
    surrounding whitespace and noise stripped as for ``line``, must match the pattern with
    :func:`re.fullmatch` (so write ``.*`` where free text is allowed); the
    named group ``tag`` is the card number and must be 1..64 characters of
    ``[0-9A-Za-z]``.
"""

from __future__ import annotations

import collections
import logging
import re
from typing import Callable

__all__ = [
    "Decoder",
    "LineDecoder",
    "Rdm6300Decoder",
    "RegexDecoder",
    "make_decoder",
    "DECODERS",
    "PROTOCOLS",
]

_log = logging.getLogger("agent.reader")

_CR = 0x0D
_LF = 0x0A
_STX = 0x02
_ETX = 0x03
_HEX = frozenset(b"0123456789ABCDEFabcdef")
_TAG_RE = re.compile(r"[0-9A-Za-z]+")
_TAG_MAX = 64  # longest tag a regex line may yield
# Bytes that are never part of a line's text: control bytes, space, DEL and
# 8-bit bytes. Around a tag they are noise (line noise at power-up, a reader's
# own framing) and are stripped instead of costing the scan.
_NOISE = bytes(range(0x00, 0x21)) + bytes(range(0x7F, 0x100))
_BLANK = b" \t"


class Decoder:
    """Base class: a stateful decoder turning a byte stream into tags."""

    def __init__(self) -> None:
        self.dropped: collections.Counter[str] = collections.Counter()
        self.last_drop: str | None = None

    def feed(self, data: bytes) -> list[str]:
        """Consume ``data``; return the complete tags it finishes, in order."""
        try:
            return self._feed(bytes(data))
        except Exception as exc:  # defensive: a decoder bug must not kill a reader
            _log.exception("decoder %s failed; state reset", type(self).__name__)
            self.reset()
            self._drop("internal_error", f"decoder error: {type(exc).__name__}")
            return []

    def reset(self) -> None:
        """Forget any partial input (e.g. after the device was reopened)."""

    def _feed(self, data: bytes) -> list[str]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _drop(self, reason: str, description: str) -> None:
        self.dropped[reason] += 1
        self.last_drop = description


class _LineDecoderBase(Decoder):
    """Splits the stream into CR/LF terminated lines with a bounded buffer."""

    def __init__(self, max_line: int) -> None:
        super().__init__()
        self._max_line = max_line
        self._buf = bytearray()
        self._discarding = False  # inside an over-long line: skip to terminator
        self._noisy = False  # noise was skipped at the start of the current line

    def reset(self) -> None:
        self._buf.clear()
        self._discarding = False
        self._noisy = False

    def _feed(self, data: bytes) -> list[str]:
        tags: list[str] = []
        start = 0
        n = len(data)
        while start < n:
            # next terminator (CR or LF) at or after start
            cr = data.find(b"\r", start)
            lf = data.find(b"\n", start)
            ends = [i for i in (cr, lf) if i >= 0]
            end = min(ends) if ends else -1
            chunk = data[start:] if end < 0 else data[start:end]
            if not self._discarding and not self._buf:
                # Leading noise never enters the buffer: a burst of it cannot
                # make the line after it over-long.
                kept = chunk.lstrip(_NOISE)
                if chunk[: len(chunk) - len(kept)].strip(_BLANK):
                    self._noisy = True
                chunk = kept
            if not self._discarding:
                if len(self._buf) + len(chunk) > self._max_line:
                    self._buf.clear()
                    self._discarding = True
                    self._drop("too_long", f"line longer than {self._max_line} bytes")
                else:
                    self._buf += chunk
            if end < 0:
                break
            # terminator reached
            if self._discarding:
                self._discarding = False
            else:
                line = bytes(self._buf)
                self._buf.clear()
                tag = self._line(line)
                if tag is not None:
                    tags.append(tag)
            self._noisy = False
            start = end + 1
        return tags

    def _line(self, line: bytes) -> str | None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _text(self, line: bytes) -> str | None:
        """Return the line stripped of surrounding noise as text, or None (dropped or blank)."""
        stripped = line.strip(_NOISE)
        if not stripped:
            if self._noisy:
                self._drop("noise", "a line of noise bytes and no tag")
            return None
        for b in stripped:
            if b < 0x20 or b > 0x7E:
                self._drop("bad_char", f"line with non-printable byte 0x{b:02X}")
                return None
        return stripped.decode("ascii")


class LineDecoder(_LineDecoderBase):
    """One tag per line (CR, LF or CRLF); tag = 1..max_len of [0-9A-Za-z]."""

    def __init__(self, max_len: int = 64) -> None:
        _check_max_len(max_len)
        self.max_len = max_len
        # room for surrounding spaces before the line counts as over-long
        super().__init__(max_line=max_len + 16)

    def _line(self, line: bytes) -> str | None:
        text = self._text(line)
        if text is None:
            return None
        if len(text) > self.max_len:
            self._drop("too_long", f"tag longer than {self.max_len} characters")
            return None
        if not _TAG_RE.fullmatch(text):
            self._drop("bad_char", "line is not a plain alphanumeric tag")
            return None
        return text


class RegexDecoder(_LineDecoderBase):
    """Lines matched with ``re.fullmatch`` against ``pattern``; group ``tag``."""

    def __init__(self, pattern: str, max_len: int = 256) -> None:
        _check_max_len(max_len)
        if not isinstance(pattern, str):
            raise ValueError("regex pattern must be a string")
        try:
            compiled = re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"invalid regex pattern {pattern!r}: {exc}") from None
        if "tag" not in compiled.groupindex:
            raise ValueError(
                f"regex pattern {pattern!r} has no named group 'tag', "
                "e.g. r'ID:(?P<tag>[0-9A-F]{10})'"
            )
        self.pattern = compiled
        self.max_len = max_len
        super().__init__(max_line=max_len)

    def _line(self, line: bytes) -> str | None:
        text = self._text(line)
        if text is None:
            return None
        m = self.pattern.fullmatch(text)
        if m is None:
            self._drop("no_match", "line does not match the pattern")
            return None
        tag = (m.group("tag") or "").strip()
        if not tag or len(tag) > _TAG_MAX or not _TAG_RE.fullmatch(tag):
            self._drop("bad_tag", "matched group 'tag' is not 1..64 alphanumerics")
            return None
        return tag


class Rdm6300Decoder(Decoder):
    """RDM6300 / EM4100 ASCII frames: STX, 10 hex, 2 hex XOR checksum, ETX."""

    FRAME_LEN = 14

    def __init__(self) -> None:
        super().__init__()
        self._buf = bytearray()  # always starts with STX when non-empty; < 14 bytes

    def reset(self) -> None:
        self._buf.clear()

    def _feed(self, data: bytes) -> list[str]:
        tags: list[str] = []
        buf = self._buf
        buf += data
        while buf:
            i = buf.find(_STX)
            if i < 0:
                self._drop("noise", f"{len(buf)} byte(s) outside a frame")
                buf.clear()
                break
            if i > 0:
                self._drop("noise", f"{i} byte(s) outside a frame")
                del buf[:i]
            # buf[0] is STX: check what we have so far
            body_end = min(len(buf), 13)
            bad = next((j for j in range(1, body_end) if buf[j] not in _HEX), None)
            if bad is not None:
                # a non-hex byte inside the frame (often the next STX): resync there
                if buf[bad] == _STX:
                    self._drop("partial", "incomplete frame")
                    del buf[:bad]
                else:
                    self._drop("bad_char", f"non-hex byte 0x{buf[bad]:02X} in frame")
                    del buf[: bad + 1]
                continue
            if len(buf) < self.FRAME_LEN:
                break  # wait for more bytes
            if buf[13] != _ETX:
                self._drop("no_etx", "frame not terminated by ETX")
                # bytes 1..12 are hex, so no frame can start there; keep an STX
                del buf[: 13 if buf[13] == _STX else 14]
                continue
            frame = bytes(buf[1:13]).decode("ascii").upper()
            del buf[: self.FRAME_LEN]
            data5 = bytes.fromhex(frame[:10])
            check = 0
            for b in data5:
                check ^= b
            if check != int(frame[10:12], 16):
                self._drop("bad_checksum", "frame with bad checksum")
                continue
            tags.append(frame[:10])
        return tags


def _check_max_len(max_len: object) -> None:
    if isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 1:
        raise ValueError(f"max_len must be a positive integer, got {max_len!r}")


def _line(max_len: int | None, pattern: str | None) -> Decoder:
    return LineDecoder(max_len if max_len is not None else 64)


def _rdm6300(max_len: int | None, pattern: str | None) -> Decoder:
    return Rdm6300Decoder()


def _regex(max_len: int | None, pattern: str | None) -> Decoder:
    if not pattern:
        raise ValueError("protocol 'regex' needs a pattern with a named group 'tag'")
    return RegexDecoder(pattern, max_len if max_len is not None else 256)


#: ``reader.protocol`` -> builder(max_len, pattern); a new serial protocol is
#: one decoder class plus one line here.
DECODERS: dict[str, Callable[[int | None, str | None], Decoder]] = {
    "line": _line,
    "rdm6300": _rdm6300,
    "regex": _regex,
}
PROTOCOLS = tuple(DECODERS)


def make_decoder(
    protocol: str, *, max_len: int | None = None, pattern: str | None = None
) -> Decoder:
    """Build a decoder for ``protocol`` ("line", "rdm6300" or "regex").

    ``max_len`` bounds the tag length (line) or line length (regex); it is
    ignored for rdm6300, whose frames have a fixed size.  ``pattern`` is
    required for "regex" and rejected for the others.  Raises ValueError with
    a clear message on any bad argument.
    """
    if protocol not in PROTOCOLS:  # a tuple: unhashable input still gets the ValueError
        raise ValueError(
            f"unknown reader protocol {protocol!r}; expected one of {', '.join(PROTOCOLS)}"
        )
    if max_len is not None:
        _check_max_len(max_len)
    if protocol != "regex" and pattern:
        raise ValueError(f"a pattern is only used with protocol 'regex', not {protocol!r}")
    return DECODERS[protocol](max_len, pattern)
