"""Stragglers of the background work, found by an audit: a withdrawal the bank never received was paid out once the
bank answered again, past WITHDRAWAL_MAX_AGE_SECONDS, instead of being failed back; one withdrawal (or one trade's
deadline) that raised stopped every one after it, round after round."""

from __future__ import annotations

import logging

from core.db import db
from core.worker import BackgroundWorker, Task
from wallet import ledger, trades
from wallet.banks import ReferenceConflict, SimulatedBank
from wallet.card_models import BankCard
from wallet.check import check_invariants
from wallet.funds import process_withdrawals
from wallet.funds_models import Withdrawal
from wallet.models import Hold


def _withdraw(api, account, amount):
    response = api.money("/api/v1/withdrawals", account, amount=amount, bank_card_id=account["card_id"])
    assert response.status_code == 202, response.json
    return response.json["id"]


def _state(app, withdrawal_id):
    with app.app_context():
        withdrawal = db.session.get(Withdrawal, withdrawal_id)
        hold = db.session.get(Hold, withdrawal.hold_id)
        card = db.session.get(BankCard, withdrawal.card_id)
        wallet = ledger.balance(ledger.open_wallet(withdrawal.user_id))
        result = (withdrawal.status, withdrawal.failure_reason, hold.status, wallet.available, wallet.pending,
                  card.bank_token)
        db.session.commit()
        return result


def test_a_payout_the_bank_never_received_is_failed_back_after_the_max_age_not_paid_late(api, app, clock):
    """The bank never received it (every call timed out before acting); once it answers again, past the max age, it
    says it has no such payout: the money comes back and the bank is not asked to pay it out late."""
    app.config["WITHDRAWAL_MAX_AGE_SECONDS"] = 3600
    alice = api.verified()
    api.money("/api/v1/topups", alice, amount=5000, bank_card_id=alice["card_id"])
    withdrawal_id = _withdraw(api, alice, 1000)
    bank: SimulatedBank = app.extensions["bank_gateway"]
    bank.timeout_references.add(withdrawal_id)  # every call about this payout times out without effect

    with app.app_context():
        for _ in range(12):  # two hours of a worker trying: well past the max age
            clock.advance(minutes=10)
            process_withdrawals()
    assert _state(app, withdrawal_id)[0] == "pending"  # nothing known yet: keeping it is right

    bank.timeout_references.discard(withdrawal_id)  # the bank answers again; it never received this payout
    with app.app_context():
        for _ in range(3):
            clock.advance(minutes=11)
            process_withdrawals()

    status, reason, hold_status, available, pending, token = _state(app, withdrawal_id)
    assert bank.total_paid_out(token) == 0, "the bank was told to pay out a withdrawal past its max age"
    assert (status, reason, hold_status, available, pending) == ("failed", "bank_never_answered", "voided", 5000, 0)
    with app.app_context():
        assert check_invariants() == []


class _BankWithOneBrokenReference:
    """The simulated bank, except that one reference makes the adapter raise an unexpected error (here the
    gateway's own ``ReferenceConflict``, "a bug on our side"; a real adapter may raise anything it did not
    foresee)."""

    def __init__(self, bank: SimulatedBank, broken: str) -> None:
        self.bank, self.broken = bank, broken

    def __getattr__(self, name):
        return getattr(self.bank, name)

    def payout(self, bank_code, card_token, amount, reference):
        if reference == self.broken:
            raise ReferenceConflict(f"reference {reference!r} was already used for another operation")
        return self.bank.payout(bank_code, card_token, amount, reference)


