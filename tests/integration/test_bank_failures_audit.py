"""What a bank that answers late or oddly must not do to the books (an audit of bank failures): the day a limit is
given back to, a connection lost after the debit, a debit still processing, a card removed during a withdrawal."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from core.db import db, run_in_transaction
from tests.api.escrow_helpers import PP
from tests.integration.test_escrow_races import post
from tests.integration.test_lost_connections import drop_the_pools_connections
from tests.lock_waits import waits_on_a_lock
from wallet import funds
from wallet.banks import BankResult, SimulatedBank
from wallet.card_models import BankCard
from wallet.check import check_invariants
from wallet.funds import create_topup, process_withdrawals
from wallet.funds_models import DailyUsage, TopUp, Withdrawal


def _pending_topup(app, account, amount: int) -> str:
    with app.app_context():
        return run_in_transaction(lambda: create_topup(account["user"]["id"], account["card_id"], amount, "CNY").id)


def _status(app, topup_id: str) -> str:
    with app.app_context():
        status = db.session.get(TopUp, topup_id).status
        db.session.commit()
        return status


def test_a_withdrawal_counted_before_midnight_gives_the_limit_back_to_that_day_when_it_fails(
        api, app, clock, monkeypatch):
    """The withdrawal counted itself on the day it read before waiting for the day's usage row (a payment of the same
    user held it), and took its own time after the wait: past midnight (China Standard Time) its failure gave the
    amount back to the new day, where it had never been counted, and the user could send more than the daily limit
    on that day."""
    if not app.config["SQLALCHEMY_DATABASE_URI"].startswith("postgresql"):
        pytest.skip("needs PostgreSQL (WALLET_TEST_DATABASE_URL): SQLite runs one writer at a time anyway")
    app.config["LIMIT_DAILY"] = 5000
    alice, bob = api.verified(card_ending="8888"), api.register()
    assert api.money("/api/v1/topups", alice, amount=20000, bank_card_id=alice["card_id"]).status_code == 201
    clock.set(datetime(2026, 1, 15, 15, 59, 59, 500000, tzinfo=UTC))  # 23:59:59.5 in Beijing
    api.relogin(alice)
    reached, go, paying = threading.Event(), threading.Event(), []
    enqueue = funds.enqueue

    def pausing_enqueue(*args, **kwargs):  # the payment stops here, holding the day's usage row
        if threading.get_ident() in paying and not reached.is_set():
            reached.set()
            assert go.wait(20)
        return enqueue(*args, **kwargs)

    monkeypatch.setattr(funds, "enqueue", pausing_enqueue)
    answers = {}

    def pay():
        paying.append(threading.get_ident())
        answers["pay"] = post(app, alice, "/api/v1/transfers", key="pay", **PP, amount=1000, to_phone=bob["phone"])

    def withdraw():
        answers["withdraw"] = post(app, alice, "/api/v1/withdrawals", key="wd", **PP, amount=1000,
                                   bank_card_id=alice["card_id"])

    payer, withdrawer = threading.Thread(target=pay), threading.Thread(target=withdraw)
    payer.start()
    assert reached.wait(20)
    withdrawer.start()
    assert waits_on_a_lock(withdrawer)  # waiting for the day's usage row, its day read before midnight
    clock.advance(seconds=1)  # midnight passes meanwhile
    go.set()
    payer.join(20)
    withdrawer.join(20)
    assert answers["pay"][0] == 201 and answers["withdraw"][0] == 202, answers

    api.relogin(alice)
    assert api.money("/api/v1/transfers", alice, amount=5000, to_phone=bob["phone"]).status_code == 201  # new day
    with app.app_context():
        clock.advance(seconds=60)
        process_withdrawals()  # the 8888 card's payout fails: the 1000 comes back
        assert db.session.scalars(select(Withdrawal.status)).one() == "failed"
        usage = {row.day.isoformat(): row.amount for row in db.session.scalars(select(DailyUsage))}
        db.session.commit()
    assert usage == {"2026-01-15": 1000, "2026-01-16": 5000}
    api.relogin(alice)
    over = api.money("/api/v1/transfers", alice, amount=1000, to_phone=bob["phone"])
    assert (over.status_code, over.json["code"]) == (422, "limit_exceeded")
    with app.app_context():
        assert check_invariants() == []


class _BankWhoseAnswerArrivesAsTheDatabaseGoes:
    """The simulated bank, except that the database connections are dropped (a PostgreSQL restart) the first time
    the bank has debited a card, before our transaction could record it."""

    def __init__(self, bank: SimulatedBank, app) -> None:
        self.bank, self.app, self.dropped = bank, app, 0

    def __getattr__(self, name):
        return getattr(self.bank, name)

    def debit(self, bank_code, card_token, amount, reference):
        result = self.bank.debit(bank_code, card_token, amount, reference)
        if not self.dropped:
            self.dropped = drop_the_pools_connections(self.app)
        return result


def test_a_top_up_whose_transaction_lost_its_connection_after_the_bank_debited_is_credited_once(api, app, inbox):
    if not app.config["SQLALCHEMY_DATABASE_URI"].startswith("postgresql"):
        pytest.skip("needs PostgreSQL (WALLET_TEST_DATABASE_URL)")
    alice = api.verified()
    bank: SimulatedBank = app.extensions["bank_gateway"]
    app.extensions["bank_gateway"] = _BankWhoseAnswerArrivesAsTheDatabaseGoes(bank, app)
    first = api.money("/api/v1/topups", alice, key="top", amount=1500, bank_card_id=alice["card_id"])
    assert app.extensions["bank_gateway"].dropped >= 1
    again = api.money("/api/v1/topups", alice, key="top", amount=1500, bank_card_id=alice["card_id"])
    assert (first.status_code, again.status_code) == (201, 201), (first.json, again.json)
    assert api.balance(alice) == 1500
    with app.app_context():
        token = db.session.get(BankCard, alice["card_id"]).bank_token
        db.session.commit()
    assert bank.total_debited(token) == 1500
    assert len(inbox.messages(to=alice["phone"], event="topup_credited")) == 1
    with app.app_context():
        assert check_invariants() == []


class _BankStillProcessingDebits:
    """The simulated bank, except that a debit first answers "accepted" (still processing, as a bank answers a
    debit it has queued), and its outcome only when asked again by the same reference."""

    def __init__(self, bank: SimulatedBank) -> None:
        self.bank, self.asked = bank, set()

    def __getattr__(self, name):
        return getattr(self.bank, name)

    def debit(self, bank_code, card_token, amount, reference):
        if reference not in self.asked:
            self.asked.add(reference)
            return BankResult("accepted", "SIM-QUEUED")
        return self.bank.debit(bank_code, card_token, amount, reference)


def test_a_debit_the_bank_is_still_processing_credits_nothing_until_it_has_succeeded(api, app, inbox):
    alice = api.verified()
    bank: SimulatedBank = app.extensions["bank_gateway"]
    app.extensions["bank_gateway"] = _BankStillProcessingDebits(bank)
    first = api.money("/api/v1/topups", alice, key="top", amount=1500, bank_card_id=alice["card_id"])
    assert (first.status_code, first.json["code"]) == (503, "bank_unavailable"), first.json
    assert api.balance(alice) == 0, "the wallet was credited for money the bank had not taken yet"
    again = api.money("/api/v1/topups", alice, key="top", amount=1500, bank_card_id=alice["card_id"])
    assert (again.status_code, again.json["status"]) == (201, "succeeded"), again.json
    assert api.balance(alice) == 1500
    assert len(inbox.messages(to=alice["phone"], event="topup_credited")) == 1
    with app.app_context():
        assert check_invariants() == []


@pytest.mark.parametrize("first_one", ["withdrawal", "removal"])
def test_a_card_removed_while_a_withdrawal_to_it_is_requested_one_wins(api, app, monkeypatch, first_one):
    from tests.integration.test_money_races_audit import first_pauses_inside
    from wallet import cards

    if not app.config["SQLALCHEMY_DATABASE_URI"].startswith("postgresql"):
        pytest.skip("needs PostgreSQL (WALLET_TEST_DATABASE_URL): SQLite runs one writer at a time anyway")
    alice = api.verified()
    assert api.money("/api/v1/topups", alice, amount=3000, bank_card_id=alice["card_id"]).status_code == 201
    withdraw = lambda: post(app, alice, "/api/v1/withdrawals", key="wd", **PP, amount=1000,  # noqa: E731
                            bank_card_id=alice["card_id"])

    def remove():
        response = app.test_client().delete(f"/api/v1/me/bank-cards/{alice['card_id']}", headers=alice["headers"])
        return response.status_code, response.get_json()

    target, calls = (funds, (withdraw, remove)) if first_one == "withdrawal" else (cards, (remove, withdraw))
    first, second, waited = first_pauses_inside(monkeypatch, target, "enqueue", *calls)
    assert waited  # the second queued on the card's row lock
    if first_one == "withdrawal":
        assert first[0] == 202 and (second[0], second[1]["code"]) == (409, "card_in_use"), (first, second)
        assert api.balance(alice) == 2000
    else:
        assert first[0] == 204 and (second[0], second[1]["code"]) == (404, "card_not_found"), (first, second)
        assert api.balance(alice) == 3000
    with app.app_context():
        assert check_invariants() == []
