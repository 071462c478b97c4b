"""Money paths that still had no PostgreSQL concurrency test against a realistic competitor (found by the fourth
money-path race audit), raced with the overlap forced (``first_pauses_inside``: the first is stopped inside its
transaction, its locks taken and its money moved, while the second runs, and only then let go): two withdrawals
with different keys draining one wallet, a movement that queues behind a top-up for the money it brings, two
releases of a fee-charging seller's trades, a refund before shipping settled by the seller and by their silence, a
staff decision as the seller ships, and a card-paid trade whose wallet is spent between its top-up and its payment.
Each race has one winner (or two that do not conflict), the losers get a clean 4xx, the balances are exact and
``flask wallet check`` is clean. PostgreSQL only."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from core.db import db
from tests.api.escrow_helpers import (
    PP,
    books_clean,
    escrow_balance,
    grant_staff,
    open_trade,
    paid_and_shipped,
    trade,
)
from tests.integration.test_escrow_races import in_app, post
from tests.integration.test_money_races_audit import (
    bank,
    card_token,
    count,
    first_pauses_inside,
    money,
    retries_recorded,
)
from tests.pg_races import postgres_only  # noqa: F401 - the autouse skip on SQLite
from wallet import funds, trades
from wallet.funds_models import DailyUsage, TopUp, Withdrawal
from wallet.models import FEES, LedgerAccount, Transfer

pytestmark = pytest.mark.postgres

PRICE = 20900  # ``open_trade``'s amount and shipping fee


def _transfers(app, kind, trade_id=None) -> int:
    where = [Transfer.kind == kind] + ([Transfer.reference == trade_id] if trade_id else [])
    return count(app, Transfer, *where)


def _fees_collected(app) -> int:
    with app.app_context():
        return db.session.scalar(select(func.coalesce(func.sum(LedgerAccount.credits_posted
                                                               - LedgerAccount.debits_posted), 0))
                                 .where(LedgerAccount.kind == FEES))


# --- withdrawals ---------------------------------------------------------------------------------------------------


def test_two_withdrawals_with_different_keys_draining_one_wallet_have_one_winner(api, app, monkeypatch):
    alice = api.verified()
    assert api.money("/api/v1/topups", alice, amount=1000, bank_card_id=alice["card_id"]).status_code == 201
    withdraw = lambda key: lambda: money(app, alice, "/api/v1/withdrawals", key, amount=1000,  # noqa: E731
                                         bank_card_id=alice["card_id"])
    first, second, waited = first_pauses_inside(monkeypatch, funds, "enqueue", withdraw("wd-1"), withdraw("wd-2"))
    assert waited  # the second queued on the card (or the day's usage, or the wallet) the first holds
    assert first[0] == 202, first
    assert (second[0], second[1]["code"]) == (422, "insufficient_funds"), second
    assert api.balance(alice) == 0
    assert count(app, Withdrawal) == 1
    with app.app_context():  # the loser's count against the day's limit rolled back with it
        assert db.session.scalars(select(DailyUsage.amount)).one() == 1000
    books_clean(app)


# --- a movement queued behind a top-up spends what the top-up brought ----------------------------------------------


@pytest.mark.parametrize("second_one", ["transfer", "withdrawal", "trade"])
def test_a_movement_queued_behind_a_top_up_spends_the_money_the_top_up_brings(api, app, monkeypatch, second_one):
    """The top-up is stopped once it has credited the wallet (the wallet locked, nothing committed) while a movement
    that needs exactly that money comes: it waits for the wallet and then sees the money, instead of refusing on the
    balance it read before."""
    alice, bob, seller = api.verified(real_name="李四"), api.register(), api.verified(real_name="王五")
    trade_id = open_trade(api, alice, seller)
    moves = {
        "transfer": (lambda: money(app, alice, "/api/v1/transfers", "pay", amount=PRICE, to_phone=bob["phone"]), 201),
        "withdrawal": (lambda: money(app, alice, "/api/v1/withdrawals", "wd", amount=PRICE,
                                    bank_card_id=alice["card_id"]), 202),
        "trade": (lambda: money(app, alice, f"/api/v1/trades/{trade_id}/pay", "pay"), 200),
    }
    move, status = moves[second_one]
    top_up = lambda: money(app, alice, "/api/v1/topups", "top", amount=PRICE, bank_card_id=alice["card_id"])  # noqa: E731
    first, second, waited = first_pauses_inside(monkeypatch, funds, "enqueue", top_up, move)
    assert waited  # the movement queued on the wallet the top-up holds
    assert (first[0], first[1]["status"]) == (201, "succeeded"), first
    assert second[0] == status, second
    assert api.balance(alice) == 0
    assert api.balance(bob) == (PRICE if second_one == "transfer" else 0)
    assert escrow_balance(app, trade_id) == (PRICE if second_one == "trade" else 0)
    assert count(app, Withdrawal) == (1 if second_one == "withdrawal" else 0)
    assert _transfers(app, "topup") == 1
    books_clean(app)


# --- fees --------------------------------------------------------------------------------------------------------


def test_two_releases_of_a_fee_charging_sellers_trades_at_once_take_each_fee_once(api, app, clock, monkeypatch,
                                                                                 people):
    """A merchant charged 1.5 %: the buyer confirms one trade while the sweeper auto-confirms another of the same
    seller. Each release pays the seller and the platform's fee account in one transaction; the second waits for the
    seller's wallet, and every fen lands once."""
    buyer, seller = people
    assert app.test_cli_runner().invoke(args=["users", "set-fee", seller["phone"], "150"]).exit_code == 0
    swept = paid_and_shipped(api, buyer, seller)
    clock.advance(days=3)
    api.relogin(buyer)
    api.relogin(seller)
    confirmed = paid_and_shipped(api, buyer, seller)
    clock.advance(days=7, seconds=1)  # the first trade's confirm deadline has passed, the second's has not
    api.relogin(buyer)
    api.relogin(seller)
    fee = PRICE * 150 // 10_000
    # The older trade is confirmed by the sweeper, stopped once its money has moved; the newer one by its buyer.
    first, second, waited = first_pauses_inside(
        monkeypatch, trades, "enqueue", in_app(app, trades.sweep),
        lambda: money(app, buyer, f"/api/v1/trades/{confirmed}/confirm", "confirm"))
    assert waited  # the confirmation queued on the seller's wallet the sweeper holds
    assert first["auto_confirmed"] == 1, first
    assert second[0] == 200, second
    for trade_id in (swept, confirmed):
        body = trade(api, buyer, trade_id)
        assert (body["status"], body["released_amount"]) == ("TRADE_FINISHED", PRICE), body
        assert (_transfers(app, "escrow_release", trade_id), _transfers(app, "fee", trade_id)) == (1, 1)
        assert escrow_balance(app, trade_id) == 0
    assert api.balance(seller) == 2 * (PRICE - fee)
    assert _fees_collected(app) == 2 * fee
    books_clean(app)


