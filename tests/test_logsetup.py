"""agent.runtime.logsetup: journald prefixes, plain layout, one entry per record, redaction."""

from __future__ import annotations

import io
import logging
import os
import re

import pytest

from agent import redact
from agent.runtime import logsetup
from agent.runtime.logsetup import setup_logging

PLAIN = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+: ")


@pytest.fixture(autouse=True)
def _restore_logging(monkeypatch):
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    root = logging.getLogger()
    level = root.level
    chatty = {n: logging.getLogger(n).level for n in ("httpx", "httpcore")}
    yield
    for h in [h for h in root.handlers if getattr(h, logsetup._MARK, False)]:
        root.removeHandler(h)
    root.setLevel(level)
    for n, lv in chatty.items():
        logging.getLogger(n).setLevel(lv)


def ours() -> list[logging.Handler]:
    return [h for h in logging.getLogger().handlers if getattr(h, logsetup._MARK, False)]


def test_plain_layout_without_journal_stream():
    out = io.StringIO()
    setup_logging("INFO", stream=out)
    log = logging.getLogger("agent.test")
    log.info("hello %s", "door")
    log.debug("not shown at INFO")
    log.warning("careful")
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert PLAIN.match(lines[0]) and lines[0].endswith(" INFO agent.test: hello door")
    assert PLAIN.match(lines[1]) and lines[1].endswith(" WARNING agent.test: careful")


def test_journal_prefixes_and_no_timestamp(monkeypatch):
    monkeypatch.setenv("JOURNAL_STREAM", "8:12345")
    out = io.StringIO()  # no file descriptor: the variable alone decides
    setup_logging("DEBUG", stream=out)
    log = logging.getLogger("agent.reader")
    log.debug("d")
    log.info("i")
    log.warning("w")
    log.error("e")
    log.critical("c")
    assert out.getvalue().splitlines() == [
        "<7>agent.reader: d",
        "<6>agent.reader: i",
        "<4>agent.reader: w",
        "<3>agent.reader: e",
        "<2>agent.reader: c",
    ]
    assert not re.search(r"\d{4}-\d\d-\d\d", out.getvalue())


def test_journal_stream_checks_the_inode(tmp_path, monkeypatch):
    with open(tmp_path / "stderr", "w") as f:
        st = os.fstat(f.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        assert logsetup.journal_stream_matches(f)
        setup_logging("INFO", stream=f)
        logging.getLogger("agent.x").info("under journald")
        f.flush()
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino + 1}")
        assert not logsetup.journal_stream_matches(f)  # stderr was redirected elsewhere
        setup_logging("INFO", stream=f)
        logging.getLogger("agent.x").info("redirected")
        monkeypatch.setenv("JOURNAL_STREAM", "garbage")
        assert not logsetup.journal_stream_matches(f)
    lines = (tmp_path / "stderr").read_text().splitlines()
    assert lines[0] == "<6>agent.x: under journald"
    assert PLAIN.match(lines[1]) and lines[1].endswith("agent.x: redirected")


def _raise_and_log(log: logging.Logger) -> None:
    try:
        def inner():
            raise ValueError("boom\nsecond line of the message")
        inner()
    except ValueError:
        log.exception("upload failed")


def test_exception_is_one_journal_entry(monkeypatch):
    monkeypatch.setenv("JOURNAL_STREAM", "1:1")
    out = io.StringIO()
    setup_logging("INFO", stream=out)
    log = logging.getLogger("agent.delivery")
    _raise_and_log(log)
    log.info("next")
    text = out.getvalue()
    lines = text.splitlines()
    assert len(lines) == 2, text
    first = lines[0]
    assert first.startswith("<3>agent.delivery: upload failed\\nTraceback (most recent call last):")
    assert "in inner" in first and "ValueError: boom\\nsecond line of the message" in first
    assert lines[1] == "<6>agent.delivery: next"


