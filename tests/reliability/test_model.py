"""Model-based test: random sequences of scans, faulty uploads, kills, power cuts,
restarts, flushes from a second process, full disks and clock changes.

Everything runs in process: the journal sits on :class:`CrashFS` (the power-cut
double), scans go through the real :class:`Recorder`, delivery through the real
:class:`Deliverer` and :class:`IflowClient`, and iFlow is the stand-in's own
store logic behind an ``httpx.MockTransport`` that answers each request with a
drawn fault. After every step the invariants hold:

* every acknowledged scan is in the journal (or, at least, stored in iFlow);
* nothing is invented: the journal and iFlow hold only scans that were made;
* no scan is stored twice as new in iFlow, and nothing is marked delivered
  that iFlow does not hold;

and once the faults stop, everything drains.
"""

from __future__ import annotations

import errno
import json
import random
import shutil
import tempfile
from collections import Counter, deque
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from agent.clock.anchors import AnchorStore
from agent.clock.clock import Clock
from agent.clock.sources import ClockSources
from agent.config import ReaderConfig
from agent.delivery.client import IflowClient
from agent.delivery.deliverer import Deliverer
from agent.journal.store import Journal
from agent.recording.recorder import Recorder
from agent.records import Record
from standins.iflow import ENDPOINT, IflowStandin
from tests.reliability.figures import record, scale
from tests.support.crashfs import Crash, CrashFS

D = "/state/journal"
TZ = ZoneInfo("Europe/Bucharest")
TOKEN = "tok-MODEL-5150"
URL = f"http://iflow.test{ENDPOINT}"
FAULTS = ["ok", "ok", "ok", "refused", "timeout", "503", "html200", "stored_then_reset",
          "truncated", "wrong_length", "unmatched_last", "deep"]
STATS: Counter = Counter()


