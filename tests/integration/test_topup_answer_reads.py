"""A top-up completed by ``wallet.funds.complete_topup`` comes back readable: building the endpoint's answer from it,
or the declined check inside ``complete_topup`` itself, reads no expired row outside any transaction block. Found by
a fault-injection audit: after the top-up's commit the ORM had expired it, and touching it began a transaction of the
session's own outside every block (on SQLite a write lock, ``BEGIN IMMEDIATE``, held until the request ended; on
PostgreSQL a transaction left idle until then). A busy SQLite database turned a credited top-up into a 503."""

from __future__ import annotations

import pytest

from core.db import db, run_in_transaction
from tests.statements import statements_sent
from wallet.funds import BankDeclined, complete_topup, create_topup


def _pending(app, user: dict, amount: int, card_id: str | None = None) -> str:
    with app.app_context():
        return run_in_transaction(lambda: create_topup(user["user"]["id"], card_id or user["card_id"], amount,
                                                       "CNY").id)


def test_a_credited_top_up_is_read_after_its_commit_without_a_transaction(api, app):
    alice = api.verified()
    topup_id = _pending(app, alice, 900)
    with app.app_context():
        topup = complete_topup(topup_id)
        with statements_sent(app) as sent:
            answer = (topup.id, topup.status, topup.amount, topup.currency, topup.card_id, topup.created_at,
                      topup.completed_at, topup.transfer_id)
        assert not db.session().in_transaction()
        assert sent == []
    assert answer[:5] == (topup_id, "succeeded", 900, "CNY", alice["card_id"])
    assert answer[6] is not None and answer[7] is not None
    assert api.balance(alice) == 900


def test_a_declined_top_up_is_refused_without_a_transaction_after_its_commit(api, app):
    alice = api.verified(card_ending="9999")  # the simulated bank: no money on this card
    topup_id = _pending(app, alice, 900)
    with app.app_context():
        with pytest.raises(BankDeclined):
            complete_topup(topup_id)
        assert not db.session().in_transaction()
    assert api.balance(alice) == 0
