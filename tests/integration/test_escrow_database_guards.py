"""What the database refuses of trades, disputes, ratings and top-ups written with plain SQL (migration 0016): the
invariants the services keep, held by the database too. Found missing by an audit that wrote each bad row; each
test here writes one and expects the database to refuse it, next to a good row it accepts.

Also migration 0016 itself: rows that already break a rule stop the upgrade with a message instead of being changed.
"""

from __future__ import annotations

from datetime import datetime

import pytest
from flask_migrate import downgrade, upgrade
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from app import create_app
from core.db import db
from tests.db_triggers import trigger_off
from wallet import ledger
from wallet.check import check_invariants
from wallet.models import BANK_CLEARING

NOW = datetime(2026, 1, 15, 8, 0)  # naive UTC, as stored
_USER = ("INSERT INTO users (id, phone, login_password_hash, payment_password_hash, locale, is_staff, totp_enabled,"
         " created_at, updated_at) VALUES (:id, :phone, 'x', 'x', 'en', false, false, :now, :now)")
_TRADE = ("INSERT INTO trades (id, buyer_id, seller_id, title, amount, shipping_fee, currency, status, fee_bp,"
          " paid_amount, refunded_amount, released_amount, fee_amount, created_at, reminded, extended, timeline_seq,"
          " timeline_hash) VALUES (:id, 'usr_b', 'usr_s', 't', 100, 0, 'CNY', :status, 0, :paid, :refunded,"
          " :released, :fee, :now, false, false, 0, :genesis)")
_REFUND = ("INSERT INTO refunds (id, trade_id, amount, reason, return_goods, after_shipping, status, disputed,"
           " created_at) VALUES ('rfd_1', 'trd_1', 50, 'r', false, true, 'SELLER_REFUSE_BUYER', true, :now)")
_DISPUTE = ("INSERT INTO disputes (id, trade_id, refund_id, opened_by, reason, status, outcome, refund_amount,"
            " created_at, decided_at) VALUES (:id, 'trd_1', 'rfd_1', 'usr_b', 'r', :status, :outcome, :amount, :now,"
            " :decided_at)")
_RATING = ("INSERT INTO ratings (id, trade_id, rater_id, ratee_id, role, score, created_at)"
           " VALUES ('rat_1', 'trd_1', :rater, :ratee, 'seller', 1, :now)")
_CARD = ("INSERT INTO bank_cards (id, user_id, bank_code, card_hash, last4, holder_name, bank_token, created_at)"
         " VALUES ('card_1', 'usr_b', 'ICBC', 'h-1', '1234', '张三', 'sim-ICBC-token-1234', :now)")
_TOPUP = ("INSERT INTO topups (id, user_id, card_id, amount, currency, status, transfer_id, created_at)"
          " VALUES (:id, 'usr_b', 'card_1', 100, 'CNY', :status, :transfer_id, :now)")


@pytest.fixture
def parties(app):
    with app.app_context():
        for user_id, phone in (("usr_b", "+12025550103"), ("usr_s", "+12025550104")):
            db.session.execute(text(_USER), {"id": user_id, "phone": phone, "now": NOW})
        db.session.commit()
        yield
        db.session.rollback()


def _write(sql: str, **params) -> None:
    db.session.execute(text(sql), {"now": NOW, **params})
    db.session.commit()


def _refused(sql: str, **params) -> None:
    with pytest.raises(IntegrityError):
        _write(sql, **params)
    db.session.rollback()


def _trade(trade_id="trd_1", *, status="WAIT_BUYER_CONFIRM_GOODS", paid=100, refunded=0, released=0, fee=0):
    return {"id": trade_id, "status": status, "paid": paid, "refunded": refunded, "released": released, "fee": fee,
            "genesis": "0" * 64}


@pytest.mark.parametrize(("good", "bad"), [
    (_trade(status="TRADE_FINISHED", released=100, fee=1), _trade(status="TRADE_FINISHED", released=100, fee=-1)),
    (_trade(status="TRADE_FINISHED", released=100, fee=100), _trade(status="TRADE_FINISHED", released=100, fee=101)),
    (_trade(paid=100), _trade(paid=1_000_000)),                                  # paid more than the price
    (_trade(status="WAIT_BUYER_PAY", paid=0), _trade(status="WAIT_BUYER_PAY", paid=100)),
    (_trade(status="WAIT_SELLER_SEND_GOODS"), _trade(status="WAIT_SELLER_SEND_GOODS", paid=0)),
    (_trade(status="TRADE_FINISHED", released=60, refunded=40), _trade(status="TRADE_FINISHED", released=60)),
    (_trade(status="TRADE_CLOSED", refunded=100), _trade(status="TRADE_CLOSED", refunded=99)),
    (_trade(status="TRADE_CLOSED", paid=0), _trade(status="TRADE_CLOSED", paid=100)),  # closed with money held
], ids=["fee negative", "fee above released", "paid above price", "unpaid with money", "paid state without money",
        "finished holding money", "refunded closed holding money", "cancelled holding money"])
def test_a_trades_money_agrees_with_its_state(parties, good, bad):
    _write(_TRADE, **good)
    _refused(_TRADE, **{**bad, "id": "trd_2"})


@pytest.mark.parametrize(("status", "outcome", "amount", "decided"), [
    ("open", "refund", None, None),
    ("decided", None, None, NOW),
    ("decided", "split", -50, NOW),
    ("decided", "release", 0, None),
], ids=["open with an outcome", "decided without one", "negative refund", "decided without a time"])
def test_a_dispute_is_open_or_decided_whole(parties, status, outcome, amount, decided):
    _write(_TRADE, **_trade())
    _write(_REFUND)
    _refused(_DISPUTE, id="dsp_x", status=status, outcome=outcome, amount=amount, decided_at=decided)
    _write(_DISPUTE, id="dsp_1", status="open", outcome=None, amount=None, decided_at=None)
    _write("UPDATE disputes SET status = 'decided', outcome = 'release', refund_amount = 0, decided_at = :now")