class ModelIflow:
    """iFlow in process: the stand-in's store/dedupe logic, one drawn fault per request."""

    def __init__(self) -> None:
        self.store = IflowStandin(token=TOKEN)  # never started: its _store() only
        self.faults: deque[str] = deque()
        self.transport = httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        fault = self.faults.popleft() if self.faults else "ok"
        STATS["requests"] += 1
        STATS[f"fault:{fault}"] += 1
        assert request.url.params["access_token"] == TOKEN
        if fault == "refused":
            raise httpx.ConnectError("connection refused", request=request)
        if fault == "timeout":
            raise httpx.ReadTimeout("timed out", request=request)
        if fault == "503":
            return httpx.Response(503, headers={"Retry-After": "2"}, content=b"busy")
        if fault == "html200":
            return httpx.Response(200, headers={"Content-Type": "text/html"}, content=b"<html>login</html>")
        if fault == "deep":
            return httpx.Response(200, content=b"[" * 50_000)
        results = self.store._store(json.loads(request.url.params["csv_data"]))
        if fault == "stored_then_reset":
            raise httpx.ReadError("connection reset by peer", request=request)
        body = json.dumps(results).encode()
        if fault == "truncated":
            body = body[: len(body) // 2]
        elif fault == "wrong_length":
            body = json.dumps(results[:-1]).encode()
        elif fault == "unmatched_last":
            results[-1] = dict(results[-1], rfidTag="someone-else")
            body = json.dumps(results).encode()
        return httpx.Response(200, content=body, headers={"Content-Type": "application/json"})

    def tags(self) -> Counter:
        return Counter(s["rfidTag"] for s in self.store.stored)


class FakeTime:
    """Injectable wall/boottime clocks and kernel sync flag."""

    def __init__(self, synced: bool, behind_s: int) -> None:
        self.true_ns = int(datetime(2026, 11, 22, 7, 0, tzinfo=UTC).timestamp() * 1e9)
        self.error_ns = 0 if synced else behind_s * 10**9
        self.mono_ns = 40 * 10**9
        self.synced = synced

    def wall(self) -> int:
        return self.true_ns - self.error_ns

    def advance(self, seconds: float) -> None:
        self.true_ns += int(seconds * 1e9)
        self.mono_ns += int(seconds * 1e9)

    def clock(self, tmp: Path) -> Clock:
        tmp = Path(tmp)
        if not (tmp / "boot_id").exists():
            (tmp / "boot_id").write_text("boot-model\n")
        src = ClockSources(use_adjtimex=True, timesyncd_flag=str(tmp / "nope"), boot_id_path=str(tmp / "boot_id"),
                           wall_ns=self.wall, mono_ns=lambda: self.mono_ns, adjtimex=lambda: self.synced)
        c = Clock(src, AnchorStore(str(tmp / "clock.json")), build_time=datetime(2020, 1, 1, tzinfo=UTC))
        c.observe()
        return c


class Door:
    """The feedback the person at the door gets."""

    def __init__(self) -> None:
        self.events: list[str] = []

    def event(self, name: str, detail: str = "") -> None:
        self.events.append(name)


class AgentModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="agent-model-"))
        (self.tmp / "boot_id").write_text("boot-model\n")
        self.fs = CrashFS()
        self.iflow = ModelIflow()
        self.time = FakeTime(synced=True, behind_s=0)
        self.client = IflowClient(URL, TOKEN, "1.0", read_timeout=1.0, transport=self.iflow.transport)
        self.rng = random.Random(0)
        self.door = Door()
        self.attempted: set[str] = set()
        self.acked: set[str] = set()
        self.n = 0
        self.journal: Journal | None = None
        self._open()
        STATS["examples"] += 1

    # ----------------------------------------------------------- helpers

    def _open(self) -> None:
        """A (re)start of the daemon over whatever the file system now holds."""
        self.journal = Journal(D, segment_size=4, fs=self.fs)
        assert not self.journal.quarantined, self.journal.quarantined
        self.clock = self.time.clock(self.tmp)
        self.recorder = Recorder(self.journal, self.clock, self.door, readers=[ReaderConfig(name="door", tag_format="raw", debounce_seconds=0.0)])
        self.deliverer = self._deliverer(self.journal)

    def _deliverer(self, journal: Journal) -> Deliverer:
        return Deliverer(journal, self.client, self.clock, TZ, backoff_initial=2.0, backoff_max=300.0,
                         rng=self.rng.random)

    def _scan(self) -> str:
        tag = f"{1000000 + self.n}"
        self.n += 1
        self.attempted.add(tag)
        before = len(self.door.events)
        result = self.recorder.handle("door", tag)
        assert result in ("stored", "error"), result
        assert self.door.events[before:] == [result], "feedback must match the outcome"
        if result == "stored":
            self.acked.add(tag)
        else:
            STATS["scans_refused"] += 1
        self.time.advance(0.4)
        return result

    def _drain(self, deliverer: Deliverer, faults: list[str]) -> None:
        self.iflow.faults.extend(faults)
        s = deliverer.drain(count=False)
        STATS["drains"] += 1
        STATS["duplicates_resolved"] += s.duplicate
        self.iflow.faults.clear()

    def _flush_cli(self, faults: list[str]) -> None:
        """`agent flush` with no daemon: it opens the journal itself, then exits."""
        self.journal = None  # the daemon is gone (the lock keeps them apart)
        j2 = Journal(D, segment_size=4, fs=self.fs)
        try:
            self._drain(self._deliverer(j2), faults)
        finally:
            j2.close()

    def _power(self, mode: str) -> None:
        if mode == "kill":
            STATS["kills"] += 1  # process gone; the page cache (volatile state) survives
        else:
            STATS[f"power_cuts_{mode}"] += 1
            self.fs = self.fs.after_crash(mode, self.rng)
        self.fs.crash_at = None
        self.fs.fail_at = {}
        self._open()

    # -------------------------------------------------------------- rules

    @rule()
    def scan(self) -> None:
        assert self._scan() == "stored"

    @rule(k=st.integers(1, 3))
    def burst(self, k: int) -> None:
        for _ in range(k):
            assert self._scan() == "stored"

    @rule(faults=st.lists(st.sampled_from(FAULTS), max_size=3))
    def upload(self, faults: list[str]) -> None:
        assert self.journal is not None
        self._drain(self.deliverer, faults)

    @rule(faults=st.lists(st.sampled_from(FAULTS), max_size=2))
    def flush_from_second_process(self, faults: list[str]) -> None:
        STATS["cli_flushes"] += 1
        self._flush_cli(faults)
        self._open()

    @rule(during=st.sampled_from(["scan", "upload", "flush"]), at=st.integers(1, 14),
          mode=st.sampled_from(["kill", "durable", "torn"]), faults=st.lists(st.sampled_from(FAULTS), max_size=2))
    def crash(self, during: str, at: int, mode: str, faults: list[str]) -> None:
        self.fs.crash_at = self.fs.ops + at
        try:
            if during == "scan":
                self._scan()
            elif during == "upload":
                self._drain(self.deliverer, faults)
            else:
                self._flush_cli(faults)
            STATS["crashes_after_operation"] += 1
        except Crash:
            STATS["crashes_mid_operation"] += 1
            STATS["crash_points"] += 1
        self.iflow.faults.clear()
        self._power(mode)

    @rule()
    def restart(self) -> None:
        assert self.journal is not None
        self.journal.close()
        STATS["restarts"] += 1
        self._open()

    @rule(start=st.integers(1, 4), length=st.integers(1, 8), then_upload=st.booleans())
    def disk_full(self, start: int, length: int, then_upload: bool) -> None:
        """ENOSPC for a while; the door says "not stored"; when space returns, it works again."""
        first = self.fs.ops + start
        self.fs.fail_at = {first + i: errno.ENOSPC for i in range(length)}
        self._scan()
        if then_upload:
            self._drain(self.deliverer, [])
        self.fs.fail_at = {}
        STATS["disk_full_periods"] += 1
        assert self._scan() == "stored", "the agent must recover from a full disk without a restart"

    @rule(seconds=st.floats(0.5, 900))
    def time_passes(self, seconds: float) -> None:
        self.time.advance(seconds)
        self.clock.observe()

    @precondition(lambda self: not self.time.synced)
    @rule()
    def clock_synchronises(self) -> None:
        self.time.error_ns = 0  # NTP steps the wall clock to the truth
        self.time.synced = True
        STATS["clock_syncs"] += 1
        assert "synced" in self.clock.observe()

    @precondition(lambda self: self.time.synced)
    @rule(step=st.floats(-1.9, 1.9))
    def ntp_small_step(self, step: float) -> None:
        """A synchronised clock corrected by a small step (under the jump threshold),
        then a new anchor: earlier stamps are re-derived from it."""
        self.time.error_ns += int(step * 1e9)
        self.time.advance(601)
        STATS["small_steps"] += 1
        self.clock.observe()

    @precondition(lambda self: self.time.synced)
    @rule(behind=st.integers(60, 4 * 3600))
    def power_loss_without_rtc(self, behind: int) -> None:
        """The clock restarts unsynchronised and wrong, as on a Pi without RTC."""
        self.time.error_ns = behind * 10**9
        self.time.synced = False
        STATS["clock_losses"] += 1
        self.clock.observe()

    # --------------------------------------------------------- invariants

    def _journal_view(self) -> dict[str, Record]:
        j = Journal(D, segment_size=4, fs=self.fs)  # what a restart would see now
        try:
            assert not j.quarantined, f"a segment became unreadable: {j.quarantined}"
            seen: dict[str, Record] = {}
            for rec in j.records():
                assert rec.tag not in seen, f"scan {rec.tag} is in the journal twice"
                seen[rec.tag] = rec
            return seen
        finally:
            j.close()

    @invariant()
    def nothing_lost_nothing_invented_nothing_twice(self) -> None:
        journal = self._journal_view()
        server = self.iflow.tags()
        assert set(journal) <= self.attempted, "the journal holds a scan nobody made"
        assert set(server) <= self.attempted, "iFlow holds a scan nobody made"
        lost = self.acked - set(journal) - set(server)
        assert not lost, f"acknowledged scans lost: {sorted(lost)}"
        twice = [t for t, c in server.items() if c > 1]
        assert not twice, f"stored twice as new in iFlow: {twice}"
        wrongly = [t for t, r in journal.items() if r.state in ("delivered", "duplicate") and t not in server]
        assert not wrongly, f"marked delivered but not in iFlow: {wrongly}"
        assert not [t for t, r in journal.items() if r.state == "rejected"], "nothing here is rejectable"

    def teardown(self) -> None:
        try:
            # The faults stop: disk healthy, iFlow healthy, the clock synchronised.
            self.fs.fail_at, self.fs.crash_at = {}, None
            if self.journal is not None:
                self.journal.close()
            self.time.error_ns, self.time.synced = 0, True
            self._open()
            for _ in range(50):
                if not self.journal.summary()["pending"]:
                    break
                self._drain(self.deliverer, [])
            journal = self._journal_view()
            pending = [t for t, r in journal.items() if r.state == "pending"]
            assert not pending, f"did not drain once the faults stopped: {pending[:5]}"
            server = self.iflow.tags()
            assert self.acked <= set(server), "acknowledged scans never reached iFlow"
            assert max(server.values(), default=1) == 1
            STATS["acked"] += len(self.acked)
            STATS["delivered_total"] += len(server)
        finally:
            self.client_close()
            shutil.rmtree(self.tmp, ignore_errors=True)

    def client_close(self) -> None:
        self.client.close()


