"""Money paths that had no concurrency test against their realistic competitor (found by the money-path race audit),
raced with the overlap forced (``first_pauses_inside``: the first is stopped inside its transaction, its locks taken,
while the second runs, and only then let go): a staff decision against the buyer's confirmation and against the
sweeper, the buyer paying as the sweeper closes the unpaid trade, a refund request as the sweeper auto-confirms, a
seller agreeing to a refund as the buyer confirms, two workers finishing one pending top-up, the worker finishing a
top-up as the client retries it, a payout posted as its owner spends the rest of the wallet, and a withdrawal and a
trade payment wanting the same money. Each race has one winner (or two that do not conflict, with exact balances),
the losers get a clean 4xx, and ``flask wallet check`` is clean. PostgreSQL only."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from core.db import db
from tests.api.escrow_helpers import (
    PP,
    books_clean,
    escrow_balance,
    grant_staff,
    open_trade,
    paid_and_shipped,
    parties_by_wallet_age,
    trade,
)
from tests.integration.test_escrow_races import in_app, post
from tests.integration.test_money_races_audit import (
    bank,
    card_token,
    count,
    first_pauses_inside,
    money,
    pending_top_up,
    retries_recorded,
)
from tests.pg_races import postgres_only  # noqa: F401 - the autouse skip on SQLite
from wallet import funds, ledger, timeline, trades
from wallet.errors import HoldAlreadyResolved
from wallet.funds import process_withdrawals, retry_pending_topups
from wallet.funds_models import TopUp, Withdrawal
from wallet.models import BANK_CLEARING, Transfer

pytestmark = pytest.mark.postgres

START = 500000  # the ``people`` buyer's wallet
PRICE = 20900  # ``open_trade``'s amount and shipping fee


def _disputed(app, buyer, seller, trade_id, amount=5000) -> str:
    status, refund = post(app, buyer, f"/api/v1/trades/{trade_id}/refunds", amount=amount, reason="broken")
    assert status == 201, refund
    assert post(app, seller, f"/api/v1/trades/{trade_id}/refunds/{refund['id']}/refuse", reason="no")[0] == 200
    status, dispute = post(app, buyer, f"/api/v1/trades/{trade_id}/disputes", reason="please")
    assert status == 201, dispute
    return dispute["id"]


def _transfers(app, kind, trade_id=None) -> int:
    where = [Transfer.kind == kind] + ([Transfer.reference == trade_id] if trade_id else [])
    return count(app, Transfer, *where)


# --- staff decisions -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("first_one", ["decision", "confirm"])
def test_a_staff_decision_and_the_buyers_confirmation_move_the_escrow_once(api, app, monkeypatch, people, first_one):
    buyer, seller = people
    staff = grant_staff(api, app)
    trade_id = paid_and_shipped(api, buyer, seller)
    dispute_id = _disputed(app, buyer, seller, trade_id)
    decide = lambda: post(app, staff, f"/api/v1/admin/disputes/{dispute_id}/decide",  # noqa: E731
                          outcome="split", refund_amount=8000, reason="partly")
    confirm = lambda: money(app, buyer, f"/api/v1/trades/{trade_id}/confirm", "confirm")  # noqa: E731
    if first_one == "decision":  # stopped once its money moved, telling the parties
        first, second, waited = first_pauses_inside(monkeypatch, trades, "enqueue", decide, confirm)
        decided, confirmed = first, second
    else:  # stopped holding the trade's lock, before it finds the open refund
        first, second, waited = first_pauses_inside(monkeypatch, trades, "_lock", confirm, decide, after=True)
        confirmed, decided = first, second
    assert waited  # the second queued on the trade the first holds
    assert decided[0] == 200, decided
    assert confirmed[0] == 409, confirmed
    assert confirmed[1]["code"] == ("trade_not_confirmable" if first_one == "decision" else "refund_in_progress")
    body = trade(api, buyer, trade_id)
    assert (body["status"], body["refunded_amount"], body["released_amount"]) == ("TRADE_FINISHED", 8000, 12900)
    assert (_transfers(app, "refund", trade_id), _transfers(app, "escrow_release", trade_id)) == (1, 1)
    assert escrow_balance(app, trade_id) == 0
    assert api.balance(buyer) == START - PRICE + 8000
    assert api.balance(seller) == 12900
    books_clean(app)


def test_a_staff_decision_while_the_sweeper_runs_past_every_deadline_is_the_only_move(api, app, clock, monkeypatch,
                                                                                      people):
    """A disputed trade waits for staff however late: the sweeper running while staff decide (every deadline the
    trade ever had long past) neither waits for the decision nor moves the trade's money."""
    buyer, seller = people
    staff = grant_staff(api, app)
    trade_id = paid_and_shipped(api, buyer, seller)
    dispute_id = _disputed(app, buyer, seller, trade_id)
    clock.advance(days=40)
    api.relogin(staff)
    first, second, waited = first_pauses_inside(
        monkeypatch, trades, "enqueue",
        lambda: post(app, staff, f"/api/v1/admin/disputes/{dispute_id}/decide", outcome="refund", reason="all"),
        in_app(app, trades.sweep))
    assert not waited  # the disputed trade is never due: the sweeper did not even look at it
    assert first[0] == 200, first
    assert not any(second.values()), second
    assert not any(in_app(app, trades.sweep)().values())
    api.relogin(buyer)
    body = trade(api, buyer, trade_id)
    assert (body["status"], body["refunded_amount"], body["released_amount"]) == ("TRADE_CLOSED", PRICE, 0)
    assert (_transfers(app, "refund", trade_id), _transfers(app, "escrow_release", trade_id)) == (1, 0)
    assert api.balance(buyer) == START
    books_clean(app)


