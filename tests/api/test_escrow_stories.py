"""Escrow trades told as stories over HTTP (DESIGN 6). Each ends with ``flask wallet check`` clean."""

import pytest
from sqlalchemy import select

from core.db import db
from notifications import dispatcher
from notifications.models import Alert
from wallet.trades import sweep

PP = {"payment_password": "135790"}


@pytest.fixture
def people(api):
    buyer = api.verified(real_name="李四", locale="en")
    assert api.money("/api/v1/topups", buyer, amount=50000, bank_card_id=buyer["card_id"]).status_code == 201
    seller = api.verified(real_name="王五", locale="en")
    return buyer, seller


def books_clean(app):
    result = app.test_cli_runner().invoke(args=["wallet", "check"])
    assert result.exit_code == 0, result.output
    assert "ledger clean" in result.output


def events(app, phone):
    with app.app_context():
        dispatcher.expand()  # as a dispatcher does before sending: the changes' events become alerts
        return [a.event for a in db.session.scalars(select(Alert).where(Alert.to_phone == phone).order_by(Alert.id))]


def open_trade(api, buyer, seller, amount=19900, shipping_fee=1000):
    response = api.client.post("/api/v1/trades", headers=buyer["headers"], json={
        "seller_phone": seller["phone"], "title": "A second-hand bicycle", "amount": amount,
        "shipping_fee": shipping_fee})
    assert response.status_code == 201, response.json
    assert response.json["status"] == "WAIT_BUYER_PAY" and response.json["deadlines"]["pay_by"]
    return response.json["id"]


def act(api, who, trade_id, action, key=None, **body):
    path = f"/api/v1/trades/{trade_id}/{action}"
    headers = dict(who["headers"])
    if key is not None:
        headers["Idempotency-Key"] = key
    return api.client.post(path, headers=headers, json=body)


def paid_and_shipped(api, buyer, seller, **trade):
    trade_id = open_trade(api, buyer, seller, **trade)
    assert act(api, buyer, trade_id, "pay", key=f"pay-{trade_id}", **PP).status_code == 200
    shipped = act(api, seller, trade_id, "ship", carrier="SF Express", tracking_number="SF1234567890")
    assert shipped.status_code == 200 and shipped.json["status"] == "WAIT_BUYER_CONFIRM_GOODS"
    return trade_id


def trade(api, who, trade_id):
    return api.client.get(f"/api/v1/trades/{trade_id}", headers=who["headers"]).json


def run_sweeper(app):
    with app.app_context():
        return sweep()


def test_happy_path_buyer_pays_seller_ships_buyer_confirms(api, app, people):
    buyer, seller = people
    trade_id = open_trade(api, buyer, seller)
    paid = act(api, buyer, trade_id, "pay", key="k1", **PP)
    assert paid.json["status"] == "WAIT_SELLER_SEND_GOODS"
    assert (api.balance(buyer), api.balance(seller)) == (50000 - 20900, 0)
    act(api, seller, trade_id, "ship", carrier="SF Express", tracking_number="SF1234567890")
    confirmed = act(api, buyer, trade_id, "confirm", key="k2", **PP)
    assert confirmed.status_code == 200 and confirmed.json["status"] == "TRADE_FINISHED"
    assert (api.balance(buyer), api.balance(seller)) == (29100, 20900)
    assert {"trade_paid_ship_now", "trade_finished"} <= set(events(app, seller["phone"]))
    assert {"balance_payment", "trade_shipped", "trade_finished"} <= set(events(app, buyer["phone"]))
    books_clean(app)


def test_a_merchant_fee_goes_to_the_platform(api, app, people):
    buyer, seller = people
    assert app.test_cli_runner().invoke(args=["users", "set-fee", seller["phone"], "150"]).exit_code == 0
    trade_id = paid_and_shipped(api, buyer, seller, amount=20000, shipping_fee=0)
    act(api, buyer, trade_id, "confirm", key="c", **PP)
    assert api.balance(seller) == 20000 - 300
    assert trade(api, seller, trade_id)["fee_amount"] == 300
    books_clean(app)


