"""Tests for agent.feedback (patterns, backends, make_feedback): pin timelines on gpiozero's MockFactory."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import statistics
import threading
import time
from pathlib import Path

import pytest
from gpiozero import LED, Device
from gpiozero.pins.mock import MockFactory, MockPWMPin
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.config import FeedbackConfig
from agent.feedback import Feedback, FeedbackUnavailable, make_feedback
from agent.feedback import patterns as fbm
from agent.feedback.console import ConsoleFeedback
from agent.feedback.gpio import GpioFeedback, pin_factory_status
from agent.feedback.patterns import CONDITIONS, EVENTS, PATTERNS, finish, pad, tail

DOCS = Path(__file__).resolve().parents[1] / "docs" / "feedback.md"
# The player thread can only be late, never early: a loaded CI machine has
# woken it 40 ms late. Early beyond clock granularity is a wrong pattern; late
# is allowed up to LATE, still shorter than a pattern played at the wrong scale.
TOL = 0.01
LATE = 0.12


class TonePin(MockPWMPin):
    """MockPWMPin that also records every frequency change (tone played)."""

    def __init__(self, factory, info):
        self.tones: list[float | None] = []
        super().__init__(factory, info)

    def _set_frequency(self, value):
        super()._set_frequency(value)
        if not self.tones or self.tones[-1] != value:
            self.tones.append(value)


@pytest.fixture
def factory():
    """As gpiozero's tests/conftest.py: a fresh mock factory, reset after."""
    saved = Device.pin_factory
    Device.pin_factory = MockFactory(pin_class=MockPWMPin)
    try:
        yield Device.pin_factory
    finally:
        Device.pin_factory.reset()
        Device.pin_factory = saved


@pytest.fixture
def gpio(factory):
    """Build GpioFeedback instances; all are closed after the test."""
    made: list[GpioFeedback] = []

    def build(**kwargs) -> GpioFeedback:
        fb = GpioFeedback(**kwargs)
        made.append(fb)
        return fb

    yield build
    for fb in made:
        fb.close()


def pins(factory, *numbers):
    return [factory.pin(n) for n in numbers]


def clear(*ps) -> float:
    for p in ps:
        p.clear_states()
    return time.monotonic()


def timeline(pin, base: float) -> list[tuple[float, float]]:
    """(seconds since base, state) for every recorded state change; base is
    the time clear() returned (the states' timestamps are deltas from it)."""
    t = base
    out = []
    for s in pin.states:
        t += s.timestamp
        out.append((t - base, float(s.state)))
    return out


def near(t: float, want: float) -> bool:
    """t is when a change happened, want when it was due."""
    return want - TOL <= t <= want + LATE


def assert_timeline(pin, base, expected, *, scale=1.0, offset=0.0, prefix=False):
    """expected: [(seconds in production units, state)] incl. the initial state."""
    deadline = time.monotonic() + LATE
    while len(pin.states) < len(expected) and time.monotonic() < deadline:
        time.sleep(0.005)  # a late player thread: its last changes are still due
    got = timeline(pin, base)
    if prefix:
        assert len(got) >= len(expected), got
        got = got[: len(expected)]
    assert [s for _, s in got] == [float(s) for _, s in expected], got
    for (t, _), (te, _) in zip(got[1:], expected[1:]):
        assert near(t, offset + te * scale), (got, expected)


# ---------------------------------------------------------------- patterns


def fmt_light(steps):
    return ", ".join(f"{'on' if lvl else 'off'} {round(h * 1000)}" for lvl, h in steps)


def fmt_sound(steps):
    return ", ".join(f"{round(f)} Hz {round(h * 1000)}" if f else f"off {round(h * 1000)}"
                     for f, h in steps)


def rhythm(steps):
    """What an eye or an active buzzer perceives: on/off and durations."""
    return tuple((bool(lvl), round(h, 3)) for lvl, h in steps)


