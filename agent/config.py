"""Configuration: one TOML file, validated completely at start.

Every key is documented in the README and in ``examples/config.toml``; the key
names are public interface. Any problem raises :class:`ConfigError`, whose text
is one line naming the file, the key and what is wrong.
"""

from __future__ import annotations

import os
import re
import stat
import tomllib
from dataclasses import dataclass, field
from typing import Any, Callable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from agent.errors import ConfigError

DEFAULT_PATH = "/etc/rfid-agent/config.toml"



# --------------------------------------------------------------- dataclasses


@dataclass(frozen=True)
class ReaderConfig:
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


@dataclass(frozen=True)
class IflowConfig:
    url: str
    access_token: str = field(repr=False)
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


@dataclass(frozen=True)
class FeedbackConfig:
    backend: str = "none"  # "gpio" | "console" | "none"
    fallback: str = "none"  # "console" | "none": what "gpio" degrades to without GPIO
    green_pin: int | None = None
    red_pin: int | None = None
    buzzer_pin: int | None = None
    buzzer_type: str = "active"  # "active" | "passive"


@dataclass(frozen=True)
class JournalConfig:
    segment_size: int = 256
    retention_days: float = 30.0


@dataclass(frozen=True)
class TimeConfig:
    unsynced: str = "hold"  # "hold" | "send"
    trust_rtc: bool = False
    use_adjtimex: bool = True
    timesyncd_flag: str = "/run/systemd/timesync/synchronized"
    boot_id_path: str = "/proc/sys/kernel/random/boot_id"


@dataclass(frozen=True)
class CrossChexConfig:
    url: str
    api_key: str = field(repr=False)
    api_secret: str = field(repr=False)
    api_secret_file: str | None = None
    tag_from: str = "workno"
    mapping_file: str | None = None
    match_seconds: int = 60
    min_interval: float = 30.0
    reconcile_every: float | None = None  # seconds; None = off
    reconcile_window: float = 86400.0


@dataclass(frozen=True)
class Config:
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


# ---------------------------------------------------------------- validation

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: Any) -> float:
    """``90``, ``"90s"``, ``"15m"``, ``"1h"``, ``"2d"`` -> seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like \"1h\"")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        m = _DURATION_RE.match(value)
        if m:
            return float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    raise ValueError(f"expected a duration like \"30s\", \"15m\" or \"1h\", got {value!r}")


class _Section:
    """Reads one TOML table against a schema, reporting errors by dotted key."""

    def __init__(self, path: str, prefix: str, table: Any) -> None:
        self.path = path
        self.prefix = prefix
        if not isinstance(table, dict):
            raise self.error(None, f"expected a table, got {_tname(table)}")
        self.table = table
        self.used: set[str] = set()

    def key(self, name: str | None) -> str:
        if name is None:
            return self.prefix or "(top level)"
        return f"{self.prefix}.{name}" if self.prefix else name

    def error(self, name: str | None, what: str) -> ConfigError:
        return ConfigError(f"{self.path}: {self.key(name)}: {what}")

    def get(self, name: str, kind: type | tuple, default: Any = None, *, required: bool = False,
            choices: tuple | None = None, check: Callable[[Any], str | None] | None = None) -> Any:
        self.used.add(name)
        if name not in self.table:
            if required:
                raise self.error(name, "is required")
            return default
        value = self.table[name]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            ok, value = True, float(value)
        if not ok:
            want = " or ".join(_KIND_NAMES.get(k, k.__name__) for k in kinds)
            raise self.error(name, f"expected {want}, got {_tname(value)} {value!r}")
        if choices is not None and value not in choices:
            raise self.error(name, f"must be one of {', '.join(map(repr, choices))}, got {value!r}")
        if check is not None:
            problem = check(value)
            if problem:
                raise self.error(name, problem)
        return value

    def duration(self, name: str, default: float | None) -> float | None:
        self.used.add(name)
        if name not in self.table:
            return default
        try:
            return parse_duration(self.table[name])
        except ValueError as exc:
            raise self.error(name, str(exc)) from None

    def finish(self) -> None:
        unknown = sorted(set(self.table) - self.used)
        if unknown:
            raise self.error(unknown[0], "unknown key (check the spelling; see examples/config.toml)")


_KIND_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
               dict: "a table", list: "an array"}


def _tname(v: Any) -> str:
    for k, n in ((bool, "boolean"), (int, "integer"), (float, "number"), (str, "string"),
                 (dict, "table"), (list, "array")):
        if isinstance(v, k):
            return n
    return type(v).__name__


def _positive(v: Any) -> str | None:
    return None if v > 0 else "must be greater than 0"


def _non_negative(v: Any) -> str | None:
    return None if v >= 0 else "must not be negative"


def _pin(v: Any) -> str | None:
    return None if 0 <= v <= 53 else "must be a BCM GPIO number between 0 and 53"


def _url(v: str) -> str | None:
    return None if re.match(r"^https?://[^\s/]+", v) else "must be an http:// or https:// URL"


def _read_secret(sec: _Section, name: str, path: str, warnings: list[str]) -> str:
    try:
        st = os.stat(path)
        with open(path, encoding="utf-8") as f:
            value = f.read().strip()
    except OSError as exc:
        raise sec.error(name, f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise sec.error(name, f"{path} is not UTF-8 text") from None
    if not value:
        raise sec.error(name, f"{path} is empty")
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        warnings.append(f"{path} is readable by other users (mode {stat.S_IMODE(st.st_mode):04o}); "
                        f"run: chmod 600 {path}")
    return value


def _secret(sec: _Section, name: str, warnings: list[str]) -> tuple[str, str | None]:
    """``name`` inline or ``name_file`` (exactly one): the value and the file's path."""
    value = sec.get(name, str, None)
    path = sec.get(f"{name}_file", str, None)
    if value and path:
        raise sec.error(name, f"set {name} or {name}_file, not both")
    if path:
        value = _read_secret(sec, f"{name}_file", path, warnings)
    if not value:
        raise sec.error(name, f"is required (or {name}_file)")
    return value, path