def test_either_side_cancels_before_payment(api, app, people):
    buyer, seller = people
    for who in (buyer, seller):
        trade_id = open_trade(api, buyer, seller)
        cancelled = act(api, who, trade_id, "cancel")
        assert cancelled.json["status"] == "TRADE_CLOSED" and cancelled.json["close_reason"] == "cancelled"
    assert api.balance(buyer) == 50000
    books_clean(app)


def test_an_unpaid_trade_closes_after_a_day(api, app, clock, people):
    buyer, seller = people
    trade_id = open_trade(api, buyer, seller)
    clock.advance(hours=23, minutes=59)
    run_sweeper(app)
    api.relogin(buyer)
    assert trade(api, buyer, trade_id)["status"] == "WAIT_BUYER_PAY"
    clock.advance(minutes=1)
    assert run_sweeper(app)["closed_unpaid"] == 1
    closed = trade(api, buyer, trade_id)
    assert (closed["status"], closed["close_reason"]) == ("TRADE_CLOSED", "unpaid")
    assert act(api, buyer, trade_id, "pay", key="late", **PP).json["code"] == "trade_not_payable"
    books_clean(app)


def test_a_shipped_trade_is_reminded_then_confirmed_automatically(api, app, clock, people):
    buyer, seller = people
    trade_id = paid_and_shipped(api, buyer, seller)
    clock.advance(days=7)
    assert run_sweeper(app)["reminded"] == 1
    assert "confirm_deadline_reminder" in events(app, buyer["phone"])
    assert run_sweeper(app)["reminded"] == 0  # once
    clock.advance(days=3)
    assert run_sweeper(app)["auto_confirmed"] == 1
    assert run_sweeper(app) == {"closed_unpaid": 0, "reminded": 0, "auto_confirmed": 0, "refund_deadlines": 0}
    api.relogin(seller)
    assert trade(api, seller, trade_id)["status"] == "TRADE_FINISHED"
    assert api.balance(seller) == 20900
    books_clean(app)


def test_the_buyer_extends_the_confirm_deadline_once(api, app, clock, people):
    buyer, seller = people
    trade_id = paid_and_shipped(api, buyer, seller)
    before = trade(api, buyer, trade_id)["deadlines"]["confirm_by"]
    extended = act(api, buyer, trade_id, "extend")
    assert extended.status_code == 200 and extended.json["extended"]
    assert extended.json["deadlines"]["confirm_by"] > before
    again = act(api, buyer, trade_id, "extend")
    assert (again.status_code, again.json["code"]) == (409, "already_extended")
    clock.advance(days=10)
    run_sweeper(app)
    clock.advance(days=4, hours=23)
    run_sweeper(app)
    api.relogin(buyer)
    assert trade(api, buyer, trade_id)["status"] == "WAIT_BUYER_CONFIRM_GOODS"
    clock.advance(hours=1)
    assert run_sweeper(app)["auto_confirmed"] == 1
    books_clean(app)


def test_refund_before_shipping_agreed_by_the_seller(api, app, people):
    buyer, seller = people
    trade_id = open_trade(api, buyer, seller)
    act(api, buyer, trade_id, "pay", key="p", **PP)
    refund = act(api, buyer, trade_id, "refunds", amount=20900, reason="changed my mind")
    assert refund.status_code == 201 and refund.json["status"] == "WAIT_SELLER_AGREE"
    shipping = act(api, seller, trade_id, "ship", carrier="SF", tracking_number="1")
    assert (shipping.status_code, shipping.json["code"]) == (409, "refund_in_progress")
    agreed = act(api, seller, trade_id, f"refunds/{refund.json['id']}/agree", **PP)
    assert agreed.json["status"] == "REFUND_SUCCESS"
    closed = trade(api, buyer, trade_id)
    assert (closed["status"], closed["refunded_amount"]) == ("TRADE_CLOSED", 20900)
    assert api.balance(buyer) == 50000
    assert {"refund_requested"} <= set(events(app, seller["phone"]))
    assert "refund_completed" in events(app, buyer["phone"])
    books_clean(app)


