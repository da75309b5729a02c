"""Figures for docs/reliability.md: isolation of what iFlow cannot take, outages, echo formats.

Each case is also a test with its own assertions (tests/test_poison.py has
the finer ones); here the figures of one run are recorded for the report.
"""

from __future__ import annotations

import time

import pytest

from agent.records import State
from standins.iflow import IflowStandin
from tests.reliability.figures import record, scale
from tests.test_delivery import TOKEN, fill, make

POISON = "0004" + "9" * 36


@pytest.fixture
def standin():
    with IflowStandin(token=TOKEN, known_cards=None) as s:
        yield s


def _drains(d, n):
    out = []
    for _ in range(n):
        time.sleep(d.in_backoff() + 0.02)
        out.append(d.drain())
    return out


@pytest.mark.parametrize("status", [500, 422])
def test_poison_among_scans(tmp_path, standin, status):
    n = scale(200, 2000)
    fake, clock, journal, d = make(tmp_path, standin, isolate_after_s=0.1)
    tags = [f"{i:08d}" for i in range(n)]
    poison_at = sorted({n // 7, n // 2, n - 3})
    for i in poison_at:
        tags[i] = POISON[:-1] + str(i % 10)
    fill(journal, clock, tags, fake=fake)
    standin.poison_longer_than = 20
    standin.poison_status = status
    first = d.drain()
    good = [t for t in tags if len(t) <= 20]
    assert [g["rfidTag"] for g in standin.stored] == good
    rounds = 0
    while journal.summary()["failed"] < len(poison_at) and rounds < 40:
        fill(journal, clock, [f"N{rounds:07d}"], fake=fake)
        time.sleep(d.in_backoff() + 0.05)
        d.drain()
        rounds += 1
    summary = journal.summary()
    assert summary["failed"] == len(poison_at) and summary["pending"] == 0
    stored = [g["rfidTag"] for g in standin.stored]
    assert len(stored) == len(set(stored)) == len(good) + rounds
    record("isolation", **{
        f"poison {status}: scans": n, f"poison {status}: poison records": len(poison_at),
        f"poison {status}: first pass requests": first.requests,
        f"poison {status}: first pass delivered": first.delivered,
        f"poison {status}: later scans until all set aside": rounds,
        f"poison {status}: stored twice": len(stored) - len(set(stored)),
        f"poison {status}: set aside as failed": summary["failed"],
    })


@pytest.mark.parametrize("outage", ["refused", "500", "database down"])
def test_outage_marks_nothing(tmp_path, standin, outage):
    n = scale(1000, 5000)
    fake, clock, journal, d = make(tmp_path, standin, isolate_after_s=0.0)
    fill(journal, clock, [f"{i:08d}" for i in range(n)], step=0.2, fake=fake)
    if outage == "refused":
        standin.mode = "down"
    elif outage == "500":
        standin.outage = 500
    else:
        standin.poison_longer_than, standin.poison_status = 0, 500  # `[]` still answered
    summaries = _drains(d, 8)
    s = journal.summary()
    assert (s["pending"], s["failed"], s["rejected"]) == (n, 0, 0)
    record("isolation", **{f"outage {outage}: scans": n, f"outage {outage}: passes": len(summaries),
                           f"outage {outage}: requests": sum(x.requests for x in summaries),
                           f"outage {outage}: marked failed or rejected": s["failed"] + s["rejected"]})


ECHOES = [({"tag_number"}, None), ({"hour_no_zero"}, None), ({"no_seconds"}, None), ({"reversed"}, None),
          (set(), "%d.%m.%Y"), (set(), "%Y/%m/%d"), (set(), "%Y-%m-%dT00:00:00.000000Z")]


def test_echo_formats_are_matched_without_a_resend(tmp_path):
    n = 120
    requests = {}
    for i, (echo, date) in enumerate(ECHOES):
        with IflowStandin(token=TOKEN, known_cards=None) as standin:
            standin.echo, standin.echo_date = set(echo), date
            (tmp_path / str(i)).mkdir()
            fake, clock, journal, d = make(tmp_path / str(i), standin)
            fill(journal, clock, [f"{k:010d}" for k in range(n)], fake=fake)
            s = d.drain()
            assert s.delivered == n and s.error is None and s.requests == standin.requests
            assert d.drain().requests == 0 and len(standin.stored) == n
            requests["+".join(sorted(echo)) or date] = s.requests
    record("isolation", **{"echo formats matched (scans each)": n, "echo formats: requests per format": requests})


def test_clock_correction_after_a_refused_send(tmp_path, standin):
    fake, clock, journal, d = make(tmp_path, standin)
    fill(journal, clock, ["C1"], fake=fake)
    standin.mode = "down"
    d.drain()
    fake.wall_ns += 3600 * 10**9
    clock.observe()
    standin.mode = "up"
    time.sleep(d.in_backoff() + 0.01)
    d.drain()
    (rec,) = journal.records()
    assert rec.state == State.DELIVERED and standin.stored[0]["time"] == "11:00:00"
    record("isolation", **{"clock step after a refused send: time sent": standin.stored[0]["time"],
                           "clock step after a refused send: captured as": "10:00:00 local"})