def test_pattern_table_is_complete_distinct_and_documented():
    assert set(PATTERNS) == set(EVENTS) | set(CONDITIONS)
    doc = DOCS.read_text()
    lights = {n: rhythm(p.light) for n, p in PATTERNS.items()}
    assert len(set(lights.values())) == 6, lights  # distinct even on one LED
    sounds = {n: rhythm(p.sound) for n, p in PATTERNS.items()}
    assert len(set(sounds.values())) == 6, sounds  # distinct on an active buzzer
    for name, p in PATTERNS.items():
        row = next(line for line in doc.splitlines() if line.startswith(f"| `{name}`"))
        assert f"`{fmt_light(p.light)}`" in row
        assert (f"`{fmt_sound(p.sound)}`" in row) if p.sound else ("silent" in row)
        for lvl, hold in p.light + p.sound:
            assert hold > 0 and lvl >= 0
    for name in EVENTS:  # events are short and begin on at once
        p = PATTERNS[name]
        assert p.duration <= 1.2 and p.light[0][0] == 1 and p.sound[0][0] > 0
    # Passive-buzzer pitch: good = high, bad = low, all within TonalBuzzer range.
    assert PATTERNS["stored"].sound[0][0] > PATTERNS["already"].sound[0][0] > PATTERNS["error"].sound[0][0]
    for p in PATTERNS.values():
        for f, _ in p.sound:
            assert f == 0 or 1000 <= f <= 4000
    off = PATTERNS["offline"]
    assert off.duration >= 3 and off.light[0][1] / off.duration < 0.05  # unobtrusive
    assert not off.sound
    assert PATTERNS["reader_missing"].duration < PATTERNS["auth"].duration < off.duration
    assert fbm.CONDITION_PRIORITY == ("reader_missing", "auth", "offline")


step = st.tuples(st.sampled_from([0.0, 1.0, 2000.0]), st.floats(0.001, 2.0))


@settings(max_examples=200, deadline=None)
@given(st.lists(step, max_size=8), st.floats(0, 10))
def test_tail_and_pad(steps, elapsed):
    rest = tail(steps, elapsed)
    assert fbm.total(rest) == pytest.approx(max(0.0, fbm.total(steps) - elapsed), abs=1e-9)
    assert all(h > 0 for _, h in rest)
    levels = [lvl for lvl, _ in steps]
    assert [lvl for lvl, _ in rest] == levels[len(levels) - len(rest):]
    assert tail(steps, 0) == [s for s in steps if s[1] > 0]
    padded = pad(rest, 10.0)
    assert fbm.total(padded) == pytest.approx(max(10.0, fbm.total(rest)))
    done = finish(steps)
    assert done[-1] == (0.0, 0.0) and all(h > 0 for _, h in done[:-1])
    assert not done[:-1] or done[-2][0] != 0


# ---------------------------------------------------------------- events

EXPECTED_EVENTS = {
    # pin: [(t, state)], production seconds, including the initial state
    "stored": {
        "green": [(0, 0), (0, 1), (0.5, 0)],
        "red": [(0, 0)],
        "buzzer": [(0, 0), (0, 1), (0.1, 0)],
    },
    "already": {
        "green": [(0, 0), (0, 1), (0.15, 0), (0.30, 1), (0.45, 0)],
        "red": [(0, 0)],
        "buzzer": [(0, 0), (0, 1), (0.06, 0), (0.15, 1), (0.21, 0)],
    },
    "error": {
        "green": [(0, 0)],
        "red": [(0, 0), (0, 1), (0.25, 0), (0.40, 1), (0.65, 0), (0.80, 1), (1.05, 0)],
        "buzzer": [(0, 0), (0, 1), (0.25, 0), (0.40, 1), (0.65, 0), (0.80, 1), (1.05, 0)],
    },
}


def test_event_patterns(factory, gpio):
    k = 0.2
    fbs, allpins = {}, {}
    for i, name in enumerate(EVENTS):
        g, r, b = 4 + 3 * i, 5 + 3 * i, 6 + 3 * i
        fbs[name] = gpio(green=g, red=r, buzzer=b, time_scale=k)
        allpins[name] = dict(zip(("green", "red", "buzzer"), pins(factory, g, r, b)))
    base = clear(*(p for d in allpins.values() for p in d.values()))
    for name in EVENTS:
        fbs[name].event(name, "tag=1")
    time.sleep(1.05 * k + 0.06)
    for name in EVENTS:
        for key, expected in EXPECTED_EVENTS[name].items():
            assert_timeline(allpins[name][key], base, expected, scale=k)