def test_refund_before_shipping_granted_by_the_sellers_silence(api, app, clock, people):
    buyer, seller = people
    trade_id = open_trade(api, buyer, seller)
    act(api, buyer, trade_id, "pay", key="p", **PP)
    act(api, buyer, trade_id, "refunds", amount=20900, reason="too slow")
    clock.advance(days=2)
    assert run_sweeper(app)["refund_deadlines"] == 1
    api.relogin(buyer)
    assert trade(api, buyer, trade_id)["status"] == "TRADE_CLOSED"
    assert api.balance(buyer) == 50000
    assert "refund_completed" in events(app, buyer["phone"])
    # Found by an audit: the seller, whose silence gave the money back, was not told.
    assert events(app, seller["phone"]).count("refund_paid_on_silence") == 1
    books_clean(app)


def test_refund_with_return_after_shipping(api, app, clock, people):
    buyer, seller = people
    trade_id = paid_and_shipped(api, buyer, seller)
    refund = act(api, buyer, trade_id, "refunds", amount=20900, reason="broken", return_goods=True).json
    assert trade(api, buyer, trade_id)["deadlines"]["paused"] is True
    rid = refund["id"]
    assert act(api, seller, trade_id, f"refunds/{rid}/agree", **PP).json["status"] == "WAIT_BUYER_RETURN_GOODS"
    assert act(api, buyer, trade_id, f"refunds/{rid}/return", carrier="EMS",
               tracking_number="EMS99").json["status"] == "WAIT_SELLER_CONFIRM_GOODS"
    clock.advance(days=20)  # the confirm clock is paused: no auto-confirm meanwhile
    api.relogin(buyer)
    api.relogin(seller)
    run_sweeper(app)  # seller silent on the returned goods for 10 days: counts as received
    after = trade(api, buyer, trade_id)
    assert (after["status"], after["refunded_amount"]) == ("TRADE_CLOSED", 20900)
    assert (api.balance(buyer), api.balance(seller)) == (50000, 0)
    assert events(app, seller["phone"]).count("refund_paid_on_silence") == 1
    books_clean(app)


def test_partial_refund_then_confirm(api, app, people):
    buyer, seller = people
    trade_id = paid_and_shipped(api, buyer, seller)
    refund = act(api, buyer, trade_id, "refunds", amount=5000, reason="scratched").json
    act(api, seller, trade_id, f"refunds/{refund['id']}/agree", **PP)
    assert trade(api, buyer, trade_id)["deadlines"]["paused"] is False
    too_much = act(api, buyer, trade_id, "refunds", amount=15901, reason="more")
    assert (too_much.status_code, too_much.json["code"]) == (422, "refund_exceeds_held")
    act(api, buyer, trade_id, "confirm", key="c", **PP)
    assert (api.balance(buyer), api.balance(seller)) == (29100 + 5000, 15900)
    assert trade(api, seller, trade_id)["released_amount"] == 15900
    books_clean(app)


