"""The TLS context every HTTPS client of the agent uses (iFlow, CrossChex, doctor).

Verification is never switched off. The trusted CAs are certifi's bundle,
as httpx uses by default (it ships with httpx, so every Pi has the same
store whatever its image's age), or those of ``SSL_CERT_FILE``/``SSL_CERT_DIR``
when set, as httpx honours them; a CA bundle in config (a file or a
``c_rehash`` directory) replaces them all, nothing else changes.
Written once so that the delivery path, reconciliation and ``agent doctor``
cannot disagree about which server certificates they accept.
"""

from __future__ import annotations

import os
import ssl


def tls_context(ca_bundle: str | None = None) -> ssl.SSLContext:
    """A verifying client context: certifi's CAs, or only those of ``ca_bundle``."""
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


def plain_http_context() -> ssl.SSLContext:
    """For a client whose URL is plain http:// with no proxy and no redirects: TLS
    is never used, so skip loading the CA store (~0.1 s here, more on a Pi).
    This context trusts nothing, so it can never verify a server by mistake."""
    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