# --- the sweeper against the parties ---------------------------------------------------------------------------


@pytest.mark.parametrize("first_one", ["sweeper", "pay"])
def test_the_buyer_paying_as_the_sweeper_closes_the_unpaid_trade_pays_nothing(api, app, clock, monkeypatch, people,
                                                                              first_one):
    buyer, seller = people
    trade_id = open_trade(api, buyer, seller)
    clock.advance(hours=25)
    api.relogin(buyer)
    pay = lambda: money(app, buyer, f"/api/v1/trades/{trade_id}/pay", "pay")  # noqa: E731
    sweep = in_app(app, trades.sweep)
    # Both close the trade first (the buyer's own step applies the deadline it finds passed): paused at its entry.
    first, second, waited = first_pauses_inside(monkeypatch, timeline, "append",
                                                *((sweep, pay) if first_one == "sweeper" else (pay, sweep)))
    swept, paid = (first, second) if first_one == "sweeper" else (second, first)
    assert (paid[0], paid[1]["code"]) == (409, "trade_not_payable"), paid
    if first_one == "sweeper":
        assert waited and swept["closed_unpaid"] == 1
    else:  # the payment's closing rolled back with its refusal; the sweeper skipped the locked trade, then comes back
        assert swept["closed_unpaid"] == 0
        assert in_app(app, trades.sweep)()["closed_unpaid"] == 1
    body = trade(api, buyer, trade_id)
    assert (body["status"], body["paid_amount"]) == ("TRADE_CLOSED", 0)
    assert api.balance(buyer) == START
    assert escrow_balance(app, trade_id) == 0
    assert _transfers(app, "escrow_pay", trade_id) == 0
    books_clean(app)


