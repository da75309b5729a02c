"""What the person at the door sees and hears: LED and buzzer feedback.

Three one-shot *events* (``stored``, ``already``, ``error``) and three
persistent *conditions* (``reader_missing`` > ``auth`` > ``offline``, in
priority order).  The pattern table lives in :data:`PATTERNS` and is documented
in ``docs/feedback.md``.

Backends: :class:`Feedback` (no-op, backend ``"none"``), :class:`ConsoleFeedback`
(one parseable line per event / condition change) and :class:`GpioFeedback`
(gpiozero LEDs and an active or passive buzzer).  :func:`make_feedback` builds
one from configuration.

How :class:`GpioFeedback` plays patterns
----------------------------------------
One small daemon thread per instance (``feedback``) plays every output from
absolute-time schedules and sleeps in ``Condition.wait(timeout)`` until the
next transition (no polling; no timeout at all when nothing is scheduled).

* ``event()`` computes each output's schedule, writes the first level at once
  (the pin is high when the call returns) and notifies the player: about
  0.05 ms, and no thread is started or joined on the caller's path.
  gpiozero's ``blink()``/``beep()``/``source`` start and join a thread per
  call; with another CPU-bound Python thread in the process, the GIL handoffs
  made that 25-150 ms per event (measured; see ``docs/feedback.md``).
* Preemption: a new event replaces every output's schedule.
* Resume: each schedule is "the rest of the current event, padded to its full
  length plus :data:`RESUME_GAP` of darkness, then the shown condition's
  loop", so the condition comes back by itself, without a timer.  When a
  condition changes during an event, the schedules are rebuilt from the
  event's elapsed time (pure helpers :func:`tail`, :func:`pad`,
  :func:`finish`, :func:`transitions`).
"""

from __future__ import annotations

import logging
import math
import sys
import threading
import time
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import chain, cycle
from typing import IO, Any

from agent.errors import FeedbackUnavailable

log = logging.getLogger("agent.feedback")

EVENTS = ("stored", "already", "error")
CONDITIONS = ("auth", "offline", "reader_missing")
#: Highest priority first: the condition shown when several are active.
CONDITION_PRIORITY = ("reader_missing", "auth", "offline")
BACKENDS = ("gpio", "console", "none")
FALLBACKS = ("none", "console")
BUZZER_TYPES = ("active", "passive")

Step = tuple[float, float]
"""``(level, seconds)``. Light: level 1.0 on / 0.0 off.  Sound: pitch in Hz,
0.0 = silent (an active buzzer sounds for any pitch > 0)."""

#: Passive buzzer: TonalBuzzer centre tone and range (1000-4000 Hz, where
#: small piezo discs are loud).
PASSIVE_MID_HZ = 2000.0
PASSIVE_OCTAVES = 1

HIGH, MID, LOW = 2700.0, 2000.0, 1000.0

#: Darkness after an event before a condition's pattern resumes, so the last
#: flash of the event never merges with the condition's first one.
RESUME_GAP = 0.3


@dataclass(frozen=True)
class Pattern:
    """One row of the pattern table.

    ``light`` plays on the ``color`` LED (or on the only LED wired);
    ``sound`` on the buzzer.  For an event both play once.  For a condition
    ``light`` loops while the condition is shown and ``sound`` is a chime
    played once when the condition turns on.
    """

    name: str
    color: str
    light: tuple[Step, ...]
    sound: tuple[Step, ...] = ()

    @property
    def duration(self) -> float:
        """Length of one play (an event's total, a condition's loop period)."""
        return max(total(self.light), total(self.sound))

    @property
    def chime_duration(self) -> float:
        return total(self.sound)

    def scaled(self, k: float) -> Pattern:
        def sc(steps: tuple[Step, ...]) -> tuple[Step, ...]:
            return tuple((level, hold * k) for level, hold in steps)

        return Pattern(self.name, self.color, sc(self.light), sc(self.sound))


