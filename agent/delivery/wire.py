"""iFlow's ``store_attendances`` wire format: what is sent, and what an answer means.

Pure (no I/O, no HTTP library): :class:`Item` and :func:`wire_text` are the
request's records; :func:`classify` turns iFlow's answer bytes into one
:class:`Outcome` per sent record, or raises :class:`AnswerError` when the
answer as a whole cannot be trusted (then nothing counts as delivered).
:mod:`agent.delivery.client` sends the requests.

See /work/shared/api/iflow-store-attendances.md for the contract.  Decisions
taken where it is silent:

* A result counts only when it echoes its record's (date, time, rfidTag) and
  carries at least one ``error_*`` field; otherwise the record stays pending.
* A duplicate (``error_check_in_out`` containing "duplicat", any case, with or
  without diacritics) means "already in iFlow": the caller may treat it as
  delivered.  If another ``error_*`` field is non-empty too, the record is
  rejected (kept for the technician) rather than silently counted.
* ``rfidTag``/``date``/``time`` echoed as JSON integers match their string
  form; anything else (null, float, object) never matches.
* Every message and excerpt goes through :func:`agent.redact.redact`.
"""

from __future__ import annotations

import json
import re
import time
import unicodedata
from collections import defaultdict, deque
from datetime import timezone
from typing import Any, NamedTuple

from agent.errors import DeliveryFailure
from agent.records import State
from agent.redact import redact

__all__ = [
    "Item",
    "Outcome",
    "AnswerError",
    "wire",
    "wire_text",
    "classify",
    "parse_retry_after",
    "reason_of",
]

_MAX_MESSAGE = 500  # chars kept of one iFlow error text
_EXCERPT = 200  # chars of an unusable answer shown to the technician


class Item(NamedTuple):
    """One record to send."""

    key: str  # journal record id, opaque here
    tag: str  # rfidTag
    date: str  # "YYYY-MM-DD", local wall clock
    time: str  # "HH:MM:SS", local wall clock


class Outcome(NamedTuple):
    key: str
    state: State  # what the journal records: delivered, duplicate, rejected, or still pending
    message: str | None  # iFlow's error text for rejected/duplicate, else None


def wire(item: Item) -> dict[str, str]:
    """The JSON object iFlow expects for one scan."""
    return {"date": item.date, "time": item.time, "rfidTag": item.tag, "errorMsg": ""}


def _json_text(value: str) -> str:
    """``json.dumps(value)`` without the encoder's machinery for the usual plain text."""
    if value.isascii() and value.isprintable() and '"' not in value and "\\" not in value:
        return f'"{value}"'
    return json.dumps(value)


def wire_text(item: Item) -> str:
    """``json.dumps(wire(item), separators=(",", ":"))``, faster (one per record sent)."""
    return (f'{{"date":{_json_text(item.date)},"time":{_json_text(item.time)},'
            f'"rfidTag":{_json_text(item.tag)},"errorMsg":""}}')


def excerpt(body: bytes) -> str:
    """The start of an answer for a person: redacted, one line, printable, short."""
    # Redact a generous prefix first so a secret cut at the boundary cannot survive.
    text = redact(bytes(body[: _EXCERPT * 20]).decode("utf-8", "replace"))
    text = " ".join(text.split())
    text = "".join(c if c.isprintable() else "?" for c in text[:_EXCERPT])
    return text


class AnswerError(DeliveryFailure, ValueError):
    """The answer as a whole is unusable: nothing in the batch counts as delivered.

    ``reason`` is short ("not JSON", "truncated JSON", ...); ``excerpt`` is the
    start of the body, redacted, for the technician.
    """

    def __init__(self, reason: str, body: bytes = b"") -> None:
        self.reason = reason
        self.excerpt = excerpt(body)
        super().__init__(reason)

    def __str__(self) -> str:
        if self.excerpt:
            return f"{self.reason} (answer starts: {self.excerpt!r})"
        return self.reason

    def __repr__(self) -> str:
        return f"AnswerError({self.reason!r}, excerpt={self.excerpt!r})"


_NO_VALUE = object()


def _parse(body: bytes) -> tuple[Any, str | None]:
    """(value, None) or (_NO_VALUE, reason). Never raises."""
    raw = bytes(body)
    head = raw[:64].lstrip(b" \t\r\n").removeprefix(b"\xef\xbb\xbf").lstrip(b" \t\r\n")
    if not raw.strip():
        return _NO_VALUE, "empty answer"
    if head[:1] == b"<":
        return _NO_VALUE, "HTML page (captive portal?)"
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return _NO_VALUE, "not JSON (invalid UTF-8)"
    try:
        return json.loads(text), None
    except json.JSONDecodeError as e:
        if e.pos >= len(text.rstrip()) or e.msg.startswith("Unterminated string"):
            return _NO_VALUE, "truncated JSON"
        return _NO_VALUE, "not JSON"
    except RecursionError:
        return _NO_VALUE, "not JSON (nested too deeply)"
    except ValueError:  # e.g. integers over sys.get_int_max_str_digits()
        return _NO_VALUE, "not JSON (number too long)"
    except Exception:  # anything else the parser may raise
        return _NO_VALUE, "not JSON"


