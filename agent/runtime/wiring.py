"""The composition root: every part of the agent is built from the Config here.

The daemon, every command and ``agent doctor`` build their parts through these
functions and nowhere else, so a setting means the same thing on every path.
Heavy modules (the HTTP client: httpx; readers: pyserial/evdev) are imported
inside the factory that needs them: `agent status` and `agent --version`
must start fast on a Pi, and a missing optional driver must not break import.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from datetime import UTC, datetime

from agent import BUILD_DATE, reading
from agent.config import Config, ReaderConfig
from agent.errors import AgentError, ConfigError
from agent.fsinfo import UNKNOWN, VOLATILE, StateDirError, state_dir_error, storage_of
from agent.journal.store import Journal

log = logging.getLogger("agent.daemon")

CLOCK_FILE = "clock.json"
JOURNAL_DIR = "journal"


def make_reader(rc: ReaderConfig):
    """The reader shell for one ``[reader]`` table (python-can style: chosen by config)."""
    return reading.make_reader(rc)


def make_clock(cfg: Config):
    from agent.clock.anchors import AnchorStore
    from agent.clock.clock import Clock
    from agent.clock.sources import ClockSources

    sources = ClockSources(use_adjtimex=cfg.time.use_adjtimex, timesyncd_flag=cfg.time.timesyncd_flag,
                           trust_rtc=cfg.time.trust_rtc, boot_id_path=cfg.time.boot_id_path)
    build_time = datetime.fromisoformat(BUILD_DATE).replace(tzinfo=UTC)
    return Clock(sources, AnchorStore(os.path.join(cfg.state_dir, CLOCK_FILE)), build_time=build_time,
                 http_date_max_error_s=cfg.time.http_date_max_error)


def make_client(cfg: Config, clock=None):
    """The iFlow client; with ``clock``, every answer's Date teaches it and
    certificates are checked at its trusted time (agent.clock.httpdate)."""
    from agent.delivery.client import IflowClient

    ic = cfg.iflow
    assert ic is not None
    learn = {} if clock is None else {"on_answer": clock.observe_answer, "mono_ns": clock.mono_ns,
                                       "insecure_dates": cfg.time.http_date_insecure,
                                       "verify_at": clock.trusted_now_s}
    return IflowClient(ic.url, ic.access_token, ic.client_version, csv_data_in=ic.csv_data_in,
                       max_url_bytes=ic.max_url_bytes, connect_timeout=ic.connect_timeout,
                       read_timeout=ic.read_timeout, verify=ic.ca_bundle or True, **learn)


def _dates_usable(cfg: Config) -> bool:
    """iFlow's Date can give a boot its time: on, and over verified HTTPS (or the lab switch)."""
    ic = cfg.iflow
    return (ic is not None and cfg.time.http_date_max_error > 0 and not cfg.time.trust_rtc
            and (ic.url.lower().startswith("https:") or cfg.time.http_date_insecure))


def waiting_for(cfg: Config) -> str:
    """What can give a boot without a synchronised clock its time (``held_detail["waiting_for"]``)."""
    return "ntp or https-date" if _dates_usable(cfg) else "ntp"


def make_timeprobe(cfg: Config, clock):
    """The HEAD that learns the time before scans that need it are sent; None when off."""
    if not _dates_usable(cfg):
        return None
    from agent.delivery.timeprobe import TimeProbe

    ic = cfg.iflow
    return TimeProbe(ic.url, clock, ca_bundle=ic.ca_bundle, insecure=cfg.time.http_date_insecure,
                     connect_timeout=ic.connect_timeout, read_timeout=ic.read_timeout,
                     retry_initial=ic.backoff_initial, retry_max=ic.backoff_max)


def make_deliverer(cfg: Config, journal: Journal, clock):
    if cfg.iflow is None:
        return None
    from agent.delivery.deliverer import Deliverer

    ic = cfg.iflow
    return Deliverer(journal, make_client(cfg, clock), clock, cfg.timezone, policy=cfg.time.unsynced,
                     batch_max=ic.batch_max, backoff_initial=ic.backoff_initial,
                     backoff_max=ic.backoff_max, timeprobe=make_timeprobe(cfg, clock))


CROSSCHEX_TOKEN_FILE = "crosschex-token.json"


