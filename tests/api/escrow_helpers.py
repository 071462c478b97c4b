"""Helpers of the escrow tests that go beyond the stories: balances, re-login, the verifier, staff (built on the story
helpers)."""

import threading
from contextlib import contextmanager

from sqlalchemy import event, select
from sqlalchemy.engine import Engine

from core import sql
from core.db import db
from tests.api.test_escrow_stories import PP, act, books_clean, events, open_trade, paid_and_shipped, run_sweeper, trade
from wallet import ledger, trades
from wallet.escrow_models import Trade

__all__ = [
    "PP",
    "act",
    "books_clean",
    "disputed",
    "escrow_balance",
    "events",
    "grant_staff",
    "open_trade",
    "paid_and_shipped",
    "refused_refund",
    "relogin",
    "run_sweeper",
    "trade",
    "verify_cli",
]


def escrow_balance(app, trade_id):
    with app.app_context():
        account_id = db.session.scalar(select(Trade.escrow_account_id).where(Trade.id == trade_id))
        return ledger.balance(account_id).available


def relogin(api, *accounts):
    for account in accounts:
        api.relogin(account)


def verify_cli(app, trade_id):
    result = app.test_cli_runner().invoke(args=["escrow", "verify", trade_id])
    return result.exit_code, result.output


def grant_staff(api, app):
    account = api.register()
    assert app.test_cli_runner().invoke(args=["users", "grant-staff", account["phone"]]).exit_code == 0
    return account


def refused_refund(api, buyer, seller, trade_id, amount=20900):
    """The buyer asks for ``amount`` back and the seller refuses; the refund as the buyer's request answered it."""
    refund = act(api, buyer, trade_id, "refunds", amount=amount, reason="not as described").json
    refused = act(api, seller, trade_id, f"refunds/{refund['id']}/refuse", reason="it was fine")
    assert refused.status_code == 200, refused.json
    return refund


def disputed(api, buyer, seller, trade_id, amount=20900):
    """A refused refund the buyer took to the platform: the refund and the dispute."""
    refund = refused_refund(api, buyer, seller, trade_id, amount)
    dispute = act(api, buyer, trade_id, "disputes", reason="seller refuses")
    assert dispute.status_code == 201, dispute.json
    return refund, dispute.json


def parties_by_wallet_age(api, older_wallet, balance=50000):
    """A verified buyer and seller, each topped up with ``balance``, the one named by ``older_wallet`` ("buyer" or
    "seller") registered first, so that its wallet id sorts first: the order PostgreSQL's row locks are taken in, which
    lock-order races depend on."""
    accounts = {}
    names = {"buyer": "李四", "seller": "王五"}
    for role in (older_wallet, "seller" if older_wallet == "buyer" else "buyer"):
        accounts[role] = api.verified(real_name=names[role])
        assert api.money("/api/v1/topups", accounts[role], amount=balance,
                         bank_card_id=accounts[role]["card_id"]).status_code == 201
    return accounts["buyer"], accounts["seller"]


@contextmanager
def evidence_added_as_the_timeline_is_read(app, seller, trade_id):
    """Inside: the first statement of this thread that reads ``trade_timeline`` (through ``core.sql`` or the ORM)
    first lets another thread commit a piece of the seller's evidence. Yields the list of statements it raced (one,
    once it happened), for the test to assert the race took place."""
    reader, raced = threading.get_ident(), []

    def add_evidence_meanwhile() -> None:
        with app.app_context():
            trades.add_evidence(seller["user"]["id"], trade_id, "shipped on time", [])
            db.session.remove()

    def before_the_timeline_is_read(statement: str) -> None:
        if threading.get_ident() == reader and not raced and "trade_timeline" in statement:
            raced.append(statement)
            writer = threading.Thread(target=add_evidence_meanwhile)
            writer.start()
            writer.join()

    def orm_statement(_conn, _cursor, statement, *_args):
        before_the_timeline_is_read(statement)

    sql.listen(before_the_timeline_is_read)
    event.listen(Engine, "before_cursor_execute", orm_statement)
    try:
        yield raced
    finally:
        event.remove(Engine, "before_cursor_execute", orm_statement)
        sql.unlisten(before_the_timeline_is_read)
