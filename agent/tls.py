"""The TLS context every HTTPS client of the agent uses (iFlow, CrossChex, doctor).

Verification is never switched off: a CA bundle in config (a file or a
``c_rehash`` directory) replaces the system store, nothing else changes.
Written once so that the delivery path, reconciliation and ``agent doctor``
cannot disagree about which server certificates they accept.
"""

from __future__ import annotations

import os
import ssl


def tls_context(ca_bundle: str | None = None) -> ssl.SSLContext:
    """A verifying client context: the system's CAs, or only those of ``ca_bundle``."""
    if ca_bundle and os.path.isdir(ca_bundle):
        return ssl.create_default_context(capath=ca_bundle)
    if ca_bundle:
        return ssl.create_default_context(cafile=ca_bundle)
    return ssl.create_default_context()


def plain_http_context() -> ssl.SSLContext:
    """For a client whose URL is plain http:// with no proxy and no redirects: TLS
    is never used, so skip loading the CA store (~0.1 s here, more on a Pi).
    This context trusts nothing, so it can never verify a server by mistake."""
    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
