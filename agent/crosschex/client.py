"""Client for the Anviz CrossChex Cloud API (token + attendance records).

Contract: /work/shared/api/crosschex-cloud.md.  Every call is one JSON POST
``{"header": {...}, "payload": {...}}`` (plus ``"authorize"`` once a token is
held) to the account's API URL.  Answers come as ``{"header", "payload"}`` or
wrapped as ``{"code", "data": {"header", "payload"}}``; server errors are an
exception envelope (``header.name == "Exception"``, ``payload.type``).

What this module guarantees:

* Every failure is a :class:`CrossChexError` with a one-line message and a
  ``kind``; nothing else escapes (malformed answers, HTML, huge or truncated
  JSON, wrong types included).
* The api_secret and the token are registered with :mod:`agent.redact`, never
  logged, and never part of an error message (errors are raised ``from None``
  so no library exception carrying request data is chained).
* Timeouts are always set; consecutive calls are at least ``min_interval_s``
  apart (the cloud rate-limits to roughly one call per 30 s); FREQUENT_REQUEST
  is retried with capped exponential back-off; TOKEN_EXPIRES refreshes the
  token and retries that call once.

The parsing half (:func:`decode_envelope`, :func:`parse_record_page`,
:func:`parse_records_answer`, ...) is pure and is what the fuzz tests drive.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Callable, Iterator, NoReturn

from agent import redact
from agent.errors import CrossChexFailure

if TYPE_CHECKING:  # httpx is imported lazily (import cost on a Pi Zero)
    import httpx

__all__ = [
    "CrossChexError",
    "CcRecord",
    "CrossChexClient",
    "decode_envelope",
    "raise_for_exception",
    "parse_record",
    "parse_record_page",
    "parse_records_answer",
    "parse_token_payload",
    "parse_iso_aware",
]

log = logging.getLogger("agent.crosschex")

KINDS = frozenset({"auth", "rate_limited", "bad_answer", "network", "http", "token"})
MAX_PER_PAGE = 1000
MAX_PAGE_COUNT = 1_000_000
MAX_ANSWER_BYTES = 32 * 1024 * 1024
TOKEN_REFRESH_MARGIN = timedelta(minutes=10)
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


class _Refusal(CrossChexError):
    """The server answered with an exception envelope (``server_type``)."""

    def __init__(self, kind: str, message: str, server_type: str) -> None:
        super().__init__(kind, message)
        self.server_type = server_type


def _bad(reason: str) -> NoReturn:
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
        _bad(f"{where} is {_type_name(value)}, expected an ISO 8601 string")
    if len(value) > 64:
        _bad(f"{where} is too long to be a timestamp")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        _bad(f"{where} {value!r} is not an ISO 8601 timestamp")
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        _bad(f"{where} {value!r} has no UTC offset")
    try:
        return parsed.astimezone(timezone.utc)
    except (OverflowError, ValueError):
        _bad(f"{where} {value!r} is out of range")


def _text(value: object, where: str) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    _bad(f"{where} is {_type_name(value)}, expected a string")


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
        _bad(f"{where} is {_type_name(value)}, expected an object")
    return value


def parse_record(item: object, where: str = "record") -> CcRecord:
    """One element of ``payload.list`` -> :class:`CcRecord`."""
    if not isinstance(item, dict):
        _bad(f"{where} is {_type_name(item)}, expected an object")
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
        _bad(f"{where}.checktype is {_type_name(ct)}, expected a number")
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
        _bad(f"payload is {_type_name(payload)}, expected an object")
    where = f"page {page}: " if page is not None else ""
    if "pageCount" not in payload:
        _bad(f"{where}'pageCount' is missing")
    page_count = payload["pageCount"]
    if isinstance(page_count, str) and _digits(page_count, 7) is not None:
        page_count = _digits(page_count, 7)
    if not isinstance(page_count, int) or isinstance(page_count, bool):
        _bad(f"{where}'pageCount' is {_type_name(page_count)}, expected a whole number")
    if not 0 <= page_count <= MAX_PAGE_COUNT:
        _bad(f"{where}'pageCount' {page_count} is out of range")
    if "list" not in payload:
        _bad(f"{where}'list' is missing")
    items = payload["list"]
    if not isinstance(items, list):
        _bad(f"{where}'list' is {_type_name(items)}, expected an array")
    answered_page = payload.get("page")
    if page is not None and answered_page is not None:
        try:
            same = int(answered_page) == page  # "2" and 2 both fine
        except (TypeError, ValueError, OverflowError):
            same = False
        if isinstance(answered_page, bool) or not same:
            _bad(f"asked for page {page} but the answer is page {answered_page!r:.20}")
    records = [parse_record(item, f"{where}list[{i}]") for i, item in enumerate(items)]
    return records, page_count


def parse_token_payload(payload: object, now: datetime) -> tuple[str, datetime]:
    """``payload`` of an authorize.token answer -> (token, expires UTC).

    A missing or unreadable ``expires`` is not fatal: the token is assumed to
    live :data:`FALLBACK_TOKEN_LIFETIME` (TOKEN_EXPIRES handling covers the rest)."""
    if not isinstance(payload, dict):
        _bad(f"payload is {_type_name(payload)}, expected an object")
    token = payload.get("token")
    if not isinstance(token, str) or not token.strip():
        _bad("the token answer has no 'token' string")
    if len(token) > 16384 or any(c.isspace() for c in token):
        _bad("the token answer's 'token' is not a plausible token")
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
                    _iso(expires), FALLBACK_TOKEN_LIFETIME)
        expires = now + FALLBACK_TOKEN_LIFETIME
    return token, expires


def decode_envelope(body: bytes) -> tuple[dict, dict]:
    """Answer bytes -> (header, payload), accepting both answer shapes.

    Raises CrossChexError(bad_answer) for anything that is not such an object,
    or CrossChexError(http) for a wrapped answer whose ``code`` is not 200 and
    carries no envelope."""
    if not isinstance(body, (bytes, bytearray)):
        _bad(f"body is {type(body).__name__}, expected bytes")
    head = bytes(body[:512]).lstrip().lower()
    if not head:
        _bad("the answer is empty")
    if head.startswith(b"<"):
        _bad("the answer is HTML/XML, not JSON (wrong URL, proxy or captive portal?)")
    try:
        text = bytes(body).decode("utf-8-sig")
    except UnicodeDecodeError:
        _bad("the answer is not UTF-8 text")
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        _bad(f"the answer is not valid JSON ({exc.msg} at char {exc.pos} of {len(text)}; truncated?)")
    except RecursionError:
        _bad("the answer is nested too deeply")
    except (ValueError, TypeError, OverflowError) as exc:
        _bad(f"the answer is not usable JSON ({type(exc).__name__})")
    if not isinstance(obj, dict):
        _bad(f"the answer is a JSON {_type_name(obj)}, expected an object")
    env = obj
    if "header" not in obj and isinstance(obj.get("data"), dict):
        env = obj["data"]
    header, payload = env.get("header"), env.get("payload")
    if not isinstance(header, dict) or not isinstance(payload, dict):
        code = obj.get("code")
        if isinstance(code, int) and not isinstance(code, bool) and code != 200:
            raise CrossChexError("http", f"CrossChex Cloud answered code {code} without a usable body") from None
        missing = "header" if not isinstance(header, dict) else "payload"
        _bad(f"no '{missing}' object in the answer")
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
        raise _Refusal(
            "auth",
            "CrossChex Cloud rejected the api_key/api_secret (AUTH_ERROR): "
            f"check both values in the configuration{suffix}",
            etype,
        ) from None
    if etype == "TOKEN_EXPIRES":
        raise _Refusal("token", f"CrossChex Cloud says the token has expired (TOKEN_EXPIRES){suffix}", etype) from None
    if etype == "FREQUENT_REQUEST":
        raise _Refusal("rate_limited", f"CrossChex Cloud rate-limited the call (FREQUENT_REQUEST){suffix}", etype) from None
    shown = _one_line(etype, 40) or "no type"
    raise _Refusal("http", f"CrossChex Cloud refused the call ({shown}){suffix}", etype) from None


def parse_records_answer(body: bytes, page: int | None = None) -> tuple[list[CcRecord], int]:
    """Whole answer bytes of a getrecord call -> (records, pageCount).

    Pure; raises only CrossChexError."""
    header, payload = decode_envelope(body)
    raise_for_exception(header, payload)
    return parse_record_page(payload, page)


# --------------------------------------------------------------------------- client


def _iso(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).isoformat(timespec="seconds")


class CrossChexClient:
    """Synchronous CrossChex Cloud client (one call at a time; not thread-safe).

    ``sleep``/``monotonic``/``now`` are injectable so tests run instantly.
    ``rate_limit_retries`` bounds the FREQUENT_REQUEST retries of one call."""

    def __init__(
        self,
        url: str,
        api_key: str,
        api_secret: str,
        *,
        token_cache: str | None = None,
        min_interval_s: float = 30.0,
        max_backoff_s: float = 300.0,
        per_page: int = 1000,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        verify: bool | str = True,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
        rate_limit_retries: int = 5,
    ) -> None:
        if not isinstance(url, str) or not url.startswith(("https://", "http://")):
            raise ValueError("CrossChex url must start with https:// (or http:// for a local stand-in)")
        if not isinstance(api_key, str) or not api_key.strip():
            raise ValueError("CrossChex api_key is empty")
        if not isinstance(api_secret, str) or not api_secret.strip():
            raise ValueError("CrossChex api_secret is empty")
        if not isinstance(per_page, int) or not 1 <= per_page <= MAX_PER_PAGE:
            raise ValueError(f"per_page must be 1..{MAX_PER_PAGE}")
        if min_interval_s < 0 or max_backoff_s < 0 or rate_limit_retries < 0:
            raise ValueError("min_interval_s, max_backoff_s and rate_limit_retries must not be negative")
        if not connect_timeout or not read_timeout or connect_timeout <= 0 or read_timeout <= 0:
            raise ValueError("timeouts must be positive")
        redact.register_secret(api_secret)

        import httpx  # lazy: only the reconcile/flush paths need it

        self._httpx = httpx
        self._url = url
        self._api_key = api_key
        self._api_secret = api_secret
        self._cache_path = token_cache
        self._min_interval = float(min_interval_s)
        self._max_backoff = float(max_backoff_s)
        self._per_page = per_page
        self._rate_retries = rate_limit_retries
        self._sleep = sleep
        self._monotonic = monotonic
        self._now = now
        # Binds a cached token to this account and URL (a key change must not reuse it).
        self._binding = hashlib.sha256(f"{url}\0{api_key}".encode()).hexdigest()[:32]
        self._token: str | None = None
        self._token_expires: datetime | None = None
        self._token_obtained: datetime | None = None
        self._last_call_end: float | None = None

        ssl_verify: Any = verify
        if url.startswith("http://"):
            # Plain HTTP (a local stand-in): no TLS is ever used, since redirects
            # are not followed; skip loading the CA bundle (slow on a Pi).
            ssl_verify = False
        elif isinstance(verify, str):
            import ssl

            ssl_verify = (
                ssl.create_default_context(capath=verify)
                if os.path.isdir(verify)
                else ssl.create_default_context(cafile=verify)
            )
        self._http = httpx.Client(
            timeout=httpx.Timeout(connect=connect_timeout, read=read_timeout, write=read_timeout, pool=connect_timeout),
            verify=ssl_verify,
            transport=transport,
            follow_redirects=False,
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )

    # -- lifecycle

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> CrossChexClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- token

    def _fresh(self, expires: datetime | None, obtained: datetime | None, now: datetime) -> bool:
        if expires is None:
            return False
        margin = TOKEN_REFRESH_MARGIN
        if obtained is not None and obtained < expires:
            margin = min(margin, (expires - obtained) / 2)
        return now < expires - margin

    def token(self) -> str:
        """A valid token: from memory, else the cache file, else a new one."""
        now = self._now()
        if self._token is not None and self._fresh(self._token_expires, self._token_obtained, now):
            return self._token
        if self._load_cache(now):
            assert self._token is not None
            return self._token
        return self._fetch_token()

    def _fetch_token(self) -> str:
        payload = self._call(
            "authorize.token", "token", {"api_key": self._api_key, "api_secret": self._api_secret}, auth=False
        )
        now = self._now()
        token, expires = parse_token_payload(payload, now)
        self._token, self._token_expires, self._token_obtained = token, expires, now
        log.info("CrossChex token obtained, valid until %s", _iso(expires))
        self._save_cache()
        return token

    def _drop_token(self) -> None:
        self._token = self._token_expires = self._token_obtained = None
        if self._cache_path:
            try:
                os.unlink(self._cache_path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("could not remove the CrossChex token cache: %s", redact.redact(str(exc)))

    def _load_cache(self, now: datetime) -> bool:
        if not self._cache_path:
            return False
        try:
            with open(self._cache_path, "rb") as f:
                data = json.loads(f.read(65536).decode("utf-8"))
        except FileNotFoundError:
            return False
        except (OSError, ValueError, RecursionError) as exc:
            log.warning("ignoring unreadable CrossChex token cache (%s)", type(exc).__name__)
            return False
        try:
            if not isinstance(data, dict) or data.get("binding") != self._binding:
                return False
            token = data["token"]
            if not isinstance(token, str) or not token:
                raise ValueError
            redact.register_secret(token)
            expires = parse_iso_aware(data["expires"], "cache.expires")
            obtained = parse_iso_aware(data["obtained"], "cache.obtained")
        except (KeyError, ValueError, CrossChexError):
            log.warning("ignoring malformed CrossChex token cache")
            return False
        if not self._fresh(expires, obtained, now):
            return False
        self._token, self._token_expires, self._token_obtained = token, expires, obtained
        log.debug("CrossChex token taken from the cache, valid until %s", _iso(expires))
        return True

    def _save_cache(self) -> None:
        if not self._cache_path or self._token is None:
            return
        assert self._token_expires is not None and self._token_obtained is not None
        data = json.dumps(
            {
                "binding": self._binding,
                "token": self._token,
                "expires": _iso(self._token_expires),
                "obtained": _iso(self._token_obtained),
            }
        ).encode()
        from agent.fsio import atomic_write

        try:
            atomic_write(self._cache_path, data)
            os.chmod(self._cache_path, 0o600)
        except OSError as exc:  # the token still works from memory
            log.warning("could not write the CrossChex token cache: %s", redact.redact(str(exc)))

    # -- records

    def records(self, begin: datetime, end: datetime) -> Iterator[CcRecord]:
        """Every record with begin <= checktime <= end, walking pages 1..pageCount.

        A generator: calls happen (and errors are raised) while iterating."""
        for name, dt in (("begin", begin), ("end", end)):
            if not isinstance(dt, datetime) or dt.tzinfo is None or dt.utcoffset() is None:
                raise ValueError(f"{name} must be an aware datetime")
        if begin > end:
            raise ValueError("begin is after end")
        page, page_count = 1, None
        while page_count is None or page <= page_count:
            payload = self._call(
                "attendance.record",
                "getrecord",
                {
                    "begin_time": _iso(begin),
                    "end_time": _iso(end),
                    "order": "asc",
                    "page": page,
                    "per_page": self._per_page,
                },
                auth=True,
            )
            recs, count = parse_record_page(payload, page)
            page_count = count if page_count is None else max(page_count, count)
            log.debug("CrossChex page %d/%d: %d records", page, page_count, len(recs))
            yield from recs
            page += 1

    # -- transport

    def _call(self, namespace: str, action: str, payload: dict, *, auth: bool) -> dict:
        """One API call with the retry policy; returns the answer payload."""
        token_retried = False
        rate_tries = 0
        while True:
            body: dict[str, Any] = {
                "header": {
                    "nameSpace": namespace,
                    "nameAction": action,
                    "version": "1.0",
                    "requestId": str(uuid.uuid4()),
                    "timestamp": _iso(self._now()),
                },
                "payload": payload,
            }
            if auth:
                body["authorize"] = {"type": "token", "token": self.token()}
                body["header"]["timestamp"] = _iso(self._now())
            try:
                header, answer = self._post(body, namespace)
                raise_for_exception(header, answer)
                return answer
            except _Refusal as refusal:
                kind = refusal.server_type
                if kind == "TOKEN_EXPIRES" and auth and not token_retried:
                    log.info("CrossChex token expired; getting a new one and retrying %s", namespace)
                    token_retried = True
                    self._drop_token()
                    continue
                if kind == "TOKEN_EXPIRES":
                    raise CrossChexError(
                        "token", f"CrossChex Cloud rejected a fresh token for {namespace} (TOKEN_EXPIRES twice)"
                    ) from None
                if kind == "FREQUENT_REQUEST":
                    if rate_tries >= self._rate_retries:
                        raise CrossChexError(
                            "rate_limited",
                            f"CrossChex Cloud still rate-limits {namespace} after {rate_tries + 1} tries "
                            "(FREQUENT_REQUEST); try again later",
                        ) from None
                    delay = self._backoff(rate_tries)
                    rate_tries += 1
                    log.warning("CrossChex rate limit (FREQUENT_REQUEST); retrying in %.0f s", delay)
                    self._sleep(delay)
                    continue
                raise CrossChexError(refusal.kind, refusal.message) from None

    def _backoff(self, attempt: int) -> float:
        base = self._min_interval if self._min_interval > 0 else 1.0
        return min(base * (2 ** min(attempt, 32)), self._max_backoff)

    def _wait_interval(self) -> None:
        if self._last_call_end is None or self._min_interval <= 0:
            return
        wait = self._min_interval - (self._monotonic() - self._last_call_end)
        if wait > 0:
            self._sleep(wait)

    def _post(self, body: dict, namespace: str) -> tuple[dict, dict]:
        httpx = self._httpx
        self._wait_interval()
        data = json.dumps(body, separators=(",", ":")).encode()
        log.debug("CrossChex call %s (%d bytes)", namespace, len(data))
        status = 0
        try:
            with self._http.stream("POST", self._url, content=data) as resp:
                status = resp.status_code
                chunks: list[bytes] = []
                size = 0
                for chunk in resp.iter_bytes():
                    size += len(chunk)
                    if size > MAX_ANSWER_BYTES:
                        _bad(f"the answer is larger than {MAX_ANSWER_BYTES} bytes")
                    chunks.append(chunk)
            raw = b"".join(chunks)
        except httpx.DecodingError:
            _bad("the answer's content encoding is broken")
        except httpx.TimeoutException as exc:
            raise CrossChexError("network", f"CrossChex Cloud {namespace} timed out ({type(exc).__name__})") from None
        except httpx.HTTPError as exc:
            raise CrossChexError(
                "network", f"cannot reach CrossChex Cloud for {namespace}: {type(exc).__name__}: {exc}"
            ) from None
        finally:
            self._last_call_end = self._monotonic()
        ok = 200 <= status < 300
        try:
            header, payload = decode_envelope(raw)
        except CrossChexError as exc:
            if status == 429:
                raise _Refusal("rate_limited", "HTTP 429 from CrossChex Cloud", "FREQUENT_REQUEST") from None
            if not ok:
                raise CrossChexError("http", f"HTTP {status} from CrossChex Cloud for {namespace}") from None
            raise CrossChexError(exc.kind, f"{namespace}: {exc.message}") from None
        if header.get("name") != "Exception":
            if status == 429:
                raise _Refusal("rate_limited", "HTTP 429 from CrossChex Cloud", "FREQUENT_REQUEST")
            if not ok:
                raise CrossChexError("http", f"HTTP {status} from CrossChex Cloud for {namespace}")
        return header, payload
