"""A bank that contradicts itself, found by an audit of the money paths that talk to the bank: whatever it says later,
money the bank has once taken on to pay out is never also given back to the wallet."""

from __future__ import annotations

import threading

from core.db import db, run_in_transaction
from tests.factories import PAYMENT_PASSWORD
from tests.integration.test_escrow_races import post
from tests.lock_waits import PATIENCE, waits_on_a_lock
from wallet import ledger
from wallet.banks import PayoutNotFound, SimulatedBank
from wallet.card_models import BankCard
from wallet.check import check_invariants
from wallet.funds import create_topup, process_withdrawals, retry_pending_topups
from wallet.funds_models import TopUp, Withdrawal
from wallet.models import Hold


class _BankWhoseQueriesLag(SimulatedBank):
    """The simulated bank, except that its payout query does not know the references in ``unknown_to_queries`` yet
    (the query service of a real bank may run behind the one that accepted the payout) although it pays them out."""

    def __init__(self) -> None:
        super().__init__()
        self.unknown_to_queries: set[str] = set()

    def poll_payout(self, reference: str):
        if reference in self.unknown_to_queries:
            raise PayoutNotFound(reference)
        return super().poll_payout(reference)


def _state(app, withdrawal_id):
    with app.app_context():
        withdrawal = db.session.get(Withdrawal, withdrawal_id)
        hold = db.session.get(Hold, withdrawal.hold_id)
        card = db.session.get(BankCard, withdrawal.card_id)
        wallet = ledger.balance(ledger.open_wallet(withdrawal.user_id))
        result = (withdrawal.status, hold.status, wallet.available, wallet.pending, card.bank_token)
        db.session.commit()
        return result


def _worker_rounds(app, clock, rounds, minutes=11):
    with app.app_context():
        for _ in range(rounds):
            clock.advance(minutes=minutes)
            process_withdrawals()


def test_a_payout_the_bank_accepted_is_not_failed_back_when_its_query_later_says_it_has_none(api, app, clock, inbox):
    """Before the fix: past WITHDRAWAL_MAX_AGE_SECONDS the worker failed the withdrawal back on the query's "no such
    payout", though the bank had accepted that very payout (and paid it): 10.00 paid to the card and 10.00 back in
    the wallet, with a withdrawal_failed SMS."""
    app.config["WITHDRAWAL_MAX_AGE_SECONDS"] = 3600
    bank = _BankWhoseQueriesLag()
    app.extensions["bank_gateway"] = bank
    alice = api.verified()
    assert api.money("/api/v1/topups", alice, amount=5000, bank_card_id=alice["card_id"]).status_code == 201
    withdrawal = api.money("/api/v1/withdrawals", alice, amount=1000, bank_card_id=alice["card_id"])
    assert withdrawal.status_code == 202
    withdrawal_id = withdrawal.json["id"]
    bank.unknown_to_queries.add(withdrawal_id)

    _worker_rounds(app, clock, 12)  # two hours: accepted at once, then queried past the max age
    status, hold_status, available, pending, token = _state(app, withdrawal_id)
    assert bank.total_paid_out(token) == 1000  # the bank has it and pays it
    assert (status, hold_status, available, pending) != ("failed", "voided", 5000, 0), "paid out and given back"
    assert (hold_status, available, pending) == ("pending", 4000, 1000)  # still held: the outcome is in doubt
    assert not inbox.messages(to=alice["phone"], event="withdrawal_failed")

    bank.unknown_to_queries.discard(withdrawal_id)  # the query catches up
    _worker_rounds(app, clock, 2)
    assert _state(app, withdrawal_id)[:4] == ("succeeded", "posted", 4000, 0)
    assert len(inbox.messages(to=alice["phone"], event="withdrawal_completed")) == 1
    assert not inbox.messages(to=alice["phone"], event="withdrawal_failed")
    with app.app_context():
        assert check_invariants() == []


