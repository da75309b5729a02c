"""atheris target: the Wiegand decoder (agent.reading.wiegand) on arbitrary edge streams.

Run: scripts/fuzz --seconds 60  (or: python fuzz/fuzz_wiegand.py -max_total_time=60)
"""

import sys

import atheris

with atheris.instrument_imports(include=["agent"]):
    from agent.reading.wiegand import Edge, WiegandDecoder

MS = 1_000_000


def TestOneInput(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    dec = WiegandDecoder(gap_s=fdp.ConsumeIntInRange(1, 50) / 1000, swap=fdp.ConsumeBool(),
                         keypad=fdp.ConsumeBool())
    t = fdp.ConsumeIntInRange(-10**12, 10**12)
    while fdp.remaining_bytes():
        batch = []
        for _ in range(fdp.ConsumeIntInRange(0, 40)):
            # mostly forward steps of up to 60 ms (bits, gaps, glitches), sometimes backwards
            t += fdp.ConsumeIntInRange(-MS, 60 * MS)
            batch.append(Edge(fdp.ConsumeIntInRange(0, 1), t, fdp.ConsumeBool()))
        tags = dec.feed(batch)  # never raises
        if fdp.ConsumeBool():
            tags += dec.flush(t + fdp.ConsumeIntInRange(0, 60 * MS))
        for tag in tags:
            n, colon, digits = tag.partition(":")
            if not (colon and n.isdigit() and (int(n) in (4, 8) or 24 <= int(n) <= 64)):
                raise AssertionError(f"bad bit count in {tag!r}")
            if len(digits) != (int(n) + 3) // 4 or digits != digits.upper() or int(digits, 16) >> int(n):
                raise AssertionError(f"bad hex in {tag!r}")
    if dec.dropped["internal_error"]:
        raise AssertionError(f"decoder error: {dec.last_drop}")


if __name__ == "__main__":
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()
