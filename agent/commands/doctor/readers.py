"""The ``reader.NAME`` checks: each device is present and permitted, or the daemon holds it.

A device is checked without opening it (the running daemon may hold it, and
a HID reader is grabbed exclusively); the HID device search is the reader's
own, :func:`agent.reading.hid.find_input_device`. A device that is present
then gets ``reader_access.NAME`` (the service's user may open it:
:mod:`.reader_access`) and, for a serial port, ``reader_console.NAME`` (no
console or getty on it: :mod:`.console`).
"""

from __future__ import annotations

import grp
import os
import re

from agent.commands.doctor.base import FAIL, PASS, Ctx, Result, bounded, errtext, result
from agent.commands.doctor.console import check_console
from agent.commands.doctor.reader_access import ServiceUser, check_access, service_user
from agent.commands.doctor.wiegand import chip_local, reset_line_check, wiegand_checks
from agent.config import ReaderConfig
from agent.errors import ReaderBusy
from agent.reading.hid import find_input_device


def _daemon_reader(ctx: Ctx, name: str) -> dict | None:
    if ctx.daemon is None:
        return None
    for r in ctx.daemon.get("readers") or []:
        if isinstance(r, dict) and r.get("name") == name:
            return r
    return None


# The Pi's own UART names: absent because the UART is off, not because a cable is loose.
_PI_UART = re.compile(r"/dev/(serial\d+|ttyAMA\d+|ttyS\d+)\Z")
# The steps of hardware/README.md, "Pi UARTs" (tests/test_doctor.py keeps them equal).
FIX_UART = ("enable the Pi's UART: sudo raspi-config nonint do_serial_hw 0 (or enable_uart=1 in "
            "/boot/firmware/config.txt), then reboot; on a Pi 5 serial0 is the debug connector: "
            "the GPIO 14/15 UART is /dev/ttyAMA0 with dtparam=uart0=on")
UART_README = "(see hardware/README.md, Pi UARTs: /usr/share/doc/rfid-agent/hardware/README.md.gz with the package)"
FIX_USB = ("check the reader's cable and USB adapter (ls -l /dev/serial/by-id /dev/input/by-id), "
           "the udev rule and the path in the config")


def _device_access(path: str, what: str, group_hint: str) -> tuple[str, str] | None:
    """(detail, fix) if ``path`` is missing or not readable/writable, else None."""
    if not os.path.exists(path):
        return f"{what} {path} is not present", (f"{FIX_UART} {UART_README}" if _PI_UART.match(path) else FIX_USB)
    if not os.access(path, os.R_OK | os.W_OK):
        try:
            st = os.stat(path)
            group = grp.getgrgid(st.st_gid).gr_name
        except (OSError, KeyError):
            group = group_hint
        return (f"{what} {path} is present but not readable and writable by this user",
                f"add the agent's user to group {group} (usermod -aG {group} <agent user>)")
    return None


def _at_path(path: str, what: str, group_hint: str) -> tuple[str, str, str, str | None]:
    present = path if os.path.exists(path) else None
    problem = _device_access(path, what, group_hint)
    if problem:
        return FAIL, problem[0], problem[1], present
    return PASS, f"{what} {path} present, read/write permitted", "", present


def _reader_local(rc: ReaderConfig) -> tuple[str, str, str, str | None]:
    """(status, detail, fix, the device's path when present) for a reader device,
    checked without opening it."""
    if rc.type == "wiegand":
        return chip_local(rc)
    if rc.type == "serial":
        if "://" in rc.port:
            return PASS, f"serial URL {rc.port} (not checked)", "", None
        return _at_path(rc.port, "serial port", "dialout")
    if rc.path:
        return _at_path(rc.path, "input device", "input")
    try:
        # readable ones only: one this user cannot write is reported with its group below
        found = find_input_device(device_name=rc.device_name, usb_id=rc.usb_id, writable=False)
    except ImportError as exc:
        return FAIL, f"python-evdev is not available: {exc}", "install the agent's dependencies (evdev)", None
    if found.path is not None:
        problem = _device_access(found.path, "input device", "input")
        if problem:
            return FAIL, f"{found.what}: {problem[0]}", problem[1], found.path
        return PASS, f"input device with {found.what} found at {found.path}, read/write permitted", "", found.path
    detail = f"no input device with {found.what} among {found.candidates} input device(s)"
    if found.unreadable:
        detail += f" ({found.unreadable} not readable by this user)"
        return FAIL, detail, "run agent doctor as root, or add the agent's user to group input", None
    return FAIL, detail, "plug the reader in; check device_name/usb_id against: lsusb; evtest", None


