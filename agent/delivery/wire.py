"""iFlow's ``store_attendances`` wire format: what is sent, and what an answer means.

Pure (no I/O, no HTTP library): :class:`Item` and :func:`wire_text` are the
request's records; :func:`classify` turns iFlow's answer bytes into one
:class:`Outcome` per sent record, or raises :class:`AnswerError` when the
answer as a whole cannot be trusted (then nothing counts as delivered).
:mod:`agent.delivery.client` sends the requests. One file because these rules
are read together: what an answer is, which result is whose, what it says.

See /work/shared/api/iflow-store-attendances.md for the contract ("returns one
result per sent record, in the same order, echoing date/time/rfidTag; match on
those fields; never assume a record was stored unless its own result says
so"). Decisions taken where it is silent:

**The answer as a whole.** It must be a JSON list of objects, one result per
sent record; anything else means "nothing delivered" and the text carries the
server's own words: a 200 that is an object reads e.g. ``not a list (JSON
object): message: "Unauthenticated."`` (its ``message``, ``error``,
``errors``, ``success``, ``status``... members, redacted). An object whose
``data`` member is that list (a Laravel API resource) is read as the list,
unless the object itself says it failed (``success: false``, a ``status`` of
"error"/"fail", a non-empty ``error``/``errors``).

**Which result is whose.** A result belongs to a record when it echoes the
record's date, time and rfidTag, read as a PHP/Laravel server may write them:

* rfidTag as a string or a JSON integer, trimmed; when both are all digits
  they are compared by value (a number loses leading zeros: ``0012`` = ``12``);
  ``null`` is the empty tag (Laravel turns "" into null). Floats, objects and
  booleans never match.
* date as ``YYYY-MM-DD``, ``YYYY/MM/DD``, ``YYYY.MM.DD``, ``YYYYMMDD``, or
  day first as ``DD.MM.YYYY``, ``DD/MM/YYYY``, ``DD-MM-YYYY`` (European order:
  iFlow is Romanian; never month first), with or without leading zeros, and
  optionally followed by a time (``2026-12-01 00:00:00``,
  ``2026-12-01T08:05:00.000000Z``): only the date as written counts, no time
  zone is applied.
* time as ``H:MM:SS`` or ``HH:MM:SS`` (fractions and a leading date ignored;
  a time with a zone suffix never matches: ``04:05:00Z`` may be the UTC form
  of another record's local time), or without seconds: ``8:05`` matches a record of
  08:05 with any seconds.
* The exact echo is the fast path. Otherwise results with seconds are
  matched first, those without seconds (``8:05`` for any 08:05:SS) after
  them; at each step result *i* belongs to record *i* when it matches it as
  above, and the rest are matched by the normalised (date, time, rfidTag),
  records in order, results with identical keys consumed in order (so two
  records of a batch that collide under the looser key take the looser
  results in order).
* A record left without a result stays pending, with the message "iFlow's
  answer has no result for this record (answer starts: '...')": the caller
  shows it and backs off; it is never counted as delivered.

**What a result says.**

* ``error_*`` and ``errorMsg`` values are errors only when they say something:
  a string non-empty after trimming (other than "0"), a number other than 0
  (``error_code: 422`` is the error "422"), ``true``, or a list/object holding
  such a value (its texts joined). ``""``, ``"0"``, ``0``, ``null``, ``false``
  and empty lists/objects are not errors, so ``"error_code": 0`` beside empty
  errors is delivered.
* A non-empty ``errorMsg`` rejects the record with that text, even when every
  ``error_*`` is empty.
* A result must carry at least one ``error_*`` field to prove storage (the
  contract's OK example does); one with only ``errorMsg: ""`` (what we send,
  so also what a server echoing the request back would answer) stays pending
  with a message saying so.
* A duplicate (``error_check_in_out`` containing "duplicat", any case, with or
  without diacritics) means "already in iFlow": the caller may treat it as
  delivered. If another error is non-empty too, the record is rejected (kept
  for the technician) rather than silently counted.
* Every message and excerpt goes through :func:`agent.redact.redact`.
"""

from __future__ import annotations

import json
import re
import time
import unicodedata
from collections import defaultdict, deque
from datetime import UTC
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
    "answer_words",
    "parse_retry_after",
    "reason_of",
]

_MAX_MESSAGE = 500  # chars kept of one iFlow error text
_EXCERPT = 200  # chars of an unusable answer shown to the technician
_WORDS = 300  # chars of the server's own words in a whole-answer failure


