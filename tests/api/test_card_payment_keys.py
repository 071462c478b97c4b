"""Paying a trade "with card" tops the shortfall up from the card before paying (``wallet.guarded``'s prepare step).
The top-up belongs to the request: its Idempotency-Key and its fingerprint (``wallet.funds.request_key``). A key
that already has an answer replays it without charging the card, a key first used by another request is refused
before any card is charged, and once a key has expired it names nothing and the card pays for the new request."""

from sqlalchemy import func, select

from core.db import db
from core.idempotency import purge_expired
from tests.factories import PAYMENT_PASSWORD
from wallet.check import check_invariants
from wallet.funds_models import TopUp


def _open_trade(api, buyer, seller, amount):
    response = api.client.post("/api/v1/trades", headers=buyer["headers"],
                               json={"seller_phone": seller["phone"], "title": "lamp", "amount": amount})
    assert response.status_code == 201, response.json
    return response.json["id"]


def _pay_with_card(api, who, trade_id, key, card_id):
    return api.client.post(f"/api/v1/trades/{trade_id}/pay", headers={**who["headers"], "Idempotency-Key": key},
                           json={"payment_password": PAYMENT_PASSWORD, "bank_card_id": card_id})


def _topups(app) -> list[tuple[str, int, str]]:
    with app.app_context():
        return [tuple(row) for row in db.session.execute(select(TopUp.user_id, TopUp.amount, TopUp.status)
                                                          .order_by(TopUp.id))]


def test_a_replay_charges_the_card_once(api, app):
    buyer, seller = api.verified(), api.verified()
    trade_id = _open_trade(api, buyer, seller, 3000)
    first = _pay_with_card(api, buyer, trade_id, "pay-1", buyer["card_id"])
    again = _pay_with_card(api, buyer, trade_id, "pay-1", buyer["card_id"])
    assert first.status_code == again.status_code == 200
    assert again.headers["Idempotent-Replayed"] == "true" and again.json == first.json
    assert _topups(app) == [(buyer["user"]["id"], 3000, "succeeded")]


def test_a_key_first_used_for_another_trade_is_refused_before_the_card_is_charged(api, app):
    buyer, seller = api.verified(), api.verified()
    first, second = _open_trade(api, buyer, seller, 3000), _open_trade(api, buyer, seller, 2000)
    assert _pay_with_card(api, buyer, first, "pay-1", buyer["card_id"]).status_code == 200
    reused = _pay_with_card(api, buyer, second, "pay-1", buyer["card_id"])
    assert (reused.status_code, reused.json["code"]) == (422, "idempotency_key_reused")
    assert _topups(app) == [(buyer["user"]["id"], 3000, "succeeded")]


def test_a_key_reused_after_it_expired_tops_up_the_new_payment(api, app, clock):
    """Found by an audit: the top-up was named after the user and the key alone, a name that outlived the key;
    the second trade found the first one's top-up, charged nothing and failed with insufficient_funds."""
    buyer, seller = api.verified(), api.verified()
    first = _open_trade(api, buyer, seller, 3000)
    assert _pay_with_card(api, buyer, first, "pay-key", buyer["card_id"]).status_code == 200
    assert api.balance(buyer) == 0
    clock.advance(hours=25)
    with app.app_context():
        assert purge_expired() == 1
    api.relogin(buyer)
    api.relogin(seller)
    second = _open_trade(api, buyer, seller, 2000)
    again = _pay_with_card(api, buyer, second, "pay-key", buyer["card_id"])
    assert (again.status_code, again.json["status"]) == (200, "WAIT_SELLER_SEND_GOODS")
    assert _topups(app) == [(buyer["user"]["id"], 3000, "succeeded"), (buyer["user"]["id"], 2000, "succeeded")]
    with app.app_context():
        assert check_invariants() == []


def test_a_seller_paying_their_own_trade_with_a_card_is_refused_and_not_charged(api, app):
    buyer, seller = api.verified(), api.verified()
    trade_id = _open_trade(api, buyer, seller, 3000)
    refused = _pay_with_card(api, seller, trade_id, "pay-1", seller["card_id"])
    assert (refused.status_code, refused.json["code"]) == (409, "buyer_only")
    assert _topups(app) == []
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(TopUp)) == 0


