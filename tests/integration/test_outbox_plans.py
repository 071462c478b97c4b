"""A /metrics scrape and a dispatcher's claim read through indexes, never a whole table (PostgreSQL's plans).

The tables behind them grow without end (every alert ever sent, everyone who ever mistyped a password), so a
statement that has to read one from end to end gets slower every day. The scrape's statements are run again under
``EXPLAIN ANALYZE`` against tables holding thousands of rows that are in no queue, and the rows each plan touched
in those tables are counted: read through the partial indexes, only the few rows that matter are.
"""

from __future__ import annotations

import pytest
from sqlalchemy import text

from core.db import db
from notifications import dispatcher
from tests.plans import rows_touched, statements_of

pytestmark = pytest.mark.postgres

HISTORY = 5000  # sent alerts and harmless lock states, as a platform in use has by the million


@pytest.fixture
def postgres(app):
    if not app.config["SQLALCHEMY_DATABASE_URI"].startswith("postgresql"):
        pytest.skip("needs PostgreSQL (WALLET_TEST_DATABASE_URL)")


def _history(app) -> None:
    """Sent alerts and unlocked lock states, written straight into the tables, then ANALYZE."""
    with app.app_context(), db.engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO alerts (id, user_id, to_phone, event, locale, body, status, next_attempt_at, created_at,"
            " updated_at, sent_at) SELECT 'sms_history_' || n, 'usr_history', '+12025550199', 'transfer_received',"
            " 'en', 'old news', 'sent', now(), now(), now(), now() FROM generate_series(1, :n) n"), {"n": HISTORY})
        conn.execute(text(
            "INSERT INTO credential_locks (subject, kind, recent_failures, consecutive_failures, hard_locked)"
            " SELECT 'usr_history_' || n, 'payment', '[]', 0, false FROM generate_series(1, :n) n"), {"n": HISTORY})
        conn.exec_driver_sql("ANALYZE alerts")
        conn.exec_driver_sql("ANALYZE credential_locks")


def test_a_metrics_scrape_reads_no_table_from_end_to_end(app, postgres, client, api):
    account = api.register()  # alerts still to send, a lock state after a wrong password, a ledger check
    api.login(account["phone"], "not the password")
    assert app.test_cli_runner().invoke(args=["wallet", "check"]).exit_code == 0
    _history(app)
    scrapes = []
    reads = statements_of(app, lambda: scrapes.append(client.get("/metrics")))
    assert scrapes[0].status_code == 200
    tables = " ".join(statement for statement, _ in reads)
    assert "alerts" in tables and "credential_locks" in tables and "ledger_checks" in tables
    touched = rows_touched(app, reads, {"alerts", "credential_locks"})
    assert {statement: rows for statement, rows in touched.items() if rows >= 20} == {}


def test_a_claim_takes_its_batch_off_the_front_of_the_due_index(app, postgres, clock):
    claim = dispatcher._CLAIM_SQL.format(due=dispatcher._DUE + " FOR UPDATE SKIP LOCKED")
    with app.app_context(), db.engine.connect() as conn:
        conn.exec_driver_sql("SET enable_seqscan = off")
        plan = "\n".join(row[0] for row in conn.execute(
            text("EXPLAIN " + claim), {"token": "t", "lease_end": clock.now(), "now": clock.now(), "limit": 50}))
        conn.rollback()
    # In due order straight from the index, stopping after the batch: no sort of every due row.
    assert "ix_alerts_due" in plan and "Sort" not in plan, plan