def test_one_withdrawal_that_cannot_be_advanced_does_not_block_every_later_withdrawal(api, app, clock, caplog):
    """The broken withdrawal was first in every batch (ordered by next_attempt_at, which its rolled-back step never
    moved), so the task raised there every round and no later withdrawal of any user was paid out."""
    alice, bob = api.verified(), api.verified()
    for account in (alice, bob):
        api.money("/api/v1/topups", account, amount=5000, bank_card_id=account["card_id"])
    broken = _withdraw(api, alice, 1000)
    clock.advance(seconds=1)
    healthy = _withdraw(api, bob, 1000)
    app.extensions["bank_gateway"] = _BankWithOneBrokenReference(app.extensions["bank_gateway"], broken)

    worker = BackgroundWorker(app, [Task("process-withdrawals", process_withdrawals, 1.0)])
    with caplog.at_level(logging.ERROR):
        for _ in range(10):  # ten worker rounds, as `flask worker` would run them
            clock.advance(minutes=30)
            worker._run_one(worker.tasks[0])
    assert _state(app, broken)[0] == "pending"
    assert _state(app, healthy)[0] == "succeeded", "bob's withdrawal is stuck behind alice's broken one"


def _two_unpaid_trades_the_first_unsweepable(api, clock, monkeypatch):
    """Two unpaid trades past their pay deadline, closing the first raising (a bug): their ids and the real step."""
    from tests.api.test_escrow_stories import open_trade

    buyer, seller = api.verified(), api.verified()
    first, second = open_trade(api, buyer, seller), open_trade(api, buyer, seller)
    real = trades._expire_unpaid

    def broken_for_the_first(trade, now):
        if trade.id == first:
            raise RuntimeError("a bug")
        return real(trade, now)

    monkeypatch.setattr(trades, "_expire_unpaid", broken_for_the_first)
    clock.advance(hours=25)
    return first, second, real


def test_one_trade_whose_deadline_cannot_be_applied_does_not_stop_the_sweep(api, app, clock, monkeypatch):
    first, second, real = _two_unpaid_trades_the_first_unsweepable(api, clock, monkeypatch)
    with app.app_context():
        assert trades.sweep()["closed_unpaid"] == 1
        monkeypatch.setattr(trades, "_expire_unpaid", real)
        assert trades.sweep()["closed_unpaid"] == 1  # the first, on the next pass
        statuses = {trade_id: db.session.get(trades.Trade, trade_id).status for trade_id in (first, second)}
    assert statuses == {first: "TRADE_CLOSED", second: "TRADE_CLOSED"}


def test_a_withdrawal_first_taken_at_exactly_its_max_age_is_not_sent_and_is_failed_back(api, app, clock):
    """From the instant it reaches WITHDRAWAL_MAX_AGE_SECONDS a withdrawal is no longer sent to the bank, and one the
    bank never received goes back to the wallet then, not a retry later."""
    app.config["WITHDRAWAL_MAX_AGE_SECONDS"] = 3600
    alice = api.verified()
    api.money("/api/v1/topups", alice, amount=5000, bank_card_id=alice["card_id"])
    withdrawal_id = _withdraw(api, alice, 1000)
    clock.advance(seconds=3600)  # the worker was down until this instant
    with app.app_context():
        assert process_withdrawals() == 1
    status, reason, hold_status, available, pending, token = _state(app, withdrawal_id)
    assert app.extensions["bank_gateway"].total_paid_out(token) == 0
    assert (status, reason, hold_status, available, pending) == ("failed", "bank_never_answered", "voided", 5000, 0)


def test_a_one_shot_sweep_with_a_trade_it_could_not_sweep_exits_non_zero_and_names_it(api, app, clock, monkeypatch):
    """Run from cron, ``flask escrow sweep`` is the only sign an operator gets: a trade whose deadline raised every
    time (logged) must fail the job, while the trades it could sweep are swept; a later clean sweep exits 0."""
    first, second, real = _two_unpaid_trades_the_first_unsweepable(api, clock, monkeypatch)
    result = app.test_cli_runner().invoke(args=["escrow", "sweep"])
    assert result.exit_code == 1, result.output
    assert "closed_unpaid=1" in result.output
    assert "1 trade(s) could not be swept" in result.output and first in result.output and second not in result.output
    monkeypatch.setattr(trades, "_expire_unpaid", real)
    again = app.test_cli_runner().invoke(args=["escrow", "sweep"])
    assert again.exit_code == 0, again.output
    assert again.output.split()[0] == "closed_unpaid=1"

