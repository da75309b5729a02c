"""What the technician sees from `agent flush`: a progress bar on a terminal, plain lines otherwise."""

from __future__ import annotations

import io
import json

from agent.commands.progress import FlushView, print_plan

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
