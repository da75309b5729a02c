"""``agent run``: the daemon, wired together.

Start-up order matters: lock the state directory, open the journal (READY=1
goes to systemd here, since scans can now be stored), then the control socket,
the readers and the uploader. Each reader has its own thread; a read goes
straight down :class:`agent.recording.recorder.Recorder` in that thread (no network on
the path). The main thread supervises: clock observation, feedback
conditions, the systemd watchdog (sent only while every thread is alive),
the ``STATUS=`` line (pending, last delivery, readers; sent when it changes),
retention, and signals. A configuration error (exit 2, which systemd does not
restart) is sent as ``STATUS=config error: ...`` too, for ``systemctl status``. SIGTERM stops the readers, lets the write in progress
finish, and exits 0.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from agent import __version__
from agent.clock.reasons import needs_person
from agent.config import Config
from agent.errors import EXIT_CONFIG, AgentError, CommandError, FeedbackUnavailable
from agent.fsinfo import state_dir_error
from agent.journal.lock import StateLock
from agent.journal.store import Journal
from agent.metrics.exposition import render as render_metrics
from agent.metrics.textfile import TextfileWriter
from agent.runtime.control import ControlServer
from agent.runtime.operations import OPERATIONS, DaemonView, Parts, perform
from agent.runtime.requests import StatusRequest, from_wire
from agent.runtime.scheduler import daemon_scheduler
from agent.runtime.sdnotify import Notifier, StatusLine, Watchdog, report_config_error
from agent.runtime.wiring import (
    check_file_modes,
    make_clock,
    make_deliverer,
    make_feedback,
    make_reader,
    make_recorder,
    make_uploader,
    open_journal,
    prepare_state_dir,
)

log = logging.getLogger("agent.daemon")

READER_STALL_S = 10.0  # a reader thread that has not looped for this long is hung
READER_MISSING_AFTER_S = 2.0  # a reader disconnected this long shows "reader missing"
UPLOADER_STALL_S = 60.0
# The main thread's pace when nothing happens: watchdog pings, clock sync and
# steps, feedback conditions. Slow on purpose (an idle door should not wake the
# CPU); a stop is still immediate (it waits on the stop event).
SUPERVISOR_TICK_S = 2.0


class Daemon:
    def __init__(self, cfg: Config, *, feedback=None, notifier=None, readers=None) -> None:
        self.cfg = cfg
        self.stop_event = threading.Event()
        self.feedback = feedback
        self.notifier = notifier
        self._readers_override = readers
        self.started = time.time()
        self.journal: Journal | None = None
        self.deliverer = None
        self.uploader = None
        self.readers: list[Any] = []
        self.reader_threads: list[threading.Thread] = []
        self.recorder = None
        self.clock = None
        self.reader_stall_s = READER_STALL_S
        self.uploader_stall_s = UPLOADER_STALL_S
        self.ready = threading.Event()  # set once scans can be stored
        self.parts: Parts | None = None
        self._disconnected_since: dict[str, float] = {}
        self._missing: set[str] = set()  # readers disconnected for READER_MISSING_AFTER_S or more
        self._stopping_metrics = False

    # ------------------------------------------------------------ requests

    def _reader_states(self) -> list[dict]:
        return [{"name": r.name, "connected": bool(r.connected), "error": r.error, "dropped": _dropped(r)}
                for r in self.readers]

    def _handler(self, request: dict, send) -> Any:
        """Every control-socket request: the same operation the no-daemon path runs."""
        assert self.parts is not None
        return perform(self.parts, from_wire(request), send)

    # ---------------------------------------------------------------- run

    def _on_signal(self, signum, frame) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        self.stop_event.set()

    def _health(self) -> bool | str:
        now = time.monotonic()
        for r, t in zip(self.readers, self.reader_threads):
            if not t.is_alive():
                return f"reader thread {r.name} died"
            if now - r.last_alive > self.reader_stall_s:
                return f"reader {r.name} has not looped for {now - r.last_alive:.0f} s"
        if self.uploader is not None:
            if not self.uploader.alive():
                return "uploader thread died"
            limit = self.uploader_stall_s + 3 * (self.cfg.iflow.read_timeout if self.cfg.iflow else 0)
            if now - self.uploader.last_alive > limit:
                return "uploader is stuck"
        return True

    def run(self) -> int:
        cfg = self.cfg
        prepare_state_dir(cfg)
        check_file_modes(cfg)
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, self._on_signal)

        lock = StateLock(cfg.state_dir)
        if not self._lock(lock):
            return 0
        try:
            return self._run_locked()
        finally:
            lock.release()

    def _lock(self, lock: StateLock) -> bool:
        """Take the state directory's lock, waiting while a command holds it; False
        when told to stop meanwhile."""
        try:
            if not lock.acquire(timeout=0):
                log.info("waiting for the journal lock (an `agent` command is using it)")
                while not lock.acquire(timeout=1.0):
                    if self.stop_event.is_set():
                        return False
        except OSError as exc:
            lock.release()
            # e.g. the lock file cannot take our pid on a full disk: one line, not a
            # traceback, and exit 1 for a full disk so that systemd tries again
            raise state_dir_error(self.cfg.state_dir, exc) from None
        return True

    def _run_locked(self) -> int:
        cfg = self.cfg
        notifier = self.notifier or Notifier()
        if self.feedback is None:
            self.feedback = make_feedback(cfg)
        self.journal = open_journal(cfg)
        self.clock = make_clock(cfg)
        self.clock.observe()
        notifier.ready(f"journal open: {self.journal.summary()['pending']} pending")
        log.info("agent %s started; journal open with %d pending scans", __version__,
                 self.journal.summary()["pending"])

        self.deliverer = make_deliverer(cfg, self.journal, self.clock)
        self.uploader = make_uploader(cfg, self.deliverer)
        self.recorder = make_recorder(cfg, self.journal, self.clock, self.feedback,
                                      on_stored=self.uploader.wake if self.uploader else None)
        self.recorder.seed_debounce(self.clock.boot_id)

        self.parts = Parts(cfg, self.journal, self.clock, delivery=self.deliverer,
                           wake=self.uploader.wake if self.uploader else None,
                           daemon=DaemonView(pid=os.getpid(), started=self.started, readers=self._reader_states,
                                             scans_this_run=lambda: dict(self.recorder.counts),
                                             stop=self.stop_event,
                                             scans_by_reader=lambda: {n: dict(c) for n, c in
                                                                      list(self.recorder.by_reader.items())}))
        control = ControlServer(cfg.state_dir, dict.fromkeys(OPERATIONS, self._handler))
        control.start()
        self.ready.set()
        scheduler = metrics = None
        try:
            self.readers = self._readers_override or [make_reader(rc) for rc in cfg.readers]
            for reader in self.readers:
                t = threading.Thread(target=reader.run, name=f"reader-{reader.name}",
                                     args=(self.stop_event, lambda raw, _n=reader.name: self.recorder.handle(_n, raw)),
                                     daemon=True)
                t.start()
                self.reader_threads.append(t)
            if self.uploader is not None:
                self.uploader.start()

            scheduler = daemon_scheduler(self.parts)
            metrics = self._metrics_writer()
            watchdog = Watchdog(notifier, [self._health])
            status = StatusLine(notifier)
            last_compact = 0.0
            while not self.stop_event.wait(self._next_tick(watchdog)):
                watchdog.tick()
                for event in self.clock.observe():
                    log.info("clock: %s", event)
                    if event == "synced" and self.uploader is not None:
                        self.uploader.wake()
                self._update_conditions()
                if notifier.enabled:
                    status.update(self._status_text())
                if scheduler is not None:
                    scheduler.tick()
                self._write_metrics(metrics)
                if time.monotonic() - last_compact > 3600:
                    last_compact = time.monotonic()
                    removed = self.journal.compact()
                    if removed:
                        log.info("retention: removed %d old segment(s) of history (delivered, duplicate "
                                 "or dismissed records)", removed)
        finally:
            self.stop_event.set()  # also when start-up failed half way
            notifier.stopping()
            log.info("stopping: readers first, then the uploader")
            for t in self.reader_threads:
                t.join(timeout=5)
            if metrics is not None:
                self._stopping_metrics = True  # the last file says the daemon is not running
                self._write_metrics(metrics, force=True)
            if scheduler is not None:
                scheduler.stop()
            if self.uploader is not None:
                self.uploader.stop()
            control.stop()
            self.journal.close()
            self.feedback.close()
            log.info("stopped")
        return 0

    def _metrics_writer(self) -> TextfileWriter | None:
        mc = self.cfg.metrics
        if not mc.textfile_dir:
            return None
        return TextfileWriter(mc.textfile_dir, mc.interval, self._metrics_text, self._metrics_fingerprint)

    def _metrics_text(self) -> str:
        assert self.parts is not None
        st = perform(self.parts, StatusRequest())
        if self._stopping_metrics:
            st.update(daemon=False, readers=[dict(r, connected=False) for r in st.get("readers") or ()])
        return render_metrics(st, time.time(), __version__)

    def _metrics_fingerprint(self) -> tuple:
        """What, when it changes, is worth a new file before the interval is up."""
        summary = self.journal.summary() if self.journal is not None else {}
        d = self.deliverer
        return (summary.get("total"), summary.get("pending"), summary.get("unresolved"),
                tuple(bool(r.connected) for r in self.readers), bool(self.clock and self.clock.synced),
                None if d is None else (d.last_success, d.auth_refused, d.failures, sum(d.held.values())))

    def _write_metrics(self, metrics: TextfileWriter | None, force: bool = False) -> None:
        if metrics is None:
            return
        try:
            metrics.tick(force=force)
        except Exception:  # noqa: BLE001 - metrics must never stop the door
            log.exception("metrics: could not be written")

    def _next_tick(self, watchdog: Watchdog) -> float:
        """Seconds until the supervisor has something to do: its idle pace, or
        sooner when systemd's watchdog wants pings more often or a disconnected
        reader is about to count as missing."""
        wait = SUPERVISOR_TICK_S
        if watchdog.enabled and watchdog.interval:
            wait = min(wait, watchdog.interval / 2)  # twice per ping interval: jitter never skips one
        now = time.monotonic()
        for since in self._disconnected_since.values():
            due = since + READER_MISSING_AFTER_S - now
            if due > 0:
                wait = min(wait, due + 0.05)
        return wait

    def _update_conditions(self) -> None:
        fb = self.feedback
        now = time.monotonic()
        for r in self.readers:
            if r.connected:
                self._disconnected_since.pop(r.name, None)
            else:
                self._disconnected_since.setdefault(r.name, now)
        self._missing = {name for name, t in self._disconnected_since.items() if now - t >= READER_MISSING_AFTER_S}
        fb.condition("reader_missing", bool(self._missing))
        if self.deliverer is not None:
            fb.condition("auth", self.deliverer.auth_refused)
            offline = self.deliverer.in_backoff() > 0 and self.journal.summary()["pending"] > 0
            # Scans held past NTP's grace wait for a person as surely as an outage does.
            fb.condition("offline", offline or needs_person(self.deliverer.held, self.deliverer.held_detail))


    def _status_text(self) -> str:
        """The ``STATUS=`` line, from counts the daemon keeps anyway (the journal's
        in-memory summary, the deliverer's last result): no pass over the journal."""
        summary = self.journal.summary()
        d = self.deliverer
        delivery = None
        if d is not None:
            delivery = (d.last_success, "iFlow refused the token" if d.auth_refused else
                        "delivery failing" if d.failures else None)
        return status_line(summary["pending"], [(r.name, r.name not in self._missing) for r in self.readers],
                           delivery=delivery, held=d.held if d is not None else None,
                           rejected=summary["unresolved"], tz=self.cfg.timezone)


def _dropped(reader: Any) -> int:
    """Input the reader's decoder dropped as noise (by any reason) since the start."""
    dropped = getattr(getattr(reader, "decoder", None), "dropped", None)
    try:
        return sum(list(dropped.values())) if dropped else 0  # list(): one C call, safe beside the reader's thread
    except (AttributeError, TypeError):
        return 0


def _local(iso: str, tz) -> str:
    """A UTC ISO time as the door's local clock time; with the date unless it is today."""
    when = datetime.fromisoformat(iso).astimezone(tz)
    today = datetime.now(tz).date() == when.date()
    return when.strftime("%H:%M:%S" if today else "%Y-%m-%d %H:%M")


def status_line(pending: int, readers: Iterable[tuple[str, bool]], *,
                delivery: tuple[str | None, str | None] | None = None, held: Mapping[str, int] | None = None,
                rejected: int = 0, tz=None) -> str:
    """``systemctl status``'s one line, e.g. ``3 pending · last delivery 14:02:11 ·
    reader door ok``. ``readers``: (name, present); ``delivery``: (last success as
    a UTC ISO time or None, the trouble in words or None), None without [iflow];
    ``held``: held scans by status, shown when any; ``rejected``: records waiting
    for a person (`agent rejected`)."""
    parts = [f"{pending} pending"]
    held_counts = [(s, int(n)) for s, n in sorted((held or {}).items()) if int(n or 0) > 0]
    if held_counts:
        parts.append(f"{sum(n for _, n in held_counts)} held ({', '.join(f'{n} {s}' for s, n in held_counts)})")
    if rejected:
        parts.append(f"{rejected} rejected")
    if delivery is not None:
        last, trouble = delivery
        if trouble:
            parts.append(trouble)
        parts.append(f"last delivery {_local(last, tz)}" if last else "no delivery since start")
    parts += [f"reader {name} {'ok' if present else 'missing'}" for name, present in readers]
    return " · ".join(parts)


def add_arguments(parser) -> None:
    """`agent run` takes no arguments of its own."""


def main(cfg: Config, args) -> int:
    try:
        try:
            return Daemon(cfg).run()
        except FeedbackUnavailable as exc:
            raise CommandError(f"{cfg.path}: feedback.backend: {exc}", EXIT_CONFIG) from None
    except AgentError as exc:
        if exc.exit_code == EXIT_CONFIG:  # systemd will not restart it: show why on `systemctl status`
            report_config_error(str(exc))
        raise
