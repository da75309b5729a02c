"""GPIO lines through the kernel's character device, with libgpiod v2's Python binding.

:func:`open_edges` requests two input lines (Wiegand D0 and D1) with edge
detection on both edges, kernel timestamps on CLOCK_MONOTONIC, debounce off
and an event buffer of ``buffer_events`` (the kernel's default, 16 per line,
overflows on a 34-bit frame, 68 edges, and then discards the oldest).  The
result is an :class:`EdgeSource`: one fd to ``select()`` on, no callback
thread.  :func:`reset_pulser` drives one output line low for a moment (a
PN532's RSTPDN).

A pin is a BCM number or a line name.  The Pi names its header lines
``GPIO<n>``, and the header chip's number changed (a Pi 5 had it at gpiochip4
before kernel 6.6.45, gpiochip0 since), so a BCM number is looked up by that
name on every chip unless ``chip`` says which chip; a chip is "/dev/gpiochipN",
"gpiochipN" or a chip label.

Every failure is a :class:`GpioUnavailable` (a ReaderError) with a one-line
message saying what to do: no GPIO chip, permission denied, a line held by
another program (named when the kernel says), a line not found, or the old
libgpiod v1 binding (same module name ``gpiod``, no ``request_lines``).
"""

from __future__ import annotations

import errno
import glob
import os
import re
import threading
import time
from datetime import timedelta
from typing import Any, Callable, Protocol

from agent.errors import ReaderError
from agent.reading.wiegand import Edge

__all__ = ["EdgeSource", "GpioUnavailable", "open_edges", "reset_pulser", "resolve_pins", "gpiod_module",
           "DEV_GLOB", "INSTALL_GPIOD"]

DEV_GLOB = "/dev/gpiochip*"
#: How to get libgpiod v2's binding; doctor, probe and the daemon all say this.
INSTALL_GPIOD = ("Raspberry Pi OS / Debian trixie: sudo apt install python3-libgpiod; bookworm (whose "
                 "package is v1): sudo pip3 install --break-system-packages gpiod==2.5.0, or "
                 "/opt/rfid-agent/venv/bin/pip install gpiod==2.5.0 for a scripts/install venv")


class GpioUnavailable(ReaderError):
    """GPIO lines cannot be used; ``str()`` is one line saying why and what to do."""


class EdgeSource(Protocol):
    """What the Wiegand reader reads: edges on D0 (line 0) and D1 (line 1)."""

    def fileno(self) -> int: ...
    def read(self) -> list[Edge]: ...
    def levels(self) -> tuple[int, int]: ...
    def close(self) -> None: ...


def gpiod_module() -> Any:
    """The libgpiod v2 module, imported only when GPIO is configured (a C extension)."""
    try:
        import gpiod  # lazy: only Wiegand readers and reset lines need it
    except ImportError:
        raise GpioUnavailable(f"the gpiod Python module (libgpiod v2) is not installed: {INSTALL_GPIOD}") from None
    if not hasattr(gpiod, "request_lines"):
        version = getattr(gpiod, "__version__", "1.x")
        raise GpioUnavailable(f"the gpiod Python module is libgpiod v1 ({version}); the agent needs "
                              f"v2: {INSTALL_GPIOD}")
    return gpiod


def _chips() -> list[str]:
    paths = glob.glob(DEV_GLOB)
    if not paths:
        raise GpioUnavailable(f"no GPIO chip: {DEV_GLOB} does not exist (not a Raspberry Pi, or a "
                              "kernel without the GPIO character device)")
    return sorted(paths, key=lambda p: [int(s) if s.isdigit() else s for s in re.split(r"(\d+)", p)])


def _oserror(exc: OSError, path: str, what: str) -> GpioUnavailable:
    if exc.errno in (errno.EACCES, errno.EPERM):
        return GpioUnavailable(f"permission denied on {path}: the agent's user must be in group gpio "
                               "(sudo usermod -aG gpio USER, then restart the agent)")
    if exc.errno == errno.ENOENT:
        return GpioUnavailable(f"{path} does not exist ({what})")
    return GpioUnavailable(f"cannot use {path} ({what}): {os.strerror(exc.errno or 0) or exc}")