def test_event_starts_immediately_and_returns_fast(factory, gpio):
    """< 5 ms even while another Python thread in the process is CPU-bound
    (gpiozero's blink() takes 25-150 ms then: it starts and joins threads)."""
    fb = gpio(green=17, red=27, buzzer=22, buzzer_type="passive", time_scale=0.5)
    green, red, buzzer = pins(factory, 17, 27, 22)
    fb.condition("reader_missing", True)  # every output busy
    stop = threading.Event()

    def busy():  # e.g. the uploader encoding a batch
        data = [{"card": i, "at": "2024-01-01T00:00:00"} for i in range(2000)]
        while not stop.is_set():
            json.dumps(data)

    worker = threading.Thread(target=busy)
    worker.start()
    durations = []
    try:
        for i in range(30):
            name = EVENTS[i % 3]
            t = time.perf_counter()
            fb.event(name)
            durations.append(time.perf_counter() - t)
            lit = green if name != "error" else red
            assert lit.state == 1 and buzzer.state == 0.5  # already on at return
            time.sleep(0.005)
    finally:
        stop.set()
        worker.join()
    durations.sort()
    assert statistics.median(durations) < 0.005, durations
    assert durations[int(len(durations) * 0.9)] < 0.005, durations


def test_player_sleeps_between_transitions_and_stops_on_close(factory, gpio):
    fb = gpio(green=17, red=27, buzzer=22, time_scale=0.2)
    fb.event("error")
    fb.condition("offline", True)
    time.sleep(0.3)  # error over (0.27 s); offline: a 10 ms blip every second
    cpu = time.process_time()
    time.sleep(0.3)
    assert time.process_time() - cpu < 0.02  # no polling
    assert [t.name for t in threading.enumerate()].count("feedback") == 1
    fb.close()
    assert "feedback" not in [t.name for t in threading.enumerate()]


def _wakeups(thread: threading.Thread) -> int:
    with open(f"/proc/self/task/{thread.native_id}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("voluntary_ctxt_switches"))


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="needs Linux /proc")
def test_idle_player_blocks_without_waking(factory, gpio):
    """The idle daemon wakes about once a second overall: with nothing playing
    or looping, the player thread waits without a timeout."""
    fb = gpio(green=17, red=27, buzzer=22, time_scale=0.05)
    fb.event("error")
    time.sleep(0.2)  # the event (0.05 s here) is over
    before = _wakeups(fb._player)
    time.sleep(1.0)
    assert _wakeups(fb._player) - before == 0
    fb.condition("offline", True)  # a loop: one wake-up per transition (2 per 0.25 s here)
    time.sleep(0.05)
    before = _wakeups(fb._player)
    time.sleep(0.5)
    assert 1 <= _wakeups(fb._player) - before <= 6


def test_new_event_preempts_playing_event(factory, gpio):
    k = 0.2
    fb = gpio(green=17, red=27, buzzer=22, time_scale=k)
    green, red, buzzer = pins(factory, 17, 27, 22)
    base = clear(green, red, buzzer)
    fb.event("error")
    time.sleep(0.025)
    t2 = time.monotonic() - base
    fb.event("stored")
    time.sleep(0.5 * k + 0.06)
    # error's first red flash (0..50 ms) is cut off by stored at ~25 ms.
    assert_timeline(red, base, [(0, 0), (0, 1), (t2 / k, 0)], scale=k)
    assert_timeline(green, base, [(0, 0), (0, 1), (0.5, 0)], scale=k, offset=t2)
    # error's first buzz is still on at t2; stored's beep continues it to t2 + 20 ms.
    got = timeline(buzzer, base)
    assert [s for _, s in got] == [0, 1, 0]
    assert near(got[2][0], t2 + 0.1 * k), got