@pytest.mark.parametrize("first_one", ["sweeper", "refund"])
def test_a_refund_request_as_the_sweeper_auto_confirms_releases_the_escrow_once(api, app, clock, monkeypatch, people,
                                                                                first_one):
    buyer, seller = people
    trade_id = paid_and_shipped(api, buyer, seller)
    clock.advance(days=10)
    api.relogin(buyer)
    ask = lambda: post(app, buyer, f"/api/v1/trades/{trade_id}/refunds", amount=PRICE, reason="late")  # noqa: E731
    sweep = in_app(app, trades.sweep)
    first, second, waited = first_pauses_inside(monkeypatch, trades, "enqueue",
                                                *((sweep, ask) if first_one == "sweeper" else (ask, sweep)))
    swept, asked = (first, second) if first_one == "sweeper" else (second, first)
    assert (asked[0], asked[1]["code"]) == (409, "trade_not_refundable"), asked
    if first_one == "sweeper":
        assert waited and swept["auto_confirmed"] == 1
    else:
        assert swept["auto_confirmed"] == 0
        assert in_app(app, trades.sweep)()["auto_confirmed"] == 1
    body = trade(api, buyer, trade_id)
    assert (body["status"], body["released_amount"], body["refunds"]) == ("TRADE_FINISHED", PRICE, [])
    assert _transfers(app, "escrow_release", trade_id) == 1
    assert escrow_balance(app, trade_id) == 0
    api.relogin(seller)
    assert (api.balance(buyer), api.balance(seller)) == (START - PRICE, PRICE)
    books_clean(app)



@pytest.mark.parametrize("first_one", ["sweeper", "extend"])
def test_the_buyer_extending_as_the_sweeper_auto_confirms_releases_the_escrow_once(api, app, clock, monkeypatch, people,
                                                                                   first_one):
    buyer, seller = people
    trade_id = paid_and_shipped(api, buyer, seller)
    clock.advance(days=10)
    api.relogin(buyer)
    extend = lambda: post(app, buyer, f"/api/v1/trades/{trade_id}/extend")  # noqa: E731
    sweep = in_app(app, trades.sweep)
    first, second, waited = first_pauses_inside(monkeypatch, trades, "enqueue",
                                                *((sweep, extend) if first_one == "sweeper" else (extend, sweep)))
    swept, extended = (first, second) if first_one == "sweeper" else (second, first)
    assert (extended[0], extended[1]["code"]) == (409, "trade_not_extendable"), extended
    assert waited == (first_one == "sweeper")
    assert swept["auto_confirmed"] == (1 if first_one == "sweeper" else 0)
    if first_one == "extend":
        assert in_app(app, trades.sweep)()["auto_confirmed"] == 1
    body = trade(api, buyer, trade_id)
    assert (body["status"], body["released_amount"]) == ("TRADE_FINISHED", PRICE)
    assert _transfers(app, "escrow_release", trade_id) == 1
    api.relogin(seller)
    assert (api.balance(buyer), api.balance(seller)) == (START - PRICE, PRICE)
    books_clean(app)

@pytest.mark.parametrize("first_one", ["agree", "confirm"])
def test_the_seller_agreeing_to_a_refund_as_the_buyer_confirms_pays_each_side_once(api, app, monkeypatch, people,
                                                                                  first_one):
    buyer, seller = people
    trade_id = paid_and_shipped(api, buyer, seller)
    status, refund = post(app, buyer, f"/api/v1/trades/{trade_id}/refunds", amount=5000, reason="scratched")
    assert status == 201, refund
    agree = lambda: post(app, seller, f"/api/v1/trades/{trade_id}/refunds/{refund['id']}/agree", **PP)  # noqa: E731
    confirm = lambda: money(app, buyer, f"/api/v1/trades/{trade_id}/confirm", "confirm")  # noqa: E731
    if first_one == "agree":
        first, second, waited = first_pauses_inside(monkeypatch, trades, "enqueue", agree, confirm)
        agreed, confirmed = first, second
    else:
        first, second, waited = first_pauses_inside(monkeypatch, trades, "_lock", confirm, agree, after=True)
        confirmed, agreed = first, second
    assert waited
    assert agreed[0] == 200, agreed
    body = trade(api, buyer, trade_id)
    if first_one == "agree":  # the refund settled, then the buyer confirmed what was left
        assert confirmed[0] == 200, confirmed
        assert (body["status"], body["refunded_amount"], body["released_amount"]) == ("TRADE_FINISHED", 5000,
                                                                                     PRICE - 5000)
        assert api.balance(seller) == PRICE - 5000
    else:  # the open refund refused the confirmation
        assert (confirmed[0], confirmed[1]["code"]) == (409, "refund_in_progress"), confirmed
        assert (body["status"], body["refunded_amount"], body["released_amount"]) == ("WAIT_BUYER_CONFIRM_GOODS",
                                                                                     5000, 0)
        assert api.balance(seller) == 0
    assert _transfers(app, "refund", trade_id) == 1
    assert api.balance(buyer) == START - PRICE + 5000
    assert escrow_balance(app, trade_id) == PRICE - 5000 - body["released_amount"]
    books_clean(app)