def test_top_ups_a_bank_never_answers_do_not_keep_the_worker_from_crediting_a_card_already_charged(
        api, app, clock, inbox):
    """Before the fix the worker took the oldest 100 pending top-ups every round, with no pause between tries: a
    hundred top-ups waiting on a bank that does not answer (one bank's outage) filled every round, and a top-up of
    another bank, whose card that bank had already charged before our process died, was never credited while the
    outage lasted."""
    bank: SimulatedBank = app.extensions["bank_gateway"]
    alice, bob = api.verified(bank_code="ICBC"), api.verified(bank_code="CMB")
    with app.app_context():
        stuck = run_in_transaction(lambda: [
            create_topup(alice["user"]["id"], alice["card_id"], 100, "CNY").id for _ in range(100)])
    bank.timeout_references.update(stuck)  # ICBC does not answer about any of them
    clock.advance(seconds=1)
    with app.app_context():
        charged = run_in_transaction(lambda: create_topup(bob["user"]["id"], bob["card_id"], 700, "CNY").id)
        card = db.session.get(BankCard, bob["card_id"])
        assert bank.debit("CMB", card.bank_token, 700, reference=charged).ok  # then the process died
        db.session.commit()

    with app.app_context():
        for _ in range(10):  # five minutes of `flask worker`
            clock.advance(seconds=30)
            retry_pending_topups()
    assert _topup_status(app, charged) == "succeeded", "bob's card was charged and his wallet never credited"
    assert api.balance(bob) == 700
    assert len(inbox.messages(to=bob["phone"], event="topup_credited")) == 1
    assert {_topup_status(app, topup_id) for topup_id in stuck} == {"pending"}  # ICBC still owes an answer

    bank.timeout_references.difference_update(stuck)  # ICBC answers again: every one is finished in time
    with app.app_context():
        for _ in range(40):
            clock.advance(minutes=10)
            retry_pending_topups()
    assert {_topup_status(app, topup_id) for topup_id in stuck} == {"succeeded"}
    assert api.balance(api.relogin(alice)) == 10000
    with app.app_context():
        assert check_invariants() == []


def _topup_status(app, topup_id):
    with app.app_context():
        status = db.session.get(TopUp, topup_id).status
        db.session.commit()
        return status


def test_a_top_up_waiting_on_a_hanging_bank_holds_up_no_one_elses_payment(api, app):
    """Before the fix the bank was asked inside the top-up's own write transaction: on SQLite (the embedded default,
    one writer at a time, BEGIN IMMEDIATE) every other write of every user waited for the bank, and a bank that hung
    longer than the busy timeout failed them all; on PostgreSQL the top-up held a connection and its row lock for
    as long as the bank took."""
    alice, bob, carol = api.verified(), api.verified(), api.register()
    assert api.money("/api/v1/topups", bob, amount=1000, bank_card_id=bob["card_id"]).status_code == 201
    asked, answer = threading.Event(), threading.Event()

    def hanging(seconds: float) -> None:
        asked.set()
        assert answer.wait(2 * PATIENCE), "never let go"

    app.extensions["bank_gateway"] = SimulatedBank(latency=1.0, sleep=hanging)
    topping_up = threading.Thread(target=lambda: post(app, alice, "/api/v1/topups", key="top", amount=500,
                                                      bank_card_id=alice["card_id"], payment_password=PAYMENT_PASSWORD))
    topping_up.start()
    try:
        assert asked.wait(20), "the top-up never reached the bank"
        paid = []
        paying = threading.Thread(target=lambda: paid.append(post(
            app, bob, "/api/v1/transfers", key="pay", amount=300, to_phone=carol["phone"],
            payment_password=PAYMENT_PASSWORD)))
        paying.start()
        assert not waits_on_a_lock(paying), "bob's payment waited for the bank to answer alice's top-up"
        assert paid[0][0] == 201, paid
    finally:
        answer.set()
        topping_up.join(20)
    assert api.balance(alice) == 500 and api.balance(bob) == 700 and api.balance(carol) == 300
    with app.app_context():
        assert check_invariants() == []
