"""Reading a TOML table against a schema, with errors a person can act on.

Each error is one line naming the file, the dotted key and what is wrong
(``/etc/rfid-agent/config.toml: iflow.batch_max: must be greater than 0``);
unknown keys are errors, so a typo never falls back to a default silently.
The schema itself (which keys, which defaults) is :mod:`agent.config`.
"""

from __future__ import annotations

import os
import re
import stat
from typing import Any, Callable

from agent.errors import ConfigError

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


class Section:
    """Reads one TOML table against a schema, reporting errors by dotted key."""

    def __init__(self, path: str, prefix: str, table: Any) -> None:
        self.path = path
        self.prefix = prefix
        if not isinstance(table, dict):
            raise self.error(None, f"expected a table, got {tname(table)}")
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
            want = " or ".join(KIND_NAMES.get(k, k.__name__) for k in kinds)
            raise self.error(name, f"expected {want}, got {tname(value)} {value!r}")
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


KIND_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
               dict: "a table", list: "an array"}


def tname(v: Any) -> str:
    for k, n in ((bool, "boolean"), (int, "integer"), (float, "number"), (str, "string"),
                 (dict, "table"), (list, "array")):
        if isinstance(v, k):
            return n
    return type(v).__name__


def check_positive(v: Any) -> str | None:
    return None if v > 0 else "must be greater than 0"


def check_non_negative(v: Any) -> str | None:
    return None if v >= 0 else "must not be negative"


def check_pin(v: Any) -> str | None:
    return None if 0 <= v <= 53 else "must be a BCM GPIO number between 0 and 53"


def check_url(v: str) -> str | None:
    return None if re.match(r"^https?://[^\s/]+", v) else "must be an http:// or https:// URL"


def read_secret(sec: Section, name: str, path: str, warnings: list[str]) -> str:
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


def secret_value(sec: Section, name: str, warnings: list[str]) -> tuple[str, str | None]:
    """``name`` inline or ``name_file`` (exactly one): the value and the file's path."""
    value = sec.get(name, str, None)
    path = sec.get(f"{name}_file", str, None)
    if value and path:
        raise sec.error(name, f"set {name} or {name}_file, not both")
    if path:
        value = read_secret(sec, f"{name}_file", path, warnings)
    if not value:
        raise sec.error(name, f"is required (or {name}_file)")
    return value, path
