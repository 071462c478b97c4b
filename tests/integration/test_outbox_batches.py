"""The outbox writes a transaction's alerts as one event row at commit, which a dispatcher expands into alerts in
multi-row INSERTs of at most 16 rows: every alert arrives exactly once with its own fields, whatever the count,
and a rollback writes none."""

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError

from core.db import db, run_in_transaction
from notifications import dispatcher
from notifications.models import Alert, AlertEvent
from notifications.outbox import enqueue


@pytest.mark.parametrize("count", [1, 2, 16, 17, 40, 101])
def test_every_alert_of_a_transaction_is_written_once(app, count):
    phones = [f"+1202555{100 + i:04d}" for i in range(count)]
    with app.app_context():
        queued = run_in_transaction(lambda: [
            enqueue(phone, "registered", locale="en" if i % 2 else "zh", user_id=f"usr_{i}", phone=phone[-4:])
            for i, phone in enumerate(phones)])
        # One event row for the transaction, a second past MESSAGES_PER_EVENT (100). Sorted counts, not the rows in
        # id order: ids made in the same millisecond order at random (core.ids), and 101 enqueues can fit in one.
        counts = sorted(db.session.scalars(select(AlertEvent.message_count)).all())
        assert counts == ([count] if count <= 100 else [count - 100, 100])
        assert db.session.scalars(select(Alert)).all() == []
        db.session.rollback()
        assert dispatcher.expand() == count
        assert db.session.scalars(select(AlertEvent)).all() == []
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
        assert db.session.scalars(select(AlertEvent)).all() == []
        assert dispatcher.expand() == 0 and db.session.scalars(select(Alert)).all() == []


def test_an_alert_outside_a_transaction_is_refused(app):
    with app.app_context():
        with pytest.raises(RuntimeError, match="inside the transaction"):
            enqueue("+12025550100", "registered", locale="en", phone="0100")
        assert db.session.scalars(select(AlertEvent)).all() == []


def test_sensitive_and_plain_alerts_of_one_transaction_keep_their_own_flag(app):
    with app.app_context():
        code, plain = run_in_transaction(lambda: (
            enqueue("+12025550100", "sms_code", locale="en", sensitive=True, code="123456", minutes=5,
                    purpose="login"),
            enqueue("+12025550101", "registered", locale="en", phone="0101")))
        dispatcher.expand()
        rows = {row.id: row for row in db.session.scalars(select(Alert))}
    assert (rows[code.id].sensitive, rows[plain.id].sensitive) == (True, False)
    assert {row.status for row in rows.values()} == {"pending"} and {row.attempts for row in rows.values()} == {0}


def test_an_event_without_a_template_is_refused_in_the_changes_transaction(app):
    with app.app_context():
        with pytest.raises(KeyError, match="no SMS template"):
            run_in_transaction(lambda: enqueue("+12025550100", "no_such_event", locale="en"))
        assert db.session.scalars(select(AlertEvent)).all() == []


def test_a_text_that_cannot_be_rendered_fails_its_alert_and_the_rest_go_on(app, caplog):
    """Parameters are rendered by the dispatcher: a caller's mistake there must fail that alert, visibly, and
    neither refuse the change that queued it nor hold back the outbox behind it."""
    with app.app_context():
        broken, fine = run_in_transaction(lambda: (
            enqueue("+12025550100", "registered", locale="en", wrong_name="0100"),  # the template wants ``phone``
            enqueue("+12025550101", "registered", locale="en", phone="0101")))
        assert dispatcher.expand() == 2
        rows = {row.id: row for row in db.session.scalars(select(Alert))}
    assert (rows[broken.id].status, rows[broken.id].body) == ("failed", "")
    assert rows[broken.id].last_error.startswith("not rendered: KeyError")
    assert (rows[fine.id].status, rows[fine.id].body) == ("pending", fine.body)
    assert any(broken.id in r.getMessage() and r.levelname == "ERROR" for r in caplog.records)


def test_the_database_refuses_an_event_without_messages(app):
    with app.app_context():
        with pytest.raises(IntegrityError, match="message_count_positive"):
            db.session.execute(text("INSERT INTO alert_events (id, created_at, message_count, messages)"
                                    " VALUES ('evt_empty', '2026-12-06 00:00:00', 0, '[]')"))
        db.session.rollback()


@pytest.mark.parametrize("messages", ["not json", "{}", "[]", '[{"id": "sms_x"}]',
                                      '[{"id": "sms_x", "user_id": null, "to_phone": "+120255501000000000000000",'
                                      ' "event": "registered", "locale": "en", "sensitive": false, "params": {}}]'])
def test_an_event_that_cannot_be_read_becomes_one_failed_alert_and_the_outbox_goes_on(app, caplog, messages):
    """Only a hand-edited row could be unreadable; it must neither stop every later expansion nor vanish."""
    with app.app_context():
        db.session.execute(text("INSERT INTO alert_events (id, created_at, message_count, messages)"
                                " VALUES ('evt_0000000000broken', '2026-12-06 00:00:00', 1, :messages)"),
                           {"messages": messages})
        db.session.commit()
        fine = run_in_transaction(lambda: enqueue("+12025550101", "registered", locale="en", phone="0101"))
        assert dispatcher.expand() == 2
        rows = {row.event: row for row in db.session.scalars(select(Alert))}
    assert rows["registered"].id == fine.id and rows["registered"].status == "pending"
    failed = rows["unreadable_event"]
    assert (failed.status, failed.body, failed.to_phone) == ("failed", "", "")
    assert failed.last_error.startswith("event evt_0000000000broken cannot be read")
    assert any("evt_0000000000broken" in r.getMessage() and r.levelname == "ERROR" for r in caplog.records)
