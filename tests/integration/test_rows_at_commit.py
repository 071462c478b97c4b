"""Rows written at commit (``core.sql.insert_at_commit``): an idempotency key's stored answer carries the alerts
of its request (one ``alert_events`` row) on PostgreSQL (one statement, no INSERT of their own), writes them just
after itself on SQLite, and whatever is queued after it is still written at commit, in an event of its own. Every
alert arrives once with its own fields once a dispatcher has expanded the events."""

import json

import pytest
from sqlalchemy import select

from core.db import db, is_postgres, run_in_transaction
from core.idempotency import IdempotencyRecord, fingerprint, run_idempotent
from notifications import dispatcher
from notifications.models import Alert, AlertEvent
from notifications.outbox import enqueue
from tests.statements import statements_sent


def phone(i: int) -> str:
    return f"+1202555{100 + i:04d}"


def locale(i: int) -> str:
    return "zh" if i % 2 else "en"


@pytest.mark.parametrize("count", [2, 17])
def test_the_stored_answer_carries_the_alerts_of_its_request(app, clock, count):
    clock.advance(microseconds=123_456)  # a timestamp keeps its microseconds on the way
    with app.app_context(), statements_sent(app) as seen:
        queued = []

        def effect():
            queued[:] = [enqueue(phone(i), "registered", locale=locale(i), user_id=f"usr_{i}", phone=phone(i)[-4:])
                         for i in range(count)]
            return 201, {"alerts": [alert.id for alert in queued]}

        status, body, replayed = run_idempotent("usr_payer", "key-1", fingerprint("POST", "/x", {}), effect)
        assert [event.message_count for event in db.session.scalars(select(AlertEvent))] == [count]
        db.session.rollback()
        dispatcher.expand()
        rows = {row.id: row for row in db.session.scalars(select(Alert))}
        record = db.session.scalars(select(IdempotencyRecord)).one()
        postgres = is_postgres()

    assert (status, replayed) == (201, False)
    assert sorted(rows) == sorted(body["alerts"])
    for i, alert_id in enumerate(body["alerts"]):
        row = rows[alert_id]
        assert (row.to_phone, row.user_id, row.status, row.attempts) == (phone(i), f"usr_{i}", "pending", 0)
        assert (row.event, row.locale, row.body, row.sensitive) == ("registered", locale(i), queued[i].body, False)
        assert row.created_at == row.updated_at == row.next_attempt_at == clock.now()
    assert any(not row.body.isascii() for row in rows.values())  # a Chinese body arrives intact
    assert (record.status_code, json.loads(record.response_body)) == (201, body)
    alone = [s for s in seen if s.startswith("INSERT INTO alert_events")]
    carried = [s for s in seen if s.startswith("WITH w0 AS (INSERT INTO alert_events")]
    expanded = [s for s in seen if s.startswith("INSERT INTO alerts")]
    assert len(expanded) == (1 if count <= 16 else 2)  # the dispatcher's expansion, 16 rows an INSERT
    if postgres:
        assert alone == [] and len(carried) == 1
        assert carried[0].count("INSERT INTO alert_events") == 1 and "INSERT INTO alerts" not in carried[0]
        assert "UPDATE idempotency_keys" in carried[0]
    else:
        assert carried == [] and len(alone) == 1


def test_alerts_queued_after_the_carrying_statement_are_written_at_commit(app):
    with app.app_context():
        def work():
            run_idempotent("usr_payer", "key-2", fingerprint("POST", "/x", {}),
                           lambda: (201, {"id": enqueue(phone(1), "registered", locale="en", phone="0101").id}))
            return enqueue(phone(2), "registered", locale="en", phone="0102").id

        later = run_in_transaction(work)
        # The first event was written by the stored answer; the alert queued after it could not join it.
        assert sorted(event.message_count for event in db.session.scalars(select(AlertEvent))) == [1, 1]
        db.session.rollback()
        assert dispatcher.expand() == 2
        assert {row.to_phone for row in db.session.scalars(select(Alert))} == {phone(1), phone(2)}
        assert db.session.get(Alert, later) is not None


def test_a_rollback_after_the_carrying_statement_writes_no_alert(app):
    with app.app_context():
        def work():
            run_idempotent("usr_payer", "key-3", fingerprint("POST", "/x", {}),
                           lambda: (201, {"id": enqueue(phone(1), "registered", locale="en", phone="0101").id}))
            enqueue(phone(2), "registered", locale="en", phone="0102")
            raise RuntimeError("the change failed after its answer was stored")

        with pytest.raises(RuntimeError):
            run_in_transaction(work)
        assert db.session.scalars(select(AlertEvent)).all() == []
        assert dispatcher.expand() == 0 and db.session.scalars(select(Alert)).all() == []
        assert db.session.scalars(select(IdempotencyRecord)).all() == []
