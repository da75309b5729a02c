"""Scan -> feedback latency: the serial line path beside the PN532 path, in one run.

What a person at the door waits for: from the card at the reader to the green
LED, through the real daemon (``agent.commands.run.Daemon`` in this process:
reader thread, tag format, debounce, journal append with its fsyncs on the
temp dir's disk, feedback). The feedback is the GPIO backend on gpiozero's
``MockFactory`` with its patterns scaled down (``time_scale``), so the LED goes
off again quickly; the pin's first high state is what ends a sample (polled
every 0.2 ms, as tests/test_service.py does).

* Line path: a serial reader with ``protocol = "line"`` on a pty; the clock
  starts when the tag's last byte has been written to the pty.
* PN532 path: ``protocol = "pn532"`` on the project's PN532 simulator
  (``standins.pn532``, a pty speaking the chip's frames); the clock starts
  when the card is put in the simulated field. The reader finds a card only
  when it polls (an InListPassiveTarget every ``poll_seconds``), so this
  latency includes the wait for the next poll: uniform between 0 and
  ``poll_seconds``, plus one command/answer exchange, plus the journal. Its
  p99 is therefore bounded by ``poll_seconds`` + one exchange, and the target
  says so. After each card, the bench removes it and waits for two more polls
  (counted on the simulator) and for the LED to go off, so a late read of the
  card just scanned cannot light the LED for the next sample; then it waits a
  random part of ``poll_seconds``, so that cards arrive at any point of the
  poll cycle, as at a door.

Each path runs in its own daemon (one reader each, as at a door), in rounds
that alternate between the paths so that machine noise hits both alike.
"""

from __future__ import annotations

import os
import random
import statistics
import threading
import time
import tty
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.run import (
    Check,
    Context,
    Section,
    _first_match,
    fmt_ms,
    percentile,
    progress,
)

TIME_SCALE = 0.002  # the patterns' 0.5 s green becomes 1 ms
GREEN = 17
LINE_P99_MS = 50.0
EXCHANGE_ALLOWANCE_MS = 100.0  # one PN532 exchange plus the journal, on top of poll_seconds
_POLL_S = 0.0002
_GIVE_UP_S = 5.0
_IN_LIST_PASSIVE_TARGET = 0x4A


@contextmanager
def _daemon(state: Path, reader: dict[str, Any]) -> Iterator[Any]:
    """A daemon in this process with one reader and mock-pin GPIO feedback; yields
    (the green pin, the reader's config)."""
    from gpiozero import Device  # optional and slow to import: only when the bench runs
    from gpiozero.pins.mock import MockFactory, MockPWMPin

    from agent.commands.run import Daemon
    from agent.config import from_dict
    from agent.feedback.gpio import GpioFeedback
    from agent.runtime.sdnotify import Notifier

    factory = MockFactory(pin_class=MockPWMPin)
    fb = GpioFeedback(green=GREEN, red=27, buzzer=22, pin_factory=factory, time_scale=TIME_SCALE)
    cfg = from_dict({"timezone": "UTC", "state_dir": str(state), "reader": reader,
                     "journal": {"allow_volatile": True}})
    d = Daemon(cfg, feedback=fb, notifier=Notifier(None))
    t = threading.Thread(target=d.run, name="bench-daemon", daemon=True)
    t.start()
    try:
        if not d.ready.wait(30):
            raise RuntimeError("the daemon did not open its journal")
        deadline = time.monotonic() + 30
        while not (d.readers and all(r.connected for r in d.readers)):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the reader did not connect: {[r.error for r in d.readers]}")
            time.sleep(0.01)
        yield factory.pin(GREEN), cfg.reader
    finally:
        d.stop_event.set()
        t.join(30)
        Device.pin_factory = None


def _until(pred: Callable[[], bool], what: str, seconds: float = _GIVE_UP_S) -> None:
    deadline = time.monotonic() + seconds
    while not pred():
        if time.monotonic() > deadline:
            raise RuntimeError(f"gave up waiting for {what}")
        time.sleep(_POLL_S)


def _sample(green: Any, start: Callable[[], None], what: str) -> int:
    """ns from ``start()`` to the green LED's first high state."""
    green.clear_states()
    t0 = start()
    _until(lambda: any(s.state for s in green.states), f"feedback to {what}")
    took = time.monotonic_ns() - t0
    _until(lambda: not green.state, "the LED to go off")  # a LED still on records no new state
    return took


def _line_round(state: Path, n: int, first: int) -> list[int]:
    master, slave = os.openpty()
    tty.setraw(master)
    tty.setraw(slave)
    try:
        with _daemon(state, {"type": "serial", "protocol": "line", "port": os.ttyname(slave)}) as (green, _):
            def send(i: int) -> int:
                os.write(master, f"LAT{i:06d}\r\n".encode())  # 11 bytes: a pty takes them at once
                return time.monotonic_ns()  # the last byte is written now

            return [_sample(green, lambda i=i: send(i), "a line") for i in range(first, first + n)]
    finally:
        os.close(master)
        os.close(slave)


