"""Configuration: one TOML file, validated completely at start.

Every key is documented in the README and in ``examples/config.toml``; the key
names are public interface. Any problem raises :class:`ConfigError`, whose text
is one line naming the file, the key and what is wrong.
"""

from __future__ import annotations

import os
import tomllib
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from agent.errors import ConfigError
from agent.reader_config import (  # ReaderConfig lives there, imported from here as ever
    ReaderConfig,
    one_reader_per_device,
    one_use_per_line,
    reader_from_table,
)
from agent.schema import (
    Section,
    check_non_negative,
    check_pin,
    check_positive,
    check_url,
    secret_value,
)

DEFAULT_PATH = "/etc/rfid-agent/config.toml"

# ---------------------------------------------------------------- settings
#
# Immutable records, as NamedTuples rather than dataclasses: every command
# loads the config first, and dataclasses (with the inspect module they pull
# in) would add ~25 ms here, several times that on a Pi Zero, to `agent status`.
# ReaderConfig and its checks: agent.reader_config.


class IflowConfig(NamedTuple):
    url: str
    access_token: str
    client_version: str = "1.0"
    access_token_file: str | None = None
    max_url_bytes: int = 7000
    csv_data_in: str = "query"  # "query" | "json-body"
    connect_timeout: float = 5.0
    read_timeout: float = 15.0
    backoff_initial: float = 2.0
    backoff_max: float = 300.0
    batch_max: int = 500
    ca_bundle: str | None = None
    send_delay: float = 0.5  # seconds to gather scans before sending

    def __repr__(self) -> str:
        return _repr_without(self, "access_token")


class FeedbackConfig(NamedTuple):
    backend: str = "none"  # "gpio" | "console" | "none"
    fallback: str = "none"  # "console" | "none": what "gpio" degrades to without GPIO
    green_pin: int | None = None
    red_pin: int | None = None
    buzzer_pin: int | None = None
    buzzer_type: str = "active"  # "active" | "passive"


class JournalConfig(NamedTuple):
    segment_size: int = 256
    retention_days: float = 30.0
    allow_volatile: bool = False  # run with state_dir on tmpfs/zram/an overlay in RAM (demos, tests)


class TimeConfig(NamedTuple):
    unsynced: str = "hold"  # "hold" | "send"
    trust_rtc: bool = False
    use_adjtimex: bool = True
    timesyncd_flag: str = "/run/systemd/timesync/synchronized"
    boot_id_path: str = "/proc/sys/kernel/random/boot_id"
    http_date_max_error: float = 5.0  # seconds; an HTTPS Date looser than this is not used; 0: never
    http_date_insecure: bool = False  # believe the Date of plain HTTP (labs and tests only)


class MetricsConfig(NamedTuple):
    # node_exporter's textfile directory (Debian's default); "" turns metrics off.
    textfile_dir: str = "/var/lib/prometheus/node-exporter"
    interval: float = 15.0  # seconds between rewrites of rfid_agent.prom


class CrossChexConfig(NamedTuple):
    url: str
    api_key: str
    api_secret: str
    api_secret_file: str | None = None
    tag_from: str = "workno"
    mapping_file: str | None = None
    match_seconds: int = 60
    min_interval: float = 30.0
    reconcile_every: float | None = None  # seconds; None = off
    reconcile_window: float = 86400.0

    def __repr__(self) -> str:
        return _repr_without(self, "api_key", "api_secret")


class Config(NamedTuple):
    path: str
    timezone: ZoneInfo
    state_dir: str
    readers: tuple[ReaderConfig, ...]
    iflow: IflowConfig | None
    feedback: FeedbackConfig
    journal: JournalConfig
    time: TimeConfig
    crosschex: CrossChexConfig | None
    log_level: str = "INFO"
    log_tags: str = "plain"  # "plain" | "hash"
    warnings: tuple[str, ...] = ()
    metrics: MetricsConfig = MetricsConfig()

    @property
    def reader(self) -> ReaderConfig:
        return self.readers[0]


