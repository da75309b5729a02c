"""Tests for agent.reading.tagformat: EM4100 card-number formats."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.reading.tagformat import (
    FORMATS,
    TagFormatError,
    all_formats,
    format_tag,
    kind_for_protocol,
    parse_id,
)

SETTINGS = settings(max_examples=200, deadline=None)
M32 = 0xFFFFFFFF


# ------------------------------------------------------- published examples


def test_brief_example_rdm6300_frame():
    # libraries.md section 4: frame 0F00A1B2C3 -> 0010597059, 161,45763
    assert all_formats("0F00A1B2C3", kind="hex") == {
        "raw": "0F00A1B2C3",
        "decimal10": "0010597059",
        "hex": "00A1B2C3",
        "wiegand26": "161,45763",
    }


def test_sintronictech_10_digit_to_8_digit():
    # http://sintronictech.com/En/download/The-principle-and-method-of-10-digit-EM-card-to-8-digit-card-number.html
    # "0013961168 213 02000 ... converted to hexadecimal is 00 D5 07 D0"
    f = all_formats("0013961168")
    assert f["decimal10"] == "0013961168"
    assert f["hex"] == "00D507D0"
    assert f["wiegand26"] == "213,02000"
    assert format_tag("00D507D0", "decimal10", kind="hex") == "0013961168"


def test_zgznk_usb_reader_formats():
    # http://www.zgznk.com/product/product49_en.html (09A-EMID-6H10D USB reader):
    # "01026F6C3A" -> 8H->10D "0040856634"; "2H + 4H" -> "111,27706";
    # 10H->12D "004,335,823,930"
    assert format_tag("01026F6C3A", "decimal10", kind="hex") == "0040856634"
    assert format_tag("01026F6C3A", "wiegand26", kind="hex") == "111,27706"
    assert parse_id("004335823930") == 0x01026F6C3A
    assert format_tag("004335823930", "decimal10") == "0040856634"


def test_nitgen_card_formats_and_reversed_bytes():
    # https://manualshive.com/en/manual/nitgen/encard-i/1696386?page=56
    # RF card 08 01 16 1D D6: "Hexadecimal 0801161DD6", "10 Digit Decimal
    # 0018226646", "(3+5) digits 02207638 [022(16h)+07638(1DD6h)]"
    assert format_tag("0801161DD6", "decimal10", kind="hex") == "0018226646"
    assert format_tag("0801161DD6", "wiegand26", kind="hex") == "022,07638"
    # card 52 9D 06 E3: "10 Digit Decimal 1386022627"; with "changing the
    # order of byte" E3069D52 -> "3808861522"
    assert format_tag("529D06E3", "decimal10", kind="hex") == "1386022627"
    assert format_tag("529D06E3", "decimal10", kind="hex", byte_order="little") == "3808861522"
    assert format_tag("529D06E3", "hex", byte_order="little") == "E3069D52"


def test_soyal_wg_and_aba10():
    # https://www.soyal.com/faq.php?act=view&id=539: (12 * 65536) + 62363 =
    # 848795 -> ABA10 "0000848795" <-> WG "00012:62363"
    assert format_tag("0000848795", "wiegand26") == "012,62363"
    assert format_tag("0000848795", "hex") == f"{848795:08X}"


def test_suprema_full_40_bit_decimal():
    # https://support.supremainc.com/en/support/solutions/articles/24000040584
    # full serial 322126887957 = customer ID 75 + data bits 4340757
    assert parse_id("322126887957") == (75 << 32) | 4340757
    assert format_tag("322126887957", "decimal10") == "0004340757"
    assert format_tag(f"{(75 << 32) | 4340757:010X}", "decimal10", kind="hex") == "0004340757"


# ------------------------------------------------------- interpretation


def test_auto_all_digits_is_decimal_hex_letters_is_hex():
    assert parse_id("0010597059") == 10597059
    assert parse_id("0f00a1b2c3") == 0x0F00A1B2C3
    # the ambiguity the caller resolves with kind="hex"
    assert parse_id("0100123456") == 100123456
    assert parse_id("0100123456", kind="hex") == 0x0100123456
    assert kind_for_protocol("rdm6300") == "hex"
    assert kind_for_protocol("line") == "auto"
    assert kind_for_protocol("rdm6300", "serial") == "hex"
    assert kind_for_protocol("rdm6300", "hid") == "auto"  # protocol describes serial readers only


def test_raw_is_stripped_input():
    assert format_tag("  0f00a1b2c3\n", "raw") == "0f00a1b2c3"
    assert format_tag(" Z9-1 ", "raw") == "Z9-1"


def test_little_endian_reverses_all_bytes_sent():
    assert format_tag("C3B2A1000F", "hex", byte_order="little") == "00A1B2C3"
    assert parse_id("C3B2A1000F", byte_order="little") == 0x0F00A1B2C3
    # a decimal that fits 32 bits has 4 bytes
    assert parse_id(str(0xC3B2A100), byte_order="little") == 0x00A1B2C3
    # odd hex length gets a leading zero: "ABC" = 0A BC -> BC 0A
    assert parse_id("ABC", byte_order="little") == 0xBC0A


@pytest.mark.parametrize(
    "raw, kind",
    [
        ("", "auto"),
        ("   ", "auto"),
        ("12-34", "auto"),
        ("0F00A1B2C3D", "hex"),  # 11 hex digits
        ("01234567890123", "decimal"),  # 14 digits
        (str(1 << 40), "decimal"),  # does not fit 40 bits
        ("0F", "decimal"),
        ("XYZ", "hex"),
    ],
)
def test_not_applicable_raises_and_all_formats_gives_none(raw, kind):
    with pytest.raises(TagFormatError):
        format_tag(raw, "decimal10", kind=kind)
    f = all_formats(raw, kind=kind)
    assert f["decimal10"] is f["hex"] is f["wiegand26"] is None


def test_bad_arguments():
    with pytest.raises(TagFormatError, match="unknown tag format"):
        format_tag("1", "octal")
    with pytest.raises(TagFormatError, match="byte_order"):
        format_tag("1", "hex", byte_order="middle")
    with pytest.raises(TagFormatError, match="byte_order"):
        all_formats("1", byte_order="LITTLE")
    with pytest.raises(TagFormatError, match="kind"):
        format_tag("1", "raw", kind="octal")
    assert issubclass(TagFormatError, ValueError)


# ------------------------------------------------------- properties


@SETTINGS
@given(st.integers(0, (1 << 40) - 1), st.booleans())
def test_property_hex_to_every_format_and_back(v, lower):
    raw = f"{v:010x}" if lower else f"{v:010X}"
    f = all_formats(raw, kind="hex")
    low = v & M32
    assert f["raw"] == raw
    assert f["decimal10"] == f"{low:010d}"
    assert f["hex"] == f"{low:08X}"
    fac, card = f["wiegand26"].split(",")
    assert len(fac) == 3 and len(card) == 5
    assert int(fac) * 65536 + int(card) == v & 0xFFFFFF
    # the printed decimal10 read back by a keyboard reader gives the same card
    back = all_formats(f["decimal10"])
    assert back["hex"] == f["hex"] and back["wiegand26"] == f["wiegand26"]
    assert format_tag(f["hex"], "decimal10", kind="hex") == f["decimal10"]


@SETTINGS
@given(st.binary(min_size=1, max_size=5))
def test_property_little_endian_is_reversed_big(data):
    rev = data[::-1].hex()
    for fmt in ("decimal10", "hex", "wiegand26"):
        assert format_tag(rev, fmt, kind="hex", byte_order="little") == format_tag(
            data.hex(), fmt, kind="hex"
        )


@SETTINGS
@given(st.text(max_size=20), st.sampled_from(["auto", "hex", "decimal"]), st.sampled_from(["big", "little"]))
def test_property_all_formats_never_raises_and_is_well_formed(raw, kind, order):
    f = all_formats(raw, kind=kind, byte_order=order)
    assert set(f) == set(FORMATS)
    assert f["decimal10"] is None or re.fullmatch(r"\d{10}", f["decimal10"])
    assert f["hex"] is None or re.fullmatch(r"[0-9A-F]{8}", f["hex"])
    assert f["wiegand26"] is None or re.fullmatch(r"\d{3},\d{5}", f["wiegand26"])
    assert f["raw"] is None or f["raw"] == raw.strip()
    # numeric formats apply together or not at all
    assert (f["decimal10"] is None) == (f["hex"] is None) == (f["wiegand26"] is None)