def test_refused_refund_goes_to_a_dispute_and_staff_split_it(api, app, people):
    buyer, seller = people
    staff = api.register()
    assert app.test_cli_runner().invoke(args=["users", "grant-staff", staff["phone"]]).exit_code == 0
    trade_id = paid_and_shipped(api, buyer, seller)
    refund = act(api, buyer, trade_id, "refunds", amount=20900, reason="not as described").json
    refused = act(api, seller, trade_id, f"refunds/{refund['id']}/refuse", reason="it was as described")
    assert refused.json["status"] == "SELLER_REFUSE_BUYER"
    act(api, buyer, trade_id, "evidence", text="photos of the damage",
        attachments=[{"name": "photo1.jpg", "sha256": "a" * 64}])
    act(api, seller, trade_id, "evidence", text="photo before shipping")
    dispute = act(api, buyer, trade_id, "disputes", reason="seller refuses")
    assert dispute.status_code == 201
    assert act(api, buyer, trade_id, "disputes", reason="again").json["code"] == "no_refused_refund"

    forbidden = api.client.get("/api/v1/admin/disputes", headers=buyer["headers"])
    assert forbidden.status_code == 403
    listed = api.client.get("/api/v1/admin/disputes", headers=staff["headers"]).json["data"]
    assert [d["id"] for d in listed] == [dispute.json["id"]]
    bundle = api.client.get(f"/api/v1/trades/{trade_id}/evidence-bundle", headers=staff["headers"]).json
    assert bundle["intact"] and sum(e["kind"] == "evidence" for e in bundle["timeline"]) == 2

    decided = api.client.post(f"/api/v1/admin/disputes/{dispute.json['id']}/decide", headers=staff["headers"],
                              json={"outcome": "split", "refund_amount": 8000, "reason": "partly damaged"})
    assert decided.status_code == 200 and decided.json["outcome"] == "split"
    assert (api.balance(buyer), api.balance(seller)) == (29100 + 8000, 12900)
    assert trade(api, buyer, trade_id)["status"] == "TRADE_FINISHED"
    for who in (buyer, seller):
        assert "dispute_decided" in events(app, who["phone"]) and "dispute_opened" in events(app, who["phone"])
    again = api.client.post(f"/api/v1/admin/disputes/{dispute.json['id']}/decide", headers=staff["headers"],
                            json={"outcome": "refund", "reason": "changed"})
    assert again.json["code"] == "dispute_decided"
    books_clean(app)


def test_paying_with_a_card_tops_up_only_the_shortfall(api, app, people):
    buyer, seller = people
    trade_id = open_trade(api, buyer, seller, amount=60000, shipping_fee=0)
    short = act(api, buyer, trade_id, "pay", key="nocard", **PP)
    assert short.json["code"] == "insufficient_funds"
    paid = act(api, buyer, trade_id, "pay", key="card", bank_card_id=buyer["card_id"], **PP)
    assert paid.status_code == 200 and paid.json["status"] == "WAIT_SELLER_SEND_GOODS"
    replay = act(api, buyer, trade_id, "pay", key="card", bank_card_id=buyer["card_id"], **PP)
    assert replay.json == paid.json and replay.headers["Idempotent-Replayed"] == "true"
    assert api.balance(buyer) == 0  # 500.00 + a 100.00 top-up, once, all paid into escrow
    topups = api.client.get("/api/v1/wallet/transactions?kind=topup", headers=buyer["headers"]).json["data"]
    assert [t["amount"] for t in topups] == [10000, 50000]
    books_clean(app)


def test_ratings_and_reputation(api, app, clock, people):
    buyer, seller = people
    trade_id = paid_and_shipped(api, buyer, seller)
    early = act(api, buyer, trade_id, "ratings", score=1)
    assert (early.status_code, early.json["code"]) == (409, "rating_closed")
    act(api, buyer, trade_id, "confirm", key="c", **PP)
    assert act(api, buyer, trade_id, "ratings", score=1, comment="great").status_code == 201
    twice = act(api, buyer, trade_id, "ratings", score=-1)
    assert (twice.status_code, twice.json["code"]) == (409, "already_rated")
    assert act(api, seller, trade_id, "ratings", score=0).status_code == 201
    rep = api.client.get(f"/api/v1/users/{seller['user']['id']}/reputation", headers=buyer["headers"]).json
    assert rep["as_seller"] == {"credit_score": 1, "positive_rate": 1.0, "count": 1}
    second = paid_and_shipped(api, buyer, seller, amount=100, shipping_fee=0)
    act(api, buyer, second, "confirm", key="c2", **PP)
    clock.advance(days=15, seconds=1)
    api.relogin(buyer)
    assert act(api, buyer, second, "ratings", score=-1).json["code"] == "rating_closed"
