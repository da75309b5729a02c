"""Figures for docs/reliability.md: the true time learned from iFlow's HTTPS Date.

The real daemon under libfaketime, its wall clock 3 hours behind and never
synchronised, takes a run of scans while iFlow (the stand-in over TLS from a
trustme CA) is unreachable; then iFlow comes up. tests/test_https_date.py
has the finer cases (plain HTTP, NTP disagreeing, a certificate that does
not verify, DST edges); here the figures of one run are recorded.
"""

from __future__ import annotations

import statistics
import time

from tests.reliability.figures import record, scale
from tests.test_https_date import (
    BEHIND,
    Door,
    by_tag,
    closing,
    error_s,
    gets,
    needs_faketime,
    standin_on,
    until,
)

__all__ = ["closing"]  # the fixture, imported for pytest


@needs_faketime
def test_scans_of_a_boot_3h_behind_reach_iflow_with_true_times(tmp_path, closing):
    n = scale(200, 2000)
    standin, ca = standin_on(tmp_path)
    closing(standin)
    standin.mode = "down"
    door = Door(tmp_path, standin, ca=ca)
    closing(door)
    tags = [f"R{i:06d}" for i in range(n)]
    for tag in tags:
        door.scan(tag)
        time.sleep(0.01)
    assert standin.request_log == []
    up = time.monotonic()
    standin.mode = "up"
    assert until(lambda: standin.stored_count == n, 120.0), (standin.stored_count, standin.request_log[:5])
    took = time.monotonic() - up
    got = by_tag(standin)
    errors = [abs(error_s(got[t], door.scanned[t])) for t in tags]
    assert max(errors) <= 2.0, max(errors)
    heads = [r for r in standin.request_log if r[0] == "HEAD"]
    early = [r for r in gets(standin) if r[1] < heads[0][1]]
    assert heads and early == [] and "access_token" not in heads[0][2]
    st = door.status()
    assert st["time_source"] == "https-date" and st["pending"] == 0, st
    assert abs(st["wall_clock_error_seconds"] - BEHIND) <= 5, st
    stored = [s["rfidTag"] for s in standin.stored]
    assert len(stored) == len(set(stored)) == n
    record("https_date", **{
        "scans while iFlow was unreachable": n,
        "wall clock error of the boot (s)": BEHIND,
        "max error of a delivered time (s)": max(errors),
        "median error of a delivered time (s)": statistics.median(errors),
        "HEAD requests": len(heads),
        "GETs before the time was known": len(early),
        "GET requests": len(gets(standin)),
        "stored twice": len(stored) - len(set(stored)),
        "seconds from iFlow up to all delivered": round(took, 1),
        "estimated error reported by status (s)": st["time_error_seconds"],
        "wall clock error reported by status (s)": st["wall_clock_error_seconds"],
    })
