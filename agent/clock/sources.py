"""The machine's clocks, boot id and NTP sync state (the package docstring,
"Sources"): the only part of :mod:`agent.clock` that asks the kernel."""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Callable

__all__ = ["ClockSources", "boottime_ns", "kernel_esterror_s", "kernel_synced", "read_boot_id"]

TIME_ERROR = 5
STA_UNSYNC = 0x0040


def read_boot_id(path: str = "/proc/sys/kernel/random/boot_id") -> str:
    """The kernel's boot id (changes at every boot). Raises OSError/ValueError."""
    with open(path, encoding="ascii", errors="replace") as f:
        value = f.read(200).strip()
    if not value:
        raise ValueError(f"empty boot id in {path}")
    return value


def boottime_ns() -> int:
    """CLOCK_BOOTTIME in ns (monotonic, counts suspend; never stepped)."""
    clk = getattr(time, "CLOCK_BOOTTIME", None)
    if clk is None:  # pragma: no cover - non-Linux
        return time.monotonic_ns()
    return time.clock_gettime_ns(clk)


_adjtimex_impl: Any = None  # (adjtimex function, struct class), loaded on first use


def _load_adjtimex() -> Any:
    import ctypes  # lazy: only a Linux daemon asks the kernel

    class Timex(ctypes.Structure):  # the leading fields of struct timex
        _fields_ = [
            ("modes", ctypes.c_uint),
            ("offset", ctypes.c_long),
            ("freq", ctypes.c_long),
            ("maxerror", ctypes.c_long),
            ("esterror", ctypes.c_long),
            ("status", ctypes.c_int),
            ("_rest", ctypes.c_byte * 448),  # total >= 472 > sizeof(struct timex)
        ]

    fn = ctypes.CDLL(None, use_errno=True).adjtimex  # libc, already loaded
    fn.argtypes = [ctypes.POINTER(Timex)]
    fn.restype = ctypes.c_int
    return fn, Timex


def _read_kernel() -> tuple[int, Any] | None:
    global _adjtimex_impl
    if not sys.platform.startswith("linux"):
        return None
    try:
        if _adjtimex_impl is None:
            _adjtimex_impl = _load_adjtimex()
        fn, timex = _adjtimex_impl
        tx = timex()  # zeroed: modes = 0 means read only
        rc = fn(tx)
    except Exception:  # noqa: BLE001 - "unavailable" covers everything
        return None
    return None if rc < 0 else (rc, tx)


def kernel_synced() -> bool | None:
    """Whether the kernel considers the clock NTP-synchronised.

    A read-only ``adjtimex`` (``modes == 0`` on a zeroed buffer larger than any
    ``struct timex``; needs no privilege). False when it returns TIME_ERROR or
    STA_UNSYNC is set; None when unavailable (non-Linux, blocked, any error).
    """
    read = _read_kernel()
    if read is None:
        return None
    rc, tx = read
    return not (rc == TIME_ERROR or tx.status & STA_UNSYNC)


def kernel_esterror_s() -> float | None:
    """The kernel's estimated error of a synchronised clock (``esterror``, set by
    the NTP daemon), in seconds; None when unknown."""
    read = _read_kernel()
    return None if read is None or read[1].esterror < 0 else read[1].esterror / 1e6


class ClockSources:
    """The machine's clocks and sync state, every piece injectable."""

    def __init__(
        self,
        *,
        use_adjtimex: bool = True,
        timesyncd_flag: str = "/run/systemd/timesync/synchronized",
        trust_rtc: bool = False,
        boot_id_path: str = "/proc/sys/kernel/random/boot_id",
        wall_ns: Callable[[], int] = time.time_ns,
        mono_ns: Callable[[], int] = boottime_ns,
        adjtimex: Callable[[], bool | None] = kernel_synced,
    ) -> None:
        self._use_adjtimex = use_adjtimex
        self._flag = timesyncd_flag
        self._trust_rtc = trust_rtc
        self._boot_id_path = boot_id_path
        self._wall_ns = wall_ns
        self._mono_ns = mono_ns
        self._adjtimex = adjtimex

    @property
    def trust_rtc(self) -> bool:
        return self._trust_rtc

    def error_s(self) -> float | None:
        """The kernel's estimate of a synchronised clock's error (None: unknown)."""
        return kernel_esterror_s() if self._use_adjtimex and self._adjtimex is kernel_synced else None

    def synced(self) -> bool:
        """Is the wall clock trustworthy now (see the package docstring)."""
        if self._trust_rtc:
            return True
        if self._use_adjtimex:
            state = self._adjtimex()
            if state is not None:
                return bool(state)
        return self._flag_this_boot()

    def _flag_this_boot(self) -> bool:
        if not self._flag:
            return False
        try:
            mtime_ns = os.stat(self._flag).st_mtime_ns
        except OSError:
            return False
        wall, mono = self.now()
        return mtime_ns > wall - mono  # touched after this boot started

    def boot_id(self) -> str:
        return read_boot_id(self._boot_id_path)

    def now(self) -> tuple[int, int]:
        """(wall_ns, mono_ns), read back to back."""
        return self._wall_ns(), self._mono_ns()
