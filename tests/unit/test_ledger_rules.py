"""The ledger's pure rules: how each movement changes an account's four totals, and what is refused."""

from __future__ import annotations

import re

import pytest

from core.money import MAX_AMOUNT
from wallet import ledger
from wallet.errors import (
    CurrencyMismatch,
    HoldAmountExceeded,
    InsufficientFunds,
    InvalidAmount,
    SameLedgerAccount,
)
from wallet.ledger import Totals
from wallet.models import ACCOUNT_KINDS, BANK_CLEARING, ESCROW, FEES, SYSTEM, WALLET


def test_balance_is_credits_less_debits_and_available_also_less_money_on_hold():
    totals = Totals(debits_posted=300, credits_posted=1000, debits_pending=200, credits_pending=50)
    assert totals.balance == 700
    assert totals.available == 500


def test_a_transfer_debits_one_side_and_credits_the_other_by_the_same_amount():
    debit, credit = ledger.transfer_effect(199)
    assert debit == Totals(debits_posted=199)
    assert credit == Totals(credits_posted=199)


def test_a_hold_makes_the_amount_pending_on_both_sides_and_unavailable_to_the_payer():
    debit, credit = ledger.hold_effect(100)
    wallet = Totals(credits_posted=500).plus(debit)
    assert wallet.available == 400
    assert wallet.balance == 500
    assert credit == Totals(credits_pending=100)


@pytest.mark.parametrize(("held", "posted", "available_after"), [(100, 100, 400), (100, 60, 440), (100, 1, 499)])
def test_posting_part_of_a_hold_returns_the_rest(held, posted, available_after):
    wallet = Totals(credits_posted=500).plus(ledger.hold_effect(held)[0])
    debit, credit = ledger.post_effect(held, posted)
    after = wallet.plus(debit)
    assert after.debits_pending == 0
    assert after.available == available_after
    assert after.balance == 500 - posted
    assert Totals(credits_pending=held).plus(credit) == Totals(credits_posted=posted)


def test_voiding_a_hold_returns_everything():
    wallet = Totals(credits_posted=500).plus(ledger.hold_effect(100)[0])
    after = wallet.plus(ledger.release_effect(100)[0])
    assert after == Totals(credits_posted=500)


@pytest.mark.parametrize("amount", [1, 199, MAX_AMOUNT])
def test_amounts_are_positive_integers_of_minor_units(amount):
    assert ledger.check_amount(amount) == amount


@pytest.mark.parametrize("amount", [0, -1, MAX_AMOUNT + 1, 1.5, 100.0, "100", True, None])
def test_anything_else_is_an_invalid_amount(amount):
    with pytest.raises(InvalidAmount) as raised:
        ledger.check_amount(amount)
    assert raised.value.code == "invalid_amount"
    assert raised.value.status == 422


@pytest.mark.parametrize("kind", [WALLET, ESCROW])
def test_wallets_and_escrow_accounts_may_not_go_below_zero_available(kind):
    with pytest.raises(InsufficientFunds) as raised:
        ledger.check_covers(kind, Totals(credits_posted=100, debits_pending=30), Totals(debits_posted=71))
    assert raised.value.code == "insufficient_funds"
    assert raised.value.status == 422
    assert raised.value.extra == {"available": 70}


@pytest.mark.parametrize("kind", [WALLET, ESCROW])
def test_spending_exactly_what_is_available_is_allowed(kind):
    ledger.check_covers(kind, Totals(credits_posted=100, debits_pending=30), Totals(debits_posted=70))


@pytest.mark.parametrize("kind", [BANK_CLEARING, FEES, SYSTEM])
def test_system_accounts_may_go_negative(kind):
    ledger.check_covers(kind, Totals(), Totals(debits_posted=10**9))


def test_every_kind_of_account_is_either_protected_or_a_system_account():
    assert set(ACCOUNT_KINDS) == {WALLET, ESCROW, *ledger.SHARDS}


def test_a_movement_needs_two_different_accounts():
    with pytest.raises(SameLedgerAccount):
        ledger.check_sides("la_1", "la_1")
    ledger.check_sides("la_1", "la_2")


@pytest.mark.parametrize(
    ("debit", "credit", "expected"), [("CNY", "USD", None), ("USD", "CNY", None), ("CNY", "CNY", "USD")]
)
def test_currencies_of_both_accounts_and_of_the_caller_must_agree(debit, credit, expected):
    with pytest.raises(CurrencyMismatch) as raised:
        ledger.check_currencies(debit, credit, expected)
    assert raised.value.code == "currency_mismatch"


def test_agreeing_currencies_name_the_movement_currency():
    assert ledger.check_currencies("CNY", "CNY", None) == "CNY"
    assert ledger.check_currencies("CNY", "CNY", "CNY") == "CNY"


def test_posting_defaults_to_the_whole_hold_and_never_more():
    assert ledger.check_post_amount(100, None) == 100
    assert ledger.check_post_amount(100, 40) == 40
    with pytest.raises(HoldAmountExceeded):
        ledger.check_post_amount(100, 101)
    with pytest.raises(InvalidAmount):
        ledger.check_post_amount(100, 0)


@pytest.mark.parametrize("kind", ["Topup", "", "top-up", "x" * 33, "1fee"])
def test_transfer_kinds_are_lowercase_words(kind):
    with pytest.raises(ValueError, match="invalid transfer kind"):
        ledger.check_kind(kind)


@pytest.mark.parametrize("currency", ["cny", "CN", "CNYY", ""])
def test_currencies_are_iso_codes(currency):
    with pytest.raises(ValueError, match="invalid currency"):
        ledger.check_currency(currency)


def test_the_one_statement_transfer_has_every_parameter_in_the_drivers_style():
    sent = ledger._TRANSFER_ONE_STATEMENT.driver_sql("postgresql")
    leftover = re.findall(r"(?<![:\w]):\w+", sent)
    assert leftover == []
    assert set(re.findall(r"%\((\w+)\)s", sent)) == {
        "id", "debit", "credit", "amount", "currency", "kind", "reference", "details", "now",
    }
