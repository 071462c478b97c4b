"""The escrow sweeper's look-ups read only the trades that are due, not every trade opened or shipped so far
(PostgreSQL's plans). The sweeper runs them every few seconds, and the trades table only grows."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, text

from core.db import db
from security.models import User
from tests.plans import rows_touched, statements_of
from wallet import trades
from wallet.escrow_models import Trade

pytestmark = pytest.mark.postgres

EACH = 2000  # finished trades, and trades waiting to be paid or confirmed whose deadlines are days away


@pytest.fixture
def postgres(app):
    if not app.config["SQLALCHEMY_DATABASE_URI"].startswith("postgresql"):
        pytest.skip("needs PostgreSQL (WALLET_TEST_DATABASE_URL)")


def _history(app, clock, buyer: str, seller: str) -> None:
    """Trades written straight into the table in three states, none of them due, then ANALYZE."""
    later = clock.now().replace(tzinfo=None) + timedelta(days=5)
    with app.app_context(), db.engine.begin() as conn:
        # (status, paid, released): the money each state has (the database checks it, migration 0016)
        for status, prefix, paid, released in (("TRADE_FINISHED", "done", 100, 100), ("WAIT_BUYER_PAY", "unpaid", 0, 0),
                                               ("WAIT_BUYER_CONFIRM_GOODS", "shipped", 100, 0)):
            conn.execute(text(
                "INSERT INTO trades (id, buyer_id, seller_id, title, amount, shipping_fee, currency, status, fee_bp,"
                " paid_amount, refunded_amount, released_amount, fee_amount, created_at, pay_deadline,"
                " confirm_deadline, remind_at, reminded, extended, timeline_seq, timeline_hash)"
                " SELECT :prefix || n, :buyer, :seller, 'old', 100, 0, 'CNY', :status, 0, :paid, 0, :released, 0,"
                " :later, :later, :later, :later, false, false, 0, repeat('0', 64) FROM generate_series(1, :n) n"),
                {"prefix": f"trd_{prefix}_", "buyer": buyer, "seller": seller, "status": status, "later": later,
                 "n": EACH, "paid": paid, "released": released})
        conn.exec_driver_sql("ANALYZE trades")


def test_a_sweep_reads_only_the_trades_that_are_due(app, postgres, api, clock):
    api.register()
    api.register()
    with app.app_context():
        buyer, seller = db.session.scalars(select(User.id)).all()
        db.session.rollback()
    _history(app, clock, buyer, seller)

    def sweep():
        with app.app_context():
            assert trades.sweep() == {"closed_unpaid": 0, "reminded": 0, "auto_confirmed": 0, "refund_deadlines": 0}

    reads = [(statement, params) for statement, params in statements_of(app, sweep)
             if Trade.__tablename__ in statement]
    assert len(reads) == 3, reads  # unpaid, to remind, to confirm
    touched = rows_touched(app, reads, {"trades"})
    assert {statement: rows for statement, rows in touched.items() if rows >= 20} == {}