def test_exception_is_one_indented_entry_in_plain_layout():
    out = io.StringIO()
    setup_logging("INFO", stream=out)
    log = logging.getLogger("agent.delivery")
    _raise_and_log(log)
    log.info("next")
    lines = out.getvalue().splitlines()
    starts = [i for i, line in enumerate(lines) if not line.startswith(" ")]
    assert starts == [0, len(lines) - 1]  # two records, two entry starts
    assert lines[0].endswith("ERROR agent.delivery: upload failed")
    assert lines[1] == "    Traceback (most recent call last):"
    assert "    ValueError: boom" in lines
    assert "    second line of the message" in lines


def test_a_message_cannot_forge_a_line():
    out = io.StringIO()
    setup_logging("INFO", stream=out)
    logging.getLogger("agent.hid").warning("tag %s", "123\n2030-01-01 00:00:00 INFO agent: fake\rX")
    lines = out.getvalue().splitlines()
    assert len([line for line in lines if PLAIN.match(line)]) == 1
    assert lines[1].startswith("    2030-01-01")
    assert "\r" not in out.getvalue()


def test_idempotent_and_reconfigurable(monkeypatch):
    first, second = io.StringIO(), io.StringIO()
    setup_logging("INFO", stream=first)
    setup_logging("INFO", stream=first)
    assert len(ours()) == 1
    logging.getLogger("agent.t").info("once")
    assert first.getvalue().count("once") == 1
    monkeypatch.setenv("JOURNAL_STREAM", "1:1")
    setup_logging("WARNING", stream=second)
    assert len(ours()) == 1
    logging.getLogger("agent.t").info("dropped")
    logging.getLogger("agent.t").warning("kept")
    assert "dropped" not in first.getvalue() + second.getvalue()
    assert second.getvalue() == "<4>agent.t: kept\n"


def test_http_loggers_quiet_unless_debug():
    setup_logging("INFO", stream=io.StringIO())
    for name in ("httpx", "httpcore"):
        assert logging.getLogger(name).level == logging.WARNING
    out = io.StringIO()
    setup_logging("debug", stream=out)
    for name in ("httpx", "httpcore"):
        assert logging.getLogger(name).level == logging.NOTSET
    logging.getLogger("httpcore.http11").debug("send_request_headers.started")
    assert "send_request_headers" in out.getvalue()
    setup_logging("INFO", stream=io.StringIO())
    assert logging.getLogger("httpx").level == logging.WARNING


def test_secrets_are_redacted_on_the_handler(monkeypatch):
    calls = []
    real_install = redact.install
    monkeypatch.setattr(redact, "install", lambda target=None: (calls.append(target), real_install(target)))
    out = io.StringIO()
    setup_logging("DEBUG", stream=out)
    assert calls == ours()  # installed on our handler
    assert any(isinstance(f, redact.RedactingFilter) for f in ours()[0].filters)

    secret = "tok-9f8e7d6c5b4a"
    redact.register_secret(secret)
    log = logging.getLogger("agent.iflow")
    log.info("GET https://app.iflow.ro/api?access_token=%s&version=1.0", secret)
    try:
        raise RuntimeError(f"server said {secret}")
    except RuntimeError:
        log.exception("request failed")
    logging.getLogger("httpx").debug("HTTP Request: GET https://x/?access_token=unregistered123 200")
    text = out.getvalue()
    assert secret not in text
    assert "unregistered123" not in text
    assert text.count("***") >= 3


def test_bad_level_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown log level 'LOUD'"):
        setup_logging("LOUD", stream=io.StringIO())
    assert ours() == []


def test_default_stream_is_stderr_at_call_time(capsys):
    setup_logging("INFO")
    logging.getLogger("agent.t").info("to stderr")
    assert "agent.t: to stderr" in capsys.readouterr().err


def test_priority_mapping():
    assert [logsetup._priority(lv) for lv in (5, 10, 20, 25, 30, 40, 50, 60)] == [7, 7, 6, 5, 4, 3, 2, 2]
