"""atheris target: CrossChex Cloud answers (decode_envelope, parse_records_answer)."""

import sys

import atheris

with atheris.instrument_imports(include=["agent"]):
    from agent.crosschex.wire import (
        CcRecord,
        CrossChexError,
        decode_envelope,
        parse_records_answer,
    )


def TestOneInput(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    which = fdp.ConsumeBool()
    body = fdp.ConsumeBytes(fdp.remaining_bytes())
    try:
        if which:
            header, payload = decode_envelope(body)
            if not (isinstance(header, dict) and isinstance(payload, dict)):
                raise AssertionError("envelope parts are not objects")
        else:
            records, pages = parse_records_answer(body, page=1)
            if not (isinstance(pages, int) and pages >= 0 and all(isinstance(r, CcRecord) for r in records)):
                raise AssertionError("bad page")
    except CrossChexError as exc:
        if "\n" in str(exc):
            raise AssertionError("multi-line error") from None


if __name__ == "__main__":
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()
