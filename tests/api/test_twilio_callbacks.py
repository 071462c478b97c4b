"""POST /api/v1/notifications/twilio/status: Twilio's signed delivery reports (form-encoded, not JSON).

Signatures are computed here by hand from Twilio's published scheme (HMAC-SHA1 over the full URL followed by
every form field name and value in name order, base64), not with the library under test.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from urllib.parse import urlencode

import pytest
from flask import Flask

from core.db import db, run_in_transaction
from notifications import dispatcher
from notifications.models import DELIVERED, SENT, UNDELIVERED, Alert
from notifications.outbox import enqueue
from notifications.sms import TwilioSmsSender, sender_from_config
from tests.factories import make_phone

TOKEN = "0123456789abcdef0123456789abcdef"
PUBLIC_URL = "https://wallet.example.test/api/v1/notifications/twilio/status"
PATH = "/api/v1/notifications/twilio/status"
SID = "SM" + "0123456789abcdef" * 2
ACCOUNT = "AC" + "a" * 32  # the account every report below names unless told otherwise


def sign(url: str, params: dict[str, str], token: str = TOKEN, digest=hashlib.sha1) -> str:
    payload = url + "".join(name + params[name] for name in sorted(params))
    return base64.b64encode(hmac.new(token.encode(), payload.encode(), digest).digest()).decode()


class FixedSidSender:
    def __init__(self, sid: str) -> None:
        self.sid = sid

    def send(self, **_message: str) -> str:
        return self.sid


@pytest.fixture
def twilio_app(app: Flask) -> Flask:
    app.config.update(TWILIO_AUTH_TOKEN=TOKEN, TWILIO_STATUS_CALLBACK_URL=PUBLIC_URL)
    return app


def sent_alert(app: Flask, sid: str = SID) -> str:
    """An alert handed over to the provider as message ``sid``."""
    with app.app_context():
        alert = run_in_transaction(lambda: enqueue(make_phone(), "payment_password_changed", locale="en",
                                                   user_id="usr_x", time="now"))
        dispatcher.dispatch_all(FixedSidSender(sid))
        return alert.id


def state(app: Flask, alert_id: str) -> tuple[str, str | None, int | None]:
    with app.app_context():
        alert = db.session.get(Alert, alert_id)
        return alert.status, alert.provider_status, alert.provider_error_code


def report(client, alert_id: str, status: str, *, sid: str = SID, signature: str | None = "sign",
           url: str = PUBLIC_URL, token: str = TOKEN, extra: dict[str, str] | None = None,
           headers: dict[str, str] | None = None):
    """Post a delivery report as Twilio would: the alert id in the query string, the fields in the form."""
    query = urlencode({"alert": alert_id})
    form = {"MessageSid": sid, "SmsSid": sid, "MessageStatus": status, "SmsStatus": status,
            "AccountSid": ACCOUNT, "To": "+12025550100", "ApiVersion": "2010-04-01", **(extra or {})}
    all_headers = dict(headers or {})
    if signature == "sign":
        all_headers["X-Twilio-Signature"] = sign(f"{url}?{query}", form, token)
    elif signature is not None:
        all_headers["X-Twilio-Signature"] = signature
    return client.post(f"{PATH}?{query}", data=form, headers=all_headers)


def test_a_signed_report_updates_the_delivery_status(twilio_app, client):
    alert_id = sent_alert(twilio_app)
    response = report(client, alert_id, "delivered")
    assert response.status_code == 204, response.json
    assert state(twilio_app, alert_id) == (DELIVERED, "delivered", None)


@pytest.mark.parametrize(
    "how",
    ["missing", "garbage", "another token", "signed for another status", "signed for the internal url", "empty"],
)
def test_a_report_without_a_valid_signature_is_refused_and_changes_nothing(twilio_app, client, how):
    alert_id = sent_alert(twilio_app)
    if how == "missing":
        response = report(client, alert_id, "delivered", signature=None)
    elif how == "garbage":
        response = report(client, alert_id, "delivered", signature="bm90IGEgc2lnbmF0dXJl")
    elif how == "another token":
        response = report(client, alert_id, "delivered", token="f" * 32)
    elif how == "signed for another status":
        good = sign(f"{PUBLIC_URL}?alert={alert_id}", {"MessageSid": SID, "MessageStatus": "sent"})
        response = client.post(f"{PATH}?alert={alert_id}", data={"MessageSid": SID, "MessageStatus": "failed"},
                               headers={"X-Twilio-Signature": good})
    elif how == "signed for the internal url":
        # Behind the proxy the app sees http://localhost/...; Twilio signed the public https URL.
        response = report(client, alert_id, "delivered", url="http://localhost" + PATH)
    else:
        response = report(client, alert_id, "delivered", signature="")
    assert response.status_code == 403
    assert response.mimetype == "application/problem+json"
    assert response.json["code"] == "invalid_signature"
    assert state(twilio_app, alert_id) == (SENT, None, None)


@pytest.mark.parametrize("account", [None, "AC" + "b" * 32, "", ACCOUNT.lower(), ACCOUNT + " "],
                         ids=["missing", "another account", "empty", "other case", "trailing space"])
def test_a_signed_report_for_another_account_is_refused_and_changes_nothing(twilio_app, client, account):
    twilio_app.config["TWILIO_ACCOUNT_SID"] = ACCOUNT
    alert_id = sent_alert(twilio_app)
    query = urlencode({"alert": alert_id})
    form = {"MessageSid": SID, "MessageStatus": "delivered", **({} if account is None else {"AccountSid": account})}
    response = client.post(f"{PATH}?{query}", data=form,
                           headers={"X-Twilio-Signature": sign(f"{PUBLIC_URL}?{query}", form)})
    assert response.status_code == 403
    assert response.mimetype == "application/problem+json"
    assert response.json["code"] == "foreign_account"
    assert state(twilio_app, alert_id) == (SENT, None, None)


def test_a_signed_report_for_our_account_is_recorded(twilio_app, client):
    twilio_app.config["TWILIO_ACCOUNT_SID"] = ACCOUNT
    alert_id = sent_alert(twilio_app)
    assert report(client, alert_id, "delivered").status_code == 204
    assert state(twilio_app, alert_id) == (DELIVERED, "delivered", None)


def test_a_forged_report_for_another_account_is_refused_for_its_signature(twilio_app, client):
    twilio_app.config["TWILIO_ACCOUNT_SID"] = ACCOUNT
    alert_id = sent_alert(twilio_app)
    response = report(client, alert_id, "delivered", token="f" * 32, extra={"AccountSid": "AC" + "b" * 32})
    assert (response.status_code, response.json["code"]) == (403, "invalid_signature")
    assert state(twilio_app, alert_id) == (SENT, None, None)


def test_without_an_account_sid_configured_the_account_named_is_not_checked(twilio_app, client):
    """The console sender (development, tests) has no Twilio account to compare with; only the signature counts."""
    assert not twilio_app.config["TWILIO_ACCOUNT_SID"]
    alert_id = sent_alert(twilio_app)
    assert report(client, alert_id, "delivered", extra={"AccountSid": "AC" + "b" * 32}).status_code == 204
    assert state(twilio_app, alert_id)[0] == DELIVERED


def test_without_an_auth_token_every_report_is_refused(app, client):
    alert_id = sent_alert(app)
    response = report(client, alert_id, "delivered", token="")
    assert response.status_code == 403
    assert state(app, alert_id) == (SENT, None, None)


def test_without_a_public_url_the_request_url_is_what_was_signed(twilio_app, client):
    twilio_app.config["TWILIO_STATUS_CALLBACK_URL"] = ""
    alert_id = sent_alert(twilio_app)
    assert report(client, alert_id, "delivered", url=PUBLIC_URL).status_code == 403
    assert report(client, alert_id, "delivered", url="http://localhost" + PATH).status_code == 204
    assert state(twilio_app, alert_id)[0] == DELIVERED


def test_sha256_signatures_named_by_the_settings_header_are_accepted(twilio_app, client):
    alert_id = sent_alert(twilio_app)
    form = {"MessageSid": SID, "MessageStatus": "delivered"}
    url = f"{PUBLIC_URL}?alert={alert_id}"
    response = client.post(f"{PATH}?alert={alert_id}", data=form, headers={
        "X-Twilio-Signature": sign(url, form, digest=hashlib.sha256),
        "X-Twilio-Webhooks-Signature-Settings": "key=whsk_test,algorithm=HMAC_SHA256",
    })
    assert response.status_code == 204
    assert state(twilio_app, alert_id)[0] == DELIVERED


def test_delivered_followed_by_a_late_sent_stays_delivered(twilio_app, client):
    alert_id = sent_alert(twilio_app)
    for status in ("delivered", "sent", "queued", "delivered"):
        assert report(client, alert_id, status).status_code == 204
    assert state(twilio_app, alert_id) == (DELIVERED, "delivered", None)


@pytest.mark.parametrize(
    ("sequence", "expected"),
    [
        (["queued", "sending", "sent"], (SENT, "sent", None)),
        (["sent", "queued"], (SENT, "sent", None)),
        (["sent", "sent", "sent"], (SENT, "sent", None)),
        (["undelivered", "delivered"], (UNDELIVERED, "undelivered", 30003)),
        (["sending", "undelivered", "sent"], (UNDELIVERED, "undelivered", 30003)),
        (["failed", "delivered"], ("failed", "failed", 30003)),
        (["queued", "something-new", "delivered"], (DELIVERED, "delivered", None)),
    ],
)
def test_statuses_only_move_forward_and_never_leave_a_final_one(twilio_app, client, sequence, expected):
    alert_id = sent_alert(twilio_app)
    for status in sequence:
        extra = {"ErrorCode": "30003"} if status in ("undelivered", "failed") else None
        assert report(client, alert_id, status, extra=extra).status_code == 204
    assert state(twilio_app, alert_id) == expected


def test_a_report_is_matched_by_message_sid_even_without_the_alert_id(twilio_app, client):
    alert_id = sent_alert(twilio_app)
    form = {"MessageSid": SID, "MessageStatus": "delivered"}
    response = client.post(PATH, data=form, headers={"X-Twilio-Signature": sign(PUBLIC_URL, form)})
    assert response.status_code == 204
    assert state(twilio_app, alert_id)[0] == DELIVERED


def test_a_report_for_an_unknown_message_is_acknowledged_and_ignored(twilio_app, client):
    alert_id = sent_alert(twilio_app)
    response = report(client, "sms_unknown", "delivered", sid="SM" + "f" * 32)
    assert response.status_code == 204
    assert state(twilio_app, alert_id) == (SENT, None, None)


@pytest.mark.parametrize("form", [{"MessageStatus": "delivered"}, {"MessageSid": "nope", "MessageStatus": "sent"},
                                  {"MessageSid": SID},
                                  # an error code beyond the column (was a 500 on PostgreSQL, found by an audit)
                                  {"MessageSid": SID, "MessageStatus": "undelivered", "ErrorCode": "99999999999"},
                                  {"MessageSid": SID, "MessageStatus": "undelivered", "ErrorCode": "-1"}])
def test_a_signed_but_malformed_report_is_a_validation_error(twilio_app, client, form):
    alert_id = sent_alert(twilio_app)
    response = client.post(PATH, data=form, headers={"X-Twilio-Signature": sign(PUBLIC_URL, form)})
    assert response.status_code == 422
    assert response.json["code"] == "validation_failed"
    assert state(twilio_app, alert_id) == (SENT, None, None)


def test_the_callback_is_in_the_openapi_document(client):
    doc = client.get("/api/v1/openapi.json").json
    operation = doc["paths"][PATH]["post"]
    assert operation["security"] == []
    assert "204" in operation["responses"]


def test_a_callback_url_without_the_auth_token_that_checks_its_reports_stops_the_app(tmp_path):
    """Found by an audit: sending with an API key and no auth token, the app asked Twilio for delivery reports that
    it then refused, every one (403, nothing to check the signature with): no delivery status was ever recorded,
    and the report that keeps an alert whose answer was lost from going out twice never counted."""
    config = {"TWILIO_ACCOUNT_SID": "AC" + "a" * 32, "TWILIO_AUTH_TOKEN": "", "TWILIO_API_KEY_SID": "SK" + "1" * 32,
              "TWILIO_API_KEY_SECRET": "not-a-real-secret", "TWILIO_FROM_NUMBER": "+12025550100",
              "TWILIO_MESSAGING_SERVICE_SID": "", "TWILIO_STATUS_CALLBACK_URL": PUBLIC_URL, "TWILIO_API_BASE": "",
              "SMS_SEND_TIMEOUT_SECONDS": 10.0, "SMS_CONSOLE_FILE": str(tmp_path / "sms.jsonl"), "WALLET_ENV": "test"}
    with pytest.raises(RuntimeError, match="TWILIO_AUTH_TOKEN"):
        sender_from_config(config)
    assert isinstance(sender_from_config({**config, "TWILIO_AUTH_TOKEN": TOKEN}), TwilioSmsSender)
    assert isinstance(sender_from_config({**config, "TWILIO_STATUS_CALLBACK_URL": ""}), TwilioSmsSender)


def test_a_signed_report_with_a_nul_in_its_alert_parameter_is_a_validation_error(twilio_app, client):
    # Was a 500 on PostgreSQL (text cannot hold a NUL) when the report matched no message SID, found by an audit.
    alert_id = sent_alert(twilio_app)
    response = report(client, alert_id + "\x00", "delivered", sid="SM" + "f" * 32)
    assert response.status_code == 422
    assert response.json["code"] == "validation_failed"
    assert response.json["errors"][0]["field"] == "alert"
    assert state(twilio_app, alert_id) == (SENT, None, None)
