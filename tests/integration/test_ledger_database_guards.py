"""The database refuses bad books on its own: these tests bypass Python with raw SQL."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

import pytest
from flask import Flask
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from core.db import db
from wallet import ledger
from wallet.check import check_invariants
from wallet.models import BANK_CLEARING

NOW = datetime(2026, 1, 15, 8, 0)  # naive UTC, as stored


@dataclass
class Books:
    alice: str
    bob: str
    bank: str
    escrow: str
    payment_id: str
    posted_hold_id: str
    pending_hold_id: str


@pytest.fixture
def books(app: Flask) -> Iterator[Books]:
    """Alice topped up 100.00, paid Bob 30.00, withdrew 10.00 (posted) and has 5.00 on hold."""
    with app.app_context():
        alice, bob = ledger.open_wallet("usr_alice"), ledger.open_wallet("usr_bob")
        bank = ledger.system_account(BANK_CLEARING, "ICBC", shard=0)
        ledger.transfer(bank, alice, 100_00, kind=ledger.TOPUP)
        payment = ledger.transfer(alice, bob, 30_00, kind=ledger.PAYMENT)
        posted = ledger.create_hold(alice, bank, 10_00, kind=ledger.WITHDRAWAL)
        ledger.post_hold(posted)
        pending = ledger.create_hold(alice, bank, 5_00, kind=ledger.WITHDRAWAL)
        yield Books(alice, bob, bank, ledger.escrow_account("trade_1"), payment.id, posted.id, pending.id)
        db.session.rollback()
        assert check_invariants() == []  # every refused statement left the books as they were


def refused(sql: str, **params: object) -> str:
    """Runs ``sql`` expecting the database to refuse it; returns the database's message."""
    with pytest.raises(IntegrityError) as raised:
        db.session.execute(text(sql), params)
        db.session.flush()
    db.session.rollback()
    return str(raised.value.orig)


def is_postgres() -> bool:
    return db.engine.dialect.name == "postgresql"


def test_a_wallet_cannot_be_debited_below_zero(books):
    # 100.00 - 30.00 - 10.00 posted, 5.00 on hold: 55.00 available.
    message = refused("UPDATE ledger_accounts SET debits_posted = debits_posted + 5501 WHERE id = :id",
                      id=books.alice)
    assert "available_not_negative" in message


def test_a_wallet_cannot_hold_more_than_it_has(books):
    message = refused("UPDATE ledger_accounts SET debits_pending = debits_pending + 5501 WHERE id = :id",
                      id=books.alice)
    assert "available_not_negative" in message


def test_an_escrow_account_cannot_go_below_zero(books):
    message = refused("UPDATE ledger_accounts SET debits_posted = 1 WHERE id = :id", id=books.escrow)
    assert "available_not_negative" in message


def test_a_wallet_may_be_debited_to_exactly_zero_available(books):
    db.session.execute(text("UPDATE ledger_accounts SET debits_posted = debits_posted + 5500 WHERE id = :id"),
                       {"id": books.alice})
    db.session.rollback()


@pytest.mark.parametrize("total", ["debits_posted", "credits_posted", "debits_pending", "credits_pending"])
def test_no_total_of_a_bank_clearing_account_is_negative_even_though_its_balance_is(books, total):
    message = refused(f"UPDATE ledger_accounts SET {total} = -1 WHERE id = :id", id=books.bank)
    assert f"{total}_not_negative" in message


def test_a_transfer_cannot_be_updated(books):
    message = refused("UPDATE transfers SET amount = 1 WHERE id = :id", id=books.payment_id)
    assert "append-only" in message


def test_a_ledger_entry_cannot_be_updated(books):
    message = refused("UPDATE ledger_entries SET balance_after = 0 WHERE transfer_id = :id", id=books.payment_id)
    assert "append-only" in message


def test_a_transfer_cannot_be_deleted(books):
    if not is_postgres():
        pytest.skip("SQLite has no DELETE guard: the test fixture empties tables with DELETE")
    assert "append-only" in refused("DELETE FROM transfers WHERE id = :id", id=books.payment_id)
    assert "append-only" in refused("DELETE FROM ledger_entries WHERE transfer_id = :id", id=books.payment_id)


def _move_without_entries(books: Books, amount: int = 1_00) -> dict[str, object]:
    """Writes a transfer of ``amount`` from Alice to Bob and its effect on their accounts, as the ledger does before it
    writes the entries; returns the parameters of the two correct entries."""
    db.session.execute(text(
        "INSERT INTO transfers (id, debit_account_id, credit_account_id, amount, currency, kind, created_at)"
        " VALUES ('tf_new', :debit, :credit, :amount, 'CNY', 'payment', :now)"),
        {"debit": books.alice, "credit": books.bob, "amount": amount, "now": NOW})
    after = {}
    for account, column in ((books.alice, "debits_posted"), (books.bob, "credits_posted")):
        after[account] = db.session.execute(text(
            f"UPDATE ledger_accounts SET {column} = {column} + :amount WHERE id = :id"
            " RETURNING credits_posted - debits_posted"), {"amount": amount, "id": account}).scalar_one()
    return {"debit": books.alice, "credit": books.bob, "debit_amount": -amount, "credit_amount": amount,
            "debit_kind": "payment", "credit_kind": "payment", "debit_after": after[books.alice],
            "credit_after": after[books.bob], "now": NOW}


