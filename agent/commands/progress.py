"""What the technician sees during and after `agent flush`.

On a terminal: a progress bar (rich, imported only here and only then) with
sent of total, rate and time left. Otherwise (a pipe, ``TERM=dumb``, or rich
not installed) plain lines, one every few seconds. Then the summary: first
why anything is left (:func:`problems`, which also decides flush's exit
status), then a table.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from agent.clock.reasons import explain, first_line


class FlushView:
    def __init__(self, json_mode: bool = False, stream=None) -> None:
        self.stream = stream or sys.stdout
        self.json_mode = json_mode
        self.tty = self.stream.isatty() and not json_mode and os.environ.get("TERM") != "dumb"
        self._bar = None
        self._task = None
        self._last_line = 0.0

    def update(self, event: dict[str, Any]) -> None:
        if self.json_mode:
            print(json.dumps({"progress": event}), file=self.stream, flush=True)
            return
        if self.tty and self._bar is None:
            self._start_bar(event)
        if self._bar is not None:
            rate = event["done"] / event["seconds"] if event["seconds"] else 0.0
            self._bar.update(self._task, completed=event["done"], rate=rate)
            return
        now = time.monotonic()
        if now - self._last_line >= 2.0 or event["done"] >= event["total"]:
            self._last_line = now
            print(f"delivered {event['done']} of {event['total']} ({event['seconds']:.1f} s)",
                  file=self.stream, flush=True)

    def _start_bar(self, event: dict[str, Any]) -> None:
        """The progress bar, or (rich not installed) plain lines from now on."""
        try:
            # Lazy: rich costs a Pi Zero a noticeable start-up, and only a terminal needs it.
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )
        except ImportError:
            self.tty = False
            return
        self._bar = Progress(TextColumn("delivering"), BarColumn(), MofNCompleteColumn(),
                             TextColumn("{task.fields[rate]:>7.0f} scans/s"), TimeRemainingColumn(),
                             console=Console(file=self.stream, force_terminal=True),
                             transient=True)
        self._bar.start()
        self._task = self._bar.add_task("flush", total=max(event["total"], 1), rate=0.0)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def summary(self, result: dict[str, Any], by_daemon: bool) -> None:
        why = problems(result)
        if self.json_mode:
            result = dict(result, held_reasons=explain(result.get("held"), result.get("held_detail")))
            print(json.dumps({"summary": result, "by_daemon": by_daemon, "problems": why}, sort_keys=True),
                  file=self.stream, flush=True)
            return
        held = sum((result.get("held") or {}).values())
        rows = [
            ("delivered (new in iFlow)", result["delivered"]),
            ("already in iFlow (duplicates)", result["duplicate"]),
            ("rejected by iFlow", result["rejected"]),
            ("set aside as failed", result.get("failed") or 0),
            ("still pending", result["still_pending"]),
            ("held (clock not trusted)", held),
        ]
        out = list(why)
        out.append(f"flush {'by the running daemon' if by_daemon else '(no daemon running)'}: "
                   f"{result['requests']} request(s) in {result['seconds']:.1f} s")
        width = max(len(r[0]) for r in rows)
        out += [f"  {name:<{width}}  {n:>7}" for name, n in rows]
        for key in ("rejected_reasons", "failed_reasons"):
            for reason, n in sorted((result.get(key) or {}).items(), key=lambda kv: -kv[1]):
                out.append(f"      {n:>5} x {reason}")
        if result.get("error"):
            out.append(f"  STOPPED: {result['error']}")
            out.append("  the scans are safe in the journal; run `agent flush` again when iFlow is reachable")
        elif result["still_pending"]:
            out.append("  some scans are still pending: run `agent flush` again, or see `agent status`")
        else:
            out.append("  nothing sendable is left pending")
        for r in explain(result.get("held"), result.get("held_detail")):
            out.append(f"  {r['count']} held: {r['reason']}")
            out.append(f"      what to do: {r['action']}")
        if result["rejected"] or result.get("failed"):
            out.append("  see why and retry after fixing: agent rejected")
        print("\n".join(out), file=self.stream, flush=True)


def _answer(result: dict[str, Any]) -> str:
    """"iFlow answered HTTP 500: <excerpt>", or "" when the summary has neither."""
    status, excerpt = result.get("error_status"), result.get("error_excerpt")
    if status is None and not excerpt:
        return ""
    return f"iFlow answered {'HTTP ' + str(status) if status is not None else 'it'}{': ' + excerpt if excerpt else ''}"


def problems(result: dict[str, Any]) -> list[str]:
    """Why scans remain after a flush, one line each, most pressing first: the
    first lines of its summary. Empty exactly when `agent flush` exits 0:
    nothing sendable or held is left pending and nothing failed."""
    out = [result["note"]] if result.get("note") else []
    answer = _answer(result)
    if not result.get("reachable", True):
        out.append(f"iFlow unreachable: {result.get('error') or 'no answer'}")
    elif result.get("error"):
        out.append(answer or f"delivery stopped: {result['error']}")
        answer = ""
    if answer and out:
        out.append(answer)
    pending = int(result.get("still_pending") or 0)
    if pending:
        unmatched = int(result.get("unmatched") or 0)
        why = f": iFlow's answers gave no result for {unmatched}" if unmatched else ""
        out.append(f"{pending} sendable scan{'s' if pending != 1 else ''} still pending{why} "
                   "(run agent flush again, or see agent status)")
    held = first_line(result.get("held"), result.get("held_detail"))
    if held:
        out.append(held)
    failed = int(result.get("failed") or 0)
    if failed:
        out.append(f"{failed} record{'s' if failed != 1 else ''} set aside as failed (iFlow cannot take "
                   f"{'them' if failed != 1 else 'it'} as sent): see agent rejected")
    return out


def print_plan(result: dict[str, Any], json_mode: bool) -> int:
    items = result["would_send"]
    if json_mode:
        print(json.dumps(result, sort_keys=True))
        return 0
    print(f"would send {len(items)} record(s), oldest first (dry run: nothing sent)")
    for it in items[:50]:
        print(f"  {it['date']} {it['time']}  card {it['tag']}")
    if len(items) > 50:
        print(f"  ... and {len(items) - 50} more")
    for r in explain(result.get("held"), result.get("held_detail")):
        print(f"held, not sent: {r['count']} {r['status']}: {r['reason']}")
        print(f"    what to do: {r['action']}")
    return 0