class _Chips:
    """The chips consulted while resolving pins, opened once each."""

    def __init__(self, gpiod: Any) -> None:
        self._gpiod = gpiod
        self._open: dict[str, Any] = {}

    def get(self, path: str) -> Any:
        if path not in self._open:
            try:
                self._open[path] = self._gpiod.Chip(path)
            except OSError as exc:
                raise _oserror(exc, path, "GPIO chip") from None
        return self._open[path]

    def close(self) -> None:
        for chip in self._open.values():
            try:
                chip.close()
            except Exception:
                pass

    def chip_path(self, chip: str) -> str:
        """A chip given as "/dev/gpiochipN", "gpiochipN" or its label."""
        if chip.startswith("/"):
            return chip
        if re.fullmatch(r"gpiochip\d+", chip):
            return f"/dev/{chip}"
        for path in _chips():
            try:
                if self.get(path).get_info().label == chip:
                    return path
            except GpioUnavailable:
                continue
        raise GpioUnavailable(f"no GPIO chip labelled {chip!r} (gpioinfo lists the chips)")

    def offset(self, path: str, name: str) -> int | None:
        """The offset of the line called ``name`` on ``path``, or None."""
        chip = self.get(path)
        try:
            return int(chip.line_offset_from_id(name))
        except (OSError, ValueError):
            return None

    def resolve(self, chip: str | None, pin: int | str) -> tuple[str, int]:
        """(chip path, line offset) of one pin."""
        if isinstance(pin, str) and pin.isdigit():
            pin = int(pin)  # a BCM number written as a string
        name = f"GPIO{pin}" if isinstance(pin, int) else pin
        if chip is not None:
            path = self.chip_path(chip)
            found = self.offset(path, name)
            if found is None and isinstance(pin, int) and pin < self.get(path).get_info().num_lines:
                found = pin  # a chip whose lines have no names: the BCM number is the offset
            if found is None:
                raise GpioUnavailable(f"no line {name} on {path} (gpioinfo {path} lists its lines)")
            return path, found
        denied: GpioUnavailable | None = None
        for path in _chips():
            try:
                found = self.offset(path, name)
            except GpioUnavailable as exc:  # one unreadable chip must not hide the others
                denied = exc
                continue
            if found is not None:
                return path, found
        if isinstance(pin, int) and os.path.exists("/dev/gpiochip0"):
            return self.resolve("/dev/gpiochip0", pin)
        if denied is not None:
            raise denied
        raise GpioUnavailable(f"no GPIO line named {name} on any chip ({', '.join(_chips())}); "
                              "set reader.gpiochip or use the name gpioinfo shows")

    def holder(self, path: str, offset: int) -> str:
        """Who holds a line, as the kernel says, for a "line busy" message."""
        try:
            consumer = self.get(path).get_line_info(offset).consumer
        except Exception:
            consumer = ""
        return f"held by {consumer!r}" if consumer else "held by another program"


def resolve_pins(chip: str | None, *pins: int | str) -> list[tuple[str, int]]:
    """(chip path, line offset) of each pin, found as the readers find them,
    without requesting any line (``agent doctor`` looks while the daemon runs)."""
    chips = _Chips(gpiod_module())
    try:
        return [chips.resolve(chip, pin) for pin in pins]
    finally:
        chips.close()


def _request(chips: _Chips, gpiod: Any, path: str, config: dict[Any, Any], what: dict[int, str],
             **kwargs: Any) -> Any:
    try:
        return gpiod.request_lines(path, config=config, **kwargs)
    except OSError as exc:
        if exc.errno == errno.EBUSY:
            busy = "; ".join(f"{name} ({chips.holder(path, off)})" for off, name in what.items())
            raise GpioUnavailable(f"GPIO line busy on {path}: {busy}; stop that program or "
                                  "choose other pins") from None
        raise _oserror(exc, path, ", ".join(what.values())) from None


