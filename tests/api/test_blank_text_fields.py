"""A trade's words must say something: a title, carrier, tracking number or reason of only spaces is refused 422.

A blank title would show up in the other party's SMS and trade list as nothing; a blank tracking number cannot be
followed; a blank reason gives staff nothing to decide on. Each was accepted before (``min_length=1`` counts spaces).
"""

import pytest

from tests.api.escrow_helpers import grant_staff
from tests.api.test_escrow_stories import PP, act, open_trade, paid_and_shipped, trade

BLANKS = [" ", "   ", "\t\n", "\u3000"]  # the last: the ideographic (full-width) space a Chinese keyboard types


@pytest.fixture
def people(api):
    buyer = api.verified(real_name="李四")
    api.money("/api/v1/topups", buyer, amount=50000, bank_card_id=buyer["card_id"])
    return buyer, api.verified(real_name="王五")


def refused(response):
    assert response.status_code == 422, response.json
    assert response.json["code"] == "validation_failed"


@pytest.mark.parametrize("blank", BLANKS)
def test_a_blank_title_is_refused(api, people, blank):
    buyer, seller = people
    refused(api.client.post("/api/v1/trades", headers=buyer["headers"], json={
        "seller_phone": seller["phone"], "title": blank, "amount": 100}))


@pytest.mark.parametrize("field", ["carrier", "tracking_number"])
def test_shipping_with_a_blank_carrier_or_tracking_number_is_refused(api, people, field):
    buyer, seller = people
    trade_id = open_trade(api, buyer, seller)
    assert act(api, buyer, trade_id, "pay", key="p", **PP).status_code == 200
    body = {"carrier": "SF Express", "tracking_number": "SF1234567890", field: "  "}
    refused(act(api, seller, trade_id, "ship", **body))
    assert trade(api, seller, trade_id)["status"] == "WAIT_SELLER_SEND_GOODS"


def test_blank_reasons_are_refused_at_every_step(api, app, people):
    buyer, seller = people
    trade_id = paid_and_shipped(api, buyer, seller)
    refused(act(api, buyer, trade_id, "refunds", amount=100, reason=" "))
    asked = act(api, buyer, trade_id, "refunds", amount=100, reason="Arrived broken", return_goods=True)
    assert asked.status_code == 201, asked.json
    refund_id = asked.json["id"]
    refused(act(api, seller, trade_id, f"refunds/{refund_id}/refuse", reason="\u3000"))
    assert act(api, seller, trade_id, f"refunds/{refund_id}/refuse", reason="It was fine").status_code == 200
    refused(act(api, buyer, trade_id, "disputes", reason="\t"))
    dispute = act(api, buyer, trade_id, "disputes", reason="It was not fine")
    assert dispute.status_code == 201, dispute.json
    staff = grant_staff(api, app)
    refused(api.client.post(f"/api/v1/admin/disputes/{dispute.json['id']}/decide", headers=staff["headers"],
                            json={"outcome": "release", "reason": "  "}))


def test_evidence_attachments_need_a_name(api, people):
    buyer, seller = people
    trade_id = open_trade(api, buyer, seller)
    refused(act(api, buyer, trade_id, "evidence", attachments=[{"name": " ", "sha256": "0" * 64}]))
