"""Tests for agent.reading.frames: incremental decoders for serial RFID readers."""

from __future__ import annotations

import re

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from agent.reading.frames import (
    LineDecoder,
    Rdm6300Decoder,
    RegexDecoder,
    make_decoder,
)

SETTINGS = settings(max_examples=200, deadline=None)


def rdm_frame(data5: bytes, *, lower: bool = False, bad_checksum: bool = False) -> bytes:
    check = 0
    for b in data5:
        check ^= b
    if bad_checksum:
        check ^= 0x01
    body = (data5.hex() + f"{check:02x}")
    body = body if lower else body.upper()
    return b"\x02" + body.encode() + b"\x03"


EXAMPLE = b"\x020F00A1B2C3DF\x03"  # libraries.md section 4


def feed_all(dec, chunks) -> list[str]:
    out: list[str] = []
    for c in chunks:
        out += dec.feed(c)
    return out


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    cuts = sorted({c % (len(data) + 1) for c in cuts})
    pieces, prev = [], 0
    for c in cuts + [len(data)]:
        pieces.append(data[prev:c])
        prev = c
    return pieces


# ---------------------------------------------------------------- RDM6300


def test_rdm6300_example_frame_and_helper_agree():
    assert rdm_frame(bytes.fromhex("0F00A1B2C3")) == EXAMPLE
    d = Rdm6300Decoder()
    assert d.feed(EXAMPLE) == ["0F00A1B2C3"]
    assert not d.dropped


@pytest.mark.parametrize("cut", range(1, len(EXAMPLE)))
def test_rdm6300_frame_split_anywhere(cut):
    d = Rdm6300Decoder()
    assert d.feed(EXAMPLE[:cut]) == []
    assert d.feed(EXAMPLE[cut:]) == ["0F00A1B2C3"]


def test_rdm6300_byte_by_byte_and_two_frames_in_one_write():
    d = Rdm6300Decoder()
    other = rdm_frame(bytes.fromhex("1234567890"))
    assert feed_all(d, [bytes([b]) for b in EXAMPLE]) == ["0F00A1B2C3"]
    assert d.feed(EXAMPLE + other) == ["0F00A1B2C3", "1234567890"]


def test_rdm6300_lowercase_hex_is_uppercased():
    d = Rdm6300Decoder()
    assert d.feed(rdm_frame(bytes.fromhex("0a0b0c0d0e"), lower=True)) == ["0A0B0C0D0E"]


def test_rdm6300_bad_checksum_dropped_and_counted():
    d = Rdm6300Decoder()
    bad = rdm_frame(bytes.fromhex("0F00A1B2C3"), bad_checksum=True)
    assert d.feed(bad + EXAMPLE) == ["0F00A1B2C3"]
    assert d.dropped["bad_checksum"] == 1
    assert d.last_drop is not None and "0F00A1B2C3" not in d.last_drop


def test_rdm6300_noise_and_stray_stx_etx_between_frames():
    d = Rdm6300Decoder()
    noise = b"\x00\xff\x03\x02\x02zz\x0312\x02ABCDEF\r\n\x00"
    out = d.feed(noise + EXAMPLE + b"\x03\x03" + noise[:5] + EXAMPLE)
    assert out == ["0F00A1B2C3", "0F00A1B2C3"]
    assert d.dropped["noise"] >= 1
    assert sum(d.dropped.values()) >= 3


def test_rdm6300_truncated_frame_then_valid_frame():
    d = Rdm6300Decoder()
    assert d.feed(EXAMPLE[:7]) == []
    assert d.feed(EXAMPLE) == ["0F00A1B2C3"]
    assert d.dropped["partial"] == 1
    # twelve hex then STX where ETX belongs
    assert d.feed(EXAMPLE[:13] + EXAMPLE) == ["0F00A1B2C3"]
    assert sum(d.dropped.values()) == 2


def test_rdm6300_buffer_is_bounded():
    d = Rdm6300Decoder()
    d.feed(b"\x02" + b"A" * 12)  # waiting for ETX
    for _ in range(50):
        d.feed(bytes(range(256)) * 40)
        assert len(d._buf) < Rdm6300Decoder.FRAME_LEN
    assert d.feed(EXAMPLE) == ["0F00A1B2C3"]


def test_rdm6300_reset_forgets_partial_frame():
    d = Rdm6300Decoder()
    d.feed(EXAMPLE[:10])
    d.reset()
    assert d.feed(EXAMPLE[10:]) == []


def _segment():
    valid = st.binary(min_size=5, max_size=5).map(lambda b: ("tag", b))
    noise = st.binary(max_size=40).map(lambda b: ("noise", b))
    bad = st.binary(min_size=5, max_size=5).map(lambda b: ("bad", b))
    return st.one_of(valid, noise, bad)


