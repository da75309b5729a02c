"""What ``agent probe`` prints: a reader's name, one card's table, the --expect verdict (pure text).

Apart from :mod:`agent.commands.probe` (the reading) so each can be read, and
tested, on its own: everything here takes values and returns lines.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from agent.reading.tagformat import BYTE_ORDERS, FORMATS, Match, best_match

if TYPE_CHECKING:
    from agent.config import ReaderConfig

__all__ = ["describe", "card_block", "expect_block", "noise_lines", "SWAPPED"]

SWAPPED = "D0 and D1 look swapped: set swap_lines = {} in [reader] or swap the wires"
_FMT_W = 15  # "facility_card" and two spaces


def _line_name(pin: int | str | None) -> str:
    return f"GPIO{pin}" if isinstance(pin, int) else str(pin)


def describe(rc: ReaderConfig) -> str:
    """The reader as probe names it: 'serial /dev/ttyAMA0, pn532', 'wiegand D0 GPIO17 D1 GPIO27'."""
    if rc.type == "serial":
        text = f"serial {rc.port}, {rc.protocol}"
        if rc.protocol == "pn532":  # its default differs from every other serial reader's
            text += f" at {rc.baudrate} baud"
    elif rc.type == "wiegand":
        text = f"wiegand D0 {_line_name(rc.d0_pin)} D1 {_line_name(rc.d1_pin)}"
        if rc.gpiochip:
            text += f", chip {rc.gpiochip}"
        if rc.swap_lines:
            text += ", swap_lines"
    else:
        text = f"hid {rc.path or (repr(rc.device_name) if rc.device_name else rc.usb_id)}"
    if rc.byte_order != "big":
        text += f", byte_order {rc.byte_order}"
    return text


def _about(raw: str, kind: str, big: dict[str, str | None], card_bits: int) -> list[str]:
    """What the raw data is, for the kinds where it is not obvious."""
    if kind == "wiegand" and ":" in raw and big.get("facility_card"):
        bits = raw.strip().split(":")[0]
        fac, card = big["facility_card"].split(",")
        parity = "parity bits first and last" if bits in ("26", "34") else "no parity bits known for this length"
        return [f"  Wiegand frame of {bits} bits ({parity}): facility {fac}, card {card} "
                f"(card_bits {card_bits}); decimal = with parity, decimal10 = without"]
    if kind == "uid" and big.get("hex"):
        n = len(big["hex"]) // 2
        return [f"  UID of {n} bytes" + ("" if n <= 4 else " (the 32-bit forms need at most 4)")]
    return []


def card_block(name: str, description: str, raw: str, tables: dict[str, dict[str, str | None]],
               tag_format: str, byte_order: str, *, kind: str = "auto", card_bits: int = 16) -> str:
    """The lines printed for one card: every format (rows) in both byte orders
    (columns), the configured cell starred."""
    lines = [f'card read on "{name}" ({description}):']
    big = tables["big"]
    lines += _about(raw, kind, big, card_bits)
    width = max([len(v) for k, v in big.items() if v and k != "raw"] + [3]) + 4
    lines.append(f"  {'format':<{_FMT_W}}{'big':<{width}}little")
    for fmt in FORMATS:
        if fmt == "raw":
            shown = raw if raw.isprintable() else repr(raw)
            mark = " *" if tag_format == "raw" else ""
            lines.append(f"  {'raw':<{_FMT_W}}{shown}{mark}   (as sent, either byte order)")
            continue
        cells = []
        for order in BYTE_ORDERS:
            cell = tables[order].get(fmt) or "-"
            if (fmt, order) == (tag_format, byte_order):
                cell += " *"
            cells.append(cell)
        lines.append(f"  {fmt:<{_FMT_W}}{cells[0]:<{width}}{cells[1]}".rstrip())
    note = f'  * = what the agent records (tag_format "{tag_format}", byte_order "{byte_order}")'
    if tables[byte_order].get(tag_format) is None:
        note += ": DOES NOT APPLY to this card"
    lines.append(note)
    return "\n".join(lines)


def _config_lines(m: Match) -> list[str]:
    lines = [f'    tag_format = "{m.tag_format}"']
    if m.byte_order is not None:
        lines.append(f'    byte_order = "{m.byte_order}"')
    if m.card_bits is not None:
        lines.append(f"    card_bits = {m.card_bits}")
    return lines


def _causes(kind: str, raw: str) -> list[str]:
    causes = ["another card: the number belongs to a different badge than the one held"]
    if kind == "wiegand":
        bits = raw.strip().split(":")[0]
        causes.append(f"a Wiegand reader configured with a different facility/card split (card_bits): the "
                      f"facility_card rows split the data bits at card_bits; this frame has {bits} bits")
    elif kind == "uid":
        causes.append("a number printed from the card's memory rather than its UID (probe reads the UID only); "
                      "a UID over 4 bytes has no 10-digit or facility/card form")
    else:
        causes.append("the reader's protocol (reader.protocol) or a reader programmed to send another "
                      "number; the byte order is covered by the two columns above")
    return causes


def expect_block(name: str, raw: str, kind: str, expect: str, matches: list[Match],
                 tag_format: str, byte_order: str) -> str:
    """The --expect verdict for one card, with the config lines to paste."""
    if not matches:
        lines = [f"  --expect {expect}: NO format of this card gives it, in either byte order. Likely:"]
        return "\n".join(lines + [f"    - {c}" for c in _causes(kind, raw)])
    lines = [f"  --expect {expect} is given by:"]
    width = max(len(m.value) for m in matches) + 2
    for m in matches:
        how = "exact" if m.exact else f"lenient: iFlow must then hold it as {m.value}"
        if m.card_bits is not None:
            how += f"; with card_bits = {m.card_bits}"
        lines.append(f"    {m.tag_format:<{_FMT_W}}{m.byte_order or 'either':<8}{m.value:<{width}}{how}")
    best = best_match(matches, tag_format, byte_order)
    assert best is not None
    current = best.tag_format == tag_format and best.byte_order in (None, byte_order) and best.card_bits is None
    lines.append(f'  {"the current config gives it" if current else "to record it"}, in [reader] "{name}":')
    return "\n".join(lines + _config_lines(best))


def noise_lines(name: str, counts: Counter, last: str | None, kind: str, *, swapped: bool = False) -> list[str]:
    """What probe says about input that formed no tag (``kind``: the reader's tag kind); a Wiegand
    "swapped" drop gets its own line, saying the opposite of the reader's ``swap_lines`` (``swapped``)."""
    lines = []
    if counts.get("swapped"):
        lines.append(f'  (reader "{name}": {SWAPPED.format("false" if swapped else "true")})')
        counts = Counter({k: v for k, v in counts.items() if k != "swapped"})
        if not counts:
            return lines
    what = ", ".join(f"{k}={v}" for k, v in sorted(counts.items()))
    text = f'  (reader "{name}": input ignored: {what}'
    if last:
        text += f"; last: {last}"
    if kind == "wiegand":
        hint = ("check the wiring (D0/D1 through a 5 V to 3.3 V level shifter, a common ground) and "
                "reader.frame_gap_seconds")
    elif kind == "uid":
        hint = "check the PN532's wiring, its HSU (UART) switch setting and reader.baudrate"
    else:
        hint = "check reader.protocol and baudrate"
    return lines + [f"{text}; {hint})"]
