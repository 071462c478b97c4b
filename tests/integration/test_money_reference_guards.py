"""What the database refuses of the references money rows make to the ledger, written with plain SQL: a trade's
escrow account is its own (owned by the trade, in the trade's currency), a succeeded top-up names a transfer that
exists, and a withdrawal pays out the amount its hold holds. The services only ever write good rows; these tests
bypass them, as an operator's SQL or a bug would.

Found missing by an audit: ``trades.escrow_account_id`` and ``topups.transfer_id`` were plain strings, so a trade
could be pointed at a buyer's wallet or at another trade's escrow account (the release and refund steps then move
that account's money, and the books still balance), and the 0016 rule "a succeeded top-up names its transfer" held
for any string at all; a withdrawal's amount (what the bank is told to pay) could differ from its hold's (what the
ledger takes from the wallet).
"""

from __future__ import annotations

from datetime import datetime

import pytest
from flask_migrate import upgrade
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from app import create_app
from core.db import db
from wallet import ledger

NOW = datetime(2026, 1, 15, 8, 0)  # naive UTC, as stored
_USER = ("INSERT INTO users (id, phone, login_password_hash, payment_password_hash, locale, is_staff, totp_enabled,"
         " created_at, updated_at) VALUES (:id, :phone, 'x', 'x', 'en', false, false, :now, :now)")
_TRADE = ("INSERT INTO trades (id, buyer_id, seller_id, title, amount, shipping_fee, currency, status, fee_bp,"
          " paid_amount, refunded_amount, released_amount, fee_amount, escrow_account_id, created_at, reminded,"
          " extended, timeline_seq, timeline_hash) VALUES (:id, 'usr_b', 'usr_s', 't', 100, 0, :currency,"
          " 'WAIT_BUYER_PAY', 0, 0, 0, 0, 0, :escrow, :now, false, false, 0, :genesis)")
_CARD = ("INSERT INTO bank_cards (id, user_id, bank_code, card_hash, last4, holder_name, bank_token, created_at)"
         " VALUES ('card_1', 'usr_b', 'ICBC', 'h-1', '1234', '张三', 'sim-ICBC-token-1234', :now)")
_WITHDRAWAL = ("INSERT INTO withdrawals (id, user_id, card_id, amount, currency, hold_id, status, attempts,"
               " next_attempt_at, created_at) VALUES (:id, 'usr_b', 'card_1', :amount, :currency, :hold_id, 'pending',"
               " 0, :now, :now)")
_TOPUP = ("INSERT INTO topups (id, user_id, card_id, amount, currency, status, transfer_id, created_at)"
          " VALUES (:id, 'usr_b', 'card_1', 100, 'CNY', 'succeeded', :transfer_id, :now)")


@pytest.fixture
def parties(app):
    with app.app_context():
        for user_id, phone in (("usr_b", "+12025550107"), ("usr_s", "+12025550108")):
            db.session.execute(text(_USER), {"id": user_id, "phone": phone, "now": NOW})
        db.session.commit()
        yield
        db.session.rollback()


def _write(sql: str, **params) -> None:
    db.session.execute(text(sql), {"now": NOW, "genesis": "0" * 64, **params})
    db.session.commit()


def _refused(sql: str, **params) -> None:
    with pytest.raises(IntegrityError):
        _write(sql, **params)
    db.session.rollback()


def _escrow(trade_id: str, currency: str = "CNY") -> str:
    account = ledger.escrow_account(trade_id, currency)
    db.session.commit()
    return account


def test_a_trades_escrow_account_is_its_own(parties):
    wallet = ledger.open_wallet("usr_b")
    db.session.commit()
    other_trades = _escrow("trd_other")
    in_dollars = _escrow("trd_1", "USD")
    _refused(_TRADE, id="trd_1", currency="CNY", escrow=wallet)          # the buyer's wallet
    _refused(_TRADE, id="trd_1", currency="CNY", escrow=other_trades)    # another trade's escrow account
    _refused(_TRADE, id="trd_1", currency="CNY", escrow=in_dollars)      # its own, in another currency
    _refused(_TRADE, id="trd_1", currency="CNY", escrow="la_nothing")    # no account at all
    _write(_TRADE, id="trd_1", currency="CNY", escrow=_escrow("trd_1"))
    _write(_TRADE, id="trd_2", currency="CNY", escrow=None)             # an older trade: its account comes on payment
    _refused("UPDATE trades SET escrow_account_id = :escrow WHERE id = 'trd_2'", escrow=wallet)


def test_a_succeeded_top_up_names_a_transfer_that_exists(parties):
    _write(_CARD)
    _refused(_TOPUP, id="top_1", transfer_id="trf_nothing")
    wallet, bank = ledger.open_wallet("usr_b"), ledger.system_account(ledger.BANK_CLEARING, "ICBC", shard=0)
    credited = ledger.transfer(bank, wallet, 100, kind=ledger.TOPUP)
    db.session.commit()
    _write(_TOPUP, id="top_1", transfer_id=credited.id)



