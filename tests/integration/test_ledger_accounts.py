"""Ledger accounts: one wallet per user and currency, sharded system accounts, per-trade escrow."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from core.db import db
from wallet import ledger
from wallet.errors import LedgerAccountNotFound
from wallet.models import BANK_CLEARING, ESCROW, FEES, SYSTEM, WALLET, LedgerAccount


def accounts() -> list[tuple[str, str, str, int]]:
    rows = db.session.execute(
        select(LedgerAccount.kind, LedgerAccount.owner, LedgerAccount.currency, LedgerAccount.shard)
        .order_by(LedgerAccount.kind, LedgerAccount.owner, LedgerAccount.shard)
    ).all()
    db.session.commit()
    return [tuple(row) for row in rows]


def test_opening_a_wallet_twice_gives_the_same_wallet(app):
    with app.app_context():
        first = ledger.open_wallet("usr_alice")
        assert ledger.open_wallet("usr_alice") == first
        assert ledger.open_wallet("usr_alice", "USD") != first
        assert accounts() == [(WALLET, "usr_alice", "CNY", 0), (WALLET, "usr_alice", "USD", 0)]
        assert ledger.balance(first) == ledger.Balance(first, "CNY", 0, 0, 0, 0)


def test_an_account_that_does_not_exist_has_no_balance(app):
    with app.app_context(), pytest.raises(LedgerAccountNotFound):
        ledger.balance("la_nothing")


def test_system_accounts_are_spread_over_their_shards(app):
    with app.app_context():
        picked = {ledger.system_account(BANK_CLEARING, "ICBC") for _ in range(60)}
        assert 1 < len(picked) <= ledger.SHARDS[BANK_CLEARING]
        shards = [shard for kind, owner, _, shard in accounts() if (kind, owner) == (BANK_CLEARING, "ICBC")]
        assert len(shards) == len(picked)
        assert set(shards) <= set(range(ledger.SHARDS[BANK_CLEARING]))
        assert ledger.system_account(BANK_CLEARING, "ICBC", shard=2) == ledger.system_account(
            BANK_CLEARING, "ICBC", shard=2
        )
        assert ledger.system_account(SYSTEM, "adjustments") == ledger.system_account(SYSTEM, "adjustments")


@pytest.mark.parametrize(
    ("kind", "shard", "message"),
    [(WALLET, None, "not a kind of system account"), (ESCROW, None, "not a kind of system account"),
     (FEES, 8, "shards 0..7"), (BANK_CLEARING, -1, "shards 0..7")],
)
def test_system_accounts_are_only_the_system_kinds_and_shards(app, kind, shard, message):
    with app.app_context(), pytest.raises(ValueError, match=message):
        ledger.system_account(kind, "x", shard=shard)


def test_each_trade_has_its_own_escrow_account(app):
    with app.app_context():
        first, second = ledger.escrow_account("trade_1"), ledger.escrow_account("trade_2")
        assert first != second
        assert ledger.escrow_account("trade_1") == first
        assert accounts() == [(ESCROW, "trade_1", "CNY", 0), (ESCROW, "trade_2", "CNY", 0)]


@pytest.mark.parametrize(("owner", "currency"), [("usr_a", "cny"), ("usr_a", "YUAN"), ("", "CNY"), ("x" * 65, "CNY")])
def test_accounts_need_an_owner_and_an_iso_currency(app, owner, currency):
    with app.app_context(), pytest.raises(ValueError):
        ledger.open_wallet(owner, currency)


def test_a_movement_out_of_an_account_that_does_not_exist_is_refused_by_name(app):
    """Either side missing is ``LedgerAccountNotFound`` (404), the paying side too, for a transfer and a hold."""
    with app.app_context():
        wallet = ledger.open_wallet("usr_alice")
        with pytest.raises(LedgerAccountNotFound):
            ledger.transfer("la_nobody", wallet, 1_00, kind=ledger.PAYMENT)
        with pytest.raises(LedgerAccountNotFound):
            ledger.create_hold("la_nobody", wallet, 1_00, kind=ledger.PAYMENT)
        assert ledger.balance(wallet).available == 0