def test_paying_a_trade_that_is_no_longer_payable_charges_no_card(api, app):
    buyer, seller = api.verified(), api.verified()
    trade_id = _open_trade(api, buyer, seller, 3000)
    assert api.client.post(f"/api/v1/trades/{trade_id}/cancel", headers=buyer["headers"], json={}).status_code == 200
    refused = _pay_with_card(api, buyer, trade_id, "pay-1", buyer["card_id"])
    assert (refused.status_code, refused.json["code"]) == (409, "trade_not_payable")
    assert _topups(app) == []


def test_paying_a_trade_over_the_days_limit_charges_no_card(api, app):
    """Found by an audit: the shortfall was taken from the card before the payment met the daily limit, so the card
    was charged 30.00 for a payment refused with limit_exceeded (the money stayed in the wallet, on a card the buyer
    never meant to charge)."""
    app.config["LIMIT_DAILY"] = 5000
    buyer, seller, friend = api.verified(), api.verified(), api.register()
    assert api.money("/api/v1/topups", buyer, amount=4000, bank_card_id=buyer["card_id"]).status_code == 201
    assert api.money("/api/v1/transfers", buyer, amount=4000, to_phone=friend["phone"]).status_code == 201
    trade_id = _open_trade(api, buyer, seller, 3000)  # 40.00 sent today, 30.00 more would pass 50.00
    refused = _pay_with_card(api, buyer, trade_id, "pay-1", buyer["card_id"])
    assert (refused.status_code, refused.json["code"]) == (422, "limit_exceeded")
    assert _topups(app) == [(buyer["user"]["id"], 4000, "succeeded")]
    assert api.balance(buyer) == 0
    with app.app_context():
        assert check_invariants() == []


def test_paying_a_trade_over_a_lowered_per_transaction_limit_charges_no_card(api, app):
    buyer, seller = api.verified(), api.verified()
    trade_id = _open_trade(api, buyer, seller, 3000)
    app.config["LIMIT_PER_TRANSACTION"] = 2999  # lowered after the trade was opened
    refused = _pay_with_card(api, buyer, trade_id, "pay-1", buyer["card_id"])
    assert (refused.status_code, refused.json["code"]) == (422, "limit_exceeded")
    assert _topups(app) == []


def test_paying_a_trade_that_meets_the_days_limit_exactly_tops_up_and_pays(api, app):
    app.config["LIMIT_DAILY"] = 7000
    buyer, seller, friend = api.verified(), api.verified(), api.register()
    assert api.money("/api/v1/topups", buyer, amount=4000, bank_card_id=buyer["card_id"]).status_code == 201
    assert api.money("/api/v1/transfers", buyer, amount=4000, to_phone=friend["phone"]).status_code == 201
    trade_id = _open_trade(api, buyer, seller, 3000)
    paid = _pay_with_card(api, buyer, trade_id, "pay-1", buyer["card_id"])
    assert (paid.status_code, paid.json["status"]) == (200, "WAIT_SELLER_SEND_GOODS")
    assert _topups(app)[-1] == (buyer["user"]["id"], 3000, "succeeded")


def test_paying_a_trade_that_meets_the_per_transaction_limit_exactly_tops_up_and_pays(api, app):
    """A payment of exactly LIMIT_PER_TRANSACTION is allowed, so its shortfall is taken from the card."""
    buyer, seller = api.verified(), api.verified()
    trade_id = _open_trade(api, buyer, seller, 3000)
    app.config["LIMIT_PER_TRANSACTION"] = 3000
    paid = _pay_with_card(api, buyer, trade_id, "pay-1", buyer["card_id"])
    assert (paid.status_code, paid.json["status"]) == (200, "WAIT_SELLER_SEND_GOODS"), paid.json
    assert _topups(app) == [(buyer["user"]["id"], 3000, "succeeded")]
