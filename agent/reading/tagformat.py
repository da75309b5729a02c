"""Card-number formats for EM4100-style 125 kHz cards (pure logic).

An EM4100 card carries 40 bits: a version/customer byte followed by a
4-byte ID.  Cards are usually printed with numbers derived from the 4-byte
ID only, so different readers report the same card differently.

How ``raw`` (what the reader sent) is interpreted
--------------------------------------------------
``raw`` is stripped of surrounding whitespace, then read according to
``kind``:

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
  reader sends hex (RDM6300) must pass ``kind="hex"``; see
  :func:`kind_for_protocol`.

``byte_order="little"`` means the reader sent the ID bytes reversed: the bytes
described above are reversed before any number is derived.

Formats
-------
* ``raw``: the input as read (stripped); it applies to any printable input.
* ``decimal10``: the low 32 bits (the 4-byte ID) as a 10-digit zero-padded
  decimal: hex ``0F00A1B2C3`` -> ``0010597059``.
* ``hex``: the 4 ID bytes (bits 31..0, the version byte excluded) as 8
  upper-case hex digits: ``0F00A1B2C3`` -> ``00A1B2C3``.  This is the same for
  every reader type; the version byte survives only in ``raw``.
* ``wiegand26``: the "8-digit" form: facility = third of the four ID bytes
  (bits 23..16) as 3 digits, card number = low 16 bits as 5 digits, joined by
  a comma: ``00A1B2C3`` -> ``161,45763``.

A format that does not apply (non-numeric input, more than 10 hex digits,
decimal >= 2**40) raises :class:`TagFormatError` from :func:`format_tag` and
gives ``None`` in :func:`all_formats`.
"""

from __future__ import annotations

from agent.errors import TagFormatError

__all__ = [
    "FORMATS",
    "KINDS",
    "BYTE_ORDERS",
    "TagFormatError",
    "format_tag",
    "all_formats",
    "parse_id",
    "kind_for_protocol",
]

FORMATS = ("raw", "decimal10", "hex", "wiegand26")
KINDS = ("auto", "hex", "decimal")
BYTE_ORDERS = ("big", "little")

_DEC = frozenset("0123456789")
_HEXD = frozenset("0123456789abcdefABCDEF")
_MAX_HEX = 10
_MAX_DEC = 13
_LIMIT = 1 << 40


def kind_for_protocol(protocol: str, reader_type: str = "serial") -> str:
    """The ``kind`` to use for tags from a reader protocol: rdm6300 -> "hex".

    ``protocol`` only describes serial readers; any other ``reader_type``
    (hid) reads "auto" whatever its table says.
    """
    return "hex" if reader_type == "serial" and protocol == "rdm6300" else "auto"


def _check_args(byte_order: str, kind: str) -> None:
    if byte_order not in BYTE_ORDERS:
        raise TagFormatError(f"byte_order must be 'big' or 'little', got {byte_order!r}")
    if kind not in KINDS:
        raise TagFormatError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")


def parse_id(raw: str, *, byte_order: str = "big", kind: str = "auto") -> int:
    """The card value (up to 40 bits) that ``raw`` denotes; see module docstring."""
    _check_args(byte_order, kind)
    text = raw.strip() if isinstance(raw, str) else ""
    if not text:
        raise TagFormatError("empty tag")
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
    else:
        if not chars <= _HEXD or len(text) > _MAX_HEX:
            raise TagFormatError("tag is not a hex number of at most 10 digits")
        value = int(text, 16)
        width = (len(text) + 1) // 2
    if byte_order == "little":
        value = int.from_bytes(value.to_bytes(width, "big"), "little")
    return value


def format_tag(raw: str, fmt: str, *, byte_order: str = "big", kind: str = "auto") -> str:
    """``raw`` shown in format ``fmt`` (one of FORMATS); TagFormatError if n/a."""
    if fmt not in FORMATS:
        raise TagFormatError(f"unknown tag format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if fmt == "raw":
        _check_args(byte_order, kind)
        text = raw.strip() if isinstance(raw, str) else ""
        if not text or not text.isprintable():
            raise TagFormatError("empty or non-printable tag")
        return text
    low = parse_id(raw, byte_order=byte_order, kind=kind) & 0xFFFFFFFF
    if fmt == "decimal10":
        return f"{low:010d}"
    if fmt == "hex":
        return f"{low:08X}"
    return f"{(low >> 16) & 0xFF:03d},{low & 0xFFFF:05d}"  # wiegand26


def all_formats(
    raw: str, *, byte_order: str = "big", kind: str = "auto"
) -> dict[str, str | None]:
    """Every format of ``raw``; None where a format does not apply.

    Raises TagFormatError only for a bad ``byte_order`` or ``kind``.
    """
    _check_args(byte_order, kind)
    out: dict[str, str | None] = {}
    for fmt in FORMATS:
        try:
            out[fmt] = format_tag(raw, fmt, byte_order=byte_order, kind=kind)
        except TagFormatError:
            out[fmt] = None
    return out