def _field(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return str(value)
        except ValueError:
            return None
    return None


def _triple(result: dict[str, Any]) -> tuple[str | None, str | None, str | None]:
    return (_field(result.get("date")), _field(result.get("time")), _field(result.get("rfidTag")))


def _text(value: Any) -> str:
    """Error field value as text; "" means no error."""
    if value is None or value is False:
        return ""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, (list, dict)) and not value:
        return ""
    try:
        return json.dumps(value, ensure_ascii=False)[:_MAX_MESSAGE]
    except Exception:
        return f"<{type(value).__name__}>"


def _folded(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def is_duplicate_text(text: str) -> bool:
    """True for iFlow's "Nu se poate adăuga - prezență duplicată: N" in any spelling."""
    return "duplicat" in _folded(text)


def _outcome(key: str, result: dict[str, Any]) -> Outcome:
    present = False
    errors: list[tuple[str, str]] = []
    for name, value in result.items():
        if not isinstance(name, str) or not name.startswith("error_"):
            continue
        present = True
        text = _text(value)
        if text:
            errors.append((name, text))
    if not present:  # no verdict of its own: not proven stored
        return Outcome(key, State.PENDING, None)
    if not errors:
        return Outcome(key, State.DELIVERED, None)
    message = redact("; ".join(f"{name}: {text}" for name, text in errors))
    if len(message) > _MAX_MESSAGE:
        message = message[: _MAX_MESSAGE - 1] + "…"
    if all(name == "error_check_in_out" and is_duplicate_text(text) for name, text in errors):
        return Outcome(key, State.DUPLICATE, message)
    return Outcome(key, State.REJECTED, message)


def classify(items: list[Item], body: bytes) -> list[Outcome]:
    """One Outcome per item, in item order, from iFlow's answer ``body``.

    Raises :class:`AnswerError` (and nothing else) when the answer is not a
    JSON list of objects with exactly one result per sent record.
    """
    if isinstance(body, str):
        body = body.encode("utf-8", "replace")
    data, reason = _parse(body)
    if reason is None:
        if not isinstance(data, list):
            kind = "object" if isinstance(data, dict) else type(data).__name__
            reason = f"not a list (JSON {kind})"
        elif len(data) != len(items):
            reason = f"list of {len(data)} results for {len(items)} records"
        else:
            bad = next((i for i, r in enumerate(data) if not isinstance(r, dict)), None)
            if bad is not None:
                reason = f"result {bad + 1} is not an object"
    if reason is not None:
        raise AnswerError(reason, body)

    keys = [(it.date, it.time, it.tag) for it in items]
    triples = [_triple(r) for r in data]
    if keys == triples:
        return [_outcome(it.key, r) for it, r in zip(items, data)]

    # Out of order or partly foreign: match by (date, time, rfidTag), identical
    # triples consumed in order.  Items left without a result stay pending.
    waiting: dict[tuple[Any, Any, Any], deque[int]] = defaultdict(deque)
    for index, triple in enumerate(triples):
        waiting[triple].append(index)
    outcomes = []
    for it, key in zip(items, keys):
        queue = waiting.get(key)
        if queue:
            outcomes.append(_outcome(it.key, data[queue.popleft()]))
        else:
            outcomes.append(Outcome(it.key, State.PENDING, None))
    return outcomes


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After value (delta-seconds or HTTP-date)."""
    if value is None:
        return None
    v = value.strip()
    if re.fullmatch(r"[0-9]{1,10}", v):
        return float(int(v))
    try:
        import email.utils  # ~13 ms of imports, paid only when an answer carries an HTTP-date

        when = email.utils.parsedate_to_datetime(v)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when is None:
        return None
    try:
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        delta = when.timestamp() - (time.time() if now is None else now)
    except (OverflowError, ValueError, OSError):
        return None
    return max(0.0, delta)


def reason_of(message: str | None, tag: str) -> str:
    """Group iFlow's messages by reason: drop the card number or id it ends with."""
    text = (message or "unknown reason").strip()
    if tag and text.endswith(tag):
        text = text[: -len(tag)].rstrip(" :")
    return re.sub(r":\s*\d+$", "", text)