def _polls(sim: Any) -> int:
    return sum(1 for c in list(sim.commands) if c == _IN_LIST_PASSIVE_TARGET)


def _pn532_round(state: Path, n: int, first: int) -> tuple[list[int], float]:
    from standins.pn532 import Pn532Sim

    with Pn532Sim() as sim:
        with _daemon(state, {"type": "serial", "protocol": "pn532", "port": sim.port}) as (green, rc):

            def present(i: int) -> int:
                t0 = time.monotonic_ns()
                sim.present(bytes([0x04, (i >> 16) & 0xFF, (i >> 8) & 0xFF, i & 0xFF]))
                return t0

            samples = []
            rng = random.Random(first)
            for i in range(first, first + n):
                # A person does not wait for the poll: the card comes at any point of its cycle
                # (this loop would otherwise always present it just after a poll).
                time.sleep(rng.uniform(0, rc.poll_seconds))
                samples.append(_sample(green, lambda i=i: present(i), "a card"))
                sim.present(None)
                seen = _polls(sim)
                _until(lambda: _polls(sim) >= seen + 2, "two polls without the card")
                _until(lambda: not green.state, "the LED to go off")
            return samples, float(rc.poll_seconds)


def _row(name: str, samples: list[int]) -> tuple[str, float, float, float]:
    p50 = statistics.median(samples) / 1e6
    return name, p50, percentile(samples, 99), max(samples) / 1e6


def bench_latency(ctx: Context) -> Section:
    quick = ctx.params.quick
    rounds, per_round = (1, 3) if quick else (4, 25)
    line: list[int] = []
    pn532: list[int] = []
    poll_s = 0.0
    progress(f"latency: {rounds} alternating rounds of {per_round} scans on each path")
    for r in range(rounds):
        line += _line_round(ctx.tmp / "latency-line", per_round, r * per_round)
        got, poll_s = _pn532_round(ctx.tmp / "latency-pn532", per_round, r * per_round)
        pn532 += got
    n = rounds * per_round
    pn_limit = poll_s * 1000 + EXCHANGE_ALLOWANCE_MS
    rows = [_row("serial line (`protocol = \"line\"`), clock from the tag's last byte", line),
            _row(f"PN532 (`protocol = \"pn532\"`, `poll_seconds` = {poll_s:g}), clock from the card "
                 "entering the field", pn532)]
    cpu = f"{_first_match('/proc/cpuinfo', ('model name', 'Model')) or '?'}, {os.cpu_count()} cores"
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    body = [
        "From the card at the reader to the green LED, through the daemon in the benchmark's process "
        "(reader thread, tag format, debounce, journal append with real fsyncs on the temp dir's disk, "
        "GPIO feedback on gpiozero's `MockFactory` with `time_scale` = "
        f"{TIME_SCALE:g}; the pin is polled every {_POLL_S * 1000:g} ms). Each path has its own daemon "
        f"with one reader; {rounds} rounds of {per_round} scans alternate between the paths ({n} scans "
        "each). The line path is a pty; the PN532 path is the project's simulator (`standins.pn532`) on a "
        "pty, with 4-byte UIDs, the reader's defaults (115200 baud) and a new card for every scan, "
        "presented at a random point of the poll cycle (after the previous card was taken away and "
        "two polls found the field empty).",
        "",
        "| Path | n | p50 ms | p99 ms | max ms |",
        "|---|---:|---:|---:|---:|",
    ]
    body += [f"| {name} | {n} | {fmt_ms(p50)} | {fmt_ms(p99)} | {fmt_ms(mx)} |" for name, p50, p99, mx in rows]
    body += [
        "",
        f"The PN532 reader finds a card only when it polls: every `poll_seconds` = {poll_s:g} s it sends "
        "InListPassiveTarget and waits for the answer. A card entering the field waits for the next poll "
        f"(between 0 and {poll_s * 1000:.0f} ms, uniformly), then one exchange and the journal append: its "
        f"p99 is bounded by `poll_seconds` + one exchange, hence the target {poll_s * 1000:.0f} + "
        f"{EXCHANGE_ALLOWANCE_MS:.0f} ms. A smaller `poll_seconds` shortens the wait and costs the Pi "
        "one more wake-up and exchange per poll. The line path has no such wait: the reader sends as "
        "soon as it reads the card.",
        "",
        f"Machine for this section: {cpu}, load average {load} at its end; "
        f"{datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}.",
    ]
    (_, _, lp99, _), (_, _, pp99, _) = rows
    checks = [
        Check("Scan to feedback p99, serial line path", f"{fmt_ms(lp99)} ms", f"<= {LINE_P99_MS:g} ms",
              lp99 <= LINE_P99_MS),
        Check("Scan to feedback p99, PN532 path", f"{fmt_ms(pp99)} ms",
              f"<= poll_seconds + {EXCHANGE_ALLOWANCE_MS:.0f} ms = {pn_limit:.0f} ms", pp99 <= pn_limit),
    ]
    return Section("Scan to feedback latency: serial line and PN532", body, checks)