@SETTINGS
@given(st.lists(_segment(), max_size=12), st.lists(st.integers(0, 10_000), max_size=8))
def test_rdm6300_property_exactly_the_valid_frames(segments, cuts):
    stream, expected = b"", []
    for kind, b in segments:
        if kind == "tag":
            stream += rdm_frame(b, lower=b[0] % 2 == 0)
            expected.append(b.hex().upper())
        elif kind == "bad":
            stream += rdm_frame(b, bad_checksum=True)
        else:
            # noise alone can never complete a frame that spans into a
            # following valid frame (its STX is not hex), so this is exact
            assume(Rdm6300Decoder().feed(b) == [])
            stream += b
    d = Rdm6300Decoder()
    assert feed_all(d, split_at(stream, cuts)) == expected
    assert d.dropped["bad_checksum"] == sum(1 for k, _ in segments if k == "bad")


@SETTINGS
@given(st.lists(st.binary(max_size=64), max_size=20))
def test_rdm6300_fuzz_only_checksummed_tags(chunks):
    d = Rdm6300Decoder()
    out = feed_all(d, chunks)
    stream = b"".join(chunks)
    for tag in out:
        assert re.fullmatch(r"[0-9A-F]{10}", tag)
        data = bytes.fromhex(tag)
        check = 0
        for b in data:
            check ^= b
        assert f"{check:02X}".encode() in stream.upper()
    assert len(d._buf) < 14


# ---------------------------------------------------------------- line


@pytest.mark.parametrize("term", [b"\r", b"\n", b"\r\n"])
def test_line_terminators(term):
    d = LineDecoder()
    assert d.feed(b"0010597059" + term + b"  ABC123 " + term) == ["0010597059", "ABC123"]
    assert not d.dropped


def test_line_split_across_feeds_and_blank_lines_ignored():
    d = LineDecoder()
    assert d.feed(b"\r\n\n  \r0012") == []
    assert d.feed(b"34\r") == ["001234"]
    assert d.feed(b"\n") == []
    assert not d.dropped


def test_line_over_long_is_bounded_and_dropped_until_terminator():
    d = LineDecoder(max_len=10)
    assert d.feed(b"1" * 11 + b"\n") == []
    assert d.dropped["too_long"] == 1
    for _ in range(100):  # a megabyte without a terminator
        d.feed(b"9" * 10_000)
        assert len(d._buf) <= 10 + 16
    assert d.feed(b"\n42\n") == ["42"]
    assert d.dropped["too_long"] == 2


def test_line_bad_characters_dropped():
    # Inside a tag a control or 8-bit byte is no tag; around one it is noise (below).
    d = LineDecoder()
    assert d.feed(b"12\x0734\n12\xc3\xa93\n12-34\n12 34\nok\n") == ["ok"]
    assert d.dropped["bad_char"] == 4


@pytest.mark.parametrize("line", [
    b"\x00\xff0004512345\r\n", b"\x1b\x00 0004512345 \xff\n", b"0004512345\x00\x00\r",
    b"\xff\xfe\xfc\xf8\xf0\xe0\xc0\x800004512345\n",  # a glitch's 1-padded partial bytes
    b"\x020004512345\x03\r\n", b"\t\x7f0004512345\x7f\t\n", b"\xc3\xa90004512345\n",
])
def test_line_noise_around_a_tag_is_stripped(line):
    d = LineDecoder()
    assert d.feed(line) == ["0004512345"]
    assert not d.dropped


def test_line_noise_only_is_one_drop_and_blank_lines_none():
    d = LineDecoder()
    assert d.feed(b"\x00\xff\x1b\r\n  \t \n\n\xff") == []
    assert d.feed(b"\xff\xff\n") == []
    assert d.dropped == {"noise": 2}
    assert d.last_drop is not None and "noise" in d.last_drop


def test_line_a_burst_of_leading_noise_does_not_make_the_tag_over_long():
    d = LineDecoder(max_len=10)
    for _ in range(50):
        d.feed(b"\x00\xff" * 2000)
        assert len(d._buf) <= 10 + 16
    assert d.feed(b"0004512345\r\n") == ["0004512345"]
    assert d.feed(b"0004512345" + b"\xff" * 40 + b"\n") == []  # trailing noise still counts toward the bound
    assert d.dropped == {"too_long": 1}


def test_regex_noise_around_the_line_is_stripped():
    d = RegexDecoder(r"ID:(?P<tag>[0-9A-F]{8})")
    assert d.feed(b"\x00\xffID:00A1B2C3\xff\r\n\x00ID:\x0000A1B2C3\n") == ["00A1B2C3"]
    assert d.dropped == {"bad_char": 1}


def test_line_exact_max_len_passes():
    d = LineDecoder(max_len=5)
    assert d.feed(b"12345\n123456\n") == ["12345"]


