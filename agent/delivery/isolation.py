"""Which failures may be a record's fault, and what the journal keeps of them.

A request iFlow refuses as a whole (a 500 from a value its database will not
take, a 422 from a too-long tag) carries no verdict per record: since scans go
oldest first, the one record behind it would come back in every later batch
and stop the door's delivery for good. The deliverer therefore splits such a
batch in halves until the records that fail alone are found
(:mod:`agent.delivery.passes`); these rules say when that is worth doing and
when a record has failed alone often enough to be set aside.

Only a failure that the request's content may cause is split: a 5xx, a 4xx
other than those about the caller or the transport (401/403: the token;
408/429: the server's load; 414/431: the URL's length, which has its own
halving), or a 2xx answer that cannot be read. Connection errors, timeouts,
a gateway's 502/503/504 (nginx with PHP down, Laravel's maintenance mode) and
any answer carrying ``Retry-After`` are an outage: nothing is split, nothing
is marked.

A record's failing alone counts only when iFlow is shown to work right then:
a request of the same pass that stores records succeeds after it. Nothing
weaker will do: an empty batch proves nothing (a controller whose database is
down answers ``[]`` to it and 500 to every real batch), nor does a 2xx
answer without a single matched result. Up to :data:`LONE_IN_A_ROW` records
may fail alone in a row while the pass looks for that proof; one more is an
outage. A lone bad record with nothing after it stays pending, its failure
shown, until the next scan is delivered after it. A record is
set aside (``failed``) only after :data:`FAIL_AFTER` such counts, in separate
passes, spread over at least ``spread_s`` (the Deliverer's ``isolate_after_s``,
5 minutes by default): a server's passing glitches, even frequent ones, do not
hit the same record alone that often for that long, while a poison record
fails alone in every pass. Until then the record is only skipped: each pass
delivers everything around it. Pure: no I/O.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

from agent.records import Record, State

__all__ = ["FAIL_AFTER", "LONE_IN_A_ROW", "UNANSWERED_LIMIT", "suspect", "alone_fields",
           "unanswered_fields", "failure_text"]

FAIL_AFTER = 3  # confirmed lone failures (separate passes) before a record is set aside
LONE_IN_A_ROW = 4  # lone failures in a row, without a success between, before it is an outage
UNANSWERED_LIMIT = 5  # answers without a result for a record before it is set aside

_NOT_CONTENT = frozenset({401, 403, 408, 429, 414, 431, 502, 503, 504})


class Failure(Protocol):
    """What is read of a :class:`agent.delivery.client.DeliveryError`."""

    kind: str
    status: int | None
    excerpt: str | None
    retry_after: float | None


def suspect(exc: Failure) -> bool:
    """Whether the batch's content may have caused this whole-request failure."""
    if exc.kind == "bad_answer":
        return True
    status = exc.status
    if exc.kind != "http" or status is None or exc.retry_after is not None:
        return False
    return status >= 400 and status not in _NOT_CONTENT


def failure_text(exc: Failure) -> str:
    """The failure in a few words, with the server's own: "HTTP 500: <excerpt>"."""
    head = f"HTTP {exc.status}" if exc.status is not None else str(exc)
    return f"{head}: {exc.excerpt}" if exc.excerpt else head


def _count(rec: Record, name: str) -> int:
    value = rec.extra.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _seconds_since(iso: Any, now: str) -> float:
    try:
        return (datetime.fromisoformat(now) - datetime.fromisoformat(iso)).total_seconds()
    except (TypeError, ValueError):
        return 0.0  # unreadable: the spread starts again


def alone_fields(rec: Record, exc: Failure, now: str, spread_s: float) -> dict[str, Any]:
    """The journal change for one confirmed lone failure of ``rec``: counted,
    and set aside as ``failed`` at the :data:`FAIL_AFTER`-th once the first
    was ``spread_s`` ago."""
    n = _count(rec, "alone_failures") + 1
    text = failure_text(exc)
    first = rec.extra.get("first_alone_at") if n > 1 else None
    fields: dict[str, Any] = {"alone_failures": n, "error": f"iFlow refused it alone: {text}",
                              "first_alone_at": first or now}
    if n >= FAIL_AFTER and first and _seconds_since(first, now) >= spread_s:
        fields.update(state=State.FAILED, done_at=now,
                      message=f"iFlow refused the request holding only this record {n} times: {text}")
    return fields


def unanswered_fields(rec: Record, message: str | None, now: str) -> dict[str, Any]:
    """The journal change for an answer that had no result for ``rec``: the
    reason kept, and set aside at the :data:`UNANSWERED_LIMIT`-th, so the same
    record is not resent forever."""
    n = _count(rec, "unanswered") + 1
    text = message or "iFlow returned no result for this record"
    fields: dict[str, Any] = {"unanswered": n, "error": text}
    if n >= UNANSWERED_LIMIT:
        fields.update(state=State.FAILED, done_at=now,
                      message=f"iFlow's answer held no result for this record {n} times: {text}")
    return fields
