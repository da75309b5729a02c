"""The ``reader_access.NAME`` check: the service's user may open the reader's device.

``sudo agent doctor`` runs as root, which may open anything; the daemon runs
as the unit's ``User=`` with its groups. So the answer is computed for that
user from the device's owner, group and mode (symlinks such as ``/dev/rfid0``
and ``/dev/serial0`` followed), never by opening it: the running daemon may
hold the device, and opening a HID reader would take its grab away.

The service's user is the state directory's owner when it exists and is not
root (the daemon writes there, so it runs as that user), else the passwd
entry ``rfid-agent``, else whoever runs doctor. Its groups are what systemd
gives it: its own groups plus the unit's ``SupplementaryGroups=`` that exist.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from dataclasses import dataclass

from agent.commands.doctor.base import FAIL, PASS, Result, result

# What systemd/rfid-agent.service sets (tests/test_doctor_uart.py reads the unit
# file and checks these agree).
UNIT_USER = "rfid-agent"
UNIT_GROUPS = ("dialout", "input", "gpio")
UNIT_DEVICE_CLASSES = ("ttyAMA", "ttyS", "ttyUSB", "ttyACM", "input", "gpiochip")
RULES = "hardware/99-rfid-agent.rules"  # in a checkout
# Where the two installs put the rules, the one udev obeys first (a file in
# /etc overrides one of the same name in /lib or /usr/lib): scripts/install's,
# then the Debian package's (/lib, which merged-/usr systems also show as /usr/lib).
RULES_INSTALLED = ("/etc/udev/rules.d/99-rfid-agent.rules", "/lib/udev/rules.d/99-rfid-agent.rules",
                   "/usr/lib/udev/rules.d/99-rfid-agent.rules")
# A site's own lines: neither an upgrade nor scripts/install overwrites this file.
RULES_LOCAL = "/etc/udev/rules.d/99-rfid-agent-local.rules"
PACKAGE_PROGRAM = "/usr/lib/rfid-agent"  # the Debian package's copy of the program
PROC_DEVICES = "/proc/devices"


@dataclass(frozen=True)
class ServiceUser:
    name: str
    uid: int
    gid: int
    groups: frozenset[int]  # the primary group included
    source: str  # why this user, for the message


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _with_unit_groups(name: str, uid: int, gid: int, source: str) -> ServiceUser:
    try:
        own = set(os.getgrouplist(name, gid))
    except (KeyError, OSError):  # a uid with no passwd entry: its own group only
        own = {gid}
    for g in UNIT_GROUPS:
        try:
            own.add(grp.getgrnam(g).gr_gid)
        except KeyError:  # systemd skips a missing group too
            pass
    return ServiceUser(name, uid, gid, frozenset(own | {gid}), source)


def service_user(state_dir: str) -> ServiceUser:
    """The user the daemon runs as, with the groups systemd gives it."""
    try:
        st = os.stat(state_dir)
    except OSError:
        st = None
    if st is not None and st.st_uid != 0:
        name = _user_name(st.st_uid)
        try:
            gid = pwd.getpwuid(st.st_uid).pw_gid
        except KeyError:
            gid = st.st_gid
        return _with_unit_groups(name, st.st_uid, gid, f"the owner of {state_dir}")
    try:
        pw = pwd.getpwnam(UNIT_USER)
        return _with_unit_groups(pw.pw_name, pw.pw_uid, pw.pw_gid, "the service's user")
    except KeyError:
        pass
    uid = os.getuid()
    return _with_unit_groups(_user_name(uid), uid, os.getgid(), "the current user: no rfid-agent user here")


def _permits(st: os.stat_result, user: ServiceUser, bits: int) -> bool:
    """The kernel's owner/group/other rule (the first class that matches decides)."""
    if user.uid == 0:
        return True
    if st.st_uid == user.uid:
        have = (st.st_mode >> 6) & 7
    elif st.st_gid in user.groups:
        have = (st.st_mode >> 3) & 7
    else:
        have = st.st_mode & 7
    return have & bits == bits


def _blocked_dir(path: str, user: ServiceUser) -> str | None:
    """The first directory on the way to ``path`` (as written and resolved) the user cannot enter."""
    for p in (os.path.abspath(path), os.path.realpath(path)):
        d = os.path.dirname(p)
        chain = []
        while True:
            chain.append(d)
            parent = os.path.dirname(d)
            if parent == d:
                break
            d = parent
        for d in reversed(chain):
            try:
                if not _permits(os.stat(d), user, 1):
                    return d
            except OSError:
                return d
    return None