def test_event_during_condition_then_condition_resumes(factory, gpio):
    k = 0.1
    fb = gpio(green=17, red=27, buzzer=22, time_scale=k)
    green, red, buzzer = pins(factory, 17, 27, 22)
    base = clear(green, red, buzzer)
    fb.condition("reader_missing", True)
    time.sleep(0.125)  # red: on 0, off .05, on .1
    e = time.monotonic() - base
    fb.event("stored")
    time.sleep(0.25)
    # stored: green 50 ms; red dark for the event + 30 ms gap, then blinks again.
    assert_timeline(green, base, [(0, 0), (0, 1), (0.5, 0)], scale=k, offset=e)
    r = timeline(red, base)
    assert [s for _, s in r[:5]] == [0, 1, 0, 1, 0]
    assert near(r[4][0], e), r  # preempted
    resume = e + (0.5 + fbm.RESUME_GAP) * k
    tail_r = r[4:]
    assert [s for _, s in tail_r[:4]] == [0, 1, 0, 1]
    for (t, _), want in zip(tail_r[1:4], (0, 0.5, 1.0)):
        assert near(t, resume + want * k), r
    # buzzer: onset chime (600 ms low) then the stored beep (100 ms).
    b = timeline(buzzer, base)
    assert [s for _, s in b] == [0, 1, 0, 1, 0]
    assert near(b[2][0], 0.6 * k) and near(b[3][0], e), b


def test_condition_turning_on_during_event_waits_for_it(factory, gpio):
    k = 0.15
    fb = gpio(green=17, red=27, buzzer=22, time_scale=k)
    green, red, buzzer = pins(factory, 17, 27, 22)
    base = clear(green, red, buzzer)
    fb.event("error")
    time.sleep(0.05)
    fb.condition("reader_missing", True)
    time.sleep((1.05 + 0.3 + 0.6) * k + 0.05)
    end = (1.05 + fbm.RESUME_GAP)  # production seconds: event + gap
    assert_timeline(
        red, base,
        EXPECTED_EVENTS["error"]["red"] + [(end, 1), (end + 0.5, 0)],
        scale=k, prefix=True,
    )
    assert_timeline(
        buzzer, base,
        EXPECTED_EVENTS["error"]["buzzer"] + [(end, 1), (end + 0.6, 0)],
        scale=k,
    )
    assert_timeline(green, base, [(0, 0)])


# ---------------------------------------------------------------- conditions


def test_condition_patterns(factory, gpio):
    scales = {"reader_missing": 0.1, "auth": 0.1, "offline": 0.02}
    expected_light = {
        "reader_missing": ("red", [(0, 0), (0, 1), (0.5, 0), (1.0, 1), (1.5, 0), (2.0, 1)]),
        "auth": ("red", [(0, 0), (0, 1), (0.1, 0), (0.2, 1), (0.3, 0), (2.0, 1), (2.1, 0), (2.2, 1)]),
        "offline": ("green", [(0, 0), (0, 1), (0.05, 0), (5.0, 1), (5.05, 0), (10.0, 1)]),
    }
    expected_sound = {
        "reader_missing": [(0, 0), (0, 1), (0.6, 0)],
        "auth": [(0, 0), (0, 1), (0.08, 0), (0.12, 1), (0.2, 0), (0.24, 1), (0.32, 0),
                 (0.36, 1), (0.44, 0)],
        "offline": [(0, 0)],
    }
    fbs, allpins = {}, {}
    for i, name in enumerate(CONDITIONS):
        g, r, b = 4 + 3 * i, 5 + 3 * i, 6 + 3 * i
        fbs[name] = gpio(green=g, red=r, buzzer=b, time_scale=scales[name])
        allpins[name] = dict(zip(("green", "red", "buzzer"), pins(factory, g, r, b)))
    base = clear(*(p for d in allpins.values() for p in d.values()))
    for name in CONDITIONS:
        fbs[name].condition(name, True)
    time.sleep(0.3)
    for name in CONDITIONS:
        k = scales[name]
        color, light = expected_light[name]
        other = "green" if color == "red" else "red"
        assert_timeline(allpins[name][color], base, light, scale=k, prefix=True)
        assert_timeline(allpins[name][other], base, [(0, 0)])
        assert_timeline(allpins[name]["buzzer"], base, expected_sound[name], scale=k)
        assert fbs[name].conditions == {name}


