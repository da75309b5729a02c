"""The typed requests of the technician's operations, as they cross the socket.

A request travels as a JSON object (``{"cmd": "status"}``, ``{"cmd": "flush",
"dry_run": ..., "release_unsynced": ...}``, ...); the field names are public
interface. Light on purpose (no dataclasses, nothing of the journal): `agent
status` with a daemon running imports only this, the config and the socket.
"""

from __future__ import annotations

from typing import Any, NamedTuple


class StatusRequest(NamedTuple):
    cmd = "status"

    def to_wire(self) -> dict[str, Any]:
        return {"cmd": self.cmd}


class FlushRequest(NamedTuple):
    dry_run: bool = False
    release_unsynced: bool = False
    cmd = "flush"

    def to_wire(self) -> dict[str, Any]:
        return {"cmd": self.cmd, **self._asdict()}


class RejectedRequest(NamedTuple):
    retry: tuple[str, ...] = ()
    all: bool = False
    cmd = "rejected"

    def to_wire(self) -> dict[str, Any]:
        return {"cmd": self.cmd, "retry": list(self.retry), "all": self.all}


class InsertRequest(NamedTuple):
    """Punches from another system (CrossChex): each needs ``tag`` and
    ``captured_at`` (UTC ISO 8601); ``external_id`` makes a second insert a no-op."""

    records: tuple[dict, ...] = ()
    cmd = "insert"

    def to_wire(self) -> dict[str, Any]:
        return {"cmd": self.cmd, "records": list(self.records)}


class ScansRequest(NamedTuple):
    """Local scans whose true time lies in [from, to] (ISO 8601 with offset)."""

    begin: str = ""
    end: str = ""
    cmd = "scans"

    def to_wire(self) -> dict[str, Any]:
        return {"cmd": self.cmd, "from": self.begin, "to": self.end}


Request = StatusRequest | FlushRequest | RejectedRequest | InsertRequest | ScansRequest


def from_wire(request: dict) -> Request:
    """A socket request -> its typed form (ValueError for anything else)."""
    cmd = request.get("cmd")
    if cmd == "status":
        return StatusRequest()
    if cmd == "flush":
        return FlushRequest(bool(request.get("dry_run")), bool(request.get("release_unsynced")))
    if cmd == "rejected":
        retry = request.get("retry") or []
        if not isinstance(retry, list):
            raise ValueError("retry must be a list of ids")
        return RejectedRequest(tuple(str(i) for i in retry), bool(request.get("all")))
    if cmd == "insert":
        records = request.get("records", [])
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            raise ValueError("records must be a list of objects")
        return InsertRequest(tuple(records))
    if cmd == "scans":
        return ScansRequest(str(request.get("from", "")), str(request.get("to", "")))
    raise ValueError(f"unknown command {cmd!r}")