# --- refunds before shipping ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("first_one", ["sweeper", "agree"])
def test_a_whole_refund_before_shipping_agreed_as_the_sellers_silence_agrees_pays_back_once(
        api, app, clock, monkeypatch, people, first_one):
    """Before shipping the seller's silence agrees after two days; the refund of everything paid closes the trade.
    The seller agreeing as the sweeper comes for that deadline: the buyer gets the money back once."""
    buyer, seller = people
    trade_id = open_trade(api, buyer, seller)
    assert money(app, buyer, f"/api/v1/trades/{trade_id}/pay", "pay")[0] == 200
    status, refund = post(app, buyer, f"/api/v1/trades/{trade_id}/refunds", amount=PRICE, reason="changed my mind")
    assert status == 201, refund
    clock.advance(days=2, seconds=1)
    api.relogin(buyer)
    api.relogin(seller)
    agree = lambda: post(app, seller, f"/api/v1/trades/{trade_id}/refunds/{refund['id']}/agree", **PP)  # noqa: E731
    sweep = in_app(app, trades.sweep)
    first, second, waited = first_pauses_inside(monkeypatch, trades, "enqueue",
                                                *((sweep, agree) if first_one == "sweeper" else (agree, sweep)))
    swept, agreed = (first, second) if first_one == "sweeper" else (second, first)
    if first_one == "sweeper":
        assert waited and swept["refund_deadlines"] == 1
        assert (agreed[0], agreed[1]["code"]) == (409, "illegal_refund_transition"), agreed
    else:  # the seller's own step applied the deadline, which did what the seller asked; the sweeper skipped it
        assert agreed[0] == 200, agreed
        assert swept["refund_deadlines"] == 0
    assert not any(in_app(app, trades.sweep)().values())
    body = trade(api, buyer, trade_id)
    assert (body["status"], body["refunded_amount"]) == ("TRADE_CLOSED", PRICE), body
    assert body["refunds"][0]["status"] == "REFUND_SUCCESS"
    assert _transfers(app, "refund", trade_id) == 1
    assert escrow_balance(app, trade_id) == 0
    assert api.balance(buyer) == 500000
    books_clean(app)


