"""Every bad configuration gives one line on stderr naming the file and key, and exit 2."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from agent.config import ConfigError, from_dict, load
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
