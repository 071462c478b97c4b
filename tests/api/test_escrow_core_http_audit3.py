"""The escrow core over HTTP, third audit round: card payments, cancels, exact deadlines, pause arithmetic over
several refunds, fees on what is released, list pages and texts (each passed on the code as audited)."""

from datetime import datetime, timedelta

from tests.api.escrow_helpers import PP, act, books_clean, open_trade, paid_and_shipped, run_sweeper, trade


def _at(moment):
    return datetime.fromisoformat(moment)


def _fee(app, phone, bp):
    assert app.test_cli_runner().invoke(args=["users", "set-fee", phone, str(bp)]).exit_code == 0


def test_two_partial_refunds_then_confirm_release_what_is_held_with_fee_on_it(api, app, clock, people):
    buyer, seller = people
    _fee(app, seller["phone"], 150)
    trade_id = paid_and_shipped(api, buyer, seller, amount=10033, shipping_fee=0)
    shipped = trade(api, buyer, trade_id)
    confirm_by = shipped["deadlines"]["confirm_by"]
    for amount in (1000, 2000):
        clock.advance(days=1)
        api.relogin(buyer), api.relogin(seller)
        refund = act(api, buyer, trade_id, "refunds", amount=amount, reason="scratched", return_goods=False)
        assert refund.status_code == 201, refund.json
        clock.advance(hours=6)
        api.relogin(seller)
        agreed = act(api, seller, trade_id, f"refunds/{refund.json['id']}/agree", **PP)
        assert agreed.status_code == 200 and agreed.json["status"] == "REFUND_SUCCESS", agreed.json
    api.relogin(buyer)
    after = trade(api, buyer, trade_id)
    assert after["refunded_amount"] == 3000
    moved = _at(after["deadlines"]["confirm_by"]) - _at(confirm_by)
    assert moved == timedelta(hours=12)
    api.relogin(buyer)
    done = act(api, buyer, trade_id, "confirm", key="c", **PP)
    assert done.status_code == 200, done.json
    assert done.json["released_amount"] == 7033
    assert done.json["fee_amount"] == 7033 * 150 // 10000
    assert api.balance(seller) == 7033 - 105
    books_clean(app)


def test_reminder_exactly_at_remind_time_and_confirm_exactly_at_confirm_by(api, app, clock, people, inbox):
    buyer, seller = people
    trade_id = paid_and_shipped(api, buyer, seller)
    clock.advance(days=7, seconds=-1)
    assert run_sweeper(app)["reminded"] == 0
    clock.advance(seconds=1)
    assert run_sweeper(app)["reminded"] == 1
    clock.advance(days=3, seconds=-1)
    assert run_sweeper(app)["auto_confirmed"] == 0
    clock.advance(seconds=1)
    assert run_sweeper(app)["auto_confirmed"] == 1
    api.relogin(buyer)
    assert trade(api, buyer, trade_id)["status"] == "TRADE_FINISHED"
    reminder = inbox.messages(to=buyer["phone"], event="confirm_deadline_reminder")
    assert len(reminder) == 1


def test_extension_rules(api, app, clock, people):
    buyer, seller = people
    trade_id = open_trade(api, buyer, seller)
    assert act(api, buyer, trade_id, "extend").json["code"] == "trade_not_extendable"
    assert act(api, buyer, trade_id, "pay", key="p", **PP).status_code == 200
    assert act(api, buyer, trade_id, "extend").json["code"] == "trade_not_extendable"
    act(api, seller, trade_id, "ship", carrier="SF", tracking_number="SF1")
    assert act(api, seller, trade_id, "extend").json["code"] == "buyer_only"
    stranger = api.verified(real_name="赵六")
    assert act(api, stranger, trade_id, "extend").status_code == 404
    first = act(api, buyer, trade_id, "extend")
    assert first.status_code == 200 and first.json["extended"]
    assert act(api, buyer, trade_id, "extend").json["code"] == "already_extended"


def test_cancel_at_each_state(api, app, people):
    buyer, seller = people
    stranger = api.verified(real_name="赵六")
    trade_id = open_trade(api, buyer, seller)
    assert act(api, stranger, trade_id, "cancel").status_code == 404
    act(api, buyer, trade_id, "pay", key="p", **PP)
    for who in (buyer, seller):
        r = act(api, who, trade_id, "cancel")
        assert (r.status_code, r.json["code"]) == (409, "trade_not_cancellable")
    assert act(api, stranger, trade_id, "cancel").status_code == 404


