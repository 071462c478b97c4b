"""The invariant checker finds books that were changed behind the ledger's back, and ``flask wallet check``
says so with its exit status."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

import pytest
from flask import Flask
from sqlalchemy import text

from core.db import db
from tests.db_triggers import trigger_off
from wallet import ledger
from wallet.check import check_invariants
from wallet.models import BANK_CLEARING

NOW = datetime(2026, 1, 15, 8, 0)
_ENTRIES_GUARD = "ledger_entries_match_their_transfer"


@dataclass
class Books:
    alice: str
    bob: str
    bank: str
    payment_id: str
    hold_id: str


@pytest.fixture
def books(app: Flask) -> Iterator[Books]:
    with app.app_context():
        alice, bob = ledger.open_wallet("usr_alice"), ledger.open_wallet("usr_bob")
        bank = ledger.system_account(BANK_CLEARING, "ICBC", shard=0)
        ledger.transfer(bank, alice, 100_00, kind=ledger.TOPUP)
        payment = ledger.transfer(alice, bob, 30_00, kind=ledger.PAYMENT)
        hold = ledger.create_hold(alice, bank, 5_00, kind=ledger.WITHDRAWAL)
        yield Books(alice, bob, bank, payment.id, hold.id)


def tamper(sql: str, **params: object) -> None:
    """Changes the books with raw SQL the database accepts but the ledger would never write."""
    db.session.execute(text(sql), params)
    db.session.commit()


def test_clean_books_have_no_problems(books):
    assert check_invariants() == []


def test_a_cached_balance_that_disagrees_with_the_transfers_is_found(books):
    tamper("UPDATE ledger_accounts SET credits_posted = credits_posted + 7 WHERE id = :id", id=books.bank)
    assert check_invariants() == [
        "CNY: balances of all ledger accounts sum to 7, not 0",
        f"ledger account {books.bank} (bank_clearing ICBC): credits_posted is 7 but transfers give 0",
    ]


def test_pending_totals_that_disagree_with_the_open_holds_are_found(books):
    tamper("UPDATE ledger_accounts SET debits_pending = 0 WHERE id = :id", id=books.alice)
    assert check_invariants() == [
        "CNY: pending debits 0 differ from pending credits 500",
        f"ledger account {books.alice} (wallet usr_alice): debits_pending is 0 but open holds give 500",
    ]


def test_a_transfer_without_its_entries_and_a_wrong_running_balance_are_found(books):
    tamper(
        "INSERT INTO transfers (id, debit_account_id, credit_account_id, amount, currency, kind, created_at)"
        " VALUES ('tf_sneaky', :bob, :alice, 1, 'CNY', 'payment', :now)",
        bob=books.bob, alice=books.alice, now=NOW,
    )
    with trigger_off(_ENTRIES_GUARD, "ledger_entries"):  # the database refuses such entries (0029)
        tamper(
            "INSERT INTO ledger_entries (account_id, transfer_id, counterparty_account_id, kind, amount, balance_after,"
            " created_at) VALUES (:alice, 'tf_sneaky', :bob, 'payment', 1, 5, :now)",
            bob=books.bob, alice=books.alice, now=NOW,
        )
    problems = check_invariants()
    assert (f"ledger account {books.alice} (wallet usr_alice): credits_posted is 10000 but transfers give 10001"
            in problems)
    assert f"ledger account {books.bob} (wallet usr_bob): debits_posted is 0 but transfers give 1" in problems
    assert "transfer tf_sneaky has 0 debit and 1 credit entries, not one of each" in problems
    assert any(p.startswith("ledger entry ") and "balance_after 5 but entries sum to 7001" in p for p in problems)


def test_an_entry_that_does_not_match_its_transfer_is_found(books):
    with trigger_off(_ENTRIES_GUARD, "ledger_entries"):  # the database refuses such entries (0029)
        tamper(
            "INSERT INTO ledger_entries (account_id, transfer_id, counterparty_account_id, kind, amount, balance_after,"
            " created_at) VALUES (:bob, :payment, :alice, 'refund', 1, 3001, :now)",
            bob=books.bob, alice=books.alice, payment=books.payment_id, now=NOW,
        )
    problems = check_invariants()
    assert any(p.endswith(f"does not match its transfer {books.payment_id}") for p in problems)
    assert f"transfer {books.payment_id} has 1 debit and 2 credit entries, not one of each" in problems


def test_a_pending_hold_with_a_resolution_is_found(books):
    tamper("INSERT INTO hold_resolutions (hold_id, outcome, posted_amount, resolved_at)"
           " VALUES (:id, 'voided', 0, :now)", id=books.hold_id, now=NOW)
    assert check_invariants() == [f"hold {books.hold_id} is pending but its resolution says voided"]


def test_a_wallet_below_zero_is_found_even_without_its_constraint(books):
    if db.engine.dialect.name != "postgresql":
        pytest.skip("dropping a CHECK constraint needs PostgreSQL")
    tamper("ALTER TABLE ledger_accounts DROP CONSTRAINT ck_ledger_accounts_available_not_negative")
    try:
        tamper("UPDATE ledger_accounts SET debits_posted = debits_posted + 7000 WHERE id = :id", id=books.alice)
        problems = check_invariants()
        assert f"ledger account {books.alice} (wallet usr_alice) is below zero: available -500" in problems
    finally:
        tamper("UPDATE ledger_accounts SET debits_posted = debits_posted - 7000 WHERE id = :id", id=books.alice)
        tamper(
            "ALTER TABLE ledger_accounts ADD CONSTRAINT ck_ledger_accounts_available_not_negative CHECK"
            " (kind NOT IN ('wallet', 'escrow') OR credits_posted - debits_posted - debits_pending >= 0)"
        )


def test_flask_wallet_check_exits_zero_on_clean_books_and_one_otherwise(app, books):
    runner = app.test_cli_runner()
    clean = runner.invoke(args=["wallet", "check"])
    assert clean.exit_code == 0, clean.output
    assert "ledger clean: 3 ledger accounts, 2 transfers, 4 ledger entries, 1 open holds" in clean.output

    tamper("UPDATE ledger_accounts SET credits_posted = credits_posted + 7 WHERE id = :id", id=books.bank)
    broken = runner.invoke(args=["wallet", "check"])
    assert broken.exit_code == 1
    assert "CNY: balances of all ledger accounts sum to 7, not 0" in broken.output
    assert "ledger clean" not in broken.output


def test_a_resolved_hold_without_a_resolution_is_found(books):
    """A hold that is no longer pending has the resolution that says how it ended."""
    tamper("UPDATE holds SET status = 'voided' WHERE id = :id", id=books.hold_id)
    assert f"hold {books.hold_id} is voided but its resolution says nothing" in check_invariants()


@pytest.mark.parametrize(("posted_amount", "transfer_amount", "kind"), [
    (6_00, 6_00, "withdrawal"),  # more posted than the hold reserved
    (3_00, 5_00, "withdrawal"),  # the transfer moved another amount than the resolution says
    (5_00, 5_00, "payment"),     # the transfer is of another kind than the hold
])
def test_a_posted_hold_whose_transfer_does_not_match_is_found(books, posted_amount, transfer_amount, kind):
    """A posted hold's transfer moves what its resolution says, at most the held amount, between its accounts, of its
    kind."""
    tamper(
        "INSERT INTO transfers (id, debit_account_id, credit_account_id, amount, currency, kind, hold_id, created_at)"
        " VALUES ('tf_post', :alice, :bank, :amount, 'CNY', :kind, :hold, :now)",
        alice=books.alice, bank=books.bank, amount=transfer_amount, kind=kind, hold=books.hold_id, now=NOW,
    )
    tamper("INSERT INTO hold_resolutions (hold_id, outcome, posted_amount, transfer_id, resolved_at)"
           " VALUES (:id, 'posted', :posted, 'tf_post', :now)", id=books.hold_id, posted=posted_amount, now=NOW)
    tamper("UPDATE holds SET status = 'posted' WHERE id = :id", id=books.hold_id)
    assert (f"hold {books.hold_id} (amount 500) posted {posted_amount} but its transfer tf_post does not match"
            in check_invariants())


def test_a_transfer_naming_a_hold_whose_resolution_does_not_name_it_is_found(books):
    """Every transfer that posts a hold is the one that hold's resolution names."""
    tamper(
        "INSERT INTO transfers (id, debit_account_id, credit_account_id, amount, currency, kind, hold_id, created_at)"
        " VALUES ('tf_orphan', :alice, :bank, 500, 'CNY', 'withdrawal', :hold, :now)",
        alice=books.alice, bank=books.bank, hold=books.hold_id, now=NOW,
    )
    assert (f"transfer tf_orphan posts hold {books.hold_id} but that hold's resolution does not name it"
            in check_invariants())


