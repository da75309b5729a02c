"""atheris target: the reader frame decoders (agent.reading.frames): line, rdm6300, regex.

Run: scripts/fuzz --seconds 60  (or: python fuzz/fuzz_frames.py -max_total_time=60)
"""

import sys

import atheris

with atheris.instrument_imports(include=["agent"]):
    from agent.reading.frames import make_decoder

PATTERN = r"(?:ID:)?(?P<tag>[0-9A-F]{4,12})(?:,\d+)?"


def TestOneInput(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    proto = ("line", "rdm6300", "regex")[fdp.ConsumeIntInRange(0, 2)]
    max_len = fdp.ConsumeIntInRange(1, 80)
    dec = make_decoder(proto, max_len=max_len, pattern=PATTERN if proto == "regex" else None)
    while fdp.remaining_bytes():
        chunk = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 40))
        for tag in dec.feed(chunk):  # never raises; yields clean tags only
            if not (isinstance(tag, str) and tag and tag.isprintable() and tag.isascii()):
                raise AssertionError(f"unclean tag {tag!r}")
            if proto == "line" and len(tag) > max_len:
                raise AssertionError("tag over max_len")


if __name__ == "__main__":
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()
