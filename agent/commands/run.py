"""``agent run``: the daemon, wired together.

Start-up order matters: lock the state directory, open the journal (READY=1
goes to systemd here, since scans can now be stored), then the control socket,
the readers and the uploader. Each reader has its own thread; a read goes
straight down :class:`agent.recording.recorder.Recorder` in that thread (no network on
the path). The main thread supervises: clock observation, feedback
conditions, the systemd watchdog (sent only while every thread is alive),
retention, and signals. SIGTERM stops the readers, lets the write in progress
finish, and exits 0.
"""

from __future__ import annotations

import logging
import os
import signal
import stat
import threading
import time
from typing import Any

from agent import __version__
from agent.config import Config, ReaderConfig
from agent.journal.store import Journal
from agent.runtime.control import ControlServer, StateLock

log = logging.getLogger("agent.daemon")

READER_STALL_S = 10.0  # a reader thread that has not looped for this long is hung
READER_MISSING_AFTER_S = 2.0  # a reader disconnected this long shows "reader missing"
UPLOADER_STALL_S = 60.0


def make_reader(rc: ReaderConfig):
    """The reader shell for one ``[reader]`` table (python-can style: chosen by config)."""
    from agent.reading import readers

    if rc.type == "hid":
        from agent.reading.hidkeys import HidDecoder

        return readers.HidReader(rc.name, path=rc.path, device_name=rc.device_name, usb_id=rc.usb_id,
                                 decoder=HidDecoder(gap_seconds=rc.gap_seconds, max_len=rc.max_len))
    from agent.reading.frames import make_decoder

    decoder = make_decoder(rc.protocol, max_len=rc.max_len,
                           pattern=rc.pattern if rc.protocol == "regex" else None)
    return readers.SerialReader(rc.name, rc.port, baudrate=rc.baudrate, decoder=decoder)


def reader_formats(cfg: Config) -> dict[str, tuple[str, str, float, str]]:
    from agent.reading.tagformat import kind_for_protocol

    return {rc.name: (rc.tag_format, rc.byte_order, rc.debounce_seconds,
                      kind_for_protocol(rc.protocol) if rc.type == "serial" else "auto")
            for rc in cfg.readers}


def make_clock(cfg: Config):
    from datetime import datetime, timezone

    from agent import BUILD_DATE
    from agent.clock.timekeeping import AnchorStore, Clock, ClockSources

    sources = ClockSources(use_adjtimex=cfg.time.use_adjtimex, timesyncd_flag=cfg.time.timesyncd_flag,
                           trust_rtc=cfg.time.trust_rtc, boot_id_path=cfg.time.boot_id_path)
    build_time = datetime.fromisoformat(BUILD_DATE).replace(tzinfo=timezone.utc)
    return Clock(sources, AnchorStore(os.path.join(cfg.state_dir, "clock.json")), build_time=build_time)


def make_client(cfg: Config):
    from agent.delivery.iflow import IflowClient

    ic = cfg.iflow
    assert ic is not None
    return IflowClient(ic.url, ic.access_token, ic.client_version, csv_data_in=ic.csv_data_in,
                       max_url_bytes=ic.max_url_bytes, connect_timeout=ic.connect_timeout,
                       read_timeout=ic.read_timeout, verify=ic.ca_bundle or True)


def make_deliverer(cfg: Config, journal: Journal, clock):
    if cfg.iflow is None:
        return None
    from agent.delivery.deliverer import Deliverer

    ic = cfg.iflow
    return Deliverer(journal, make_client(cfg), clock, cfg.timezone, policy=cfg.time.unsynced,
                     batch_max=ic.batch_max, backoff_initial=ic.backoff_initial,
                     backoff_max=ic.backoff_max)


def open_journal(cfg: Config) -> Journal:
    return Journal(os.path.join(cfg.state_dir, "journal"), segment_size=cfg.journal.segment_size,
                   retention_days=cfg.journal.retention_days)


