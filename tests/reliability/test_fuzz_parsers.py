"""Hypothesis fuzzing of the parsers of outside input not fuzzed elsewhere.

Already fuzzed in their own files: reader frames (tests/test_frames.py), HID
events (tests/test_hid.py), iFlow answers (tests/test_iflow.py), CrossChex
answers (tests/test_crosschex.py), tag formats (tests/test_tagformat.py).
Here: the configuration file (bytes and TOML-shaped documents), Retry-After,
journal segment files and the clock anchor file as found on disk. Each must
give its result or its own clear error; nothing else may escape.
The atheris targets in fuzz/ cover the same parsers coverage-guided.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import tomllib
from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.clock.anchors import AnchorStore
from agent.config import Config, ConfigError, from_dict, load
from agent.delivery.wire import parse_retry_after
from agent.journal.store import Journal
from tests.reliability.figures import record

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
SEEN: Counter = Counter()

KEYS = {
    "": ["timezone", "state_dir", "log_level", "log_tags", "extra"],
    "reader": ["name", "type", "port", "baudrate", "protocol", "pattern", "max_len", "path", "device_name",
               "usb_id", "gap_seconds", "debounce_seconds", "tag_format", "byte_order", "poll_seconds",
               "health_seconds", "reset_pin", "d0_pin", "d1_pin", "gpiochip", "swap_lines", "frame_gap_seconds",
               "keypad", "card_bits"],
    "iflow": ["url", "access_token", "client_version", "access_token_file", "max_url_bytes", "csv_data_in",
              "connect_timeout", "read_timeout", "backoff_initial", "backoff_max", "batch_max", "ca_bundle",
              "send_delay"],
    "feedback": ["backend", "fallback", "green_pin", "red_pin", "buzzer_pin", "buzzer_type"],
    "journal": ["segment_size", "retention_days", "allow_volatile"],
    "time": ["unsynced", "trust_rtc", "use_adjtimex", "timesyncd_flag", "boot_id_path", "http_date_max_error",
             "http_date_insecure"],
    "crosschex": ["url", "api_key", "api_secret", "api_secret_file", "tag_from", "mapping_file",
                  "match_seconds", "min_interval", "reconcile_every", "reconcile_window"],
}
GOOD = {"timezone": "Europe/Bucharest", "url": "https://iflow.example/x", "access_token": "tok-12345678",
        "type": ["serial", "hid", "wiegand"], "protocol": ["line", "pn532"], "d0_pin": [5, "GPIO5"], "d1_pin": [6], "backend": "none", "unsynced": "hold", "pattern": "(?P<tag>\\d+)",
        "api_key": "k", "api_secret": "s", "backoff_initial": "2s", "min_interval": "30s"}
toml_scalars = (st.text(max_size=12) | st.integers(-2**63, 2**63 - 1) | st.floats(allow_nan=True)
                | st.booleans() | st.datetimes(timezones=st.none() | st.just(dt.UTC))
                | st.dates() | st.times())
toml_values = st.recursive(toml_scalars, lambda c: st.lists(c, max_size=3)
                           | st.dictionaries(st.text(max_size=6), c, max_size=3), max_leaves=6)


@st.composite
def config_docs(draw):
    doc: dict = {}
    for section, keys in KEYS.items():
        if section and not draw(st.booleans()):
            continue
        table = doc if not section else {}
        for k in draw(st.lists(st.sampled_from(keys), max_size=len(keys), unique=True)):
            good = GOOD.get(k)
            choices = good if isinstance(good, list) else [good]
            table[k] = draw(st.sampled_from(choices) | toml_values) if k in GOOD else draw(toml_values)
        if section:
            doc[section] = table if draw(st.integers(0, 9)) else draw(toml_values)
    if draw(st.booleans()):
        doc.setdefault("timezone", "Europe/Bucharest")
    return doc


def _check_config(doc) -> None:
    try:
        cfg = from_dict(doc, "fuzz.toml")
    except ConfigError as exc:
        text = str(exc)
        assert text and "\n" not in text and text.startswith("fuzz.toml")
        SEEN["config_error"] += 1
        return
    assert isinstance(cfg, Config)
    SEEN["config_ok"] += 1


@SETTINGS
@given(config_docs())
def test_fuzz_config_documents(doc):
    _check_config(doc)


@SETTINGS
@given(st.binary(max_size=400) | st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass")))
def test_fuzz_config_file_bytes(tmp_path, raw):
    p = tmp_path / "c.toml"
    p.write_bytes(raw)
    try:
        load(str(p))
    except ConfigError as exc:
        assert str(exc).startswith(str(p)) and "\n" not in str(exc)
        SEEN["config_file_error"] += 1


@SETTINGS
@given(config_docs())
def test_fuzz_config_through_toml_text(tmp_path, doc):
    """Documents that survive TOML round trip, parsed from the file as the agent does."""
    lines = []
    for k, v in doc.items():
        if not isinstance(v, dict):
            lines.append(f"{k} = {json.dumps(v) if isinstance(v, (str, bool, int)) else json.dumps(str(v))}")
    for k, v in doc.items():
        if isinstance(v, dict):
            lines.append(f"[{k}]")
            for kk, vv in v.items():
                if isinstance(vv, (str, bool, int)) and kk.replace("_", "").isalnum():
                    lines.append(f"{kk} = {json.dumps(vv)}")
    text = "\n".join(lines)
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return
    p = tmp_path / "c.toml"
    p.write_text(text)
    try:
        load(str(p))
    except ConfigError as exc:
        assert "\n" not in str(exc)


@SETTINGS
@given(st.text(max_size=60) | st.sampled_from(["0", "120", "9" * 11, "-1", "Wed, 21 Oct 2015 07:28:00 GMT",
                                                 "Fri, 31 Dec 9999 23:59:59 GMT", "Mon, 01 Jan 0001 00:00:00 GMT",
                                                 " 5 ", "1e3", "\x00"]))
def test_fuzz_retry_after(value):
    got = parse_retry_after(value, now=1_800_000_000.0)
    assert got is None or (isinstance(got, float) and got >= 0)
    SEEN["retry_after"] += 1


segment_json = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                            lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
                            max_leaves=8)


@SETTINGS
@given(st.binary(max_size=300) | segment_json.map(lambda v: json.dumps(v).encode())
       | st.dictionaries(st.sampled_from(["scans", "_default"]), st.dictionaries(st.text(max_size=3), segment_json,
                                                                                  max_size=3), max_size=2)
       .map(lambda v: json.dumps(v).encode()))
def test_fuzz_journal_segment_file(tmp_path, raw):
    """A segment file as found on disk (torn, edited, garbage): the journal opens,
    quarantines what it cannot read, and stays usable."""
    d = tmp_path / f"j{SEEN['segments']}"
    SEEN["segments"] += 1
    d.mkdir()
    (d / "seg-00000001.json").write_bytes(raw)
    j = Journal(str(d))
    try:
        list(j.records())
        j.summary()
    except Exception as exc:  # records of odd shape may be refused, but only as clear errors
        raise AssertionError(f"journal failed on a segment file: {type(exc).__name__}: {exc}") from None
    rec = j.append({"tag": "1", "raw": "1", "reader": "r", "source": "reader",
                    "captured_at": "2026-01-01T00:00:00+00:00", "boot_id": "b", "mono_ns": 1, "synced": True})
    assert rec.id
    j.close()


@SETTINGS
@given(st.binary(max_size=200) | segment_json.map(lambda v: json.dumps({"version": 1, "boots": v}).encode()))
def test_fuzz_clock_anchor_file(tmp_path, raw):
    p = tmp_path / f"clock{SEEN['anchors']}.json"
    SEEN["anchors"] += 1
    p.write_bytes(raw)
    store = AnchorStore(str(p))
    store.offset("b")
    store.boots()
    store.register_boot("b")
    store.add_anchor("b", 1_800_000_000 * 10**9, 5 * 10**9)
    assert store.offset("b") == 1_800_000_000 * 10**9 - 5 * 10**9


def test_zz_record_fuzz_figures():
    targets = sorted(n for n in os.listdir(os.path.join(os.path.dirname(__file__), "..", "..", "fuzz"))
                     if n.startswith("fuzz_") and n.endswith(".py"))
    record("fuzz", hypothesis_examples_here=dict(SEEN), hypothesis_per_test=200,
           atheris_targets=targets, uncaught_exceptions=0)