def test_a_succeeded_top_up_credits_what_the_bank_was_charged(parties):
    """The top-up row says 100 CNY was taken at the bank for usr_b; its transfer must credit just that to usr_b's
    wallet (migration 0018's trigger on top-ups)."""
    _write(_CARD)
    wallet, bank = ledger.open_wallet("usr_b"), ledger.system_account(ledger.BANK_CLEARING, "ICBC", shard=0)
    other, usd_bank = ledger.open_wallet("usr_s"), ledger.system_account(ledger.BANK_CLEARING, "ICBC", "USD", shard=0)
    too_little = ledger.transfer(bank, wallet, 1, kind=ledger.TOPUP)
    to_someone_else = ledger.transfer(bank, other, 100, kind=ledger.TOPUP)
    in_dollars = ledger.transfer(usd_bank, ledger.open_wallet("usr_b", "USD"), 100, kind=ledger.TOPUP, currency="USD")
    right = ledger.transfer(bank, wallet, 100, kind=ledger.TOPUP)
    db.session.commit()
    for wrong in (too_little, to_someone_else, in_dollars):
        _refused(_TOPUP, id="top_1", transfer_id=wrong.id)
    _write(_TOPUP, id="top_1", transfer_id=right.id)
    _refused("UPDATE topups SET amount = 99 WHERE id = 'top_1'")
    _refused("UPDATE topups SET transfer_id = :other WHERE id = 'top_1'", other=too_little.id)


def test_a_withdrawal_pays_out_what_its_hold_holds(parties):
    """The bank is paid ``withdrawals.amount``; the ledger debits the wallet by the hold's amount when it posts."""
    _write(_CARD)
    wallet, bank = ledger.open_wallet("usr_b"), ledger.system_account(ledger.BANK_CLEARING, "ICBC", shard=0)
    ledger.transfer(bank, wallet, 100, kind=ledger.TOPUP)
    held = ledger.create_hold(wallet, bank, 100, kind=ledger.WITHDRAWAL).id
    db.session.commit()
    _refused(_WITHDRAWAL, id="wdr_1", amount=1_000_000, currency="CNY", hold_id=held)
    _refused(_WITHDRAWAL, id="wdr_1", amount=100, currency="USD", hold_id=held)
    _write(_WITHDRAWAL, id="wdr_1", amount=100, currency="CNY", hold_id=held)
    _refused("UPDATE withdrawals SET amount = 1000000 WHERE id = 'wdr_1'")

@pytest.mark.parametrize(("bad_rows", "message"), [
    ([_TRADE], "1 trades whose escrow account is not an account of the trade in its currency"),
    ([_CARD, _TOPUP], "1 top-ups naming a transfer that does not exist"),
], ids=["trade", "top-up"])
def test_the_migration_stops_on_rows_that_break_a_rule(scratch_url, capfd, bad_rows, message):
    app = create_app({"DATABASE_URL": scratch_url, "WALLET_ENV": "test"})
    with app.app_context():
        upgrade(revision="0016")
        for user_id, phone in (("usr_b", "+12025550107"), ("usr_s", "+12025550108")):
            db.session.execute(text(_USER), {"id": user_id, "phone": phone, "now": NOW})
        wallet = ledger.open_wallet("usr_b")  # what the trade names as its escrow account
        for sql in bad_rows:
            db.session.execute(text(sql), {"id": "trd_1" if sql is _TRADE else "top_1", "currency": "CNY",
                                           "escrow": wallet, "transfer_id": "trf_nothing", "now": NOW,
                                           "genesis": "0" * 64})
        db.session.commit()
        db.session.remove()
        with pytest.raises(SystemExit):  # flask-migrate logs the migration's error and exits
            upgrade(revision="0017")
        assert message in capfd.readouterr().err
        db.engine.dispose()


def test_the_migration_stops_on_a_top_up_its_transfer_does_not_credit(scratch_url, capfd):
    app = create_app({"DATABASE_URL": scratch_url, "WALLET_ENV": "test"})
    with app.app_context():
        upgrade(revision="0017")
        db.session.execute(text(_USER), {"id": "usr_b", "phone": "+12025550107", "now": NOW})
        db.session.execute(text(_CARD), {"now": NOW})
        bank = ledger.system_account(ledger.BANK_CLEARING, "ICBC", shard=0)
        credited = ledger.transfer(bank, ledger.open_wallet("usr_b"), 1, kind=ledger.TOPUP)  # the top-up says 100
        db.session.execute(text(_TOPUP), {"id": "top_1", "transfer_id": credited.id, "now": NOW})
        db.session.commit()
        db.session.remove()
        with pytest.raises(SystemExit):
            upgrade(revision="0018")
        assert "1 top-ups whose transfer does not credit the top-up's amount" in capfd.readouterr().err
        db.engine.dispose()
