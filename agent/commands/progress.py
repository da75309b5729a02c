"""What the technician sees during and after `agent flush`.

On a terminal: a progress bar (rich, imported only here and only then) with
sent of total, rate and time left. Otherwise plain lines, one every few
seconds. Then a summary table.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any


class FlushView:
    def __init__(self, json_mode: bool = False, stream=None) -> None:
        self.stream = stream or sys.stdout
        self.json_mode = json_mode
        self.tty = self.stream.isatty() and not json_mode
        self._bar = None
        self._task = None
        self._last_line = 0.0

    def update(self, event: dict[str, Any]) -> None:
        if self.json_mode:
            print(json.dumps({"progress": event}), file=self.stream, flush=True)
            return
        if self.tty:
            if self._bar is None:
                from rich.console import Console
                from rich.progress import (
                    BarColumn,
                    MofNCompleteColumn,
                    Progress,
                    TextColumn,
                    TimeRemainingColumn,
                )

                self._bar = Progress(TextColumn("delivering"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("{task.fields[rate]:>7.0f} scans/s"), TimeRemainingColumn(),
                                     console=Console(file=self.stream, force_terminal=True),
                                     transient=True)
                self._bar.start()
                self._task = self._bar.add_task("flush", total=max(event["total"], 1), rate=0.0)
            rate = event["done"] / event["seconds"] if event["seconds"] else 0.0
            self._bar.update(self._task, completed=event["done"], rate=rate)
            return
        now = time.monotonic()
        if now - self._last_line >= 2.0 or event["done"] >= event["total"]:
            self._last_line = now
            print(f"delivered {event['done']} of {event['total']} ({event['seconds']:.1f} s)",
                  file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def summary(self, result: dict[str, Any], by_daemon: bool) -> None:
        if self.json_mode:
            print(json.dumps({"summary": result, "by_daemon": by_daemon}, sort_keys=True),
                  file=self.stream, flush=True)
            return
        held = sum((result.get("held") or {}).values())
        rows = [
            ("delivered (new in iFlow)", result["delivered"]),
            ("already in iFlow (duplicates)", result["duplicate"]),
            ("rejected by iFlow", result["rejected"]),
            ("still pending", result["still_pending"]),
            ("held (clock not trusted)", held),
        ]
        out = [f"flush {'by the running daemon' if by_daemon else '(no daemon running)'}: "
               f"{result['requests']} request(s) in {result['seconds']:.1f} s"]
        width = max(len(r[0]) for r in rows)
        out += [f"  {name:<{width}}  {n:>7}" for name, n in rows]
        for reason, n in sorted((result.get("rejected_reasons") or {}).items(), key=lambda kv: -kv[1]):
            out.append(f"      {n:>5} x {reason}")
        if result.get("error"):
            out.append(f"  STOPPED: {result['error']}")
            out.append("  the scans are safe in the journal; run `agent flush` again when iFlow is reachable")
        elif result["still_pending"]:
            out.append("  some scans are still pending: run `agent flush` again, or see `agent status`")
        else:
            out.append("  nothing sendable is left pending")
        if held:
            out.append("  held scans were stamped by a clock that never synchronised; "
                       "check them, then: agent flush --release-unsynced")
        if result["rejected"]:
            out.append("  see why and retry after fixing: agent rejected")
        print("\n".join(out), file=self.stream, flush=True)


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
    held = result.get("held") or {}
    if held:
        print(f"held, not sent: {held}")
    return 0