FIRMWARE_TIMEOUT_S = 10.0  # a ttyUSB adapter may hold the first bytes back ~1 s; the chip answers in ms
FIX_PN532 = ("check the PN532 board's mode switches are set to HSU (UART: both off on the common boards), "
             "TX and RX crossed to the Pi's RX and TX, its supply and ground, and baudrate (115200); "
             "a chip that hangs recovers with reset_pin wired to its RSTPDN")


def _firmware(rc: ReaderConfig) -> str:
    """Open the reader as the daemon does (wake-up, SAMConfiguration, GetFirmwareVersion), then close it."""
    from agent.reading import pn532  # lazy: only PN532 readers need the driver

    # no reset pulse: doctor asks a chip, it does not reset it (reader_reset.NAME checks the line)
    reader = pn532.Pn532Reader.from_config(rc._replace(reset_pin=None))
    dev = reader.open()
    try:
        fw = getattr(reader, "firmware", None)
    finally:
        reader.close_device(dev)
    if isinstance(fw, tuple) and len(fw) >= 3 and all(isinstance(b, int) for b in fw):
        return f"PN5{fw[0]:02X} firmware {fw[1]}.{fw[2]}"
    return str(fw) if fw else "it answered GetFirmwareVersion"


def check_firmware(ctx: Ctx, rc: ReaderConfig, *, port_ok: bool) -> list[Result]:
    """``reader_pn532.NAME``: the chip answers, asked only when no daemon holds the port."""
    name = f"reader_pn532.{rc.name}"
    try:
        import agent.reading.pn532  # noqa: F401 - only whether the driver is installed
    except ImportError as exc:
        return [result(name, PASS, f"not asked: the PN532 driver (agent.reading.pn532) cannot be imported: {exc}")]
    if ctx.daemon is not None:
        return [result(name, PASS, "not asked: the running daemon has the port (every poll asks the chip, "
                       f"and its firmware version after {rc.health_seconds:g} s without an answer)")]
    if not port_ok:
        return []  # reader.NAME failed with what to do
    try:
        fw = bounded(lambda: _firmware(rc), FIRMWARE_TIMEOUT_S)
    except ReaderBusy as exc:
        return [result(name, FAIL, str(exc), f"find who holds it: sudo fuser -v {rc.port}")]
    except Exception as exc:  # noqa: BLE001 - no answer, a bad frame, a timeout: all one FAIL
        return [result(name, FAIL, f"the PN532 on {rc.port} at {rc.baudrate} baud does not answer: {errtext(exc)}",
                       FIX_PN532)]
    return [result(name, PASS, f"the PN532 on {rc.port} answers: {fw}")]


def _service_checks(rc: ReaderConfig, device: str, user: ServiceUser) -> list[Result]:
    out = [check_access(f"reader_access.{rc.name}", device, "gpio" if rc.type == "wiegand" else rc.type, user)]
    if rc.type == "serial":
        out.append(check_console(f"reader_console.{rc.name}", device))
    return out


def check_readers(ctx: Ctx) -> list[Result]:
    out: list[Result] = []
    user = service_user(ctx.cfg.state_dir)
    for rc in ctx.cfg.readers:
        name = f"reader.{rc.name}"
        device = None
        try:
            status, detail, fix, device = _reader_local(rc)
        except Exception as exc:  # noqa: BLE001
            status, detail, fix = FAIL, f"cannot check: {type(exc).__name__}: {exc}", ""
        held = _daemon_reader(ctx, rc.name)
        if held is not None:
            if held.get("connected"):
                out.append(result(name, PASS, "held by the running daemon (connected)"
                                  + (f": {detail}" if status == PASS else "")))
            else:
                err = held.get("error") or "waiting for the device"
                out.append(result(name, FAIL, f"the running daemon cannot use it: {err}",
                                  fix or "check the cable; journalctl -u rfid-agent"))
        else:
            if status == PASS and ctx.daemon is None:
                detail += " (not opened: no daemon holds it; agent probe reads cards)"
            out.append(result(name, status, detail, fix))
        if device is not None:
            try:
                out.extend(_service_checks(rc, device, user))
            except Exception as exc:  # noqa: BLE001 - the other readers still get checked
                out.append(result(f"reader_access.{rc.name}", FAIL,
                                  f"cannot check: {type(exc).__name__}: {exc}",
                                  "report this as a bug in agent doctor"))
        if rc.type == "wiegand":
            out.extend(wiegand_checks(ctx, rc))
        elif rc.type == "serial" and rc.protocol == "pn532":
            out.extend(check_firmware(ctx, rc, port_ok=status == PASS))
            if rc.reset_pin is not None:
                out.append(reset_line_check(rc))
    return out