# --- top-ups: the worker against itself and against the client ---------------------------------------------------


def test_two_workers_finishing_one_pending_top_up_credit_it_once(api, app, clock, monkeypatch, inbox):
    alice = api.verified()
    working = pending_top_up(api, app, clock, alice)
    first, second, waited = first_pauses_inside(monkeypatch, funds, "enqueue", in_app(app, retry_pending_topups),
                                                in_app(app, retry_pending_topups))
    assert waited  # the second worker queued on the top-up's row lock
    assert (first, second) == (1, 1)  # the second found it settled: a no-op
    assert api.balance(alice) == 2500
    assert working.total_debited(card_token(app, alice)) == 2500
    assert count(app, Transfer, Transfer.kind == "topup") == 1
    assert count(app, TopUp, TopUp.status == "succeeded") == 1
    assert len(inbox.messages(to=alice["phone"], event="topup_credited")) == 1
    books_clean(app)


def test_the_worker_finishing_a_pending_top_up_as_the_client_retries_credits_it_once(api, app, clock, monkeypatch,
                                                                                     inbox):
    alice = api.verified()
    working = pending_top_up(api, app, clock, alice)
    first, second, waited = first_pauses_inside(
        monkeypatch, funds, "enqueue", in_app(app, retry_pending_topups),
        lambda: money(app, alice, "/api/v1/topups", "top", amount=2500, bank_card_id=alice["card_id"]))
    assert waited  # the client's retry queued on the top-up the worker holds
    assert first == 1
    assert (second[0], second[1]["status"], second[1]["amount"]) == (201, "succeeded", 2500), second
    assert api.balance(alice) == 2500
    assert working.total_debited(card_token(app, alice)) == 2500
    assert count(app, Transfer, Transfer.kind == "topup") == 1
    assert len(inbox.messages(to=alice["phone"], event="topup_credited")) == 1
    books_clean(app)


# --- withdrawals -------------------------------------------------------------------------------------------------


def test_a_payout_posted_as_its_owner_spends_the_rest_of_the_wallet_takes_each_once(api, app, clock, monkeypatch):
    alice, bob = api.verified(), api.register()
    assert api.money("/api/v1/topups", alice, amount=3000, bank_card_id=alice["card_id"]).status_code == 201
    assert api.money("/api/v1/withdrawals", alice, amount=1000, bank_card_id=alice["card_id"]).status_code == 202
    clock.advance(seconds=60)
    api.relogin(alice)
    # The worker is stopped once the hold is posted (the wallet locked, its money gone), telling the owner.
    first, second, waited = first_pauses_inside(
        monkeypatch, ledger, "post_hold", in_app(app, process_withdrawals),
        lambda: money(app, alice, "/api/v1/transfers", "all", amount=2001, to_phone=bob["phone"]), after=True)
    assert waited  # the payment queued on the wallet the worker holds
    assert first == 1
    assert (second[0], second[1]["code"], second[1]["available"]) == (422, "insufficient_funds", 2000), second
    assert money(app, alice, "/api/v1/transfers", "rest", amount=2000, to_phone=bob["phone"])[0] == 201
    with app.app_context():
        assert db.session.scalars(select(Withdrawal.status)).one() == "succeeded"
    assert (api.balance(alice), api.balance(bob)) == (0, 2000)
    assert bank(app).total_paid_out(card_token(app, alice)) == 1000
    assert count(app, Transfer, Transfer.kind == "withdrawal") == 1
    books_clean(app)


