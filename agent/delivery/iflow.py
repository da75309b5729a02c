"""Delivery of scans to iFlow's ``store_attendances`` endpoint.

Two layers:

* a pure part -- :class:`Item`, :func:`wire`, :func:`classify` -- that turns
  iFlow's answer bytes into one :class:`Outcome` per sent record, or raises
  :class:`AnswerError` when the answer as a whole cannot be trusted (then
  nothing counts as delivered);
* :class:`IflowClient`, one keep-alive ``httpx.Client`` that sends one batch
  per GET and maps every failure to :class:`DeliveryError`.

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
* Every message and excerpt goes through :func:`agent.redact.redact`, and no
  ``DeliveryError`` keeps a reference to an httpx exception (they carry the
  request URL, which holds the access token).
"""

from __future__ import annotations

import email.utils
import json
import os
import re
import time
import unicodedata
from collections import defaultdict, deque
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any, NamedTuple

import httpx

from agent.errors import DeliveryFailure
from agent.redact import redact, register_secret

__all__ = [
    "Item",
    "Outcome",
    "AnswerError",
    "DeliveryError",
    "IflowClient",
    "wire",
    "classify",
    "parse_retry_after",
]

DELIVERED = "delivered"
DUPLICATE = "duplicate"
REJECTED = "rejected"
PENDING = "pending"

_MAX_MESSAGE = 500  # chars kept of one iFlow error text
_EXCERPT = 200  # chars of an unusable answer shown to the technician
_MAX_ANSWER = 4 * 1024 * 1024  # bytes read of a 2xx answer (60 results ~ 12 KB)
_MAX_ERROR_BODY = 64 * 1024  # bytes read of a non-2xx answer


# --------------------------------------------------------------------------
# Pure part
# --------------------------------------------------------------------------


class Item(NamedTuple):
    """One record to send."""

    key: str  # journal record id, opaque here
    tag: str  # rfidTag
    date: str  # "YYYY-MM-DD", local wall clock
    time: str  # "HH:MM:SS", local wall clock


class Outcome(NamedTuple):
    key: str
    state: str  # "delivered" | "duplicate" | "rejected" | "pending"
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


