"""A USB keyboard-emulating reader read through evdev, grabbed exclusively.

The supervision (reopen, back-off, idle waits, liveness) is
:class:`agent.reading.base.Reader`'s; this module finds the input device,
grabs it and reads its key events.  :func:`find_input_device` is the one
device search, shared with ``agent doctor``.
"""

from __future__ import annotations

import errno
import glob
import os
import re
from typing import TYPE_CHECKING, Any, Callable, NamedTuple

from agent.errors import ReaderBusy
from agent.reading.base import Reader, _quietly
from agent.reading.hidkeys import HidDecoder

if TYPE_CHECKING:
    from agent.config import ReaderConfig

__all__ = ["HidReader", "DeviceSearch", "find_input_device"]

_USB_ID = re.compile(r"[0-9a-fA-F]{4}:[0-9a-fA-F]{4}")


class DeviceSearch(NamedTuple):
    """What :func:`find_input_device` found."""

    path: str | None  # the matching event device, or None
    what: str  # the device wanted, for messages: "name 'X'", "USB id 08ff:0009", "path /dev/..."
    candidates: int  # input devices looked at
    unreadable: int  # of those, how many this user could not open


def _wanted(path: str | None, device_name: str | None, usb_id: str | None) -> str:
    if path:
        return f"path {path}"
    return f"name {device_name!r}" if device_name else f"USB id {usb_id}"


def find_input_device(path: str | None = None, device_name: str | None = None,
                      usb_id: str | None = None, *, writable: bool = True) -> DeviceSearch:
    """Find an input device by path, else by name, else by USB id ("vvvv:pppp").

    A path is returned as given, without looking (nor importing evdev).
    Otherwise every /dev/input/event* device that is readable (and, with
    ``writable``, writable) by this user is opened, compared and closed; the
    first match wins.  Raises ImportError without python-evdev and ValueError
    for a malformed ``usb_id`` or when nothing is asked for.
    """
    if path:
        return DeviceSearch(path, _wanted(path, None, None), 0, 0)
    if not (device_name or usb_id):
        raise ValueError("find_input_device needs path, device_name or usb_id")
    want = None
    if usb_id:
        if not _USB_ID.fullmatch(usb_id):
            raise ValueError(f"usb_id must look like 'vvvv:pppp' (hex), got {usb_id!r}")
        v, p = usb_id.split(":")
        want = (int(v, 16), int(p, 16))
    import evdev  # lazy: only HID setups pay for it, and doctor runs without it

    what = _wanted(None, device_name, usb_id)
    try:
        candidates = evdev.list_devices(writable=writable)
    except TypeError:  # python3-evdev 1.6 (Debian 12's) has no writable=: it lists read-write ones only
        candidates = [p for p in sorted(glob.glob("/dev/input/event*"))
                      if os.access(p, os.R_OK | (os.W_OK if writable else 0))]
    unreadable = 0
    for candidate in candidates:
        try:
            dev = evdev.InputDevice(candidate)
        except OSError:
            unreadable += 1
            continue
        try:
            match = (device_name and dev.name == device_name) or (
                want is not None and (dev.info.vendor, dev.info.product) == want)
        finally:
            dev.close()
        if match:
            return DeviceSearch(candidate, what, len(candidates), unreadable)
    return DeviceSearch(None, what, len(candidates), unreadable)


class HidReader(Reader):
    """A USB keyboard-emulating reader read through evdev (grabbed exclusively)."""

    def __init__(
        self,
        name: str,
        *,
        path: str | None = None,
        device_name: str | None = None,
        usb_id: str | None = None,
        decoder: HidDecoder,
        backoff: tuple[float, float] = (0.5, 5.0),
        open_device: Callable[[], Any] | None = None,
    ) -> None:
        super().__init__(name, backoff)
        if open_device is None and not (path or device_name or usb_id):
            raise ValueError("HidReader needs path, device_name or usb_id")
        if usb_id is not None and not _USB_ID.fullmatch(usb_id):
            raise ValueError(f"usb_id must look like 'vvvv:pppp' (hex), got {usb_id!r}")
        self.path = path
        self.device_name = device_name
        self.usb_id = usb_id
        self.decoder = decoder
        self._open_device = open_device or self._find_device

    @classmethod
    def from_config(cls, rc: ReaderConfig) -> HidReader:
        return cls(rc.name, path=rc.path, device_name=rc.device_name, usb_id=rc.usb_id,
                   decoder=HidDecoder(gap_seconds=rc.gap_seconds, max_len=rc.max_len))

    def _find_device(self) -> Any:
        """Open the device by path, else by name, else by USB id (not grabbed)."""
        import evdev  # lazy: only HID setups pay for it

        found = find_input_device(self.path, self.device_name, self.usb_id)
        if found.path is None:
            raise FileNotFoundError(errno.ENOENT, f"no input device with {found.what}")
        return evdev.InputDevice(found.path)

    def _describe(self) -> str:
        return self.path or self.device_name or self.usb_id or self.name

    def _what(self) -> str:
        return f"input device {self._describe()}"

    def open(self) -> Any:
        """Open and grab the device. Raises ReaderBusy or OSError."""
        dev = self._open_device()
        try:
            dev.grab()
        except OSError as exc:
            _quietly(dev.close)
            if exc.errno == errno.EBUSY:
                raise ReaderBusy(
                    f"{self._what()} is grabbed by another process "
                    "(is the agent daemon running?)"
                ) from None
            raise
        return dev

    def _present(self) -> bool:
        return not (self.path and self._open_device == self._find_device
                    and not os.path.exists(self.path))

    def _opened(self) -> str:
        return f"{self._what()} grabbed"

    def read_ready(self, dev: Any) -> tuple[int, list[str]]:
        n, tags = 0, []
        try:
            for event in dev.read():
                n += 1
                tag = self.decoder.feed(event)
                if tag:
                    tags.append(tag)
        except BlockingIOError:
            pass
        return n, tags

    def close_device(self, dev: Any, stopping: bool = True) -> None:
        if stopping:
            _quietly(dev.ungrab)
        _quietly(dev.close)
