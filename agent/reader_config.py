"""The ``[reader]`` tables: the settings of one reader, and the checks across readers.

Part of the configuration schema (:mod:`agent.config` reads the file and
re-exports :class:`ReaderConfig`); apart because the reader kinds' keys are
most of it. Errors are :class:`~agent.errors.ConfigError` lines naming the key.
"""

from __future__ import annotations

import os
import re
from typing import Any, Callable, NamedTuple

from agent.schema import Section, check_non_negative, check_positive


class ReaderConfig(NamedTuple):
    name: str = "reader"
    type: str = "serial"  # "serial" | "hid" | "wiegand"
    # serial
    port: str = "/dev/ttyUSB0"
    baudrate: int = 9600  # 115200 when protocol = "pn532" and baudrate is not given
    protocol: str = "line"  # "line" | "rdm6300" | "regex" | "pn532"
    pattern: str | None = None  # protocol "regex": a pattern with a named group "tag"
    max_len: int = 64
    # hid
    path: str | None = None
    device_name: str | None = None
    usb_id: str | None = None
    gap_seconds: float = 0.5
    # both
    debounce_seconds: float = 3.0
    tag_format: str = "raw"  # one of TAG_FORMATS
    byte_order: str = "big"  # "big" | "little"
    # serial, protocol "pn532"
    poll_seconds: float = 0.2  # pause between two InListPassiveTarget polls
    health_seconds: float = 30.0  # GetFirmwareVersion when no command was answered for this long
    reset_pin: int | str | None = None  # RSTPDN: BCM number or line name, pulsed low before a re-initialise
    # wiegand (gpiochip also locates reset_pin)
    d0_pin: int | str | None = None  # BCM number or gpiochip line name; required for type "wiegand"
    d1_pin: int | str | None = None
    gpiochip: str | None = None  # "/dev/gpiochipN", "gpiochipN" or a label; None: the chip with "GPIO<n>"
    swap_lines: bool = False
    frame_gap_seconds: float = 0.025  # no edge for this long ends a frame
    keypad: bool = False  # 4- and 8-bit keypad bursts become tags instead of being dropped
    # tag_format "facility_card": the card number is the low card_bits, the facility the bits above
    card_bits: int = 16


TAG_FORMATS = ("raw", "decimal10", "hex", "wiegand26", "decimal", "facility_card")
PROTOCOLS = ("line", "rdm6300", "regex", "pn532")
PN532_BAUDRATE = 115200  # the chip's HSU default (UM0701)
# Keys that only one kind of reader reads. Given to another kind they are a
# warning, not an error: like a hid key on a serial reader, they change nothing,
# but "d0_pin without type = wiegand" is most likely a forgotten type line.
_PN532_KEYS = ("poll_seconds", "health_seconds", "reset_pin")
_WIEGAND_KEYS = ("d0_pin", "d1_pin", "swap_lines", "frame_gap_seconds", "keypad")
_DEFAULT_CHIP = "gpiochip0"  # where a BCM "GPIO<n>" line is on every Pi kernel since 6.6.45


def check_line(v: int | str) -> str | None:
    """A GPIO line: a BCM number (the Pi has 54; 0..63 leaves room for other boards) or a line name."""
    if isinstance(v, int):
        return None if 0 <= v <= 63 else "must be a BCM GPIO number between 0 and 63 or a line name like \"GPIO17\""
    return None if v.strip() == v and v else "must be a BCM GPIO number or a gpiochip line name like \"GPIO17\""


def line_key(chip: str | None, pin: int | str) -> tuple[str, str]:
    """(chip, line) as compared for conflicts: 17, "GPIO17" and "GPIO017" are one line;
    "/dev/gpiochip0", "gpiochip0" and no chip at all are one chip."""
    if isinstance(pin, int):
        line = f"GPIO{pin}"
    else:
        m = re.fullmatch(r"GPIO(\d+)", pin)
        line = f"GPIO{int(m.group(1))}" if m else pin
    return (chip or _DEFAULT_CHIP).removeprefix("/dev/"), line


def _check_chip(v: str) -> str | None:
    return None if v.strip() == v and v else "expected \"/dev/gpiochipN\", \"gpiochipN\" or a chip label"