class Item(NamedTuple):
    """One record to send."""

    key: str  # journal record id, opaque here
    tag: str  # rfidTag
    date: str  # "YYYY-MM-DD", local wall clock
    time: str  # "HH:MM:SS", local wall clock


class Outcome(NamedTuple):
    key: str
    state: State  # what the journal records: delivered, duplicate, rejected, or still pending
    message: str | None  # iFlow's error text, or why a record is still pending; None when delivered


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

    ``reason`` is short ("not JSON", "truncated JSON", ...; for an object, with
    the server's own words); ``excerpt`` is the start of the body, redacted,
    for the technician.
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


# -- the server's own words ------------------------------------------------------

_WORD_KEYS = ("message", "error", "errors", "error_description", "detail", "msg", "success", "status", "code")
_TITLE = re.compile(rb"<title[^>]*>([^<]{1,200})</title>", re.IGNORECASE)


def _short(value: Any) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False)
    except Exception:  # noqa: BLE001 - nested too deeply, a huge number
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 120 else text[:119] + "…"


def _words_of(data: dict[Any, Any]) -> str:
    parts = [f"{key}: {_short(data[key])}" for key in _WORD_KEYS if key in data][:3]
    if not parts:
        parts = ["members " + ", ".join(_short(str(k)) for k in list(data)[:6])] if data else ["an empty object"]
    text = " ".join(redact("; ".join(parts)).split())
    return text if len(text) <= _WORDS else text[: _WORDS - 1] + "…"


def answer_words(body: bytes) -> str | None:
    """What a failed answer says in the server's own words: a JSON object's
    message/error members, or an HTML page's title; None when neither."""
    raw = bytes(body[:65536])
    data, reason = _parse(raw)
    if reason is None:
        return _words_of(data) if isinstance(data, dict) else None
    title = _TITLE.search(raw)
    if title is None:
        return None
    return redact(" ".join(title[1].decode("utf-8", "replace").split()))[:_WORDS] or None


def _says_failure(data: dict[Any, Any]) -> bool:
    status = data.get("status")
    return (data.get("success") is False or (isinstance(status, str) and status.lower() in ("error", "fail", "failed"))
            or bool(_text(data.get("error"))) or bool(_text(data.get("errors"))))


# -- which result is whose -----------------------------------------------------

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


_SUFFIX = r"(?:[ T][0-9].*)?"  # a time after the date of a datetime
_YMD = re.compile(r"([0-9]{4})([-/.])([0-9]{1,2})\2([0-9]{1,2})" + _SUFFIX, re.DOTALL)
_DMY = re.compile(r"([0-9]{1,2})([-/.])([0-9]{1,2})\2([0-9]{4})" + _SUFFIX, re.DOTALL)
_COMPACT = re.compile(r"([0-9]{4})([0-9]{2})([0-9]{2})")
# No zone designator: a time written in UTC ("...T04:05:00Z") is another
# instant than the local wall clock sent, and must never match a record by it.
_HMS = re.compile(r"(?:[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}[ T])?([0-9]{1,2}):([0-9]{2})(?::([0-9]{2})(?:\.[0-9]+)?)?")


def _stripped(value: Any) -> str | None:
    text = _field(value)
    return None if text is None else text.strip()


def _date_key(value: Any) -> Any:
    """(year, month, day), or the text itself when unreadable."""
    text = _stripped(value)
    if text is None:
        return None
    m = _YMD.fullmatch(text)
    if m:
        return int(m[1]), int(m[3]), int(m[4])
    m = _DMY.fullmatch(text)
    if m:
        return int(m[4]), int(m[3]), int(m[1])
    m = _COMPACT.fullmatch(text)
    return (int(m[1]), int(m[2]), int(m[3])) if m else text


def _time_key(value: Any) -> Any:
    """(hour, minute, second or None), or the text itself when unreadable."""
    text = _stripped(value)
    m = None if text is None else _HMS.fullmatch(text)
    if m is None:
        return text
    return int(m[1]), int(m[2]), None if m[3] is None else int(m[3])


def _tag_key(value: Any) -> str | None:
    if value is None:
        return ""  # Laravel's ConvertEmptyStringsToNull: the empty tag
    text = _stripped(value)
    if text is None:
        return None
    if text.isascii() and text.isdigit():
        return text.lstrip("0") or "0"
    return text


def _key(date: Any, time_: Any, tag: Any) -> tuple[Any, Any, Any]:
    return _date_key(date), _time_key(time_), _tag_key(tag)


def _loose(key: tuple[Any, Any, Any]) -> tuple[Any, Any, Any] | None:
    """The key without seconds, when it has a readable time."""
    date, hms, tag = key
    return (date, hms[:2], tag) if isinstance(hms, tuple) else None


