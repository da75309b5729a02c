"""``agent probe``: hold a card to the reader and see every number it yields.

Opens the configured reader(s) directly, exactly as the daemon would (the
reader's own exclusive ``open()``, ``input_fd()`` and ``read_ready()``: serial
with the configured decoder, PN532 polling, Wiegand edges from the GPIO lines,
hid through the grabbed evdev device), and prints, once per card (repeats
within :data:`DEBOUNCE_S` of the last sighting are the same card still held),
the raw data and the number in every format for that reader kind, in both
byte orders, starring what the agent records::

    card read on "door" (serial /dev/ttyUSB0, rdm6300):
      format         big            little
      raw            0F00A1B2C3   (as sent, either byte order)
      decimal10      0010597059 *   2996895759
      hex            00A1B2C3       B2A1000F
      wiegand26      161,45763      161,00015
      decimal        64435106499    840515518479
      facility_card  161,45763      45729,15
      * = what the agent records (tag_format "decimal10", byte_order "big")

For a Wiegand frame a line before the table gives its bit count and
facility/card; ``decimal`` is the whole frame with its parity bits,
``decimal10`` the data bits without them.

``--expect NUMBER`` (the number printed on the card or stored in iFlow) says
after each card which tag_format and byte_order give it (exactly, else
leniently: hex case, leading zeros of decimal forms, the facility/card
separator, saying what iFlow must then hold) and prints the config lines to
paste (:func:`agent.reading.tagformat.match_expected`), or that none does and
the likely causes.

Input that reaches the reader but never forms a valid tag (wrong protocol or
baud rate, Wiegand noise or parity errors) is reported too, rate-limited; a
Wiegand frame that only reads with D0 and D1 exchanged gets a line of its own
saying to set swap_lines or swap the wires. The daemon must be stopped first:
when it runs (it answers on its control socket, or the device is locked or
grabbed) probe says so in one line and exits 1.

Exit status: 0 after ``--count`` cards, on Ctrl-C, or at ``--timeout`` when at
least one card (and ``--count`` if given) was read, and with ``--expect`` every
card read gave NUMBER; 1 when no card came within ``--timeout`` seconds, the
reader cannot be opened or fails, or with ``--expect`` a card read did not give
NUMBER (said at the end); 2 for an unknown ``--reader``.
"""

from __future__ import annotations

import argparse
import os
import queue
import re
import select
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable

from agent.commands.probeview import card_block, describe, expect_block, noise_lines
from agent.config import Config, ReaderConfig
from agent.errors import DaemonError, NoDaemon, ReaderBusy
from agent.reading.base import Reader
from agent.reading.tagformat import (
    BYTE_ORDERS,
    all_formats,
    kind_for_protocol,
    match_expected,
)
from agent.runtime.control import ask
from agent.runtime.requests import StatusRequest
from agent.runtime.wiring import make_reader

__all__ = ["add_arguments", "main", "card_block", "describe", "DAEMON_HOLDS", "DEBOUNCE_S", "read_loop",
           "show_card"]

DAEMON_HOLDS = ("the agent daemon is running and holds the reader: stop it first "
                "(systemctl stop rfid-agent)")
DEBOUNCE_S = 1.0
# what a printed card number or an iFlow tag looks like: 0010597059, 04A22B1A, 04:A2:2B:1A,
# 04 A2 2B 1A, 161,45763, 161 - 45763 (separators between groups, never two in a row)
_CARD_NUMBER = re.compile(r"(?=.{1,64}\Z)[0-9A-Za-z]+(?:\s*[,/:-]\s*[0-9A-Za-z]+|\s+[0-9A-Za-z]+){0,19}")
NOISE_REPORT_S = 2.0
_TICK = 0.5
_BLOCKED_S = 0.01  # a read_ready without an fd that came back sooner did not block: pause

Put = Callable[[tuple[str, str, Any]], None]


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
    # The waits inside read_ready (PN532 polls, Wiegand's tick of several seconds)
    # watch the stop the daemon's run() gives a reader; probe gives it too, so
    # --timeout and Ctrl-C end probe at once rather than after the longest wait.
    with reader.watching(stop, f"probe-{reader.name}"):
        _read(reader, dev, stop, put, noise)


