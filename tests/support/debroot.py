"""A minimal Debian bookworm root made by debootstrap, for tests that install the
package or run Ansible against a real Debian system.

The root is built once and cached (``$AGENT_DEBROOT_CACHE``, default
``~/.cache/rfid-agent``): a test takes a private copy with :func:`fresh_root`
and may break it freely. It carries what a Raspberry Pi OS Lite image has that
the package depends on or uses (python3, python3-evdev, adduser, systemd, man-db), python3-apt
for Ansible's apt module, and nothing else: every other file the package needs
must come from the package itself.

:func:`run_in` runs a command inside a root; with ``network=False`` (the
default) it runs in a new network namespace with only a loopback device that
is down, so an install that tries to reach a mirror fails instead of quietly
succeeding.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

SUITE = "bookworm"
MIRROR = os.environ.get("AGENT_DEBIAN_MIRROR", "http://deb.debian.org/debian")
# What a Pi OS Lite image already has and the package may rely on.
INCLUDE = ("python3", "python3-evdev", "adduser", "systemd", "python3-apt", "ca-certificates", "man-db")


def cache_dir() -> Path:
    return Path(os.environ.get("AGENT_DEBROOT_CACHE") or Path.home() / ".cache" / "rfid-agent")


def missing() -> str | None:
    """Why a root cannot be made here, or None."""
    if os.geteuid() != 0:
        return "debootstrap and chroot need root"
    for tool in ("debootstrap", "unshare", "chroot"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (scripts/test installs it)"
    return None


def base_root() -> Path:
    """The cached root, made on first use (minutes); later calls return at once.
    Safe when several test processes ask at the same time (a file lock)."""
    key = hashlib.sha256(f"{SUITE} {MIRROR} {' '.join(INCLUDE)}".encode()).hexdigest()[:12]
    root = cache_dir() / f"debroot-{SUITE}-{key}"
    done = root / ".rfid-agent-complete"
    if done.exists():
        return root
    cache_dir().mkdir(parents=True, exist_ok=True)
    with open(cache_dir() / f"{root.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if done.exists():
            return root
        shutil.rmtree(root, ignore_errors=True)  # a half-made root from a killed run
        subprocess.run(
            ["debootstrap", "--variant=minbase", f"--include={','.join(INCLUDE)}",
             SUITE, str(root), MIRROR],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=1800,
        )
        # The package must install from what is in the root: nothing is fetched.
        shutil.rmtree(root / "var/lib/apt/lists", ignore_errors=True)
        (root / "var/lib/apt/lists/partial").mkdir(parents=True)
        done.touch()
    return root


def fresh_root(parent: Path) -> Path:
    """A private copy of the cached root under ``parent`` (seconds)."""
    dest = Path(parent) / "root"
    subprocess.run(["cp", "-a", "--reflink=auto", f"{base_root()}/.", str(dest)], check=True)
    (dest / ".rfid-agent-complete").unlink(missing_ok=True)
    return dest


def run_in(root: Path, *cmd: str, network: bool = False, env: dict[str, str] | None = None,
           check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``cmd`` chrooted in ``root`` with /proc mounted (in a private mount
    namespace, so nothing is left mounted), without network unless asked."""
    full_env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8",
                "DEBIAN_FRONTEND": "noninteractive", "HOME": "/root"}
    full_env.update(env or {})
    flags = ["--mount", "--fork", "--pid"] + ([] if network else ["--net"])
    script = 'mount -t proc proc "$0/proc" && exec chroot "$0" "$@"'
    return subprocess.run(["unshare", *flags, "sh", "-c", script, str(root), *cmd],
                          env=full_env, capture_output=True, text=True, check=check,
                          timeout=timeout)
