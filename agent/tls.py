"""The TLS context every HTTPS client of the agent uses (iFlow, CrossChex, doctor).

Verification is never switched off. The trusted CAs are certifi's bundle,
as httpx uses by default (it ships with httpx, so every Pi has the same
store whatever its image's age), or those of ``SSL_CERT_FILE``/``SSL_CERT_DIR``
when set, as httpx honours them; a CA bundle in config (a file or a
``c_rehash`` directory) replaces them all, nothing else changes.
Written once so that the delivery path, reconciliation and ``agent doctor``
cannot disagree about which server certificates they accept.

Why the certificates' times are checked here rather than by OpenSSL: OpenSSL
checks them against the wall clock, and a Pi whose saved clock is months
behind then fails every handshake ("certificate is not yet valid") before any
HTTP ``Date`` can tell it the time. The agent often knows better than its wall
clock (an anchor of this boot), so ``tls_context(at=...)`` turns OpenSSL's time
check off and makes the same check itself, after OpenSSL verified signatures,
chain and host name, at the agent's trusted time (the wall clock when it has
none: then it refuses exactly what OpenSSL would).

Floor mode (:func:`floor_context`) is for one request only: the token-less
HEAD that learns the time when nothing better is known. It skips notBefore and
refuses any certificate that expired before the newest trusted time this device
ever recorded (the floor). That is safe because (1) the chain and the host name
are verified as always: only a certificate a trusted CA issued for iFlow's name
passes; (2) the request carries no token and stores nothing, so a man in the
middle learns nothing and changes nothing, at most the time; (3) its caller
takes the server's Date D only if floor <= D and every certificate of the chain
was valid at D (:func:`cert_window`): an attacker must hold the key of a
certificate still valid after the floor, and even then can only move the clock
within that certificate's life and never before a time this device already saw.
The time so learned is then the one every certificate is checked at, the
token-carrying requests' included: such an attacker (the key of an old iFlow
certificate, stolen, still valid after the floor) could then also stand in
for iFlow, as one holding iFlow's current key always could. Without a
battery clock there is no stronger anchor; NTP, when it answers, replaces it.
A certificate not yet valid by the wall clock says nothing against the server:
nobody can obtain one before its CA signed it; it says the wall clock is behind.
"""

from __future__ import annotations

import math
import os
import ssl
import time
from collections.abc import Callable
from typing import Any

__all__ = ["cert_time_error", "cert_window", "floor_context", "plain_http_context",
           "time_checks_available", "tls_context"]

# OpenSSL's X509_V_FLAG_NO_CHECK_TIME (1.1.0+); ssl.VerifyFlags has no name for it
_NO_CHECK_TIME = 0x200000
# X509_V_ERR_CERT_NOT_YET_VALID / X509_V_ERR_CERT_HAS_EXPIRED, as ssl reports them in verify_code
NOT_YET_VALID, EXPIRED = 9, 10
_OPENSSL_WORDS = {NOT_YET_VALID: "certificate is not yet valid", EXPIRED: "certificate has expired"}
_REASONS = {NOT_YET_VALID: "not_yet_valid", EXPIRED: "expired"}
_available: bool | None = None


def _store_context(ca_bundle: str | None) -> ssl.SSLContext:
    if ca_bundle and os.path.isdir(ca_bundle):
        return ssl.create_default_context(capath=ca_bundle)
    if ca_bundle:
        return ssl.create_default_context(cafile=ca_bundle)
    # As httpx does without a context of ours: a site may point these at its own CAs (systemd unit).
    if os.environ.get("SSL_CERT_FILE") or os.environ.get("SSL_CERT_DIR"):
        return ssl.create_default_context(cafile=os.environ.get("SSL_CERT_FILE") or None,
                                          capath=os.environ.get("SSL_CERT_DIR") or None)
    import certifi  # httpx's own dependency; only HTTPS clients pay for it

    return ssl.create_default_context(cafile=certifi.where())


