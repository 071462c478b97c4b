"""Audit of dispute decisions (DESIGN 6, 7): a staff decision retried with its Idempotency-Key replays instead of
failing."""

import pytest
from sqlalchemy import func, select

from core.db import db
from tests.api.escrow_helpers import (
    act,
    books_clean,
    events,
    grant_staff,
    paid_and_shipped,
)
from wallet.models import Transfer


@pytest.fixture
def staff(api, app):
    return grant_staff(api, app)


def _disputed(api, buyer, seller, trade_id, amount=20900):
    refund = act(api, buyer, trade_id, "refunds", amount=amount, reason="not as described").json
    refused = act(api, seller, trade_id, f"refunds/{refund['id']}/refuse", reason="it was fine")
    assert refused.status_code == 200, refused.json
    dispute = act(api, buyer, trade_id, "disputes", reason="seller refuses")
    assert dispute.status_code == 201, dispute.json
    return refund, dispute.json


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
    _refund, dispute = _disputed(api, buyer, seller, trade_id)
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
    _refund, dispute = _disputed(api, buyer, seller, trade_id)
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