_ENTRIES = (
    "INSERT INTO ledger_entries (account_id, transfer_id, counterparty_account_id, kind, amount, balance_after,"
    " created_at) VALUES (:debit, 'tf_new', :credit, :debit_kind, :debit_amount, :debit_after, :now),"
    " (:credit, 'tf_new', :debit, :credit_kind, :credit_amount, :credit_after, :now)"
)


def test_the_entries_of_a_transfer_written_as_the_ledger_writes_them_are_accepted(books):
    db.session.execute(text(_ENTRIES), _move_without_entries(books))
    db.session.flush()
    db.session.rollback()


@pytest.mark.parametrize("wrong", [
    {"debit_amount": 1_00},  # the debit side written as a credit
    {"credit_amount": -1_00},  # the credit side written as a debit
    {"debit_amount": -2_00},  # not the transfer's amount
    {"credit_kind": "topup"},  # not the transfer's kind
    {"debit_after": 0},  # not the account's balance after the transfer
    {"credit": "escrow"},  # an account of the same currency that is no side of the transfer
], ids=["debit_positive", "credit_negative", "amount", "kind", "balance_after", "account"])
def test_an_entry_that_is_not_its_transfers_side_or_its_accounts_balance_is_refused(books, wrong):
    params = {**_move_without_entries(books), **wrong}
    if wrong.get("credit") == "escrow":
        params["credit"] = books.escrow
    message = refused(_ENTRIES, **params)
    assert "one side of its transfer" in message


def test_a_transfer_needs_a_positive_amount_and_two_accounts(books):
    insert = ("INSERT INTO transfers (id, debit_account_id, credit_account_id, amount, currency, kind, created_at)"
              " VALUES ('tf_bad', :debit, :credit, :amount, 'CNY', 'payment', :now)")
    assert "amount_positive" in refused(insert, debit=books.alice, credit=books.bob, amount=0, now=NOW)
    assert "accounts_differ" in refused(insert, debit=books.alice, credit=books.alice, amount=1, now=NOW)


def test_a_transfer_cannot_name_a_currency_its_accounts_do_not_hold(books):
    usd = ledger.open_wallet("usr_bob", "USD")
    insert = ("INSERT INTO transfers (id, debit_account_id, credit_account_id, amount, currency, kind, created_at)"
              " VALUES ('tf_bad', :debit, :credit, 1, :currency, 'payment', :now)")
    message = refused(insert, debit=books.alice, credit=books.bob, currency="USD", now=NOW)
    assert "foreign key" in message.lower()
    message = refused(insert, debit=books.alice, credit=usd, currency="CNY", now=NOW)
    assert "foreign key" in message.lower()


def test_a_hold_cannot_be_resolved_a_second_time(books):
    second = ("INSERT INTO hold_resolutions (hold_id, outcome, posted_amount, resolved_at)"
              " VALUES (:id, 'voided', 0, :now)")
    message = refused(second, id=books.posted_hold_id, now=NOW)
    assert "pk_hold_resolutions" in message or "UNIQUE constraint failed: hold_resolutions.hold_id" in message


def test_a_resolved_hold_cannot_change_its_status_again(books):
    message = refused("UPDATE holds SET status = 'voided' WHERE id = :id", id=books.posted_hold_id)
    assert "only a pending hold is resolved" in message


def test_a_hold_cannot_go_back_to_pending_or_change_its_amount(books):
    assert "only a pending hold" in refused("UPDATE holds SET amount = 1 WHERE id = :id", id=books.pending_hold_id)
    assert "only a pending hold" in refused(
        "UPDATE holds SET status = 'pending' WHERE id = :id", id=books.posted_hold_id
    )


def test_a_hold_resolution_cannot_be_rewritten(books):
    message = refused("UPDATE hold_resolutions SET posted_amount = 1 WHERE hold_id = :id", id=books.posted_hold_id)
    assert "append-only" in message
    if is_postgres():
        message = refused("DELETE FROM hold_resolutions WHERE hold_id = :id", id=books.posted_hold_id)
        assert "append-only" in message


def test_a_posted_resolution_must_name_its_transfer(books):
    message = refused(
        "INSERT INTO hold_resolutions (hold_id, outcome, posted_amount, resolved_at) VALUES (:id, 'posted', 1, :now)",
        id=books.pending_hold_id, now=NOW,
    )
    assert "posted_has_transfer" in message


def test_a_ledger_account_keeps_its_currency_and_owner(books):
    assert "identity" in refused("UPDATE ledger_accounts SET currency = 'USD' WHERE id = :id", id=books.bob)
    assert "identity" in refused("UPDATE ledger_accounts SET owner = 'usr_mallory' WHERE id = :id", id=books.bob)
    if is_postgres():
        assert "never deleted" in refused("DELETE FROM ledger_accounts WHERE id = :id", id=books.escrow)


def test_one_wallet_per_user_and_currency(books):
    message = refused(
        "INSERT INTO ledger_accounts (id, kind, owner, currency, shard, debits_posted, credits_posted,"
        " debits_pending, credits_pending, created_at) VALUES ('la_twin', 'wallet', 'usr_alice', 'CNY', 0, 0, 0, 0,"
        " 0, :now)",
        now=NOW,
    )
    assert ("uq_ledger_accounts_kind_owner_currency_shard" in message
            or "UNIQUE constraint failed: ledger_accounts" in message)
