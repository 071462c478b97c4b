"""The per-phone limits count requests for one phone number. A request naming no number, or no valid one, is not a
request for any number: it is answered 422 naming the field, whoever sent one before (found by an audit: all such
requests shared one counter, ``phone:invalid`` or ``phone:none``, so after the first from anyone in the minute, or the
fifth in the hour, everyone's mistyped number was 429 rate_limited with a Retry-After instead of the error that says
what to fix). The per-client limits still count them."""

import pytest

from tests.api.test_rate_limits import fresh_ipv6_client, limited_client  # noqa: F401 - the fixture

SMS = "/api/v1/sms-codes"


def from_new_client(client, path, body):
    return client.post(path, json=body, environ_base={"REMOTE_ADDR": fresh_ipv6_client()})


@pytest.mark.parametrize("body", [
    {"phone": "12345", "purpose": "register"},
    {"phone": "not a number", "purpose": "login"},
    {"purpose": "register"},
    {"phone": 8613800138000, "purpose": "register"},
], ids=["short", "words", "missing", "not-a-string"])
def test_a_code_request_without_a_valid_number_is_422_for_every_client(limited_client, body):  # noqa: F811
    answers = [from_new_client(limited_client, SMS, body) for _ in range(4)]  # limits: 1 per minute, 3 per hour
    assert [(a.status_code, a.json["code"]) for a in answers] == [(422, "validation_failed")] * 4


@pytest.mark.parametrize("path", ["/api/v1/sessions", "/api/v1/password-resets"])
def test_a_login_or_reset_without_a_valid_number_is_422_for_every_client(limited_client, path):  # noqa: F811
    body = {"phone": "+1 555", "login_password": "whatever it is", "device_id": "d", "sms_code": "123456",
            "new_password": "a long new password"}
    if path.endswith("sessions"):
        body.pop("new_password")
    else:
        body.pop("login_password"), body.pop("device_id")
    answers = [from_new_client(limited_client, path, body) for _ in range(3)]  # LOGIN_LIMIT_PER_PHONE: 2 per hour
    assert [(a.status_code, a.json["code"]) for a in answers] == [(422, "validation_failed")] * 3


def test_requests_without_a_valid_number_still_count_for_their_client(limited_client):  # noqa: F811
    client = fresh_ipv6_client()
    answers = [limited_client.post(SMS, json={"phone": "12345", "purpose": "register"},
                                   environ_base={"REMOTE_ADDR": client}).status_code for _ in range(4)]
    assert answers == [422, 422, 422, 429]  # SMS_CODE_LIMIT_PER_CLIENT: 3 per hour