def _check_card_bits(v: int) -> str | None:
    return None if 1 <= v <= 63 else "must be between 1 and 63"


def _ignored(sec: Section, keys: tuple[str, ...], who: str, warnings: list[str]) -> None:
    for k in keys:
        if k in sec.table:
            warnings.append(f"{sec.path}: {sec.key(k)}: ignored: only {who} uses it")


def _within(lo: float, hi: float) -> Callable[[float], str | None]:
    """Bounds that keep a reader sane: below ``lo`` it would spin or split frames
    between bits, above ``hi`` it would outwait the daemon's stall limit or never end a frame."""
    def check(v: float) -> str | None:
        return None if lo <= v <= hi else f"must be between {lo:g} and {hi:g} seconds"
    return check


def reader_from_table(path: str, prefix: str, table: Any, index: int, warnings: list[str]) -> ReaderConfig:
    """One ``[reader]`` table, validated; keys a reader of its kind ignores go to ``warnings``."""
    sec = Section(path, prefix, table)
    rtype = sec.get("type", str, "serial", choices=("serial", "hid", "wiegand"))
    d = ReaderConfig()
    protocol = sec.get("protocol", str, d.protocol, choices=PROTOCOLS)
    kwargs: dict[str, Any] = dict(
        name=sec.get("name", str, "reader" if index == 0 else f"reader{index + 1}",
                     check=lambda v: None if re.fullmatch(r"[A-Za-z0-9_.-]{1,32}", v)
                     else "use 1-32 letters, digits, '_', '.' or '-'"),
        type=rtype,
        debounce_seconds=sec.get("debounce_seconds", float, d.debounce_seconds, check=check_non_negative),
        tag_format=sec.get("tag_format", str, d.tag_format, choices=TAG_FORMATS),
        byte_order=sec.get("byte_order", str, d.byte_order, choices=("big", "little")),
        port=sec.get("port", str, d.port),
        baudrate=sec.get("baudrate", int, PN532_BAUDRATE if protocol == "pn532" else d.baudrate,
                         check=check_positive),
        protocol=protocol,
        pattern=sec.get("pattern", str, None),
        max_len=sec.get("max_len", int, d.max_len, check=check_positive),
        path=sec.get("path", str, None),
        device_name=sec.get("device_name", str, None),
        usb_id=sec.get("usb_id", str, None,
                       check=lambda v: None if re.fullmatch(r"[0-9a-fA-F]{4}:[0-9a-fA-F]{4}", v)
                       else "expected vendor:product in hex, like \"ffff:0035\""),
        gap_seconds=sec.get("gap_seconds", float, d.gap_seconds, check=check_positive),
        poll_seconds=sec.get("poll_seconds", float, d.poll_seconds, check=_within(0.02, 5.0)),
        health_seconds=sec.get("health_seconds", float, d.health_seconds, check=_within(1.0, 86400.0)),
        reset_pin=sec.get("reset_pin", (int, str), None, check=check_line),
        d0_pin=sec.get("d0_pin", (int, str), None, check=check_line),
        d1_pin=sec.get("d1_pin", (int, str), None, check=check_line),
        gpiochip=sec.get("gpiochip", str, None, check=_check_chip),
        swap_lines=sec.get("swap_lines", bool, d.swap_lines),
        frame_gap_seconds=sec.get("frame_gap_seconds", float, d.frame_gap_seconds, check=_within(0.003, 1.0)),
        keypad=sec.get("keypad", bool, d.keypad),
        card_bits=sec.get("card_bits", int, d.card_bits, check=_check_card_bits),
    )
    sec.finish()
    if kwargs["protocol"] == "regex":
        pat = kwargs["pattern"]
        if not pat:
            raise sec.error("pattern", "is required when protocol = \"regex\"")
        try:
            if "tag" not in re.compile(pat).groupindex:
                raise sec.error("pattern", "needs a named group (?P<tag>...) for the card number")
        except re.error as exc:
            raise sec.error("pattern", f"is not a valid regular expression: {exc}") from None
    if rtype == "hid" and not (kwargs["path"] or kwargs["device_name"] or kwargs["usb_id"]):
        raise sec.error("path", "a hid reader needs path, device_name or usb_id")
    pn532 = rtype == "serial" and protocol == "pn532"
    if not pn532:
        _ignored(sec, _PN532_KEYS, 'a serial reader with protocol = "pn532"', warnings)
    elif kwargs["baudrate"] != PN532_BAUDRATE:
        warnings.append(f"{sec.path}: {sec.key('baudrate')}: a PN532 speaks {PN532_BAUDRATE} baud in HSU mode "
                        f"after power-up; {kwargs['baudrate']} works only if the chip was set to it")
    if rtype == "wiegand":
        for k in ("d0_pin", "d1_pin"):
            if kwargs[k] is None:
                raise sec.error(k, "is required for a reader with type = \"wiegand\" (the BCM number or "
                                   "line name its D0 and D1 wires go to)")
        if line_key(None, kwargs["d0_pin"]) == line_key(None, kwargs["d1_pin"]):
            raise sec.error("d1_pin", f"must differ from d0_pin (both are {line_key(None, kwargs['d1_pin'])[1]}): "
                                      "D0 and D1 are two wires on two lines")
    else:
        _ignored(sec, _WIEGAND_KEYS, 'a reader with type = "wiegand"', warnings)
        if not (pn532 and kwargs["reset_pin"] is not None):
            _ignored(sec, ("gpiochip",), 'a wiegand reader or a pn532 reader\'s reset_pin', warnings)
    return ReaderConfig(**kwargs)


