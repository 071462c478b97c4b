"""A 204 answer has no body, so it names no media type for one (RFC 9110 15.3.5, 8.3). Found by the followups audit:
every 204 of the API carried Flask's default ``Content-Type: text/html; charset=utf-8``, which told a client's HTTP
stack to expect an HTML page, and was the one answer of ``/api/`` that named HTML at all."""

from __future__ import annotations

import pytest

from tests.api.test_twilio_callbacks import report, sent_alert, twilio_app  # noqa: F401 - fixture
from tests.factories import LOGIN_PASSWORD, PAYMENT_PASSWORD


def no_content(response) -> None:
    assert response.status_code == 204, response.get_data(as_text=True)
    assert response.get_data() == b""
    assert "Content-Type" not in response.headers, response.headers


def test_logging_out_answers_no_content_without_a_media_type(api):
    account = api.register()
    no_content(api.client.delete("/api/v1/sessions/current", headers=account["headers"]))


def test_revoking_a_device_answers_no_content_without_a_media_type(api):
    account = api.register()
    api.client.post("/api/v1/sms-codes", json={"phone": account["phone"], "purpose": "login"})
    tablet = api.login(account["phone"], device_id="tablet", sms_code=api.inbox.last_code(account["phone"]))
    assert tablet.status_code == 201, tablet.json
    devices = api.client.get("/api/v1/devices", headers=account["headers"]).json["data"]
    tablet_id = next(d["id"] for d in devices if not d["current"])
    no_content(api.client.delete(f"/api/v1/devices/{tablet_id}", headers=account["headers"]))


def test_removing_a_bank_card_answers_no_content_without_a_media_type(api):
    account = api.verified()
    no_content(api.client.delete(f"/api/v1/me/bank-cards/{account['card_id']}", headers=account["headers"]))


@pytest.mark.parametrize(("path", "body"), [
    ("/api/v1/me/login-password", {"current_password": LOGIN_PASSWORD, "new_password": "another long passphrase"}),
    ("/api/v1/me/payment-password", {"current_payment_password": PAYMENT_PASSWORD, "new_payment_password": "246813"}),
])
def test_changing_a_password_answers_no_content_without_a_media_type(api, path, body):
    account = api.register()
    no_content(api.client.put(path, headers=account["headers"], json=body))


def test_a_delivery_report_answers_no_content_without_a_media_type(twilio_app, client):  # noqa: F811
    no_content(report(client, sent_alert(twilio_app), "delivered"))
