"""The real TwilioSmsSender against Prism: what it sends keeps Twilio's published contract, and a request that
breaks the contract is refused (proof that Prism validates, so a green run means something)."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import pytest

from app import create_app
from notifications.sms import SendFailed, TwilioSmsSender
from tests.contract.conftest import ACCOUNT_SID, CALLBACK_URL, FROM_NUMBER, make_sender

MESSAGES = f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
SID = re.compile(r"^SM[0-9a-fA-F]{32}$")


def send(sender: TwilioSmsSender, body: str = "【担保钱包】您的支付密码已修改。", alert_id: str = "sms_01test") -> str:
    return sender.send(to="+12025550123", body=body, event="payment_password_changed", alert_id=alert_id,
                       created_at="2026-01-15T08:00:00+00:00")


def test_a_message_from_a_number_keeps_the_contract(prism_server):
    sender = make_sender(prism_server.base_url)
    assert SID.match(send(sender, alert_id="sms_01abc"))

    [exchange] = sender.http_client.exchanges
    assert (exchange.method, exchange.status) == ("POST", 201)
    assert exchange.url == prism_server.base_url + MESSAGES
    assert exchange.auth == (ACCOUNT_SID, sender.client.password)
    assert exchange.data["To"] == "+12025550123"
    assert exchange.data["From"] == FROM_NUMBER
    assert exchange.data["Body"].startswith("【担保钱包】")
    callback = urlsplit(exchange.data["StatusCallback"])
    assert callback._replace(query="").geturl() == CALLBACK_URL
    assert parse_qs(callback.query) == {"alert": ["sms_01abc"]}


def test_a_message_through_a_messaging_service_keeps_the_contract(prism_server):
    sender = make_sender(prism_server.base_url, from_number="", messaging_service_sid="MG" + "0123456789abcdef" * 2)
    assert SID.match(send(sender))
    [exchange] = sender.http_client.exchanges
    assert "From" not in exchange.data
    assert exchange.data["MessagingServiceSid"].startswith("MG")


def test_api_key_authentication_keeps_the_contract(prism_server):
    key = "SK" + "fedcba9876543210" * 2
    sender = make_sender(prism_server.base_url, auth_token="", api_key_sid=key, api_key_secret="s3cret-key-value")
    assert SID.match(send(sender))
    [exchange] = sender.http_client.exchanges
    assert exchange.auth == (key, "s3cret-key-value")
    assert exchange.url.endswith(MESSAGES), "the account, not the key, is in the path"


def test_prism_refuses_a_message_without_to(prism_server):
    """The deliberately broken request: Twilio requires ``To``; Prism must say 422, not 201."""
    sender = make_sender(prism_server.base_url)
    response = sender.client.request(
        "POST", f"https://api.twilio.com{MESSAGES}", data={"From": FROM_NUMBER, "Body": "no recipient"}
    )
    assert response.status_code == 422, response.text
    assert "'To'" in response.text


@pytest.mark.parametrize(
    ("setting", "value", "violation"),
    [
        ("messaging_service_sid", "MG-not-a-service", "MessagingServiceSid"),
        ("status_callback_url", "not a url", "StatusCallback"),
        ("account_sid", "ACnot-an-account", "accountsid"),
    ],
)
def test_a_send_that_breaks_the_contract_fails(prism_server, setting, value, violation):
    sender = make_sender(prism_server.base_url, **{setting: value})
    with pytest.raises(SendFailed) as failure:
        send(sender)
    assert "422" in str(failure.value)
    assert not failure.value.permanent, "a request we built wrongly is retried until someone fixes it"
    [exchange] = sender.http_client.exchanges
    assert exchange.status == 422
    assert violation in exchange.body


def test_the_app_builds_the_twilio_sender_from_its_configuration(prism_server, tmp_path):
    app = create_app({
        "WALLET_ENV": "test",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'unused.db'}",
        "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": "0123456789abcdef" * 2,
        "TWILIO_FROM_NUMBER": FROM_NUMBER,
        "TWILIO_STATUS_CALLBACK_URL": CALLBACK_URL,
        "TWILIO_API_BASE": prism_server.base_url,
    })
    sender = app.extensions["sms_sender"]
    assert isinstance(sender, TwilioSmsSender)
    assert SID.match(send(sender))
