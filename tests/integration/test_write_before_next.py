"""A write that goes with the transaction's next statement (``core.sql.write_before_next``, how a trade's step saves
the trade): an idempotency key's stored answer takes it along on PostgreSQL (one statement for the change, the rows
queued for commit and the answer); any other statement, through ``core.sql`` or the ORM, sends it first and reads
its effect; COMMIT sends it when nothing else did; a rollback throws it away."""

import pytest
from sqlalchemy import select, text

from core import sql
from core.db import ReadOnlyViolation, db, is_postgres, run_in_transaction
from core.idempotency import IdempotencyRecord, fingerprint, run_idempotent
from notifications import dispatcher
from notifications.models import Alert
from notifications.outbox import enqueue
from tests.statements import statements_sent

_MARK = "UPDATE alerts SET last_error = :error WHERE id = :id"
_READ = sql.Statement("SELECT last_error FROM alerts WHERE id = :id")


@pytest.fixture()
def alert_id(app):
    with app.app_context():
        made = run_in_transaction(lambda: enqueue("+12025550101", "registered", locale="en", phone="0101").id)
        dispatcher.expand()  # the row these tests write to
        return made


def last_error(app, alert_id):
    with app.app_context():
        return db.session.scalar(select(Alert.last_error).where(Alert.id == alert_id))


def test_the_stored_answer_carries_the_waiting_write_with_the_rows_queued(app, alert_id):
    with app.app_context(), statements_sent(app) as seen:
        def effect():
            sql.write_before_next(_MARK, {"error": "marked", "id": alert_id})
            queued = enqueue("+12025550102", "registered", locale="en", phone="0102")
            return 201, {"id": queued.id}

        status, body, replayed = run_idempotent("usr_a", "key-1", fingerprint("POST", "/x", {}), effect)
        postgres = is_postgres()
        stored = db.session.scalars(select(IdempotencyRecord)).one()
    assert (status, replayed, stored.status_code) == (201, False, 201)
    assert last_error(app, alert_id) == "marked"
    with app.app_context():
        dispatcher.expand()
        assert db.session.get(Alert, body["id"]) is not None
    writes = [s for s in seen
              if "UPDATE alerts" in s or "UPDATE idempotency_keys" in s or "INSERT INTO alert_events" in s]
    if postgres:  # one statement: the waiting write, the queued alert, the stored answer
        assert len(writes) == 1, writes
        assert writes[0].startswith("WITH u AS (UPDATE alerts SET last_error = ")
        assert "INSERT INTO alert_events" in writes[0] and writes[0].endswith("WHERE id = %(record_id)s")
    else:  # in order: the waiting write, the answer, then the alert
        assert [s.split(" SET")[0].split(" (")[0] for s in writes] == [
            "UPDATE alerts", "UPDATE idempotency_keys", "INSERT INTO alert_events"]


@pytest.mark.parametrize("reader", ["core.sql", "orm", "orm text"])
def test_a_later_statement_sends_the_waiting_write_first_and_reads_its_effect(app, alert_id, reader):
    with app.app_context(), statements_sent(app) as seen:
        def work():
            sql.write_before_next(_MARK, {"error": "seen", "id": alert_id})
            if reader == "core.sql":
                return _READ.scalar(id=alert_id)
            if reader == "orm":
                return db.session.scalar(select(Alert.last_error).where(Alert.id == alert_id))
            return db.session.execute(text("SELECT last_error FROM alerts WHERE id = :id"), {"id": alert_id}).scalar()

        assert run_in_transaction(work) == "seen"
    marks = [i for i, s in enumerate(seen) if s.startswith("UPDATE alerts SET last_error")]
    reads = [i for i, s in enumerate(seen) if s.startswith("SELECT") and "last_error" in s]
    assert len(marks) == 1 and reads and marks[0] < reads[0]
    assert last_error(app, alert_id) == "seen"


def test_commit_sends_the_waiting_write_and_it_carries_the_rows_queued(app, alert_id):
    with app.app_context(), statements_sent(app) as seen:
        def work():
            queued = enqueue("+12025550103", "registered", locale="en", phone="0103").id
            sql.write_before_next(_MARK, {"error": "at commit", "id": alert_id})
            return queued

        queued = run_in_transaction(work)
        postgres = is_postgres()
        dispatcher.expand()
        assert db.session.get(Alert, queued) is not None
    assert last_error(app, alert_id) == "at commit"
    inserts = [s for s in seen if "INSERT INTO alert_events" in s]
    assert len(inserts) == 1
    if postgres:  # the waiting write is the statement, the queued row rides along with it
        assert inserts[0].startswith("WITH w0 AS (INSERT INTO alert_events")
        assert inserts[0].endswith("UPDATE alerts SET last_error = %(error)s WHERE id = %(id)s")


def test_a_second_waiting_write_sends_the_first_and_both_land(app, alert_id):
    other = None
    with app.app_context():
        other = run_in_transaction(lambda: enqueue("+12025550104", "registered", locale="en", phone="0104").id)
        dispatcher.expand()

        def work():
            sql.write_before_next(_MARK, {"error": "first", "id": alert_id})
            sql.write_before_next(_MARK, {"error": "second", "id": other})
            sql.write_before_next(_MARK, {"error": "third", "id": alert_id})  # the same row again: last word stands

        run_in_transaction(work)
    assert (last_error(app, alert_id), last_error(app, other)) == ("third", "second")


def test_a_rollback_throws_the_waiting_write_away(app, alert_id):
    with app.app_context():
        def work():
            sql.write_before_next(_MARK, {"error": "lost", "id": alert_id})
            raise RuntimeError("the step failed after saving")

        with pytest.raises(RuntimeError):
            run_in_transaction(work)
    assert last_error(app, alert_id) is None


def test_a_waiting_write_needs_a_writing_transaction(app, alert_id):
    with app.app_context():
        with pytest.raises(RuntimeError):
            sql.write_before_next(_MARK, {"error": "x", "id": alert_id})
        with pytest.raises(ReadOnlyViolation):
            run_in_transaction(lambda: sql.write_before_next(_MARK, {"error": "x", "id": alert_id}), read_only=True)
    assert last_error(app, alert_id) is None


def test_a_read_that_names_its_tables_runs_before_a_waiting_write_to_another(app, alert_id):
    """``Statement(reads_only=...)``: a read of other tables needs nothing the waiting write changes, so it does not
    send it; a read naming the write's table does."""
    of_keys = sql.Statement("SELECT count(*) FROM idempotency_keys", reads_only=["idempotency_keys"])
    of_alerts = sql.Statement("SELECT last_error FROM alerts WHERE id = :id", reads_only=["alerts"])
    with app.app_context(), statements_sent(app) as seen:
        def work():
            sql.write_before_next(_MARK, {"error": "late", "id": alert_id})
            of_keys.scalar()
            return of_alerts.scalar(id=alert_id)

        assert run_in_transaction(work) == "late"
    order = [s.split(" FROM")[0] if s.startswith("SELECT") else s.split(" SET")[0] for s in seen
             if "idempotency_keys" in s or "alerts" in s]
    assert order == ["SELECT count(*)", "UPDATE alerts", "SELECT last_error"]
    with pytest.raises(ValueError):
        sql.Statement("UPDATE alerts SET last_error = NULL", reads_only=["alerts"])
