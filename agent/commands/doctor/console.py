"""The ``reader_console.NAME`` check: no kernel console and no getty on the reader's tty.

On a Raspberry Pi the serial console is on by default on the UART the reader
is wired to (``/dev/serial0``, i.e. ``ttyS0`` or ``ttyAMA0``): kernel messages
and a login prompt then share the line with the reader, which sees garbage and
whose card numbers reach a login shell. Found by reading, never by opening the
port: the kernel command line and its active consoles, every getty process on
the tty, and a getty enabled for it in systemd or made for it at boot by
systemd-getty-generator. systemd's serial-getty@.service runs ``agetty ... -
$TERM`` with the tty as stdin (``TTYPath=``), so the tty's name is not in its
argv: a getty is on the tty when the tty is its controlling tty (/proc/PID/stat)
or its stdin (/proc/PID/fd/0, readable as root), or when its argv names it.
The fix printed is the one in hardware/README.md (a test keeps them equal).

The paths are module constants so that tests can point them at a fake tree.
"""

from __future__ import annotations

import os
import re
import stat

from agent.commands.doctor.base import FAIL, PASS, Result, result

PROC = "/proc"
PROC_CMDLINE = "/proc/cmdline"
CONSOLE_ACTIVE = "/sys/class/tty/console/active"
SYSTEMD_SYSTEM = "/etc/systemd/system"
SYSTEMD_GENERATOR = "/run/systemd/generator"  # systemd-getty-generator's links
DEV = "/dev"
BOOT_CMDLINES = ("/boot/firmware/cmdline.txt", "/boot/cmdline.txt")  # bookworm, then older images

GETTYS = frozenset({"agetty", "getty", "mgetty", "mingetty", "fgetty"})
_SERIAL_ALIAS = re.compile(r"serial\d+\Z")

# The steps of hardware/README.md, "Turn off the serial console".
FIX_CONSOLE = ("sudo raspi-config nonint do_serial_cons 1 && sudo raspi-config nonint do_serial_hw 0, then reboot; "
               "or by hand: remove console=serial0,115200 from /boot/firmware/cmdline.txt (before bookworm: "
               "/boot/cmdline.txt), set enable_uart=1 in /boot/firmware/config.txt, reboot")
# raspi-config's do_serial_cons 1 edits out only these two
FIX_BY_HAND = "raspi-config removes only console=serial0,... and console=ttyAMA0,...: remove {arg} from {file} by hand"
FIX_GETTY = "sudo systemctl disable --now {units}"  # the units found (serial-getty@ttyS0.service)
README = "see hardware/README.md, Turn off the serial console"


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def tty_names(port: str) -> tuple[str, set[str]]:
    """(the tty's own name, every name the kernel may call it by) for ``port``.

    ``/dev/serial0 -> ttyS0`` gives ("ttyS0", {"ttyS0", "serial0"}): a
    ``console=serial0`` on the command line is that same UART."""
    real = os.path.realpath(port)
    dev = DEV.rstrip("/") + "/"
    own = real[len(dev):] if real.startswith(dev) else os.path.basename(real)
    names = {own}
    try:
        entries = os.listdir(DEV)
    except OSError:
        entries = []
    for entry in entries:
        if _SERIAL_ALIAS.match(entry) and os.path.realpath(os.path.join(DEV, entry)) == real:
            names.add(entry)
    return own, names


def _console_args(text: str, names: set[str]) -> list[tuple[str, str]]:
    """(argument, device) of each ``console=`` on one of ``names``."""
    out = []
    for arg in text.split():
        if arg == "--":  # what follows is init's, not the kernel's
            break
        if arg.startswith("console="):
            dev = arg[len("console="):].split(",", 1)[0].removeprefix("/dev/")
            if dev in names:
                out.append((arg, dev))
    return out


def kernel_consoles(names: set[str]) -> list[str]:
    """What puts the kernel's console on one of ``names``."""
    found = [f"{PROC_CMDLINE} has {arg}" for arg, _ in _console_args(_read(PROC_CMDLINE), names)]
    active = [c for c in _read(CONSOLE_ACTIVE).split() if c in names]
    if active and not found:
        found.append(f"{CONSOLE_ACTIVE} lists {' '.join(active)}")
    return found


def raspi_config_leaves(names: set[str]) -> str:
    """The hint for a boot cmdline.txt entry ``do_serial_cons 1`` would not remove, or ''.

    Read from the file, not /proc/cmdline: the Pi's firmware rewrites
    ``console=serial0`` there into the UART's real name."""
    for path in BOOT_CMDLINES:
        if os.path.exists(path):
            left = [arg for arg, dev in _console_args(_read(path), names) if dev not in ("serial0", "ttyAMA0")]
            return FIX_BY_HAND.format(arg=" ".join(left), file=path) if left else ""
    return ""