def _assign(items: list[Item], data: list[dict[str, Any]]) -> list[int | None]:
    """For each item, the index of its result (normalised echo), or None.

    Precise keys before loose ones (a result without seconds); at each level
    result i for record i first, then by key, identical keys in order."""
    records = [_key(it.date, it.time, it.tag) for it in items]
    results = [_key(r.get("date"), r.get("time"), r.get("rfidTag")) for r in data]
    taken: list[int | None] = [None] * len(items)
    used = [False] * len(data)
    for loose in (False, True):
        def key(k: tuple[Any, Any, Any], of_result: bool) -> Any:
            if None in k:
                return None
            hms = k[1]
            short = isinstance(hms, tuple) and hms[2] is None
            if of_result and short != loose:
                return None  # not a result of this level
            return _loose(k) if loose else k

        rkeys = [key(k, True) for k in results]
        for i, record in enumerate(records):  # first in order
            if taken[i] is None and i < len(results) and not used[i] and rkeys[i] is not None and rkeys[i] == key(record, False):
                taken[i], used[i] = i, True
        waiting: dict[Any, deque[int]] = defaultdict(deque)
        for j, k in enumerate(rkeys):
            if k is not None and not used[j]:
                waiting[k].append(j)
        for i, record in enumerate(records):  # then by key, identical keys in order
            if taken[i] is None:
                queue = waiting.get(key(record, False))
                if queue:
                    taken[i] = queue.popleft()
                    used[taken[i]] = True
    return taken


# -- what a result says ----------------------------------------------------------

def _text(value: Any, depth: int = 0) -> str:
    """Error field value as text; "" means no error."""
    if isinstance(value, str):
        text = value.strip()
        return "" if text == "0" else text
    if value is None or value is False:
        return ""
    if value is True:
        return "true"
    if isinstance(value, (int, float)):
        try:
            return "" if value == 0 else str(value)[:_MAX_MESSAGE]
        except ValueError:  # an integer too long to print
            return "<number>"
    if isinstance(value, (list, dict)):
        if depth > 3:
            return "<nested>" if value else ""
        pairs = value.items() if isinstance(value, dict) else ((None, v) for v in value)
        texts = []
        for name, inner in pairs:
            text = _text(inner, depth + 1)
            if text:
                texts.append(text if name is None else f"{name}: {text}")
        return "; ".join(texts)[:_MAX_MESSAGE]
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
    for name, value in result.items():  # JSON member names are always str
        if name.startswith("error_"):
            present = True
        elif name != "errorMsg":
            continue
        if value != "":  # the usual empty field costs no call
            text = _text(value)
            if text:
                errors.append((name, text))
    if not errors:
        if present:
            return Outcome(key, State.DELIVERED, None)
        return Outcome(key, State.PENDING, "iFlow's result for this record has no error_* field, so it does "
                                           f"not prove the record was stored (result: {excerpt(_short(result).encode())!r})")
    message = redact("; ".join(f"{name}: {text}" for name, text in errors))
    if len(message) > _MAX_MESSAGE:
        message = message[: _MAX_MESSAGE - 1] + "…"
    # the duplicate text counts wherever a server puts it (errorMsg too): the record is in iFlow
    if all(name in ("error_check_in_out", "errorMsg") and is_duplicate_text(text) for name, text in errors):
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
        if isinstance(data, dict) and isinstance(data.get("data"), list) and not _says_failure(data):
            data = data["data"]  # a Laravel API resource's envelope
        if not isinstance(data, list):
            if isinstance(data, dict):
                reason = f"not a list (JSON object): {_words_of(data)}"
            else:
                reason = f"not a list (JSON {type(data).__name__})"
        elif len(data) != len(items):
            reason = f"list of {len(data)} results for {len(items)} records"
        else:
            bad = next((i for i, r in enumerate(data) if not isinstance(r, dict)), None)
            if bad is not None:
                reason = f"result {bad + 1} is not an object"
    if reason is not None:
        raise AnswerError(reason, body)

    if [(it.date, it.time, it.tag) for it in items] == [_triple(r) for r in data]:
        return [_outcome(it.key, r) for it, r in zip(items, data)]
    missing: str | None = None
    outcomes = []
    for it, index in zip(items, _assign(items, data)):
        if index is not None:
            outcomes.append(_outcome(it.key, data[index]))
            continue
        if missing is None:
            missing = f"iFlow's answer has no result for this record (answer starts: {excerpt(body)[:120]!r})"
        outcomes.append(Outcome(it.key, State.PENDING, missing))
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
            when = when.replace(tzinfo=UTC)
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
