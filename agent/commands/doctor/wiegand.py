"""The checks of a Wiegand reader (``type = "wiegand"``): its GPIO chip, gpiod, its lines.

``reader.NAME`` is the chip's device node (present, readable and writable:
the kernel's character device, ``/dev/gpiochipN``), and ``reader_access.NAME``
the service's user on it (group gpio, :mod:`.reader_access`). Then:

``reader_gpiod.NAME``     libgpiod v2's Python binding imports (v1, Debian
                          bookworm's python3-libgpiod, has the same name and
                          another API: what to install instead)
``reader_lines.NAME``     D0 and D1 are found on the chip (looked up as the
                          reader does, :mod:`agent.reading.gpiolines`), no other
                          program holds them, and, with no daemon running, both
                          idle high as a powered reader keeps them
``reader_liveness.NAME``  a WARN that stays: a Wiegand reader sends nothing
                          between cards, so a dead one looks like a quiet door

Nothing here takes a line the running daemon holds: the lines' idle level is
only read when no daemon runs (and released at once).
"""

from __future__ import annotations

import glob
import os
import re
from typing import Any

from agent.commands.doctor.base import FAIL, PASS, WARN, Ctx, Result, result
from agent.config import ReaderConfig
from agent.reading import gpiolines
from agent.reading.gpiolines import DEV_GLOB, INSTALL_GPIOD, GpioUnavailable

FIX_NO_CHIP = ("run the agent on the Raspberry Pi the reader is wired to (its kernel makes "
               "/dev/gpiochip0); in a container pass the device in (--device /dev/gpiochip0)")
FIX_GPIOD = f"{INSTALL_GPIOD}; then sudo systemctl restart rfid-agent"
NO_LIVENESS = ("a Wiegand reader has no liveness signal: it sends nothing between cards, so a dead, "
               "unpowered or unplugged reader cannot be told from a quiet door (the agent checks only "
               "the lines' idle level when it starts)")
FIX_LIVENESS = ("after any change to the door, hold a card to the reader and see the scan "
                "(agent status shows it; or sudo systemctl stop rfid-agent && sudo agent probe --count 1)")
FIX_IDLE = ("Wiegand lines idle high: check the reader's supply (often 12 V), the 5 V -> 3.3 V level "
            "shifter on D0/D1, a common ground, and that d0_pin/d1_pin are the lines the wires go to")


def _chips() -> list[str]:
    return sorted(glob.glob(DEV_GLOB), key=lambda p: [int(s) if s.isdigit() else s for s in re.split(r"(\d+)", p)])


def _explicit_chip(chip: str | None) -> str | None:
    """The device node a ``gpiochip`` setting names, or None for a label or no setting."""
    if chip is None:
        return None
    if chip.startswith("/"):
        return chip
    return f"/dev/{chip}" if re.fullmatch(r"gpiochip\d+", chip) else None


def gpiod_module() -> tuple[Any | None, str]:
    """(libgpiod v2's module, "") or (None, why not): the reader's own import."""
    try:
        return gpiolines.gpiod_module(), ""  # the reader's import, with its v1 detection
    except GpioUnavailable as exc:
        return None, str(exc)


def _resolve(rc: ReaderConfig) -> list[tuple[str, int]]:
    """(chip path, offset) of D0 and D1, as the reader looks them up; GpioUnavailable if not found."""
    return gpiolines.resolve_pins(rc.gpiochip, rc.d0_pin, rc.d1_pin)


def chip_local(rc: ReaderConfig) -> tuple[str, str, str, str | None]:
    """(status, detail, fix, the chip's path when present) for ``reader.NAME``, requesting no line."""
    chips = _chips()
    if not chips:
        return FAIL, f"no GPIO chip: {DEV_GLOB} does not exist on this machine", FIX_NO_CHIP, None
    path = _explicit_chip(rc.gpiochip)
    if path is None:
        gpiod, _ = gpiod_module()
        try:
            path = _resolve(rc)[0][0] if gpiod is not None else None
        except Exception:  # noqa: BLE001 - reader_lines says why; check the default chip here
            path = None
        path = path or ("/dev/gpiochip0" if "/dev/gpiochip0" in chips else chips[0])
    if not os.path.exists(path):
        return FAIL, f"GPIO chip {path} (reader.gpiochip) is not present (present: {', '.join(chips)})", \
            "set reader.gpiochip to one of them (gpioinfo lists their lines), or leave it out", None
    if not os.access(path, os.R_OK | os.W_OK):
        return FAIL, f"GPIO chip {path} is present but not readable and writable by this user", \
            "run agent doctor as root, or add this user to group gpio (sudo usermod -aG gpio USER)", path
    return PASS, f"GPIO chip {path} present, read/write permitted", "", path


def _line_name(pin: int | str) -> str:
    return f"GPIO{pin}" if isinstance(pin, int) else pin


