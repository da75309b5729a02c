"""systemd service notifications (``sd_notify``) and a health-gated watchdog.

The protocol is one ``AF_UNIX`` datagram of newline-separated ``KEY=VALUE``
lines sent to ``$NOTIFY_SOCKET``; a leading ``@`` names an abstract socket.
systemd declares it stable (``man sd_notify``), so it is written here rather
than pulled in as a dependency.  Outside systemd (no ``$NOTIFY_SOCKET``) every
call is a cheap no-op, so the daemon runs unchanged in a terminal or a test.

:class:`Watchdog` sends ``WATCHDOG=1`` only from the caller's main loop and
only while every health check passes: a free-running timer thread would keep
pinging while the rest of the process is stuck, which defeats the watchdog.
:class:`StatusLine` keeps ``systemctl status``'s line current without waking
anything: it sends only a changed text, at most about once a second.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import Callable

__all__ = ["Heartbeat", "Notifier", "StatusLine", "Watchdog", "report_config_error"]

log = logging.getLogger("agent.sdnotify")

Check = Callable[[], "bool | str"]


def _address(path: str | None) -> str | None:
    """Turn a ``$NOTIFY_SOCKET`` value into a ``socket.sendto`` address, or None."""
    if not path:
        return None
    if path.startswith("@"):
        return "\0" + path[1:]  # abstract namespace
    if path.startswith("/"):
        return path
    # systemd >= 254 also knows "vsock:CID:PORT" (for VMs); not for a door Pi.
    log.warning("NOTIFY_SOCKET=%r is not a unix socket path; systemd notifications are off", path)
    return None


class Notifier:
    """Sends state changes to the service manager; a no-op outside systemd.

    ``notify`` never raises: a full or missing socket must not stop the door.
    The first failure is logged as a warning, further ones at debug level
    until a send succeeds again.
    """

    def __init__(self, socket_path: str | None = None) -> None:
        if socket_path is None:
            socket_path = os.environ.get("NOTIFY_SOCKET")
        self._address = _address(socket_path)
        self.enabled: bool = self._address is not None
        self._failing = False

    def notify(self, *states: str) -> bool:
        """Send ``states`` (e.g. ``"READY=1"``, ``"STATUS=..."``) in one datagram.

        Returns True when the datagram was handed to the kernel, False when
        notifications are off or the send failed.  Newlines inside a state
        would start a new assignment, so they are replaced by spaces.
        """
        if self._address is None or not states:
            return False
        message = "\n".join(s.replace("\n", " ") for s in states)
        try:
            data = message.encode("utf-8", "replace")
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(data, self._address)
        except (OSError, ValueError) as exc:
            if not self._failing:
                self._failing = True
                log.warning("sd_notify failed: %s (further failures are logged at debug level)", exc)
            else:
                log.debug("sd_notify failed: %s", exc)
            return False
        if self._failing:
            self._failing = False
            log.info("sd_notify works again")
        return True

    def ready(self, status: str = "") -> None:
        """Tell systemd start-up is complete (``Type=notify``), with an optional status line."""
        if status:
            self.notify("READY=1", f"STATUS={status}")
        else:
            self.notify("READY=1")

    def stopping(self) -> None:
        """Tell systemd the service is shutting down."""
        self.notify("STOPPING=1")

    def status(self, text: str) -> bool:
        """Set the one-line status shown by ``systemctl status``; True when sent."""
        return self.notify(f"STATUS={text}")

    def watchdog_interval(self) -> float | None:
        """Seconds between ``WATCHDOG=1`` pings: half of ``$WATCHDOG_USEC``.

        None when the watchdog is off: the variable is unset or invalid, or
        ``$WATCHDOG_PID`` names another process (the variables were inherited).
        """
        pid = os.environ.get("WATCHDOG_PID")
        if pid is not None:
            try:
                if int(pid) != os.getpid():
                    return None
            except ValueError:
                return None
        try:
            usec = int(os.environ.get("WATCHDOG_USEC", ""))
        except ValueError:
            return None
        if usec <= 0:
            return None
        return usec / 2_000_000


def report_config_error(line: str, notifier: Notifier | None = None) -> bool:
    """``STATUS=config error: <line>`` before the daemon exits 2, so that the failed
    unit's ``systemctl status`` names the problem on its ``Status:`` line.

    systemd keeps a service's status text after the process exits and clears it
    only when the unit starts again (``service_start()`` in src/core/service.c),
    and with ``RestartPreventExitStatus=2`` nothing starts it again until a person
    does. The datagram is queued before the process exits, and systemd reads
    notifications before it handles the exit, so ``NotifyAccess=main`` accepts it."""
    # Imported only on this error path; anyone may read `systemctl status`.
    from agent.redact import redact

    return (notifier or Notifier()).status(f"config error: {redact(line)}")


class StatusLine:
    """The daemon's ``STATUS=`` line: sent only when its text changes, and at most
    once per ``min_interval`` seconds (a change inside that is sent by a later
    :meth:`update`, so call it from a loop that comes round again).

    Cheap to call every loop: comparing a string is all it does while nothing
    changes, so an idle door sends nothing."""

    def __init__(self, notifier: Notifier, min_interval: float = 1.0, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.notifier = notifier
        self.min_interval = min_interval
        self.sent: str | None = None  # the text systemd has now
        self._clock = clock
        self._last = float("-inf")

    def update(self, text: str) -> bool:
        """Send ``text`` if it is new and the last send is old enough; True when sent."""
        if not self.notifier.enabled or text == self.sent:
            return False
        now = self._clock()
        if now - self._last < self.min_interval:
            return False
        self._last = now  # a failed send is retried no sooner either
        if self.notifier.status(text):
            self.sent = text
            return True
        return False


class Watchdog:
    """Pings the systemd watchdog from the main loop while all health checks pass.

    A check returns True when healthy; False or a string (the reason) means
    unhealthy, and so does an exception.  While any check fails nothing is
    sent, so systemd kills and restarts the service after ``WatchdogSec``.
    Failures are logged when they start or change, and then at most every
    ``log_every`` seconds; recovery is logged once.

    Checks run only when a ping is due, so ``tick()`` is cheap to call often;
    call it at least twice per interval.  With ``interval`` None it comes from :meth:`Notifier.watchdog_interval`;
    when there is neither an interval nor an enabled notifier, ``tick`` does nothing.
    """

    def __init__(self, notifier: Notifier, checks: list[Check], interval: float | None = None,
                 *, log_every: float = 30.0) -> None:
        self.notifier = notifier
        self.checks = list(checks)
        self.interval = interval if interval is not None else notifier.watchdog_interval()
        self.enabled = notifier.enabled and self.interval is not None and self.interval > 0
        self.log_every = log_every
        self.failure: str | None = None  # the failing check's description, None while healthy
        self._last_ping: float | None = None
        self._last_log: float | None = None
        self._failing_check: str | None = None

    def _first_failure(self) -> tuple[str, str] | None:
        """(check name, description) of the first failing check, or None."""
        for check in self.checks:
            name = getattr(check, "__name__", None) or repr(check)
            try:
                result = check()
            except Exception as exc:  # a broken check is a failed check, never a crash
                return name, f"{name} raised {type(exc).__name__}: {exc}"
            if result is True:
                continue
            if isinstance(result, str) and result:
                return name, f"{name}: {result}"
            return name, name
        return None

    def tick(self, now: float | None = None) -> None:
        """Run the checks and ping if a ping is due; ``now`` is a ``time.monotonic()`` value."""
        if not self.enabled:
            return
        if now is None:
            now = time.monotonic()
        assert self.interval is not None
        if self._last_ping is not None and now - self._last_ping < self.interval:
            return
        found = self._first_failure()
        if found is None:
            if self.failure is not None:
                log.info("health checks pass again; watchdog pings resume")
                self.failure = None
                self._failing_check = None
            self.notifier.notify("WATCHDOG=1")
            self._last_ping = now
            return
        name, self.failure = found
        # Rate-limit by check, not by text: a reason may carry a changing age.
        if (name != self._failing_check or self._last_log is None
                or now - self._last_log >= self.log_every):
            log.error("health check failed, withholding watchdog ping: %s", self.failure)
            self._last_log = now
        self._failing_check = name


class Heartbeat:
    """A health check for a worker thread: healthy while ``beat()`` was called recently.

    The worker calls ``beat()`` every time round its loop; the main loop
    passes the heartbeat to :class:`Watchdog` as a check.  ``max_age`` must
    exceed the worker's longest legitimate pause (e.g. its I/O timeout).
    """

    def __init__(self, name: str, max_age: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.__name__ = name
        self.max_age = max_age
        self._clock = clock
        self._last = clock()

    def beat(self) -> None:
        self._last = self._clock()

    def __call__(self) -> bool | str:
        age = self._clock() - self._last
        if age <= self.max_age:
            return True
        return f"no heartbeat for {age:.0f} s (limit {self.max_age:g} s)"