def test_condition_priority_and_clearing(factory, gpio):
    k = 0.05
    fb = gpio(green=17, red=27, buzzer=22, time_scale=k)
    green, red, buzzer = pins(factory, 17, 27, 22)
    fb.condition("offline", True)
    assert green.state == 1 and red.state == 0
    time.sleep(0.01)
    base = clear(green, red, buzzer)
    fb.condition("auth", True)  # outranks offline: green dark, red double flash
    time.sleep(0.05)
    assert_timeline(green, base, [(0, 0)])
    assert_timeline(red, base, [(0, 0), (0, 1), (0.1, 0), (0.2, 1), (0.3, 0)], scale=k)
    assert fb.conditions == {"offline", "auth"}

    base = clear(green, red, buzzer)
    fb.condition("reader_missing", True)  # outranks auth: red 1 Hz, chime
    time.sleep(0.035)  # red is off (25-50 ms): a restart would light it now
    fb.condition("offline", False)  # hidden: nothing changes
    fb.condition("auth", False)  # hidden: nothing changes
    fb.condition("auth", False)  # no change at all
    time.sleep(0.055)
    assert_timeline(green, base, [(0, 0)])
    assert_timeline(red, base, [(0, 0), (0, 1), (0.5, 0), (1.0, 1), (1.5, 0)], scale=k,
                    prefix=True)
    assert_timeline(buzzer, base, [(0, 0), (0, 1), (0.6, 0)], scale=k)

    time.sleep(0.01)  # red on (100-125 ms)
    base = clear(green, red, buzzer)
    fb.condition("reader_missing", False)  # nothing shown: red dark
    fb.condition("offline", True)  # offline shown again: green blips, no sound
    time.sleep(0.27)
    assert fb.conditions == {"offline"}
    assert_timeline(red, base, [(0, 1), (0, 0)])
    assert_timeline(green, base, [(0, 0), (0, 1), (0.05, 0), (5.0, 1), (5.05, 0)], scale=k)
    assert_timeline(buzzer, base, [(0, 0)])

    fb.condition("offline", False)
    base = clear(green, red)
    time.sleep(0.26)  # past the next blip (500 ms)
    assert_timeline(green, base, [(0, 0)])
    assert_timeline(red, base, [(0, 0)])
    assert fb.conditions == frozenset()


# ---------------------------------------------------------------- hardware variants


def test_passive_buzzer_plays_tones(factory, gpio):
    factory.pin_class = TonePin
    k = 0.2
    fb = gpio(buzzer=22, buzzer_type="passive", time_scale=k)
    buzzer = factory.pin(22)
    buzzer.tones.clear()
    base = clear(buzzer)
    fb.event("stored")
    time.sleep(0.1 * k + 0.04)
    assert_timeline(buzzer, base, [(0, 0), (0, 0.5), (0.1, 0)], scale=k)
    fb.event("already")
    time.sleep(0.21 * k + 0.04)
    fb.event("error")
    time.sleep(1.05 * k + 0.04)
    fb.condition("auth", True)
    time.sleep(0.44 * k + 0.04)
    want = [2700, None, 2000, None, 2000, None, 1000, None, 1000, None, 1000, None,
            2700, None, 1000, None, 2700, None, 1000, None]
    got = [None if f is None else round(f) for f in buzzer.tones]
    assert got == want


def test_only_a_buzzer(factory, gpio):
    k = 0.2
    fb = gpio(buzzer=22, time_scale=k)
    (buzzer,) = pins(factory, 22)
    base = clear(buzzer)
    fb.condition("reader_missing", True)  # no LED: only the chime
    time.sleep(0.6 * k + 0.04)
    fb.event("already")
    time.sleep(0.21 * k + 0.04)
    assert_timeline(buzzer, base, [(0, 0), (0, 1), (0.6, 0)], scale=k, prefix=True)
    assert [s for _, s in timeline(buzzer, base)] == [0, 1, 0, 1, 0, 1, 0]


