"""Delivery of scans to iFlow's ``store_attendances`` endpoint over HTTP.

:class:`IflowClient` is one keep-alive ``httpx.Client`` that sends one batch
per GET and maps every failure to :class:`DeliveryError`; what is sent and
what an answer means is :mod:`agent.delivery.wire`. No ``DeliveryError``
keeps a reference to an httpx exception (they carry the request URL, which
holds the access token), and every text goes through
:func:`agent.redact.redact`.
"""

from __future__ import annotations

import logging
import os
import time
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Callable

import httpx

from agent.clock.httpdate import DateSample
from agent.clock.sources import boottime_ns
from agent.delivery import urlquery
from agent.delivery.failures import DeliveryError, transport_error
from agent.delivery.resolver import bounded_transport
from agent.delivery.wire import (
    AnswerError,
    Item,
    Outcome,
    answer_words,
    classify,
    excerpt,
    parse_retry_after,
    wire_text,
)
from agent.redact import redact, register_secret
from agent.tls import plain_http_context, tls_context

log = logging.getLogger("agent.delivery")

__all__ = ["DeliveryError", "IflowClient"]

_MAX_ANSWER = 4 * 1024 * 1024  # bytes read of a 2xx answer (60 results ~ 12 KB)
_MAX_ERROR_BODY = 64 * 1024  # bytes read of a non-2xx answer


