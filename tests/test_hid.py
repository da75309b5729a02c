"""Tests for agent.reading.hidkeys.HidDecoder, fed real evdev.InputEvent objects."""

from __future__ import annotations

import re

import pytest
from evdev import InputEvent, ecodes
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.reading.hidkeys import KEYMAP, HidDecoder

SETTINGS = settings(max_examples=200, deadline=None)

KEY = {ch: ecodes.ecodes[f"KEY_{ch}"] for ch in "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"}
KP = {d: ecodes.ecodes[f"KEY_KP{d}"] for d in "0123456789"}
SHIFT = ecodes.KEY_LEFTSHIFT


class Clock:
    """Builds InputEvents with a controllable timestamp (seconds)."""

    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t

    def ev(self, type_: int, code: int, value: int, *, dt: float = 0.0) -> InputEvent:
        self.t += dt
        sec = int(self.t)
        return InputEvent(sec, int(round((self.t - sec) * 1e6)) % 1_000_000, type_, code, value)

    def press(self, code: int, *, dt: float = 0.01, scan: bool = True) -> list[InputEvent]:
        """What a real keyboard sends: MSC_SCAN, key down, SYN, key up, SYN."""
        evs = []
        if scan:
            evs.append(self.ev(ecodes.EV_MSC, ecodes.MSC_SCAN, 0x70000 + code, dt=dt))
            dt = 0.0
        evs += [
            self.ev(ecodes.EV_KEY, code, 1, dt=dt),
            self.ev(ecodes.EV_SYN, ecodes.SYN_REPORT, 0),
            self.ev(ecodes.EV_KEY, code, 0, dt=0.002),
            self.ev(ecodes.EV_SYN, ecodes.SYN_REPORT, 0),
        ]
        return evs

    def typed(self, text: str, *, enter: int = ecodes.KEY_ENTER, shift_letters=True, dt=0.01):
        evs: list[InputEvent] = []
        for ch in text:
            if ch.isalpha() and shift_letters:
                evs.append(self.ev(ecodes.EV_KEY, SHIFT, 1, dt=dt))
                evs += self.press(KEY[ch.upper()], dt=0.001)
                evs.append(self.ev(ecodes.EV_KEY, SHIFT, 0, dt=0.001))
            else:
                evs += self.press(KEY[ch.upper()], dt=dt)
        evs += self.press(enter, dt=dt)
        return evs


def run(dec: HidDecoder, events) -> list[str]:
    out = []
    for e in events:
        tag = dec.feed(e)
        if tag is not None:
            out.append(tag)
    return out


def test_keymap_matches_evdev_codes():
    for ch, code in KEY.items():
        assert KEYMAP[code] == ch
    for d, code in KP.items():
        assert KEYMAP[code] == d
    assert ecodes.KEY_ENTER == 28 and ecodes.KEY_KPENTER == 96


def test_digits_then_enter():
    c = Clock()
    assert run(HidDecoder(), c.typed("0010597059")) == ["0010597059"]


def test_keypad_digits_and_keypad_enter():
    c = Clock()
    evs = []
    for d in "0123456789":
        evs += c.press(KP[d])
    evs += c.press(ecodes.KEY_KPENTER)
    assert run(HidDecoder(), evs) == ["0123456789"]


def test_shift_letters_upper_and_unshifted_letters_also_upper():
    c = Clock()
    dec = HidDecoder()
    assert run(dec, c.typed("0f00a1b2c3")) == ["0F00A1B2C3"]
    assert run(dec, c.typed("0f00a1b2c3", shift_letters=False)) == ["0F00A1B2C3"]
    assert dec.shift is False


