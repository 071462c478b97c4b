"""Money paths raced with the overlap forced, not hoped for: the first operation is stopped inside its transaction
(its locks taken, its money moved, nothing committed yet) while the second runs, and only then let go. Each race has
exactly one winner, the balances add up, and ``flask wallet check`` is clean. PostgreSQL only: SQLite runs one
write transaction at a time, so a paused writer would only make the second wait for the whole database."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import func, select

from core import db as core_db
from core.db import db
from tests.api.escrow_helpers import PP, books_clean, escrow_balance, open_trade, paid_and_shipped, trade
from tests.integration.test_escrow_races import in_app, post, together
from tests.lock_waits import PATIENCE, waits_on_a_lock
from tests.pg_races import postgres_only  # noqa: F401 - the autouse skip on SQLite
from wallet import funds, ledger, limits, trades
from wallet.banks import SimulatedBank
from wallet.funds import process_withdrawals, retry_pending_topups
from wallet.funds_models import DailyUsage, TopUp, Withdrawal
from wallet.models import Transfer

pytestmark = pytest.mark.postgres


def first_pauses_inside(monkeypatch, target: Any, name: str, first: Callable[[], Any], second: Callable[[], Any],
                        *, also: tuple[tuple[Any, str], ...] = (), after: bool = False) -> tuple[Any, Any, bool]:
    """Run ``first`` in a thread until it calls ``target.name`` (inside its open transaction), run ``second`` in
    another thread meanwhile until it waits on a database lock or finishes (``tests.lock_waits``), then let ``first``
    go on. Returns both results (or what they raised) and whether ``second`` was waiting on a lock when ``first`` was
    let go. With ``also``, the first call of any of the named functions pauses; with ``after``, the pause comes once
    that call has returned."""
    reached, go, first_thread = threading.Event(), threading.Event(), []

    def pause() -> None:
        if first_thread and threading.get_ident() == first_thread[0] and not reached.is_set():
            reached.set()
            assert go.wait(2 * PATIENCE), "never let go"

    def pausing(original: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            if not after:
                pause()
            result = original(*args, **kwargs)
            if after:
                pause()
            return result

        return call

    for where, what in ((target, name), *also):
        monkeypatch.setattr(where, what, pausing(getattr(where, what)))
    results: dict[str, Any] = {}

    def run(label: str, call: Callable[[], Any]) -> None:
        if label == "first":
            first_thread.append(threading.get_ident())
        try:
            results[label] = call()
        except BaseException as exc:  # reported by the test's assertions, not swallowed
            results[label] = exc

    one = threading.Thread(target=run, args=("first", first))
    one.start()
    assert reached.wait(20), f"the first operation never reached {name}: {results.get('first')!r}"
    two = threading.Thread(target=run, args=("second", second))
    two.start()
    waited = waits_on_a_lock(two)
    go.set()
    one.join(30)
    two.join(30)
    assert not one.is_alive() and not two.is_alive(), "a racer never finished (an unbroken deadlock?)"
    return results["first"], results["second"], waited


def retries_recorded(monkeypatch) -> list[str | None]:
    """The SQLSTATE of every database error ``run_in_transaction`` is asked about (and retries if it may)."""
    seen: list[str | None] = []
    original = core_db.is_retryable

    def recording(exc: BaseException) -> bool:
        seen.append(getattr(getattr(exc, "orig", None), "sqlstate", None))
        return original(exc)

    monkeypatch.setattr(core_db, "is_retryable", recording)
    return seen


def money(app, who, path, key, **body):
    return post(app, who, path, key=key, **PP, **body)


def count(app, model, *where):
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(model).where(*where))


def bank(app) -> SimulatedBank:
    return app.extensions["bank_gateway"]


def pending_top_up(api, app, clock, account) -> SimulatedBank:
    """A top-up of 25.00 under the key ``top`` whose bank call got no answer (503, pending), two minutes ago; returns
    the working bank, back in place, that a retry or the worker then reaches."""
    working = bank(app)
    app.extensions["bank_gateway"] = SimulatedBank(failure_rate=1.0, seed=3)  # the first try gets no answer
    response = api.money("/api/v1/topups", account, key="top", amount=2500, bank_card_id=account["card_id"])
    assert response.status_code == 503
    app.extensions["bank_gateway"] = working
    clock.advance(minutes=2)
    api.relogin(account)
    return working


def card_token(app, account) -> str:
    from wallet.card_models import BankCard

    with app.app_context():
        return db.session.get(BankCard, account["card_id"]).bank_token


# --- pay a phone number, withdraw --------------------------------------------------------------------------------


def test_two_payments_that_each_need_the_whole_balance_have_one_winner(api, app, monkeypatch):
    alice, bob, carol = api.verified(), api.register(), api.register()
    assert api.money("/api/v1/topups", alice, amount=1000, bank_card_id=alice["card_id"]).status_code == 201
    first, second, waited = first_pauses_inside(
        monkeypatch, funds, "enqueue",
        lambda: money(app, alice, "/api/v1/transfers", "to-bob", amount=1000, to_phone=bob["phone"]),
        lambda: money(app, alice, "/api/v1/transfers", "to-carol", amount=1000, to_phone=carol["phone"]))
    assert waited  # the second payment queued behind the first's locks
    assert first[0] == 201, first
    assert (second[0], second[1]["code"]) == (422, "insufficient_funds"), second
    assert (api.balance(alice), api.balance(bob), api.balance(carol)) == (0, 1000, 0)
    assert count(app, Transfer, Transfer.kind == "payment") == 1
    books_clean(app)


@pytest.mark.parametrize("first_one", ["withdrawal", "payment"])
def test_a_withdrawal_and_a_payment_racing_for_the_same_money_have_one_winner(api, app, monkeypatch, first_one):
    alice, bob = api.verified(), api.register()
    assert api.money("/api/v1/topups", alice, amount=1000, bank_card_id=alice["card_id"]).status_code == 201
    withdraw = lambda: money(app, alice, "/api/v1/withdrawals", "wd", amount=1000, bank_card_id=alice["card_id"])  # noqa: E731
    pay = lambda: money(app, alice, "/api/v1/transfers", "pay", amount=1000, to_phone=bob["phone"])  # noqa: E731
    calls = (withdraw, pay) if first_one == "withdrawal" else (pay, withdraw)
    first, second, waited = first_pauses_inside(monkeypatch, funds, "enqueue", *calls)
    assert waited
    assert first[0] == (202 if first_one == "withdrawal" else 201), first
    assert (second[0], second[1]["code"]) == (422, "insufficient_funds"), second
    assert api.balance(alice) == 0
    assert api.balance(bob) == (1000 if first_one == "payment" else 0)
    assert count(app, Withdrawal) == (1 if first_one == "withdrawal" else 0)
    books_clean(app)


@pytest.mark.parametrize(("card_ending", "outcome"), [("", "succeeded"), ("8888", "failed")])
def test_two_workers_advancing_one_withdrawal_settle_it_once(api, app, clock, monkeypatch, card_ending, outcome):
    alice = api.verified(card_ending=card_ending)
    assert api.money("/api/v1/topups", alice, amount=3000, bank_card_id=alice["card_id"]).status_code == 201
    assert api.money("/api/v1/withdrawals", alice, amount=1000, bank_card_id=alice["card_id"]).status_code == 202
    clock.advance(seconds=60)
    first, second, waited = first_pauses_inside(monkeypatch, bank(app), "payout",
                                                in_app(app, process_withdrawals), in_app(app, process_withdrawals))
    # The first claimed it before asking the bank, so the second found nothing due, at once: no wait on a row lock
    # held while the bank answers (it waited, and found it settled, while the bank was asked under the lock).
    assert (first, second) == (1, 0)
    assert not waited
    with app.app_context():
        withdrawal = db.session.scalars(select(Withdrawal)).one()
        assert (withdrawal.status, withdrawal.attempts) == (outcome, 1)
    assert bank(app).total_paid_out(card_token(app, alice)) == (1000 if outcome == "succeeded" else 0)
    assert api.balance(alice) == (2000 if outcome == "succeeded" else 3000)
    assert count(app, Transfer, Transfer.kind == "withdrawal") == (1 if outcome == "succeeded" else 0)
    books_clean(app)


# --- top-up ------------------------------------------------------------------------------------------------------


def test_a_client_retry_and_the_worker_finish_one_pending_top_up_once(api, app, clock, monkeypatch, inbox):
    alice = api.verified()
    working = pending_top_up(api, app, clock, alice)
    first, second, waited = first_pauses_inside(
        monkeypatch, funds, "enqueue",
        lambda: money(app, alice, "/api/v1/topups", "top", amount=2500, bank_card_id=alice["card_id"]),
        in_app(app, retry_pending_topups))
    assert waited  # the worker queued on the top-up's row lock
    assert (first[0], first[1]["status"]) == (201, "succeeded"), first
    assert second == 1  # it found the top-up settled: a no-op
    assert api.balance(alice) == 2500
    assert working.total_debited(card_token(app, alice)) == 2500
    assert count(app, Transfer, Transfer.kind == "topup") == 1
    assert len(inbox.messages(to=alice["phone"], event="topup_credited")) == 1
    books_clean(app)


# --- escrow ------------------------------------------------------------------------------------------------------


@pytest.fixture
def parties(api):
    buyer = api.verified(real_name="李四", locale="en")
    assert api.money("/api/v1/topups", buyer, amount=50000, bank_card_id=buyer["card_id"]).status_code == 201
    return buyer, api.verified(real_name="王五", locale="en")


def test_two_payments_of_one_trade_with_different_keys_pay_it_once(api, app, monkeypatch, parties):
    buyer, seller = parties
    trade_id = open_trade(api, buyer, seller)
    path = f"/api/v1/trades/{trade_id}/pay"
    first, second, waited = first_pauses_inside(monkeypatch, trades, "enqueue",
                                                lambda: money(app, buyer, path, "pay-1"),
                                                lambda: money(app, buyer, path, "pay-2"))
    assert waited
    assert first[0] == 200, first
    assert (second[0], second[1]["code"]) == (409, "trade_not_payable"), second
    assert api.balance(buyer) == 50000 - 20900
    assert escrow_balance(app, trade_id) == 20900
    assert count(app, Transfer, Transfer.kind == "escrow_pay") == 1
    books_clean(app)


def test_a_key_still_in_use_by_another_payment_is_refused_before_a_card_is_charged(api, app, monkeypatch):
    """Found by the time-of-check audit: a payment that tops up its shortfall from a card reads the key's stored answer
    before charging the card, and a request that held the key without having committed was invisible to that read:
    the card was charged 10,100 and the answer was then 422 ``idempotency_key_reused``. The read now waits for it."""
    buyer, seller = api.verified(real_name="李四"), api.verified(real_name="王五")
    assert api.money("/api/v1/topups", buyer, amount=20900, bank_card_id=buyer["card_id"]).status_code == 201
    from_the_wallet, short_by_10100 = open_trade(api, buyer, seller), open_trade(api, buyer, seller, amount=30000)
    charged = bank(app).total_debited(card_token(app, buyer))
    first, second, waited = first_pauses_inside(
        monkeypatch, trades, "enqueue", lambda: money(app, buyer, f"/api/v1/trades/{from_the_wallet}/pay", "one-key"),
        lambda: money(app, buyer, f"/api/v1/trades/{short_by_10100}/pay", "one-key", bank_card_id=buyer["card_id"]))
    assert waited
    assert first[0] == 200, first
    assert (second[0], second[1]["code"]) == (422, "idempotency_key_reused"), second
    assert bank(app).total_debited(card_token(app, buyer)) == charged
    assert api.balance(buyer) == 0
    books_clean(app)


@pytest.mark.parametrize("first_one", ["trade", "phone"])
def test_paying_a_trade_and_paying_a_phone_with_the_same_money_have_one_winner(api, app, monkeypatch, first_one):
    buyer, seller, friend = api.verified(real_name="李四"), api.verified(real_name="王五"), api.register()
    assert api.money("/api/v1/topups", buyer, amount=20900, bank_card_id=buyer["card_id"]).status_code == 201
    trade_id = open_trade(api, buyer, seller)
    pay_trade = lambda: money(app, buyer, f"/api/v1/trades/{trade_id}/pay", "trade")  # noqa: E731
    pay_phone = lambda: money(app, buyer, "/api/v1/transfers", "phone", amount=20900, to_phone=friend["phone"])  # noqa: E731
    target, calls = (trades, (pay_trade, pay_phone)) if first_one == "trade" else (funds, (pay_phone, pay_trade))
    first, second, waited = first_pauses_inside(monkeypatch, target, "enqueue", *calls)
    assert waited
    assert first[0] in (200, 201), first
    assert (second[0], second[1]["code"]) == (422, "insufficient_funds"), second
    assert api.balance(buyer) == 0
    assert escrow_balance(app, trade_id) == (20900 if first_one == "trade" else 0)
    assert api.balance(friend) == (0 if first_one == "trade" else 20900)
    assert trade(api, buyer, trade_id)["status"] == ("WAIT_SELLER_SEND_GOODS" if first_one == "trade"
                                                     else "WAIT_BUYER_PAY")
    books_clean(app)


@pytest.mark.parametrize("first_one", ["pay", "cancel"])
def test_the_buyer_pays_while_the_seller_cancels_one_wins(api, app, monkeypatch, parties, first_one):
    buyer, seller = parties
    trade_id = open_trade(api, buyer, seller)
    pay = lambda: money(app, buyer, f"/api/v1/trades/{trade_id}/pay", "pay")  # noqa: E731
    cancel = lambda: post(app, seller, f"/api/v1/trades/{trade_id}/cancel")  # noqa: E731
    # A cancellation tells nobody, so it is paused where every trade step writes: its timeline entry.
    target, name = (trades, "enqueue") if first_one == "pay" else (trades.timeline, "append")
    first, second, waited = first_pauses_inside(monkeypatch, target, name,
                                                *((pay, cancel) if first_one == "pay" else (cancel, pay)))
    assert waited
    assert first[0] == 200, first
    assert second[0] == 409, second
    state = trade(api, buyer, trade_id)
    if first_one == "pay":
        assert state["status"] == "WAIT_SELLER_SEND_GOODS"
        assert (api.balance(buyer), escrow_balance(app, trade_id)) == (50000 - 20900, 20900)
    else:
        assert state["status"] == "TRADE_CLOSED"
        assert (api.balance(buyer), escrow_balance(app, trade_id)) == (50000, 0)
    books_clean(app)


def test_a_card_paid_trade_clicked_twice_with_two_keys_is_paid_once_and_the_extra_top_up_stays(
        api, app, monkeypatch):
    """Both requests find the wallet empty and top up the shortfall before either pays: the card is charged twice
    (two requests, two keys), one payment wins, and the other top-up stays in the wallet (as the API documents)."""
    buyer, seller = api.verified(real_name="李四"), api.verified(real_name="王五")
    trade_id = open_trade(api, buyer, seller)
    both_there = threading.Barrier(2, timeout=20)
    original = funds.topup_for_request

    def meeting(*args, **kwargs):
        both_there.wait()  # neither charges the card before both have read the empty wallet
        return original(*args, **kwargs)

    monkeypatch.setattr(funds, "topup_for_request", meeting)
    path = f"/api/v1/trades/{trade_id}/pay"
    first, second = together(
        lambda: money(app, buyer, path, "click-1", bank_card_id=buyer["card_id"]),
        lambda: money(app, buyer, path, "click-2", bank_card_id=buyer["card_id"]))
    assert sorted([first[0], second[0]]) == [200, 409], (first, second)
    loser = first if first[0] == 409 else second
    assert loser[1]["code"] == "trade_not_payable"
    assert bank(app).total_debited(card_token(app, buyer)) == 2 * 20900
    assert escrow_balance(app, trade_id) == 20900
    assert api.balance(buyer) == 20900
    assert count(app, TopUp, TopUp.status == "succeeded") == 2
    assert count(app, Transfer, Transfer.kind == "escrow_pay") == 1
    books_clean(app)


def test_two_confirmations_with_different_keys_release_the_escrow_once(api, app, monkeypatch, parties):
    buyer, seller = parties
    trade_id = paid_and_shipped(api, buyer, seller)
    path = f"/api/v1/trades/{trade_id}/confirm"
    first, second, waited = first_pauses_inside(monkeypatch, trades, "enqueue",
                                                lambda: money(app, buyer, path, "c-1"),
                                                lambda: money(app, buyer, path, "c-2"))
    assert waited
    assert first[0] == 200, first
    assert (second[0], second[1]["code"]) == (409, "trade_not_confirmable"), second
    assert count(app, Transfer, Transfer.kind == "escrow_release") == 1
    assert escrow_balance(app, trade_id) == 0
    api.relogin(seller)
    assert api.balance(seller) == 20900
    books_clean(app)


def _refund_at_deadline(api, app, clock, buyer, seller, *, returned: bool) -> tuple[str, str]:
    """A shipped trade with a refund of 5000 that the seller's silence is about to settle: agreed to (no return), or
    the returned goods received (``returned``)."""
    trade_id = paid_and_shipped(api, buyer, seller)
    status, body = post(app, buyer, f"/api/v1/trades/{trade_id}/refunds", amount=5000, reason="broken",
                        return_goods=returned)
    assert status == 201, body
    refund_id = body["id"]
    if returned:
        assert post(app, seller, f"/api/v1/trades/{trade_id}/refunds/{refund_id}/agree", **PP)[0] == 200
        shipped_back = post(app, buyer, f"/api/v1/trades/{trade_id}/refunds/{refund_id}/return",
                            carrier="SF Express", tracking_number="SF0000000001")
        assert shipped_back[0] == 200, shipped_back
    clock.advance(days=11)
    api.relogin(buyer)
    api.relogin(seller)
    return trade_id, refund_id


@pytest.mark.parametrize("returned", [False, True], ids=["agree", "receive"])
def test_the_sweeper_applies_the_sellers_silence_while_the_seller_answers_the_refund_is_paid_once(
        api, app, clock, monkeypatch, parties, returned):
    buyer, seller = parties
    trade_id, refund_id = _refund_at_deadline(api, app, clock, buyer, seller, returned=returned)
    action = "receive-return" if returned else "agree"
    first, second, waited = first_pauses_inside(
        monkeypatch, trades, "enqueue", in_app(app, trades.sweep),
        lambda: post(app, seller, f"/api/v1/trades/{trade_id}/refunds/{refund_id}/{action}", **PP))
    assert waited  # the seller queued on the trade the sweeper holds
    assert first["refund_deadlines"] == 1
    assert (second[0], second[1]["code"]) == (409, "illegal_refund_transition"), second
    state = trade(api, buyer, trade_id)
    assert state["refunded_amount"] == 5000 and state["refunds"][0]["status"] == "REFUND_SUCCESS"
    assert escrow_balance(app, trade_id) == 20900 - 5000
    assert count(app, Transfer, Transfer.kind == "refund") == 1
    books_clean(app)


@pytest.mark.parametrize("returned", [False, True], ids=["agree", "receive"])
def test_the_seller_answers_while_the_sweeper_comes_for_the_deadline_the_refund_is_paid_once(
        api, app, clock, monkeypatch, parties, returned):
    buyer, seller = parties
    trade_id, refund_id = _refund_at_deadline(api, app, clock, buyer, seller, returned=returned)
    action = "receive-return" if returned else "agree"
    first, second, _waited = first_pauses_inside(
        monkeypatch, trades, "enqueue",
        lambda: post(app, seller, f"/api/v1/trades/{trade_id}/refunds/{refund_id}/{action}", **PP),
        in_app(app, trades.sweep))
    assert first[0] == 200, first  # the deadline the seller's own step applied answers as the seller asked
    assert second["refund_deadlines"] == 0  # the sweeper skipped the locked trade, then found nothing due
    state = trade(api, buyer, trade_id)
    assert state["refunded_amount"] == 5000 and state["refunds"][0]["status"] == "REFUND_SUCCESS"
    assert escrow_balance(app, trade_id) == 20900 - 5000
    assert count(app, Transfer, Transfer.kind == "refund") == 1
    books_clean(app)


def test_a_payout_failing_back_while_its_owner_pays_gives_the_money_and_the_days_limit_back_once(
        api, app, clock, monkeypatch):
    """The worker fails a payout back (the hold is voided, then the day's limit given back) while the owner pays
    someone: the two take the wallet and the day's usage row in opposite orders, so they must neither deadlock for
    good nor lose either movement."""
    alice, bob = api.verified(card_ending="8888"), api.register()
    assert api.money("/api/v1/topups", alice, amount=3000, bank_card_id=alice["card_id"]).status_code == 201
    assert api.money("/api/v1/withdrawals", alice, amount=1000, bank_card_id=alice["card_id"]).status_code == 202
    clock.advance(seconds=60)
    api.relogin(alice)
    retried = retries_recorded(monkeypatch)
    # The worker is stopped between its two locks: once the first of them (voiding the hold, giving the day back) is
    # done, so it holds one of the two rows the payment needs and is about to ask for the other.
    first, second, waited = first_pauses_inside(
        monkeypatch, limits, "release_daily", in_app(app, process_withdrawals),
        lambda: money(app, alice, "/api/v1/transfers", "pay", amount=2500, to_phone=bob["phone"]),
        also=((ledger, "void_hold"),), after=True)
    assert waited  # the payment queued on the row the worker holds
    assert first == 1, first
    assert second[0] == 201, second
    with app.app_context():
        assert db.session.scalars(select(Withdrawal.status)).one() == "failed"
        assert db.session.scalars(select(DailyUsage.amount)).one() == 2500  # the failed 1000 given back once
    assert (api.balance(alice), api.balance(bob)) == (500, 2500)
    assert "40P01" not in retried  # both take the day's row before the wallet: nothing for PostgreSQL to break
    books_clean(app)
