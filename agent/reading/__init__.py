"""agent.reading: RFID readers, chosen by ``reader.type`` (python-can style).

:data:`BACKENDS` maps a reader type to the module and class that implement
it, and :data:`PROTOCOL_BACKENDS` a (type, protocol) pair whose protocol needs
its own reader rather than a frame decoder (a PN532 is asked for each card; an
RDM6300 just talks); :func:`make_reader` imports that module only when a
reader of its kind is configured, so a missing driver (pyserial, evdev, gpiod)
never breaks importing the package or the other reader kinds.  A new reader
kind is one module with a :class:`~agent.reading.base.Reader` subclass (with
``from_config``) plus one line here.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from agent.reading.base import Reader

if TYPE_CHECKING:
    from agent.config import ReaderConfig

__all__ = ["BACKENDS", "PROTOCOL_BACKENDS", "Reader", "make_reader"]

#: ``(reader.type, reader.protocol)`` -> (module, class name); checked before BACKENDS
PROTOCOL_BACKENDS: dict[tuple[str, str], tuple[str, str]] = {
    ("serial", "pn532"): ("agent.reading.pn532", "Pn532Reader"),
}

#: ``reader.type`` -> (module, class name)
BACKENDS: dict[str, tuple[str, str]] = {
    "serial": ("agent.reading.serial", "SerialReader"),
    "hid": ("agent.reading.hid", "HidReader"),
    "wiegand": ("agent.reading.wiegandreader", "WiegandReader"),
}


def make_reader(rc: ReaderConfig) -> Reader:
    """The reader for one ``[reader]`` table; ValueError for an unknown type."""
    found = PROTOCOL_BACKENDS.get((rc.type, rc.protocol)) or BACKENDS.get(rc.type)
    if found is None:
        raise ValueError(f"unknown reader type {rc.type!r}; expected one of "
                         f"{', '.join(BACKENDS)}")
    module, cls = found
    reader_class: type[Reader] = getattr(importlib.import_module(module), cls)
    return reader_class.from_config(rc)