def test_shift_tracking_left_right():
    c = Clock()
    dec = HidDecoder()
    dec.feed(c.ev(ecodes.EV_KEY, ecodes.KEY_RIGHTSHIFT, 1))
    assert dec.shift is True
    dec.feed(c.ev(ecodes.EV_KEY, ecodes.KEY_RIGHTSHIFT, 2))  # autorepeat
    assert dec.shift is True
    dec.feed(c.ev(ecodes.EV_KEY, ecodes.KEY_RIGHTSHIFT, 0))
    assert dec.shift is False


def test_shifted_digit_is_still_the_digit():
    # AZERTY-layout readers send Shift+KEY_1 for "1"
    c = Clock()
    evs = []
    for d in "42":
        evs.append(c.ev(ecodes.EV_KEY, SHIFT, 1, dt=0.01))
        evs += c.press(KEY[d])
        evs.append(c.ev(ecodes.EV_KEY, SHIFT, 0))
    evs += c.press(ecodes.KEY_ENTER)
    assert run(HidDecoder(), evs) == ["42"]


def test_autorepeat_and_key_up_ignored():
    c = Clock()
    evs = [
        c.ev(ecodes.EV_KEY, KEY["1"], 1, dt=0.01),
        c.ev(ecodes.EV_KEY, KEY["1"], 2, dt=0.01),
        c.ev(ecodes.EV_KEY, KEY["1"], 2, dt=0.01),
        c.ev(ecodes.EV_KEY, KEY["1"], 0, dt=0.01),
        c.ev(ecodes.EV_KEY, KEY["2"], 0, dt=0.01),  # stray key-up
        c.ev(ecodes.EV_KEY, ecodes.KEY_ENTER, 2, dt=0.01),  # repeat of Enter: ignored
        c.ev(ecodes.EV_KEY, ecodes.KEY_ENTER, 1, dt=0.01),
    ]
    assert run(HidDecoder(), evs) == ["1"]


def test_interleaved_noise_events_and_modifiers_ignored():
    c = Clock()
    evs = []
    for i, d in enumerate("12345678"):
        evs += c.press(KEY[d])
        if i % 2:
            evs.append(c.ev(ecodes.EV_MSC, ecodes.MSC_SCAN, 0x7001E))
            evs.append(c.ev(ecodes.EV_LED, ecodes.LED_NUML, 1))
            evs += c.press(ecodes.KEY_NUMLOCK)
            evs += c.press(ecodes.KEY_CAPSLOCK)
            evs += c.press(ecodes.KEY_LEFTCTRL)
    evs += c.press(ecodes.KEY_ENTER)
    assert run(HidDecoder(), evs) == ["12345678"]


def test_other_keys_spoil_the_number():
    # "161,45763" must not become "16145763" (a different card)
    c = Clock()
    dec = HidDecoder()
    evs = []
    for k in ("1", "6", "1"):
        evs += c.press(KEY[k])
    evs += c.press(ecodes.KEY_COMMA)
    for k in "45763":
        evs += c.press(KEY[k])
    evs += c.press(ecodes.KEY_ENTER)
    assert run(dec, evs) == []
    assert dec.dropped["bad_key"] == 1
    assert str(ecodes.KEY_COMMA) in dec.last_drop
    assert run(dec, c.typed("123")) == ["123"]


def test_gap_timeout_discards_partial():
    c = Clock()
    dec = HidDecoder(gap_seconds=0.5)
    evs = c.press(KEY["9"]) + c.press(KEY["9"])
    evs += c.press(KEY["1"], dt=0.6)  # too late: "99" discarded
    evs += c.press(KEY["2"], dt=0.4)
    evs += c.press(ecodes.KEY_ENTER, dt=0.4)
    assert run(dec, evs) == ["12"]
    assert dec.dropped["gap_timeout"] == 1


def test_gap_before_enter_discards_and_empty_enter_yields_nothing():
    c = Clock()
    dec = HidDecoder(gap_seconds=0.5)
    evs = c.press(KEY["5"]) + c.press(ecodes.KEY_ENTER, dt=1.0)
    evs += c.press(ecodes.KEY_ENTER, dt=5.0) + c.press(ecodes.KEY_KPENTER)
    assert run(dec, evs) == []
    assert dec.dropped["gap_timeout"] == 1
    assert sum(dec.dropped.values()) == 1


