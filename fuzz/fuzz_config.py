"""atheris target: the configuration (agent.config.load on file bytes, from_dict on tomllib output)."""

import os
import sys
import tempfile
import tomllib

import atheris

with atheris.instrument_imports(include=["agent"]):
    from agent.config import ConfigError, from_dict, load

PATH = os.path.join(tempfile.mkdtemp(prefix="fuzz-config-"), "c.toml")
PREFIX = b'timezone = "Europe/Bucharest"\n'


def TestOneInput(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    raw = (PREFIX if fdp.ConsumeBool() else b"") + fdp.ConsumeBytes(fdp.remaining_bytes())
    with open(PATH, "wb") as f:
        f.write(raw)
    try:
        load(PATH)
    except ConfigError as exc:
        if "\n" in str(exc):
            raise AssertionError("multi-line config error") from None
    try:
        doc = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError):
        return
    try:
        from_dict(doc, "fuzz.toml")
    except ConfigError:
        pass


if __name__ == "__main__":
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()