PATTERNS: dict[str, Pattern] = {
    # Events (one-shot).
    "stored": Pattern("stored", "green", light=((1, 0.5),), sound=((HIGH, 0.1),)),
    "already": Pattern(
        "already", "green",
        light=((1, 0.15), (0, 0.15), (1, 0.15)),
        sound=((MID, 0.06), (0, 0.09), (MID, 0.06)),
    ),
    "error": Pattern(
        "error", "red",
        light=((1, 0.25), (0, 0.15), (1, 0.25), (0, 0.15), (1, 0.25)),
        sound=((LOW, 0.25), (0, 0.15), (LOW, 0.25), (0, 0.15), (LOW, 0.25)),
    ),
    # Conditions (light loops; sound = chime once at onset).
    "reader_missing": Pattern(
        "reader_missing", "red", light=((1, 0.5), (0, 0.5)), sound=((LOW, 0.6),)
    ),
    "auth": Pattern(
        "auth", "red",
        light=((1, 0.1), (0, 0.1), (1, 0.1), (0, 1.7)),
        sound=((HIGH, 0.08), (0, 0.04), (LOW, 0.08), (0, 0.04),
               (HIGH, 0.08), (0, 0.04), (LOW, 0.08)),
    ),
    "offline": Pattern("offline", "green", light=((1, 0.05), (0, 4.95))),
}


# --------------------------------------------------------------------------
# Pure timeline helpers


def total(steps: Iterable[Step]) -> float:
    return sum(hold for _, hold in steps)


def tail(steps: Iterable[Step], elapsed: float) -> list[Step]:
    """The part of ``steps`` still to play ``elapsed`` seconds after it began."""
    out: list[Step] = []
    t = 0.0
    for level, hold in steps:
        end = t + hold
        if end > elapsed:
            out.append((level, hold if t >= elapsed else end - elapsed))
        t = end
    return out


def pad(steps: Iterable[Step], length: float) -> list[Step]:
    """``steps`` followed by silence/darkness up to ``length`` seconds."""
    out = list(steps)
    rest = length - total(out)
    if rest > 1e-9:
        out.append((0.0, rest))
    return out


def finish(steps: Iterable[Step]) -> list[Step]:
    """A one-shot sequence that ends switched off, without a trailing wait."""
    out = [s for s in steps if s[1] > 0]
    while out and out[-1][0] == 0:
        out.pop()
    out.append((0.0, 0.0))
    return out


# --------------------------------------------------------------------------
# Backends



