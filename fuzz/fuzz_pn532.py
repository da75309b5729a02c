"""atheris target: the PN532 frame parser and answer parsers (agent.reading.pn532wire).

Run: scripts/fuzz --seconds 60  (or: python fuzz/fuzz_pn532.py -max_total_time=60)
"""

import sys

import atheris

with atheris.instrument_imports(include=["agent"]):
    from agent.reading import pn532wire as wire

KINDS = ("ack", "nack", "error", "data")


def TestOneInput(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    parser = wire.FrameParser()
    while fdp.remaining_bytes():
        chunk = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 40))
        for frame in parser.feed(chunk):  # never raises; yields checked frames only
            if frame.kind not in KINDS:
                raise AssertionError(f"unknown frame kind {frame.kind!r}")
            if frame.kind != "data":
                continue
            params = wire.answer_params(frame, wire.IN_LIST_PASSIVE_TARGET)
            if params is not None:
                uid, reason = wire.parse_target(params)
                if uid is not None and (len(uid) not in wire.UID_LENGTHS or reason is not None):
                    raise AssertionError("a target answer gave a bad UID")
            params = wire.answer_params(frame, wire.GET_FIRMWARE_VERSION)
            if params is not None and wire.parse_firmware(params) is not None and len(params) != 4:
                raise AssertionError("firmware answer of the wrong size accepted")
        if fdp.ConsumeBool():
            parser.abandon()
    if "internal_error" in parser.dropped:
        raise AssertionError("the parser hit an internal error")


if __name__ == "__main__":
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()
