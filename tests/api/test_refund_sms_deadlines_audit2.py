"""DESIGN 5.3 and 6: the texts of a refund tell the buyer what they must do, and by when, where the buyer's own silence
decides it. A refund the seller agreed to with the goods coming back is closed, unpaid, when the buyer has not sent
them back by its deadline (ESCROW_RETURN_SHIP_DAYS); a refused refund not taken to the platform by its deadline
(ESCROW_ESCALATE_DAYS) closes too. The seller's texts name the seller's deadlines ("Answer by ...", "Confirm you got
them by ..."); the buyer's named neither, so a buyer who took "The seller agreed to refund" at its word lost the
refund without ever being told that the goods had to go back, or when."""

from datetime import datetime

from notifications.templates import format_time
from tests.api.escrow_helpers import PP, act, paid_and_shipped, run_sweeper, trade


def _texts(inbox, phone, event):
    return [m["body"] for m in inbox.messages(to=phone, event=event)]


def _deadline(refund):
    return format_time(datetime.fromisoformat(refund["deadline"].replace("Z", "+00:00")))


def test_an_agreed_refund_with_a_return_tells_the_buyer_to_send_the_goods_back_and_by_when(api, app, people, inbox,
                                                                                        clock):
    buyer, seller = people
    trade_id = paid_and_shipped(api, buyer, seller)
    refund = act(api, buyer, trade_id, "refunds", amount=5000, reason="broken", return_goods=True).json
    agreed = act(api, seller, trade_id, f"refunds/{refund['id']}/agree", **PP)
    assert agreed.status_code == 200 and agreed.json["status"] == "WAIT_BUYER_RETURN_GOODS", agreed.json

    (text,) = _texts(inbox, buyer["phone"], "refund_agreed_return_by")
    assert _deadline(agreed.json) in text, text
    assert "back" in text, text

    # The deadline is real: past it, unreturned, the refund is closed and nothing is paid back.
    clock.advance(days=8)
    run_sweeper(app)
    api.relogin(buyer)
    assert trade(api, buyer, trade_id)["refunds"][0]["status"] == "REFUND_CLOSED"


def test_a_refused_refund_tells_the_buyer_by_when_to_take_it_to_the_platform(api, app, people, inbox, clock):
    buyer, seller = people
    trade_id = paid_and_shipped(api, buyer, seller)
    refund = act(api, buyer, trade_id, "refunds", amount=5000, reason="broken").json
    refused = act(api, seller, trade_id, f"refunds/{refund['id']}/refuse", reason="it was fine")
    assert refused.status_code == 200 and refused.json["status"] == "SELLER_REFUSE_BUYER", refused.json

    (text,) = _texts(inbox, buyer["phone"], "refund_refused_escalate_by")
    assert _deadline(refused.json) in text, text

    clock.advance(days=8)
    run_sweeper(app)
    api.relogin(buyer)
    assert trade(api, buyer, trade_id)["refunds"][0]["status"] == "REFUND_CLOSED"
    assert act(api, buyer, trade_id, "disputes", reason="too late?").status_code == 409
