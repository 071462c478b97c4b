"""``flask wallet check`` holds the ledger against the money tables beside it (``wallet.check``, item 8).

Found by an audit that wrote rows with plain SQL, as a buggy release could: each of these kept every ledger rule
(balanced transfers, cached totals, no wallet below zero), so the checker called the books clean, while a trade's
escrow money went to another trade, a "succeeded" withdrawal kept the money in the wallet, or a top-up was credited
by a payment from another user."""

from __future__ import annotations

from datetime import datetime

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from core.db import db
from tests.db_triggers import trigger_off
from wallet import ledger
from wallet.check import check_invariants
from wallet.models import BANK_CLEARING, FEES, SYSTEM

NOW = datetime(2026, 1, 15, 8, 0)
_USER = ("INSERT INTO users (id, phone, login_password_hash, payment_password_hash, locale, is_staff, totp_enabled,"
         " created_at, updated_at) VALUES (:id, :phone, 'x', 'x', 'en', false, false, :now, :now)")
_CARD = ("INSERT INTO bank_cards (id, user_id, bank_code, card_hash, last4, holder_name, bank_token, created_at)"
         " VALUES ('card_1', 'usr_b', 'ICBC', 'h-1', '1234', '张三', 'sim-ICBC-token-1234', :now)")
_WITHDRAWAL = ("INSERT INTO withdrawals (id, user_id, card_id, amount, currency, hold_id, status, attempts,"
               " next_attempt_at, created_at) VALUES (:id, 'usr_b', 'card_1', :amount, 'CNY', :hold_id, :status,"
               " 0, :now, :now)")
_TOPUP = ("INSERT INTO topups (id, user_id, card_id, amount, currency, status, transfer_id, created_at)"
          " VALUES (:id, 'usr_b', 'card_1', 100, 'CNY', 'succeeded', :transfer_id, :now)")
_TRADE = ("INSERT INTO trades (id, buyer_id, seller_id, title, amount, shipping_fee, currency, status, fee_bp,"
          " paid_amount, refunded_amount, released_amount, fee_amount, escrow_account_id, created_at, reminded,"
          " extended, timeline_seq, timeline_hash) VALUES (:id, 'usr_b', 'usr_s', 't', 100, 0, 'CNY',"
          " :status, 0, :paid, 0, :released, 0, :escrow, :now, false, false, 0, :genesis)")


def _sql(statement: str, **params) -> None:
    db.session.execute(text(statement), {"now": NOW, "genesis": "0" * 64, **params})
    db.session.commit()


@pytest.fixture
def parties(app):
    with app.app_context():
        for user_id, phone in (("usr_b", "+12025550191"), ("usr_s", "+12025550192")):
            db.session.execute(text(_USER), {"id": user_id, "phone": phone, "now": NOW})
        db.session.commit()
        buyer, seller = ledger.open_wallet("usr_b"), ledger.open_wallet("usr_s")
        bank = ledger.system_account(BANK_CLEARING, "ICBC", shard=0)
        ledger.transfer(bank, buyer, 1_000, kind=ledger.TOPUP)
        db.session.commit()
        yield buyer, seller, bank
        db.session.rollback()


def test_a_trades_escrow_money_paid_out_for_another_trade_is_reported(parties):
    buyer, seller, _bank = parties
    escrow_1, escrow_2 = ledger.escrow_account("trd_1"), ledger.escrow_account("trd_2")
    db.session.commit()
    _sql(_TRADE, id="trd_1", status="WAIT_BUYER_CONFIRM_GOODS", paid=100, released=0, escrow=escrow_1)
    _sql(_TRADE, id="trd_2", status="WAIT_BUYER_CONFIRM_GOODS", paid=100, released=0, escrow=escrow_2)
    ledger.transfer(buyer, escrow_1, 100, kind=ledger.ESCROW_PAY, reference="trd_1")
    ledger.transfer(buyer, escrow_2, 100, kind=ledger.ESCROW_PAY, reference="trd_2")
    db.session.commit()
    assert check_invariants() == []
    ledger.transfer(escrow_1, seller, 100, kind=ledger.ESCROW_RELEASE, reference="trd_2")  # the wrong account
    _sql("UPDATE trades SET status = 'TRADE_FINISHED', released_amount = 100 WHERE id = 'trd_2'")
    assert sorted(check_invariants()) == [
        f"trade trd_1 (WAIT_BUYER_CONFIRM_GOODS) holds 100 but its escrow account {escrow_1} has 0",
        f"trade trd_2 (TRADE_FINISHED) holds 0 but its escrow account {escrow_2} has 100"]


