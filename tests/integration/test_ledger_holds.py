"""Holds: reserve, then post (fully or in part), void or expire, exactly once."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import pytest
from flask import Flask
from sqlalchemy import select

from core.clock import FrozenClock
from core.db import db
from wallet import ledger
from wallet.check import check_invariants
from wallet.errors import HoldAlreadyResolved, HoldAmountExceeded, HoldExpired, HoldNotFound, InvalidAmount
from wallet.models import BANK_CLEARING, EXPIRED, POSTED, VOIDED, Hold, HoldResolution, Transfer


@dataclass
class Books:
    wallet: str
    bank: str


@pytest.fixture
def books(app: Flask) -> Iterator[Books]:
    """A wallet with 100.00 topped up from ICBC."""
    with app.app_context():
        wallet = ledger.open_wallet("usr_alice")
        bank = ledger.system_account(BANK_CLEARING, "ICBC", shard=1)
        ledger.transfer(bank, wallet, 100_00, kind=ledger.TOPUP)
        yield Books(wallet, bank)


def resolution(hold_id: str) -> tuple[str, str, int, str | None]:
    hold, outcome = db.session.execute(
        select(Hold, HoldResolution).join(HoldResolution, HoldResolution.hold_id == Hold.id).where(Hold.id == hold_id)
    ).one()
    result = (hold.status, outcome.outcome, outcome.posted_amount, outcome.transfer_id)
    db.session.commit()
    return result


def test_posting_part_of_a_withdrawal_hold_returns_the_rest(books):
    hold = ledger.create_hold(books.wallet, books.bank, 40_00, kind=ledger.WITHDRAWAL, reference="wd_1")
    assert ledger.balance(books.wallet).available == 60_00

    posted = ledger.post_hold(hold, 25_00)

    assert (posted.amount, posted.kind, posted.hold_id, posted.reference) == (25_00, "withdrawal", hold.id, "wd_1")
    assert ledger.balance(books.wallet) == ledger.Balance(books.wallet, "CNY", 75_00, 75_00, 0, 0)
    assert ledger.balance(books.bank) == ledger.Balance(books.bank, "CNY", -75_00, -75_00, 0, 0)
    assert resolution(hold.id) == (POSTED, POSTED, 25_00, posted.id)
    assert check_invariants() == []


def test_a_hold_is_resolved_exactly_once(books):
    hold = ledger.create_hold(books.wallet, books.bank, 10_00, kind=ledger.WITHDRAWAL)
    ledger.void_hold(hold)

    for second_try in (lambda: ledger.post_hold(hold), lambda: ledger.void_hold(hold.id)):
        with pytest.raises(HoldAlreadyResolved) as raised:
            second_try()
        assert raised.value.status == 409
        assert raised.value.code == "hold_already_resolved"
        assert raised.value.extra == {"hold_status": VOIDED}

    assert resolution(hold.id) == (VOIDED, VOIDED, 0, None)
    assert ledger.balance(books.wallet).available == 100_00
    assert db.session.scalar(select(db.func.count()).select_from(Transfer)) == 1
    db.session.commit()
    assert check_invariants() == []


def test_posting_more_than_the_hold_or_nothing_is_refused_and_changes_nothing(books):
    hold = ledger.create_hold(books.wallet, books.bank, 10_00, kind=ledger.WITHDRAWAL)
    with pytest.raises(HoldAmountExceeded):
        ledger.post_hold(hold, 10_01)
    with pytest.raises(InvalidAmount):
        ledger.post_hold(hold, 0)

    assert ledger.balance(books.wallet).pending == 10_00
    assert ledger.post_hold(hold, 10_00).amount == 10_00  # still pending, so it can still be posted
    assert check_invariants() == []


def test_unknown_holds_are_not_found(books):
    with pytest.raises(HoldNotFound):
        ledger.post_hold("hold_nope")
    with pytest.raises(HoldNotFound):
        ledger.void_hold("hold_nope")


def test_the_sweeper_expires_due_holds_once_and_returns_their_money(books, clock: FrozenClock):
    soon = ledger.create_hold(books.wallet, books.bank, 10_00, kind=ledger.WITHDRAWAL,
                              expires_at=clock.now() + timedelta(minutes=30))
    later = ledger.create_hold(books.wallet, books.bank, 20_00, kind=ledger.WITHDRAWAL,
                               expires_at=clock.now() + timedelta(hours=2))
    forever = ledger.create_hold(books.wallet, books.bank, 30_00, kind=ledger.WITHDRAWAL)
    assert ledger.balance(books.wallet).available == 40_00

    assert ledger.expire_holds() == 0
    clock.advance(minutes=30)
    assert ledger.expire_holds() == 1
    assert ledger.expire_holds() == 0
    assert resolution(soon.id) == (EXPIRED, EXPIRED, 0, None)
    assert ledger.balance(books.wallet).available == 50_00

    clock.advance(hours=10)
    assert ledger.expire_holds() == 1
    assert ledger.balance(books.wallet) == ledger.Balance(books.wallet, "CNY", 100_00, 70_00, 30_00, 0)
    assert resolution(later.id)[0] == EXPIRED
    assert ledger.post_hold(forever).amount == 30_00
    assert check_invariants() == []


def test_a_hold_past_its_deadline_can_no_longer_be_posted_or_voided(books, clock: FrozenClock):
    hold = ledger.create_hold(books.wallet, books.bank, 10_00, kind=ledger.WITHDRAWAL,
                              expires_at=clock.now() + timedelta(minutes=5))
    clock.advance(minutes=5)
    with pytest.raises(HoldExpired) as raised:
        ledger.post_hold(hold)
    assert raised.value.code == "hold_expired"
    with pytest.raises(HoldExpired):
        ledger.void_hold(hold)

    assert ledger.expire_holds() == 1
    with pytest.raises(HoldAlreadyResolved):
        ledger.post_hold(hold)
    assert ledger.balance(books.wallet).available == 100_00
    assert check_invariants() == []


def test_the_sweeper_works_in_batches(books, clock: FrozenClock):
    for _ in range(5):
        ledger.create_hold(books.wallet, books.bank, 1_00, kind=ledger.WITHDRAWAL,
                           expires_at=clock.now() + timedelta(seconds=1))
    clock.advance(seconds=1)
    assert ledger.expire_holds(limit=2) == 2
    assert ledger.expire_holds(limit=2) == 2
    assert ledger.expire_holds(limit=2) == 1
    assert ledger.balance(books.wallet).pending == 0
    assert check_invariants() == []
