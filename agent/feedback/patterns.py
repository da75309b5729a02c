"""The feedback patterns and the pure helpers that turn them into timelines.

Three one-shot *events* (``stored``, ``already``, ``error``) and three
persistent *conditions* (``reader_missing`` > ``auth`` > ``offline``, in
priority order).  The pattern table lives in :data:`PATTERNS` and is documented
in ``docs/feedback.md``.  Standard library only: the GPIO player
(:mod:`agent.feedback.gpio`) schedules pins from these timelines, and the
tests check the table against the documentation without any hardware.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import chain, cycle

__all__ = [
    "BUZZER_TYPES",
    "CONDITIONS",
    "CONDITION_PRIORITY",
    "EVENTS",
    "PATTERNS",
    "RESUME_GAP",
    "Pattern",
    "Step",
    "finish",
    "pad",
    "tail",
    "total",
    "transitions",
]

EVENTS = ("stored", "already", "error")
CONDITIONS = ("auth", "offline", "reader_missing")
#: Highest priority first: the condition shown when several are active.
CONDITION_PRIORITY = ("reader_missing", "auth", "offline")
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


def transitions(once: Iterable[Step], loop: Iterable[Step] = ()) -> Iterator[tuple[float, float]]:
    """``(seconds from start, level)`` for each step: ``once`` then ``loop``
    repeated forever (if given)."""
    loop = tuple(loop)
    t = 0.0
    for level, hold in chain(once, cycle(loop) if loop else ()):
        yield t, level
        t += hold