def _lines(ctx: Ctx, rc: ReaderConfig, gpiod: Any, check: str) -> Result:
    try:
        (p0, o0), (p1, o1) = _resolve(rc)
    except GpioUnavailable as exc:
        return result(check, FAIL, f"D0/D1 not found: {exc}",
                      "set d0_pin/d1_pin (and gpiochip) to what gpioinfo shows for the lines the wires go to")
    found = f"D0 = {_line_name(rc.d0_pin)} ({p0} line {o0}), D1 = {_line_name(rc.d1_pin)} ({p1} line {o1})"
    if p0 != p1:
        return result(check, FAIL, f"{found}: on two chips", "wire D0 and D1 to lines of one chip")
    chip = gpiod.Chip(p0)
    try:
        infos = {o: chip.get_line_info(o) for o in (o0, o1)}
    finally:
        chip.close()
    users = {o: info.consumer or "" for o, info in infos.items() if info.used}
    others = {o: c for o, c in users.items() if not c.startswith("rfid-agent")}
    if others:
        who = "; ".join(f"line {o} held by {c!r}" if c else f"line {o} held by another program"
                        for o, c in others.items())
        return result(check, FAIL, f"{found}: {who}", "stop that program (or remove the dtoverlay that "
                      "claims the line) or wire the reader to free lines")
    if users:
        return result(check, PASS, f"{found}; held by the running agent")
    if ctx.daemon is not None:
        return result(check, PASS, f"{found}; not requested by the running daemon (see reader.{rc.name})")
    try:
        source = gpiolines.open_edges(rc.gpiochip, rc.d0_pin, rc.d1_pin, consumer="rfid-agent-doctor")
        try:
            d0, d1 = source.levels()
        finally:
            source.close()
    except GpioUnavailable as exc:
        return result(check, FAIL, f"{found}, but they cannot be requested: {exc}",
                      "gpioinfo shows who holds them; journalctl -u rfid-agent")
    if (d0, d1) != (1, 1):
        low = " and ".join(n for n, v in (("D0", d0), ("D1", d1)) if not v)
        return result(check, WARN, f"{found}; {low} idle low (expected high with no card at the reader)", FIX_IDLE)
    return result(check, PASS, f"{found}; both idle high")


def reset_line_check(rc: ReaderConfig) -> Result:
    """``reader_reset.NAME``: a PN532's reset_pin is a line the agent can pulse
    (it is pulsed only when the chip hangs, so a broken one shows up too late)."""
    name, pin = f"reader_reset.{rc.name}", _line_name(rc.reset_pin)
    gpiod, why = gpiod_module()
    if gpiod is None:
        return result(name, FAIL, f"reset_pin {pin} cannot be pulsed: {why.replace(f': {INSTALL_GPIOD}', '')}",
                      FIX_GPIOD)
    if not _chips():
        return result(name, FAIL, f"reset_pin {pin} cannot be pulsed: no GPIO chip: {DEV_GLOB} does not exist "
                      "on this machine", FIX_NO_CHIP)
    try:
        ((path, offset),) = gpiolines.resolve_pins(rc.gpiochip, rc.reset_pin)
    except GpioUnavailable as exc:
        return result(name, FAIL, f"reset_pin {pin} cannot be pulsed: {exc}",
                      "set reset_pin (and gpiochip) to the line wired to the board's RSTPDN (gpioinfo lists "
                      "the lines), or leave it out; a hung chip then needs its power cycled")
    return result(name, PASS, f"reset_pin {pin} is {path} line {offset}: pulsed low when the chip hangs")


def wiegand_checks(ctx: Ctx, rc: ReaderConfig) -> list[Result]:
    """``reader_gpiod``, ``reader_lines`` and ``reader_liveness`` of one Wiegand reader."""
    out: list[Result] = []
    gpiod, why = gpiod_module()
    if gpiod is None:
        out.append(result(f"reader_gpiod.{rc.name}", FAIL, why.replace(f": {INSTALL_GPIOD}", ""), FIX_GPIOD))
    else:
        version = getattr(gpiod, "__version__", "?")
        out.append(result(f"reader_gpiod.{rc.name}", PASS, f"libgpiod v2 Python binding {version} imports"))
        if _chips():  # else reader.NAME already failed with the fix
            try:
                out.append(_lines(ctx, rc, gpiod, f"reader_lines.{rc.name}"))
            except Exception as exc:  # noqa: BLE001 - one line, and the other checks still run
                out.append(result(f"reader_lines.{rc.name}", FAIL, f"cannot check: {type(exc).__name__}: {exc}",
                                  "gpioinfo shows the chips and lines; journalctl -u rfid-agent"))
    out.append(result(f"reader_liveness.{rc.name}", WARN, NO_LIVENESS, FIX_LIVENESS))
    return out
