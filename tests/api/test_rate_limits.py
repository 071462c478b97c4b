"""Code sends and logins are rate-limited per phone and per client address (flask-limiter)."""

import logging
import socket
import uuid

import pytest

from app import create_app
from core.db import db
from core.ratelimit import limiter
from tests.documented_errors import watch
from tests.factories import make_phone


def _redis_up() -> bool:
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=0.5).close()
        return True
    except OSError:
        return False


def fresh_ipv6_client() -> str:
    """An address in a /64 of the documentation range no other test client uses."""
    return f"2001:db8:{uuid.uuid4().hex[:4]}:{uuid.uuid4().hex[:4]}::1"


@pytest.fixture(params=["memory", "redis"])
def limited_client(request, database_url, clock, tmp_path):
    storage = "memory://"
    if request.param == "redis":
        if not _redis_up():
            pytest.skip("Redis is not running on 127.0.0.1:6379")
        storage = "redis://127.0.0.1:6379"
    app = create_app({
        "DATABASE_URL": database_url, "WALLET_ENV": "test", "CLOCK": clock, "RATELIMIT_ENABLED": True,
        "RATELIMIT_STORAGE_URI": storage,
        "SMS_CONSOLE_FILE": str(tmp_path / "sms.jsonl"),
        "SMS_CODE_RESEND_LIMIT": "1 per minute", "SMS_CODE_LIMIT_PER_PHONE": "3 per hour",
        "SMS_CODE_LIMIT_PER_CLIENT": "3 per hour",
        "LOGIN_LIMIT_PER_PHONE": "2 per hour", "LOGIN_LIMIT_PER_CLIENT": "100 per hour",
    })
    watch(app)  # its 4xx problems must be documented (tests.documented_errors)
    with app.app_context():
        limiter.reset()  # Redis counters outlive a test run; phone numbers repeat between runs
    client = app.test_client()
    # Redis counters outlive the test run; a fresh documentation-range network keeps runs independent (an IPv6
    # client is its /64: core.ratelimit.client_key).
    client.environ_base["REMOTE_ADDR"] = fresh_ipv6_client()
    yield client
    with app.app_context():
        db.engine.dispose()


def test_one_code_per_phone_per_minute_however_the_number_is_written(limited_client):
    phone = make_phone()
    first = limited_client.post("/api/v1/sms-codes", json={"phone": phone, "purpose": "register"})
    assert first.status_code == 202
    national = f"+1 ({phone[2:5]}) {phone[5:8]}-{phone[8:]}"
    second = limited_client.post("/api/v1/sms-codes", json={"phone": national, "purpose": "register"})
    assert second.status_code == 429
    assert second.mimetype == "application/problem+json" and second.json["code"] == "rate_limited"


def test_the_resend_interval_is_per_purpose_and_the_hourly_cap_per_phone(limited_client):
    phone = make_phone()
    send = lambda purpose: limited_client.post(  # noqa: E731
        "/api/v1/sms-codes", json={"phone": phone, "purpose": purpose}).status_code
    assert [send("register"), send("login"), send("recover"), send("change_phone")] == [202, 202, 202, 429]


def test_code_sends_per_client_address(limited_client):
    statuses = [
        limited_client.post("/api/v1/sms-codes", json={"phone": make_phone(), "purpose": "register"}).status_code
        for _ in range(4)
    ]
    assert statuses == [202, 202, 202, 429]
    other_client = limited_client.post("/api/v1/sms-codes", json={"phone": make_phone(), "purpose": "register"},
                                       environ_base={"REMOTE_ADDR": fresh_ipv6_client()})
    assert other_client.status_code == 202


def test_logins_per_phone(limited_client):
    phone = make_phone()
    body = {"phone": phone, "login_password": "whatever it is", "device_id": "d"}
    statuses = [limited_client.post("/api/v1/sessions", json=body).status_code for _ in range(3)]
    assert statuses == [401, 401, 429]


def test_a_body_nested_too_deeply_is_a_malformed_request_before_the_limits(limited_client):
    """The limits' keys peek at the body's phone and purpose; a body the parser gives up on gives them no key, and
    the endpoint then refuses it as any other (it was a 500: Flask's get_json lets a RecursionError through)."""
    raw = '{"phone": "' + make_phone() + '", "purpose": "login", "extra": ' + "[" * 5000 + "]" * 5000 + "}"
    response = limited_client.post("/api/v1/sms-codes", data=raw, content_type="application/json")
    assert (response.status_code, response.json["code"]) == (400, "malformed_request")


def test_a_rate_limited_phone_number_is_not_logged(limited_client, caplog):
    """The per-phone limits were keyed by the number itself, and flask-limiter logs the key of every limit it
    enforces: each refused request logged the full number (and the counters in Redis were named after it). The key
    is a keyed digest of the normalised number now, and the limits are as before (the tests above).
    Found by the privacy audit."""
    phone = make_phone()
    with caplog.at_level(logging.INFO):
        answers = [limited_client.post("/api/v1/sms-codes", json={"phone": phone, "purpose": "login"}).status_code
                   for _ in range(2)]
    assert answers == [202, 429]
    assert "exceeded" in caplog.text
    assert phone not in caplog.text and phone[1:] not in caplog.text


def test_a_client_forwarded_with_its_port_or_in_brackets_is_one_client(database_url, clock, tmp_path):
    """Found by an audit: behind a proxy that writes the client's port (or an IPv6 address in brackets) into
    X-Forwarded-For, the address did not parse and every connection was keyed as a client of its own, so the
    per-client limits never held."""
    app = create_app({"DATABASE_URL": database_url, "WALLET_ENV": "test", "CLOCK": clock, "RATELIMIT_ENABLED": True,
                      "RATELIMIT_STORAGE_URI": "memory://", "PROXY_FIX_X_FOR": 1,
                      "SMS_CONSOLE_FILE": str(tmp_path / "sms.jsonl"), "SMS_CODE_LIMIT_PER_CLIENT": "3 per hour"})
    watch(app)  # its 4xx problems must be documented (tests.documented_errors)
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = "10.0.0.1"  # the proxy

    def sends(forwarded_for):
        return [client.post("/api/v1/sms-codes", json={"phone": make_phone(), "purpose": "register"},
                            headers={"X-Forwarded-For": address}).status_code for address in forwarded_for]

    assert sends([f"198.51.100.7:{40000 + n}" for n in range(4)]) == [202, 202, 202, 429]
    assert sends([f"[2001:db8:1:1::{n + 1}]:443" for n in range(2)] + ["[2001:db8:1:1::9]", "2001:db8:1:1::a"]) == [
        202, 202, 202, 429]  # one /64
    with app.app_context():
        db.engine.dispose()
