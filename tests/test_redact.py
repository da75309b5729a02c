"""Tests for agent.redact: the secret registry, redact(), the logging filter."""

from __future__ import annotations

import io
import logging
import threading
import traceback
from urllib.parse import quote, quote_plus

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent import redact as R

SECRET = "tok-SECRET-9f8e7d"
ODD = "p@ss w/rd+&=é?"  # needs percent-encoding in every form


@pytest.fixture(autouse=True, scope="module")
def _restore_registry():
    """Secrets invented here must not mask text in other test modules."""
    saved = _snapshot()
    yield
    _restore(saved)


def _snapshot() -> set[str]:
    with R._lock:
        return set(R._secrets)


def _restore(saved: set[str]) -> None:
    with R._lock:
        R._secrets.clear()
        R._secrets.update(saved)
        R._dirty = True


@pytest.fixture(autouse=True)
def _registered():
    R.register_secret(SECRET)
    R.register_secret(ODD)


@pytest.fixture
def capture():
    """A DEBUG handler on a private logger, with the filter installed on it."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("test_redact.capture")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    logger.addHandler(handler)
    R.install(handler)
    yield logger, stream
    logger.removeHandler(handler)


def test_registered_secret_and_its_encoded_forms_are_masked():
    for form in (ODD, quote(ODD), quote(ODD, safe=""), quote_plus(ODD)):
        out = R.redact(f"before {form} after")
        assert form not in out
        assert out == "before *** after"


def test_short_and_empty_values_are_not_registered():
    R.register_secret("")
    R.register_secret("abc")
    assert R.redact("abc and more abc") == "abc and more abc"


def test_access_token_parameter_is_masked_even_when_unregistered():
    assert R.redact("GET /x?access_token=zzz-unknown&v=1") == "GET /x?access_token=***&v=1"
    assert R.redact("url access_token=zzz end") == "url access_token=*** end"
    assert R.redact("'access_token=zzz'") == "'access_token=***'"
    assert R.redact('"access_token=zzz"') == '"access_token=***"'
    assert R.redact("?access_token=zzz") == "?access_token=***"
    # percent-encoded inside another URL, and a JSON member
    assert "zzz" not in R.redact("next=http%3A%2F%2Fh%2F%3Faccess_token%3Dzzz%26v%3D1")
    assert R.redact('{"access_token": "zzz"}') == '{"access_token": "***"}'


def test_redact_url_accepts_any_object():
    class U:
        def __str__(self) -> str:
            return f"https://h/p?access_token={SECRET}&csv_data=[]"

    assert R.redact_url(U()) == "https://h/p?access_token=***&csv_data=[]"
    assert SECRET not in R.redact_url(f"https://h/{SECRET}/x")


def test_filter_formats_args_and_masks_message(capture):
    logger, stream = capture
    logger.info("calling %s with %r", f"https://h/?access_token={SECRET}", {"t": SECRET})
    logger.debug("no args %s", ODD)  # a lone literal %s survives formatting
    text = stream.getvalue()
    assert SECRET not in text and ODD not in text
    assert "access_token=***" in text


def test_filter_masks_tracebacks_and_stack_info(capture):
    logger, stream = capture
    try:
        raise RuntimeError(f"failed for https://h/?access_token={SECRET}")
    except RuntimeError:
        logger.exception("boom %s", SECRET)
    logger.warning("here", stack_info=True, extra={})
    text = stream.getvalue()
    assert "RuntimeError" in text and "Traceback" in text
    assert SECRET not in text


def test_filter_survives_bad_format_args(capture):
    logger, stream = capture
    logger.info("%d items %s", "not-a-number", SECRET)
    assert SECRET not in stream.getvalue()
    assert "not-a-number" in stream.getvalue()


def test_install_covers_root_handlers_and_httpx_loggers_idempotently():
    root = logging.getLogger()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root.addHandler(handler)
    old_level = root.level
    root.setLevel(logging.DEBUG)
    try:
        R.install()
        R.install()
        assert sum(isinstance(f, R.RedactingFilter) for f in handler.filters) == 1
        for name in ("httpx", "httpcore", "httpcore.http11", "httpcore.connection"):
            assert any(isinstance(f, R.RedactingFilter) for f in logging.getLogger(name).filters)
        logging.getLogger("httpx").info('HTTP Request: GET %s "HTTP/1.1 200 OK"', f"http://h/?access_token={SECRET}")
        logging.getLogger("some.module").warning("token is %s", SECRET)
        text = stream.getvalue()
        assert "HTTP Request" in text and "token is ***" in text
        assert SECRET not in text
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


def test_exception_text_through_format_exception_is_clean():
    try:
        raise ValueError(f"bad {quote_plus(ODD)}")
    except ValueError as exc:
        text = R.redact("".join(traceback.format_exception(exc)))
    assert quote_plus(ODD) not in text


def test_concurrent_registration_and_redaction():
    secrets = [f"secret-{i:04d}-xyz" for i in range(40)]
    errors: list[BaseException] = []

    def register(chunk: list[str]) -> None:
        for s in chunk:
            R.register_secret(s)

    def redact_loop() -> None:
        try:
            for _ in range(200):
                R.redact("secret-0001-xyz access_token=abc")
        except BaseException as e:  # pragma: no cover - the failure being tested
            errors.append(e)

    threads = [threading.Thread(target=register, args=(secrets[i::4],)) for i in range(4)]
    threads += [threading.Thread(target=redact_loop) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    text = " ".join(secrets)
    assert all(s not in R.redact(text) for s in secrets)


secret_text = st.text(
    alphabet=st.characters(blacklist_characters="*", blacklist_categories=("Cs",)), min_size=4, max_size=20
)


@settings(max_examples=200, deadline=None)
@given(secret=secret_text, parts=st.lists(st.text(max_size=30), max_size=5))
def test_no_registered_secret_survives(secret, parts):
    saved = _snapshot()
    try:
        R.register_secret(secret)
        text = secret.join(parts) + quote(secret, safe="") + quote_plus(secret)
        out = R.redact(text)
    finally:
        _restore(saved)
    assert secret not in out
    assert quote(secret, safe="") not in out
