"""The outbox writes a transaction's alerts in multi-row INSERTs of at most 16 rows at commit: every alert
arrives exactly once with its own fields, whatever the count, and a rollback writes none."""

import pytest
from sqlalchemy import select

from core.db import db, run_in_transaction
from notifications.models import Alert
from notifications.outbox import enqueue


@pytest.mark.parametrize("count", [1, 2, 16, 17, 40])
def test_every_alert_of_a_transaction_is_written_once(app, count):
    phones = [f"+1202555{100 + i:04d}" for i in range(count)]
    with app.app_context():
        queued = run_in_transaction(lambda: [
            enqueue(phone, "registered", locale="en" if i % 2 else "zh", user_id=f"usr_{i}", phone=phone[-4:])
            for i, phone in enumerate(phones)])
        rows = {row.id: row for row in db.session.scalars(select(Alert))}
    assert len(rows) == count
    for i, alert in enumerate(queued):
        row = rows[alert.id]
        assert (row.to_phone, row.user_id, row.locale, row.body, row.status, row.attempts) == (
            phones[i], f"usr_{i}", "en" if i % 2 else "zh", alert.body, "pending", 0)
        assert row.next_attempt_at.tzinfo is not None and row.created_at == row.next_attempt_at


def test_a_rolled_back_transaction_writes_no_alert(app):
    with app.app_context():
        def fails():
            for i in range(20):
                enqueue(f"+1202555{100 + i:04d}", "registered", locale="en", phone="0100")
            raise RuntimeError("the change failed")

        with pytest.raises(RuntimeError):
            run_in_transaction(fails)
        assert db.session.scalars(select(Alert)).all() == []


def test_an_alert_outside_a_transaction_is_refused(app):
    with app.app_context():
        with pytest.raises(RuntimeError, match="inside the transaction"):
            enqueue("+12025550100", "registered", locale="en", phone="0100")
        assert db.session.scalars(select(Alert)).all() == []


def test_sensitive_and_plain_alerts_of_one_transaction_keep_their_own_flag(app):
    with app.app_context():
        code, plain = run_in_transaction(lambda: (
            enqueue("+12025550100", "sms_code", locale="en", sensitive=True, code="123456", minutes=5,
                    purpose="login"),
            enqueue("+12025550101", "registered", locale="en", phone="0101")))
        rows = {row.id: row for row in db.session.scalars(select(Alert))}
    assert (rows[code.id].sensitive, rows[plain.id].sensitive) == (True, False)
    assert {row.status for row in rows.values()} == {"pending"} and {row.attempts for row in rows.values()} == {0}