class Feedback:
    """No-op feedback (backend ``"none"``) and the base of the others.

    The public methods validate names, serialise callers, never raise (errors
    are logged) and call the ``_event``/``_condition``/``_close`` hooks.
    :meth:`condition` only reaches the hook when the state actually changes.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active: set[str] = set()
        self._closed = False

    @property
    def conditions(self) -> frozenset[str]:
        """The conditions currently active."""
        return frozenset(self._active)

    def event(self, name: str, detail: str = "") -> None:
        if name not in EVENTS:
            log.warning("feedback: unknown event %r ignored", name)
            return
        try:
            with self._lock:
                if not self._closed:
                    self._event(name, detail)
        except Exception as exc:  # the door must never fail on feedback
            log.warning("feedback: event %s failed: %s: %s", name, type(exc).__name__, exc)

    def condition(self, name: str, active: bool) -> None:
        if name not in CONDITIONS:
            log.warning("feedback: unknown condition %r ignored", name)
            return
        active = bool(active)
        try:
            with self._lock:
                if self._closed or (name in self._active) == active:
                    return
                if active:
                    self._active.add(name)
                else:
                    self._active.discard(name)
                self._condition(name, active)
        except Exception as exc:
            log.warning("feedback: condition %s failed: %s: %s", name, type(exc).__name__, exc)

    def close(self) -> None:
        try:
            with self._lock:
                if self._closed:
                    return
                self._closed = True
                self._close()
        except Exception as exc:
            log.warning("feedback: close failed: %s: %s", type(exc).__name__, exc)

    def _shown(self) -> str | None:
        """The active condition with the highest priority."""
        return next((c for c in CONDITION_PRIORITY if c in self._active), None)

    # Hooks, called with the lock held.
    def _event(self, name: str, detail: str) -> None:
        pass

    def _condition(self, name: str, active: bool) -> None:
        pass

    def _close(self) -> None:
        pass


class ConsoleFeedback(Feedback):
    """One flushed line per event (``"stored tag=123 id=abc"``) and per
    condition change (``"offline on"`` / ``"offline off"``).

    Line breaks inside ``detail`` become spaces so every call stays one line.
    """

    def __init__(self, stream: IO[str] | None = None) -> None:
        super().__init__()
        self._stream = stream if stream is not None else sys.stdout

    def _write(self, line: str) -> None:
        self._stream.write(line + "\n")
        self._stream.flush()

    def _event(self, name: str, detail: str) -> None:
        detail = " ".join(str(detail).splitlines())
        self._write(f"{name} {detail}".rstrip())

    def _condition(self, name: str, active: bool) -> None:
        self._write(f"{name} {'on' if active else 'off'}")


def transitions(once: Iterable[Step], loop: Iterable[Step] = ()) -> Iterator[tuple[float, float]]:
    """``(seconds from start, level)`` for each step: ``once`` then ``loop``
    repeated forever (if given)."""
    loop = tuple(loop)
    t = 0.0
    for level, hold in chain(once, cycle(loop) if loop else ()):
        yield t, level
        t += hold


class _Output:
    """One gpiozero output device and the sequence it is playing."""

    def __init__(self, device: Any, passive: bool = False) -> None:
        self.device = device
        self.passive = passive
        self.off: float | None = None if passive else 0
        self.steps: Iterator[tuple[float, float]] = iter(())
        self.start = 0.0
        self.due: tuple[float, float] | None = None  # next (offset, level)
        self.level = 0.0

    def value(self, level: float) -> float | None:
        if not level:
            return self.off
        if not self.passive:
            return 1
        v = math.log2(level / PASSIVE_MID_HZ) / PASSIVE_OCTAVES
        return min(1.0, max(-1.0, v))

    def write(self, level: float) -> None:
        if level != self.level:
            self.device.value = self.value(level)
            self.level = level

    def play(self, once: list[Step], loop: tuple[Step, ...], now: float) -> None:
        """Start a new sequence: the first level is written at once."""
        self.steps = transitions(once, loop)
        self.start = now
        first = next(self.steps, None)
        self.write(first[1] if first else 0.0)
        self.due = next(self.steps, None)

    def advance(self, now: float) -> float | None:
        """Write the levels due by ``now`` (in order, so a late wake-up still
        shows every step); return when the next one is due."""
        while self.due is not None and self.start + self.due[0] <= now:
            self.write(self.due[1])
            self.due = next(self.steps, None)
        return None if self.due is None else self.start + self.due[0]

    def close(self) -> None:
        self.due = None
        try:
            self.device.value = self.off
        finally:
            self.device.close()


class GpioFeedback(Feedback):
    """LEDs and a buzzer through gpiozero; every pin is optional.

    ``time_scale`` multiplies every duration of the pattern table (tests use a
    small value).  With a single LED wired, every pattern uses it.
    """

    def __init__(
        self,
        *,
        green: int | str | None = None,
        red: int | str | None = None,
        buzzer: int | str | None = None,
        buzzer_type: str = "active",
        pin_factory: Any = None,
        time_scale: float = 1.0,
    ) -> None:
        super().__init__()
        if buzzer_type not in BUZZER_TYPES:
            raise ValueError(f"buzzer_type must be 'active' or 'passive', not {buzzer_type!r}")
        if green is None and red is None and buzzer is None:
            raise ValueError("gpio feedback needs at least one of the green, red or buzzer pins")
        if not time_scale > 0:
            raise ValueError("time_scale must be > 0")
        from gpiozero import LED, Buzzer, TonalBuzzer  # lazy: ~100 ms import
        from gpiozero.tones import Tone

        self._patterns = {n: p.scaled(time_scale) for n, p in PATTERNS.items()}
        self._gap = RESUME_GAP * time_scale
        self._outputs: dict[str, _Output] = {}
        try:
            if green is not None:
                self._outputs["green"] = _Output(LED(green, pin_factory=pin_factory))
            if red is not None:
                self._outputs["red"] = _Output(LED(red, pin_factory=pin_factory))
            if buzzer is not None:
                if buzzer_type == "passive":
                    dev = TonalBuzzer(buzzer, mid_tone=Tone(PASSIVE_MID_HZ),
                                      octaves=PASSIVE_OCTAVES, pin_factory=pin_factory)
                    self._outputs["buzzer"] = _Output(dev, passive=True)
                else:
                    self._outputs["buzzer"] = _Output(Buzzer(buzzer, pin_factory=pin_factory))
        except BaseException:
            self._close_outputs()
            raise
        # Current event: (pattern, monotonic start); pending condition chime.
        self._playing: tuple[Pattern, float] | None = None
        self._chime: tuple[Pattern, float] | None = None
        self._displayed: str | None = None  # condition whose light is shown
        # The player thread and the callers write pins only under _cv.
        self._cv = threading.Condition()
        self._stopping = False
        self._player = threading.Thread(target=self._run, name="feedback", daemon=True)
        self._player.start()

    # -- planning ------------------------------------------------------------

    def _light_key(self, pattern: Pattern) -> str | None:
        if pattern.color in self._outputs:
            return pattern.color
        other = "red" if pattern.color == "green" else "green"
        return other if other in self._outputs else None

    def _plan(self, now: float) -> dict[str, tuple[list[Step], tuple[Step, ...]]]:
        """Per output: the one-shot part still to play, then the loop."""
        once: dict[str, list[Step]] = {k: [] for k in self._outputs}
        if self._playing is not None:
            pattern, start = self._playing
            elapsed = now - start
            length = pattern.duration + self._gap
            if elapsed < length:
                light = self._light_key(pattern)
                for key in once:
                    track = pattern.sound if key == "buzzer" else (
                        pattern.light if key == light else ())
                    once[key] = pad(tail(track, elapsed), length - elapsed)
            else:
                self._playing = None
        if self._chime is not None and "buzzer" in once:
            pattern, start = self._chime
            elapsed = max(0.0, now - start)
            if elapsed < pattern.chime_duration:
                once["buzzer"] += tail(pattern.sound, elapsed)
            else:
                self._chime = None
        shown = self._displayed
        loop_key = self._light_key(self._patterns[shown]) if shown else None
        plan: dict[str, tuple[list[Step], tuple[Step, ...]]] = {}
        for key, steps in once.items():
            if shown and key == loop_key:
                plan[key] = ([s for s in steps if s[1] > 0], self._patterns[shown].light)
            else:
                plan[key] = (finish(steps), ())
        return plan

    def _apply(self) -> None:
        with self._cv:
            now = time.monotonic()
            for key, (once, loop) in self._plan(now).items():
                try:
                    self._outputs[key].play(once, loop, now)
                except Exception as exc:  # one broken output must not silence the others
                    log.warning("feedback: %s output failed: %s: %s", key,
                                type(exc).__name__, exc)
            self._cv.notify()

    # -- player thread -------------------------------------------------------

    def _run(self) -> None:
        with self._cv:
            while not self._stopping:
                now = time.monotonic()
                wake = None
                for key, out in list(self._outputs.items()):
                    try:
                        due = out.advance(now)
                    except Exception as exc:
                        log.warning("feedback: %s output failed: %s: %s", key,
                                    type(exc).__name__, exc)
                        out.due = None
                        continue
                    if due is not None and (wake is None or due < wake):
                        wake = due
                self._cv.wait(None if wake is None else max(0.0, wake - time.monotonic()))

    # -- hooks ---------------------------------------------------------------

    def _event(self, name: str, detail: str) -> None:
        self._playing = (self._patterns[name], time.monotonic())
        self._chime = None  # a new event preempts a condition chime too
        self._apply()

    def _condition(self, name: str, active: bool) -> None:
        shown = self._shown()
        if shown == self._displayed:
            return  # a lower-priority condition changed: nothing visible changes
        self._displayed = shown
        if active and shown == name:
            # Newly shown because it turned on: chime once, after the event
            # that is playing (if any).
            start = time.monotonic()
            if self._playing is not None:
                pattern, t0 = self._playing
                start = max(start, t0 + pattern.duration + self._gap)
            self._chime = (self._patterns[name], start)
        else:
            self._chime = None
        self._apply()

    def _close(self) -> None:
        with self._cv:
            self._stopping = True
            self._cv.notify()
        self._player.join(timeout=2)
        with self._cv:
            self._close_outputs()

    def _close_outputs(self) -> None:
        for out in self._outputs.values():
            try:
                out.close()
            except Exception as exc:
                log.warning("feedback: closing %r failed: %s", out.device, exc)
        self._outputs = {}


# --------------------------------------------------------------------------
# Factory


def make_feedback(
    backend: str,
    *,
    green: int | str | None = None,
    red: int | str | None = None,
    buzzer: int | str | None = None,
    buzzer_type: str = "active",
    fallback: str = "none",
    pin_factory: Any = None,
) -> Feedback:
    """Build the configured backend.

    ``"gpio"`` on a machine where the pins cannot be opened raises
    :class:`FeedbackUnavailable`, or with ``fallback="console"`` logs a warning
    and returns a :class:`ConsoleFeedback`.  Bad settings raise ``ValueError``.
    """
    if backend not in BACKENDS:
        raise ValueError(f"feedback.backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    if fallback not in FALLBACKS:
        raise ValueError(f"feedback.fallback must be 'none' or 'console', not {fallback!r}")
    if backend == "none":
        return Feedback()
    if backend == "console":
        return ConsoleFeedback()
    if buzzer_type not in BUZZER_TYPES:
        raise ValueError(f"feedback.buzzer_type must be 'active' or 'passive', not {buzzer_type!r}")
    if green is None and red is None and buzzer is None:
        raise ValueError("feedback.backend = \"gpio\" needs at least one of green, red, buzzer")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            return GpioFeedback(green=green, red=red, buzzer=buzzer,
                                buzzer_type=buzzer_type, pin_factory=pin_factory)
        except Exception as exc:
            error = exc
        finally:
            for w in caught:
                log.debug("feedback: gpiozero: %s", w.message)
    tried = [str(w.message).removeprefix("Falling back from ") for w in caught
             if type(w.message).__name__ == "PinFactoryFallback"]
    problem = _describe(error, tried)
    if fallback == "console":
        log.warning("%s; using console feedback instead", problem)
        return ConsoleFeedback()
    raise FeedbackUnavailable(
        f'{problem}; set feedback.fallback = "console" or feedback.backend = "none"'
    ) from None


def _describe(exc: Exception, tried: list[str]) -> str:
    """One line: what failed and why (gpiozero's reasons per pin factory)."""
    reason = " ".join(f"{type(exc).__name__}: {exc}".split())
    if tried:
        reason += "; tried " + "; ".join(" ".join(t.split()) for t in tried)
    if type(exc).__name__ == "BadPinFactory":
        return f"GPIO is not available on this machine ({reason})"
    return f"GPIO feedback could not be set up, check the feedback pins ({reason})"