def _excerpt(body: bytes) -> str:
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
        self.excerpt = _excerpt(body)
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
        return Outcome(key, PENDING, None)
    if not errors:
        return Outcome(key, DELIVERED, None)
    message = redact("; ".join(f"{name}: {text}" for name, text in errors))
    if len(message) > _MAX_MESSAGE:
        message = message[: _MAX_MESSAGE - 1] + "…"
    if all(name == "error_check_in_out" and is_duplicate_text(text) for name, text in errors):
        return Outcome(key, DUPLICATE, message)
    return Outcome(key, REJECTED, message)


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
            outcomes.append(Outcome(it.key, PENDING, None))
    return outcomes


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After value (delta-seconds or HTTP-date)."""
    if value is None:
        return None
    v = value.strip()
    if re.fullmatch(r"[0-9]{1,10}", v):
        return float(int(v))
    try:
        when = email.utils.parsedate_to_datetime(v)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when is None:
        return None
    try:
        if when.tzinfo is None:
            from datetime import timezone

            when = when.replace(tzinfo=timezone.utc)
        delta = when.timestamp() - (time.time() if now is None else now)
    except (OverflowError, ValueError, OSError):
        return None
    return max(0.0, delta)


# --------------------------------------------------------------------------
# HTTP part
# --------------------------------------------------------------------------


class DeliveryError(DeliveryFailure):
    """A whole request failed; nothing in the batch counts as delivered.

    ``kind``: "network" | "timeout" | "http" | "auth" | "too_long" | "bad_answer".
    The text is redacted and meant for a human; ``excerpt`` holds the start of
    the server's answer (redacted) when there was one.
    """

    def __init__(
        self,
        kind: str,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        excerpt: str | None = None,
    ) -> None:
        message = redact(message)
        super().__init__(message)
        self.kind = kind
        self.status = status
        self.retry_after = retry_after
        self.excerpt = redact(excerpt) if excerpt else None

    def __str__(self) -> str:
        return redact(str(self.args[0]) if self.args else self.kind)

    def __repr__(self) -> str:
        return f"DeliveryError({self.kind!r}, {str(self)!r}, status={self.status!r})"


def _detail(exc: BaseException) -> str:
    text = redact(str(exc)).strip() or type(exc).__name__
    return text[:200]


class IflowClient:
    """Sends batches to iFlow over one keep-alive ``httpx.Client``.

    ``csv_data_in``: "query" (default; csv_data is a query parameter) or
    "json-body" (csv_data is the JSON body of the GET; the URL then holds only
    access_token and version).  ``verify`` is True or a CA bundle path/dir;
    disabling TLS verification is refused.

    ``fit()`` keeps the request it measured so that the ``send()`` of the same
    items does not build it again (one thread). ``prepare()`` returns it
    instead, so one thread may build the next request while another thread
    sends the current one. The client keeps no cookies (a server's session
    cookie is of no use to an access-token API, and an empty jar is never
    changed while a request is being built).
    """

    def __init__(
        self,
        url: str,
        access_token: str,
        version: str,
        *,
        csv_data_in: str = "query",
        max_url_bytes: int = 7000,
        connect_timeout: float = 5.0,
        read_timeout: float = 15.0,
        verify: bool | str = True,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not isinstance(access_token, str) or not access_token:
            raise ValueError("the iFlow access token is empty")
        register_secret(access_token)
        # the exact form httpx puts in the URL, whatever its quoting rules
        register_secret(str(httpx.QueryParams({"t": access_token}))[2:])
        if csv_data_in not in ("query", "json-body"):
            raise ValueError(f"csv_data_in must be 'query' or 'json-body', not {csv_data_in!r}")
        if verify is not True and not (isinstance(verify, str) and verify):
            raise ValueError("TLS verification cannot be disabled: give True or a CA bundle path")
        if max_url_bytes < 256:
            raise ValueError(f"max_url_bytes={max_url_bytes} is too small")
        if not (connect_timeout > 0 and read_timeout > 0):
            raise ValueError("timeouts must be positive")
        parsed = self._parse_url(url)
        if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host:
            raise ValueError(f"invalid iFlow URL: {redact(str(url))!r}")

        ssl_verify: Any = True
        if parsed.scheme == "http" and not any(k.lower().endswith("_proxy") for k in os.environ):
            # TLS is never used (no redirects, no proxy): skip loading the CA
            # bundle (~0.1 s here, more on a Pi); this context trusts nothing.
            import ssl

            ssl_verify = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        elif isinstance(verify, str):
            import ssl

            if os.path.isdir(verify):
                ssl_verify = ssl.create_default_context(capath=verify)
            else:
                ssl_verify = ssl.create_default_context(cafile=verify)

        self._url = parsed
        self._host = parsed.host
        self._token = access_token
        self._version = str(version)
        self._in_body = csv_data_in == "json-body"
        self._max_url = max_url_bytes
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        # bound on the whole exchange: a server dripping bytes never hits read_timeout
        self._deadline = connect_timeout + 2 * read_timeout
        user_agent_version = "".join(c for c in self._version if "!" <= c <= "~")[:40] or "unknown"
        self._cached: tuple[tuple[Item, ...], httpx.Request] | None = None
        # how httpx encodes each character of a JSON text (ASCII without controls)
        self._enc_table = {
            c: str(httpx.QueryParams({"c": chr(c)}))[2:] for c in range(32, 128)
        }
        self._comma = ",".translate(self._enc_table)
        self._affix: tuple[str, str] | None = None  # the URL before and after csv_data's value
        self._client = httpx.Client(
            timeout=httpx.Timeout(read_timeout, connect=connect_timeout),
            verify=ssl_verify,
            transport=transport,
            follow_redirects=False,
            cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
            headers={"User-Agent": f"rfid-agent/{user_agent_version}", "Accept": "application/json"},
        )

    @staticmethod
    def _parse_url(url: str) -> httpx.URL | None:
        try:
            return httpx.URL(url)
        except (httpx.InvalidURL, TypeError, ValueError):
            return None

    # -- building ----------------------------------------------------------

    def _build(self, items: list[Item]) -> httpx.Request:
        return self._build_csv("[" + ",".join(map(wire_text, items)) + "]")  # ASCII: safe for any str

    def _build_csv(self, csv: str) -> httpx.Request:
        if self._in_body:
            return self._client.build_request(
                "GET",
                self._url,
                params={"access_token": self._token, "version": self._version},
                content=csv.encode("utf-8"),
                headers={"Content-Type": "application/json"},
            )
        return self._client.build_request(
            "GET",
            self._url,
            params={"access_token": self._token, "csv_data": csv, "version": self._version},
        )

    def _split_url(self) -> tuple[str, str]:
        """The URL httpx builds, split around csv_data's (encoded) value: the
        query is then assembled from each record's encoding, computed once."""
        sentinel = "CSVDATA0VALUE0MARK"
        url = str(self._build_csv(sentinel).url)
        if url.count(sentinel) != 1:  # pragma: no cover - a URL holding the mark
            return "", ""
        before, _, after = url.partition(sentinel)
        return before, after

    def _request(self, items: list[Item]) -> httpx.Request:
        """Build (or take from fit()'s cache) the request for exactly ``items``."""
        cached, self._cached = self._cached, None
        if cached is not None and cached[0] == tuple(items):
            return cached[1]
        return self._build(items)

    @staticmethod
    def _url_len(request: httpx.Request) -> int:
        return len(str(request.url))

    def fit(self, items: list[Item]) -> int:
        """How many leading ``items`` fit in one request whose URL stays within
        ``max_url_bytes``; 0 when not even one does (or ``items`` is empty).
        The request is kept for the ``send()`` of exactly those items."""
        n, request = self.prepare(items)
        self._cached = (tuple(items[:n]), request) if request is not None else None
        return n

    def prepare(self, items: list[Item]) -> tuple[int, httpx.Request | None]:
        """How many leading ``items`` fit in one request, and that request (for
        ``send(items[:n], request)``); ``(0, None)`` when not even one fits.

        httpx percent-encodes a query value character by character, so each
        record's share of the URL is its JSON text through httpx's own table:
        the query is assembled from those shares between the parts of the URL
        httpx builds around csv_data, then parsed by httpx; only if that ever
        differed from what httpx builds from the parameters would the count be
        found by bisection instead. Touches no state shared with ``send()``:
        one thread may prepare the next request while another sends.
        """
        if not items:
            return 0, None
        if self._in_body:  # the URL does not grow with the batch
            request = self._build(items)
            return (len(items), request) if self._url_len(request) <= self._max_url else (0, None)
        if self._affix is None:
            self._affix = self._split_url()
        before, after = self._affix
        # an encoded scan is well over 40 bytes, so no more than this can fit
        cap = min(len(items), self._max_url // 40 + 1)
        if before:
            opening, closing, comma = "[".translate(self._enc_table), "]".translate(self._enc_table), self._comma
            room = self._max_url - len(before) - len(after) - len(opening) - len(closing)
            parts: list[str] = []
            size = 0
            for item in items[:cap]:
                part = wire_text(item).translate(self._enc_table)
                grown = size + len(part) + (len(comma) if parts else 0)
                if grown > room:
                    break
                parts.append(part)
                size = grown
            if parts:
                url = before + opening + comma.join(parts) + closing + after
                request = self._client.build_request("GET", httpx.URL(url))
                if str(request.url) == url:  # exactly what httpx itself builds
                    return len(parts), request
        return self._bisect(items, cap)

    def _bisect(self, items: list[Item], cap: int) -> tuple[int, httpx.Request | None]:
        def fits(k: int) -> httpx.Request | None:
            request = self._build(items[:k])
            return request if self._url_len(request) <= self._max_url else None

        good_request = fits(1)
        if good_request is None:
            return 0, None
        whole = fits(cap)
        if whole is not None:
            return cap, whole
        good, bad = 1, cap  # invariant: good fits, bad does not
        while bad - good > 1:
            mid = (good + bad) // 2
            request = fits(mid)
            if request is not None:
                good, good_request = mid, request
            else:
                bad = mid
        return good, good_request

    # -- sending -----------------------------------------------------------

    def _transport_error(self, exc: Exception) -> DeliveryError:
        host = self._host
        if isinstance(exc, httpx.ConnectTimeout):
            return DeliveryError("timeout", f"connecting to {host} timed out after {self._connect_timeout:g} s")
        if isinstance(exc, httpx.ReadTimeout):
            return DeliveryError("timeout", f"no answer from {host} within {self._read_timeout:g} s")
        if isinstance(exc, httpx.TimeoutException):
            return DeliveryError("timeout", f"talking to {host} timed out ({type(exc).__name__})")
        if isinstance(exc, httpx.ConnectError):
            return DeliveryError("network", f"cannot connect to {host}: {_detail(exc)}")
        if isinstance(exc, httpx.DecodingError):
            return DeliveryError("bad_answer", f"answer from {host} could not be decoded: {_detail(exc)}")
        if isinstance(exc, httpx.HTTPError):
            return DeliveryError("network", f"connection to {host} failed: {_detail(exc)}")
        return DeliveryError("network", f"request to {host} failed: {type(exc).__name__}: {_detail(exc)}")

    def _read(self, response: httpx.Response, limit: int, started: float) -> tuple[bytes, DeliveryError | None]:
        chunks: list[bytes] = []
        size = 0
        error: DeliveryError | None = None
        try:
            for chunk in response.iter_bytes():
                chunks.append(chunk)
                size += len(chunk)
                if size > limit:
                    if limit == _MAX_ANSWER:
                        error = DeliveryError("bad_answer", f"answer from {self._host} is over {limit} bytes")
                    break
                if time.monotonic() - started > self._deadline:
                    error = DeliveryError(
                        "timeout", f"answer from {self._host} still incomplete after {self._deadline:g} s"
                    )
                    break
        except Exception as exc:  # noqa: BLE001 - mapped, never chained
            error = self._transport_error(exc)
        return b"".join(chunks)[:limit], error

    def send(self, items: list[Item], request: httpx.Request | None = None) -> list[Outcome]:
        """Send one batch in one GET; one Outcome per item, in order.

        ``request`` is the one ``prepare(items)`` built (else it is built here
        or taken from ``fit()``). Raises :class:`DeliveryError` when nothing in
        the batch can be counted as delivered. Never raises anything chained to
        an httpx exception.
        """
        if not items:
            return []
        if request is None:
            request = self._request(items)
        url_len = self._url_len(request)
        if url_len > self._max_url:
            raise DeliveryError(
                "too_long",
                f"request URL would be {url_len} bytes, over the {self._max_url}-byte limit",
            )

        started = time.monotonic()
        error: DeliveryError | None = None
        response: httpx.Response | None = None
        try:
            response = self._client.send(request, stream=True)
        except Exception as exc:  # noqa: BLE001 - mapped, never chained
            error = self._transport_error(exc)
        if error is not None or response is None:
            raise error or DeliveryError("network", f"no response from {self._host}")

        try:
            status = response.status_code
            ok = 200 <= status < 300
            body, error = self._read(response, _MAX_ANSWER if ok else _MAX_ERROR_BODY, started)
            headers = response.headers
        finally:
            try:
                response.close()
            except Exception:  # noqa: BLE001 - closing a broken stream
                pass
        if error is not None:
            raise error
        return self._interpret(items, status, headers, body)

    def _interpret(
        self, items: list[Item], status: int, headers: httpx.Headers, body: bytes
    ) -> list[Outcome]:
        host = self._host
        if 200 <= status < 300:
            try:
                return classify(items, body)
            except AnswerError as exc:
                unusable = DeliveryError(
                    "bad_answer",
                    f"unusable answer from {host} (HTTP {status}): {exc.reason}",
                    status=status,
                    excerpt=exc.excerpt or None,
                )
            raise unusable  # outside the handler: nothing chained, not even as context
        excerpt = _excerpt(body) or None  # a failure only: logged and shown
        if status in (401, 403):
            raise DeliveryError(
                "auth",
                f"{host} refused the access token (HTTP {status}); check the token registered "
                "in iFlow under settings -> rfid devices",
                status=status,
                excerpt=excerpt,
            )
        if status in (414, 431):
            raise DeliveryError(
                "too_long", f"{host} found the request too long (HTTP {status})", status=status, excerpt=excerpt
            )
        retry_after = parse_retry_after(headers.get("retry-after"))
        text = f"{host} answered HTTP {status}"
        if 300 <= status < 400 and headers.get("location"):
            text += f" (redirect to {headers['location'][:200]})"
        if retry_after is not None:
            text += f"; retry after {retry_after:g} s"
        raise DeliveryError("http", text, status=status, retry_after=retry_after, excerpt=excerpt)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> IflowClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
