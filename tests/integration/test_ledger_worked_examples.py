"""Worked examples: the ledger told as stories, each ending with the invariant check.

Transfers run through both implementations on PostgreSQL (the one-statement path and the portable
multi-statement path SQLite uses); on SQLite only the portable path exists.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask
from sqlalchemy import select

from core.db import db, run_in_transaction
from wallet import ledger
from wallet.check import check_invariants
from wallet.errors import CurrencyMismatch, InsufficientFunds, LedgerAccountNotFound, SameLedgerAccount
from wallet.models import BANK_CLEARING, FEES, LedgerEntry, Transfer


@pytest.fixture(params=["one_statement", "portable"])
def books(request: pytest.FixtureRequest, app: Flask, monkeypatch: pytest.MonkeyPatch) -> Iterator[Flask]:
    """An app context whose transfers take the given path."""
    if request.param == "one_statement" and not app.config["SQLALCHEMY_DATABASE_URI"].startswith("postgresql"):
        pytest.skip("the one-statement transfer exists on PostgreSQL only")
    monkeypatch.setattr(ledger, "single_statement_transfers", request.param == "one_statement")
    with app.app_context():
        yield app


def statement(account_id: str) -> list[tuple[str, int, int, str]]:
    """(kind, signed amount, balance after, counterparty) of every movement, oldest first."""
    entries = db.session.scalars(
        select(LedgerEntry).where(LedgerEntry.account_id == account_id).order_by(LedgerEntry.id)
    ).all()
    rows = [(e.kind, e.amount, e.balance_after, e.counterparty_account_id) for e in entries]
    db.session.commit()  # the invariant check reads on a connection of its own
    return rows


def available(account_id: str) -> int:
    return ledger.balance(account_id).available


def test_top_up_500_pay_199_withdrawal_of_100_fails_then_50_succeeds(books):
    alice, bob = ledger.open_wallet("usr_alice"), ledger.open_wallet("usr_bob")
    icbc = ledger.system_account(BANK_CLEARING, "ICBC", shard=0)

    topup = ledger.transfer(icbc, alice, 500_00, kind=ledger.TOPUP, reference="bank-txn-1")
    assert (topup.debit_balance_after, topup.credit_balance_after) == (-500_00, 500_00)

    payment = ledger.transfer(alice, bob, 199_00, kind=ledger.PAYMENT, details={"note": "dinner"})
    assert payment.debit_balance_after == 301_00
    assert payment.credit_balance_after == 199_00

    failing = ledger.create_hold(alice, icbc, 100_00, kind=ledger.WITHDRAWAL)
    assert ledger.balance(alice) == ledger.Balance(alice, "CNY", posted=301_00, available=201_00, pending=100_00,
                                                   incoming=0)
    assert ledger.balance(icbc).incoming == 100_00
    ledger.void_hold(failing)  # the bank refused the payout: the money is back
    assert available(alice) == 301_00

    paid_out = ledger.create_hold(alice, icbc, 50_00, kind=ledger.WITHDRAWAL)
    withdrawal = ledger.post_hold(paid_out)
    assert withdrawal.amount == 50_00
    assert withdrawal.hold_id == paid_out.id

    assert ledger.balance(alice) == ledger.Balance(alice, "CNY", 251_00, 251_00, 0, 0)
    assert ledger.balance(bob).posted == 199_00
    assert ledger.balance(icbc).posted == -450_00  # 500.00 came in from ICBC, 50.00 went back out
    assert statement(alice) == [
        ("topup", 500_00, 500_00, icbc),
        ("payment", -199_00, 301_00, bob),
        ("withdrawal", -50_00, 251_00, icbc),
    ]
    assert statement(bob) == [("payment", 199_00, 199_00, alice)]
    stored = db.session.get(Transfer, payment.id)
    assert stored is not None
    assert (stored.amount, stored.kind, stored.currency) == (199_00, "payment", "CNY")
    assert stored.details == {"note": "dinner"}
    db.session.commit()
    assert check_invariants() == []


def test_buyer_pays_199_into_escrow_seller_gets_it_less_a_5_percent_fee(books):
    buyer, seller = ledger.open_wallet("usr_buyer"), ledger.open_wallet("usr_seller")
    bank = ledger.system_account(BANK_CLEARING, "CMB", shard=3)
    fees = ledger.system_account(FEES, "platform", shard=0)
    escrow = ledger.escrow_account("trade_0001")
    assert ledger.escrow_account("trade_0001") == escrow

    ledger.transfer(bank, buyer, 300_00, kind=ledger.TOPUP)
    ledger.transfer(buyer, escrow, 199_00, kind=ledger.ESCROW_PAY, reference="trade_0001")
    assert available(buyer) == 101_00
    assert available(escrow) == 199_00

    # The escrow account cannot pay out more than the trade holds.
    with pytest.raises(InsufficientFunds):
        ledger.transfer(escrow, seller, 199_01, kind=ledger.ESCROW_RELEASE)

    fee = 199_00 * 5 // 100
    ledger.transfer(escrow, fees, fee, kind=ledger.FEE, reference="trade_0001")
    ledger.transfer(escrow, seller, 199_00 - fee, kind=ledger.ESCROW_RELEASE, reference="trade_0001")

    assert available(escrow) == 0
    assert available(seller) == 189_05
    assert ledger.balance(fees).posted == 9_95
    assert ledger.balance(bank).posted == -300_00
    assert check_invariants() == []


def test_partial_refund_from_escrow_before_release(books):
    buyer, seller = ledger.open_wallet("usr_buyer"), ledger.open_wallet("usr_seller")
    bank = ledger.system_account(BANK_CLEARING, "ABC")
    escrow = ledger.escrow_account("trade_0002")
    ledger.transfer(bank, buyer, 200_00, kind=ledger.TOPUP)
    ledger.transfer(buyer, escrow, 150_00, kind=ledger.ESCROW_PAY)

    ledger.transfer(escrow, buyer, 50_00, kind=ledger.REFUND)
    ledger.transfer(escrow, seller, 100_00, kind=ledger.ESCROW_RELEASE)

    assert (available(buyer), available(seller), available(escrow)) == (100_00, 100_00, 0)
    assert [kind for kind, *_ in statement(buyer)] == ["topup", "escrow_pay", "refund"]
    assert check_invariants() == []


def test_paying_more_than_is_available_changes_nothing(books):
    alice, bob = ledger.open_wallet("usr_alice"), ledger.open_wallet("usr_bob")
    bank = ledger.system_account(BANK_CLEARING, "ICBC")
    ledger.transfer(bank, alice, 100_00, kind=ledger.TOPUP)
    ledger.create_hold(alice, bank, 30_00, kind=ledger.WITHDRAWAL)

    with pytest.raises(InsufficientFunds) as raised:
        ledger.transfer(alice, bob, 70_01, kind=ledger.PAYMENT)  # 30.00 of the 100.00 is on hold
    assert raised.value.extra == {"available": 70_00}

    assert ledger.balance(alice) == ledger.Balance(alice, "CNY", 100_00, 70_00, 30_00, 0)
    assert statement(bob) == []
    assert db.session.scalar(select(db.func.count()).select_from(Transfer)) == 1
    db.session.commit()
    ledger.transfer(alice, bob, 70_00, kind=ledger.PAYMENT)
    assert available(alice) == 0
    assert check_invariants() == []


def test_a_refusal_caught_inside_the_callers_transaction_leaves_it_usable(books):
    alice, bob, carol = (ledger.open_wallet(f"usr_{name}") for name in ("alice", "bob", "carol"))
    bank = ledger.system_account(BANK_CLEARING, "ICBC")
    ledger.transfer(bank, alice, 10_00, kind=ledger.TOPUP)

    def pay_bob_or_else_carol_less() -> str:
        try:
            ledger.transfer(alice, bob, 20_00, kind=ledger.PAYMENT)
            return "bob"
        except InsufficientFunds:
            ledger.transfer(alice, carol, 10_00, kind=ledger.PAYMENT)
            return "carol"

    assert run_in_transaction(pay_bob_or_else_carol_less) == "carol"
    assert (available(alice), available(bob), available(carol)) == (0, 0, 10_00)
    assert check_invariants() == []


def test_the_statement_keeps_a_running_balance_in_both_directions(books):
    alice, bob = ledger.open_wallet("usr_alice"), ledger.open_wallet("usr_bob")
    bank = ledger.system_account(BANK_CLEARING, "ICBC")
    ledger.transfer(bank, alice, 50_00, kind=ledger.TOPUP)
    for amount in (10_00, 5_00):
        ledger.transfer(alice, bob, amount, kind=ledger.PAYMENT)
        ledger.transfer(bob, alice, amount // 5, kind=ledger.PAYMENT)
    assert [(amount, after) for _, amount, after, _ in statement(alice)] == [
        (50_00, 50_00), (-10_00, 40_00), (2_00, 42_00), (-5_00, 37_00), (1_00, 38_00),
    ]
    assert [(amount, after) for _, amount, after, _ in statement(bob)] == [
        (10_00, 10_00), (-2_00, 8_00), (5_00, 13_00), (-1_00, 12_00),
    ]
    assert check_invariants() == []


def test_movements_between_currencies_or_unknown_accounts_are_refused(books):
    cny = ledger.open_wallet("usr_alice")
    usd = ledger.open_wallet("usr_alice", "USD")
    assert usd != cny
    bank = ledger.system_account(BANK_CLEARING, "ICBC")
    ledger.transfer(bank, cny, 100_00, kind=ledger.TOPUP, currency="CNY")

    with pytest.raises(CurrencyMismatch):
        ledger.transfer(cny, usd, 1_00, kind=ledger.PAYMENT)
    with pytest.raises(CurrencyMismatch):
        ledger.transfer(bank, cny, 1_00, kind=ledger.TOPUP, currency="USD")
    with pytest.raises(CurrencyMismatch):
        ledger.create_hold(cny, usd, 1_00, kind=ledger.WITHDRAWAL)
    with pytest.raises(LedgerAccountNotFound) as missing:
        ledger.transfer(cny, "la_nobody", 1_00, kind=ledger.PAYMENT)
    assert missing.value.status == 404
    with pytest.raises(SameLedgerAccount):
        ledger.transfer(cny, cny, 1_00, kind=ledger.PAYMENT)

    assert ledger.balance(cny).available == 100_00
    assert ledger.balance(usd).available == 0
    assert check_invariants() == []
