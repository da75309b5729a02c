"""libfaketime for the real daemon: its wall clock off by a fixed amount.

Only ``CLOCK_REALTIME`` is shifted (``FAKETIME_DONT_FAKE_MONOTONIC``):
``CLOCK_BOOTTIME`` and ``CLOCK_MONOTONIC`` stay the kernel's, as on a Pi
whose saved clock is wrong after a boot. ``FAKETIME_DONT_RESET`` keeps a
child process of the daemon (none today) on the same offset instead of
restarting from it. scripts/test installs the Debian package ``libfaketime``.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import time

__all__ = ["LIBRARY", "env", "missing"]

_FOUND = sorted(glob.glob("/usr/lib/*/faketime/libfaketimeMT.so.1"))
LIBRARY: str | None = _FOUND[0] if _FOUND else None


def env(offset: str) -> dict[str, str]:
    """Environment for a process whose wall clock is ``offset`` ("-3h", "+90s") off."""
    if LIBRARY is None:
        raise RuntimeError("libfaketime is not installed")
    return {"LD_PRELOAD": LIBRARY, "FAKETIME": offset, "FAKETIME_DONT_FAKE_MONOTONIC": "1",
            "FAKETIME_DONT_RESET": "1"}


def missing() -> str | None:
    """Why the daemon cannot be run under a fake wall clock here (None: it can).

    Checked once by running Python under it: the wall clock must move by
    the offset and CLOCK_BOOTTIME must not."""
    global _why
    if _why is not False:
        return _why  # type: ignore[return-value]
    if LIBRARY is None:
        _why = "libfaketime is not installed (apt-get install libfaketime; scripts/test does)"
        return _why
    probe = "import json, time; print(json.dumps([time.time(), time.clock_gettime(time.CLOCK_BOOTTIME)]))"
    before = time.clock_gettime(time.CLOCK_BOOTTIME)
    real = time.time()
    try:
        out = subprocess.run([sys.executable, "-c", probe], env={**os.environ, **env("-1h")},
                             capture_output=True, text=True, timeout=30)
        wall, boot = json.loads(out.stdout)
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        _why = f"libfaketime ({LIBRARY}) does not work here: {exc}"
        return _why
    after = time.clock_gettime(time.CLOCK_BOOTTIME)
    if not (abs(wall - (real - 3600)) < 30 and before <= boot <= after):
        _why = f"libfaketime ({LIBRARY}) does not shift only the wall clock here (wall {wall}, boot {boot})"
        return _why
    _why = None
    return _why


_why: str | None | bool = False  # False: not checked yet
