"""agent.tls: the one TLS context every HTTPS client uses."""

from __future__ import annotations

import ssl

import certifi
import trustme

from agent.tls import tls_context


def _subjects(ctx: ssl.SSLContext) -> set[str]:
    return {str(c.get("subject")) for c in ctx.get_ca_certs()}


def test_default_is_certifi_like_httpx(monkeypatch):
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    ctx = tls_context()
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert _subjects(ctx) == _subjects(ssl.create_default_context(cafile=certifi.where()))


def test_ssl_cert_file_and_ca_bundle_replace_the_store(tmp_path, monkeypatch):
    ca = trustme.CA()
    pem = tmp_path / "site-ca.pem"
    ca.cert_pem.write_to_path(str(pem))
    monkeypatch.setenv("SSL_CERT_FILE", str(pem))
    assert len(tls_context().get_ca_certs()) == 1
    monkeypatch.delenv("SSL_CERT_FILE")
    assert len(tls_context(str(pem)).get_ca_certs()) == 1
