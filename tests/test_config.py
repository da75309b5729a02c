"""Every bad configuration gives one line on stderr naming the file and key, and exit 2."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib

import pytest

from agent.config import ConfigError, ReaderConfig, from_dict, load
from agent.schema import parse_duration

GOOD = '''
timezone = "Europe/Bucharest"
state_dir = "{state}"
[reader]
type = "serial"
port = "/dev/ttyUSB0"
baudrate = 9600
protocol = "line"
debounce_seconds = 3
[iflow]
url = "https://app.iflow.ro/api/rfid_v2/offline_attendance/store_attendances"
access_token = "tok-123456"
client_version = "1.0"
[feedback]
backend = "none"
'''


def run_agent(cfg_path, *args):
    return subprocess.run([sys.executable, "-m", "agent", "--config", str(cfg_path), *args],
                          capture_output=True, text=True, timeout=30)


def test_good_config_loads(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text(GOOD.format(state=tmp_path / "s"))
    cfg = load(str(p))
    assert cfg.reader.port == "/dev/ttyUSB0" and cfg.reader.debounce_seconds == 3.0
    assert cfg.iflow.access_token == "tok-123456" and cfg.iflow.max_url_bytes == 7000
    assert "tok-123456" not in repr(cfg)  # secrets stay out of reprs
    assert str(cfg.timezone) == "Europe/Bucharest"


def test_examples_config_is_valid(tmp_path):
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    token = tmp_path / "token"
    token.write_text("abc123456\n")
    os.chmod(token, 0o600)
    text = open(os.path.join(here, "examples", "config.toml")).read()
    text = text.replace("/etc/rfid-agent/token", str(token))
    p = tmp_path / "c.toml"
    p.write_text(text)
    cfg = load(str(p))
    assert cfg.iflow is not None and cfg.iflow.access_token == "abc123456"


CASES = {
    "missing file": (None, "file not found", "missing.toml"),
    "toml syntax": ('timezone = "Europe/Bucharest"\n[reader\n', "TOML syntax error", None),
    "unknown key": (GOOD + "colour = 3\n", "colour: unknown key", None),
    "unknown key in table": (GOOD.replace("baudrate = 9600", "baudrat = 9600"), "reader.baudrat: unknown key", None),
    "wrong type": (GOOD.replace("baudrate = 9600", 'baudrate = "fast"'), "reader.baudrate: expected an integer", None),
    "unknown time zone": (GOOD.replace("Europe/Bucharest", "Europe/Atlantis"), "timezone: unknown time zone", None),
    "unknown reader type": (GOOD.replace('type = "serial"', 'type = "bluetooth"'), "reader.type: must be one of", None),
    "token file unreadable": (GOOD.replace('access_token = "tok-123456"', 'access_token_file = "/nonexistent/token"'),
                              "iflow.access_token_file: cannot read /nonexistent/token", None),
    "no token": (GOOD.replace('access_token = "tok-123456"', ""), "iflow.access_token: is required", None),
    "bad url": (GOOD.replace("https://app.iflow.ro", "ftp://x"), "iflow.url: must be an http", None),
    "bad regex": (GOOD.replace('protocol = "line"', 'protocol = "regex"\npattern = "(?P<tag>["'), "reader.pattern", None),
    "regex without group": (GOOD.replace('protocol = "line"', 'protocol = "regex"\npattern = "[0-9]+"'),
                            "named group", None),
    "bad pin": (GOOD.replace('backend = "none"', 'backend = "gpio"\ngreen_pin = 99'), "feedback.green_pin", None),
    "bool for number": (GOOD.replace("debounce_seconds = 3", "debounce_seconds = true"), "reader.debounce_seconds", None),
    "not utf8": (b"timezone = \"\xff\"", "not UTF-8", None),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_config_is_one_line_and_exit_2(tmp_path, name):
    text, expect, fname = CASES[name]
    p = tmp_path / (fname or "c.toml")
    if text is not None:
        data = text if isinstance(text, bytes) else text.format(state=tmp_path / "s").encode()
        p.write_bytes(data)
    r = run_agent(p, "status")
    assert r.returncode == 2, r
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.stderr
    assert str(p) in lines[0] and expect in lines[0], lines[0]


def test_unreadable_config_file(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text(GOOD.format(state=tmp_path))
    os.chmod(p, 0)
    if os.geteuid() == 0:
        # root reads anything: make it a directory instead, which nobody reads as a file
        os.chmod(p, 0o600)
        p.unlink()
        p.mkdir()
    r = run_agent(p, "status")
    assert r.returncode == 2 and "cannot read" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_world_readable_token_file_warns(tmp_path):
    tok = tmp_path / "token"
    tok.write_text("abcdef123\n")
    os.chmod(tok, 0o644)
    cfg = from_dict({"timezone": "UTC", "iflow": {"url": "http://x/y", "access_token_file": str(tok)}})
    assert any("chmod 600" in w for w in cfg.warnings)


def test_multiple_readers_and_names():
    cfg = from_dict({"timezone": "UTC", "reader": [
        {"name": "entry", "port": "/dev/rfid0"}, {"name": "exit", "type": "hid", "path": "/dev/input/rfid-kbd"}]})
    assert [r.name for r in cfg.readers] == ["entry", "exit"]
    with pytest.raises(ConfigError, match="unique"):
        from_dict({"timezone": "UTC", "reader": [{"name": "a"}, {"name": "a"}]})
    with pytest.raises(ConfigError, match=r"reader\[1\]\.path"):
        from_dict({"timezone": "UTC", "reader": [{"name": "a"}, {"name": "b", "type": "hid"}]})


def test_durations():
    assert parse_duration("1h") == 3600 and parse_duration("15m") == 900 and parse_duration(90) == 90
    with pytest.raises(ValueError):
        parse_duration("soon")
    cfg = from_dict({"timezone": "UTC", "crosschex": {"url": "https://api.ap.crosschexcloud.com/",
                                                     "api_key": "k", "api_secret": "s", "reconcile_every": "1h"}})
    assert cfg.crosschex.reconcile_every == 3600


# ------------------------------------------------------------------ day-one edges


def test_config_saved_by_windows_notepad_bom_and_crlf(tmp_path):
    p = tmp_path / "c.toml"
    p.write_bytes(b"\xef\xbb\xbf" + GOOD.format(state=tmp_path / "s").replace("\n", "\r\n").encode())
    cfg = load(str(p))
    assert cfg.reader.port == "/dev/ttyUSB0" and cfg.iflow.access_token == "tok-123456"
    assert str(cfg.timezone) == "Europe/Bucharest"
    r = run_agent(p, "status", "--json")
    assert r.returncode == 0, r.stderr


def test_config_saved_as_utf16_says_so(tmp_path):
    p = tmp_path / "c.toml"
    p.write_bytes(GOOD.format(state=tmp_path / "s").encode("utf-16"))  # with its BOM
    r = run_agent(p, "status")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert str(p) in r.stderr and "UTF-16" in r.stderr and "UTF-8" in r.stderr


def two_readers(first: dict, second: dict) -> dict:
    return {"timezone": "UTC", "reader": [{"name": "entry", **first}, {"name": "exit", **second}]}


def test_two_readers_on_one_port_are_a_config_error(tmp_path):
    with pytest.raises(ConfigError) as info:
        from_dict(two_readers({"port": "/dev/ttyUSB0"}, {"port": "/dev/ttyUSB0", "protocol": "rdm6300"}), "c.toml")
    text = str(info.value)
    assert text.startswith("c.toml: reader[1].port:") and "'entry'" in text and "'exit'" in text
    assert "/dev/ttyUSB0" in text and "\n" not in text
    # both left at the default port
    with pytest.raises(ConfigError, match=r"reader\[1\]\.port"):
        from_dict(two_readers({}, {}))


def test_two_readers_on_one_device_through_a_symlink(tmp_path):
    dev = tmp_path / "ttyUSB0"
    dev.write_text("")
    link = tmp_path / "rfid0"
    link.symlink_to(dev)
    with pytest.raises(ConfigError) as info:
        from_dict(two_readers({"port": str(dev)}, {"port": str(link)}))
    assert f"{link} and {dev} are both {dev}" in str(info.value)
    hid = tmp_path / "event3"
    hid.write_text("")
    (tmp_path / "by-id-kbd").symlink_to(hid)
    with pytest.raises(ConfigError, match=r"reader\[1\]\.path"):
        from_dict(two_readers({"type": "hid", "path": str(hid)}, {"type": "hid", "path": str(tmp_path / "by-id-kbd")}))


def test_distinct_devices_are_fine_and_unresolvable_ones_compare_as_written(tmp_path):
    cfg = from_dict(two_readers({"port": "/dev/ttyUSB0"}, {"port": "/dev/ttyUSB1"}))
    assert [r.port for r in cfg.readers] == ["/dev/ttyUSB0", "/dev/ttyUSB1"]
    from_dict(two_readers({"port": "/dev/ttyUSB0"}, {"type": "hid", "device_name": "RFID Reader"}))
    with pytest.raises(ConfigError, match="same device"):
        from_dict(two_readers({"port": "socket://127.0.0.1:7000"}, {"port": "socket://127.0.0.1:7000"}))
    from_dict(two_readers({"port": "socket://127.0.0.1:7000"}, {"port": "socket://127.0.0.1:7001"}))


def test_two_readers_on_one_port_exit_2_from_the_cli(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text(f'timezone = "UTC"\nstate_dir = "{tmp_path / "s"}"\n'
                 '[[reader]]\nname = "entry"\nport = "/dev/ttyS0"\n[[reader]]\nname = "exit"\nport = "/dev/ttyS0"\n')
    r = run_agent(p, "run")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert str(p) in r.stderr and "'entry'" in r.stderr and "'exit'" in r.stderr


# ------------------------------------------------------------ PN532 and Wiegand readers

OLD_FIELDS = ("name", "type", "port", "baudrate", "protocol", "pattern", "max_len", "path", "device_name",
              "usb_id", "gap_seconds", "debounce_seconds", "tag_format", "byte_order")


def reader_of(table: dict, **top) -> ReaderConfig:
    return from_dict({"timezone": "UTC", "reader": table, **top}, "c.toml").reader


def config_error(table: dict | list, **top) -> str:
    with pytest.raises(ConfigError) as info:
        from_dict({"timezone": "UTC", "reader": table, **top}, "c.toml")
    text = str(info.value)
    assert text.startswith("c.toml: ") and "\n" not in text, text
    return text


def test_old_fields_keep_their_order_and_defaults_and_the_new_ones_follow():
    assert ReaderConfig._fields[:len(OLD_FIELDS)] == OLD_FIELDS
    d = ReaderConfig()
    assert (d.type, d.port, d.baudrate, d.protocol, d.max_len, d.gap_seconds, d.debounce_seconds,
            d.tag_format, d.byte_order) == ("serial", "/dev/ttyUSB0", 9600, "line", 64, 0.5, 3.0, "raw", "big")
    assert ReaderConfig._fields[len(OLD_FIELDS):] == (
        "poll_seconds", "health_seconds", "reset_pin", "d0_pin", "d1_pin", "gpiochip", "swap_lines",
        "frame_gap_seconds", "keypad", "card_bits")
    assert (d.poll_seconds, d.health_seconds, d.reset_pin, d.d0_pin, d.d1_pin, d.gpiochip, d.swap_lines,
            d.frame_gap_seconds, d.keypad, d.card_bits) == (0.2, 30.0, None, None, None, None, False, 0.025,
                                                             False, 16)


def test_an_existing_config_parses_as_before(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text(GOOD.format(state=tmp_path / "s"))
    cfg = load(str(p))
    want = ReaderConfig(name="reader", type="serial", port="/dev/ttyUSB0", baudrate=9600, protocol="line",
                        debounce_seconds=3.0)
    assert cfg.reader == want and cfg.warnings == ()
    hid = reader_of({"type": "hid", "usb_id": "ffff:0035", "gap_seconds": 0.2, "tag_format": "wiegand26",
                     "byte_order": "little"})
    assert hid == ReaderConfig(type="hid", usb_id="ffff:0035", gap_seconds=0.2, tag_format="wiegand26",
                               byte_order="little")


def test_pn532_reader_defaults_to_115200_baud_and_its_keys():
    r = reader_of({"port": "/dev/serial0", "protocol": "pn532"})
    assert (r.protocol, r.baudrate, r.poll_seconds, r.health_seconds, r.reset_pin) == ("pn532", 115200, 0.2, 30.0, None)
    r = reader_of({"port": "/dev/serial0", "protocol": "pn532", "baudrate": 9600, "poll_seconds": 0.5,
                   "health_seconds": 10, "reset_pin": "GPIO4", "gpiochip": "/dev/gpiochip0"})
    assert (r.baudrate, r.poll_seconds, r.health_seconds, r.reset_pin, r.gpiochip) == (9600, 0.5, 10.0, "GPIO4",
                                                                                      "/dev/gpiochip0")
    assert reader_of({"protocol": "rdm6300"}).baudrate == 9600  # only pn532 changes the default


@pytest.mark.parametrize("key, value, expect", [
    ("poll_seconds", 0, "reader.poll_seconds: must be between 0.02 and 5 seconds"),
    ("poll_seconds", 60, "reader.poll_seconds: must be between 0.02 and 5 seconds"),
    ("poll_seconds", float("inf"), "reader.poll_seconds: must be between 0.02 and 5 seconds"),
    ("health_seconds", -1, "reader.health_seconds: must be between 1 and 86400 seconds"),
    ("health_seconds", float("nan"), "reader.health_seconds: must be between 1 and 86400 seconds"),
    ("health_seconds", "30s", "reader.health_seconds: expected a number"),
    ("reset_pin", 64, "reader.reset_pin: must be a BCM GPIO number between 0 and 63"),
    ("reset_pin", "", "reader.reset_pin: must be a BCM GPIO number or a gpiochip line name"),
    ("reset_pin", 4.0, "reader.reset_pin: expected an integer or a string"),
    ("reset_pin", True, "reader.reset_pin: expected an integer or a string"),
])
def test_bad_pn532_values(key, value, expect):
    assert expect in config_error({"protocol": "pn532", key: value})


def test_wiegand_reader_needs_two_different_lines():
    r = reader_of({"type": "wiegand", "d0_pin": 5, "d1_pin": "GPIO6"})
    assert (r.type, r.d0_pin, r.d1_pin, r.gpiochip, r.swap_lines, r.frame_gap_seconds, r.keypad, r.card_bits) \
        == ("wiegand", 5, "GPIO6", None, False, 0.025, False, 16)
    assert "reader.d0_pin: is required" in config_error({"type": "wiegand", "d1_pin": 6})
    assert "reader.d1_pin: is required" in config_error({"type": "wiegand", "d0_pin": 5})
    # 5, "GPIO5" and "GPIO05" are one line
    for other in (5, "GPIO5", "GPIO05"):
        assert "reader.d1_pin: must differ from d0_pin (both are GPIO5)" in \
            config_error({"type": "wiegand", "d0_pin": 5, "d1_pin": other})
    r = reader_of({"type": "wiegand", "d0_pin": "PIN_29", "d1_pin": "PIN_31", "gpiochip": "pinctrl-rp1",
                   "swap_lines": True, "frame_gap_seconds": 0.05, "keypad": True, "card_bits": 20,
                   "tag_format": "facility_card"})
    assert (r.d0_pin, r.d1_pin, r.gpiochip, r.swap_lines, r.frame_gap_seconds, r.keypad, r.card_bits,
            r.tag_format) == ("PIN_29", "PIN_31", "pinctrl-rp1", True, 0.05, True, 20, "facility_card")


@pytest.mark.parametrize("key, value, expect", [
    ("d0_pin", -1, "reader.d0_pin: must be a BCM GPIO number between 0 and 63"),
    ("d0_pin", " GPIO5", "reader.d0_pin: must be a BCM GPIO number or a gpiochip line name"),
    ("d1_pin", [6], "reader.d1_pin: expected an integer or a string"),
    ("gpiochip", "", "reader.gpiochip: expected"),
    ("gpiochip", 0, "reader.gpiochip: expected a string"),
    ("swap_lines", "yes", "reader.swap_lines: expected true or false"),
    ("frame_gap_seconds", 0, "reader.frame_gap_seconds: must be between 0.003 and 1 seconds"),
    ("frame_gap_seconds", float("inf"), "reader.frame_gap_seconds: must be between 0.003 and 1 seconds"),
    ("frame_gap_seconds", 2.0, "reader.frame_gap_seconds: must be between 0.003 and 1 seconds"),
    ("frame_gap_seconds", 0.001, "reader.frame_gap_seconds: must be between 0.003 and 1 seconds"),
    ("keypad", 1, "reader.keypad: expected true or false"),
    ("card_bits", 0, "reader.card_bits: must be between 1 and 63"),
    ("card_bits", 64, "reader.card_bits: must be between 1 and 63"),
    ("card_bits", 16.0, "reader.card_bits: expected an integer"),
    ("tag_format", "octal", "reader.tag_format: must be one of"),
])
def test_bad_wiegand_values(key, value, expect):
    table = {"type": "wiegand", "d0_pin": 5, "d1_pin": 6, key: value}
    assert expect in config_error(table)


def test_new_tag_formats_and_card_bits_on_any_reader():
    assert reader_of({"tag_format": "decimal"}).tag_format == "decimal"
    r = reader_of({"protocol": "rdm6300", "tag_format": "facility_card", "card_bits": 24})
    assert (r.tag_format, r.card_bits) == ("facility_card", 24)
    assert from_dict({"timezone": "UTC", "reader": {"card_bits": 24}}).warnings == ()


def test_a_key_of_another_reader_kind_is_a_warning_not_an_error():
    cfg = from_dict({"timezone": "UTC", "reader": {"port": "/dev/ttyUSB0", "d0_pin": 5, "keypad": True,
                                                    "poll_seconds": 1}}, "c.toml")
    assert cfg.reader.type == "serial"
    assert cfg.warnings == (
        'c.toml: reader.poll_seconds: ignored: only a serial reader with protocol = "pn532" uses it',
        'c.toml: reader.d0_pin: ignored: only a reader with type = "wiegand" uses it',
        'c.toml: reader.keypad: ignored: only a reader with type = "wiegand" uses it',
    )
    w = from_dict({"timezone": "UTC", "reader": [{"name": "a", "type": "wiegand", "d0_pin": 5, "d1_pin": 6,
                                                   "reset_pin": 7, "health_seconds": 5}]}, "c.toml").warnings
    assert w == ('c.toml: reader[0].health_seconds: ignored: only a serial reader with protocol = "pn532" uses it',
                 'c.toml: reader[0].reset_pin: ignored: only a serial reader with protocol = "pn532" uses it')
    # gpiochip locates a pn532's reset line, and means nothing without one
    assert from_dict({"timezone": "UTC", "reader": {"protocol": "pn532", "reset_pin": 4,
                                                    "gpiochip": "gpiochip0"}}).warnings == ()
    (only,) = from_dict({"timezone": "UTC", "reader": {"protocol": "pn532", "gpiochip": "gpiochip0"}}).warnings
    assert "reader.gpiochip: ignored" in only
    # the existing kinds' keys stay as they were: accepted on any reader, silently
    assert from_dict({"timezone": "UTC", "reader": {"type": "hid", "path": "/dev/input/event3",
                                                    "port": "/dev/ttyS0", "protocol": "line"}}).warnings == ()


def test_a_key_of_another_kind_is_a_doctor_warning(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text(GOOD.format(state=tmp_path / "s").replace('protocol = "line"', 'protocol = "line"\nd0_pin = 5'))
    r = run_agent(p, "doctor", "--json")
    items = [i for i in json.loads(r.stdout) if i["check"] == "config"]
    assert {"check": "config", "status": "WARN", "fix": "",
            "detail": f'{p}: reader.d0_pin: ignored: only a reader with type = "wiegand" uses it'} in items, r.stdout


WIEGAND = {"type": "wiegand", "d0_pin": 5, "d1_pin": 6}


def test_two_wiegand_readers_on_one_line_are_an_error():
    text = config_error([{"name": "entry", **WIEGAND}, {"name": "exit", "type": "wiegand", "d0_pin": "GPIO6",
                                                         "d1_pin": 13}])
    assert text.startswith("c.toml: reader[1].d0_pin: GPIO6 on gpiochip0 is already reader[0].d1_pin"), text
    # "/dev/gpiochip0", "gpiochip0" and the default chip are one chip
    text = config_error([{"name": "entry", **WIEGAND, "gpiochip": "/dev/gpiochip0"},
                         {"name": "exit", **WIEGAND, "gpiochip": "gpiochip0"}])
    assert "reader[1].d0_pin: GPIO5 on gpiochip0 is already reader[0].d0_pin" in text
    # the same offsets on another chip are other lines
    cfg = from_dict({"timezone": "UTC", "reader": [{"name": "entry", **WIEGAND},
                                                    {"name": "exit", **WIEGAND, "gpiochip": "gpiochip1"}]})
    assert [r.gpiochip for r in cfg.readers] == [None, "gpiochip1"]


def test_a_wiegand_line_that_is_a_feedback_pin_or_a_reset_pin_is_an_error():
    gpio = {"backend": "gpio", "green_pin": 17, "red_pin": 27, "buzzer_pin": 22}
    text = config_error({**WIEGAND, "d1_pin": "GPIO27"}, feedback=gpio)
    assert text == ("c.toml: reader.d1_pin: GPIO27 on gpiochip0 is already feedback.red_pin; "
                    "a GPIO line serves one purpose: wire this one to another line")
    # feedback that does not use GPIO claims no line
    assert from_dict({"timezone": "UTC", "reader": {**WIEGAND, "d1_pin": 27},
                      "feedback": {**gpio, "backend": "console"}}).reader.d1_pin == 27
    text = config_error([{"name": "nfc", "port": "/dev/serial0", "protocol": "pn532", "reset_pin": 6},
                         {"name": "gate", **WIEGAND}])
    assert "reader[1].d1_pin: GPIO6 on gpiochip0 is already reader[0].reset_pin" in text
    assert "reader.reset_pin: GPIO22 on gpiochip0 is already feedback.buzzer_pin" in \
        config_error({"protocol": "pn532", "reset_pin": 22}, feedback=gpio)
    # a reset_pin that a non-pn532 reader ignores claims nothing
    from_dict({"timezone": "UTC", "reader": {"protocol": "rdm6300", "reset_pin": 22}, "feedback": gpio})


def test_wiegand_readers_have_no_device_to_share():
    # no port: the serial default /dev/ttyUSB0 of a wiegand reader is never opened
    cfg = from_dict({"timezone": "UTC", "reader": [{"name": "gate", **WIEGAND}, {"name": "door"}]})
    assert [r.type for r in cfg.readers] == ["wiegand", "serial"]


def test_examples_config_has_every_reader_key_and_tag_format():
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    text = open(os.path.join(here, "examples", "config.toml")).read()
    for key in ReaderConfig._fields:
        assert f"{key} = " in text, key
    for fmt in ("decimal", "facility_card", '"pn532"', '"wiegand"'):
        assert fmt in text, fmt


@pytest.mark.parametrize("block, kind", [("# PN532 reader", "pn532"), ("# Wiegand 26/34 reader", "wiegand")])
def test_the_commented_reader_examples_are_valid_and_show_the_defaults(block, kind):
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    text = open(os.path.join(here, "examples", "config.toml")).read()
    lines = re.split(r"\n#?\n", text[text.index(block):])[0].splitlines()
    keys = "\n".join(ln[2:] for ln in lines if ln.startswith("# ") and " = " in ln.split("#")[1])
    table = tomllib.loads(keys)
    r = reader_of(table)
    d = ReaderConfig()
    if kind == "pn532":
        assert (r.protocol, r.reset_pin) == ("pn532", 23)  # hardware/README.md wires RSTPDN to GPIO23
        assert (r.baudrate, r.poll_seconds, r.health_seconds) == (115200, d.poll_seconds, d.health_seconds)
    else:
        assert (r.type, r.d0_pin, r.d1_pin, r.gpiochip, r.tag_format) == ("wiegand", 5, 6, "gpiochip0", "facility_card")
        assert (r.swap_lines, r.frame_gap_seconds, r.keypad) == (d.swap_lines, d.frame_gap_seconds, d.keypad)
    # and beside the example's own feedback pins (17, 27, 22 in site-config.toml)
    from_dict({"timezone": "UTC", "reader": table,
               "feedback": {"backend": "gpio", "green_pin": 17, "red_pin": 27, "buzzer_pin": 22}})


def test_the_tag_formats_the_config_accepts_are_the_ones_tagformat_makes():
    from agent.reader_config import TAG_FORMATS
    from agent.reading import tagformat

    assert TAG_FORMATS == tagformat.FORMATS


def test_a_pn532_at_another_baud_rate_is_warned_about():
    (only,) = from_dict({"timezone": "UTC", "reader": {"protocol": "pn532", "baudrate": 9600}}, "c.toml").warnings
    assert only.startswith("c.toml: reader.baudrate: a PN532 speaks 115200 baud in HSU mode") and "9600" in only
    assert from_dict({"timezone": "UTC", "reader": {"protocol": "pn532", "baudrate": 115200}}).warnings == ()
    assert from_dict({"timezone": "UTC", "reader": {"protocol": "pn532"}}).warnings == ()
    assert from_dict({"timezone": "UTC", "reader": {"protocol": "line", "baudrate": 9600}}).warnings == ()