def _read(reader: Reader, dev: Any, stop: threading.Event, put: Put, noise: _NoiseReporter) -> None:
    try:
        fd = reader.input_fd(dev)  # None (PN532, Wiegand): read_ready waits by itself, for a bounded time
        while not stop.is_set():
            if fd is not None and not select.select([fd], [], [], _TICK)[0]:
                continue
            began = time.monotonic()
            n, tags = reader.read_ready(dev)
            noise.check()  # before the tags: probe may exit at the next card
            for tag in tags:
                put(("tag", reader.name, tag))
            # readable but empty, or a read_ready that did not wait: never spin
            if not n and (fd is not None or time.monotonic() - began < _BLOCKED_S) and stop.wait(0.05):
                break
    except Exception as exc:  # noqa: BLE001 - SerialException/OSError (ENODEV): unplugged
        if not stop.is_set():
            put(("error", reader.name, f"{reader.what} failed: {exc}"))
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


def _card_number(text: str) -> str:
    value = text.strip()
    if not _CARD_NUMBER.fullmatch(value):
        raise argparse.ArgumentTypeError(
            f"expected a card number (digits or hex, or facility and card such as 161,45763), got {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reader", action="append", metavar="NAME",
                        help="the reader to read (repeatable; default: every configured reader)")
    parser.add_argument("--count", type=_positive_int, metavar="N", help="exit after N cards")
    parser.add_argument("--timeout", type=_positive_float, metavar="S",
                        help="give up after S seconds without a new card (exit 1 if none, or fewer "
                             "than --count, was read)")
    parser.add_argument("--expect", metavar="NUMBER", type=_card_number,
                        help="the number printed on the card or stored in iFlow (decimal, hex, or "
                             "facility,card): say after each card which "
                             "tag_format and byte_order give it, with the config lines to paste (exit 1 at "
                             "the end if a card read did not give it)")


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
    dev = reader.open()  # a wiegand reader has no path: opening its GPIO lines says what is wrong
    reader.decoder.reset()
    return _Open(rc, reader, dev)


def show_card(rc: ReaderConfig, raw: str, expect: str | None) -> tuple[str, bool]:
    """The text for one card read on ``rc``, and whether it gave ``expect`` (True without one)."""
    kind = kind_for_protocol(rc.protocol, rc.type)
    tables = {order: all_formats(raw, byte_order=order, kind=kind, card_bits=rc.card_bits)
              for order in BYTE_ORDERS}
    text = card_block(rc.name, describe(rc), raw, tables, rc.tag_format, rc.byte_order, kind=kind,
                      card_bits=rc.card_bits)
    if expect is None:
        return text, True
    matches = match_expected(raw, kind, expect, card_bits=rc.card_bits)
    return text + "\n" + expect_block(rc.name, raw, kind, expect, matches, rc.tag_format, rc.byte_order), \
        bool(matches)


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
    for warning in cfg.warnings:  # probe is the first command a technician runs on a new door
        _err(f"warning: {warning}")

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

    expect = getattr(args, "expect", None)
    tally = _Tally(expect)
    try:
        code = _cards(by_name, q, tally, count, timeout)
    except KeyboardInterrupt:
        print("", flush=True)
        code = 0
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=2)
    return tally.verdict(code)


class _Tally:
    """Cards shown, and those that did not give --expect."""

    def __init__(self, expect: str | None) -> None:
        self.expect, self.cards, self.missed = expect, 0, 0

    def verdict(self, code: int) -> int:
        if code == 0 and self.missed:
            _err(f"{self.missed} of {self.cards} cards read did not give --expect {self.expect}")
            return 1
        return code


def _cards(by_name: dict[str, ReaderConfig], q: queue.Queue, tally: _Tally, count: int | None,
           timeout: float | None) -> int:
    """Show cards as they come until --count, --timeout or a reader error; the exit code."""
    seen: dict[tuple[str, str], float] = {}
    last_card = time.monotonic()
    while True:
        wait = _TICK
        if timeout is not None:
            left = last_card + timeout - time.monotonic()
            if left <= 0:
                if tally.cards == 0:
                    _err(f"no card read within {timeout:g} s")
                    return 1
                if count is not None and tally.cards < count:
                    _err(f"only {tally.cards} of {count} cards read (none for {timeout:g} s)")
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
            rc = by_name[name]
            print("\n".join(noise_lines(name, *payload, kind_for_protocol(rc.protocol, rc.type),
                                         swapped=rc.swap_lines)), flush=True)
            continue
        now = time.monotonic()
        prev = seen.get((name, payload))
        seen[(name, payload)] = now
        if prev is not None and now - prev < DEBOUNCE_S:
            continue  # the same card, still held
        text, matched = show_card(by_name[name], payload, tally.expect)
        tally.cards += 1  # counted before it is shown: a Ctrl-C while printing still counts it
        tally.missed += not matched
        print(text, flush=True)
        last_card = now
        if count is not None and tally.cards >= count:
            return 0
