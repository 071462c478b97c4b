"""Acceptance 3 of the foundation: every account alert is written with its change and reaches the console."""

import re

from sqlalchemy import select

from core.db import db
from notifications import dispatcher
from notifications.models import Alert
from security import accounts
from tests.factories import LOGIN_PASSWORD, PAYMENT_PASSWORD, make_phone

SECRETS = [LOGIN_PASSWORD, PAYMENT_PASSWORD, "brand new phrase", "recovered phrase", "246813", "wrong guess"]


def outbox(app, phone):
    with app.app_context():
        dispatcher.expand()
        return [a.event for a in db.session.scalars(select(Alert).where(Alert.to_phone == phone).order_by(Alert.id))]


def test_every_account_alert_is_in_the_outbox_and_reaches_the_console(api, app, clock, inbox):
    account = api.register(device_id="a", locale="en")
    phone, headers = account["phone"], account["headers"]
    assert outbox(app, phone)[-1] == "registered"

    api.login(phone, device_id="b", sms_code=api.code(phone, "login"))
    assert outbox(app, phone)[-1] == "new_device_login"

    api.client.put("/api/v1/me/login-password", headers=headers,
                   json={"current_password": LOGIN_PASSWORD, "new_password": "brand new phrase"})
    assert outbox(app, phone)[-1] == "login_password_changed"

    api.client.put("/api/v1/me/payment-password", headers=headers,
                   json={"current_payment_password": PAYMENT_PASSWORD, "new_payment_password": "246813"})
    assert outbox(app, phone)[-1] == "payment_password_changed"

    api.client.post("/api/v1/password-resets",
                    json={"phone": phone, "sms_code": api.code(phone, "recover"), "new_password": "recovered phrase"})
    assert outbox(app, phone)[-1] == "password_recovered"

    # The recovery signed every device out: "b" proves itself again.
    headers = api.bearer(api.login(phone, "recovered phrase", device_id="b",
                                   sms_code=api.code(phone, "login")).json["access_token"])
    api.client.patch("/api/v1/me", headers=headers,
                     json={"email": "x@example.com", "login_password": "recovered phrase"})
    assert outbox(app, phone)[-1] == "email_changed"

    for _ in range(3):
        api.client.post("/api/v1/me/payment-password/verify", json={"payment_password": "wrong guess"[:6]},
                        headers=headers)
    assert outbox(app, phone)[-1] == "payment_locked"

    clock.advance(hours=24)  # a phone change waits out the day that follows a recovery by SMS alone
    headers = api.bearer(api.login(phone, "recovered phrase", device_id="b").json["access_token"])
    new_phone = make_phone()
    api.client.put("/api/v1/me/phone", headers=headers,
                   json={"new_phone": new_phone, "sms_code": api.code(new_phone, "change_phone"),
                         "login_password": "recovered phrase"})
    assert outbox(app, phone)[-1] == "phone_changed_old"
    assert outbox(app, new_phone)[-1] == "phone_changed_new"

    for _ in range(3):
        api.login(new_phone, "wrong guess")
    assert outbox(app, new_phone)[-1] == "login_locked"

    delivered = inbox.messages(to=phone) + inbox.messages(to=new_phone)
    expected = {"registered", "new_device_login", "login_password_changed", "payment_password_changed",
                "password_recovered", "email_changed", "payment_locked", "phone_changed_old",
                "phone_changed_new", "login_locked", "sms_code"}
    assert {m["event"] for m in delivered} == expected
    for message in delivered:
        assert set(message) == {"to", "body", "event", "created_at"}
        for secret in SECRETS:
            assert secret not in message["body"], (message["event"], secret)


def test_code_bodies_are_removed_from_the_outbox_once_sent(api, app):
    phone = make_phone()
    api.code(phone, "register")  # sends through the dispatcher
    with app.app_context():
        alert = db.session.scalars(select(Alert).where(Alert.to_phone == phone)).one()
        assert alert.status == "sent"
        assert not any(ch.isdigit() for ch in alert.body)


