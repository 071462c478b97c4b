"""A buyer may have ``ESCROW_MAX_UNSHIPPED_TRADES_PER_SELLER`` paid trades waiting for one seller to ship. Found by an
audit: every payment into escrow texts the seller (``trade_paid_ship_now``), a trade may be of 1 fen, and the buyer
gets the money back by a refund the seller's silence agrees to; so one buyer could text any verified seller without
end at no cost but the platform's. The payment past the limit is 409 ``unshipped_trade_limit``: no money moves, no
text. Once the seller ships one, or one closes, the buyer may pay the next."""

import pytest

from tests.api.escrow_helpers import PP, act, books_clean, events, open_trade, trade

LIMIT = 10  # the setting's default


@pytest.fixture
def many_paid(api, app, people):
    """``LIMIT`` 1-fen trades the buyer paid, waiting for the seller to ship, and an eleventh opened."""
    buyer, seller = people
    paid = []
    for n in range(LIMIT):
        trade_id = open_trade(api, buyer, seller, amount=1, shipping_fee=0)
        assert act(api, buyer, trade_id, "pay", key=f"p{n}", **PP).status_code == 200
        paid.append(trade_id)
    return buyer, seller, paid, open_trade(api, buyer, seller, amount=1, shipping_fee=0)


def test_a_buyer_cannot_text_a_seller_without_end_by_paying_1_fen_trades(api, app, many_paid):
    buyer, seller, _paid, next_trade = many_paid
    texts, balance = events(app, seller["phone"]), api.balance(buyer)
    assert texts.count("trade_paid_ship_now") == LIMIT
    refused = act(api, buyer, next_trade, "pay", key="p-next", **PP)
    assert (refused.status_code, refused.json["code"]) == (409, "unshipped_trade_limit"), refused.json
    assert "ship" in refused.json["detail"]
    assert trade(api, buyer, next_trade)["status"] == "WAIT_BUYER_PAY"
    assert events(app, seller["phone"]) == texts and api.balance(buyer) == balance
    books_clean(app)


def test_once_the_seller_ships_one_the_buyer_pays_the_next(api, app, many_paid):
    buyer, seller, paid, next_trade = many_paid
    shipped = act(api, seller, paid[0], "ship", carrier="SF Express", tracking_number="SF1234567890")
    assert shipped.json["status"] == "WAIT_BUYER_CONFIRM_GOODS"
    assert act(api, buyer, next_trade, "pay", key="p-next", **PP).json["status"] == "WAIT_SELLER_SEND_GOODS"
    books_clean(app)


def test_another_seller_is_not_counted(api, app, many_paid):
    buyer, _seller, _paid, _next = many_paid
    other = api.verified(real_name="赵六", locale="en")
    trade_id = open_trade(api, buyer, other, amount=1, shipping_fee=0)
    assert act(api, buyer, trade_id, "pay", key="p-other", **PP).json["status"] == "WAIT_SELLER_SEND_GOODS"
