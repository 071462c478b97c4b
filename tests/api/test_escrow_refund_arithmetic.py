"""The confirm clock across several refunds, extension after refunds, reminders after resume,
partial refunds then a dispute (amounts, fee), ratings after a decision or an auto-confirm."""

from datetime import datetime, timedelta

from tests.api.escrow_helpers import (
    PP,
    act,
    books_clean,
    escrow_balance,
    events,
    grant_staff,
    paid_and_shipped,
    relogin,
    run_sweeper,
    trade,
    verify_cli,
)


def _at(value):
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_the_clock_across_three_refunds_then_an_extension(api, app, clock, people):
    buyer, seller = people
    trade_id = paid_and_shipped(api, buyer, seller)
    d0 = _at(trade(api, buyer, trade_id)["shipped_at"])
    assert _at(trade(api, buyer, trade_id)["deadlines"]["confirm_by"]) == d0 + timedelta(days=10)
    clock.advance(days=2)
    relogin(api, buyer, seller)
    r1 = act(api, buyer, trade_id, "refunds", amount=1000, reason="one").json["id"]
    clock.advance(days=1)  # d3
    relogin(api, buyer, seller)
    assert act(api, seller, trade_id, f"refunds/{r1}/agree", **PP).json["status"] == "REFUND_SUCCESS"
    assert _at(trade(api, buyer, trade_id)["deadlines"]["confirm_by"]) == d0 + timedelta(days=11)
    clock.advance(days=1)  # d4
    relogin(api, buyer, seller)
    r2 = act(api, buyer, trade_id, "refunds", amount=2000, reason="two").json["id"]
    clock.advance(days=2)  # d6
    relogin(api, buyer, seller)
    assert act(api, buyer, trade_id, f"refunds/{r2}/withdraw").json["status"] == "REFUND_CLOSED"
    assert _at(trade(api, buyer, trade_id)["deadlines"]["confirm_by"]) == d0 + timedelta(days=13)
    clock.advance(days=1)  # d7
    relogin(api, buyer, seller)
    r3 = act(api, buyer, trade_id, "refunds", amount=3000, reason="three").json["id"]
    assert act(api, seller, trade_id, f"refunds/{r3}/refuse", reason="no").status_code == 200
    clock.advance(days=7)  # d14: the refusal lapses now, the sweeper is on time
    assert run_sweeper(app)["refund_deadlines"] == 1
    relogin(api, buyer, seller)
    body = trade(api, buyer, trade_id)
    assert _at(body["deadlines"]["confirm_by"]) == d0 + timedelta(days=20)
    assert _at(body["deadlines"]["remind_at"]) == d0 + timedelta(days=17)
    extended = act(api, buyer, trade_id, "extend").json
    assert _at(extended["deadlines"]["confirm_by"]) == d0 + timedelta(days=25)
    clock.advance(days=10)  # d24: the reminder of the extended deadline (due d22) goes out, before it
    assert run_sweeper(app)["reminded"] == 1
    clock.advance(days=1)  # d25
    relogin(api, buyer, seller)
    swept = run_sweeper(app)
    assert swept["auto_confirmed"] == 1, swept
    assert events(app, buyer["phone"]).count("confirm_deadline_reminder") == 1
    assert api.balance(seller) == 20900 - 1000
    assert escrow_balance(app, trade_id) == 0
    assert verify_cli(app, trade_id)[0] == 0
    books_clean(app)


def test_partial_refund_then_dispute_split_with_a_merchant_fee(api, app, people):
    buyer, seller = people
    staff = grant_staff(api, app)
    assert app.test_cli_runner().invoke(args=["users", "set-fee", seller["phone"], "150"]).exit_code == 0
    trade_id = paid_and_shipped(api, buyer, seller)  # 20900 held
    r1 = act(api, buyer, trade_id, "refunds", amount=5000, reason="scratched").json["id"]
    assert act(api, seller, trade_id, f"refunds/{r1}/agree", **PP).json["status"] == "REFUND_SUCCESS"
    r2 = act(api, buyer, trade_id, "refunds", amount=10000, reason="and broken").json["id"]
    assert act(api, seller, trade_id, f"refunds/{r2}/refuse", reason="no").status_code == 200
    dispute = act(api, buyer, trade_id, "disputes", reason="please").json
    too_much = api.client.post(f"/api/v1/admin/disputes/{dispute['id']}/decide", headers=staff["headers"],
                               json={"outcome": "split", "refund_amount": 15900, "reason": "x"})
    assert (too_much.status_code, too_much.json["code"]) == (422, "invalid_split")
    decided = api.client.post(f"/api/v1/admin/disputes/{dispute['id']}/decide", headers=staff["headers"],
                              json={"outcome": "split", "refund_amount": 8001, "reason": "x"})
    assert decided.status_code == 200, decided.json
    body = trade(api, buyer, trade_id)
    to_seller = 15900 - 8001
    fee = to_seller * 150 // 10000
    assert (body["status"], body["refunded_amount"], body["released_amount"], body["fee_amount"]) == (
        "TRADE_FINISHED", 13001, to_seller, fee)
    assert api.balance(seller) == to_seller - fee
    assert api.balance(buyer) == 500000 - 20900 + 13001
    assert escrow_balance(app, trade_id) == 0
    assert verify_cli(app, trade_id)[0] == 0
    assert act(api, buyer, trade_id, "ratings", score=-1).status_code == 201
    assert act(api, seller, trade_id, "ratings", score=-1).status_code == 201
    books_clean(app)


def test_partial_refund_then_dispute_refunded_in_full_closes_at_zero(api, app, people):
    buyer, seller = people
    staff = grant_staff(api, app)
    trade_id = paid_and_shipped(api, buyer, seller)
    r1 = act(api, buyer, trade_id, "refunds", amount=5000, reason="scratched").json["id"]
    act(api, seller, trade_id, f"refunds/{r1}/agree", **PP)
    r2 = act(api, buyer, trade_id, "refunds", amount=15900, reason="and broken").json["id"]
    act(api, seller, trade_id, f"refunds/{r2}/refuse", reason="no")
    dispute = act(api, buyer, trade_id, "disputes", reason="please").json
    decided = api.client.post(f"/api/v1/admin/disputes/{dispute['id']}/decide", headers=staff["headers"],
                              json={"outcome": "refund", "reason": "x"})
    assert decided.status_code == 200
    body = trade(api, buyer, trade_id)
    assert (body["status"], body["refunded_amount"], body["close_reason"]) == ("TRADE_CLOSED", 20900, "refunded")
    assert escrow_balance(app, trade_id) == 0
    assert act(api, buyer, trade_id, "ratings", score=1).json["code"] == "rating_closed"
    assert verify_cli(app, trade_id)[0] == 0
    books_clean(app)


def test_ratings_after_an_auto_confirm_by_catch_up(api, app, clock, people):
    buyer, seller = people
    trade_id = paid_and_shipped(api, buyer, seller)
    clock.advance(days=10)
    relogin(api, buyer, seller)
    rated = act(api, buyer, trade_id, "ratings", score=1)
    assert rated.status_code == 201, rated.json
    assert trade(api, buyer, trade_id)["status"] == "TRADE_FINISHED"
    clock.advance(days=15, seconds=1)
    relogin(api, buyer, seller)
    assert act(api, seller, trade_id, "ratings", score=1).json["code"] == "rating_closed"
    assert verify_cli(app, trade_id)[0] == 0
    books_clean(app)