def make_crosschex_client(cfg: Config, **overrides):
    """The CrossChex client for ``cfg`` (ValueError for unusable settings);
    ``overrides`` are CrossChexClient keywords (the scheduler's interruptible ``sleep``)."""
    from agent.crosschex.client import CrossChexClient

    cc = cfg.crosschex
    assert cc is not None
    cache = os.path.join(cfg.state_dir, CROSSCHEX_TOKEN_FILE) if os.path.isdir(cfg.state_dir) else None
    return CrossChexClient(cc.url, cc.api_key, cc.api_secret, token_cache=cache, min_interval_s=cc.min_interval,
                           **overrides)


# What makes a state directory unusable as such (not a fault of one journal file).
_STATE_DIR_ERRNOS = frozenset({errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EEXIST,
                               errno.ENOSPC, errno.EDQUOT})


def open_journal(cfg: Config) -> Journal:
    """The journal in ``state_dir``; StateDirError (exit 2) when the directory cannot hold it."""
    try:
        return Journal(os.path.join(cfg.state_dir, JOURNAL_DIR), segment_size=cfg.journal.segment_size,
                       retention_days=cfg.journal.retention_days)
    except OSError as exc:
        if isinstance(exc, AgentError) or exc.errno not in _STATE_DIR_ERRNOS:
            raise
        raise state_dir_error(cfg.state_dir, exc) from None


def ensure_state_dir(path: str) -> None:
    """Create ``path`` (0700) and prove a file can be created in it; StateDirError otherwise."""
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        # makedirs passes for an existing read-only (or full) directory: the lock would fail later
        probe = os.path.join(path, f".probe-{os.getpid()}")
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600))
        os.unlink(probe)
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError as exc:
        raise state_dir_error(path, exc) from None
    if mode & 0o077:
        log.warning("state directory %s is accessible to other users (mode %04o); "
                    "scans identify people: chmod 700 %s", path, mode, path)


def prepare_state_dir(cfg: Config) -> None:
    """The daemon's start: ``state_dir`` usable, and durable (not on tmpfs, zram or an
    overlay in RAM, whose fsync promises nothing) unless journal.allow_volatile;
    StateDirError (exit 2) otherwise. Judged before creating anything, so a refusal leaves nothing behind."""
    storage = storage_of(cfg.state_dir)
    if storage.kind == VOLATILE and not cfg.journal.allow_volatile:
        raise StateDirError(
            f"state_dir {cfg.state_dir} is on {storage.what}: every scan stored there is lost at the "
            f"next power cut; put state_dir on a persistent partition (e.g. /var/lib/rfid-agent on the "
            f"SD card or a USB disk), or for a demo or test set journal.allow_volatile = true in {cfg.path}")
    ensure_state_dir(cfg.state_dir)
    if storage.kind == VOLATILE:
        log.warning("state directory %s is on %s: scans do NOT survive a power cut "
                    "(allowed by journal.allow_volatile)", cfg.state_dir, storage.what)
    elif storage.kind == UNKNOWN:
        # e.g. raspi-config's older overlay, whose RAM upper layer is hidden after boot
        log.warning("cannot tell whether state directory %s survives a power cut: %s", cfg.state_dir, storage.what)


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


def make_feedback(cfg: Config):
    """The door's feedback; ConfigError (exit 2) for settings no backend accepts
    (gpio with no pin): a traceback and exit 1 would have systemd restart it forever."""
    # Imported here: gpiozero is loaded only for the gpio backend.
    from agent.feedback import make_feedback as build

    try:
        return build(cfg.feedback)
    except ValueError as exc:
        raise ConfigError(f"{cfg.path}: {exc}") from None


def make_recorder(cfg: Config, journal: Journal, clock, feedback, on_stored=None):
    from agent.recording.recorder import Recorder

    return Recorder(journal, clock, feedback, readers=cfg.readers, log_tags=cfg.log_tags, on_stored=on_stored)


def make_uploader(cfg: Config, deliverer):
    """The daemon's background sender for ``deliverer`` (None without ``[iflow]``)."""
    if deliverer is None or cfg.iflow is None:
        return None
    from agent.delivery.uploader import Uploader

    return Uploader(deliverer, send_delay=cfg.iflow.send_delay)

