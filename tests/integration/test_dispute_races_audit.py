"""The end of a trade's life raced with the overlap forced (the pattern of ``test_money_races_audit``): two staff
deciding one dispute, a party rating one trade twice at once, a buyer escalating while the sweeper lapses the
refusal. Each has one winner, the money moves once, and ``flask wallet check`` is clean. PostgreSQL only."""

from __future__ import annotations

import pytest

from tests.api.escrow_helpers import books_clean, escrow_balance, grant_staff, paid_and_shipped, trade
from tests.integration.test_escrow_races import in_app, post
from tests.integration.test_money_races_audit import count, first_pauses_inside
from tests.pg_races import postgres_only  # noqa: F401 - the autouse skip on SQLite
from wallet import timeline, trades
from wallet.escrow_models import Rating
from wallet.models import Transfer

pytestmark = pytest.mark.postgres


def _disputed(app, buyer, seller, trade_id, amount=20900) -> tuple[str, str]:
    status, refund = post(app, buyer, f"/api/v1/trades/{trade_id}/refunds", amount=amount, reason="broken")
    assert status == 201, refund
    assert post(app, seller, f"/api/v1/trades/{trade_id}/refunds/{refund['id']}/refuse", reason="no")[0] == 200
    return refund["id"], refund["deadline"]


def test_two_staff_deciding_one_dispute_move_the_money_once(api, app, monkeypatch, people):
    buyer, seller = people
    first_staff, second_staff = grant_staff(api, app), grant_staff(api, app)
    trade_id = paid_and_shipped(api, buyer, seller)
    _disputed(app, buyer, seller, trade_id)
    status, dispute = post(app, buyer, f"/api/v1/trades/{trade_id}/disputes", reason="please")
    assert status == 201, dispute
    path = f"/api/v1/admin/disputes/{dispute['id']}/decide"
    first, second, waited = first_pauses_inside(
        monkeypatch, trades, "enqueue",
        lambda: post(app, first_staff, path, outcome="split", refund_amount=8000, reason="partly"),
        lambda: post(app, second_staff, path, outcome="refund", reason="all"))
    assert waited  # the second decision queued on the trade the first holds
    assert first[0] == 200, first
    assert (second[0], second[1]["code"]) == (409, "dispute_decided"), second
    body = trade(api, buyer, trade_id)
    assert (body["status"], body["refunded_amount"], body["released_amount"]) == ("TRADE_FINISHED", 8000, 12900)
    assert count(app, Transfer, Transfer.kind == "refund", Transfer.reference == trade_id) == 1
    assert escrow_balance(app, trade_id) == 0
    books_clean(app)


def test_a_buyer_rating_one_trade_twice_at_once_is_counted_once(api, app, monkeypatch, people):
    buyer, seller = people
    trade_id = paid_and_shipped(api, buyer, seller)
    assert api.money(f"/api/v1/trades/{trade_id}/confirm", buyer).status_code == 200
    path = f"/api/v1/trades/{trade_id}/ratings"
    first, second, waited = first_pauses_inside(monkeypatch, timeline, "append",
                                                lambda: post(app, buyer, path, score=1),
                                                lambda: post(app, buyer, path, score=-1))
    assert waited
    assert first[0] == 201, first
    assert (second[0], second[1]["code"]) == (409, "already_rated"), second
    assert count(app, Rating, Rating.trade_id == trade_id) == 1
    with app.app_context():
        assert trades.reputation(seller["user"]["id"], "seller") == trades.Reputation(1, 1.0, 1)
    books_clean(app)


def test_a_buyer_escalating_as_the_refusal_lapses_either_escalates_or_finds_it_lapsed(api, app, clock, monkeypatch,
                                                                                    people):
    buyer, seller = people
    trade_id = paid_and_shipped(api, buyer, seller)
    _disputed(app, buyer, seller, trade_id, amount=5000)
    clock.advance(days=7)
    api.relogin(buyer)
    first, second, waited = first_pauses_inside(
        monkeypatch, trades, "enqueue", in_app(app, trades.sweep),
        lambda: post(app, buyer, f"/api/v1/trades/{trade_id}/disputes", reason="late"))
    assert waited
    assert first["refund_deadlines"] == 1
    assert (second[0], second[1]["code"]) == (409, "no_refused_refund"), second
    body = trade(api, buyer, trade_id)
    assert (body["refunds"][0]["status"], body["deadlines"]["paused"]) == ("REFUND_CLOSED", False)
    assert api.money(f"/api/v1/trades/{trade_id}/confirm", buyer).status_code == 200
    books_clean(app)
