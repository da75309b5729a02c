"""agent.reading: RFID readers, chosen by ``reader.type`` (python-can style).

:data:`BACKENDS` maps a reader type to the module and class that implement
it; :func:`make_reader` imports that module only when a reader of its type
is configured, so a missing driver (pyserial, evdev) never breaks importing
the package or the other reader kinds.  A new reader kind is one module with
a :class:`~agent.reading.base.Reader` subclass (with ``from_config``) plus one
line here.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from agent.reading.base import Reader

if TYPE_CHECKING:
    from agent.config import ReaderConfig

__all__ = ["BACKENDS", "Reader", "make_reader"]

#: ``reader.type`` -> (module, class name)
BACKENDS: dict[str, tuple[str, str]] = {
    "serial": ("agent.reading.serial", "SerialReader"),
    "hid": ("agent.reading.hid", "HidReader"),
}


def make_reader(rc: ReaderConfig) -> Reader:
    """The reader for one ``[reader]`` table; ValueError for an unknown type."""
    try:
        module, cls = BACKENDS[rc.type]
    except KeyError:
        raise ValueError(f"unknown reader type {rc.type!r}; expected one of "
                         f"{', '.join(BACKENDS)}") from None
    reader_class: type[Reader] = getattr(importlib.import_module(module), cls)
    return reader_class.from_config(rc)
