"""TLS: verification is always on. Self-signed, wrong host name and expired
certificates are refused (DeliveryError) and the records stay pending; a
private CA given as ``ca_bundle`` works. Through the Deliverer and journal, so
"refused" is proven to mean "nothing delivered, nothing marked".
"""

from __future__ import annotations

import ssl
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import trustme

from agent.delivery.client import DeliveryError, IflowClient
from agent.delivery.deliverer import Deliverer
from agent.journal.store import Journal
from standins.iflow import IflowStandin
from tests.reliability.figures import record
from tests.reliability.test_fault_server import TrustedClock, scan

TZ = ZoneInfo("Europe/Bucharest")
TOKEN = "tok-TLS-4242aa"
NOW = datetime.now(UTC)


def server_ctx(ca: trustme.CA, *names: str, **kw) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*names, **kw).configure_cert(ctx)
    return ctx


CASES = {
    # name: (how the server's certificate is made, whether the client is given our CA)
    "self_signed": (lambda ca: server_ctx(ca, "127.0.0.1"), False),
    "wrong_host": (lambda ca: server_ctx(ca, "iflow.example.com"), True),
    "expired": (lambda ca: server_ctx(ca, "127.0.0.1", not_before=NOW - timedelta(days=60),
                                      not_after=NOW - timedelta(days=1)), True),
    "good_chain": (lambda ca: server_ctx(ca, "127.0.0.1"), True),
}
RESULTS: dict[str, str] = {}


@pytest.mark.parametrize("case", list(CASES))
def test_certificates(tmp_path, case):
    make, give_ca = CASES[case]
    ca = trustme.CA()
    ca_path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    with IflowStandin(token=TOKEN, ssl_context=make(ca)) as standin:
        client = IflowClient(standin.url, TOKEN, "1.0", connect_timeout=2.0, read_timeout=2.0,
                             verify=str(ca_path) if give_ca else True)
        journal = Journal(str(tmp_path / "journal"))
        base = datetime(2026, 11, 22, 6, 0, tzinfo=UTC)
        for i in range(3):
            journal.append(scan(i, base))
        d = Deliverer(journal, client, TrustedClock(), TZ)
        if case != "good_chain":
            with pytest.raises(DeliveryError) as info:
                client.send(d.plan()[0])
            assert info.value.kind == "network" and TOKEN not in str(info.value)
            assert "CERTIFICATE_VERIFY_FAILED" in str(info.value), str(info.value)
            s = d.drain()
            assert s.error and not s.reachable and s.delivered == 0
            assert journal.summary()["pending"] == 3 and standin.stored_count == 0
            RESULTS[case] = "refused, 3 records still pending"
        else:
            s = d.drain()
            assert s.delivered == 3 and journal.summary()["pending"] == 0 and standin.stored_count == 3
            RESULTS[case] = "accepted via ca_bundle, 3 delivered"
        client.close()
        journal.close()
    record("tls", **{case: RESULTS[case]})


def test_verification_cannot_be_disabled():
    with pytest.raises(ValueError):
        IflowClient("https://127.0.0.1/x", TOKEN, "1.0", verify=False)  # type: ignore[arg-type]
    record("tls", verify_false="refused by the constructor (ValueError)")