def _tty_number(rdev: int) -> int:
    """``rdev`` as /proc/PID/stat's tty_nr encodes it (the kernel's new_encode_dev)."""
    major, minor = os.major(rdev), os.minor(rdev)
    return (minor & 0xFF) | (major << 8) | ((minor & ~0xFF) << 12)


def _on_tty(pid: str, rdev: int) -> bool:
    """Whether ``rdev`` is the process's controlling tty or its stdin."""
    try:
        with open(os.path.join(PROC, pid, "stat"), "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()  # the command name before ')' may hold spaces
        if int(fields[4]) == _tty_number(rdev):
            return True
    except (OSError, IndexError, ValueError):
        pass
    try:
        st = os.stat(os.path.join(PROC, pid, "fd", "0"))  # the open file itself, even if renamed
    except OSError:  # another user's process when not root, or no stdin
        return False
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == rdev


def getty_processes(names: set[str], rdev: int | None = None) -> list[tuple[int, str]]:
    """(pid, command line) of every getty whose arguments name one of ``names``,
    or, given the tty's device number ``rdev``, that runs on that tty."""
    wanted = names | {f"/dev/{n}" for n in names}
    out = []
    try:
        pids = [p for p in os.listdir(PROC) if p.isdigit()]
    except OSError:
        return out
    for pid in pids:
        try:
            with open(os.path.join(PROC, pid, "cmdline"), "rb") as f:
                raw = f.read()
        except OSError:  # gone meanwhile, or hidden
            continue
        argv = [a.decode("utf-8", "replace") for a in raw.split(b"\0")]
        if argv and argv[-1] == "":
            argv.pop()
        if not argv or os.path.basename(argv[0]) not in GETTYS:
            continue
        if any(a in wanted for a in argv[1:]) or (rdev is not None and _on_tty(pid, rdev)):
            out.append((int(pid), " ".join(argv)))
    return sorted(out)


def _unit(name: str) -> str:
    return name.replace("/", "-")  # systemd's escaping of a path in an instance name


def enabled_gettys(names: set[str], base: str | None = None) -> list[str]:
    """getty units wanted for the tty: the links under ``base``/getty.target.wants
    (``SYSTEMD_SYSTEM``, where ``systemctl enable`` puts them, unless given)."""
    wants = os.path.join(base or SYSTEMD_SYSTEM, "getty.target.wants")
    links = (os.path.join(wants, f"{kind}@{_unit(n)}.service") for n in sorted(names)
             for kind in ("serial-getty", "getty"))
    return [link for link in links if os.path.lexists(link)]


def _char_rdev(port: str) -> int | None:
    try:
        st = os.stat(port)
    except OSError:
        return None
    return st.st_rdev if stat.S_ISCHR(st.st_mode) else None


def check_console(check: str, port: str) -> Result:
    own, names = tty_names(port)
    consoles = kernel_consoles(names)
    gettys = getty_processes(names, _char_rdev(port))
    enabled = enabled_gettys(names)
    generated = enabled_gettys(names, SYSTEMD_GENERATOR)
    if not (consoles or gettys or enabled or generated):
        return result(check, PASS, f"no serial console or getty on {own}")
    found = (consoles + [f"getty pid {pid}: {cmd}" for pid, cmd in gettys] + [f"{p} enabled" for p in enabled]
             + [f"{p} made by systemd-getty-generator from the kernel console" for p in generated])
    fixes = []
    if consoles or generated:  # the generator makes its link anew at each boot: disabling it does nothing
        fixes.append(FIX_CONSOLE)
        hint = raspi_config_leaves(names)
        if hint:
            fixes.append(hint)
    if gettys or enabled:
        # the links that were found, by their own names (serial0's is not ttyS0's),
        # and the unit systemd runs a getty on this tty as
        units = [os.path.basename(p) for p in enabled]
        if gettys and f"serial-getty@{_unit(own)}.service" not in units:
            units.append(f"serial-getty@{_unit(own)}.service")
        fixes.append(FIX_GETTY.format(units=" ".join(units)))
    fixes.append(README)
    return result(check, FAIL,
                  f"the reader's tty {own} is also a login console ({'; '.join(found)}): "
                  "kernel messages and a login prompt share the line with the reader",
                  "; ".join(fixes))
