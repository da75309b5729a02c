"""Card-number formats: EM4100 frames, MIFARE UIDs, Wiegand frames (pure logic).

The same card is printed and stored with different numbers depending on the
reader: an EM4100 card carries 40 bits (a version/customer byte and a 4-byte
ID, usually printed from the ID only), a MIFARE/NTAG card a UID of 4, 7 or 10
bytes, a Wiegand reader sends a frame of bits (W26: parity, 8-bit facility,
16-bit card, parity).  This module turns what a reader sent into each form.

How ``raw`` (what the reader sent) is interpreted
--------------------------------------------------
``raw`` is stripped of surrounding whitespace, then read according to
``kind`` (:func:`kind_for_protocol` gives it for a reader):

* ``"hex"``: 1..10 hex digits (either case), the bytes as sent (an odd length
  gets a leading 0).  10 digits is the RDM6300 frame: version byte + 4-byte
  ID.  8 digits is a bare 4-byte ID.
* ``"decimal"``: 1..13 decimal digits, a number below 2**40 (keyboard readers
  usually send the 10-digit decimal of the 4-byte ID; some send the 12/13
  digit decimal of all 40 bits).  Its byte width is 4 if the number fits in
  32 bits, else 5.
* ``"auto"`` (default): only decimal digits -> ``"decimal"``; otherwise only
  hex digits -> ``"hex"``.  CAUTION: a hex ID made only of the digits 0-9
  (about 1 card in 100) would be read as decimal, so callers that know the
  reader sends hex (RDM6300) must pass ``kind="hex"``.
* ``"uid"`` (PN532): 2..20 hex digits, an even count: the UID bytes as sent.
* ``"wiegand"``: ``"<n>:<HEX>"``, the frame's bit count and all its n bits
  (parity included, first bit received = most significant) in hex, e.g.
  ``"26:1436586"``.  The *data bits* are the n bits without the first and the
  last (the parity bits) for n = 26 and 34, all n bits for other lengths.

``byte_order="little"`` means the reader sent the ID bytes reversed: they are
reversed before any number is derived (hex/decimal: all bytes described
above; uid: all UID bytes; wiegand: the data bits' ceil(bits/8) bytes, the
parity bits staying in place).

Formats
-------
* ``raw``: the input as read (stripped); it applies to any printable input.
* ``decimal10``: a 32-bit ID as a 10-digit zero-padded decimal: hex
  ``0F00A1B2C3`` -> ``0010597059`` (EM: the low 32 bits; uid: only a UID of
  at most 4 bytes; wiegand: the data bits, when below 2**32).
* ``hex``: upper-case hex.  EM: the 4 ID bytes (bits 31..0, the version byte
  excluded) as 8 digits, ``0F00A1B2C3`` -> ``00A1B2C3``, the same for every
  reader type (the version byte survives only in ``raw``); uid: all UID
  bytes, 2 digits each; wiegand: the data bits, at least 8 digits.
* ``wiegand26``: the "8-digit" form: facility = bits 23..16 as 3 digits, card
  number = the low 16 bits as 5 digits, joined by a comma: ``00A1B2C3`` ->
  ``161,45763`` (EM: of the low 32 bits; uid: a UID of at most 4 bytes;
  wiegand: data bits of at most 32 bits).
* ``decimal``: the whole number, unpadded.  EM: all bytes (all 40 bits of an
  RDM6300 frame: ``0F00A1B2C3`` -> ``64435106499``); uid: all UID bytes as
  one number; wiegand: the whole frame, parity bits included (the "full
  number with parity"; ``decimal10`` is the one without).
* ``facility_card``: ``facility,card`` unpadded, where card = the low
  ``card_bits`` bits (default 16, reader.card_bits) and facility = the bits
  above: of the low 32 bits (EM), of a UID of at most 4 bytes, of the data
  bits (wiegand): W26 ``26:1436586`` -> ``161,45763``.

Worked Wiegand example: facility 161, card 45763 -> data bits 0xA1B2C3;
both parity bits 0 -> frame 0xA1B2C3 << 1 = 0x1436586 -> raw ``26:1436586``:
hex ``00A1B2C3``, decimal10 ``0010597059``, wiegand26 and facility_card
``161,45763``, decimal ``21194118``.

A format that does not apply (non-numeric input, too many digits, a UID too
long for a 32-bit form) raises :class:`TagFormatError` from :func:`format_tag`
and gives ``None`` in :func:`all_formats`.

Which format gives a known number
---------------------------------
:func:`match_expected` answers ``agent probe --expect``: every (tag_format,
byte_order) whose output equals the expected number, exactly or leniently
(hex case and separators, leading zeros of decimal forms, ``,`` ``-`` ``/``
or a space between facility and card), and a facility_card split with
another ``card_bits`` when only that gives it.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from agent.errors import TagFormatError

__all__ = [
    "FORMATS",
    "KINDS",
    "BYTE_ORDERS",
    "CARD_BITS",
    "TagFormatError",
    "Match",
    "format_tag",
    "all_formats",
    "parse_id",
    "kind_for_protocol",
    "match_expected",
    "best_match",
]

FORMATS = ("raw", "decimal10", "hex", "wiegand26", "decimal", "facility_card")
KINDS = ("auto", "hex", "decimal", "uid", "wiegand")
BYTE_ORDERS = ("big", "little")
CARD_BITS = 16

_DEC = frozenset("0123456789")
_HEXD = frozenset("0123456789abcdefABCDEF")
_MAX_HEX = 10
_MAX_DEC = 13
_MAX_UID = 20
_MAX_WIEGAND_BITS = 128
_PARITY_FRAMES = (26, 34)
_LIMIT = 1 << 40
_M32 = 0xFFFFFFFF
_WIEGAND_RAW = re.compile(r"(\d{1,3}):([0-9A-Fa-f]+)")


class _Id(NamedTuple):
    kind: str  # resolved: "hex" | "decimal" | "uid" | "wiegand"
    value: int  # after byte_order; wiegand: the data bits
    nbytes: int  # uid: the UID's length
    bits: int  # wiegand: how many data bits
    frame: int  # wiegand: the whole frame with the data in byte_order


def kind_for_protocol(protocol: str, reader_type: str = "serial") -> str:
    """The ``kind`` of a reader's tags: rdm6300 -> "hex", pn532 -> "uid", a
    wiegand reader -> "wiegand", anything else "auto".

    ``protocol`` only describes serial readers; a hid reader reads "auto"
    whatever its table says.
    """
    if reader_type == "wiegand":
        return "wiegand"
    if reader_type == "serial":
        return {"rdm6300": "hex", "pn532": "uid"}.get(protocol, "auto")
    return "auto"


def _check_args(byte_order: str, kind: str, card_bits: int = CARD_BITS) -> None:
    if byte_order not in BYTE_ORDERS:
        raise TagFormatError(f"byte_order must be 'big' or 'little', got {byte_order!r}")
    if kind not in KINDS:
        raise TagFormatError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if isinstance(card_bits, bool) or not isinstance(card_bits, int) or not 1 <= card_bits <= 63:
        raise TagFormatError(f"card_bits must be a whole number from 1 to 63, got {card_bits!r}")


def _reverse(value: int, nbytes: int) -> int:
    return int.from_bytes(value.to_bytes(nbytes, "big"), "little")


def _parse_wiegand(text: str, little: bool) -> _Id:
    m = _WIEGAND_RAW.fullmatch(text)
    n = int(m.group(1)) if m else 0
    if not m or not 1 <= n <= _MAX_WIEGAND_BITS or len(m.group(2)) > (n + 3) // 4:
        raise TagFormatError('tag is not a Wiegand frame "<bits>:<hex>"')
    frame = int(m.group(2), 16)
    if frame >> n:
        raise TagFormatError(f"Wiegand frame has more than {n} bits")
    parity = n in _PARITY_FRAMES
    bits = n - 2 if parity else n
    data = (frame >> 1) & ((1 << bits) - 1) if parity else frame
    if little:
        data = _reverse(data, (bits + 7) // 8)
        frame = (frame & (1 << (n - 1)) | data << 1 | frame & 1) if parity else data
    return _Id("wiegand", data, (bits + 7) // 8, bits, frame)


def _parse(raw: str, byte_order: str, kind: str) -> _Id:
    text = raw.strip() if isinstance(raw, str) else ""
    if not text:
        raise TagFormatError("empty tag")
    little = byte_order == "little"
    if kind == "wiegand":
        return _parse_wiegand(text, little)
    chars = set(text)
    if kind == "auto":
        kind = "decimal" if chars <= _DEC else "hex"
    if kind == "decimal":
        if not chars <= _DEC or len(text) > _MAX_DEC:
            raise TagFormatError("tag is not a decimal number of at most 13 digits")
        value = int(text)
        if value >= _LIMIT:
            raise TagFormatError("decimal tag does not fit in 40 bits")
        width = 4 if value < (1 << 32) else 5
    elif kind == "uid":
        if not chars <= _HEXD or len(text) % 2 or not 2 <= len(text) <= _MAX_UID:
            raise TagFormatError("tag is not a UID of 1 to 10 bytes in hex")
        value, width = int(text, 16), len(text) // 2
    else:
        if not chars <= _HEXD or len(text) > _MAX_HEX:
            raise TagFormatError("tag is not a hex number of at most 10 digits")
        value = int(text, 16)
        width = (len(text) + 1) // 2
    if little:
        value = _reverse(value, width)
    return _Id(kind, value, width, width * 8, value)


def parse_id(raw: str, *, byte_order: str = "big", kind: str = "auto", card_bits: int = CARD_BITS) -> int:
    """The card value ``raw`` denotes (EM: up to 40 bits; uid: all UID bytes;
    wiegand: the data bits), after ``byte_order``; see the module docstring."""
    _check_args(byte_order, kind, card_bits)
    return _parse(raw, byte_order, kind).value


def _numeric(card: _Id, fmt: str, card_bits: int) -> str:
    """``card`` in the numeric format ``fmt``; TagFormatError where it does not apply."""
    low = card.value & _M32
    if card.kind == "uid":
        if fmt == "hex":
            return f"{card.value:0{2 * card.nbytes}X}"
        if fmt != "decimal" and card.nbytes > 4:
            raise TagFormatError(f"{fmt} applies to UIDs of at most 4 bytes; this one has {card.nbytes}")
    elif card.kind == "wiegand":
        if fmt == "hex":
            return f"{card.value:08X}"
        if fmt == "decimal":
            return str(card.frame)
        if fmt == "facility_card":
            low = card.value
        elif card.value > _M32 or (fmt == "wiegand26" and card.bits > 32):
            raise TagFormatError(f"{fmt} applies to at most 32 data bits; this frame has {card.bits}")
    elif fmt == "hex":
        return f"{low:08X}"
    if fmt == "decimal":
        return str(card.value)
    if fmt == "decimal10":
        return f"{low:010d}"
    if fmt == "wiegand26":
        return f"{(low >> 16) & 0xFF:03d},{low & 0xFFFF:05d}"
    return f"{low >> card_bits},{low & ((1 << card_bits) - 1)}"  # facility_card


def _raw(raw: str) -> str:
    text = raw.strip() if isinstance(raw, str) else ""
    if not text or not text.isprintable():
        raise TagFormatError("empty or non-printable tag")
    return text


def format_tag(raw: str, fmt: str, *, byte_order: str = "big", kind: str = "auto",
               card_bits: int = CARD_BITS) -> str:
    """``raw`` shown in format ``fmt`` (one of FORMATS); TagFormatError if n/a."""
    if fmt not in FORMATS:
        raise TagFormatError(f"unknown tag format {fmt!r}; expected one of {', '.join(FORMATS)}")
    _check_args(byte_order, kind, card_bits)
    if fmt == "raw":
        return _raw(raw)
    return _numeric(_parse(raw, byte_order, kind), fmt, card_bits)


def all_formats(raw: str, *, byte_order: str = "big", kind: str = "auto",
                card_bits: int = CARD_BITS) -> dict[str, str | None]:
    """Every format of ``raw``; None where a format does not apply.

    Raises TagFormatError only for a bad ``byte_order``, ``kind`` or ``card_bits``.
    """
    _check_args(byte_order, kind, card_bits)
    out: dict[str, str | None] = dict.fromkeys(FORMATS)
    try:
        out["raw"] = _raw(raw)
    except TagFormatError:
        pass
    try:
        card = _parse(raw, byte_order, kind)
    except TagFormatError:
        return out
    for fmt in FORMATS[1:]:
        try:
            out[fmt] = _numeric(card, fmt, card_bits)
        except TagFormatError:
            pass
    return out


# ------------------------------------------------------- which format gives it


class Match(NamedTuple):
    """A (tag_format, byte_order) that turns a card into an expected number."""

    tag_format: str
    byte_order: str | None  # None: any (raw does not depend on it)
    value: str  # what the agent then records and sends (iFlow must hold exactly this)
    exact: bool  # False: equal only leniently (see match_expected)
    card_bits: int | None = None  # set when only this other card_bits split gives it


_SEPARATORS = re.compile(r"\s*[,/\-\s]\s*")


def _pair(text: str) -> tuple[int, int] | None:
    parts = _SEPARATORS.split(text.strip())
    if len(parts) != 2 or not all(p and set(p) <= _DEC for p in parts):
        return None
    return int(parts[0]), int(parts[1])


def _hex_digits(text: str) -> str | None:
    digits = re.sub(r"[\s:\-]", "", text).upper()
    return (digits.lstrip("0") or "0") if digits and set(digits) <= _HEXD else None


def _lenient(fmt: str, value: str, want: str) -> bool:
    if fmt in ("decimal10", "decimal"):
        return bool(want) and set(want) <= _DEC and int(want) == int(value)
    if fmt == "hex":
        return _hex_digits(want) is not None and _hex_digits(want) == _hex_digits(value)
    if fmt in ("wiegand26", "facility_card"):
        return _pair(want) is not None and _pair(want) == _pair(value)
    return want.casefold() == value.casefold()


def _other_split(table: dict[str, str | None], order: str, want: str, card_bits: int) -> list[Match]:
    """facility_card with another card_bits when the configured split does not give ``want``."""
    got, pair = _pair(table["facility_card"] or ""), _pair(want)
    if got is None or pair is None:
        return []
    number = got[0] << card_bits | got[1]
    for bits in range(1, 64):
        if (number >> bits, number & ((1 << bits) - 1)) == pair:
            value = f"{pair[0]},{pair[1]}"
            return [Match("facility_card", order, value, value == want, bits)]
    return []


def match_expected(raw: str, kind: str, expect: str, *, card_bits: int = CARD_BITS) -> list[Match]:
    """Every (tag_format, byte_order) that turns ``raw`` into ``expect``.

    Exact matches come first, then lenient ones (hex: case, ``:``/``-``/space
    separators and leading zeros ignored; decimal10/decimal: leading zeros
    ignored; wiegand26/facility_card: ``,`` ``-`` ``/`` or a space between the
    two numbers, leading zeros ignored; raw: case ignored), each in FORMATS
    order, big before little.  When no facility_card split with ``card_bits``
    gives it but another split does, that one is added with its ``card_bits``.
    Empty when nothing gives it.
    """
    want = expect.strip() if isinstance(expect, str) else ""
    tables = {order: all_formats(raw, byte_order=order, kind=kind, card_bits=card_bits) for order in BYTE_ORDERS}
    exact: list[Match] = []
    lenient: list[Match] = []
    for fmt in FORMATS:
        for order in BYTE_ORDERS[:1] if fmt == "raw" else BYTE_ORDERS:
            value = tables[order][fmt]
            if value is None or not want:
                continue
            match = Match(fmt, None if fmt == "raw" else order, value, value == want)
            if match.exact:
                exact.append(match)
            elif _lenient(fmt, value, want):
                lenient.append(match)
    found = exact + lenient
    if want and not any(m.tag_format == "facility_card" for m in found):
        for order in BYTE_ORDERS:
            found += _other_split(tables[order], order, want, card_bits)
    return found


def best_match(matches: list[Match], tag_format: str, byte_order: str) -> Match | None:
    """The match to recommend: the one the current config already gives, else the first."""
    for m in matches:
        if m.tag_format == tag_format and m.byte_order in (None, byte_order) and m.card_bits is None:
            return m
    return matches[0] if matches else None
