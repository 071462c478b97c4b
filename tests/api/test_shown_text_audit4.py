"""A trade's words are shown to the other party and to staff as written: a title, reason, evidence text, attachment
name or rating comment holding a Unicode bidirectional control (U+202E makes what follows read right to left, so
"refund 9.00" can display as a different figure) or another control character is refused 422, as a payment's note
is; a one-line field (title, carrier, tracking number, attachment name) takes no tab or line break either.

Each was accepted before and stored as typed (found after the payment note got the same rule)."""

import pytest

from tests.api.escrow_helpers import PP, act, paid_and_shipped
from tests.api.test_blank_text_fields import people  # noqa: F401 - the fixture
from tests.api.test_escrow_stories import open_trade, trade

RLO = "\u202e"


def refused(response, field):
    assert response.status_code == 422, response.json
    assert response.json["code"] == "validation_failed"
    assert [error["field"] for error in response.json["errors"]] == [field]


@pytest.mark.parametrize("title", [f"iPhone {RLO}00.001", "tab\there", "two\nlines", "bell\x07", "nel\x85"])
def test_a_title_that_would_not_show_as_written_is_refused(api, people, title):  # noqa: F811
    buyer, seller = people
    refused(api.client.post("/api/v1/trades", headers=buyer["headers"], json={
        "seller_phone": seller["phone"], "title": title, "amount": 100}), "title")
    assert api.client.get("/api/v1/trades", headers=buyer["headers"]).json["data"] == []


def test_a_title_in_any_script_is_taken(api, people):  # noqa: F811
    buyer, seller = people
    for title in ("二手 iPhone 13（九成新）", "كتاب مستعمل", "Ноутбук б/у"):
        opened = api.client.post("/api/v1/trades", headers=buyer["headers"], json={
            "seller_phone": seller["phone"], "title": title, "amount": 100})
        assert opened.status_code == 201, opened.json
        assert trade(api, seller, opened.json["id"])["title"] == title


def test_a_reason_may_have_lines_but_no_bidirectional_control(api, people):  # noqa: F811
    buyer, seller = people
    trade_id = paid_and_shipped(api, buyer, seller)
    refused(act(api, buyer, trade_id, "refunds", amount=100, reason=f"broken {RLO}"), "reason")
    assert trade(api, buyer, trade_id)["status"] == "WAIT_BUYER_CONFIRM_GOODS"
    asked = act(api, buyer, trade_id, "refunds", amount=100, reason="Arrived broken.\nThe screen is cracked.")
    assert asked.status_code == 201, asked.json


def test_shipping_details_are_one_line_of_visible_text(api, people):  # noqa: F811
    buyer, seller = people
    trade_id = open_trade(api, buyer, seller)
    assert act(api, buyer, trade_id, "pay", key="p", **PP).status_code == 200
    refused(act(api, seller, trade_id, "ship", carrier="SF Express", tracking_number=f"SF{RLO}0987654321"),
            "tracking_number")
    refused(act(api, seller, trade_id, "ship", carrier="SF\nExpress", tracking_number="SF1234567890"), "carrier")
    assert trade(api, seller, trade_id)["status"] == "WAIT_SELLER_SEND_GOODS"


def test_evidence_text_and_attachment_names_are_shown_as_written(api, people):  # noqa: F811
    buyer, seller = people
    trade_id = paid_and_shipped(api, buyer, seller)
    refused(act(api, buyer, trade_id, "evidence", text=f"photo of the box {RLO}"), "text")
    refused(act(api, buyer, trade_id, "evidence", attachments=[{"name": f"box{RLO}gpj.exe", "sha256": "a" * 64}]),
            "attachments.0.name")
    bundle = api.client.get(f"/api/v1/trades/{trade_id}/evidence-bundle", headers=buyer["headers"]).json
    assert [entry for entry in bundle["timeline"] if entry["kind"] == "evidence"] == []
    assert act(api, buyer, trade_id, "evidence", text="Photo of the box.\nTaken on arrival.").status_code == 201


def test_a_rating_comment_with_a_bidirectional_control_is_refused(api, people):  # noqa: F811
    buyer, seller = people
    trade_id = paid_and_shipped(api, buyer, seller)
    assert act(api, buyer, trade_id, "confirm", key="c", **PP).status_code == 200
    refused(act(api, buyer, trade_id, "ratings", score=1, comment=f"great {RLO}reyub"), "comment")
    assert act(api, buyer, trade_id, "ratings", score=1, comment="Great seller.\nFast shipping.").status_code == 201
