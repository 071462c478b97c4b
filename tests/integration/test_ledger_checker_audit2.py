"""``flask wallet check`` holds top-ups and withdrawals to the amounts (and the wallet) the ledger moved for them
(``wallet.check``, item 8: the ledger agrees with the money tables beside it).

Found by the arithmetic audit, writing rows with plain SQL as a buggy release could (a guard trigger switched off as
the database owner could, ``tests.db_triggers``): a top-up credited with another amount than the bank was asked to
debit, or to another user's wallet, and a withdrawal marked paid out whose hold posted only part of it, each kept every
ledger rule, so the checker called the books clean while money was created or lost beside them."""

from __future__ import annotations

import pytest

from core.db import db
from tests.db_triggers import trigger_off
from tests.integration.test_ledger_checker_links import _CARD, _TOPUP, _WITHDRAWAL, _sql, parties  # noqa: F401
from wallet import ledger
from wallet.check import check_invariants


@pytest.mark.parametrize("credited", ["more", "another user"])
def test_a_top_up_credited_with_another_amount_or_to_another_wallet_is_reported(parties, credited):  # noqa: F811
    """The top-up says the bank debited 100 from usr_b's card; its transfer credited 5,000 (money from nowhere) or
    credited usr_s instead (usr_b paid, usr_s got it). Migration 0018's trigger refuses both rows; the checker, the
    next line of defence, said nothing once one was there."""
    buyer, seller, bank = parties
    amount, wallet, owner = (5_000, buyer, "usr_b") if credited == "more" else (100, seller, "usr_s")
    transfer = ledger.transfer(bank, wallet, amount, kind=ledger.TOPUP).id
    db.session.commit()
    _sql(_CARD)
    with trigger_off("topups_credited_by_their_transfer", "topups"):
        _sql(_TOPUP, id="top_1", transfer_id=transfer)
    assert check_invariants() == [f"top-up top_1 of usr_b (100 CNY) was credited by transfer {transfer} with {amount}"
                                  f" CNY to a wallet account of {owner}"]


def test_a_succeeded_withdrawal_whose_hold_posted_only_part_of_it_is_reported(parties):  # noqa: F811
    """The bank was told to pay out 100 (the withdrawal's amount) and did; the ledger took 40 from the wallet (the hold
    posted in part, the rest back in the wallet): 60 paid out of the platform's money. The checker asked only that the
    hold was posted."""
    buyer, _seller, bank = parties
    held = ledger.create_hold(buyer, bank, 100, kind=ledger.WITHDRAWAL).id
    db.session.commit()
    _sql(_CARD)
    _sql(_WITHDRAWAL, id="wdr_1", amount=100, hold_id=held, status="pending")
    ledger.post_hold(held, 40)
    _sql("UPDATE withdrawals SET status = 'succeeded' WHERE id = 'wdr_1'")
    assert check_invariants() == [f"withdrawal wdr_1 of 100 succeeded but its hold {held} posted 40"]


def test_a_succeeded_withdrawal_and_top_up_that_moved_their_amounts_are_clean(parties):  # noqa: F811
    buyer, _seller, bank = parties
    held = ledger.create_hold(buyer, bank, 100, kind=ledger.WITHDRAWAL).id
    credited = ledger.transfer(bank, buyer, 100, kind=ledger.TOPUP).id
    db.session.commit()
    _sql(_CARD)
    _sql(_WITHDRAWAL, id="wdr_1", amount=100, hold_id=held, status="pending")
    _sql(_TOPUP, id="top_1", transfer_id=credited)
    ledger.post_hold(held)
    _sql("UPDATE withdrawals SET status = 'succeeded' WHERE id = 'wdr_1'")
    assert check_invariants() == []