@SETTINGS
@given(
    st.lists(st.from_regex(r"[0-9A-Za-z]{1,20}", fullmatch=True), max_size=10),
    st.lists(st.sampled_from([b"\r", b"\n", b"\r\n", b"\n\n"]), min_size=10, max_size=10),
    st.lists(st.integers(0, 10_000), max_size=8),
)
def test_line_property_roundtrip(tags, terms, cuts):
    stream = b"".join(b" " + t.encode() + terms[i] for i, t in enumerate(tags))
    d = LineDecoder(max_len=20)
    assert feed_all(d, split_at(stream, cuts)) == tags
    assert not d.dropped


@SETTINGS
@given(st.lists(st.binary(max_size=100), max_size=20), st.integers(1, 40))
def test_line_fuzz_only_well_formed(chunks, max_len):
    d = LineDecoder(max_len=max_len)
    for tag in feed_all(d, chunks):
        assert re.fullmatch(r"[0-9A-Za-z]+", tag) and 1 <= len(tag) <= max_len
    assert len(d._buf) <= max_len + 16


# ---------------------------------------------------------------- regex


def test_regex_uses_fullmatch_and_tag_group():
    d = RegexDecoder(r"ID:(?P<tag>[0-9A-F]{8})")
    out = d.feed(b"ID:00A1B2C3\r\nxID:00A1B2C3\nID:00A1B2C3 extra\n  ID:DEADBEEF  \n")
    assert out == ["00A1B2C3", "DEADBEEF"]
    assert d.dropped["no_match"] == 2


def test_regex_tag_group_must_be_alphanumeric():
    d = RegexDecoder(r"(?P<tag>.*)")
    assert d.feed(b"12 34\nabc\n") == ["abc"]
    assert d.dropped["bad_tag"] == 1


def test_regex_optional_empty_group_dropped():
    d = RegexDecoder(r"X(?P<tag>\d+)?")
    assert d.feed(b"X\nX7\n") == ["7"]
    assert d.dropped["bad_tag"] == 1


@pytest.mark.parametrize("pattern", ["(", r"ID:(\d+)", r"(?P<card>\d+)", "[a-"])
def test_regex_bad_patterns_raise_valueerror(pattern):
    with pytest.raises(ValueError) as info:
        RegexDecoder(pattern)
    assert "tag" in str(info.value) or "invalid" in str(info.value)


def test_regex_line_length_bounded():
    d = RegexDecoder(r"(?P<tag>\d+)", max_len=8)
    assert d.feed(b"123456789\n12345678\n") == ["12345678"]
    assert d.dropped["too_long"] == 1


@SETTINGS
@given(st.lists(st.binary(max_size=80), max_size=20))
def test_regex_fuzz_only_well_formed(chunks):
    d = RegexDecoder(r".*?(?P<tag>[0-9A-Fa-f]{4,10}).*", max_len=64)
    for tag in feed_all(d, chunks):
        assert re.fullmatch(r"[0-9A-Fa-f]{4,10}", tag)


# ---------------------------------------------------------------- make_decoder


def test_make_decoder_kinds():
    assert isinstance(make_decoder("line"), LineDecoder)
    assert make_decoder("line", max_len=3).feed(b"1234\n123\n") == ["123"]
    assert isinstance(make_decoder("rdm6300"), Rdm6300Decoder)
    d = make_decoder("regex", pattern=r"(?P<tag>\d+)")
    assert isinstance(d, RegexDecoder) and d.feed(b"42\n") == ["42"]


@pytest.mark.parametrize(
    "args, kwargs, needle",
    [
        (("wiegand",), {}, "unknown reader protocol"),
        (("LINE",), {}, "unknown reader protocol"),
        (("regex",), {}, "needs a pattern"),
        (("line",), {"pattern": r"(?P<tag>\d+)"}, "only used with protocol 'regex'"),
        (("line",), {"max_len": 0}, "max_len"),
        (("line",), {"max_len": True}, "max_len"),
        (("regex",), {"pattern": r"(\d+)"}, "named group 'tag'"),
    ],
)
def test_make_decoder_errors(args, kwargs, needle):
    with pytest.raises(ValueError, match=re.escape(needle)):
        make_decoder(*args, **kwargs)


@pytest.mark.parametrize("proto", ["line", "rdm6300"])
def test_feed_accepts_bytes_like(proto):
    d = make_decoder(proto)
    data = EXAMPLE if proto == "rdm6300" else b"77\n"
    assert d.feed(bytearray(data)) == d.feed(memoryview(data)) != []


def test_feed_never_raises_on_internal_error(monkeypatch, caplog):
    d = LineDecoder()

    def boom(line):
        raise RuntimeError("bug")

    monkeypatch.setattr(d, "_line", boom)
    assert d.feed(b"12\n") == []
    assert d.dropped["internal_error"] == 1
    monkeypatch.undo()
    assert d.feed(b"34\n") == ["34"]
