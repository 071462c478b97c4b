"""The withdrawal worker asks the bank between two short transactions (``wallet.funds._advance``: claim, ask, apply),
never under the withdrawal's row lock: a slow bank holds up no payment (on SQLite a write transaction holds the
whole database), and a worker whose claim ran out while the bank answered has its late answer dropped."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from core.db import db
from security import freezes
from tests.api.test_funds import drain_withdrawals, invariants_hold
from tests.integration.test_money_races_audit import bank, card_token, first_pauses_inside
from wallet.funds import process_withdrawals
from wallet.funds_models import Withdrawal


def _in_app(app, call):
    def run():
        with app.app_context():
            return call()
    return run


def _withdrawal(app):
    with app.app_context():
        return db.session.scalars(select(Withdrawal)).one()


def test_a_payment_does_not_wait_while_the_worker_asks_the_bank_about_a_withdrawal(api, app, clock, monkeypatch):
    alice, bob = api.verified(), api.register()
    assert api.money("/api/v1/topups", alice, amount=5000, bank_card_id=alice["card_id"]).status_code == 201
    assert api.money("/api/v1/withdrawals", alice, amount=1000, bank_card_id=alice["card_id"]).status_code == 202
    clock.advance(seconds=60)
    client = app.test_client()

    def pay():
        return client.post("/api/v1/transfers", headers={**alice["headers"], "Idempotency-Key": "meanwhile"},
                           json={"to_phone": bob["phone"], "amount": 700, "payment_password": "135790"}).status_code

    processed, paid, waited = first_pauses_inside(monkeypatch, bank(app), "payout", _in_app(app, process_withdrawals),
                                                  pay)
    assert not waited, "the payment waited for the worker's call to the bank"
    assert (processed, paid) == (1, 201)
    assert _withdrawal(app).status == "succeeded"
    assert (api.balance(alice), api.balance(bob)) == (5000 - 1000 - 700, 700)
    invariants_hold(app)


def test_a_worker_whose_claim_ran_out_while_the_bank_answered_changes_nothing(api, app, clock, monkeypatch):
    alice = api.verified()
    assert api.money("/api/v1/topups", alice, amount=5000, bank_card_id=alice["card_id"]).status_code == 201
    assert api.money("/api/v1/withdrawals", alice, amount=1000, bank_card_id=alice["card_id"]).status_code == 202
    clock.advance(seconds=60)

    def another_worker_after_the_claim_ran_out():
        clock.advance(minutes=3)
        with app.app_context():
            return process_withdrawals()

    slow, other, _ = first_pauses_inside(monkeypatch, bank(app), "payout", _in_app(app, process_withdrawals),
                                         another_worker_after_the_claim_ran_out)
    assert (slow, other) == (1, 1)
    withdrawal = _withdrawal(app)
    assert (withdrawal.status, withdrawal.attempts) == ("succeeded", 2)  # the second claim's answer settled it
    assert bank(app).total_paid_out(card_token(app, alice)) == 1000  # one reference, paid once
    assert api.balance(alice) == 4000
    drain_withdrawals(app, clock)
    assert _withdrawal(app).status == "succeeded"
    invariants_hold(app)


@pytest.mark.parametrize("only_asked_because", ["the account was frozen", "it passed its maximum age"])
def test_a_payout_still_on_its_way_from_a_claim_that_ran_out_is_not_also_failed_back(api, app, clock, monkeypatch,
                                                                                     only_asked_because):
    """Found by the time-of-check audit: worker A submits the payout and is slow to reach the bank; its claim runs out,
    and worker B, for a frozen account or a withdrawal past its maximum age, only asks the bank, which has no such
    payout yet: B failed the withdrawal back to the wallet, then A's payout arrived and was paid out too (1000 fen
    made out of nothing). The bank's "none" now counts only once no payout submitted can still arrive
    (``wallet.funds._IN_FLIGHT``); the next question after that finds A's payout, and the withdrawal succeeds."""
    alice = api.verified()
    assert api.money("/api/v1/topups", alice, amount=5000, bank_card_id=alice["card_id"]).status_code == 201
    assert api.money("/api/v1/withdrawals", alice, amount=1000, bank_card_id=alice["card_id"]).status_code == 202
    frozen = only_asked_because == "the account was frozen"
    clock.advance(seconds=60 if frozen else app.config["WITHDRAWAL_MAX_AGE_SECONDS"] - 60)

    def another_worker_once_the_claim_ran_out():
        if frozen:
            with app.app_context():
                freezes.freeze(alice["user"]["id"], "under review")
        clock.advance(minutes=3)
        with app.app_context():
            return process_withdrawals()

    slow, other, _ = first_pauses_inside(monkeypatch, bank(app), "payout", _in_app(app, process_withdrawals),
                                         another_worker_once_the_claim_ran_out)
    assert (slow, other) == (1, 1)
    paid_out = bank(app).total_paid_out(card_token(app, alice))
    assert (paid_out, _withdrawal(app).status) == (1000, "pending")  # the bank has it; the books do not know yet
    clock.advance(minutes=10)
    drain_withdrawals(app, clock)
    assert (_withdrawal(app).status, bank(app).total_paid_out(card_token(app, alice))) == ("succeeded", 1000)
    api.relogin(alice)
    assert api.balance(alice) == 4000
    invariants_hold(app)


def test_a_withdrawal_is_taken_at_the_very_instant_it_falls_due(api, app, clock):
    """A withdrawal is due from its next_attempt_at on, that instant included (a new one's is its creation)."""
    alice = api.verified()
    assert api.money("/api/v1/topups", alice, amount=5000, bank_card_id=alice["card_id"]).status_code == 201
    assert api.money("/api/v1/withdrawals", alice, amount=1000, bank_card_id=alice["card_id"]).status_code == 202
    with app.app_context():
        assert process_withdrawals() == 1
    withdrawal = _withdrawal(app)
    assert (withdrawal.status, withdrawal.attempts) == ("succeeded", 1)


def test_a_frozen_accounts_unanswered_payout_is_failed_back_at_the_instant_it_can_no_longer_arrive(api, app, clock):
    """A payout sent without an answer may reach the bank until ``submitted_until``; from that instant on, the bank's
    "no such payout" for a frozen account sends the money back."""
    alice = api.verified()
    assert api.money("/api/v1/topups", alice, amount=5000, bank_card_id=alice["card_id"]).status_code == 201
    assert api.money("/api/v1/withdrawals", alice, amount=1000, bank_card_id=alice["card_id"]).status_code == 202
    withdrawal_id = _withdrawal(app).id
    bank(app).timeout_references.add(withdrawal_id)
    clock.advance(seconds=60)
    with app.app_context():
        process_withdrawals()  # sent, no answer
        freezes.freeze(alice["user"]["id"], "review")
    bank(app).timeout_references.discard(withdrawal_id)  # it answers again: it has no such payout
    clock.advance(minutes=5)
    with app.app_context():
        process_withdrawals()
    waiting = _withdrawal(app)
    assert waiting.status == "pending" and waiting.next_attempt_at == waiting.submitted_until
    clock.set(waiting.submitted_until)
    with app.app_context():
        process_withdrawals()
    done = _withdrawal(app)
    assert (done.status, done.failure_reason) == ("failed", "account_frozen")
    assert api.balance(alice) == 5000
