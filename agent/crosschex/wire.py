"""The CrossChex Cloud wire format: answer envelopes, records, tokens, errors.

Contract: /work/shared/api/crosschex-cloud.md.  Answers come as
``{"header", "payload"}`` or wrapped as ``{"code", "data": {"header",
"payload"}}``; server errors are an exception envelope (``header.name ==
"Exception"``, ``payload.type``).

Pure (no I/O; what the fuzz tests drive): every function takes bytes or
decoded JSON and returns values or raises :class:`CrossChexError` with a
one-line, redacted message and a ``kind``; nothing else escapes (malformed
answers, HTML, huge or truncated JSON, wrong types included).  A token seen
in an answer is registered with :mod:`agent.redact` at once.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import NoReturn

from agent import redact
from agent.errors import CrossChexFailure

__all__ = [
    "CrossChexError",
    "CcRecord",
    "Refusal",
    "bad_answer",
    "decode_envelope",
    "iso_utc",
    "raise_for_exception",
    "parse_iso_aware",
    "parse_record",
    "parse_record_page",
    "parse_records_answer",
    "parse_token_payload",
]

log = logging.getLogger("agent.crosschex")

KINDS = frozenset({"auth", "rate_limited", "bad_answer", "network", "http", "token"})
MAX_PAGE_COUNT = 1_000_000
#: Lifetime assumed when a token answer carries no usable ``expires``.
FALLBACK_TOKEN_LIFETIME = timedelta(hours=1)
_MSG_LIMIT = 300


# --------------------------------------------------------------------------- errors


def _one_line(text: str, limit: int = _MSG_LIMIT) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class CrossChexError(CrossChexFailure):
    """A CrossChex call failed.  ``kind`` is one of
    ``auth | rate_limited | bad_answer | network | http | token``;
    the message is one redacted line."""

    def __init__(self, kind: str, message: str) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown CrossChexError kind {kind!r}")
        self.kind = kind
        self.message = _one_line(redact.redact(message))
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"CrossChexError(kind={self.kind!r}, message={self.message!r})"


class Refusal(CrossChexError):
    """The server answered with an exception envelope (``server_type``)."""

    def __init__(self, kind: str, message: str, server_type: str) -> None:
        super().__init__(kind, message)
        self.server_type = server_type


def bad_answer(reason: str) -> NoReturn:
    """Raise CrossChexError(bad_answer) for a malformed answer."""
    raise CrossChexError("bad_answer", f"malformed CrossChex Cloud answer: {reason}") from None


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class CcRecord:
    """One attendance record from CrossChex Cloud.

    ``raw`` is the original list element; it is left out of equality, hashing
    and repr (records stay hashable and logs stay short)."""

    checktime: datetime  # aware, UTC
    workno: str
    first_name: str
    last_name: str
    device_serial: str
    device_name: str
    checktype: int | None
    raw: dict = field(compare=False, repr=False)


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    return {bool: "boolean", int: "number", float: "number", str: "string", list: "array", dict: "object"}.get(
        type(value), type(value).__name__
    )


def parse_iso_aware(value: object, where: str) -> datetime:
    """ISO 8601 with an offset -> aware UTC datetime; anything else is a bad answer
    (a time without an offset is never guessed)."""
    if not isinstance(value, str):
        bad_answer(f"{where} is {_type_name(value)}, expected an ISO 8601 string")
    if len(value) > 64:
        bad_answer(f"{where} is too long to be a timestamp")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        bad_answer(f"{where} {value!r} is not an ISO 8601 timestamp")
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        bad_answer(f"{where} {value!r} has no UTC offset")
    try:
        return parsed.astimezone(UTC)
    except (OverflowError, ValueError):
        bad_answer(f"{where} {value!r} is out of range")


def _text(value: object, where: str) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    bad_answer(f"{where} is {_type_name(value)}, expected a string")


def _digits(value: object, max_len: int) -> int | None:
    """An ASCII decimal string of at most ``max_len`` digits -> int, else None."""
    if isinstance(value, str):
        v = value.strip()
        if v and len(v) <= max_len and v.isascii() and v.isdigit():
            return int(v)
    return None


def _obj(value: object, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        bad_answer(f"{where} is {_type_name(value)}, expected an object")
    return value


def parse_record(item: object, where: str = "record") -> CcRecord:
    """One element of ``payload.list`` -> :class:`CcRecord`."""
    if not isinstance(item, dict):
        bad_answer(f"{where} is {_type_name(item)}, expected an object")
    checktime = parse_iso_aware(item.get("checktime"), f"{where}.checktime")
    employee = _obj(item.get("employee"), f"{where}.employee")
    device = _obj(item.get("device"), f"{where}.device")
    ct = item.get("checktype")
    checktype: int | None
    if ct is None:
        checktype = None
    elif isinstance(ct, int) and not isinstance(ct, bool):
        checktype = ct
    elif _digits(ct, 12) is not None:
        checktype = _digits(ct, 12)
    elif isinstance(ct, str) and not ct.strip():
        checktype = None
    else:
        bad_answer(f"{where}.checktype is {_type_name(ct)}, expected a number")
    return CcRecord(
        checktime=checktime,
        workno=_text(employee.get("workno"), f"{where}.employee.workno").strip(),
        first_name=_text(employee.get("first_name"), f"{where}.employee.first_name"),
        last_name=_text(employee.get("last_name"), f"{where}.employee.last_name"),
        device_serial=_text(device.get("serial_number"), f"{where}.device.serial_number"),
        device_name=_text(device.get("name"), f"{where}.device.name"),
        checktype=checktype,
        raw=item,
    )


def parse_record_page(payload: object, page: int | None = None) -> tuple[list[CcRecord], int]:
    """``payload`` of an attendance.record/getrecord answer -> (records, pageCount)."""
    if not isinstance(payload, dict):
        bad_answer(f"payload is {_type_name(payload)}, expected an object")
    where = f"page {page}: " if page is not None else ""
    if "pageCount" not in payload:
        bad_answer(f"{where}'pageCount' is missing")
    page_count = payload["pageCount"]
    if isinstance(page_count, str) and _digits(page_count, 7) is not None:
        page_count = _digits(page_count, 7)
    if not isinstance(page_count, int) or isinstance(page_count, bool):
        bad_answer(f"{where}'pageCount' is {_type_name(page_count)}, expected a whole number")
    if not 0 <= page_count <= MAX_PAGE_COUNT:
        bad_answer(f"{where}'pageCount' {page_count} is out of range")
    if "list" not in payload:
        bad_answer(f"{where}'list' is missing")
    items = payload["list"]
    if not isinstance(items, list):
        bad_answer(f"{where}'list' is {_type_name(items)}, expected an array")
    answered_page = payload.get("page")
    if page is not None and answered_page is not None:
        try:
            same = int(answered_page) == page  # "2" and 2 both fine
        except (TypeError, ValueError, OverflowError):
            same = False
        if isinstance(answered_page, bool) or not same:
            bad_answer(f"asked for page {page} but the answer is page {answered_page!r:.20}")
    records = [parse_record(item, f"{where}list[{i}]") for i, item in enumerate(items)]
    return records, page_count


def parse_token_payload(payload: object, now: datetime) -> tuple[str, datetime]:
    """``payload`` of an authorize.token answer -> (token, expires UTC).

    A missing or unreadable ``expires`` is not fatal: the token is assumed to
    live :data:`FALLBACK_TOKEN_LIFETIME` (TOKEN_EXPIRES handling covers the rest)."""
    if not isinstance(payload, dict):
        bad_answer(f"payload is {_type_name(payload)}, expected an object")
    token = payload.get("token")
    if not isinstance(token, str) or not token.strip():
        bad_answer("the token answer has no 'token' string")
    if len(token) > 16384 or any(c.isspace() for c in token):
        bad_answer("the token answer's 'token' is not a plausible token")
    redact.register_secret(token)
    try:
        expires = parse_iso_aware(payload.get("expires"), "payload.expires")
    except CrossChexError:
        log.warning("CrossChex token answer has no usable 'expires'; assuming %s", FALLBACK_TOKEN_LIFETIME)
        expires = now + FALLBACK_TOKEN_LIFETIME
    if expires <= now + timedelta(minutes=1):
        # Our clock and the server's disagree (or the server is odd): do not
        # fetch a new token before every call; TOKEN_EXPIRES still covers it.
        log.warning("CrossChex token expiry %s is not in the future by our clock; assuming %s",
                    iso_utc(expires), FALLBACK_TOKEN_LIFETIME)
        expires = now + FALLBACK_TOKEN_LIFETIME
    return token, expires


def decode_envelope(body: bytes) -> tuple[dict, dict]:
    """Answer bytes -> (header, payload), accepting both answer shapes.

    Raises CrossChexError(bad_answer) for anything that is not such an object,
    or CrossChexError(http) for a wrapped answer whose ``code`` is not 200 and
    carries no envelope."""
    if not isinstance(body, (bytes, bytearray)):
        bad_answer(f"body is {type(body).__name__}, expected bytes")
    head = bytes(body[:512]).lstrip().lower()
    if not head:
        bad_answer("the answer is empty")
    if head.startswith(b"<"):
        bad_answer("the answer is HTML/XML, not JSON (wrong URL, proxy or captive portal?)")
    try:
        text = bytes(body).decode("utf-8-sig")
    except UnicodeDecodeError:
        bad_answer("the answer is not UTF-8 text")
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        bad_answer(f"the answer is not valid JSON ({exc.msg} at char {exc.pos} of {len(text)}; truncated?)")
    except RecursionError:
        bad_answer("the answer is nested too deeply")
    except (ValueError, TypeError, OverflowError) as exc:
        bad_answer(f"the answer is not usable JSON ({type(exc).__name__})")
    if not isinstance(obj, dict):
        bad_answer(f"the answer is a JSON {_type_name(obj)}, expected an object")
    env = obj
    if "header" not in obj and isinstance(obj.get("data"), dict):
        env = obj["data"]
    header, payload = env.get("header"), env.get("payload")
    if not isinstance(header, dict) or not isinstance(payload, dict):
        code = obj.get("code")
        if isinstance(code, int) and not isinstance(code, bool) and code != 200:
            raise CrossChexError("http", f"CrossChex Cloud answered code {code} without a usable body") from None
        missing = "header" if not isinstance(header, dict) else "payload"
        bad_answer(f"no '{missing}' object in the answer")
    return header, payload


def raise_for_exception(header: dict, payload: dict) -> None:
    """Raise the matching CrossChexError if this is an exception envelope."""
    if header.get("name") != "Exception":
        return
    etype = payload.get("type")
    etype = etype if isinstance(etype, str) else ""
    message = payload.get("message")
    detail = _one_line(message, 120) if isinstance(message, str) and message else ""
    suffix = f" ({detail})" if detail else ""
    if etype == "AUTH_ERROR":
        raise Refusal(
            "auth",
            "CrossChex Cloud rejected the api_key/api_secret (AUTH_ERROR): "
            f"check both values in the configuration{suffix}",
            etype,
        ) from None
    if etype == "TOKEN_EXPIRES":
        raise Refusal("token", f"CrossChex Cloud says the token has expired (TOKEN_EXPIRES){suffix}", etype) from None
    if etype == "FREQUENT_REQUEST":
        raise Refusal("rate_limited", f"CrossChex Cloud rate-limited the call (FREQUENT_REQUEST){suffix}", etype) from None
    shown = _one_line(etype, 40) or "no type"
    raise Refusal("http", f"CrossChex Cloud refused the call ({shown}){suffix}", etype) from None


def parse_records_answer(body: bytes, page: int | None = None) -> tuple[list[CcRecord], int]:
    """Whole answer bytes of a getrecord call -> (records, pageCount).

    Pure; raises only CrossChexError."""
    header, payload = decode_envelope(body)
    raise_for_exception(header, payload)
    return parse_record_page(payload, page)


def iso_utc(dt: datetime) -> str:
    """The timestamp form CrossChex Cloud takes and gives (UTC, whole seconds)."""
    return dt.astimezone(UTC).isoformat(timespec="seconds")