def test_a_trades_escrow_account_of_another_kind_is_reported(parties):
    _buyer, seller, _bank = parties
    not_escrow = ledger.system_account(SYSTEM, "trd_1")  # may go below zero, as an escrow account may not
    db.session.commit()
    _sql(_TRADE, id="trd_1", status="WAIT_BUYER_CONFIRM_GOODS", paid=100, released=0, escrow=not_escrow)
    ledger.transfer(not_escrow, seller, 100, kind=ledger.ESCROW_RELEASE, currency="CNY", reference="trd_1")
    db.session.commit()
    assert check_invariants() == [f"trade trd_1: its escrow account {not_escrow} is a system account"]


def test_a_withdrawal_paid_out_of_another_users_wallet_is_reported(parties):
    _buyer, seller, bank = parties
    ledger.transfer(bank, seller, 100, kind=ledger.TOPUP)
    someone_elses = ledger.create_hold(seller, bank, 100, kind=ledger.WITHDRAWAL).id
    db.session.commit()
    _sql(_CARD)
    _sql(_WITHDRAWAL, id="wdr_1", amount=100, hold_id=someone_elses, status="pending")
    assert check_invariants() == [
        f"withdrawal wdr_1: its hold {someone_elses} takes the wallet of usr_s, not its user's"]


@pytest.mark.parametrize(("status", "resolve", "hold_status"), [
    ("succeeded", ledger.void_hold, "voided"), ("failed", ledger.post_hold, "posted"),
    ("pending", ledger.post_hold, "posted"), ("succeeded", None, "pending")])
def test_a_withdrawal_whose_status_contradicts_its_hold_is_reported(parties, status, resolve, hold_status):
    buyer, _seller, bank = parties
    held = ledger.create_hold(buyer, bank, 100, kind=ledger.WITHDRAWAL).id
    db.session.commit()
    _sql(_CARD)
    _sql(_WITHDRAWAL, id="wdr_1", amount=100, hold_id=held, status="pending")
    assert check_invariants() == []
    if resolve is not None:
        resolve(held)
    _sql("UPDATE withdrawals SET status = :status WHERE id = 'wdr_1'", status=status)
    assert check_invariants() == [f"withdrawal wdr_1 is {status} but its hold {held} is {hold_status}"]


def test_a_top_up_credited_by_a_payment_from_another_user_is_reported(parties):
    _buyer, seller, bank = parties
    ledger.transfer(bank, seller, 100, kind=ledger.TOPUP)
    payment = ledger.transfer(seller, ledger.open_wallet("usr_b"), 100, kind=ledger.PAYMENT)
    db.session.commit()
    _sql(_CARD)
    _sql(_TOPUP, id="top_1", transfer_id=payment.id)
    assert check_invariants() == [
        f"top-up top_1 was credited by transfer {payment.id} (kind payment, from a wallet account), not by a top-up"
        " from a bank's clearing account"]


def test_a_top_up_credited_by_another_kind_of_transfer_from_the_bank_is_reported(parties):
    """A top-up is credited by a transfer of kind topup, not by any transfer out of a bank's clearing account."""
    buyer, _seller, bank = parties
    adjustment = ledger.transfer(bank, buyer, 100, kind=ledger.ADJUSTMENT)
    db.session.commit()
    _sql(_CARD)
    _sql(_TOPUP, id="top_1", transfer_id=adjustment.id)
    assert check_invariants() == [
        f"top-up top_1 was credited by transfer {adjustment.id} (kind adjustment, from a bank_clearing account),"
        " not by a top-up from a bank's clearing account"]


# --- migration 0027: escrow money between a trade and its parties; cards of the row's own user -----------------------


def _escrow_trade(buyer: str) -> str:
    """Trade trd_1 of usr_b (buyer) and usr_s (seller), paid: its escrow account holds 100."""
    escrow = ledger.escrow_account("trd_1")
    db.session.commit()
    _sql(_TRADE, id="trd_1", status="WAIT_BUYER_CONFIRM_GOODS", paid=100, released=0, escrow=escrow)
    ledger.transfer(buyer, escrow, 100, kind=ledger.ESCROW_PAY, reference="trd_1")
    db.session.commit()
    return escrow


def _stranger() -> str:
    db.session.execute(text(_USER), {"id": "usr_x", "phone": "+12025550193", "now": NOW})
    db.session.commit()
    return ledger.open_wallet("usr_x")


