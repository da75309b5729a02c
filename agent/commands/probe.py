"""``agent probe``: hold a card to the reader and see every number it yields.

Opens the configured reader(s) directly, exactly as the daemon would (serial:
the reader's own exclusive ``open()`` and the configured decoder; hid: the
grabbed evdev device and :class:`agent.reading.hidkeys.HidDecoder`), and prints, once per
card (repeats within :data:`DEBOUNCE_S` of the last sighting are the same
card still held), the raw data and the number in every format, marking the
configured one::

    card read on "door" (serial /dev/ttyUSB0, rdm6300):
      raw        0F00A1B2C3
      decimal10  0010597059   <- configured (reader.tag_format)
      hex        00A1B2C3
      wiegand26  161,45763

Input that reaches the port but never forms a valid tag (wrong protocol or
baud rate) is reported too, rate-limited. The daemon must be stopped first:
when it runs (it answers on its control socket, or the device is locked or
grabbed) probe says so in one line and exits 1.

Exit status: 0 after ``--count`` cards, on Ctrl-C, or at ``--timeout`` when at
least one card (and ``--count`` if given) was read; 1 when no card came within
``--timeout`` seconds, the reader cannot be opened or fails; 2 for an unknown
``--reader``.
"""

from __future__ import annotations

import argparse
import os
import queue
import select
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable

from agent.config import Config, ReaderConfig
from agent.errors import DaemonError, NoDaemon, ReaderBusy
from agent.reading.base import Reader
from agent.reading.serial import SerialReader
from agent.reading.tagformat import FORMATS, all_formats, kind_for_protocol
from agent.runtime.control import ask
from agent.runtime.requests import StatusRequest
from agent.runtime.wiring import make_reader

__all__ = ["add_arguments", "main", "card_block", "describe", "DAEMON_HOLDS", "DEBOUNCE_S", "read_loop"]

DAEMON_HOLDS = ("the agent daemon is running and holds the reader: stop it first "
                "(systemctl stop rfid-agent)")
DEBOUNCE_S = 1.0
NOISE_REPORT_S = 2.0
_TICK = 0.5

Put = Callable[[tuple[str, str, Any]], None]


# --------------------------------------------------------------- printing


def describe(rc: ReaderConfig) -> str:
    if rc.type == "serial":
        text = f"serial {rc.port}, {rc.protocol}"
    else:
        text = f"hid {rc.path or (repr(rc.device_name) if rc.device_name else rc.usb_id)}"
    if rc.byte_order != "big":
        text += f", byte_order {rc.byte_order}"
    return text


def card_block(name: str, description: str, raw: str, formats: dict[str, str | None], configured: str) -> str:
    """The lines printed for one card (pure)."""
    lines = [f'card read on "{name}" ({description}):']
    for fmt in FORMATS:
        value = formats.get(fmt)
        if fmt == "raw":
            value = raw if raw.isprintable() else repr(raw)
        shown = value if value is not None else "-"
        line = f"  {fmt:<10} {shown}"
        if fmt == configured:
            line = f"{line:<23}   <- configured (reader.tag_format)"
            if value is None:
                line += ": DOES NOT APPLY to this card"
        elif value is None:
            line = f"{line:<23}   (does not apply to this input)"
        lines.append(line)
    return "\n".join(lines)


def _noise_text(name: str, counts: Counter, last: str | None) -> str:
    what = ", ".join(f"{k}={v}" for k, v in sorted(counts.items()))
    text = f'  (reader "{name}": input ignored: {what}'
    if last:
        text += f"; last: {last}"
    return text + "; check reader.protocol and baudrate)"


# ------------------------------------------------------------ read loops


def _dropped(decoder: Any) -> Counter:
    return Counter(getattr(decoder, "dropped", Counter()))


class _NoiseReporter:
    """Hands new decoder drops to the main thread, at most every NOISE_REPORT_S."""

    def __init__(self, name: str, decoder: Any, put: Put) -> None:
        self.name, self.decoder, self.put = name, decoder, put
        self.seen = _dropped(decoder)
        self.last = float("-inf")

    def check(self) -> None:
        now = time.monotonic()
        if now - self.last < NOISE_REPORT_S:
            return
        current = _dropped(self.decoder)
        new = current - self.seen
        if new:
            self.seen, self.last = current, now
            self.put(("noise", self.name, (new, getattr(self.decoder, "last_drop", None))))


def read_loop(reader: Reader, dev: Any, stop: threading.Event, put: Put) -> None:
    """Read an open device until ``stop`` with the reader's own read step (the
    daemon's); tags and problems go to ``put``. Unlike the daemon, probe does
    not reopen a failed device: it says so and the command ends."""
    noise = _NoiseReporter(reader.name, reader.decoder, put)
    what = "the serial port" if isinstance(reader, SerialReader) else "the input device"
    try:
        fd = reader.input_fd(dev)
        while not stop.is_set():
            if fd is not None and not select.select([fd], [], [], _TICK)[0]:
                continue
            n, tags = reader.read_ready(dev)
            noise.check()  # before the tags: probe may exit at the next card
            for tag in tags:
                put(("tag", reader.name, tag))
            if not n and fd is not None and stop.wait(0.05):  # readable but empty: never spin
                break
    except Exception as exc:  # noqa: BLE001 - SerialException/OSError (ENODEV): unplugged
        if not stop.is_set():
            put(("error", reader.name, f"{what} failed: {exc}"))
    finally:
        reader.close_device(dev)