@pytest.mark.parametrize("wired", ["green", "red"])
def test_single_led_plays_every_pattern(factory, gpio, wired):
    k = 0.1
    fb = gpio(**{wired: 17}, time_scale=k)
    (led,) = pins(factory, 17)
    base = clear(led)
    fb.event("error")
    time.sleep(1.05 * k + 0.04)
    assert_timeline(led, base, EXPECTED_EVENTS["error"]["red"], scale=k)
    base = clear(led)
    fb.event("stored")
    fb.condition("offline", True)
    time.sleep(0.85 * k + 0.05)
    assert_timeline(led, base, [(0, 0), (0, 1), (0.5, 0), (0.8, 1), (0.85, 0)], scale=k)


def test_close_turns_everything_off_and_releases_pins(factory, gpio):
    fb = gpio(green=17, red=27, buzzer=22, buzzer_type="passive", time_scale=0.2)
    green, red, buzzer = pins(factory, 17, 27, 22)
    fb.condition("reader_missing", True)
    fb.event("stored")
    fb.close()
    fb.close()  # idempotent
    assert green.state == 0 and red.state == 0 and buzzer.state == 0
    base = clear(green, red, buzzer)
    fb.event("error")  # no-op, no exception
    fb.condition("auth", True)
    time.sleep(0.1)
    for p in (green, red, buzzer):
        assert_timeline(p, base, [(0, 0)])
    LED(17).close()  # the pin is free again


def test_unknown_names_are_logged_not_raised(factory, gpio, caplog):
    fb = gpio(green=17)
    (green,) = pins(factory, 17)
    base = clear(green)
    with caplog.at_level(logging.WARNING, logger="agent.feedback"):
        fb.event("bogus")
        fb.condition("bogus", True)
    assert "unknown event 'bogus'" in caplog.text and "unknown condition" in caplog.text
    assert_timeline(green, base, [(0, 0)])
    assert fb.conditions == frozenset()


def test_event_never_raises_when_output_fails(caplog):
    class Broken(Feedback):
        def _event(self, name, detail):
            raise OSError("gpiochip went away")

        def _condition(self, name, active):
            raise OSError("gpiochip went away")

    fb = Broken()
    with caplog.at_level(logging.WARNING, logger="agent.feedback"):
        fb.event("stored")
        fb.condition("offline", True)
    assert caplog.text.count("gpiochip went away") == 2


def test_broken_output_is_logged_and_others_still_play(factory, gpio, caplog):
    fb = gpio(green=17, buzzer=22, time_scale=0.2)
    buzzer = factory.pin(22)
    LED.close(fb._outputs["green"].device)  # the green LED torn away underneath
    with caplog.at_level(logging.WARNING, logger="agent.feedback"):
        fb.event("stored")
    assert "green output failed: GPIODeviceClosed" in caplog.text
    assert buzzer.state == 1


def test_gpio_feedback_validates_arguments(factory):
    with pytest.raises(ValueError, match="at least one"):
        GpioFeedback()
    with pytest.raises(ValueError, match="buzzer_type"):
        GpioFeedback(buzzer=22, buzzer_type="piezo")


# ---------------------------------------------------------------- make_feedback


@pytest.fixture
def no_gpio(monkeypatch):
    """This machine as it is: no pin factory set, none configured by env."""
    monkeypatch.delenv("GPIOZERO_PIN_FACTORY", raising=False)
    saved = Device.pin_factory
    Device.pin_factory = None
    try:
        yield
    finally:
        Device.pin_factory = saved


def test_make_feedback_gpio_without_gpio_is_unavailable(no_gpio):
    with pytest.raises(FeedbackUnavailable) as info:
        make_feedback(FeedbackConfig(backend="gpio", green_pin=17, red_pin=27, buzzer_pin=22))
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith("GPIO is not available on this machine (BadPinFactory")
    assert msg.endswith('set feedback.fallback = "console" or feedback.backend = "none"')
    assert "lgpio" in msg  # gpiozero's reason per factory tried


def test_make_feedback_gpio_falls_back_to_console(no_gpio, caplog, capsys):
    with caplog.at_level(logging.WARNING, logger="agent.feedback"):
        fb = make_feedback(FeedbackConfig(backend="gpio", green_pin=17, fallback="console"))
    assert type(fb) is ConsoleFeedback
    assert "GPIO is not available" in caplog.text and "using console" in caplog.text
    fb.event("stored", "tag=1")
    assert capsys.readouterr().out == "stored tag=1\n"


