"""atheris target: iFlow's answer (agent.delivery.wire.classify) and Retry-After."""

import sys

import atheris

with atheris.instrument_imports(include=["agent"]):
    from agent.delivery.wire import AnswerError, Item, classify, parse_retry_after

ITEMS = [Item("k1", "123", "2026-11-22", "10:00:00"), Item("k2", "456", "2026-11-22", "10:00:01"),
         Item("k3", "123", "2026-11-22", "10:00:00")]
STATES = {"delivered", "duplicate", "rejected", "pending"}


def TestOneInput(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    n = fdp.ConsumeIntInRange(0, 3)
    if fdp.ConsumeBool():
        parse_retry_after(fdp.ConsumeUnicodeNoSurrogates(40), now=1_800_000_000.0)
    body = fdp.ConsumeBytes(fdp.remaining_bytes())
    try:
        out = classify(ITEMS[:n], body)
    except AnswerError:
        return
    if [o.key for o in out] != [i.key for i in ITEMS[:n]] or any(o.state not in STATES for o in out):
        raise AssertionError(f"bad outcomes {out!r}")


if __name__ == "__main__":
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()
