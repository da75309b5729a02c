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
    """List the records set aside (rejected, failed), ``retry`` some (``all``:
    every one listed) or ``dismiss`` some (``dismiss_all``: every one listed);
    ``dismissed``: dismissed records are listed (and taken by ``all``) too.

    Dismissing all is its own field, never ``all``: a daemon older than the
    command ignores the fields it does not know and would otherwise retry."""

    retry: tuple[str, ...] = ()
    all: bool = False
    dismiss: tuple[str, ...] = ()
    dismiss_all: bool = False
    dismissed: bool = False
    cmd = "rejected"

    def to_wire(self) -> dict[str, Any]:
        return {"cmd": self.cmd, "retry": list(self.retry), "all": self.all, "dismiss": list(self.dismiss),
                "dismiss_all": self.dismiss_all, "dismissed": self.dismissed}


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
        # Every field but cmd may be absent: an older command sends only retry and all.
        ids = {}
        for name in ("retry", "dismiss"):
            value = request.get(name) or []
            if not isinstance(value, list):
                raise ValueError(f"{name} must be a list of ids")
            ids[name] = tuple(str(i) for i in value)
        return RejectedRequest(ids["retry"], bool(request.get("all")), ids["dismiss"],
                               bool(request.get("dismiss_all")), bool(request.get("dismissed")))
    if cmd == "insert":
        records = request.get("records", [])
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            raise ValueError("records must be a list of objects")
        return InsertRequest(tuple(records))
    if cmd == "scans":
        return ScansRequest(str(request.get("from", "")), str(request.get("to", "")))
    raise ValueError(f"unknown command {cmd!r}")
