"""The agent's state as Prometheus metrics, in the text exposition format that
node_exporter's textfile collector reads (and ``agent status --prometheus`` prints).

Pure: one function of the ``agent status --json`` answer (the same operation
answers the technician and Prometheus, :func:`agent.runtime.operations.status`),
the standard library only.

Rules kept here because node_exporter enforces them on the whole file:
no sample timestamps (it rejects a file that has any), each family's HELP and
TYPE once and before its samples, label values escaped. No label ever holds a
card number or a server's words: readers are named by the config, every other
label value comes from a fixed set below.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any, Iterable, Mapping

from agent.clock.reasons import HELD

__all__ = ["FILE_NAME", "METRICS", "render"]

FILE_NAME = "rfid_agent.prom"

#: The journal states, disjoint (``agent status`` counts duplicates among delivered).
STATES = ("pending", "delivered", "duplicate", "rejected", "failed")
SOURCES = ("ntp", "rtc", "https-date")
#: The recorder's results that are not a recorded scan, by their metric label.
NOT_RECORDED = (("repeat", "already"), ("invalid", "invalid"), ("error", "error"))

#: Every family the agent writes: (name, type, help). The README's table and the
#: alert rules' tests read this.
METRICS: tuple[tuple[str, str, str], ...] = (
    ("rfid_agent_build_info", "gauge", "Always 1; the agent's version is the label."),
    ("rfid_agent_daemon_running", "gauge", "1 when these figures come from the running daemon."),
    ("rfid_agent_start_time_seconds", "gauge", "When the daemon started, in Unix time."),
    ("rfid_agent_scans_total", "counter", "Scans recorded in the journal since the daemon started."),
    ("rfid_agent_scans_not_recorded_total", "counter",
     "Reads not recorded since the daemon started: repeat (the same card again within the debounce), "
     "invalid (not a card number in the tag format), error (the journal could not store it)."),
    ("rfid_agent_journal_records", "gauge", "Records in the journal by state."),
    ("rfid_agent_journal_unresolved_records", "gauge",
     "Rejected or failed records nobody has retried or dismissed yet (agent rejected)."),
    ("rfid_agent_journal_quarantined_files", "gauge", "Unreadable journal files moved aside."),
    ("rfid_agent_oldest_pending_age_seconds", "gauge",
     "Age of the oldest record not yet delivered, when this was written; 0 when none is pending."),
    ("rfid_agent_last_delivery_timestamp_seconds", "gauge",
     "When iFlow last took records since the daemon started, in Unix time."),
    ("rfid_agent_deliveries_total", "counter", "Records iFlow answered for since the daemon started, by outcome."),
    ("rfid_agent_delivery_errors_total", "counter",
     "Delivery passes stopped by a failure since the daemon started, by kind (journal: the outcome could "
     "not be written on the door; the others: a request to iFlow failed as a whole)."),
    ("rfid_agent_delivery_backoff_seconds", "gauge", "Seconds until delivery is tried again (0: not waiting)."),
    ("rfid_agent_iflow_token_refused", "gauge", "1 while iFlow refuses the device's access token."),
    ("rfid_agent_reader_up", "gauge", "1 when the reader is connected."),
    ("rfid_agent_reader_dropped_input_total", "counter",
     "Input the reader sent that is no card (line noise, bad frames, overlong lines) since the daemon started."),
    ("rfid_agent_clock_trusted", "gauge",
     "1 when the time sent is trusted; source says where it comes from (none: no trusted source)."),
    ("rfid_agent_held_scans", "gauge", "Scans held back (not sent), by reason."),
    ("rfid_agent_disk_free_bytes", "gauge", "Bytes free for the agent on the state directory's file system."),
    ("rfid_agent_disk_size_bytes", "gauge", "Size of the state directory's file system in bytes."),
)

_KIND = {name: kind for name, kind, _ in METRICS}


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _unix(iso: Any) -> float | None:
    if not isinstance(iso, str):
        return None
    try:
        when = datetime.fromisoformat(iso)
    except ValueError:
        return None
    return when.timestamp() if when.tzinfo is not None else None


def _count(value: Any) -> int:
    try:
        return max(0, int(value or 0))
    except (TypeError, ValueError):
        return 0


class _Text:
    """Families in :data:`METRICS` order, each with its HELP and TYPE."""

    def __init__(self) -> None:
        self.samples: dict[str, list[str]] = {}

    def add(self, name: str, value: float, labels: Iterable[tuple[str, str]] = ()) -> None:
        assert name in _KIND, name
        shown = ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels)
        self.samples.setdefault(name, []).append(f"{name}{{{shown}}} {_number(value)}" if shown
                                                 else f"{name} {_number(value)}")

    def text(self) -> str:
        out = []
        for name, kind, text in METRICS:
            if name in self.samples:
                help_text = text.replace("\\", "\\\\").replace("\n", "\\n")  # HELP escapes only these two
                out += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", *self.samples[name]]
        return "\n".join(out) + "\n"


def render(st: Mapping[str, Any], now: float, version: str) -> str:
    """The metrics for the status answer ``st`` (``agent status --json``), with
    ages taken at Unix time ``now``. The counters (``_total``) come only from a
    daemon's answer: a command without one has nothing to count since."""
    m = _Text()
    m.add("rfid_agent_build_info", 1, [("version", str(st.get("version") or version))])
    daemon = bool(st.get("daemon"))
    m.add("rfid_agent_daemon_running", daemon)
    start = _unix(st.get("started_at"))
    if daemon and start is not None:
        m.add("rfid_agent_start_time_seconds", start)
    _scans(m, st)
    delivered = _count(st.get("delivered"))
    duplicate = min(_count(st.get("duplicate")), delivered)
    by_state = {"pending": _count(st.get("pending")), "delivered": delivered - duplicate,
                "duplicate": duplicate, "rejected": _count(st.get("rejected")),
                "failed": _count(st.get("failed"))}
    for state in STATES:
        m.add("rfid_agent_journal_records", by_state[state], [("state", state)])
    m.add("rfid_agent_journal_unresolved_records", _count(st.get("unresolved")))
    m.add("rfid_agent_journal_quarantined_files", len(st.get("quarantined") or ()))
    oldest = _unix(st.get("oldest_pending"))
    m.add("rfid_agent_oldest_pending_age_seconds",
          round(max(0.0, now - oldest), 3) if oldest is not None and by_state["pending"] else 0)
    last = _unix(st.get("last_delivery"))
    if last is not None:
        m.add("rfid_agent_last_delivery_timestamp_seconds", last)
    for name, key in (("rfid_agent_deliveries_total", "deliveries"),
                      ("rfid_agent_delivery_errors_total", "delivery_errors")):
        counts = st.get(key)
        if daemon and isinstance(counts, Mapping):
            label = "outcome" if key == "deliveries" else "kind"
            for kind in sorted(counts):  # the deliverer counts every kind from 0
                m.add(name, _count(counts.get(kind)), [(label, str(kind))])
    m.add("rfid_agent_delivery_backoff_seconds", max(0.0, float(st.get("backoff_seconds") or 0.0)))
    m.add("rfid_agent_iflow_token_refused", bool(st.get("auth_refused")))
    for r in st.get("readers") or ():  # _Text groups each family's samples
        reader = [("reader", str(r.get("name")))]
        m.add("rfid_agent_reader_up", bool(r.get("connected")), reader)
        if daemon and "dropped" in r:
            m.add("rfid_agent_reader_dropped_input_total", _count(r.get("dropped")), reader)
    source = st.get("time_source")
    m.add("rfid_agent_clock_trusted", source is not None,
          [("source", source if source in SOURCES else "none" if source is None else "other")])
    held = st.get("held") or {}
    for reason in (*HELD, *sorted(set(held) - set(HELD))):
        m.add("rfid_agent_held_scans", _count(held.get(reason)), [("reason", str(reason))])
    for key in ("disk_free_bytes", "disk_size_bytes"):
        if isinstance(st.get(key), int):
            m.add(f"rfid_agent_{key}", st[key])
    return m.text()


def _scans(m: _Text, st: Mapping[str, Any]) -> None:
    by_reader = st.get("scans_by_reader")
    if not st.get("daemon") or not isinstance(by_reader, Mapping):
        return
    for reader in sorted(by_reader):
        m.add("rfid_agent_scans_total", _count(by_reader[reader].get("stored")), [("reader", str(reader))])
        for label, key in NOT_RECORDED:
            m.add("rfid_agent_scans_not_recorded_total", _count(by_reader[reader].get(key)),
                  [("reader", str(reader)), ("reason", label)])