class IflowClient:
    """Sends batches to iFlow over one keep-alive ``httpx.Client``.

    ``csv_data_in``: "query" (default; csv_data is a query parameter) or
    "json-body" (csv_data is the JSON body of the GET; the URL then holds only
    access_token and version).  ``verify`` is True or a CA bundle path/dir;
    disabling TLS verification is refused. ``transport`` replaces httpx's
    network transport (the tests' seam). ``user_agent`` is the program named in
    the User-Agent header, so iFlow's logs tell ``agent doctor``'s probe apart.
    ``on_answer`` gets every answer's Date as a :class:`~agent.clock.httpdate.DateSample`
    on the ``mono_ns`` clock (authenticated when over verified TLS, or
    ``insecure_dates``); ``verify_at`` is when to check certificates (see
    :func:`agent.tls.tls_context`).

    ``prepare()`` returns the request it measured, so one thread may build the
    next request while another thread sends the current one. The client keeps
    no cookies (a server's session cookie is of no use to an access-token API,
    and an empty jar is never changed while a request is being built).
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
        user_agent: str = "rfid-agent",
        on_answer: Callable[[DateSample], object] | None = None,
        mono_ns: Callable[[], int] = boottime_ns,
        insecure_dates: bool = False,
        verify_at: Callable[[], float | None] | None = None,
    ) -> None:
        if not isinstance(access_token, str) or not access_token:
            raise ValueError("the iFlow access token is empty")
        register_secret(access_token)
        register_secret(urlquery.encode(access_token))  # the form the URL carries
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

        proxied = any(k.lower().endswith("_proxy") for k in os.environ)
        if parsed.scheme == "http" and not proxied:
            ssl_context = plain_http_context()  # TLS is never used: no redirects, no proxy
        else:
            ssl_context = tls_context(verify if isinstance(verify, str) else None, at=verify_at)
        if transport is None and not proxied:  # behind a proxy, the proxy resolves the name
            transport = bounded_transport(ssl_context)

        self._host = parsed.host
        self._on_answer, self._mono = on_answer, mono_ns
        self._dates_authenticated = parsed.scheme == "https" or insecure_dates  # verification is always on
        self._token = access_token
        self._version = str(version)
        self._in_body = csv_data_in == "json-body"
        self._max_url = max_url_bytes
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        # bound on the whole exchange: a server dripping bytes never hits read_timeout
        self._deadline = connect_timeout + 2 * read_timeout
        user_agent_version = "".join(c for c in self._version if "!" <= c <= "~")[:40] or "unknown"
        self._affix = self._split_url(parsed)  # the URL before and after csv_data's value
        self._client = httpx.Client(
            timeout=httpx.Timeout(read_timeout, connect=connect_timeout),
            verify=ssl_context,
            transport=transport,
            follow_redirects=False,
            cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
            headers={"User-Agent": f"{user_agent}/{user_agent_version}", "Accept": "application/json"},
        )

    @staticmethod
    def _parse_url(url: str) -> httpx.URL | None:
        try:
            return httpx.URL(url)
        except (httpx.InvalidURL, TypeError, ValueError):
            return None

    # -- building ----------------------------------------------------------

    def _split_url(self, parsed: httpx.URL) -> tuple[str, str]:
        """The URL before and after csv_data's encoded value (or around the
        place it would have, in json-body mode), as httpx writes the configured
        part: the rest is escaped by :mod:`agent.delivery.urlquery`."""
        base = str(parsed.copy_with(query=None, fragment=None))
        existing = parsed.query.decode("ascii")
        before = f"{base}?{existing}{'&' if existing and not existing.endswith('&') else ''}"
        before += f"access_token={urlquery.encode(self._token)}"
        after = f"&version={urlquery.encode(self._version)}"
        return before + "&csv_data=", after

    def _url_of(self, csv: str) -> str:
        before, after = self._affix
        if self._in_body:
            return before.removesuffix("&csv_data=") + after
        return before + urlquery.encode(csv) + after

    def _build(self, items: list[Item]) -> httpx.Request:
        return self._build_csv("[" + ",".join(map(wire_text, items)) + "]")  # ASCII: safe for any str

    def _build_csv(self, csv: str) -> httpx.Request:
        if self._in_body:
            return self._client.build_request(
                "GET", self._url_of(csv), content=csv.encode("utf-8"), headers={"Content-Type": "application/json"}
            )
        return self._client.build_request("GET", self._url_of(csv))

    @staticmethod
    def _url_len(request: httpx.Request) -> int:
        return len(str(request.url))

    def prepare(self, items: list[Item]) -> tuple[int, httpx.Request | None]:
        """How many leading ``items`` fit in one request, and that request (for
        ``send(items[:n], request)``); ``(0, None)`` when not even one fits.

        Each record's share of the URL is its JSON text through :func:`agent.delivery.urlquery.encode`
        (character by character, so shares add up); only if httpx ever wrote the assembled URL otherwise
        would the count be found by bisection. Shares no state with ``send()`` (two threads).
        """
        if not items:
            return 0, None
        if self._in_body:  # the URL does not grow with the batch
            request = self._build(items)
            return (len(items), request) if self._url_len(request) <= self._max_url else (0, None)
        before, after = self._affix
        # an encoded scan is well over 40 bytes, so no more than this can fit
        cap = min(len(items), self._max_url // 40 + 1)
        opening, closing = urlquery.encode("["), urlquery.encode("]")
        room = self._max_url - len(before) - len(after) - len(opening) - len(closing)
        parts: list[str] = []
        size = 0
        for item in items[:cap]:
            part = urlquery.encode(wire_text(item))
            grown = size + len(part) + (1 if parts else 0)  # "," is literal
            if grown > room:
                break
            parts.append(part)
            size = grown
        if parts:
            url = before + opening + ",".join(parts) + closing + after
            request = self._request_for(url)
            if str(request.url) == url:  # httpx sends it as built
                return len(parts), request
        return self._bisect(items, cap)

    def _request_for(self, url: str) -> httpx.Request:
        """The GET of ``url``, its query escaped here: httpx's parsed template with this query (httpx
        would re-check and re-quote 7 KB per request, a quarter of a flush's CPU); the caller checks it."""
        template = self._client.build_request("GET", self._affix[0] + self._affix[1])  # short: cheap
        ref, (head, _, query) = getattr(template.url, "_uri_reference", None), url.partition("?")
        if not hasattr(ref, "_replace") or str(template.url).partition("?")[0] != head:
            return self._client.build_request("GET", url)
        template.url = httpx.URL.__new__(httpx.URL)
        template.url._uri_reference = ref._replace(query=query)
        return template

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
        return transport_error(exc, self._host, self._connect_timeout, self._read_timeout)

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

    def _open(self, request: httpx.Request) -> httpx.Response:
        """Send ``request``; the response with its body still to be read."""
        error: DeliveryError | None = None
        response: httpx.Response | None = None
        sent = self._mono()
        try:
            response = self._client.send(request, stream=True)
        except Exception as exc:  # noqa: BLE001 - mapped, never chained
            error = self._transport_error(exc)
        if error is not None or response is None:
            raise error or DeliveryError("network", f"no response from {self._host}")
        if self._on_answer is not None:
            sample = DateSample(response.headers.get("date"), response.headers.get("age"), sent, self._mono(),
                                self._dates_authenticated, self._host)
            try:
                self._on_answer(sample)
            except Exception:  # noqa: BLE001 - learning the time must never fail a delivery
                log.exception("reading the Date of %s failed", self._host)
        return response

    @staticmethod
    def _close(response: httpx.Response) -> None:
        try:
            response.close()
        except Exception:  # noqa: BLE001 - closing a broken stream
            pass

    def answer_empty_batch(self) -> tuple[int, float]:
        """One request with the token and an empty batch (for ``agent doctor``):
        iFlow's HTTP status and the seconds until its answer's head arrived.
        Nothing is stored, and the body is not read. Raises
        :class:`DeliveryError` when no answer comes at all."""
        started = time.monotonic()
        response = self._open(self._build_csv("[]"))
        took = time.monotonic() - started
        status = response.status_code
        self._close(response)
        return status, took

    def send(self, items: list[Item], request: httpx.Request | None = None) -> list[Outcome]:
        """Send one batch in one GET; one Outcome per item, in order.

        ``request`` is the one ``prepare(items)`` built (else it is built here).
        Raises :class:`DeliveryError` when nothing in the batch can be counted
        as delivered. Never raises anything chained to an httpx exception.
        """
        if not items:
            return []
        request = request if request is not None else self._build(items)
        url_len = self._url_len(request)
        if url_len > self._max_url:
            raise DeliveryError("too_long", f"request URL would be {url_len} bytes, over the "
                                f"{self._max_url}-byte limit", reached=False)

        started = time.monotonic()
        response = self._open(request)
        try:
            status = response.status_code
            ok = 200 <= status < 300
            body, error = self._read(response, _MAX_ANSWER if ok else _MAX_ERROR_BODY, started)
            headers = response.headers
        finally:
            self._close(response)
        if error is not None:
            raise error
        return self._interpret(items, status, headers, body)

    def _interpret(
        self, items: list[Item], status: int, headers: httpx.Headers, body: bytes
    ) -> list[Outcome]:
        host = self._host
        shown = excerpt(body) or "(empty answer)"  # a failure only: logged and shown
        if 200 <= status < 300:
            try:
                return classify(items, body)
            except AnswerError as exc:
                unusable = DeliveryError(
                    "bad_answer", f"unusable answer from {host} (HTTP {status}): {exc.reason}",
                    status=status, excerpt=shown,
                )
            raise unusable  # outside the handler: nothing chained, not even as context
        words = answer_words(body)
        said = f": {words}" if words else ""
        if status in (401, 403):
            raise DeliveryError(
                "auth",
                f"{host} refused the access token (HTTP {status}{said}); check the token registered "
                "in iFlow under settings -> rfid devices",
                status=status,
                excerpt=shown,
            )
        if status in (414, 431):
            raise DeliveryError(
                "too_long", f"{host} found the request too long (HTTP {status}{said})", status=status, excerpt=shown
            )
        retry_after = parse_retry_after(headers.get("retry-after"))
        text = f"{host} answered HTTP {status}{said}"
        if 300 <= status < 400 and headers.get("location"):
            text += f" (redirect to {headers['location'][:200]})"
        if retry_after is not None:
            text += f"; retry after {retry_after:g} s"
        raise DeliveryError("http", text, status=status, retry_after=retry_after, excerpt=shown)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> IflowClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