@pytest.mark.parametrize("first_one", ["withdrawal", "trade"])
def test_a_withdrawal_and_a_trade_payment_wanting_the_same_money_have_one_winner(api, app, monkeypatch, first_one):
    buyer, seller = api.verified(real_name="李四"), api.verified(real_name="王五")
    assert api.money("/api/v1/topups", buyer, amount=PRICE, bank_card_id=buyer["card_id"]).status_code == 201
    trade_id = open_trade(api, buyer, seller)
    withdraw = lambda: money(app, buyer, "/api/v1/withdrawals", "wd", amount=PRICE,  # noqa: E731
                             bank_card_id=buyer["card_id"])
    pay = lambda: money(app, buyer, f"/api/v1/trades/{trade_id}/pay", "pay")  # noqa: E731
    target, calls = (funds, (withdraw, pay)) if first_one == "withdrawal" else (trades, (pay, withdraw))
    first, second, waited = first_pauses_inside(monkeypatch, target, "enqueue", *calls)
    assert waited
    assert first[0] == (202 if first_one == "withdrawal" else 200), first
    assert (second[0], second[1]["code"]) == (422, "insufficient_funds"), second
    assert api.balance(buyer) == 0
    assert escrow_balance(app, trade_id) == (PRICE if first_one == "trade" else 0)
    assert count(app, Withdrawal) == (1 if first_one == "withdrawal" else 0)
    assert trade(api, buyer, trade_id)["status"] == ("WAIT_SELLER_SEND_GOODS" if first_one == "trade"
                                                     else "WAIT_BUYER_PAY")
    books_clean(app)


@pytest.mark.parametrize("older_wallet", ["seller", "buyer"])
def test_a_split_decision_as_the_seller_pays_the_buyer_moves_both_once(api, app, monkeypatch, older_wallet):
    """A split decision took the buyer's wallet (the refund) and then the seller's (the release) in one transaction,
    while the seller paying the buyer by phone takes the two in the order of their ids: when the seller's was the
    older one, the two waited on each other until PostgreSQL broke the cycle (after its deadlock_timeout, a second)
    and the transaction it picked ran again. The decision now locks both wallets in id order first: the payment waits
    for it, in either order, and neither runs twice."""
    buyer, seller = parties_by_wallet_age(api, older_wallet)
    staff = grant_staff(api, app)
    trade_id = paid_and_shipped(api, buyer, seller)
    dispute_id = _disputed(app, buyer, seller, trade_id)
    retried = retries_recorded(monkeypatch)
    first, second, waited = first_pauses_inside(
        monkeypatch, trades, "_release_to_seller",
        lambda: post(app, staff, f"/api/v1/admin/disputes/{dispute_id}/decide", outcome="split", refund_amount=8000,
                     reason="partly"),
        lambda: money(app, seller, "/api/v1/transfers", "to-buyer", amount=700, to_phone=buyer["phone"]))
    assert waited  # the payment queued on the buyer's wallet the decision holds
    assert first[0] == 200, first
    assert second[0] == 201, second
    assert "40P01" not in retried, retried
    body = trade(api, buyer, trade_id)
    assert (body["status"], body["refunded_amount"], body["released_amount"]) == ("TRADE_FINISHED", 8000, 12900)
    assert (_transfers(app, "refund", trade_id), _transfers(app, "escrow_release", trade_id)) == (1, 1)
    assert count(app, Transfer, Transfer.kind == "payment") == 1
    assert api.balance(buyer) == 50000 - PRICE + 8000 + 700
    assert api.balance(seller) == 50000 + 12900 - 700
    assert escrow_balance(app, trade_id) == 0
    books_clean(app)