def test_an_entry_of_another_kind_than_its_transfer_is_found(books):
    """An entry carries its transfer's kind, even when its accounts and amount are right."""
    tamper(
        "INSERT INTO transfers (id, debit_account_id, credit_account_id, amount, currency, kind, created_at)"
        " VALUES ('tf_kind', :bob, :alice, 1, 'CNY', 'payment', :now)",
        bob=books.bob, alice=books.alice, now=NOW,
    )
    with trigger_off(_ENTRIES_GUARD, "ledger_entries"):  # the database refuses such entries (0029)
        tamper(
            "INSERT INTO ledger_entries (account_id, transfer_id, counterparty_account_id, kind, amount, balance_after,"
            " created_at) VALUES (:bob, 'tf_kind', :alice, 'payment', -1, 2999, :now),"
            " (:alice, 'tf_kind', :bob, 'refund', 1, 7001, :now)",
            bob=books.bob, alice=books.alice, now=NOW,
        )
    mismatched = [p for p in check_invariants() if p.endswith("does not match its transfer tf_kind")]
    assert len(mismatched) == 1


def test_each_kind_of_problem_is_listed_at_most_limit_times_then_and_more(books):
    """Exactly LIMIT problems of a kind are all listed; one more is cut to LIMIT and "... and more"."""
    insert = text("INSERT INTO transfers (id, debit_account_id, credit_account_id, amount, currency, kind, created_at)"
                  " VALUES (:id, :bob, :alice, 1, 'CNY', 'payment', :now)")
    db.session.execute(insert, [{"id": f"tf_{n:03d}", "bob": books.bob, "alice": books.alice, "now": NOW}
                                for n in range(100)])
    db.session.commit()
    unentered = [p for p in check_invariants() if p.startswith("transfer tf_") or p == "... and more"]
    assert len(unentered) == 100 and "... and more" not in unentered

    tamper("INSERT INTO transfers (id, debit_account_id, credit_account_id, amount, currency, kind, created_at)"
           " VALUES ('tf_100', :bob, :alice, 1, 'CNY', 'payment', :now)", bob=books.bob, alice=books.alice, now=NOW)
    unentered = [p for p in check_invariants() if p.startswith("transfer tf_") or p == "... and more"]
    assert len(unentered) == 101 and unentered[-1] == "... and more"
