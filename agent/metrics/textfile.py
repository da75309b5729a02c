"""The daemon's metrics file for node_exporter's textfile collector.

``<metrics.textfile_dir>/rfid_agent.prom`` is rewritten every
``metrics.interval`` and soon after a change that matters (a scan stored, a
delivery, a reader gone or back, the clock trusted or not: the daemon's
supervisor asks each tick, a couple of seconds apart). A write is a temp file
in the same directory, then a rename: node_exporter reads the old file or the
new one, never part of one, whenever the agent is killed. The temp file's name
does not end in ``.prom``, so node_exporter never reads it; one left by a kill
is removed by the next writer.

Not fsynced, on purpose: four writes a minute, for good, would wear a Pi's SD
card, and a metrics file lost to a power cut is rewritten within an interval
of the next start (ext4 replaces a renamed-over file whole, old or new).

Off while the directory does not exist (node_exporter is not installed); a
directory that appears later is used from the next interval (under the
systemd unit, which makes other paths read-only, from the service's next
start, and once the service's user may write there). A write that
fails is logged once per kind of failure, not every interval.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Callable

from agent.metrics.exposition import FILE_NAME

log = logging.getLogger("agent.metrics")

TMP_PREFIX = "." + FILE_NAME + "."
MODE = 0o644  # node_exporter runs as another user (prometheus)


def write_atomic(directory: str, text: str) -> str:
    """Replace ``directory/rfid_agent.prom`` with ``text``; its path."""
    path = os.path.join(directory, FILE_NAME)
    tmp = os.path.join(directory, tmp_name(os.getpid()))
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, MODE)
    try:
        os.fchmod(fd, MODE)  # the service's umask (0077) would hide it from node_exporter
        data = text.encode()
        while data:
            data = data[os.write(fd, data):]
    except BaseException:
        os.close(fd)
        _discard(tmp)
        raise
    os.close(fd)
    try:
        os.replace(tmp, path)
    except BaseException:
        _discard(tmp)
        raise
    return path


def tmp_name(pid: int) -> str:
    """The temp file of process ``pid``: one per writer, so two agents given
    the same directory by mistake never write into each other's."""
    return f"{TMP_PREFIX}{pid}.tmp"


def remove_stale(directory: str) -> int:
    """Remove the temp files of writers no longer running (a kill -9 mid-write)."""
    removed = 0
    try:
        names = os.listdir(directory)
    except OSError:
        return 0
    for name in names:
        if not (name.startswith(TMP_PREFIX) and name.endswith(".tmp")):
            continue
        try:
            pid = int(name[len(TMP_PREFIX):-len(".tmp")])
            os.kill(pid, 0)
            continue  # its writer runs
        except ValueError:
            continue  # not ours
        except ProcessLookupError:
            pass
        except PermissionError:
            continue  # another user's live process
        _discard(os.path.join(directory, name))
        removed += 1
    return removed


def _discard(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


class TextfileWriter:
    """Writes the metrics file when due. ``render`` gives the file's text,
    ``fingerprint`` a cheap value that changes when something that matters
    does (compared each :meth:`tick`)."""

    def __init__(self, directory: str, interval: float, render: Callable[[], str],
                 fingerprint: Callable[[], Any], *, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.directory = directory
        self.interval = interval
        self._render = render
        self._fingerprint = fingerprint
        self._monotonic = monotonic
        self._last_write = -float("inf")
        self._last_fp: Any = object()
        self._said: str | None = None  # the last state logged: "on", "absent" or an error
        self._cleaned = False  # stale temp files removed (once per appearance of the directory)

    def tick(self, *, force: bool = False) -> bool:
        """Write if due (an interval passed, the fingerprint changed, or ``force``);
        True when a file was written."""
        now = self._monotonic()
        fp = self._fingerprint()
        if not force and fp == self._last_fp and now - self._last_write < self.interval:
            return False
        self._last_write, self._last_fp = now, fp
        if not os.path.isdir(self.directory):
            self._cleaned = False
            self._say("absent", logging.INFO, "metrics: off while %s does not exist (install "
                      "prometheus-node-exporter, or set metrics.textfile_dir)", self.directory)
            return False
        if not self._cleaned:
            self._cleaned = True
            remove_stale(self.directory)
        try:
            path = write_atomic(self.directory, self._render())
        except OSError as exc:
            self._say(f"error {exc.errno}", logging.WARNING,
                      "metrics: cannot write %s: %s (the service needs write access to it: see the "
                      "README's Fleet section)", os.path.join(self.directory, FILE_NAME),
                      exc.strerror or exc)
            return False
        self._say("on", logging.INFO, "metrics: writing %s every %g s", path, self.interval)
        return True

    def _say(self, state: str, level: int, msg: str, *args: Any) -> None:
        if state != self._said:
            self._said = state
            log.log(level, msg, *args)
