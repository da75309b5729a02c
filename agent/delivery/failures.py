"""How a failed request to iFlow is told: :class:`DeliveryError`, and the one
mapping of httpx's exceptions to it (what reached the server, what did not).

Kept apart from the client so that the texts and the ``reached`` rule are
read in one place; the client re-exports :class:`DeliveryError`.
"""

from __future__ import annotations

import httpx

from agent.delivery.resolver import LookupTimeout
from agent.errors import DeliveryFailure
from agent.redact import redact

__all__ = ["DeliveryError", "transport_error"]


class DeliveryError(DeliveryFailure):
    """A whole request failed; nothing in the batch counts as delivered.

    ``kind``: "network" | "timeout" | "http" | "auth" | "too_long" | "bad_answer".
    The text is redacted and meant for a human; ``excerpt`` holds the start of
    the server's answer (redacted; "(empty answer)" for an empty body) whenever
    one came, and ``status`` its HTTP status. ``reached`` is False only when
    the request certainly never reached the server (connection refused, DNS
    failure or timeout, TLS handshake failure, connect timeout, or refused here
    before sending): True whenever it may have been written.
    """

    def __init__(
        self,
        kind: str,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        excerpt: str | None = None,
        reached: bool = True,
    ) -> None:
        message = redact(message)
        super().__init__(message)
        self.kind = kind
        self.status = status
        self.retry_after = retry_after
        self.excerpt = redact(excerpt) if excerpt else None
        self.reached = reached

    def __str__(self) -> str:
        return redact(str(self.args[0]) if self.args else self.kind)

    def __repr__(self) -> str:
        return f"DeliveryError({self.kind!r}, {str(self)!r}, status={self.status!r}, reached={self.reached!r})"


def _detail(exc: BaseException) -> str:
    text = redact(str(exc)).strip() or type(exc).__name__
    return text[:200]


def transport_error(exc: Exception, host: str, connect_timeout: float, read_timeout: float) -> DeliveryError:
    """The DeliveryError for an exception of httpx (never chained to it: it holds the URL)."""
    if isinstance(exc.__cause__, LookupTimeout):
        return DeliveryError("timeout", f"looking up {host} timed out after {connect_timeout:g} s",
                             reached=False)
    if isinstance(exc, httpx.ConnectTimeout):
        return DeliveryError("timeout", f"connecting to {host} timed out after {connect_timeout:g} s",
                             reached=False)
    if isinstance(exc, httpx.ReadTimeout):
        return DeliveryError("timeout", f"no answer from {host} within {read_timeout:g} s")
    if isinstance(exc, httpx.TimeoutException):
        return DeliveryError("timeout", f"talking to {host} timed out ({type(exc).__name__})")
    if isinstance(exc, httpx.ConnectError):  # refused, DNS, TLS handshake: nothing written yet
        return DeliveryError("network", f"cannot connect to {host}: {_detail(exc)}", reached=False)
    if isinstance(exc, httpx.DecodingError):
        return DeliveryError("bad_answer", f"answer from {host} could not be decoded: {_detail(exc)}")
    if isinstance(exc, httpx.HTTPError):
        return DeliveryError("network", f"connection to {host} failed: {_detail(exc)}")
    return DeliveryError("network", f"request to {host} failed: {type(exc).__name__}: {_detail(exc)}")