def test_pay_with_another_users_card_and_removed_card(api, app, people):
    buyer, seller = people
    other = api.verified(real_name="赵六")
    trade_id = open_trade(api, buyer, seller, amount=600000, shipping_fee=0)
    r = act(api, buyer, trade_id, "pay", key="x1", bank_card_id=other["card_id"], **PP)
    assert r.status_code == 404, r.json
    assert api.balance(other) == 0
    card = api.client.delete(f"/api/v1/me/bank-cards/{buyer['card_id']}", headers=buyer["headers"])
    assert card.status_code in (200, 204), card.json
    r = act(api, buyer, trade_id, "pay", key="x2", bank_card_id=buyer["card_id"], **PP)
    assert r.status_code == 404, r.json
    assert api.balance(buyer) == 500000
    assert trade(api, buyer, trade_id)["status"] == "WAIT_BUYER_PAY"


def test_pay_with_declining_card(api, app, people):
    _, seller = people
    poor = api.verified(real_name="赵六", card_ending="9999")
    trade_id = open_trade(api, poor, seller)
    r = act(api, poor, trade_id, "pay", key="d", bank_card_id=poor["card_id"], **PP)
    assert r.status_code in (402, 422), r.json
    again = act(api, poor, trade_id, "pay", key="d", bank_card_id=poor["card_id"], **PP)
    assert again.json["code"] == r.json["code"]
    assert trade(api, poor, trade_id)["status"] == "WAIT_BUYER_PAY"
    books_clean(app)


def test_trade_list_filters_and_pages(api, app, people):
    buyer, seller = people
    ids = [open_trade(api, buyer, seller) for _ in range(5)]
    got = []
    after = None
    while True:
        q = "/api/v1/trades?role=buyer&limit=2" + (f"&starting_after={after}" if after else "")
        page = api.client.get(q, headers=buyer["headers"]).json
        got += [t["id"] for t in page["data"]]
        if not page["has_more"]:
            break
        after = page["next_starting_after"]
    assert got == list(reversed(ids))
    assert api.client.get("/api/v1/trades?role=seller", headers=buyer["headers"]).json["data"] == []
    assert len(api.client.get("/api/v1/trades?role=seller", headers=seller["headers"]).json["data"]) == 5
    assert api.client.get("/api/v1/trades?role=staff", headers=buyer["headers"]).status_code == 422


def test_paying_texts_the_seller_to_ship_and_the_buyer_with_the_sellers_masked_number(api, app, inbox, people):
    buyer, _ = people
    zh_seller = api.verified(real_name="钱七", locale="zh")
    trade_id = open_trade(api, buyer, zh_seller)
    assert act(api, buyer, trade_id, "pay", key="p", **PP).status_code == 200
    [ship_now] = inbox.messages(to=zh_seller["phone"], event="trade_paid_ship_now")
    assert "209.00" in ship_now["body"] and "请尽快发货" in ship_now["body"]
    [paid] = inbox.messages(to=buyer["phone"], event="balance_payment")
    assert "CNY 209.00" in paid["body"] and zh_seller["phone"][-4:] in paid["body"]
    assert zh_seller["phone"][2:] not in paid["body"]


def test_silence_then_withdraw_then_extend_arithmetic(api, app, clock, people, inbox):
    buyer, seller = people
    trade_id = paid_and_shipped(api, buyer, seller)
    base = _at(trade(api, buyer, trade_id)["deadlines"]["confirm_by"])
    clock.advance(days=1)
    api.relogin(buyer)
    assert act(api, buyer, trade_id, "refunds", amount=500, reason="dent", return_goods=False).status_code == 201
    paused = trade(api, buyer, trade_id)["deadlines"]
    assert paused["paused"] and _at(paused["confirm_by"]) == base
    clock.advance(days=6)  # seller silent 5 days: agreed at day 6
    run_sweeper(app)
    api.relogin(buyer), api.relogin(seller)
    t = trade(api, buyer, trade_id)
    assert t["refunded_amount"] == 500 and not t["deadlines"]["paused"]
    assert _at(t["deadlines"]["confirm_by"]) == base + timedelta(days=5)
    assert _at(t["deadlines"]["remind_at"]) == base + timedelta(days=2)
    r2 = act(api, buyer, trade_id, "refunds", amount=500, reason="dent", return_goods=True).json
    clock.advance(hours=3)
    api.relogin(buyer)
    w = act(api, buyer, trade_id, f"refunds/{r2['id']}/withdraw")
    assert w.status_code == 200 and w.json["status"] == "REFUND_CLOSED"
    t = trade(api, buyer, trade_id)
    assert _at(t["deadlines"]["confirm_by"]) == base + timedelta(days=5, hours=3)
    e = act(api, buyer, trade_id, "extend")
    assert _at(e.json["deadlines"]["confirm_by"]) == base + timedelta(days=10, hours=3)
    assert _at(e.json["deadlines"]["remind_at"]) == base + timedelta(days=7, hours=3)
    clock.advance(days=30)
    run_sweeper(app)
    api.relogin(buyer)
    t = trade(api, buyer, trade_id)
    assert t["status"] == "TRADE_FINISHED"
    assert _at(t["finished_at"]) == base + timedelta(days=10, hours=3)
    assert t["released_amount"] == 20900 - 500
    msgs = [m["event"] for m in inbox.messages(to=seller["phone"])]
    assert msgs.count("refund_requested") == 2 and "refund_paid_on_silence" in msgs and "refund_withdrawn" in msgs
    books_clean(app)