def test_model_based_durability_and_delivery():
    STATS.clear()
    run_state_machine_as_test(AgentModel, settings=settings(
        max_examples=scale(200, 2000), stateful_step_count=scale(40, 80), deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much], database=None))
    assert STATS["kills"] and STATS["power_cuts_torn"] and STATS["crashes_mid_operation"]
    assert STATS["fault:stored_then_reset"] and STATS["duplicates_resolved"]
    faults = {k.split(":", 1)[1]: v for k, v in STATS.items() if k.startswith("fault:")}
    record("model",
           examples=STATS["examples"], kills=STATS["kills"],
           power_cuts_durable=STATS["power_cuts_durable"], power_cuts_torn=STATS["power_cuts_torn"],
           crashes_mid_operation=STATS["crashes_mid_operation"], restarts=STATS["restarts"],
           flushes_from_second_process=STATS["cli_flushes"], disk_full_periods=STATS["disk_full_periods"],
           scans_refused_while_disk_full=STATS["scans_refused"], clock_syncs=STATS["clock_syncs"],
           requests=STATS["requests"], faults_injected=sum(v for k, v in faults.items() if k != "ok"),
           faults_by_kind={k: v for k, v in faults.items() if k != "ok"},
           duplicates_resolved_as_delivered=STATS["duplicates_resolved"],
           acknowledged_scans=STATS["acked"], acknowledged_lost=0, stored_twice_as_new=0,
           wrongly_marked_delivered=0, left_pending_after_faults_stop=0)