def char_classes(major: int, proc_devices: str | None = None) -> list[str]:
    """The names /proc/devices gives a character major (systemd's ``char-NAME``)."""
    names: list[str] = []
    try:
        with open(proc_devices or PROC_DEVICES, encoding="ascii", errors="replace") as f:
            in_char = False
            for line in f:
                if line.strip().endswith("devices:"):
                    in_char = line.startswith("Character")
                    continue
                parts = line.split()
                if in_char and len(parts) == 2 and parts[0].isdigit() and int(parts[0]) == major:
                    names.append(parts[1])
    except OSError:
        pass
    return names


def _device_allow_note(st: os.stat_result, real: str) -> str:
    """'' when the unit's DeviceAllow= covers the device, else what to add."""
    if not stat.S_ISCHR(st.st_mode):
        return ""
    major = os.major(st.st_rdev)
    names = char_classes(major)
    if any(n in UNIT_DEVICE_CLASSES for n in names):
        return ""
    cls = next((n for n in names if not n.startswith("/")), None)
    # a major listed only by path (5: /dev/tty), or not at all, is allowed by the node's path
    allow = f"char-{cls}" if cls else real
    return (f"its device class {cls or allow} (major {major}) is not in the unit's DeviceAllow= "
            f"({', '.join('char-' + c for c in UNIT_DEVICE_CLASSES)}): the service could not open it; "
            f"add `DeviceAllow={allow} rw` under [Service] with: sudo systemctl edit rfid-agent")


def installed_rules() -> str | None:
    """The rules file udev reads, or None when neither install put one there."""
    return next((p for p in RULES_INSTALLED if os.path.isfile(p)), None)


def _rules_fix(group: str) -> str:
    """What makes the device ``group``, mode 0660: the installed rules named, or how to install them."""
    rules = installed_rules()
    if rules is not None:
        step = (f"the rules in {rules} do not match this device (or were not applied to it): "
                f"if lsusb shows a vendor:product they do not list, add a line like theirs for it to "
                f"{RULES_LOCAL}")
    elif os.path.realpath(__file__).startswith(PACKAGE_PROGRAM + os.sep):
        step = ("the udev rules 99-rfid-agent.rules are not installed: "
                "sudo apt install --reinstall rfid-agent (they go to /lib/udev/rules.d/)")
    else:
        step = (f"the udev rules are not installed: in the checkout, sudo install -m 0644 {RULES} "
                "/etc/udev/rules.d/ (add your reader's vendor:product to it if it is missing)")
    return (f"the device must be group {group}, mode 0660: {step}, then "
            "sudo udevadm control --reload && sudo udevadm trigger and replug")


def _describe(st: os.stat_result) -> str:
    return f"{_user_name(st.st_uid)}:{_group_name(st.st_gid)} {stat.S_IMODE(st.st_mode):04o}"


# kind -> (what the messages call the device, the group the udev rules give it)
ACCESS_KINDS = {"serial": ("serial port", "dialout"), "hid": ("input device", "input"),
                "gpio": ("GPIO chip", "gpio")}


def check_access(check: str, path: str, kind: str, user: ServiceUser) -> Result:
    """``kind`` is "serial", "hid" or "gpio": which group and udev rule the fix names."""
    what, group = ACCESS_KINDS[kind]
    try:
        st = os.stat(path)
    except OSError as exc:
        return result(check, FAIL, f"cannot stat {what} {path}: {exc.strerror or exc}",
                      "check the reader's cable and the path in the config")
    real = os.path.realpath(path)
    shown = path if real == path else f"{path} (-> {real})"
    who = f"{user.name} ({user.source})"
    note = _device_allow_note(st, real)
    blocked = _blocked_dir(path, user)
    if blocked is not None:
        return result(check, FAIL, f"{who} cannot reach {what} {shown}: no search permission on {blocked}",
                      "use a path under /dev (the udev rules 99-rfid-agent.rules make /dev/rfid0 and "
                      "/dev/input/rfid-kbd)" + (f"; also {note}" if note else ""))
    if _permits(st, user, os.R_OK | os.W_OK):
        detail = f"{what} {shown} ({_describe(st)}) read/write permitted for {who}"
        return result(check, PASS, detail + (f"; note: {note}" if note else ""))
    dev_group = _group_name(st.st_gid)
    group_rw = (st.st_mode >> 3) & 6 == 6
    if group_rw and st.st_gid != 0 and st.st_uid != user.uid:
        fix = (f"add {user.name} to group {dev_group}: sudo usermod -aG {dev_group} {user.name}, "
               "then sudo systemctl restart rfid-agent")
    else:
        fix = _rules_fix(group) + f" (the unit adds {user.name} to group {group}: SupplementaryGroups=)"
    if note:
        fix += f"; also {note}"
    return result(check, FAIL, f"{what} {shown} is {_describe(st)}: {who} may not read and write it", fix)