@pytest.mark.parametrize("first_one", ["decision", "ship"])
def test_a_staff_decision_before_shipping_as_the_seller_ships_moves_the_escrow_once(api, app, monkeypatch, people,
                                                                                    first_one):
    """The seller refused a refund before shipping and the buyer took it to the platform. Staff refund everything as
    the seller ships: the escrow goes back once, and the shipment is refused (the refund is open, then the trade is
    closed)."""
    buyer, seller = people
    staff = grant_staff(api, app)
    trade_id = open_trade(api, buyer, seller)
    assert money(app, buyer, f"/api/v1/trades/{trade_id}/pay", "pay")[0] == 200
    status, refund = post(app, buyer, f"/api/v1/trades/{trade_id}/refunds", amount=PRICE, reason="never sent")
    assert status == 201, refund
    assert post(app, seller, f"/api/v1/trades/{trade_id}/refunds/{refund['id']}/refuse", reason="will send")[0] == 200
    status, dispute = post(app, buyer, f"/api/v1/trades/{trade_id}/disputes", reason="please")
    assert status == 201, dispute
    decide = lambda: post(app, staff, f"/api/v1/admin/disputes/{dispute['id']}/decide",  # noqa: E731
                          outcome="refund", reason="not shipped")
    ship = lambda: post(app, seller, f"/api/v1/trades/{trade_id}/ship",  # noqa: E731
                        carrier="SF Express", tracking_number="SF0000000002")
    if first_one == "decision":  # stopped once its money moved, telling the parties
        decided, shipped, waited = first_pauses_inside(monkeypatch, trades, "enqueue", decide, ship)
    else:  # stopped holding the trade's lock, before it finds the open refund
        shipped, decided, waited = first_pauses_inside(monkeypatch, trades, "_lock", ship, decide, after=True)
    assert waited
    assert decided[0] == 200, decided
    assert shipped[0] == 409, shipped
    body = trade(api, buyer, trade_id)
    assert (body["status"], body["refunded_amount"], body["released_amount"]) == ("TRADE_CLOSED", PRICE, 0), body
    assert body["carrier"] is None  # never shipped
    assert (_transfers(app, "refund", trade_id), _transfers(app, "escrow_release", trade_id)) == (1, 0)
    assert escrow_balance(app, trade_id) == 0
    assert api.balance(buyer) == 500000
    books_clean(app)


# --- paying a trade with a card top-up -----------------------------------------------------------------------------


def test_a_card_paid_trade_whose_wallet_is_spent_between_its_top_up_and_its_payment_keeps_the_top_up(
        api, app, monkeypatch):
    """The payment tops up its shortfall from the card (committed on its own), and before it pays, the buyer's
    payment to a friend takes what the wallet held before: the trade payment is refused (422, never a 500), the
    card was charged once for the shortfall, and that money stays in the wallet, as the API documents."""
    buyer, seller, friend = api.verified(real_name="李四"), api.verified(real_name="王五"), api.register()
    assert api.money("/api/v1/topups", buyer, amount=10000, bank_card_id=buyer["card_id"]).status_code == 201
    trade_id = open_trade(api, buyer, seller)
    charged = bank(app).total_debited(card_token(app, buyer))
    retried = retries_recorded(monkeypatch)
    first, second, waited = first_pauses_inside(
        monkeypatch, funds, "topup_for_request",
        lambda: money(app, buyer, f"/api/v1/trades/{trade_id}/pay", "card-pay", bank_card_id=buyer["card_id"]),
        lambda: money(app, buyer, "/api/v1/transfers", "friend", amount=10000, to_phone=friend["phone"]),
        after=True)
    assert not waited  # the top-up had committed: nothing held the wallet
    assert second[0] == 201, second
    assert (first[0], first[1]["code"], first[1]["available"]) == (422, "insufficient_funds", PRICE - 10000), first
    assert bank(app).total_debited(card_token(app, buyer)) - charged == PRICE - 10000
    assert count(app, TopUp, TopUp.status == "succeeded") == 2
    assert api.balance(buyer) == PRICE - 10000
    assert api.balance(friend) == 10000
    assert trade(api, buyer, trade_id)["status"] == "WAIT_BUYER_PAY"
    assert _transfers(app, "escrow_pay") == 0
    assert "40P01" not in retried
    books_clean(app)


def test_a_card_paid_trade_sent_twice_with_one_key_while_the_bank_is_asked_charges_the_card_once(api, app,
                                                                                                monkeypatch):
    """The first request is stopped as it asks the bank to debit the card for the shortfall (outside any transaction:
    nothing holds the key yet) when its duplicate comes: the duplicate finds the same top-up, asks the bank by the same
    reference, credits it and pays; the first, let go, gets the bank's same answer, credits nothing more and replays
    the payment. The card is charged once and the trade paid once."""
    buyer, seller = api.verified(real_name="李四"), api.verified(real_name="王五")
    trade_id = open_trade(api, buyer, seller)
    request = lambda: post(app, buyer, f"/api/v1/trades/{trade_id}/pay", key="the-key",  # noqa: E731
                           bank_card_id=buyer["card_id"], **PP)
    first, second, waited = first_pauses_inside(monkeypatch, bank(app), "debit", request, request)
    assert not waited  # nothing was held while the bank was asked
    assert second[0] == 200, second
    assert first == second, (first, second)  # the same answer, replayed
    assert bank(app).total_debited(card_token(app, buyer)) == PRICE
    assert count(app, TopUp) == 1
    assert (_transfers(app, "topup"), _transfers(app, "escrow_pay")) == (1, 1)
    assert escrow_balance(app, trade_id) == PRICE
    assert api.balance(buyer) == 0
    books_clean(app)
