"""atheris target: the keyboard-wedge decoder (agent.reading.hidkeys.HidDecoder) on arbitrary events."""

import sys
from dataclasses import dataclass

import atheris

with atheris.instrument_imports(include=["agent"]):
    from agent.reading.hidkeys import HidDecoder


@dataclass
class Ev:
    type: int
    code: int
    value: int
    sec: int
    usec: int


def TestOneInput(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    max_len = fdp.ConsumeIntInRange(1, 40)
    dec = HidDecoder(gap_seconds=0.5, max_len=max_len)
    sec = 1000
    while fdp.remaining_bytes() >= 4:
        sec += fdp.ConsumeIntInRange(-1, 2)
        ev = Ev(fdp.ConsumeIntInRange(0, 4), fdp.ConsumeIntInRange(0, 130), fdp.ConsumeIntInRange(-1, 3),
                sec, fdp.ConsumeIntInRange(0, 999_999))
        if fdp.ConsumeBool():
            ev = fdp.ConsumeUnicodeNoSurrogates(4)  # not an event at all
        tag = dec.feed(ev)
        if tag is not None and not (isinstance(tag, str) and tag.isalnum() and len(tag) <= max_len):
            raise AssertionError(f"bad tag {tag!r}")


if __name__ == "__main__":
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()