# ------------------------------------------------------------------ main


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("must be greater than 0")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reader", action="append", metavar="NAME",
                        help="the reader to read (repeatable; default: every configured reader)")
    parser.add_argument("--count", type=_positive_int, metavar="N", help="exit after N cards")
    parser.add_argument("--timeout", type=_positive_float, metavar="S",
                        help="give up after S seconds without a new card (exit 1 if none, or fewer "
                             "than --count, was read)")


def _err(text: str) -> None:
    print(f"agent: {text}", file=sys.stderr, flush=True)


def _daemon_running(cfg: Config) -> bool:
    if not os.path.isdir(cfg.state_dir):
        return False
    try:
        ask(cfg.state_dir, StatusRequest().to_wire(), timeout=2.0)
    except DaemonError:
        return True  # it answered
    except (NoDaemon, OSError, ValueError):
        return False  # not there, or not ours to ask: opening the device tells
    return True


@dataclass
class _Open:
    rc: ReaderConfig
    reader: Reader
    dev: Any


def _open(rc: ReaderConfig) -> _Open:
    """Open one reader as the daemon would; raises ReaderBusy/OSError/SerialException."""
    reader = make_reader(rc)
    if rc.type == "serial" and "://" not in rc.port and not os.path.exists(rc.port):
        raise FileNotFoundError(f"serial port {rc.port} is not present")
    if rc.type == "hid" and rc.path and not os.path.exists(rc.path):
        raise FileNotFoundError(f"input device {rc.path} is not present")
    dev = reader.open()
    reader.decoder.reset()
    return _Open(rc, reader, dev)


def main(cfg: Config, args: argparse.Namespace) -> int:

    wanted = getattr(args, "reader", None) or [rc.name for rc in cfg.readers]
    by_name = {rc.name: rc for rc in cfg.readers}
    unknown = [n for n in wanted if n not in by_name]
    if unknown:
        _err(f"no reader named {unknown[0]!r} in {cfg.path} (configured: {', '.join(by_name)})")
        return 2
    selected = [by_name[n] for n in dict.fromkeys(wanted)]
    count = getattr(args, "count", None)
    timeout = getattr(args, "timeout", None)

    if _daemon_running(cfg):
        _err(DAEMON_HOLDS)
        return 1

    opened: list[_Open] = []
    try:
        for rc in selected:
            try:
                opened.append(_open(rc))
            except ReaderBusy as exc:
                _err(f'reader "{rc.name}": {exc}: stop it first (systemctl stop rfid-agent)')
                return 1
            except Exception as exc:  # noqa: BLE001 - OSError, SerialException, evdev errors
                _err(f'reader "{rc.name}": cannot open {describe(rc)}: {exc}')
                return 1
    finally:
        if len(opened) != len(selected):
            for o in opened:
                o.reader.close_device(o.dev)

    stop = threading.Event()
    q: queue.Queue = queue.Queue()
    threads = [threading.Thread(target=read_loop, args=(o.reader, o.dev, stop, q.put),
                                name=f"probe-{o.rc.name}", daemon=True) for o in opened]
    for t in threads:
        t.start()
    names = ", ".join(f'"{rc.name}" ({describe(rc)})' for rc in selected)
    print(f"reading {names}: hold a card to the reader; Ctrl-C to stop", flush=True)

    cards = 0
    seen: dict[tuple[str, str], float] = {}
    last_card = time.monotonic()
    try:
        while True:
            wait = _TICK
            if timeout is not None:
                left = last_card + timeout - time.monotonic()
                if left <= 0:
                    if cards == 0:
                        _err(f"no card read within {timeout:g} s")
                        return 1
                    if count is not None and cards < count:
                        _err(f"only {cards} of {count} cards read (none for {timeout:g} s)")
                        return 1
                    return 0
                wait = min(wait, left)
            try:
                kind, name, payload = q.get(timeout=wait)
            except queue.Empty:
                continue
            if kind == "error":
                _err(f'reader "{name}": {payload}')
                return 1
            if kind == "noise":
                print(_noise_text(name, *payload), flush=True)
                continue
            now = time.monotonic()
            key = (name, payload)
            prev = seen.get(key)
            seen[key] = now
            if prev is not None and now - prev < DEBOUNCE_S:
                continue  # the same card, still held
            rc = by_name[name]
            fm = all_formats(payload, byte_order=rc.byte_order, kind=kind_for_protocol(rc.protocol, rc.type))
            print(card_block(name, describe(rc), payload, fm, rc.tag_format), flush=True)
            cards += 1
            last_card = now
            if count is not None and cards >= count:
                return 0
    except KeyboardInterrupt:
        print("", flush=True)
        return 0
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=2)
