"""The ``"gpio"`` backend: LEDs and an active or passive buzzer through gpiozero,
and :func:`pin_factory_status` for ``agent doctor``.

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
import os
import threading
import time
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, NamedTuple

from agent.errors import FeedbackUnavailable
from agent.feedback.base import Feedback
from agent.feedback.patterns import (
    BUZZER_TYPES,
    PASSIVE_MID_HZ,
    PASSIVE_OCTAVES,
    PATTERNS,
    RESUME_GAP,
    Pattern,
    Step,
    finish,
    pad,
    tail,
    transitions,
)

if TYPE_CHECKING:
    from agent.config import FeedbackConfig

log = logging.getLogger("agent.feedback")

__all__ = ["DEFAULT_PIN_FACTORIES", "GpioFeedback", "PinFactoryStatus", "pin_factory_status"]


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

    @classmethod
    def from_config(cls, fc: FeedbackConfig, *, pin_factory: Any = None) -> GpioFeedback:
        """The pins of ``fc``.  A machine where they cannot be opened raises
        :class:`FeedbackUnavailable` with one line saying why (gpiozero's
        reason per pin factory tried); bad settings raise ValueError."""
        if fc.buzzer_type not in BUZZER_TYPES:
            raise ValueError(f"feedback.buzzer_type must be 'active' or 'passive', not {fc.buzzer_type!r}")
        if fc.green_pin is None and fc.red_pin is None and fc.buzzer_pin is None:
            raise ValueError("feedback.backend = \"gpio\" needs at least one of green, red, buzzer")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                return cls(green=fc.green_pin, red=fc.red_pin, buzzer=fc.buzzer_pin,
                           buzzer_type=fc.buzzer_type, pin_factory=pin_factory)
            except Exception as exc:
                error = exc
            finally:
                for w in caught:
                    log.debug("feedback: gpiozero: %s", w.message)
        tried = [str(w.message).removeprefix("Falling back from ") for w in caught
                 if type(w.message).__name__ == "PinFactoryFallback"]
        raise FeedbackUnavailable(_describe(error, tried)) from None

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
        # lazy: ~100 ms to import, and only this backend needs gpiozero (a
        # machine without it still runs the console and none backends)
        from gpiozero import LED, Buzzer, TonalBuzzer
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


def _describe(exc: Exception, tried: list[str]) -> str:
    """One line: what failed and why (gpiozero's reasons per pin factory)."""
    reason = _one_line(exc)
    if tried:
        reason += "; tried " + "; ".join(" ".join(t.split()) for t in tried)
    if type(exc).__name__ == "BadPinFactory":
        return f"GPIO is not available on this machine ({reason})"
    return f"GPIO feedback could not be set up, check the feedback pins ({reason})"


def _one_line(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())


# --------------------------------------------------------------------------
# Which pin factory works (agent doctor)

#: gpiozero's own order when ``GPIOZERO_PIN_FACTORY`` is unset (its
#: docs/api_pins.rst: lgpio, then RPi.GPIO, then pigpio, then native).
DEFAULT_PIN_FACTORIES = ("lgpio", "rpigpio", "pigpio", "native")


class PinFactoryStatus(NamedTuple):
    """Which gpiozero pin factory the first device of a new process would get."""

    name: str | None  # its class ("LGPIOFactory"); None when none works
    error: str | None  # when none works: one line, e.g. "BadPinFactory: ..."; else None
    tried: tuple[str, ...] = ()  # "lgpio: <reason>" per default factory that failed first


def pin_factory_status() -> PinFactoryStatus:
    """Resolve the pin factory as gpiozero does, with its public parts only:
    ``GPIOZERO_PIN_FACTORY`` (the name verbatim, then lower-cased) or else
    :data:`DEFAULT_PIN_FACTORIES` in order, each looked up in the
    ``gpiozero_pin_factories`` entry-point group.  The factory found is closed
    again, so no pin stays claimed; ``Device.pin_factory`` is neither read nor set.
    Never raises."""
    from importlib.metadata import entry_points

    try:
        # lazy: ~100 ms to import, and only a gpio configuration asks
        from gpiozero.exc import BadPinFactory
    except Exception as exc:  # noqa: BLE001 - not installed, or broken
        return PinFactoryStatus(None, _one_line(exc))
    group = {ep.name: ep for ep in entry_points(group="gpiozero_pin_factories")}
    wanted = os.environ.get("GPIOZERO_PIN_FACTORY")
    if wanted is not None:
        ep = group.get(wanted) or group.get(wanted.lower())
        if ep is None:
            return PinFactoryStatus(None, _one_line(BadPinFactory(f"Unable to find pin factory {wanted!r}")))
        names = [ep.name]
    else:
        names = list(DEFAULT_PIN_FACTORIES)
    tried: list[str] = []
    for name in names:
        try:
            if name not in group:
                raise BadPinFactory(f"no entry point {name!r} in gpiozero_pin_factories")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # gpiozero's own fallback notes
                factory = group[name].load()()
        except Exception as exc:  # noqa: BLE001 - each library fails its own way
            if wanted is not None:
                return PinFactoryStatus(None, _one_line(exc))
            tried.append(f"{name}: {' '.join(str(exc).split())}")
            continue
        try:
            factory.close()
        except Exception:  # noqa: BLE001 - it worked; releasing it is best effort
            pass
        return PinFactoryStatus(type(factory).__name__, None, tuple(tried))
    error = _one_line(BadPinFactory("Unable to load any default pin factory!"))
    return PinFactoryStatus(None, error, tuple(tried))