def test_escrow_money_released_to_someone_outside_the_trade_is_refused_and_reported(parties):
    """Found by an audit: the release went to a third user's wallet, and with the trade marked finished the books
    checked out clean. DESIGN 3: money held for a trade is used only for that trade."""
    buyer, _seller, _bank = parties
    escrow, stranger = _escrow_trade(buyer), _stranger()
    with pytest.raises(IntegrityError):
        ledger.transfer(escrow, stranger, 100, kind=ledger.ESCROW_RELEASE, reference="trd_1")
    db.session.rollback()
    with trigger_off("transfers_escrow_money_between_its_parties", "transfers"):
        moved = ledger.transfer(escrow, stranger, 100, kind=ledger.ESCROW_RELEASE, reference="trd_1").id
        db.session.commit()
    _sql("UPDATE trades SET status = 'TRADE_FINISHED', released_amount = 100 WHERE id = 'trd_1'")
    assert check_invariants() == [f"transfer {moved} moves money of trade trd_1 out of its escrow account with a wallet"
                                  " account of usr_x, who is not the trade's party for that"]


def test_escrow_money_from_someone_other_than_the_buyer_is_refused(parties):
    buyer, seller, bank = parties
    escrow = _escrow_trade(buyer)
    ledger.transfer(bank, seller, 100, kind=ledger.TOPUP)
    db.session.commit()
    with pytest.raises(IntegrityError):
        ledger.transfer(seller, escrow, 100, kind=ledger.ESCROW_PAY, reference="trd_1")
    db.session.rollback()
    with pytest.raises(IntegrityError):
        ledger.transfer(bank, escrow, 100, kind=ledger.ESCROW_PAY, reference="trd_1")
    db.session.rollback()
    assert check_invariants() == []


def test_the_buyer_refunded_the_seller_released_and_the_fee_taken_are_accepted(parties):
    buyer, seller, _bank = parties
    escrow = _escrow_trade(buyer)
    fees = ledger.system_account(FEES, "platform", "CNY")
    ledger.transfer(escrow, buyer, 30, kind=ledger.REFUND, reference="trd_1")
    ledger.transfer(escrow, seller, 60, kind=ledger.ESCROW_RELEASE, reference="trd_1")
    ledger.transfer(escrow, fees, 10, kind=ledger.FEE, reference="trd_1")
    db.session.commit()
    _sql("UPDATE trades SET status = 'TRADE_FINISHED', refunded_amount = 30, released_amount = 70, fee_amount = 10"
         " WHERE id = 'trd_1'")
    assert check_invariants() == []


@pytest.mark.parametrize("row", ["withdrawal", "top-up"])
def test_a_card_of_another_user_is_refused_and_reported(parties, row):
    """Found by an audit: a withdrawal naming another user's card was accepted, and the worker paid the money out to
    that card; a top-up could name another user's card as the one charged."""
    _buyer, _seller, bank = parties
    _sql(_CARD)  # card_1 is usr_b's
    db.session.execute(text(_USER), {"id": "usr_x", "phone": "+12025550193", "now": NOW})
    db.session.execute(text("INSERT INTO bank_cards (id, user_id, bank_code, card_hash, last4, holder_name,"
                            " bank_token, created_at) VALUES ('card_x', 'usr_x', 'ICBC', 'h-x', '5678', '李四',"
                            " 'sim-ICBC-token-5678', :now)"), {"now": NOW})
    db.session.commit()
    if row == "withdrawal":
        hold = ledger.create_hold(ledger.open_wallet("usr_b"), bank, 100, kind=ledger.WITHDRAWAL).id
        db.session.commit()
        table, row_id, insert = "withdrawals", "wdr_1", _WITHDRAWAL
        values = {"id": "wdr_1", "amount": 100, "hold_id": hold, "status": "pending"}
    else:
        table, row_id, insert = "topups", "tup_1", _TOPUP.replace("'succeeded', :transfer_id", "'pending', NULL")
        values = {"id": "tup_1"}
    with pytest.raises(IntegrityError):
        _sql(insert.replace("'card_1'", "'card_x'"), **values)
    db.session.rollback()
    _sql(insert, **values)
    with pytest.raises(IntegrityError):
        _sql(f"UPDATE {table} SET card_id = 'card_x' WHERE id = :id", id=row_id)
    db.session.rollback()
    assert check_invariants() == []
    with trigger_off(f"{table}_card_of_its_own_user", table):
        _sql(f"UPDATE {table} SET card_id = 'card_x' WHERE id = :id", id=row_id)
    assert check_invariants() == [f"{row} {row_id} of usr_b names card card_x, which is a card of usr_x"]