def test_refund_before_shipping_silence_then_ship(api, app, clock, people, inbox):
    buyer, seller = people
    trade_id = open_trade(api, buyer, seller)
    act(api, buyer, trade_id, "pay", key="p", **PP)
    r = act(api, buyer, trade_id, "refunds", amount=20900, reason="changed mind", return_goods=False)
    assert r.status_code == 201
    clock.advance(days=2)
    api.relogin(seller)
    s = act(api, seller, trade_id, "ship", carrier="SF", tracking_number="SF1")
    assert s.json["code"] == "trade_not_shippable", s.json
    run_sweeper(app)  # the refused step rolled back the deadline it applied; the sweeper applies it for good
    api.relogin(buyer)
    t = trade(api, buyer, trade_id)
    assert (t["status"], t["close_reason"], t["refunded_amount"]) == ("TRADE_CLOSED", "refunded", 20900)
    assert api.balance(buyer) == 500000
    assert "refund_paid_on_silence" in [m["event"] for m in inbox.messages(to=seller["phone"])]
    books_clean(app)


def test_dispute_split_fee_and_sms(api, app, people, staff, inbox):
    from tests.api.escrow_helpers import disputed
    buyer, seller = people
    _fee(app, seller["phone"], 100)
    trade_id = paid_and_shipped(api, buyer, seller, amount=10099, shipping_fee=0)
    _, dispute = disputed(api, buyer, seller, trade_id, amount=5000)
    d = api.client.post(f"/api/v1/admin/disputes/{dispute['id']}/decide", headers=staff["headers"],
                        json={"outcome": "split", "refund_amount": 3000, "reason": "half"})
    assert d.status_code == 200, d.json
    t = trade(api, buyer, trade_id)
    assert t["refunded_amount"] == 3000 and t["released_amount"] == 7099 and t["fee_amount"] == 70
    assert t["refunds"][0]["refunded_amount"] == 3000
    assert api.balance(seller) == 7029
    for who in (buyer, seller):
        [decided] = inbox.messages(to=who["phone"], event="dispute_decided")
        assert "CNY 30.00" in decided["body"]
    books_clean(app)


def test_retry_after_topup_before_payment(api, app, monkeypatch):
    from tests.api.test_card_payment_keys import _open_trade, _pay_with_card, _topups
    from wallet import trades as trades_mod
    buyer, seller = api.verified(), api.verified()
    trade_id = _open_trade(api, buyer, seller, 3000)
    real = trades_mod.pay
    calls = []

    def crash(*a, **k):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("worker died")
        return real(*a, **k)

    monkeypatch.setattr(trades_mod, "pay", crash)
    first = _pay_with_card(api, buyer, trade_id, "k", buyer["card_id"])
    assert first.status_code == 500
    assert api.balance(buyer) == 3000
    again = _pay_with_card(api, buyer, trade_id, "k", buyer["card_id"])
    assert again.status_code == 200, again.json
    assert _topups(app) == [(buyer["user"]["id"], 3000, "succeeded")]
    assert api.balance(buyer) == 0
    books_clean(app)


def test_boundaries_over_http(api, app, clock, people):
    buyer, seller = people
    trade_id = open_trade(api, buyer, seller)
    pay_by = _at(trade(api, buyer, trade_id)["deadlines"]["pay_by"])
    clock.advance(hours=24)
    api.relogin(buyer), api.relogin(seller)
    late = act(api, buyer, trade_id, "pay", key="late", **PP)
    assert late.json["code"] == "trade_not_payable"
    run_sweeper(app)
    t = trade(api, buyer, trade_id)
    assert t["status"] == "TRADE_CLOSED" and _at(t["closed_at"]) == pay_by, t
    cancel = act(api, seller, trade_id, "cancel")
    assert (cancel.status_code, cancel.json["code"]) == (409, "trade_not_cancellable")
    t2 = paid_and_shipped(api, buyer, seller)
    confirm_by = _at(trade(api, buyer, t2)["deadlines"]["confirm_by"])
    clock.advance(days=10)
    api.relogin(buyer), api.relogin(seller)
    ext = act(api, buyer, t2, "extend")
    assert ext.json["code"] == "trade_not_extendable"
    c = act(api, buyer, t2, "confirm", key="c2", **PP)
    assert c.status_code == 200 and _at(c.json["finished_at"]) == confirm_by, c.json
