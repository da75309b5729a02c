"""Client for the Anviz CrossChex Cloud API (token + attendance records).

Contract: /work/shared/api/crosschex-cloud.md.  Every call is one JSON POST
``{"header": {...}, "payload": {...}}`` (plus ``"authorize"`` once a token is
held) to the account's API URL; :mod:`agent.crosschex.wire` reads the answers.

What this module guarantees:

* Every failure is a :class:`CrossChexError` with a one-line message and a
  ``kind``; nothing else escapes.
* The api_secret and the token are registered with :mod:`agent.redact`, never
  logged, and never part of an error message (errors are raised ``from None``
  so no library exception carrying request data is chained).
* TLS: the one context of :mod:`agent.tls` (certifi's CAs, or the given
  CA bundle); verification cannot be switched off.
* Timeouts are always set; consecutive calls are at least ``min_interval_s``
  apart (the cloud rate-limits to roughly one call per 30 s); FREQUENT_REQUEST
  is retried with capped exponential back-off; TOKEN_EXPIRES refreshes the
  token and retries that call once.
* The token is cached in a file (mode 0600, bound to the URL and api_key), so
  a command run every few minutes does not fetch a new one each time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Callable, Iterator

from agent import redact
from agent.clock.httpdate import DateSample
from agent.clock.sources import boottime_ns
from agent.crosschex.wire import (
    CcRecord,
    CrossChexError,
    Refusal,
    bad_answer,
    decode_envelope,
    iso_utc,
    parse_iso_aware,
    parse_record_page,
    parse_token_payload,
    raise_for_exception,
)
from agent.fsio import atomic_write
from agent.tls import plain_http_context, tls_context

if TYPE_CHECKING:  # httpx is imported lazily (import cost on a Pi Zero)
    import httpx

__all__ = ["CrossChexClient"]

log = logging.getLogger("agent.crosschex")

MAX_PER_PAGE = 1000
MAX_ANSWER_BYTES = 32 * 1024 * 1024
TOKEN_REFRESH_MARGIN = timedelta(minutes=10)


class CrossChexClient:
    """Synchronous CrossChex Cloud client (one call at a time; not thread-safe).

    ``verify`` is True (certifi's CAs, see :mod:`agent.tls`) or a CA bundle file or directory.
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
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        rate_limit_retries: int = 5,
        on_answer: Callable[[DateSample], object] | None = None,
        mono_ns: Callable[[], int] = boottime_ns,
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
        if verify is not True and not (isinstance(verify, str) and verify):
            raise ValueError("TLS verification cannot be disabled: give True or a CA bundle path")
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
        self._on_answer, self._mono = on_answer, mono_ns  # each answer's Date teaches the clock

        if url.startswith("http://") and not any(k.lower().endswith("_proxy") for k in os.environ):
            # Plain HTTP (a local stand-in) and no proxy (which may speak TLS): no
            # TLS is ever used, since redirects are not followed; skip loading
            # the CA store (slow on a Pi).
            ssl_context = plain_http_context()
        else:
            ssl_context = tls_context(verify if isinstance(verify, str) else None)
        self._http = httpx.Client(
            timeout=httpx.Timeout(connect=connect_timeout, read=read_timeout, write=read_timeout, pool=connect_timeout),
            verify=ssl_context,
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
        log.info("CrossChex token obtained, valid until %s", iso_utc(expires))
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
        log.debug("CrossChex token taken from the cache, valid until %s", iso_utc(expires))
        return True

    def _save_cache(self) -> None:
        if not self._cache_path or self._token is None:
            return
        assert self._token_expires is not None and self._token_obtained is not None
        data = json.dumps(
            {
                "binding": self._binding,
                "token": self._token,
                "expires": iso_utc(self._token_expires),
                "obtained": iso_utc(self._token_obtained),
            }
        ).encode()
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
                    "begin_time": iso_utc(begin),
                    "end_time": iso_utc(end),
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
                    "timestamp": iso_utc(self._now()),
                },
                "payload": payload,
            }
            if auth:
                body["authorize"] = {"type": "token", "token": self.token()}
                body["header"]["timestamp"] = iso_utc(self._now())
            try:
                header, answer = self._post(body, namespace)
                raise_for_exception(header, answer)
                return answer
            except Refusal as refusal:
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

    def _answered(self, resp: httpx.Response, sent: int) -> None:
        if self._on_answer is None:
            return
        sample = DateSample(resp.headers.get("date"), resp.headers.get("age"), sent, self._mono(),
                            self._url.startswith("https://"), resp.request.url.host)  # verification is always on
        try:
            self._on_answer(sample)
        except Exception:  # noqa: BLE001 - learning the time must never fail a call
            log.exception("reading the Date of CrossChex Cloud failed")

    def _post(self, body: dict, namespace: str) -> tuple[dict, dict]:
        httpx = self._httpx
        self._wait_interval()
        data = json.dumps(body, separators=(",", ":")).encode()
        log.debug("CrossChex call %s (%d bytes)", namespace, len(data))
        status = 0
        sent = self._mono()
        try:
            with self._http.stream("POST", self._url, content=data) as resp:
                status = resp.status_code
                self._answered(resp, sent)
                chunks: list[bytes] = []
                size = 0
                for chunk in resp.iter_bytes():
                    size += len(chunk)
                    if size > MAX_ANSWER_BYTES:
                        bad_answer(f"the answer is larger than {MAX_ANSWER_BYTES} bytes")
                    chunks.append(chunk)
            raw = b"".join(chunks)
        except httpx.DecodingError:
            bad_answer("the answer's content encoding is broken")
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
                raise Refusal("rate_limited", "HTTP 429 from CrossChex Cloud", "FREQUENT_REQUEST") from None
            if not ok:
                raise CrossChexError("http", f"HTTP {status} from CrossChex Cloud for {namespace}") from None
            raise CrossChexError(exc.kind, f"{namespace}: {exc.message}") from None
        if header.get("name") != "Exception":
            if status == 429:
                raise Refusal("rate_limited", "HTTP 429 from CrossChex Cloud", "FREQUENT_REQUEST")
            if not ok:
                raise CrossChexError("http", f"HTTP {status} from CrossChex Cloud for {namespace}")
        return header, payload
