"""Found by a privacy audit: log lines that carried a phone number or a one-time code."""

import logging

from tests.factories import make_phone


def test_the_console_sender_does_not_log_the_full_phone_number(api, inbox, caplog):
    """The console SMS sender (also what production falls back to without Twilio credentials) logged every
    recipient's full number at INFO; the file it writes to carries it, the log line needs only its end."""
    phone = make_phone()
    with caplog.at_level(logging.INFO, logger="notifications.sms"):
        api.code(phone, "register")
    lines = [record.getMessage() for record in caplog.records if record.name == "notifications.sms"]
    assert lines and all(phone not in line and phone[1:] not in line for line in lines), lines
    assert any(phone[-4:] in line for line in lines)


def test_a_database_error_logs_no_one_time_code_or_phone_number(api, caplog, monkeypatch):
    """An unexpected database error is a 500 whose traceback is logged; its text carried the statement's values, so
    a failed write of an alert logged the one-time code in its body and the phone number it was for. The failure is
    forced here by giving two alerts one id."""
    import notifications.outbox
    import security.codes

    monkeypatch.setattr(notifications.outbox, "new_id", lambda _prefix: "sms_same_id_twice")
    monkeypatch.setattr(security.codes.secrets, "randbelow", lambda _n: 424242)
    first, second = make_phone(), make_phone()
    assert api.client.post("/api/v1/sms-codes", json={"phone": first, "purpose": "register"}).status_code == 202
    with caplog.at_level(logging.INFO):
        failed = api.client.post("/api/v1/sms-codes", json={"phone": second, "purpose": "register"})
    assert failed.status_code == 500 and failed.json["code"] == "internal_error"
    assert "INSERT INTO alerts" not in failed.get_data(as_text=True)
    assert "unhandled error" in caplog.text and "IntegrityError" in caplog.text  # logged, with what failed
    assert "424242" not in caplog.text and second not in caplog.text