def _repr_without(settings: NamedTuple, *secret: str) -> str:
    """A repr that never shows a secret (it could reach a log or a traceback)."""
    shown = ", ".join(f"{k}={'***' if k in secret else repr(v)}" for k, v in settings._asdict().items())
    return f"{type(settings).__name__}({shown})"


# ---------------------------------------------------------------- validation

def load(path: str) -> Config:
    """Read and validate the configuration file at ``path``."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found (use --config PATH or $AGENT_CONFIG)") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ConfigError(f"{path}: saved as UTF-16 text; save it as UTF-8") from None
    try:
        # utf-8-sig: Windows Notepad starts a UTF-8 file with a byte-order mark
        doc = tomllib.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: TOML syntax error: {exc}") from None
    return from_dict(doc, path)


def from_dict(doc: dict[str, Any], path: str = "<config>") -> Config:
    warnings: list[str] = []
    top = Section(path, "", doc)

    tzname = top.get("timezone", str, required=True)
    try:
        tz = ZoneInfo(tzname)
    except (ZoneInfoNotFoundError, ValueError):
        raise top.error("timezone", f"unknown time zone {tzname!r} (use an IANA name like \"Europe/Bucharest\")") from None
    state_dir = top.get("state_dir", str, "/var/lib/rfid-agent")
    log_level = top.get("log_level", str, "INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    log_tags = top.get("log_tags", str, "plain", choices=("plain", "hash"))

    # [reader] (one) or [[reader]] (several)
    top.used.add("reader")
    rtable = doc.get("reader", {"type": "serial"})
    if isinstance(rtable, list):
        if not rtable:
            raise top.error("reader", "needs at least one [[reader]] table")
        prefixes = [f"reader[{i}]" for i in range(len(rtable))]
        readers = tuple(reader_from_table(path, p, t, i, warnings) for i, (p, t) in enumerate(zip(prefixes, rtable)))
    else:
        prefixes = ["reader"]
        readers = (reader_from_table(path, "reader", rtable, 0, warnings),)
    names = [r.name for r in readers]
    if len(set(names)) != len(names):
        raise top.error("reader", f"reader names must be unique, got {names}")
    one_reader_per_device(top, readers)

    iflow = None
    top.used.add("iflow")
    if "iflow" in doc:
        sec = Section(path, "iflow", doc["iflow"])
        d = IflowConfig(url="", access_token="")
        url = sec.get("url", str, required=True, check=check_url)
        token, token_file = secret_value(sec, "access_token", warnings)
        iflow = IflowConfig(
            url=url, access_token=token, access_token_file=token_file,
            client_version=sec.get("client_version", str, d.client_version),
            max_url_bytes=sec.get("max_url_bytes", int, d.max_url_bytes,
                                  check=lambda v: None if v >= 512 else "must be at least 512"),
            csv_data_in=sec.get("csv_data_in", str, d.csv_data_in, choices=("query", "json-body")),
            connect_timeout=sec.get("connect_timeout", float, d.connect_timeout, check=check_positive),
            read_timeout=sec.get("read_timeout", float, d.read_timeout, check=check_positive),
            backoff_initial=sec.duration("backoff_initial", d.backoff_initial),
            backoff_max=sec.duration("backoff_max", d.backoff_max),
            batch_max=sec.get("batch_max", int, d.batch_max, check=check_positive),
            ca_bundle=sec.get("ca_bundle", str, None),
            send_delay=sec.get("send_delay", float, d.send_delay, check=check_non_negative),
        )
        if iflow.ca_bundle and not os.path.isfile(iflow.ca_bundle):
            raise sec.error("ca_bundle", f"{iflow.ca_bundle} does not exist")
        sec.finish()

    top.used.add("feedback")
    sec = Section(path, "feedback", doc.get("feedback", {}))
    d = FeedbackConfig()
    feedback = FeedbackConfig(
        backend=sec.get("backend", str, d.backend, choices=("gpio", "console", "none")),
        fallback=sec.get("fallback", str, d.fallback, choices=("console", "none")),
        green_pin=sec.get("green_pin", int, None, check=check_pin),
        red_pin=sec.get("red_pin", int, None, check=check_pin),
        buzzer_pin=sec.get("buzzer_pin", int, None, check=check_pin),
        buzzer_type=sec.get("buzzer_type", str, d.buzzer_type, choices=("active", "passive")),
    )
    sec.finish()
    one_use_per_line(top, prefixes, readers, {
        f"feedback.{k}": pin for k in ("green_pin", "red_pin", "buzzer_pin")
        if feedback.backend == "gpio" and (pin := getattr(feedback, k)) is not None})

    top.used.add("journal")
    sec = Section(path, "journal", doc.get("journal", {}))
    d2 = JournalConfig()
    journal = JournalConfig(
        segment_size=sec.get("segment_size", int, d2.segment_size,
                             check=lambda v: None if 16 <= v <= 10000 else "must be between 16 and 10000"),
        retention_days=sec.get("retention_days", float, d2.retention_days, check=check_positive),
        allow_volatile=sec.get("allow_volatile", bool, d2.allow_volatile),
    )
    sec.finish()

    top.used.add("time")
    sec = Section(path, "time", doc.get("time", {}))
    d3 = TimeConfig()
    timecfg = TimeConfig(
        unsynced=sec.get("unsynced", str, d3.unsynced, choices=("hold", "send")),
        trust_rtc=sec.get("trust_rtc", bool, d3.trust_rtc),
        use_adjtimex=sec.get("use_adjtimex", bool, d3.use_adjtimex),
        timesyncd_flag=sec.get("timesyncd_flag", str, d3.timesyncd_flag),
        boot_id_path=sec.get("boot_id_path", str, d3.boot_id_path),
        http_date_max_error=sec.get("http_date_max_error", float, d3.http_date_max_error,
                                    check=lambda v: None if 0 <= v <= 60 else "must be between 0 and 60 seconds"),
        http_date_insecure=sec.get("http_date_insecure", bool, d3.http_date_insecure),
    )
    sec.finish()

    top.used.add("metrics")
    sec = Section(path, "metrics", doc.get("metrics", {}))
    d4 = MetricsConfig()
    metrics = MetricsConfig(
        textfile_dir=sec.get("textfile_dir", str, d4.textfile_dir, check=_check_textfile_dir),
        interval=sec.duration("interval", d4.interval),
    )
    if not 1 <= metrics.interval <= 120:
        # The alert rules call a file 5 min old stale (deploy/prometheus/README.md).
        raise sec.error("interval", "must be between 1 s and 2 min (the shipped alert rules call a file "
                                    "5 min old stale)")
    sec.finish()

    crosschex = None
    top.used.add("crosschex")
    if "crosschex" in doc:
        sec = Section(path, "crosschex", doc["crosschex"])
        url = sec.get("url", str, required=True, check=check_url)
        key = sec.get("api_key", str, required=True)
        secret, secret_file = secret_value(sec, "api_secret", warnings)
        mapping = sec.get("mapping_file", str, None)
        if mapping and not os.path.isfile(mapping):
            raise sec.error("mapping_file", f"{mapping} does not exist")
        crosschex = CrossChexConfig(
            url=url, api_key=key, api_secret=secret, api_secret_file=secret_file,
            tag_from=sec.get("tag_from", str, "workno"),
            mapping_file=mapping,
            match_seconds=sec.get("match_seconds", int, 60, check=check_non_negative),
            min_interval=sec.duration("min_interval", 30.0),
            reconcile_every=sec.duration("reconcile_every", None),
            reconcile_window=sec.duration("reconcile_window", 86400.0),
        )
        sec.finish()

    top.finish()
    return Config(path=path, timezone=tz, state_dir=state_dir, readers=readers, iflow=iflow,
                  feedback=feedback, journal=journal, time=timecfg, crosschex=crosschex,
                  log_level=log_level, log_tags=log_tags, warnings=tuple(warnings), metrics=metrics)


def _check_textfile_dir(value: str) -> str | None:
    if value and not os.path.isabs(value):
        return "must be an absolute path (node_exporter's --collector.textfile.directory), or \"\" for off"
    return None


def resolve_path(cli_value: str | None) -> str:
    """``--config`` wins, then ``$AGENT_CONFIG``, then the default path."""
    return cli_value or os.environ.get("AGENT_CONFIG") or DEFAULT_PATH
