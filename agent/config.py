"""Configuration: one TOML file, validated completely at start.

Every key is documented in the README and in ``examples/config.toml``; the key
names are public interface. Any problem raises :class:`ConfigError`, whose text
is one line naming the file, the key and what is wrong.
"""

from __future__ import annotations

import os
import re
import tomllib
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from agent.errors import ConfigError
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


class ReaderConfig(NamedTuple):
    name: str = "reader"
    type: str = "serial"  # "serial" | "hid"
    # serial
    port: str = "/dev/ttyUSB0"
    baudrate: int = 9600
    protocol: str = "line"  # "line" | "rdm6300" | "regex"
    pattern: str | None = None  # protocol "regex": a pattern with a named group "tag"
    max_len: int = 64
    # hid
    path: str | None = None
    device_name: str | None = None
    usb_id: str | None = None
    gap_seconds: float = 0.5
    # both
    debounce_seconds: float = 3.0
    tag_format: str = "raw"  # "raw" | "decimal10" | "hex" | "wiegand26"
    byte_order: str = "big"  # "big" | "little"


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

    @property
    def reader(self) -> ReaderConfig:
        return self.readers[0]


def _repr_without(settings: NamedTuple, *secret: str) -> str:
    """A repr that never shows a secret (it could reach a log or a traceback)."""
    shown = ", ".join(f"{k}={'***' if k in secret else repr(v)}" for k, v in settings._asdict().items())
    return f"{type(settings).__name__}({shown})"


# ---------------------------------------------------------------- validation

def _reader(path: str, prefix: str, table: Any, index: int) -> ReaderConfig:
    sec = Section(path, prefix, table)
    rtype = sec.get("type", str, "serial", choices=("serial", "hid"))
    d = ReaderConfig()
    kwargs: dict[str, Any] = dict(
        name=sec.get("name", str, "reader" if index == 0 else f"reader{index + 1}",
                     check=lambda v: None if re.fullmatch(r"[A-Za-z0-9_.-]{1,32}", v)
                     else "use 1-32 letters, digits, '_', '.' or '-'"),
        type=rtype,
        debounce_seconds=sec.get("debounce_seconds", float, d.debounce_seconds, check=check_non_negative),
        tag_format=sec.get("tag_format", str, d.tag_format,
                           choices=("raw", "decimal10", "hex", "wiegand26")),
        byte_order=sec.get("byte_order", str, d.byte_order, choices=("big", "little")),
        port=sec.get("port", str, d.port),
        baudrate=sec.get("baudrate", int, d.baudrate, check=check_positive),
        protocol=sec.get("protocol", str, d.protocol, choices=("line", "rdm6300", "regex")),
        pattern=sec.get("pattern", str, None),
        max_len=sec.get("max_len", int, d.max_len, check=check_positive),
        path=sec.get("path", str, None),
        device_name=sec.get("device_name", str, None),
        usb_id=sec.get("usb_id", str, None,
                       check=lambda v: None if re.fullmatch(r"[0-9a-fA-F]{4}:[0-9a-fA-F]{4}", v)
                       else "expected vendor:product in hex, like \"ffff:0035\""),
        gap_seconds=sec.get("gap_seconds", float, d.gap_seconds, check=check_positive),
    )
    sec.finish()
    if kwargs["protocol"] == "regex":
        pat = kwargs["pattern"]
        if not pat:
            raise sec.error("pattern", "is required when protocol = \"regex\"")
        try:
            if "tag" not in re.compile(pat).groupindex:
                raise sec.error("pattern", "needs a named group (?P<tag>...) for the card number")
        except re.error as exc:
            raise sec.error("pattern", f"is not a valid regular expression: {exc}") from None
    if rtype == "hid" and not (kwargs["path"] or kwargs["device_name"] or kwargs["usb_id"]):
        raise sec.error("path", "a hid reader needs path, device_name or usb_id")
    return ReaderConfig(**kwargs)


def _device_of(rc: ReaderConfig) -> str | None:
    """The device a reader opens, resolved through symlinks (/dev/rfid0 -> /dev/ttyUSB0)
    where it can be; a URL (loop://) or a hid reader found by name or USB id compares as given."""
    dev = rc.port if rc.type == "serial" else rc.path
    if dev is None or "://" in dev:
        return dev
    return os.path.realpath(dev)


def _one_reader_per_device(top: Section, readers: tuple[ReaderConfig, ...]) -> None:
    # Two readers on one device: one of them never gets it and shows "reader missing" forever.
    seen: dict[str, ReaderConfig] = {}
    for i, rc in enumerate(readers):
        dev = _device_of(rc)
        if dev is None:
            continue
        first = seen.setdefault(dev, rc)
        if first is not rc:
            key = "port" if rc.type == "serial" else "path"
            mine, theirs = (rc.port, first.port) if key == "port" else (rc.path, first.path)
            same = mine if mine == theirs else f"{mine} and {theirs} are both {dev}"
            raise top.error(f"reader[{i}].{key}", f"readers {first.name!r} and {rc.name!r} use the same "
                            f"device ({same}); give each [[reader]] its own")


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
        readers = tuple(_reader(path, f"reader[{i}]", t, i) for i, t in enumerate(rtable))
    else:
        readers = (_reader(path, "reader", rtable, 0),)
    names = [r.name for r in readers]
    if len(set(names)) != len(names):
        raise top.error("reader", f"reader names must be unique, got {names}")
    _one_reader_per_device(top, readers)

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
                  log_level=log_level, log_tags=log_tags, warnings=tuple(warnings))


def resolve_path(cli_value: str | None) -> str:
    """``--config`` wins, then ``$AGENT_CONFIG``, then the default path."""
    return cli_value or os.environ.get("AGENT_CONFIG") or DEFAULT_PATH
