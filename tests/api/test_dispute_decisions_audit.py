"""Audit of dispute decisions and what the API says of refunds afterwards (DESIGN 6, 7): a staff decision retried
with its Idempotency-Key replays instead of failing, every refund says how much it gave back whatever ended it, and
only the buyer whose refund was refused may take it to the platform."""

import pytest
from sqlalchemy import func, select

from core.db import db
from tests.api.escrow_helpers import (
    PP,
    act,
    books_clean,
    disputed,
    escrow_balance,
    events,
    open_trade,
    paid_and_shipped,
    run_sweeper,
    trade,
)
from wallet.models import Transfer


def _decide(api, who, dispute_id, key=None, **body):
    headers = dict(who["headers"])
    if key is not None:
        headers["Idempotency-Key"] = key
    return api.client.post(f"/api/v1/admin/disputes/{dispute_id}/decide", headers=headers,
                           json={"reason": "decided", **body})


def _refund_transfers(app, trade_id):
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(Transfer).where(
            Transfer.kind == "refund", Transfer.reference == trade_id))


# --- a decision retried ---------------------------------------------------------------------------------------------


def test_a_decision_retried_with_its_key_replays_it_and_moves_the_money_once(api, app, people, staff):
    buyer, seller = people
    trade_id = paid_and_shipped(api, buyer, seller)
    _refund, dispute = disputed(api, buyer, seller, trade_id)
    first = _decide(api, staff, dispute["id"], key="decide-1", outcome="split", refund_amount=8000)
    assert first.status_code == 200, first.json
    assert first.headers.get("Idempotent-Replayed") is None
    retried = _decide(api, staff, dispute["id"], key="decide-1", outcome="split", refund_amount=8000)
    assert (retried.status_code, retried.json) == (200, first.json), retried.json  # the answer the client lost
    assert retried.headers.get("Idempotent-Replayed") == "true"
    other = _decide(api, staff, dispute["id"], key="decide-1", outcome="refund")
    assert (other.status_code, other.json["code"]) == (422, "idempotency_key_reused")
    fresh = _decide(api, staff, dispute["id"], key="decide-2", outcome="refund")
    assert (fresh.status_code, fresh.json["code"]) == (409, "dispute_decided")
    assert _refund_transfers(app, trade_id) == 1
    assert (api.balance(buyer), api.balance(seller)) == (500000 - 20900 + 8000, 12900)
    for who in (buyer, seller):
        assert events(app, who["phone"]).count("dispute_decided") == 1
    books_clean(app)


def test_a_decision_without_a_key_still_works_and_its_repeat_is_refused_by_the_disputes_state(api, app, people,
                                                                                             staff):
    buyer, seller = people
    trade_id = paid_and_shipped(api, buyer, seller)
    _refund, dispute = disputed(api, buyer, seller, trade_id)
    assert _decide(api, staff, dispute["id"], outcome="refund").status_code == 200
    again = _decide(api, staff, dispute["id"], outcome="refund")
    assert (again.status_code, again.json["code"]) == (409, "dispute_decided")
    bad_key = _decide(api, staff, dispute["id"], key="not a key", outcome="refund")
    assert (bad_key.status_code, bad_key.json["code"]) == (422, "validation_failed")
    assert _refund_transfers(app, trade_id) == 1
    books_clean(app)


def test_the_document_offers_the_decision_an_optional_idempotency_key(api):
    operation = api.client.get("/api/v1/openapi.json").json["paths"]["/api/v1/admin/disputes/{dispute_id}/decide"]
    [header] = [p for p in operation["post"]["parameters"] if p["name"] == "Idempotency-Key"]
    assert header["in"] == "header" and header["required"] is False
    assert "Idempotent-Replayed" in operation["post"]["responses"]["200"]["headers"]


# --- what a refund says it gave back --------------------------------------------------------------------------------


def _ended(api, app, clock, buyer, seller, staff, how):
    """A trade whose (last) refund ended ``how``; returns its id."""
    if how == "agreed-before-shipping":
        trade_id = open_trade(api, buyer, seller)
        assert act(api, buyer, trade_id, "pay", key=f"pay-{trade_id}", **PP).status_code == 200
        refund = act(api, buyer, trade_id, "refunds", amount=20900, reason="changed my mind").json
        assert act(api, seller, trade_id, f"refunds/{refund['id']}/agree", **PP).status_code == 200
        return trade_id
    trade_id = paid_and_shipped(api, buyer, seller)
    if how == "agreed-in-part":
        refund = act(api, buyer, trade_id, "refunds", amount=5000, reason="scratched").json
        assert act(api, seller, trade_id, f"refunds/{refund['id']}/agree", **PP).status_code == 200
    elif how == "withdrawn":
        refund = act(api, buyer, trade_id, "refunds", amount=5000, reason="scratched").json
        assert act(api, buyer, trade_id, f"refunds/{refund['id']}/withdraw").status_code == 200
    elif how == "returned":
        refund = act(api, buyer, trade_id, "refunds", amount=20900, reason="broken", return_goods=True).json
        act(api, seller, trade_id, f"refunds/{refund['id']}/agree", **PP)
        act(api, buyer, trade_id, f"refunds/{refund['id']}/return", carrier="EMS", tracking_number="EMS99")
        assert act(api, seller, trade_id, f"refunds/{refund['id']}/receive-return", **PP).status_code == 200
    elif how == "lapsed":
        refund = act(api, buyer, trade_id, "refunds", amount=5000, reason="scratched").json
        act(api, seller, trade_id, f"refunds/{refund['id']}/refuse", reason="no")
        clock.advance(days=7)
        run_sweeper(app)
        for who in (buyer, seller, staff):
            api.relogin(who)
    else:  # a dispute decided by staff: release, refund, split (after a partial refund agreed first)
        first = act(api, buyer, trade_id, "refunds", amount=2000, reason="scratched").json
        assert act(api, seller, trade_id, f"refunds/{first['id']}/agree", **PP).status_code == 200
        _refund, dispute = disputed(api, buyer, seller, trade_id, amount=10000)
        extra = {"refund_amount": 6000} if how == "split" else {}
        assert _decide(api, staff, dispute["id"], outcome=how, **extra).status_code == 200
    return trade_id