def time_checks_available() -> bool:
    """Whether this Python hands out a connection's verified chain with each
    certificate's dates (CPython 3.10+: ``_ssl._SSLSocket.get_verified_chain``;
    3.13 made it public on SSLSocket, but as DER bytes, so the private one is read)."""
    global _available
    if _available is None:
        import _ssl

        _available = (
            hasattr(getattr(_ssl, "_SSLSocket", None), "get_verified_chain")
            and hasattr(getattr(_ssl, "Certificate", None), "get_info")
            and ssl.OPENSSL_VERSION_INFO >= (1, 1, 0)
        )
    return _available


def _chain_times(ssl_object: Any) -> list[tuple[float, float]] | None:
    """(notBefore, notAfter) of each certificate of the verified chain, leaf first.
    ``ssl_object``: an SSLSocket, an SSLObject or the ``_ssl`` object under them
    (what httpcore's sync stream gives as ``ssl_object``)."""
    inner = getattr(ssl_object, "_sslobj", None) or ssl_object
    getter = getattr(inner, "get_verified_chain", None)
    if getter is None:
        return None
    try:
        chain = getter() or []
        infos = [cert.get_info() for cert in chain]
        times = [(float(ssl.cert_time_to_seconds(i["notBefore"])), float(ssl.cert_time_to_seconds(i["notAfter"])))
                 for i in infos]
    except (AttributeError, KeyError, TypeError, ValueError, ssl.SSLError):
        return None
    return times or None


def cert_window(ssl_object: Any) -> tuple[float, float] | None:
    """(latest notBefore, earliest notAfter) over the verified chain of a
    connection, in seconds since the epoch: the times at which every certificate
    of it was valid. None when the chain cannot be read (no handshake, old Python)."""
    times = _chain_times(ssl_object)
    if not times:
        return None
    return max(nb for nb, _ in times), min(na for _, na in times)


def _iso(t: float) -> str:
    try:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
    except (OverflowError, OSError, ValueError):
        return repr(t)


def _refusal(code: int, message: str) -> ssl.SSLCertVerificationError:
    """An error shaped like OpenSSL's own verification failure, so every handler
    (httpx's mapping, DeliveryError's text, cert_time_error) treats it the same."""
    err = ssl.SSLCertVerificationError(1, f"[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: {message}")
    err.library, err.reason = "SSL", "CERTIFICATE_VERIFY_FAILED"
    err.verify_code, err.verify_message = code, message
    return err


