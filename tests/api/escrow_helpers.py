"""Helpers of the escrow tests that go beyond the stories: balances, re-login, the verifier, staff (built on the story
helpers)."""

from sqlalchemy import select

from core.db import db
from tests.api.test_escrow_stories import PP, act, books_clean, events, open_trade, paid_and_shipped, run_sweeper, trade
from wallet import ledger
from wallet.escrow_models import Trade

__all__ = [
    "PP",
    "act",
    "books_clean",
    "escrow_balance",
    "events",
    "grant_staff",
    "open_trade",
    "paid_and_shipped",
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