# how the last refund ended: (its status, what it gave back)
ENDINGS = {
    "agreed-before-shipping": ("REFUND_SUCCESS", 20900),
    "agreed-in-part": ("REFUND_SUCCESS", 5000),
    "withdrawn": ("REFUND_CLOSED", 0),
    "returned": ("REFUND_SUCCESS", 20900),
    "lapsed": ("REFUND_CLOSED", 0),
    "release": ("REFUND_CLOSED", 0),
    "refund": ("REFUND_SUCCESS", 18900),  # all that was still held, more than the 10000 asked for
    "split": ("REFUND_SUCCESS", 6000),  # less than the 10000 asked for
}


@pytest.mark.parametrize("how", ENDINGS)
def test_every_refund_says_what_it_gave_back_and_they_add_up_to_the_trades_refunds(api, app, clock, people, staff,
                                                                                  how):
    buyer, seller = people
    trade_id = _ended(api, app, clock, buyer, seller, staff, how)
    status, given_back = ENDINGS[how]
    seen = {
        "trade": trade(api, buyer, trade_id),
        "list": next(t for t in api.client.get("/api/v1/trades", headers=seller["headers"]).json["data"]
                     if t["id"] == trade_id),
        "bundle": api.client.get(f"/api/v1/trades/{trade_id}/evidence-bundle", headers=staff["headers"]).json["trade"],
    }
    for where, body in seen.items():
        last = body["refunds"][-1]
        assert (last["status"], last["refunded_amount"]) == (status, given_back), (where, last)
        assert sum(r["refunded_amount"] for r in body["refunds"]) == body["refunded_amount"], (where, body)
    if how in ("release", "refund", "split"):
        [dispute] = api.client.get("/api/v1/admin/disputes?status=decided", headers=staff["headers"]).json["data"]
        assert (dispute["outcome"], dispute["refund_amount"]) == (how, given_back)
    books_clean(app)


def test_a_refund_step_answers_what_it_gave_back(api, app, people):
    buyer, seller = people
    trade_id = paid_and_shipped(api, buyer, seller)
    asked = act(api, buyer, trade_id, "refunds", amount=5000, reason="scratched")
    assert (asked.status_code, asked.json["refunded_amount"]) == (201, 0)
    agreed = act(api, seller, trade_id, f"refunds/{asked.json['id']}/agree", **PP)
    assert (agreed.json["status"], agreed.json["refunded_amount"]) == ("REFUND_SUCCESS", 5000)
    books_clean(app)


# --- who may take a refused refund to the platform ------------------------------------------------------------------


def test_only_the_buyer_takes_a_refused_refund_to_the_platform(api, app, people, staff):
    buyer, seller = people
    trade_id = paid_and_shipped(api, buyer, seller)
    refund = act(api, buyer, trade_id, "refunds", amount=5000, reason="scratched").json
    act(api, seller, trade_id, f"refunds/{refund['id']}/refuse", reason="it was fine")
    before = trade(api, buyer, trade_id)
    by_seller = act(api, seller, trade_id, "disputes", reason="let the platform say I am right")
    assert (by_seller.status_code, by_seller.json["code"]) == (409, "buyer_only"), by_seller.json
    assert trade(api, buyer, trade_id) == before  # still refused, its escalation deadline still running
    assert before["refunds"][0]["deadline"] is not None and before["refunds"][0]["disputed"] is False
    assert api.client.get("/api/v1/admin/disputes", headers=staff["headers"]).json["data"] == []
    assert "dispute_opened" not in events(app, buyer["phone"])
    withdrawn = act(api, buyer, trade_id, f"refunds/{refund['id']}/withdraw")  # the buyer's choice stays open
    assert withdrawn.json["status"] == "REFUND_CLOSED"
    assert escrow_balance(app, trade_id) == 20900
    books_clean(app)


def test_the_buyer_still_escalates_after_the_seller_was_refused(api, app, people):
    buyer, seller = people
    trade_id = paid_and_shipped(api, buyer, seller)
    refund = act(api, buyer, trade_id, "refunds", amount=5000, reason="scratched").json
    act(api, seller, trade_id, f"refunds/{refund['id']}/refuse", reason="it was fine")
    assert act(api, seller, trade_id, "disputes", reason="mine").status_code == 409
    opened = act(api, buyer, trade_id, "disputes", reason="seller refuses")
    assert opened.status_code == 201, opened.json
    assert trade(api, seller, trade_id)["refunds"][0]["disputed"] is True