def ensure_state_dir(path: str) -> None:
    os.makedirs(path, mode=0o700, exist_ok=True)
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & 0o077:
        log.warning("state directory %s is accessible to other users (mode %04o); "
                    "scans identify people: chmod 700 %s", path, mode, path)


def check_file_modes(cfg: Config) -> None:
    """Warn (never fail) when secrets are readable by others."""
    for w in cfg.warnings:
        log.warning("%s", w)
    if cfg.iflow and not cfg.iflow.access_token_file:
        try:
            mode = stat.S_IMODE(os.stat(cfg.path).st_mode)
        except OSError:
            return
        if mode & 0o077:
            log.warning("%s holds the access token and is readable by other users (mode %04o); "
                        "chmod 600 it or use access_token_file", cfg.path, mode)


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
        self._disconnected_since: dict[str, float] = {}

    # ------------------------------------------------------------ requests

    def status(self) -> dict[str, Any]:
        assert self.journal is not None
        out = self.journal.summary()
        out.update({
            "daemon": True, "pid": os.getpid(), "version": __version__,
            "uptime_seconds": round(time.time() - self.started, 1),
            "readers": [{"name": r.name, "connected": bool(r.connected), "error": r.error}
                        for r in self.readers],
            "scans_this_run": dict(self.recorder.counts) if self.recorder else {},
            "clock_synced": bool(self.clock.synced) if self.clock else None,
        })
        if self.deliverer is not None:
            out.update(self.deliverer.state())
        else:
            out.update({"last_delivery": None, "last_error": "delivery not configured ([iflow] missing)",
                        "backoff_seconds": 0.0, "held": {}})
        return out

    def handle_status(self, request: dict, send) -> dict:
        return self.status()

    def handle_flush(self, request: dict, send) -> dict:
        if self.deliverer is None:
            raise ValueError("delivery is not configured ([iflow] missing)")
        if request.get("dry_run"):
            items, held = self.deliverer.plan(bool(request.get("release_unsynced")))
            return {"would_send": [i._asdict() for i in items], "held": dict(held)}
        summary = self.deliverer.drain(progress=send, stop=self.stop_event,
                                       release_unsynced=bool(request.get("release_unsynced")))
        return summary.as_dict()

    def handle_rejected(self, request: dict, send) -> dict:
        from agent.runtime import operations as rejected

        assert self.journal is not None
        result = rejected.handle(self.journal, request)
        if self.uploader is not None and result.get("returned"):
            self.uploader.wake()
        return result

    def handle_insert(self, request: dict, send) -> dict:
        """Add records from another source (reconciliation) through the one writer."""
        from agent.runtime import operations as rejected

        assert self.journal is not None
        result = rejected.insert_external(self.journal, request.get("records", []))
        if self.uploader is not None and result.get("added"):
            self.uploader.wake()
        return result

    def handle_scans(self, request: dict, send) -> list:
        """Local scans in a time window (for `agent reconcile`)."""
        from datetime import datetime

        from agent.commands.reconcile import scans_in_window

        assert self.journal is not None
        return scans_in_window(self.journal, self.clock, datetime.fromisoformat(request["from"]),
                               datetime.fromisoformat(request["to"]))

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
        from agent.feedback.backends import make_feedback
        from agent.recording.recorder import Recorder
        from agent.runtime.sdnotify import Notifier, Watchdog

        cfg = self.cfg
        ensure_state_dir(cfg.state_dir)
        check_file_modes(cfg)
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, self._on_signal)

        lock = StateLock(cfg.state_dir)
        if not lock.acquire(timeout=0):
            log.info("waiting for the journal lock (an `agent` command is using it)")
            while not lock.acquire(timeout=1.0):
                if self.stop_event.is_set():
                    return 0
        try:
            return self._run_locked(make_feedback, Recorder, Notifier, Watchdog)
        finally:
            lock.release()

    def _run_locked(self, make_feedback, Recorder, Notifier, Watchdog) -> int:
        cfg = self.cfg
        notifier = self.notifier or Notifier()
        if self.feedback is None:
            fc = cfg.feedback
            self.feedback = make_feedback(fc.backend, green=fc.green_pin, red=fc.red_pin,
                                          buzzer=fc.buzzer_pin, buzzer_type=fc.buzzer_type,
                                          fallback=fc.fallback)
        self.journal = open_journal(cfg)
        self.clock = make_clock(cfg)
        self.clock.observe()
        notifier.ready(f"journal open: {self.journal.summary()['pending']} pending")
        log.info("agent %s started; journal open with %d pending scans", __version__,
                 self.journal.summary()["pending"])

        self.deliverer = make_deliverer(cfg, self.journal, self.clock)
        if self.deliverer is not None:
            from agent.delivery.deliverer import Uploader

            self.uploader = Uploader(self.deliverer, send_delay=cfg.iflow.send_delay)
        self.recorder = Recorder(self.journal, self.clock, self.feedback, readers=reader_formats(cfg),
                                 log_tags=cfg.log_tags,
                                 on_stored=self.uploader.wake if self.uploader else None)
        self.recorder.seed_debounce(self.clock.boot_id)

        control = ControlServer(cfg.state_dir, {
            "status": self.handle_status, "flush": self.handle_flush,
            "rejected": self.handle_rejected, "insert": self.handle_insert,
            "scans": self.handle_scans,
        })
        control.start()
        self.ready.set()
        scheduler = None
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

            if cfg.crosschex is not None and cfg.crosschex.reconcile_every:
                from datetime import datetime

                from agent.commands.reconcile import Scheduler, scans_in_window
                from agent.crosschex.matching import LocalScan
                from agent.runtime import operations as rejected

                def local_scans(begin, end):
                    return [LocalScan(s["id"], s["tag"], datetime.fromisoformat(s["when"]))
                            for s in scans_in_window(self.journal, self.clock, begin, end)]

                def insert(records):
                    result = rejected.insert_external(self.journal, records)
                    if self.uploader is not None and result.get("added"):
                        self.uploader.wake()
                    return result

                scheduler = Scheduler(cfg, insert, local_scans, synced=lambda: self.clock.synced)

            watchdog = Watchdog(notifier, [self._health])
            last_compact = 0.0
            while not self.stop_event.wait(0.5):
                watchdog.tick()
                for event in self.clock.observe():
                    log.info("clock: %s", event)
                    if event == "synced" and self.uploader is not None:
                        self.uploader.wake()
                self._update_conditions()
                if scheduler is not None:
                    scheduler.tick()
                if time.monotonic() - last_compact > 3600:
                    last_compact = time.monotonic()
                    removed = self.journal.compact()
                    if removed:
                        log.info("retention: removed %d fully delivered segments", removed)
        finally:
            self.stop_event.set()  # also when start-up failed half way
            notifier.stopping()
            log.info("stopping: readers first, then the uploader")
            for t in self.reader_threads:
                t.join(timeout=5)
            if scheduler is not None:
                scheduler.stop()
            if self.uploader is not None:
                self.uploader.stop()
            control.stop()
            self.journal.close()
            self.feedback.close()
            log.info("stopped")
        return 0

    def _update_conditions(self) -> None:
        fb = self.feedback
        now = time.monotonic()
        for r in self.readers:
            if r.connected:
                self._disconnected_since.pop(r.name, None)
            else:
                self._disconnected_since.setdefault(r.name, now)
        fb.condition("reader_missing", any(now - t >= READER_MISSING_AFTER_S
                                           for t in self._disconnected_since.values()))
        if self.deliverer is not None:
            fb.condition("auth", self.deliverer.auth_refused)
            offline = self.deliverer.in_backoff() > 0 and self.journal.summary()["pending"] > 0
            fb.condition("offline", offline)
