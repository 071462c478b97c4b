"""Every step of a trade takes an ``Idempotency-Key`` (optional where no money moves, as opening a trade does): a
client whose answer was lost retries with the same key and gets the first answer again, marked
``Idempotent-Replayed``, with the step done once. Without a key a repeat is refused by the trade's new state (409),
as the escrow issue asks (ship twice, rate twice); the key is what lets a mobile client retry safely. The answer is
made in the step's own transaction, keyed or not."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.api.escrow_helpers import PP, act, open_trade, paid_and_shipped


def _timeline(api, who, trade_id) -> list[str]:
    answer = api.client.get(f"/api/v1/trades/{trade_id}/timeline?limit=100", headers=who["headers"])
    assert answer.status_code == 200, answer.json
    return [entry["kind"] for entry in answer.json["data"]]


def _paid(api, buyer, seller) -> str:
    trade_id = open_trade(api, buyer, seller)
    assert act(api, buyer, trade_id, "pay", key=f"pay-{trade_id}", **PP).status_code == 200
    return trade_id


def _refund(api, buyer, trade_id, **extra: Any) -> str:
    answer = act(api, buyer, trade_id, "refunds", amount=5000, reason="scratched", **extra)
    assert answer.status_code == 201, answer.json
    return answer.json["id"]


def _refused(api, buyer, seller, trade_id) -> str:
    refund_id = _refund(api, buyer, trade_id)
    assert act(api, seller, trade_id, f"refunds/{refund_id}/refuse", reason="it was fine").status_code == 200
    return refund_id


def _finished(api, buyer, seller) -> str:
    trade_id = paid_and_shipped(api, buyer, seller)
    assert act(api, buyer, trade_id, "confirm", key=f"confirm-{trade_id}", **PP).status_code == 200
    return trade_id


def _to_ship(api, buyer, seller) -> tuple[str, str]:
    return _paid(api, buyer, seller), "ship"


def _to_extend(api, buyer, seller) -> tuple[str, str]:
    return paid_and_shipped(api, buyer, seller), "extend"


def _to_cancel(api, buyer, seller) -> tuple[str, str]:
    return open_trade(api, buyer, seller), "cancel"


def _to_ask_for_a_refund(api, buyer, seller) -> tuple[str, str]:
    return paid_and_shipped(api, buyer, seller), "refunds"


def _to_refuse(api, buyer, seller) -> tuple[str, str]:
    trade_id = paid_and_shipped(api, buyer, seller)
    return trade_id, f"refunds/{_refund(api, buyer, trade_id)}/refuse"


def _to_withdraw(api, buyer, seller) -> tuple[str, str]:
    trade_id = paid_and_shipped(api, buyer, seller)
    return trade_id, f"refunds/{_refund(api, buyer, trade_id)}/withdraw"


def _to_send_back(api, buyer, seller) -> tuple[str, str]:
    trade_id = paid_and_shipped(api, buyer, seller)
    refund_id = _refund(api, buyer, trade_id, return_goods=True)
    agreed = act(api, seller, trade_id, f"refunds/{refund_id}/agree", **PP)
    assert agreed.status_code == 200, agreed.json
    return trade_id, f"refunds/{refund_id}/return"


def _to_dispute(api, buyer, seller) -> tuple[str, str]:
    trade_id = paid_and_shipped(api, buyer, seller)
    _refused(api, buyer, seller, trade_id)
    return trade_id, "disputes"


def _to_rate(api, buyer, seller) -> tuple[str, str]:
    return _finished(api, buyer, seller), "ratings"


BUYER, SELLER = 0, 1
SHIPMENT = {"carrier": "SF Express", "tracking_number": "SF0987654321"}
# Each step: who takes it, how a trade is brought to it (the trade and the step's path), its body, its answer's status.
STEPS: dict[str, tuple[int, Callable[..., tuple[str, str]], dict[str, Any], int]] = {
    "ship": (SELLER, _to_ship, SHIPMENT, 200),
    "extend": (BUYER, _to_extend, {}, 200),
    "cancel": (BUYER, _to_cancel, {}, 200),
    "ask for a refund": (BUYER, _to_ask_for_a_refund, {"amount": 5000, "reason": "scratched"}, 201),
    "refuse a refund": (SELLER, _to_refuse, {"reason": "it was fine"}, 200),
    "withdraw a refund": (BUYER, _to_withdraw, {}, 200),
    "send the goods back": (BUYER, _to_send_back, SHIPMENT, 200),
    "open a dispute": (BUYER, _to_dispute, {"reason": "seller refuses"}, 201),
    "rate": (BUYER, _to_rate, {"score": 1, "comment": "fine"}, 201),
}


@pytest.fixture
def parties(api):
    buyer = api.verified(locale="en")
    assert api.money("/api/v1/topups", buyer, amount=50000, bank_card_id=buyer["card_id"]).status_code == 201
    return buyer, api.verified(locale="en")


@pytest.mark.parametrize("step", list(STEPS))
def test_a_step_retried_with_its_key_is_done_once_and_answered_the_same(api, parties, step):
    actor, setup, body, status = STEPS[step]
    who = parties[actor]
    trade_id, path = setup(api, *parties)
    before = _timeline(api, parties[BUYER], trade_id)
    first = act(api, who, trade_id, path, key="step-1", **body)
    assert first.status_code == status, first.json
    done = _timeline(api, parties[BUYER], trade_id)
    assert len(done) > len(before)
    again = act(api, who, trade_id, path, key="step-1", **body)
    assert (again.status_code, again.json) == (status, first.json)
    assert again.headers["Idempotent-Replayed"] == "true" and "Idempotent-Replayed" not in first.headers
    assert _timeline(api, parties[BUYER], trade_id) == done  # nothing done twice
    text = next((name for name, value in body.items() if isinstance(value, str)), None)
    if text is not None:  # the same key with another body
        other = act(api, who, trade_id, path, key="step-1", **{**body, text: body[text] + " (edited)"})
        assert (other.status_code, other.json["code"]) == (422, "idempotency_key_reused")
    repeat = act(api, who, trade_id, path, **body)  # no key: a second request, refused by the trade's state
    assert repeat.status_code == 409, repeat.json
    assert _timeline(api, parties[BUYER], trade_id) == done


def test_evidence_with_a_key_is_added_once_and_without_one_each_time(api, parties):
    buyer, seller = parties
    trade_id = _paid(api, buyer, seller)
    body = {"text": "photo of the box", "attachments": []}
    first = act(api, buyer, trade_id, "evidence", key="evidence-1", **body)
    again = act(api, buyer, trade_id, "evidence", key="evidence-1", **body)
    assert first.status_code == again.status_code == 201
    assert again.json == first.json and again.headers["Idempotent-Replayed"] == "true"
    assert _timeline(api, buyer, trade_id).count("evidence") == 1
    assert act(api, buyer, trade_id, "evidence", **body).status_code == 201  # no key: another item, as asked
    assert _timeline(api, buyer, trade_id).count("evidence") == 2


def test_a_step_answers_the_trade_as_it_committed(api, parties):
    """Shipping answers the trade it shipped, with its deadlines and the refund withdrawn before shipping, from the
    step's own transaction (before, a second read after the commit made the answer)."""
    buyer, seller = parties
    trade_id = _paid(api, buyer, seller)
    refund_id = _refund(api, buyer, trade_id)
    assert act(api, buyer, trade_id, f"refunds/{refund_id}/withdraw").status_code == 200
    shipped = act(api, seller, trade_id, "ship", carrier="SF Express", tracking_number="SF1234567890")
    assert shipped.status_code == 200, shipped.json
    assert [r["id"] for r in shipped.json["refunds"]] == [refund_id]
    assert shipped.json["deadlines"]["confirm_by"] is not None
    assert shipped.json == api.client.get(f"/api/v1/trades/{trade_id}", headers=seller["headers"]).json