def _trusted(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _at_check(at: Callable[[], float | None]) -> Callable[[Any], None]:
    def check(sslobj: Any) -> None:
        wall = time.time()
        trusted = _trusted(at())
        t = math.floor(wall if trusted is None else trusted)  # OpenSSL compares whole seconds (time_t)
        times = _chain_times(sslobj)
        if times is None:  # the handshake verified no chain we can read: refuse rather than skip the check
            raise _refusal(EXPIRED, "certificate validity could not be checked (no verified chain)")
        # as OpenSSL: from the trust anchor down, notBefore <= t < notAfter, the first failure reported
        for nb, na in reversed(times):
            code = NOT_YET_VALID if nb > t else EXPIRED if na <= t else None
            if code is None:
                continue
            message = _OPENSSL_WORDS[code]
            if trusted is not None:
                message += f" (checked at {_iso(t)}, the agent's trusted time; the wall clock says {_iso(wall)})"
            raise _refusal(code, message)
    return check


def _floor_check(floor_s: float) -> Callable[[Any], None]:
    def check(sslobj: Any) -> None:
        times = _chain_times(sslobj)
        if times is None:
            raise _refusal(EXPIRED, "certificate validity could not be checked (no verified chain)")
        for _, na in reversed(times):
            if na < floor_s:
                raise _refusal(EXPIRED, f"{_OPENSSL_WORDS[EXPIRED]} (before the newest trusted time this device "
                                        f"recorded, {_iso(floor_s)}; it expired {_iso(na)})")
    return check


class _CheckedSocket(ssl.SSLSocket):
    """An SSLSocket whose handshake ends with the context's own time check."""

    _agent_check: Callable[[Any], None]

    def do_handshake(self, block: bool = False) -> None:
        super().do_handshake(block)
        try:
            self._agent_check(self._sslobj)
        except BaseException:
            self.close()  # nothing is ever written on a connection we refused
            raise


class _CheckedObject(ssl.SSLObject):
    """The same for TLS in TLS (httpcore wraps a BIO pair for an HTTPS proxy);
    on failure httpcore closes the outer connection."""

    _agent_check: Callable[[Any], None]

    def do_handshake(self) -> None:
        super().do_handshake()
        self._agent_check(self._sslobj)


def _checked(ctx: ssl.SSLContext, check: Callable[[Any], None]) -> ssl.SSLContext:
    if ctx.verify_mode != ssl.CERT_REQUIRED or not ctx.check_hostname:  # never: create_default_context
        raise ValueError("time checks need a context that verifies the chain and the host name")
    ctx.verify_flags |= _NO_CHECK_TIME
    hook = {"_agent_check": staticmethod(check)}
    # one class per context: the check belongs to the context, never to every SSLSocket of the process
    ctx.sslsocket_class = type("AgentCheckedSocket", (_CheckedSocket,), hook)
    ctx.sslobject_class = type("AgentCheckedObject", (_CheckedObject,), hook)
    return ctx


def tls_context(ca_bundle: str | None = None, *, at: Callable[[], float | None] | None = None) -> ssl.SSLContext:
    """A verifying client context: certifi's CAs, or only those of ``ca_bundle``.

    With ``at``, certificates are valid at ``at()`` (seconds since the epoch; the
    wall clock when it returns None) instead of at the wall clock, when
    :func:`time_checks_available` (else ``at`` is ignored and OpenSSL checks the wall clock).
    """
    ctx = _store_context(ca_bundle)
    if at is None or not time_checks_available():
        return ctx
    return _checked(ctx, _at_check(at))


def floor_context(ca_bundle: str | None, floor_s: float) -> ssl.SSLContext:
    """For the token-less request that learns the time only: chain and host name
    verified, notBefore not checked, every certificate's notAfter >= ``floor_s``.
    Read the chain's window with :func:`cert_window` after the handshake.
    Raises RuntimeError when :func:`time_checks_available` is False."""
    if not time_checks_available():
        raise RuntimeError("this Python cannot read a connection's verified chain (CPython 3.10+ needed), "
                           "so certificates cannot be verified at a floor time")
    floor = _trusted(floor_s)
    if floor is None:
        raise ValueError(f"floor_s must be a finite number of seconds, not {floor_s!r}")
    return _checked(_store_context(ca_bundle), _floor_check(floor))


def cert_time_error(exc: BaseException | None) -> str | None:
    """"not_yet_valid", "expired" or None: why a certificate's time was refused
    somewhere in ``exc``'s chain (httpx wraps the ssl error in ConnectError)."""
    todo, seen = [exc], set()
    while todo and len(seen) < 16:  # a cycle or a very deep chain ends here
        err = todo.pop(0)
        if err is None or id(err) in seen:
            continue
        seen.add(id(err))
        if isinstance(err, ssl.SSLCertVerificationError):
            reason = _REASONS.get(getattr(err, "verify_code", None))
            if reason:
                return reason
            text = f"{getattr(err, 'verify_message', '') or ''} {err}"
            if "not yet valid" in text:
                return "not_yet_valid"
            if "has expired" in text:
                return "expired"
        todo += [err.__cause__, err.__context__]
    return None


def plain_http_context() -> ssl.SSLContext:
    """For a client whose URL is plain http:// with no proxy and no redirects: TLS
    is never used, so skip loading the CA store (~0.1 s here, more on a Pi).
    This context trusts nothing, so it can never verify a server by mistake."""
    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