def test_time_going_backwards_discards_partial():
    c = Clock()
    dec = HidDecoder()
    evs = c.press(KEY["5"]) + c.press(KEY["6"], dt=-3600.0) + c.press(ecodes.KEY_ENTER)
    assert run(dec, evs) == ["6"]


def test_idle_then_new_number_not_a_gap_drop():
    c = Clock()
    dec = HidDecoder()
    assert run(dec, c.typed("11")) == ["11"]
    c.t += 30.0  # long idle before the next card
    assert run(dec, c.typed("22")) == ["22"]
    assert not dec.dropped


def test_length_bound():
    c = Clock()
    dec = HidDecoder(max_len=8)
    assert run(dec, c.typed("12345678")) == ["12345678"]
    assert run(dec, c.typed("123456789" * 20)) == []
    assert dec.dropped["too_long"] == 1
    assert len(dec._buf) == 0
    assert run(dec, c.typed("42")) == ["42"]


def test_constructor_validation():
    with pytest.raises(ValueError):
        HidDecoder(max_len=0)
    with pytest.raises(ValueError):
        HidDecoder(gap_seconds=0)


def test_garbage_objects_do_not_raise():
    dec = HidDecoder()
    for junk in (None, object(), 42, "x", InputEvent(0, 0, ecodes.EV_KEY, 2, 1)):
        assert dec.feed(junk) is None


# ------------------------------------------------------- properties

tags_st = st.lists(st.from_regex(r"[0-9A-Za-z]{1,12}", fullmatch=True), max_size=4)


@SETTINGS
@given(tags_st, st.randoms(use_true_random=False))
def test_property_typed_tags_come_out_exactly(tags, rnd):
    c = Clock()
    dec = HidDecoder(max_len=16)
    evs: list[InputEvent] = []
    for t in tags:
        for ev in c.typed(t, enter=rnd.choice([ecodes.KEY_ENTER, ecodes.KEY_KPENTER]),
                          shift_letters=rnd.random() < 0.5, dt=rnd.uniform(0.0, 0.45)):
            evs.append(ev)
            r = rnd.random()
            if r < 0.1:  # autorepeat of the key just pressed
                evs.append(InputEvent(ev.sec, ev.usec, ecodes.EV_KEY, ev.code, 2))
            elif r < 0.2:
                evs.append(InputEvent(ev.sec, ev.usec, ecodes.EV_SYN, 0, 0))
            elif r < 0.25:
                evs.append(InputEvent(ev.sec, ev.usec, ecodes.EV_KEY, ecodes.KEY_CAPSLOCK, 1))
        c.t += rnd.uniform(0.0, 10.0)
    assert run(dec, evs) == [t.upper() for t in tags]
    assert not dec.dropped


@SETTINGS
@given(
    st.lists(
        st.tuples(
            st.floats(-1.0, 2.0),
            st.sampled_from([ecodes.EV_KEY] * 6 + [ecodes.EV_SYN, ecodes.EV_MSC, ecodes.EV_LED, 0xFF]),
            st.one_of(st.sampled_from(sorted(KEYMAP) + [28, 96, 42, 54, 51, 57]), st.integers(0, 1000)),
            st.integers(-1, 3),
        ),
        max_size=200,
    ),
    st.integers(1, 20),
)
def test_property_fuzz_no_exception_only_well_formed(raw_events, max_len):
    c = Clock()
    dec = HidDecoder(max_len=max_len)
    out = run(dec, [c.ev(t, code, v, dt=dt) for dt, t, code, v in raw_events])
    for tag in out:
        assert re.fullmatch(r"[0-9A-Z]+", tag) and len(tag) <= max_len
    assert len(dec._buf) <= max_len