@pytest.mark.parametrize("first_one", ["sweeper", "confirm"])
def test_the_buyer_confirming_as_the_sellers_silence_agrees_to_a_refund_pays_each_side_once(
        api, app, clock, monkeypatch, people, first_one):
    """The seller let a partial refund's answer lapse (silence agrees) and the buyer confirms as the sweeper comes for
    that deadline: the refund is paid once (by whichever applies the deadline) and the rest released once."""
    buyer, seller = people
    trade_id = paid_and_shipped(api, buyer, seller)
    status, refund = post(app, buyer, f"/api/v1/trades/{trade_id}/refunds", amount=5000, reason="scratched")
    assert status == 201, refund
    clock.advance(days=5, seconds=1)
    api.relogin(buyer)
    confirm = lambda: money(app, buyer, f"/api/v1/trades/{trade_id}/confirm", "confirm")  # noqa: E731
    sweep = in_app(app, trades.sweep)
    first, second, waited = first_pauses_inside(monkeypatch, trades, "enqueue",
                                                *((sweep, confirm) if first_one == "sweeper" else (confirm, sweep)))
    swept, confirmed = (first, second) if first_one == "sweeper" else (second, first)
    assert confirmed[0] == 200, confirmed
    assert swept["refund_deadlines"] == (1 if first_one == "sweeper" else 0), swept
    assert waited == (first_one == "sweeper")  # the sweeper skips a trade a party holds
    assert not any(in_app(app, trades.sweep)().values())
    body = trade(api, buyer, trade_id)
    assert (body["status"], body["refunded_amount"], body["released_amount"]) == ("TRADE_FINISHED", 5000,
                                                                                 PRICE - 5000)
    assert body["refunds"][0]["status"] == "REFUND_SUCCESS"
    assert (_transfers(app, "refund", trade_id), _transfers(app, "escrow_release", trade_id)) == (1, 1)
    assert escrow_balance(app, trade_id) == 0
    api.relogin(seller)
    assert (api.balance(buyer), api.balance(seller)) == (START - PRICE + 5000, PRICE - 5000)
    books_clean(app)


# --- the hold sweeper --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("first_one", ["post", "expire"])
def test_a_hold_posted_as_the_hold_sweeper_expires_it_is_resolved_once(app, clock, monkeypatch, first_one):
    """``expire_holds`` (a worker task) against a post of the same hold by a process whose clock has not reached its
    deadline yet: the hold is resolved once, the loser is refused (``HoldAlreadyResolved``) or skips it."""
    with app.app_context():
        wallet = ledger.open_wallet("usr_audit_races")
        clearing = ledger.system_account(BANK_CLEARING, "ICBC", shard=0)
        ledger.transfer(clearing, wallet, 5000, kind=ledger.TOPUP)
        hold = ledger.create_hold(wallet, clearing, 3000, kind=ledger.WITHDRAWAL,
                                  expires_at=clock.now() + timedelta(minutes=1))
    late = clock.now() + timedelta(minutes=2)

    def post():
        try:
            return ledger.post_hold(hold.id).amount
        except HoldAlreadyResolved as exc:
            return exc

    calls = (in_app(app, post), in_app(app, lambda: ledger.expire_holds(late)))
    first, second, waited = first_pauses_inside(monkeypatch, ledger, "_lock_pair",
                                                *(calls if first_one == "post" else calls[::-1]))
    assert waited  # the second queued on the hold row the first claimed
    posted, expired = (first, second) if first_one == "post" else (second, first)
    if first_one == "post":
        assert (posted, expired) == (3000, 0)
    else:
        assert expired == 1 and isinstance(posted, HoldAlreadyResolved), posted
    with app.app_context():
        balance = ledger.balance(wallet)
        assert (balance.posted, balance.pending) == ((2000, 0) if first_one == "post" else (5000, 0))
        assert count(app, Transfer, Transfer.kind == "withdrawal") == (1 if first_one == "post" else 0)
    books_clean(app)
