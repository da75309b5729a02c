"""What the technician sees from `agent flush`: a progress bar on a terminal, plain lines otherwise."""

from __future__ import annotations

import io
import json
import sys

from agent.commands.progress import FlushView, print_plan, problems

RESULT = {"delivered": 7, "duplicate": 2, "rejected": 3, "still_pending": 0, "requests": 4, "seconds": 1.25,
          "held": {}, "rejected_reasons": {"error_authenticate: Niciun angajat nu este asociat": 3},
          "reachable": True, "error": None, "total": 12}


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_terminal_gets_a_progress_bar_then_the_summary():
    out = Tty()
    v = FlushView(stream=out)
    for done in (0, 6, 12):
        v.update({"done": done, "total": 12, "delivered": done, "duplicate": 0, "rejected": 0, "seconds": 1.0})
    v.close()
    v.summary(RESULT, by_daemon=True)
    text = out.getvalue()
    assert "delivering" in text and "12/12" in text  # rich's bar: sent of total
    assert "scans/s" in text
    assert "already in iFlow (duplicates)        2" in text
    assert "3 x error_authenticate: Niciun angajat nu este asociat" in text
    assert "nothing sendable is left pending" in text


def test_pipe_gets_plain_lines_and_json_mode_json():
    out = io.StringIO()
    v = FlushView(stream=out)
    v.update({"done": 12, "total": 12, "delivered": 12, "duplicate": 0, "rejected": 0, "seconds": 2.0})
    v.summary(dict(RESULT, error="cannot connect", still_pending=5, reachable=False), by_daemon=False)
    text = out.getvalue()
    assert "\x1b[" not in text and text.startswith("delivered 12 of 12")
    assert "STOPPED: cannot connect" in text and "(no daemon running)" in text
    out = io.StringIO()
    v = FlushView(json_mode=True, stream=out)
    v.update({"done": 1, "total": 2, "delivered": 1, "duplicate": 0, "rejected": 0, "seconds": 0.1})
    v.summary(RESULT, by_daemon=True)
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    assert lines[0]["progress"]["done"] == 1 and lines[1]["summary"]["delivered"] == 7


def test_dry_run_plan(capsys):
    print_plan({"would_send": [{"date": "2026-11-22", "time": "08:00:00", "tag": "1", "key": "k"}],
                "held": {"held_unsynced": 2}}, json_mode=False)
    out = capsys.readouterr().out
    assert "would send 1 record(s)" in out and "2026-11-22 08:00:00  card 1" in out and "held_unsynced" in out


def test_terminal_without_rich_or_dumb_gets_plain_lines(monkeypatch):
    event = {"done": 3, "total": 3, "delivered": 3, "duplicate": 0, "rejected": 0, "seconds": 1.0}
    monkeypatch.setitem(sys.modules, "rich.progress", None)  # importing it raises ImportError
    out = Tty()
    v = FlushView(stream=out)
    v.update(event)
    v.close()
    assert out.getvalue() == "delivered 3 of 3 (1.0 s)\n"
    monkeypatch.delitem(sys.modules, "rich.progress")
    monkeypatch.setenv("TERM", "dumb")
    out = Tty()
    FlushView(stream=out).update(event)
    assert out.getvalue() == "delivered 3 of 3 (1.0 s)\n"


def test_the_first_line_says_why_and_decides_the_exit_status():
    assert problems(RESULT) == []  # rejected ones are iFlow's answer, not a failure of the flush
    down = dict(RESULT, reachable=False, error="cannot connect to 127.0.0.1:9: refused", still_pending=4)
    assert problems(down)[0] == "iFlow unreachable: cannot connect to 127.0.0.1:9: refused"
    http = dict(RESULT, error="HTTP 500", error_status=500, error_excerpt='{"message":"Server Error"}')
    assert problems(http) == ['iFlow answered HTTP 500: {"message":"Server Error"}']
    failed = dict(RESULT, failed=3, failed_reasons={"HTTP 422: tag too long": 3})
    assert problems(failed) == ["3 records set aside as failed (iFlow cannot take them as sent): see agent rejected"]
    unmatched = dict(RESULT, still_pending=2, unmatched=2)
    assert problems(unmatched)[0].startswith("2 sendable scans still pending: iFlow's answers gave no result for 2")
    held = dict(RESULT, held={"held_unsynced": 17})
    assert problems(held) == ["17 scans not sent: the clock was never synchronised in their boot "
                              "(agent flush --release-unsynced sends them)"]


def test_summary_shows_failed_and_the_servers_answer():
    out = io.StringIO()
    result = dict(RESULT, failed=1, failed_reasons={"HTTP 500: boom": 1}, still_pending=3, error="HTTP 500",
                  error_status=500, error_excerpt="boom", held={"wait": 2})
    FlushView(stream=out).summary(result, by_daemon=False)
    lines = out.getvalue().splitlines()
    assert lines[0] == "iFlow answered HTTP 500: boom"
    assert "1 record set aside as failed (iFlow cannot take it as sent): see agent rejected" in lines
    assert "  set aside as failed                  1" in lines and "          1 x HTTP 500: boom" in lines
    assert any(ln.startswith("  2 held: taken in this boot before the clock synchronised") for ln in lines)
    out = io.StringIO()
    FlushView(json_mode=True, stream=out).summary(result, by_daemon=True)
    doc = json.loads(out.getvalue())
    assert doc["problems"][0] == "iFlow answered HTTP 500: boom"
    assert doc["summary"]["failed"] == 1 and doc["summary"]["held_reasons"][0]["status"] == "wait"
