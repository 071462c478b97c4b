"""A trade takes ``ESCROW_REFUND_REQUESTS_PER_TRADE`` refund requests from its buyer, however they ended (withdrawn,
refused, agreed), before and after shipping together. Found by an audit: before shipping nothing counted them, and each
request and each withdrawal texted the seller, so a buyer with a 1-fen trade could text any verified seller without
end at the platform's cost. The request past the limit is 409 ``refund_limit_reached``: nothing changes, no text.

So that the limit never leaves a buyer's money in escrow with a seller who never ships, before shipping one more
request is taken once the limit is reached, if it asks for everything still held (README, Escrow)."""

from tests.api.escrow_helpers import PP, act, books_clean, escrow_balance, events, open_trade, relogin, run_sweeper
from tests.api.escrow_helpers import trade as trade_answer

LIMIT = 3  # ESCROW_REFUND_REQUESTS_PER_TRADE's default


def _ask_and_withdraw(api, buyer, trade_id, amount, reason):
    asked = act(api, buyer, trade_id, "refunds", amount=amount, reason=reason)
    assert asked.status_code == 201, asked.json
    withdrawn = act(api, buyer, trade_id, f"refunds/{asked.json['id']}/withdraw")
    assert withdrawn.json["status"] == "REFUND_CLOSED", withdrawn.json


def _refused_without_a_trace(api, app, buyer, seller, trade_id, amount):
    """The request is 409 refund_limit_reached, and the trade, its refunds and the seller's texts stay as they were."""
    before, texts = trade_answer(api, buyer, trade_id), events(app, seller["phone"])
    refused = act(api, buyer, trade_id, "refunds", amount=amount, reason="once more")
    assert (refused.status_code, refused.json["code"]) == (409, "refund_limit_reached"), refused.json
    assert "dispute" in refused.json["detail"] and "wait for the seller" in refused.json["detail"]
    assert trade_answer(api, buyer, trade_id) == before
    assert events(app, seller["phone"]) == texts


def test_before_shipping_a_buyer_texts_the_seller_only_as_often_as_the_limit_allows(api, app, people):
    buyer, seller = people
    trade_id = open_trade(api, buyer, seller)
    assert act(api, buyer, trade_id, "pay", key="p", **PP).status_code == 200
    texts = len(events(app, seller["phone"]))  # trade_paid_ship_now
    for n in range(LIMIT):
        _ask_and_withdraw(api, buyer, trade_id, 100, f"ask {n}")
    assert len(events(app, seller["phone"])) == texts + 2 * LIMIT  # refund_requested, refund_withdrawn each
    _refused_without_a_trace(api, app, buyer, seller, trade_id, 100)
    # The last way out of a trade whose seller never ships: one request for everything still held ...
    _ask_and_withdraw(api, buyer, trade_id, 20900, "last")
    assert len(events(app, seller["phone"])) == texts + 2 * (LIMIT + 1)
    # ... taken once: withdrawn, it is not taken again.
    _refused_without_a_trace(api, app, buyer, seller, trade_id, 20900)
    assert escrow_balance(app, trade_id) == 20900
    books_clean(app)


def test_a_1_fen_trade_cannot_flood_the_seller(api, app, people):
    """The audit's case: every request of a 1-fen trade asks for everything held."""
    buyer, seller = people
    trade_id = open_trade(api, buyer, seller, amount=1, shipping_fee=0)
    assert act(api, buyer, trade_id, "pay", key="p", **PP).status_code == 200
    texts = len(events(app, seller["phone"]))
    for n in range(LIMIT + 1):
        _ask_and_withdraw(api, buyer, trade_id, 1, f"ask {n}")
    assert len(events(app, seller["phone"])) == texts + 2 * (LIMIT + 1)
    _refused_without_a_trace(api, app, buyer, seller, trade_id, 1)


def test_after_shipping_requests_made_before_it_count_too(api, app, people):
    buyer, seller = people
    trade_id = open_trade(api, buyer, seller)
    assert act(api, buyer, trade_id, "pay", key="p", **PP).status_code == 200
    _ask_and_withdraw(api, buyer, trade_id, 100, "before shipping")
    shipped = act(api, seller, trade_id, "ship", carrier="SF Express", tracking_number="SF1234567890")
    assert shipped.json["status"] == "WAIT_BUYER_CONFIRM_GOODS"
    texts = len(events(app, seller["phone"]))
    for n in range(LIMIT - 1):
        _ask_and_withdraw(api, buyer, trade_id, 100, f"after shipping {n}")
    assert len(events(app, seller["phone"])) == texts + 2 * (LIMIT - 1)
    # After shipping there is no last request: the buyer confirms, or the deadline does, and the money moves.
    _refused_without_a_trace(api, app, buyer, seller, trade_id, 20900)
    _refused_without_a_trace(api, app, buyer, seller, trade_id, 100)
    assert act(api, buyer, trade_id, "confirm", key="c", **PP).json["status"] == "TRADE_FINISHED"
    books_clean(app)


def test_agreed_and_refused_requests_count_and_a_refused_last_one_goes_to_the_platform(api, app, clock, people):
    """However the requests ended, the limit counts them; the last request for everything, refused by the seller,
    can still be taken to the platform, and its silence past the deadline gives everything back."""
    buyer, seller = people
    trade_id = open_trade(api, buyer, seller)
    assert act(api, buyer, trade_id, "pay", key="p", **PP).status_code == 200
    agreed = act(api, buyer, trade_id, "refunds", amount=100, reason="agreed").json["id"]
    assert act(api, seller, trade_id, f"refunds/{agreed}/agree", **PP).json["status"] == "REFUND_SUCCESS"
    refused = act(api, buyer, trade_id, "refunds", amount=100, reason="refused").json["id"]
    assert act(api, seller, trade_id, f"refunds/{refused}/refuse", reason="no").json["status"] == "SELLER_REFUSE_BUYER"
    assert act(api, buyer, trade_id, f"refunds/{refused}/withdraw").json["status"] == "REFUND_CLOSED"
    _ask_and_withdraw(api, buyer, trade_id, 100, "withdrawn")
    _refused_without_a_trace(api, app, buyer, seller, trade_id, 100)
    last = act(api, buyer, trade_id, "refunds", amount=20800, reason="never shipped").json["id"]
    assert act(api, seller, trade_id, f"refunds/{last}/refuse", reason="no").json["status"] == "SELLER_REFUSE_BUYER"
    assert act(api, buyer, trade_id, "disputes", reason="the seller never ships").status_code == 201
    clock.advance(days=30)
    run_sweeper(app)
    relogin(api, buyer, seller)
    assert trade_answer(api, buyer, trade_id)["status"] == "WAIT_SELLER_SEND_GOODS"  # staff decide it now
    assert escrow_balance(app, trade_id) == 20800
    books_clean(app)