def test_nobody_rates_themselves(parties):
    _write(_TRADE, **_trade(status="TRADE_FINISHED", released=100))
    _refused(_RATING, rater="usr_s", ratee="usr_s")
    _write(_RATING, rater="usr_b", ratee="usr_s")


@pytest.mark.parametrize(("rater", "ratee", "role"), [
    ("usr_x", "usr_s", "seller"),  # someone outside the trade rates the seller
    ("usr_b", "usr_x", "seller"),  # the buyer rates someone outside the trade
    ("usr_b", "usr_s", "buyer"),   # the buyer rates the seller under the buyer's role
    ("usr_s", "usr_b", "seller"),  # the seller rates the buyer under the seller's role
])
def test_a_rating_is_one_partys_of_the_other_under_the_ratees_role(parties, rater, ratee, role):
    """Migration 0028 (found by an audit: such rows were accepted and counted in the ratee's totals). Switched off, as
    the database's owner could, the checker reports the row."""
    _write(_USER, id="usr_x", phone="+12025550105")
    _write(_TRADE, **_trade(status="TRADE_FINISHED", released=100))
    bad = _RATING.replace("'seller', 1", ":role, 1")
    _refused(bad, rater=rater, ratee=ratee, role=role)
    _write(bad, rater="usr_b", ratee="usr_s", role="seller")
    _write("INSERT INTO rating_totals (user_id, role, score, ratings, positive) VALUES ('usr_s', 'seller', 1, 1, 1)")
    assert check_invariants() == []
    _write(_TRADE, **_trade("trd_2", status="TRADE_FINISHED", released=100))
    with trigger_off("ratings_between_the_trades_parties", "ratings"):
        _write(bad.replace("'rat_1', 'trd_1'", "'rat_2', 'trd_2'"), rater=rater, ratee=ratee, role=role)
    problems = [p for p in check_invariants() if p.startswith("rating rat_2")]
    assert problems == [f"rating rat_2 of trade trd_2 (TRADE_FINISHED) by {rater} of {ratee} as {role} is not one"
                        " party's of a finished trade, of the other under the ratee's role"]


def test_a_rating_of_a_trade_not_finished_is_reported(parties):
    _write(_TRADE, **_trade(status="WAIT_BUYER_CONFIRM_GOODS"))
    _write(_RATING, rater="usr_b", ratee="usr_s")  # the code refuses it (trade_not_finished); the database lets it in
    assert [p for p in check_invariants() if p.startswith("rating rat_")] == [
        "rating rat_1 of trade trd_1 (WAIT_BUYER_CONFIRM_GOODS) by usr_b of usr_s as seller is not one party's of a"
        " finished trade, of the other under the ratee's role"]


def test_a_succeeded_top_up_and_only_it_names_its_transfer(parties):
    _write(_CARD)
    _refused(_TOPUP, id="top_1", status="succeeded", transfer_id=None)
    _write(_TOPUP, id="top_1", status="pending", transfer_id=None)
    wallet, bank = ledger.open_wallet("usr_b"), ledger.system_account(BANK_CLEARING, "ICBC", shard=0)
    credited = ledger.transfer(bank, wallet, 100, kind=ledger.TOPUP)
    db.session.commit()
    _refused(_TOPUP, id="top_2", status="failed", transfer_id=credited.id)
    _write("UPDATE topups SET status = 'succeeded', transfer_id = :transfer WHERE id = 'top_1'", transfer=credited.id)


def test_an_active_card_is_bound_to_one_account(parties):
    _write(_CARD)
    again = _CARD.replace("'card_1', 'usr_b'", "'card_2', 'usr_s'")
    _refused(again)
    _write("UPDATE bank_cards SET removed_at = :now, bank_token = NULL WHERE id = 'card_1'")
    _write(again)  # once removed, the card may be bound again (by its holder's new account)


# --- migration 0016 on books that already break a rule --------------------------------------------------------


@pytest.mark.parametrize(("bad_row", "message"), [
    (_TRADE, "rows of trades break the new rule money_matches_status"),
    (_CARD, "cards are bound to more than one account"),
], ids=["trade", "card"])
def test_the_migration_stops_on_rows_that_break_a_rule(scratch_url, capfd, bad_row, message):
    app = create_app({"DATABASE_URL": scratch_url, "WALLET_ENV": "test"})
    with app.app_context():
        upgrade(revision="0015")
        for user_id, phone in (("usr_b", "+12025550103"), ("usr_s", "+12025550104")):
            db.session.execute(text(_USER), {"id": user_id, "phone": phone, "now": NOW})
        if bad_row is _TRADE:
            db.session.execute(text(_TRADE), {**_trade(status="TRADE_FINISHED"), "now": NOW})  # holds 100
        else:
            db.session.execute(text(_CARD), {"now": NOW})
            db.session.execute(text(_CARD.replace("'card_1', 'usr_b'", "'card_2', 'usr_s'")), {"now": NOW})
        db.session.commit()
        db.session.remove()
        with pytest.raises(SystemExit):  # flask-migrate logs the migration's error and exits
            upgrade(revision="0016")
        assert message in capfd.readouterr().err  # the migrations' logging writes to stderr
        db.engine.dispose()


def test_the_migration_goes_down_and_up_again(scratch_url):
    app = create_app({"DATABASE_URL": scratch_url, "WALLET_ENV": "test"})
    with app.app_context():
        upgrade()
        downgrade(revision="0015")
        upgrade()
        db.engine.dispose()
