"""Tests for agent.reading.tagformat: EM4100 card-number formats."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.reading.tagformat import (
    FORMATS,
    Match,
    TagFormatError,
    all_formats,
    best_match,
    format_tag,
    kind_for_protocol,
    match_expected,
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
        # issue 16 added these two formats; the four above are unchanged
        "decimal": "64435106499",  # all 40 bits: 0x0F00A1B2C3
        "facility_card": "161,45763",  # 0xA1 = 161, 0xB2C3 = 45763 (card_bits 16)
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


# ------------------------------------------------------- MIFARE UIDs (PN532)

UID_CASES = {
    # 4 bytes A1 B2 C3 D4: big = 0xA1B2C3D4 = 2712847316; little = D4 C3 B2 A1 = 0xD4C3B2A1 = 3569595041
    "A1B2C3D4": (
        {"decimal10": "2712847316", "hex": "A1B2C3D4", "wiegand26": "178,50132",  # 0xB2 = 178, 0xC3D4 = 50132
         "decimal": "2712847316", "facility_card": "41394,50132"},  # 0xA1B2 = 41394
        {"decimal10": "3569595041", "hex": "D4C3B2A1", "wiegand26": "195,45729",  # 0xC3 = 195, 0xB2A1 = 45729
         "decimal": "3569595041", "facility_card": "54467,45729"},  # 0xD4C3 = 54467
    ),
    # 7 bytes (an NXP NTAG: first byte 04): the 32-bit forms do not apply
    "04A23B5A6C2F80": (
        {"decimal10": None, "hex": "04A23B5A6C2F80", "wiegand26": None,
         "decimal": "1304275710652288", "facility_card": None},  # 0x04A23B5A6C2F80
        {"decimal10": None, "hex": "802F6C5A3BA204", "wiegand26": None,
         "decimal": "36080939435794948", "facility_card": None},  # 0x802F6C5A3BA204
    ),
    # 10 bytes 01..0A
    "0102030405060708090A": (
        {"decimal10": None, "hex": "0102030405060708090A", "wiegand26": None,
         "decimal": "4759477275222530853130", "facility_card": None},
        {"decimal10": None, "hex": "0A090807060504030201", "wiegand26": None,
         "decimal": "47390263963055590408705", "facility_card": None},
    ),
}


@pytest.mark.parametrize("uid", list(UID_CASES))
def test_uid_every_format_both_byte_orders(uid):
    big, little = UID_CASES[uid]
    assert all_formats(uid, kind="uid") == {"raw": uid, **big}
    assert all_formats(uid, kind="uid", byte_order="little") == {"raw": uid, **little}
    assert all_formats(uid.lower(), kind="uid")["hex"] == big["hex"]
    # the decimal is the UID read as one number; hex its bytes
    assert int(big["decimal"]) == int(uid, 16) and int(little["decimal"]) == int.from_bytes(bytes.fromhex(uid), "little")


@pytest.mark.parametrize("raw", ["", "A", "ABC", "0102030405060708090A0B", "GG", "12-34", "26:1436586"])
def test_uid_that_is_not_one(raw):
    with pytest.raises(TagFormatError):
        format_tag(raw, "hex", kind="uid")
    assert all_formats(raw, kind="uid")["decimal"] is None


def test_kind_for_protocol_new_readers():
    assert kind_for_protocol("pn532") == "uid"
    assert kind_for_protocol("pn532", "serial") == "uid"
    assert kind_for_protocol("line", "wiegand") == "wiegand"  # a wiegand table keeps the default protocol
    assert kind_for_protocol("pn532", "hid") == "auto"


# ------------------------------------------------------- Wiegand frames


def w26(facility: int, card: int) -> str:
    """The raw a Wiegand reader emits for a W26 card, built by hand: even
    parity over the first 12 data bits, odd over the last 12."""
    bits = f"{facility:08b}{card:016b}"
    even = bits[:12].count("1") % 2
    odd = 1 - bits[12:].count("1") % 2
    return f"26:{int(f'{even}{bits}{odd}', 2):07X}"


def w34(facility: int, card: int) -> str:
    bits = f"{facility:016b}{card:016b}"
    even = bits[:16].count("1") % 2
    odd = 1 - bits[16:].count("1") % 2
    return f"34:{int(f'{even}{bits}{odd}', 2):09X}"


def test_wiegand_raw_helpers_match_the_documented_example():
    # common.md: facility 161 card 45763 = data 0xA1B2C3, both parity bits 0 -> "26:1436586"
    assert w26(161, 45763) == "26:1436586"
    # facility 1 card 1: data 0x010001; the first 12 data bits hold one 1 -> even parity 1; the last 12
    # hold one 1 -> odd parity 0
    assert w26(1, 1) == f"26:{(1 << 25 | 0x010001 << 1):07X}" == "26:2020002"
    # facility 4660 card 22136 (0x1234, 0x5678): first 16 bits have 5 ones -> even parity 1;
    # last 16 have 8 ones -> odd parity 1
    assert w34(4660, 22136) == f"34:{(1 << 33 | 0x12345678 << 1 | 1):09X}" == "34:22468ACF1"


def test_wiegand26_every_format_both_byte_orders():
    raw = w26(161, 45763)
    assert all_formats(raw, kind="wiegand") == {
        "raw": "26:1436586",
        "decimal10": "0010597059",  # data 0xA1B2C3 without parity
        "hex": "00A1B2C3",
        "wiegand26": "161,45763",
        "decimal": "21194118",  # the whole frame 0x1436586, parity included
        "facility_card": "161,45763",
    }
    # little: data bytes reversed C3 B2 A1 (0xC3B2A1 = 12825249), parity bits kept
    assert all_formats(raw, kind="wiegand", byte_order="little") == {
        "raw": "26:1436586",
        "decimal10": "0012825249",
        "hex": "00C3B2A1",
        "wiegand26": "195,45729",
        "decimal": "25650498",  # 0xC3B2A1 << 1
        "facility_card": "195,45729",
    }
    assert parse_id(raw, kind="wiegand") == 0xA1B2C3


def test_wiegand34_every_format_and_card_bits():
    raw = w34(4660, 22136)
    f = all_formats(raw, kind="wiegand")
    assert f == {
        "raw": "34:22468ACF1",
        "decimal10": "0305419896",  # 0x12345678
        "hex": "12345678",
        "wiegand26": "052,22136",  # the low 8 bits of the facility: 0x34 = 52
        "decimal": "9200774385",  # 0x22468ACF1
        "facility_card": "4660,22136",
    }
    assert format_tag(raw, "facility_card", kind="wiegand", card_bits=20) == "291,284280"  # 0x123, 0x45678
    assert format_tag(raw, "hex", kind="wiegand", byte_order="little") == "78563412"
    # parity bits of a 34-bit frame stay in place when the data bytes are reversed
    assert format_tag(raw, "decimal", kind="wiegand", byte_order="little") == str(1 << 33 | 0x78563412 << 1 | 1)


def test_wiegand_other_lengths_use_every_bit():
    # a 37-bit frame (HID H10304 style): no parity stripped here; reported with its bit count
    raw = "37:1ABCDEF012"
    f = all_formats(raw, kind="wiegand")
    assert f["hex"] == "1ABCDEF012" and f["decimal"] == str(0x1ABCDEF012)
    assert f["decimal10"] is None and f["wiegand26"] is None  # more than 32 bits
    assert f["facility_card"] == f"{0x1ABCDEF012 >> 16},{0xF012}"
    # an 8-bit keypad burst (when keypad = true): all 8 bits
    assert all_formats("8:A5", kind="wiegand")["decimal10"] == "0000000165"


@pytest.mark.parametrize("raw", ["", "26", "26:", ":1436586", "26:14365860", "26:FFFFFFF", "0:0", "129:1", "x:1",
                                 "26:14365G6"])
def test_wiegand_raw_that_is_not_one(raw):
    with pytest.raises(TagFormatError):
        format_tag(raw, "decimal", kind="wiegand")
    assert all_formats(raw, kind="wiegand")["hex"] is None


def test_card_bits_is_checked():
    for bad in (0, 64, True, 16.0):
        with pytest.raises(TagFormatError, match="card_bits"):
            format_tag("26:1436586", "facility_card", kind="wiegand", card_bits=bad)
    assert format_tag("0F00A1B2C3", "facility_card", kind="hex", card_bits=8) == "41394,195"  # 0xA1B2, 0xC3


def test_em_formats_unchanged_by_card_bits():
    for bits in (1, 8, 24, 63):
        f = all_formats("0F00A1B2C3", kind="hex", card_bits=bits)
        assert (f["decimal10"], f["hex"], f["wiegand26"], f["decimal"]) == (
            "0010597059", "00A1B2C3", "161,45763", "64435106499")


# ------------------------------------------------------- --expect


def test_match_expected_exact_lenient_and_none():
    raw = "0F00A1B2C3"
    assert match_expected(raw, "hex", "0010597059") == [Match("decimal10", "big", "0010597059", True)]
    assert match_expected(raw, "hex", " 10597059 ") == [Match("decimal10", "big", "0010597059", False)]
    assert match_expected(raw, "hex", "a1b2c3") == [Match("hex", "big", "00A1B2C3", False)]
    # the 8-digit form and the facility/card split give the same pair: both listed, exact first
    assert match_expected(raw, "hex", "161,45763") == [Match("wiegand26", "big", "161,45763", True),
                                                      Match("facility_card", "big", "161,45763", True)]
    assert [m.exact for m in match_expected(raw, "hex", "161/45763")] == [False, False]
    assert [m.tag_format for m in match_expected(raw, "hex", "161 - 45763")] == ["wiegand26", "facility_card"]
    assert match_expected(raw, "hex", "2996895759") == [Match("decimal10", "little", "2996895759", True)]
    assert match_expected(raw, "hex", "0f00a1b2c3") == [Match("raw", None, "0F00A1B2C3", False)]
    assert match_expected(raw, "hex", "12345") == []
    assert match_expected(raw, "hex", "") == []


def test_match_expected_another_card_bits_split():
    # W26 data 0xA1B2C3 split with card_bits 12: facility 0xA1B = 2587, card 0x2C3 = 707
    assert match_expected(w26(161, 45763), "wiegand", "2587,707") == [
        Match("facility_card", "big", "2587,707", True, card_bits=12)]
    # a split the configured card_bits already gives is not offered again with another
    found = match_expected(w26(161, 45763), "wiegand", "2587,707", card_bits=12)
    assert found == [Match("facility_card", "big", "2587,707", True)]


def test_match_expected_uid_in_both_orders_and_best_match():
    found = match_expected("A1B2C3D4", "uid", "2712847316")
    assert found == [Match("decimal10", "big", "2712847316", True), Match("decimal", "big", "2712847316", True)]
    assert best_match(found, "hex", "big") == found[0]  # nothing configured matches: the first
    assert best_match(found, "decimal", "big") == found[1]  # the current config when it matches
    assert best_match(found, "decimal", "little") == found[0]
    assert best_match([], "hex", "big") is None
    assert best_match(match_expected("X1", "auto", "x1"), "raw", "little").tag_format == "raw"


# ------------------------------------------------------- properties (new kinds)


@SETTINGS
@given(st.binary(min_size=1, max_size=10))
def test_property_uid_decimal_and_hex_are_its_bytes(uid):
    f = all_formats(uid.hex(), kind="uid")
    assert f["hex"] == uid.hex().upper()
    assert int(f["decimal"]) == int.from_bytes(uid, "big")
    assert (f["decimal10"] is None) == (len(uid) > 4)
    if len(uid) <= 4:
        assert int(f["decimal10"]) == int.from_bytes(uid, "big")
    little = all_formats(uid.hex(), kind="uid", byte_order="little")
    rev = all_formats(uid[::-1].hex(), kind="uid")
    assert {k: v for k, v in little.items() if k != "raw"} == {k: v for k, v in rev.items() if k != "raw"}


@SETTINGS
@given(st.sampled_from([26, 34]), st.integers(0, (1 << 32) - 1), st.integers(1, 63), st.sampled_from(["big", "little"]))
def test_property_wiegand_facility_card_recombines(n, data, bits, order):
    data &= (1 << (n - 2)) - 1
    raw = w26(data >> 16, data & 0xFFFF) if n == 26 else w34(data >> 16, data & 0xFFFF)
    expected = data if order == "big" else int.from_bytes(data.to_bytes((n - 2) // 8, "big"), "little")
    f = all_formats(raw, kind="wiegand", byte_order=order, card_bits=bits)
    fac, card = (int(x) for x in f["facility_card"].split(","))
    assert card < 1 << bits and fac << bits | card == expected
    assert int(f["decimal10"]) == int(f["hex"], 16) == expected
    frame = int(f["decimal"])
    assert frame >> 1 & ((1 << (n - 2)) - 1) == expected and frame >> n == 0
    if order == "big":
        assert f"{n}:{frame:0{(n + 3) // 4}X}" == raw


@SETTINGS
@given(st.one_of(st.binary(min_size=1, max_size=10).map(lambda b: ("uid", b.hex().upper())),
                 st.integers(0, (1 << 40) - 1).map(lambda v: ("hex", f"{v:010X}")),
                 st.integers(0, (1 << 24) - 1).map(lambda v: ("wiegand", w26(v >> 16, v & 0xFFFF)))),
       st.sampled_from(FORMATS[1:]), st.sampled_from(["big", "little"]))
def test_property_every_format_is_found_by_match_expected(card, fmt, order):
    kind, raw = card
    value = all_formats(raw, kind=kind, byte_order=order)[fmt]
    if value is None:
        return
    found = match_expected(raw, kind, value)
    assert Match(fmt, order, value, True) in found
    assert all(m.exact for m in found[: found.index(Match(fmt, order, value, True))])
    assert best_match(found, fmt, order) == Match(fmt, order, value, True)
