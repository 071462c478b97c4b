"""Retry-After goes with the answers that ask the client to come back, as the OpenAPI document says (429
rate_limited, 503 bank_unavailable, 503 database_unavailable), not with every answer of a rate-limited endpoint
(found by an audit: flask-limiter's headers put ``Retry-After: 60`` on a 202 code sent, ``Retry-After: 3600`` on a 201
login, a 401 wrong password, a 423 lock and a 422; a client honouring it waited an hour after logging in)."""

from tests.api.test_rate_limits import limited_client  # noqa: F401 - the fixture
from tests.factories import make_phone


def test_answers_that_are_not_429_carry_no_retry_after(limited_client):  # noqa: F811
    phone = make_phone()
    sent = limited_client.post("/api/v1/sms-codes", json={"phone": phone, "purpose": "register"})
    invalid = limited_client.post("/api/v1/sms-codes", json={"phone": phone, "purpose": "nonsense"})
    wrong = limited_client.post("/api/v1/sessions", json={"phone": phone, "login_password": "whatever it is",
                                                           "device_id": "d"})
    assert [(r.status_code, r.headers.get("Retry-After")) for r in (sent, invalid, wrong)] == [
        (202, None), (422, None), (401, None)]
    assert sent.headers["X-RateLimit-Limit"]  # the limits' own headers stay


def test_a_429_still_says_when_to_come_back(limited_client):  # noqa: F811
    phone = make_phone()
    limited_client.post("/api/v1/sms-codes", json={"phone": phone, "purpose": "register"})
    refused = limited_client.post("/api/v1/sms-codes", json={"phone": phone, "purpose": "register"})
    assert refused.status_code == 429
    assert 0 < int(refused.headers["Retry-After"]) <= 60