def test_a_rolled_back_change_leaves_no_alert(api, app, monkeypatch):
    account = api.register()
    new_phone = make_phone()
    code = api.code(new_phone, "change_phone")
    before = outbox(app, account["phone"])

    real_enqueue, calls = accounts.enqueue, []

    def enqueue_then_fail_on_second(*args, **kwargs):
        calls.append(args[1])
        real_enqueue(*args, **kwargs)
        if len(calls) == 2:
            raise RuntimeError("simulated crash after the first alert was written")

    monkeypatch.setattr(accounts, "enqueue", enqueue_then_fail_on_second)
    response = api.client.put("/api/v1/me/phone", headers=account["headers"],
                              json={"new_phone": new_phone, "sms_code": code, "login_password": LOGIN_PASSWORD})
    assert response.status_code == 500
    assert calls == ["phone_changed_old", "phone_changed_new"]
    assert outbox(app, account["phone"]) == before
    assert outbox(app, new_phone) == ["sms_code"]
    assert api.client.get("/api/v1/me", headers=account["headers"]).json["phone"] == account["phone"]


def test_an_unexpected_error_answers_a_bare_500_with_a_request_id(api, app, monkeypatch):
    account = api.register()

    def boom(*_args, **_kwargs):
        raise RuntimeError("bug")

    monkeypatch.setattr(accounts, "start_totp_enrolment", boom)
    response = api.client.post("/api/v1/me/totp", headers=account["headers"], json={"login_password": LOGIN_PASSWORD})
    assert response.status_code == 500
    assert response.mimetype == "application/problem+json"
    assert response.json["code"] == "internal_error" and response.json["request_id"]
    assert "bug" not in response.get_data(as_text=True) and "Traceback" not in response.get_data(as_text=True)


def test_a_device_name_typed_at_sign_in_cannot_put_a_number_or_a_link_in_the_owners_alert(api, inbox):
    """Found by an audit: whoever signs in on a new device names it, and the owner's "Not you? Change your login
    password now" alert quoted that name as typed: a hotline number with spaces, a link, a forged second line."""
    phone = api.register(locale="en")["phone"]
    response = api.login(phone, device_id="b", sms_code=api.code(phone, "login"),
                         device_name="Help 138 0013 8000\nhttps://wallet-help.example")
    assert response.status_code == 201, response.json
    [alert] = inbox.messages(to=phone, event="new_device_login")
    shown = re.search(r'new device "(.*)" at ', alert["body"], re.DOTALL)
    assert shown and "Help" in shown.group(1), alert["body"]
    assert not re.search(r"\d(?:[\s\-]*\d){6,}", shown.group(1)), alert["body"]
    assert "://" not in alert["body"] and "wallet-help.example" not in alert["body"] and "\n" not in alert["body"]


def test_a_new_email_cannot_put_a_link_in_the_owners_alert(api, inbox):
    """Found by an audit: the email pattern accepts ``a@b.example/https://...``, and the "Not you?" alert showed
    everything after the ``@`` as typed: a link chosen by whoever changed the email."""
    account = api.register(locale="en")
    response = api.client.patch("/api/v1/me", headers=account["headers"], json={
        "email": "a@b.example/https://wallet-help.example/reset", "login_password": LOGIN_PASSWORD})
    assert response.status_code == 200, response.json
    [alert] = inbox.messages(to=account["phone"], event="email_changed")
    assert "a***@***" in alert["body"] and "wallet-help" not in alert["body"], alert["body"]


def test_a_device_without_a_name_is_called_so_in_the_users_language(api, inbox):
    """Found by an audit: a client that sends no ``device_name`` made the Chinese alert read 在新设备“unnamed”上登录."""
    phone = api.register(locale="zh")["phone"]
    response = api.login(phone, device_id="b", sms_code=api.code(phone, "login"))
    assert response.status_code == 201, response.json
    [alert] = inbox.messages(to=phone, event="new_device_login")
    assert "在新设备“未命名设备”上登录" in alert["body"], alert["body"]