def test_make_feedback_bad_pin_is_unavailable(factory):
    with pytest.raises(FeedbackUnavailable, match=r"could not be set up.*GPIO99"):
        make_feedback(FeedbackConfig(backend="gpio", green_pin=17, red_pin="GPIO99"))
    LED(17).close()  # the green LED opened before the failure was released


def test_make_feedback_with_mock_factory_and_validation(factory, capsys):
    fb = make_feedback(FeedbackConfig(backend="gpio", green_pin=17, buzzer_pin=22, buzzer_type="passive"),
                       pin_factory=factory)
    try:
        assert type(fb) is GpioFeedback
        fb.event("stored")
        assert factory.pin(17).state == 1
    finally:
        fb.close()
    assert type(make_feedback(FeedbackConfig(backend="none"))) is Feedback
    assert type(make_feedback(FeedbackConfig(backend="console"))) is ConsoleFeedback
    for kwargs, field in (({"backend": "leds"}, "backend"),
                          ({"backend": "gpio", "fallback": "beep", "green_pin": 1}, "fallback"),
                          ({"backend": "gpio", "buzzer_type": "x", "buzzer_pin": 1}, "buzzer_type"),
                          ({"backend": "gpio"}, "at least one")):
        with pytest.raises(ValueError, match=field):
            make_feedback(FeedbackConfig(**kwargs))


def test_pin_factory_status(monkeypatch):
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "mock")
    assert pin_factory_status() == ("MockFactory", None, ())
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "MOCK")  # as gpiozero: verbatim, then lower-cased
    assert pin_factory_status().name == "MockFactory"
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "no-such-factory")
    status = pin_factory_status()
    assert status.name is None and status.error.startswith("BadPinFactory") and "no-such-factory" in status.error
    monkeypatch.delenv("GPIOZERO_PIN_FACTORY")
    status = pin_factory_status()  # this machine: no GPIO (as test_make_feedback_gpio_without_gpio...)
    assert status == (None, "BadPinFactory: Unable to load any default pin factory!", status.tried)
    assert [t.split(":")[0] for t in status.tried] == ["lgpio", "rpigpio", "pigpio", "native"]
    assert all("\n" not in t for t in status.tried)


# ---------------------------------------------------------------- console


class Recorder(io.StringIO):
    def __init__(self):
        super().__init__()
        self.flushed_at: list[int] = []

    def flush(self):
        self.flushed_at.append(len(self.getvalue()))
        super().flush()


def test_console_lines_exact():
    out = Recorder()
    fb = ConsoleFeedback(out)
    fb.event("stored", "tag=123 id=abc")
    fb.event("already")
    fb.event("error", "journal: disk full\nretry ")
    fb.condition("offline", True)
    fb.condition("offline", True)  # no change: no line
    fb.condition("auth", False)  # was never on: no line
    fb.condition("reader_missing", True)
    fb.condition("offline", False)
    fb.event("nope", "x")  # unknown: logged, no line
    fb.close()
    fb.event("stored", "after close")
    lines = out.getvalue().splitlines()
    assert lines == [
        "stored tag=123 id=abc",
        "already",
        "error journal: disk full retry",
        "offline on",
        "reader_missing on",
        "offline off",
    ]
    # flushed after every line
    ends = [m.end() for m in re.finditer("\n", out.getvalue())]
    assert out.flushed_at == ends


def test_console_broken_stream_never_raises(caplog):
    class Closed(io.StringIO):
        def write(self, s):
            raise BrokenPipeError("stdout closed")

    fb = ConsoleFeedback(Closed())
    with caplog.at_level(logging.WARNING, logger="agent.feedback"):
        fb.event("stored")
        fb.condition("offline", True)
    assert caplog.text.count("stdout closed") == 2


def test_none_backend_is_silent_noop():
    fb = make_feedback(FeedbackConfig())
    fb.event("stored", "x")
    fb.condition("offline", True)
    assert fb.conditions == {"offline"}
    fb.close()