class _GpioEdges:
    """An EdgeSource over one libgpiod v2 line request."""

    def __init__(self, gpiod: Any, request: Any, offsets: tuple[int, int], buffer_events: int) -> None:
        self._request = request
        self._offsets = offsets
        self._line = {offsets[0]: 0, offsets[1]: 1}
        self._max = buffer_events
        self._falling = gpiod.EdgeEvent.Type.FALLING_EDGE

    def fileno(self) -> int:
        return int(self._request.fd)

    def read(self) -> list[Edge]:
        # only called once select() said readable: read_edge_events blocks otherwise
        return [Edge(self._line[ev.line_offset], int(ev.timestamp_ns), ev.event_type == self._falling)
                for ev in self._request.read_edge_events(self._max)]

    def levels(self) -> tuple[int, int]:
        d0, d1 = self._request.get_values(list(self._offsets))
        return int(bool(d0)), int(bool(d1))

    def close(self) -> None:
        self._request.release()


def _edge_settings(gpiod: Any) -> Any:
    """How D0 and D1 are requested."""
    line = gpiod.line
    return gpiod.LineSettings(
        direction=line.Direction.INPUT,
        edge_detection=line.Edge.BOTH,  # rising edges let the decoder drop glitches
        event_clock=line.Clock.MONOTONIC,  # the decoder's deadlines are on time.monotonic_ns()
        debounce_period=timedelta(0),  # a debouncer would swallow 40 µs pulses
    )  # bias stays as the board has it: readers and level shifters bring their own pull-ups


def open_edges(chip: str | None, d0: int | str, d1: int | str, *, consumer: str = "rfid-agent",
               buffer_events: int = 256) -> EdgeSource:
    """Request D0 and D1 as inputs with edge events; see the module docstring."""
    gpiod = gpiod_module()
    size = max(256, int(buffer_events))  # a 34-bit frame is 68 edges; a burst of two, 136
    chips = _Chips(gpiod)
    try:
        (path0, off0), (path1, off1) = chips.resolve(chip, d0), chips.resolve(chip, d1)
        if path0 != path1:
            raise GpioUnavailable(f"D0 and D1 are on different chips ({path0}, {path1}): wire both "
                                  "to the same chip's lines")
        if off0 == off1:
            raise GpioUnavailable(f"D0 and D1 are the same line ({path0} line {off0})")
        settings = _edge_settings(gpiod)
        request = _request(chips, gpiod, path0, {(off0, off1): settings},
                           {off0: f"D0 ({d0})", off1: f"D1 ({d1})"},
                           consumer=consumer, event_buffer_size=size)
    finally:
        chips.close()
    return _GpioEdges(gpiod, request, (off0, off1), size)


def reset_pulser(chip: str | None, pin: int | str, *, low_seconds: float = 0.1,
                 settle_seconds: float = 0.05) -> Callable[[], None]:
    """A function that pulls ``pin`` low for ``low_seconds`` and waits ``settle_seconds``.

    Nothing is opened before the first call (so configuring a reset line never
    fails at start); from then on the line stays requested and driven high, so
    it does not float between pulses.  Raises GpioUnavailable when the line
    cannot be had.
    """
    state: dict[str, Any] = {}
    lock = threading.Lock()

    def pulse() -> None:
        with lock:
            gpiod = gpiod_module()
            if "request" not in state:
                chips = _Chips(gpiod)
                try:
                    path, offset = chips.resolve(chip, pin)
                    settings = gpiod.LineSettings(direction=gpiod.line.Direction.OUTPUT,
                                                  output_value=gpiod.line.Value.ACTIVE)
                    state["request"] = _request(chips, gpiod, path, {offset: settings},
                                                {offset: f"reset ({pin})"}, consumer="rfid-agent-reset")
                finally:
                    chips.close()
                state["offset"] = offset
            request, offset = state["request"], state["offset"]
            try:
                request.set_value(offset, gpiod.line.Value.INACTIVE)
                time.sleep(low_seconds)
                request.set_value(offset, gpiod.line.Value.ACTIVE)
            except OSError as exc:
                state.clear()
                raise GpioUnavailable(f"reset line {pin} failed: {exc}") from None
            time.sleep(settle_seconds)

    return pulse