def _reader(path: str, prefix: str, table: Any, index: int) -> ReaderConfig:
    sec = _Section(path, prefix, table)
    rtype = sec.get("type", str, "serial", choices=("serial", "hid"))
    d = ReaderConfig()
    kwargs: dict[str, Any] = dict(
        name=sec.get("name", str, "reader" if index == 0 else f"reader{index + 1}",
                     check=lambda v: None if re.fullmatch(r"[A-Za-z0-9_.-]{1,32}", v)
                     else "use 1-32 letters, digits, '_', '.' or '-'"),
        type=rtype,
        debounce_seconds=sec.get("debounce_seconds", float, d.debounce_seconds, check=_non_negative),
        tag_format=sec.get("tag_format", str, d.tag_format,
                           choices=("raw", "decimal10", "hex", "wiegand26")),
        byte_order=sec.get("byte_order", str, d.byte_order, choices=("big", "little")),
        port=sec.get("port", str, d.port),
        baudrate=sec.get("baudrate", int, d.baudrate, check=_positive),
        protocol=sec.get("protocol", str, d.protocol, choices=("line", "rdm6300", "regex")),
        pattern=sec.get("pattern", str, None),
        max_len=sec.get("max_len", int, d.max_len, check=_positive),
        path=sec.get("path", str, None),
        device_name=sec.get("device_name", str, None),
        usb_id=sec.get("usb_id", str, None,
                       check=lambda v: None if re.fullmatch(r"[0-9a-fA-F]{4}:[0-9a-fA-F]{4}", v)
                       else "expected vendor:product in hex, like \"ffff:0035\""),
        gap_seconds=sec.get("gap_seconds", float, d.gap_seconds, check=_positive),
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


def load(path: str) -> Config:
    """Read and validate the configuration file at ``path``."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found (use --config PATH or $AGENT_CONFIG)") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        doc = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: TOML syntax error: {exc}") from None
    return from_dict(doc, path)


def from_dict(doc: dict[str, Any], path: str = "<config>") -> Config:
    warnings: list[str] = []
    top = _Section(path, "", doc)

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

    iflow = None
    top.used.add("iflow")
    if "iflow" in doc:
        sec = _Section(path, "iflow", doc["iflow"])
        d = IflowConfig(url="", access_token="")
        url = sec.get("url", str, required=True, check=_url)
        token, token_file = _secret(sec, "access_token", warnings)
        iflow = IflowConfig(
            url=url, access_token=token, access_token_file=token_file,
            client_version=sec.get("client_version", str, d.client_version),
            max_url_bytes=sec.get("max_url_bytes", int, d.max_url_bytes,
                                  check=lambda v: None if v >= 512 else "must be at least 512"),
            csv_data_in=sec.get("csv_data_in", str, d.csv_data_in, choices=("query", "json-body")),
            connect_timeout=sec.get("connect_timeout", float, d.connect_timeout, check=_positive),
            read_timeout=sec.get("read_timeout", float, d.read_timeout, check=_positive),
            backoff_initial=sec.duration("backoff_initial", d.backoff_initial),
            backoff_max=sec.duration("backoff_max", d.backoff_max),
            batch_max=sec.get("batch_max", int, d.batch_max, check=_positive),
            ca_bundle=sec.get("ca_bundle", str, None),
            send_delay=sec.get("send_delay", float, d.send_delay, check=_non_negative),
        )
        if iflow.ca_bundle and not os.path.isfile(iflow.ca_bundle):
            raise sec.error("ca_bundle", f"{iflow.ca_bundle} does not exist")
        sec.finish()

    top.used.add("feedback")
    sec = _Section(path, "feedback", doc.get("feedback", {}))
    d = FeedbackConfig()
    feedback = FeedbackConfig(
        backend=sec.get("backend", str, d.backend, choices=("gpio", "console", "none")),
        fallback=sec.get("fallback", str, d.fallback, choices=("console", "none")),
        green_pin=sec.get("green_pin", int, None, check=_pin),
        red_pin=sec.get("red_pin", int, None, check=_pin),
        buzzer_pin=sec.get("buzzer_pin", int, None, check=_pin),
        buzzer_type=sec.get("buzzer_type", str, d.buzzer_type, choices=("active", "passive")),
    )
    sec.finish()

    top.used.add("journal")
    sec = _Section(path, "journal", doc.get("journal", {}))
    d2 = JournalConfig()
    journal = JournalConfig(
        segment_size=sec.get("segment_size", int, d2.segment_size,
                             check=lambda v: None if 16 <= v <= 10000 else "must be between 16 and 10000"),
        retention_days=sec.get("retention_days", float, d2.retention_days, check=_positive),
    )
    sec.finish()

    top.used.add("time")
    sec = _Section(path, "time", doc.get("time", {}))
    d3 = TimeConfig()
    timecfg = TimeConfig(
        unsynced=sec.get("unsynced", str, d3.unsynced, choices=("hold", "send")),
        trust_rtc=sec.get("trust_rtc", bool, d3.trust_rtc),
        use_adjtimex=sec.get("use_adjtimex", bool, d3.use_adjtimex),
        timesyncd_flag=sec.get("timesyncd_flag", str, d3.timesyncd_flag),
        boot_id_path=sec.get("boot_id_path", str, d3.boot_id_path),
    )
    sec.finish()

    crosschex = None
    top.used.add("crosschex")
    if "crosschex" in doc:
        sec = _Section(path, "crosschex", doc["crosschex"])
        url = sec.get("url", str, required=True, check=_url)
        key = sec.get("api_key", str, required=True)
        secret, secret_file = _secret(sec, "api_secret", warnings)
        mapping = sec.get("mapping_file", str, None)
        if mapping and not os.path.isfile(mapping):
            raise sec.error("mapping_file", f"{mapping} does not exist")
        crosschex = CrossChexConfig(
            url=url, api_key=key, api_secret=secret, api_secret_file=secret_file,
            tag_from=sec.get("tag_from", str, "workno"),
            mapping_file=mapping,
            match_seconds=sec.get("match_seconds", int, 60, check=_non_negative),
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