def _device_of(rc: ReaderConfig) -> str | None:
    """The device a reader opens, resolved through symlinks (/dev/rfid0 -> /dev/ttyUSB0)
    where it can be; a URL (loop://) or a hid reader found by name or USB id compares as given.
    A wiegand reader's lines are compared by :func:`one_use_per_line`."""
    if rc.type == "wiegand":
        return None
    dev = rc.port if rc.type == "serial" else rc.path
    if dev is None or "://" in dev:
        return dev
    return os.path.realpath(dev)


def one_reader_per_device(top: Section, readers: tuple[ReaderConfig, ...]) -> None:
    # Two readers on one device: one of them never gets it and shows "reader missing" forever.
    seen: dict[str, ReaderConfig] = {}
    for i, rc in enumerate(readers):
        dev = _device_of(rc)
        if dev is None:
            continue
        first = seen.setdefault(dev, rc)
        if first is not rc:
            key = "port" if rc.type == "serial" else "path"
            mine, theirs = (rc.port, first.port) if key == "port" else (rc.path, first.path)
            same = mine if mine == theirs else f"{mine} and {theirs} are both {dev}"
            raise top.error(f"reader[{i}].{key}", f"readers {first.name!r} and {rc.name!r} use the same "
                            f"device ({same}); give each [[reader]] its own")


def _lines_of(rc: ReaderConfig) -> list[tuple[str, int | str]]:
    """(key, pin) of every GPIO line a reader requests."""
    if rc.type == "wiegand":
        return [("d0_pin", rc.d0_pin), ("d1_pin", rc.d1_pin)]
    if rc.type == "serial" and rc.protocol == "pn532" and rc.reset_pin is not None:
        return [("reset_pin", rc.reset_pin)]
    return []


def one_use_per_line(top: Section, prefixes: list[str], readers: tuple[ReaderConfig, ...],
                     feedback_pins: dict[str, int]) -> None:
    """ConfigError when two readers' GPIO lines, or one and a feedback pin (``feedback_pins``:
    dotted key -> BCM number, the pins gpiozero claims), are the same line."""
    # The kernel gives a line to one requester: the second one never opens
    # ("reader missing" forever, or no LED), so say it before the start.
    seen: dict[tuple[str, str], str] = {}
    for key, pin in feedback_pins.items():
        seen.setdefault(line_key(None, pin), key)
    for prefix, rc in zip(prefixes, readers, strict=True):
        for k, pin in _lines_of(rc):
            where = line_key(rc.gpiochip, pin)
            first = seen.setdefault(where, f"{prefix}.{k}")
            if first != f"{prefix}.{k}":
                raise top.error(f"{prefix}.{k}", f"{where[1]} on {where[0]} is already {first}; "
                                "a GPIO line serves one purpose: wire this one to another line")
