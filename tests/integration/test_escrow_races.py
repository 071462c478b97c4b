"""Races on one trade have exactly one winner and never create or lose money. Real threads against the real
database (PostgreSQL in CI's second run; SQLite serialises them, which must also hold)."""

import threading

import pytest
from sqlalchemy import func, select

from core.db import db
from tests.api.test_escrow_stories import PP, open_trade, paid_and_shipped, trade
from wallet.check import check_invariants
from wallet.models import Transfer
from wallet.trades import sweep


@pytest.fixture
def people(api):
    buyer = api.verified(real_name="李四")
    api.money("/api/v1/topups", buyer, amount=500000, bank_card_id=buyer["card_id"])
    return buyer, api.verified(real_name="王五")


def together(*calls):
    """Run the calls in threads released at the same moment; return their results in order."""
    barrier, results = threading.Barrier(len(calls)), [None] * len(calls)

    def run(i, call):
        barrier.wait()
        results[i] = call()

    threads = [threading.Thread(target=run, args=(i, call)) for i, call in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def count_transfers(app, kind):
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(Transfer).where(Transfer.kind == kind))


def clean(app):
    with app.app_context():
        assert check_invariants() == []


def post(app, who, path, key=None, **body):
    headers = dict(who["headers"])
    if key:
        headers["Idempotency-Key"] = key
    response = app.test_client().post(path, headers=headers, json=body)
    return response.status_code, response.get_json()


def in_app(app, fn):
    def call():
        with app.app_context():
            return fn()
    return call


def test_buyer_confirms_while_the_sweeper_auto_confirms(api, app, clock, people):
    buyer, seller = people
    trade_ids = [paid_and_shipped(api, buyer, seller) for _ in range(5)]
    clock.advance(days=10)
    api.relogin(buyer)
    *confirms, swept = together(
        *[(lambda t=trade_id: post(app, buyer, f"/api/v1/trades/{t}/confirm", key=f"c-{t}", **PP))
          for trade_id in trade_ids],
        in_app(app, sweep),
    )
    assert {status for status, _ in confirms} <= {200, 409}, confirms
    for status, body in confirms:
        assert status == 200 or body["code"] == "trade_not_confirmable"
    # every trade has exactly one winner: the buyer's confirmation or the sweeper
    assert sum(status == 200 for status, _ in confirms) + swept["auto_confirmed"] == len(trade_ids)
    for trade_id in trade_ids:
        assert trade(api, buyer, trade_id)["status"] == "TRADE_FINISHED"
    assert count_transfers(app, "escrow_release") == 5
    api.relogin(seller)
    assert api.balance(seller) == 5 * 20900
    clean(app)


def test_buyer_asks_for_a_refund_while_confirming(api, app, people):
    buyer, seller = people
    for i in range(5):
        trade_id = paid_and_shipped(api, buyer, seller)
        refund, confirm = together(
            lambda t=trade_id: post(app, buyer, f"/api/v1/trades/{t}/refunds", amount=20900, reason="race"),
            lambda t=trade_id, i=i: post(app, buyer, f"/api/v1/trades/{t}/confirm", key=f"c{i}", **PP),
        )
        assert sorted([refund[0] < 300, confirm[0] < 300]) == [False, True], (refund, confirm)
        state = trade(api, buyer, trade_id)
        if confirm[0] == 200:
            assert state["status"] == "TRADE_FINISHED" and refund[1]["code"] == "trade_not_refundable"
        else:
            assert state["status"] == "WAIT_BUYER_CONFIRM_GOODS" and confirm[1]["code"] == "refund_in_progress"
    clean(app)


def test_two_sweepers_at_once(api, app, clock, people):
    buyer, seller = people
    trade_ids = [paid_and_shipped(api, buyer, seller, amount=1000, shipping_fee=0) for _ in range(12)]
    unpaid = [open_trade(api, buyer, seller, amount=500, shipping_fee=0) for _ in range(6)]
    clock.advance(days=10)
    first, second = together(in_app(app, sweep), in_app(app, sweep))
    assert first["auto_confirmed"] + second["auto_confirmed"] == len(trade_ids)
    assert first["closed_unpaid"] + second["closed_unpaid"] == len(unpaid)
    assert count_transfers(app, "escrow_release") == len(trade_ids)
    api.relogin(seller)
    assert api.balance(seller) == 12 * 1000
    clean(app)


def test_twenty_concurrent_pays_with_one_key(api, app, people):
    buyer, seller = people
    trade_id = open_trade(api, buyer, seller)
    answers = together(*[
        (lambda: post(app, buyer, f"/api/v1/trades/{trade_id}/pay", key="one-key", **PP)) for _ in range(20)
    ])
    assert len({repr(a) for a in answers}) == 1 and answers[0][0] == 200
    assert count_transfers(app, "escrow_pay") == 1
    assert api.balance(buyer) == 500000 - 20900
    clean(app)
