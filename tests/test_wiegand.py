"""Tests for agent.reading.wiegand: the pure Wiegand decoder, on generated edges."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.reading.wiegand import Edge, WiegandDecoder
from standins.wiegand import frame_bits, to_edges

SETTINGS = settings(max_examples=150, deadline=None)
MS = 1_000_000
END = 10**18  # a flush time after every frame


def decode(edges, **kw) -> tuple[list[str], WiegandDecoder]:
    dec = WiegandDecoder(**kw)
    return dec.feed(edges) + dec.flush(END), dec


def bits_of(value: int, n: int) -> list[int]:
    return [(value >> i) & 1 for i in range(n - 1, -1, -1)]


def edges_for(bits, seed=1, start_ns=1_000 * MS, **kw):
    return to_edges(bits, start_ns=start_ns, rng=random.Random(seed), **kw)


# ------------------------------------------------------- published examples
#
# Each frame's bits as the source prints them, checked both ways: frame_bits
# builds them from facility/card, and the decoder returns them.
PUBLISHED = [
    # common.md's contract example (facility 161, card 45763: data 0xA1B2C3, both parities 0)
    (161, 45763, 26, "0" + f"{0xA1B2C3:024b}" + "0", "26:1436586"),
    # CIVINTEC CN56 reader manual, 6.4.2 Wiegand26: data D4 1B 81 -> "1 11010100 00011011 10000001 0"
    # https://manualshive.com/ru/manual/civintec/cn56-series/2611587?page=25
    (0xD4, 0x1B81, 26, "1" + "110101000001101110000001" + "0", "26:3A83702"),
    # the same manual, 6.4.5 Wiegand34: data 89 D4 1B 81 -> "1 10001001 11010100 00011011 10000001 1"
    (0x89D4, 0x1B81, 34, "1" + "10001001110101000001101110000001" + "1", "34:313A83703"),
    # Hikvision operation manual: card 1234567890 = 0x499602D2 in W34 -> "1 0100 1001 1001 0110
    # 0000 0010 1101 0010 0" https://manualshive.com/en/manual/hikvision/ds-2cd7a26g0-p-izhswg/2133492?page=11
    (0x4996, 0x02D2, 34, "1" + f"{1234567890:032b}" + "0", "34:2932C05A4"),
    # "Emulating an HID Proxcard from Facility Code and Card Number" (praetoriansentry.github.io,
    # posts/2019-04-02-hid-prox.php): H10301 facility 74 (its decimal row misprints 76; the binary
    # is 74), card 47777 -> "0 01001010 1011101010100001 0"; its Proxmark ID 2004957542 ends in
    # these 26 bits (0x2004957542 & 0x3FFFFFF = 0x957542)
    (74, 47777, 26, "0" + "01001010" + "1011101010100001" + "0", f"26:{0x2004957542 & 0x3FFFFFF:07X}"),
]


@pytest.mark.parametrize("facility,card,n,printed,tag", PUBLISHED)
def test_published_examples(facility, card, n, printed, tag):
    # H10301 layout as RfidResearchGroup/proxmark3 client/src/wiegand_formats.c packs it:
    # even parity, facility, card, odd parity
    bits = frame_bits(facility, card, n)
    assert "".join(map(str, bits)) == printed
    tags, dec = decode(edges_for(bits))
    assert tags == [tag]
    assert not dec.dropped


@pytest.mark.parametrize("n", [26, 34])
@pytest.mark.parametrize("seed", range(5))
def test_jittered_frames_decode(n, seed):
    rng = random.Random(seed)
    facility, card = rng.randrange(1 << (8 if n == 26 else 16)), rng.randrange(1 << 16)
    bits = frame_bits(facility, card, n)
    edges = to_edges(bits, start_ns=0, pulse_us=(20, 200), interval_us=(300, 5000), rng=rng)
    value = int("".join(map(str, bits)), 2)
    assert decode(edges)[0] == [f"{n}:{value:0{(n + 3) // 4}X}"]


def test_falling_edges_alone_are_enough():
    bits = frame_bits(161, 45763)
    assert decode(edges_for(bits, rising=False))[0] == ["26:1436586"]


def test_a_frame_ends_at_the_gap_not_before():
    dec = WiegandDecoder(gap_s=0.025)
    edges = edges_for(frame_bits(161, 45763), start_ns=0)
    assert dec.feed(edges) == []
    last = max(e.t_ns for e in edges if e.falling)
    assert dec.deadline_ns() == last + 25 * MS
    assert dec.flush(last + 24 * MS) == []
    assert dec.flush(last + 25 * MS) == ["26:1436586"]
    assert dec.deadline_ns() is None


def test_the_next_frame_closes_the_previous_one():
    first = edges_for(frame_bits(1, 2), start_ns=0)
    second = edges_for(frame_bits(3, 4), start_ns=first[-1].t_ns + 30 * MS)
    dec = WiegandDecoder()
    tags = dec.feed(first + second)
    assert tags == [f"26:{int(''.join(map(str, frame_bits(1, 2))), 2):07X}"]
    assert len(dec.flush(END)) == 1


# ------------------------------------------------------------------ drops


def test_parity_errors_are_dropped():
    bits = frame_bits(161, 45763)
    bits[5] ^= 1  # one bit flipped: the first half's even parity fails
    tags, dec = decode(edges_for(bits))
    assert tags == [] and dec.dropped == {"parity": 1}
    assert "parity" in dec.last_drop and "1436586" not in dec.last_drop


@pytest.mark.parametrize("n", [26, 34])
def test_swapped_lines_are_detected(n):
    bits = [1 - b for b in frame_bits(161, 45763, n)]  # D0 and D1 exchanged on the terminals
    tags, dec = decode(edges_for(bits))
    assert tags == [] and dec.dropped == {"swapped": 1}
    assert "swap_lines = true" in dec.last_drop and "swap the D0/D1 wires" in dec.last_drop
    tags, dec = decode(edges_for(bits), swap=True)
    value = int("".join(map(str, frame_bits(161, 45763, n))), 2)
    assert tags == [f"{n}:{value:0{(n + 3) // 4}X}"]
    # swap_lines set on wires that were right: the advice is the other way round
    tags, dec = decode(edges_for(frame_bits(161, 45763, n)), swap=True)
    assert tags == [] and "set swap_lines = false" in dec.last_drop


@pytest.mark.parametrize("first,second", [(26, 26), (26, 34), (34, 26), (34, 34)])
def test_a_burst_of_two_frames_closer_than_the_gap_gives_both(first, second):
    # readers repeat a frame a few ms later; the debouncer merges the repeats
    a, b = frame_bits(161, 45763, first), frame_bits(0xD4, 0x1B81, second)
    edges = edges_for(a + b, interval_us=(900, 2100))
    tags, dec = decode(edges)
    assert [t.split(":")[0] for t in tags] == [str(first), str(second)]
    assert tags[0] == ("26:1436586" if first == 26 else "34:201436587")
    assert not dec.dropped


def test_a_burst_with_one_bad_half_keeps_the_good_one():
    good = frame_bits(161, 45763)
    bad = list(good)
    bad[3] ^= 1
    tags, dec = decode(edges_for(bad + good))
    assert tags == ["26:1436586"] and dec.dropped == {"parity": 1}


@pytest.mark.parametrize("n", [4, 8])
def test_keypad_bursts_are_ignored_unless_configured(n):
    key = [0, 1, 0, 1] if n == 4 else [1, 0, 1, 0, 0, 1, 0, 1]  # "5", and "5" with its complement
    tags, dec = decode(edges_for(key))
    assert tags == [] and dec.dropped == {"keypad": 1} and "keypad = true" in dec.last_drop
    tags, dec = decode(edges_for(key), keypad=True)
    assert tags == (["4:5"] if n == 4 else ["8:A5"])


@pytest.mark.parametrize("n", [2, 6, 23])
def test_short_frames_are_dropped_naming_the_wiring(n):
    tags, dec = decode(edges_for([1, 0] * (n // 2) + [1] * (n % 2)))
    assert tags == [] and dec.dropped == {"short": 1}
    assert "level shifter" in dec.last_drop and "common ground" in dec.last_drop
    assert "hardware/README.md" in dec.last_drop


@pytest.mark.parametrize("n", [24, 32, 37, 48, 64])
def test_other_lengths_are_reported_with_their_bit_count(n):
    value = random.Random(n).getrandbits(n) | 1
    assert decode(edges_for(bits_of(value, n)))[0] == [f"{n}:{value:0{(n + 3) // 4}X}"]


def test_long_frames_are_dropped():
    tags, dec = decode(edges_for([1, 0, 0] * 25))
    assert tags == [] and dec.dropped == {"long": 1}


def test_edges_on_both_lines_at_once_are_noise():
    edges = edges_for(frame_bits(161, 45763), start_ns=0)
    t = edges[10].t_ns
    noisy = sorted(edges + [Edge(0, t + 3000), Edge(1, t + 4000)], key=lambda e: e.t_ns)
    tags, dec = decode(noisy)
    assert tags == [] and dec.dropped["noise"] == 1 and "10 µs" in dec.last_drop


def test_a_glitch_pulse_is_taken_back():
    edges = edges_for(frame_bits(161, 45763), start_ns=0)
    t = edges[6].t_ns + 300_000  # between two bits
    glitchy = sorted(edges + [Edge(1, t), Edge(1, t + 2000, False)], key=lambda e: e.t_ns)
    tags, dec = decode(glitchy)
    assert tags == ["26:1436586"] and dec.dropped == {"glitch": 1}


def test_reset_forgets_the_frame_in_progress():
    dec = WiegandDecoder()
    dec.feed(edges_for(frame_bits(161, 45763)[:10]))
    assert dec.deadline_ns() is not None
    dec.reset()
    assert dec.deadline_ns() is None and dec.flush(END) == []


def test_bad_arguments_and_inputs():
    with pytest.raises(ValueError):
        WiegandDecoder(gap_s=0)
    dec = WiegandDecoder()
    assert dec.feed([Edge(7, 1), Edge(0, "x"), (1,), None]) == []  # never raises
    assert dec.dropped["internal_error"] <= 1


# ------------------------------------------------------------------ Hypothesis

edge_streams = st.lists(
    st.builds(Edge, st.integers(-1, 2), st.integers(-10**12, 10**12), st.booleans()), max_size=300)


@SETTINGS
@given(edge_streams, st.booleans(), st.booleans(), st.integers(0, 2**62))
def test_random_edges_never_raise_and_give_well_formed_tags(edges, swap, keypad, now):
    dec = WiegandDecoder(swap=swap, keypad=keypad)
    tags = dec.feed(edges) + dec.flush(now) + dec.flush(END)
    assert not dec.dropped["internal_error"]
    for tag in tags:
        n, _, hexpart = tag.partition(":")
        assert int(n) in (4, 8) or 24 <= int(n) <= 64
        assert len(hexpart) == (int(n) + 3) // 4 and int(hexpart, 16) < 1 << int(n)
        assert hexpart == hexpart.upper()


@SETTINGS
@given(nbits=st.sampled_from([26, 34]), facility=st.integers(0, 0xFFFF), card=st.integers(0, 0xFFFF),
       seed=st.integers(0, 2**32), pulse=st.tuples(st.integers(20, 200), st.integers(0, 100)),
       interval=st.tuples(st.integers(300, 3000), st.integers(0, 10000)), rising=st.booleans())
def test_generated_frames_round_trip_for_any_jitter_within_spec(
        nbits, facility, card, seed, pulse, interval, rising):
    facility &= 0xFF if nbits == 26 else 0xFFFF
    bits = frame_bits(facility, card, nbits)
    edges = to_edges(bits, start_ns=seed, rng=random.Random(seed), rising=rising,
                     pulse_us=(pulse[0], pulse[0] + pulse[1]),
                     interval_us=(interval[0], interval[0] + interval[1]))
    data = (facility << 16) | card
    value = int("".join(map(str, bits)), 2)
    assert (value >> 1) & ((1 << (nbits - 2)) - 1) == data
    assert decode(edges)[0] == [f"{nbits}:{value:0{(nbits + 3) // 4}X}"]


@SETTINGS
@given(st.lists(st.tuples(st.integers(0, 0xFF), st.integers(0, 0xFFFF), st.booleans()),
                min_size=1, max_size=5),
       st.lists(st.integers(0, 10**6), max_size=12), st.integers(0, 2**32))
def test_splitting_the_edges_across_feeds_gives_the_same_tags(cards, cuts, seed):
    rng, edges, t = random.Random(seed), [], 0
    for facility, card, repeated in cards:
        bits = frame_bits(facility, card) * (2 if repeated else 1)  # a repeat without the gap
        edges += to_edges(bits, start_ns=t, rng=rng)
        t = edges[-1].t_ns + rng.randrange(26, 200) * MS
    whole, _ = decode(edges)
    assert len(whole) == sum(2 if repeated else 1 for _, _, repeated in cards)
    dec, parts, prev = WiegandDecoder(), [], 0
    for c in sorted({c % (len(edges) + 1) for c in cuts}) + [len(edges)]:
        parts += dec.feed(edges[prev:c])
        prev = c
    assert parts + dec.flush(END) == whole
