"""A deadline decides a trade even before the sweeper reaches it: a party acting on a trade whose deadline has
passed finds the deadline applied first (``wallet.trades._catch_up``). Also: the staff decision of a dispute
leaves its state changes in the timeline and has one winner, the seller is told when goods come back, both sides
when a refund lapses, and a refusal reason the API accepts fits its column."""

import threading
from datetime import UTC, datetime, timedelta

import pytest

from tests.api.escrow_helpers import (
    PP,
    act,
    books_clean,
    disputed,
    escrow_balance,
    events,
    open_trade,
    paid_and_shipped,
    relogin,
    run_sweeper,
    trade,
)
from tests.conftest import PG_URL


def _timeline(api, who, trade_id):
    return api.client.get(f"/api/v1/trades/{trade_id}/timeline?limit=100", headers=who["headers"]).json["data"]


# --- deadlines that passed before the sweeper came by ------------------------------------------------------


def test_a_trade_past_its_pay_deadline_cannot_be_paid(api, app, clock, people):
    buyer, seller = people
    trade_id = open_trade(api, buyer, seller)
    clock.advance(hours=24)  # the deadline itself; the sweeper has not run
    relogin(api, buyer)
    paid = act(api, buyer, trade_id, "pay", key="late", **PP)
    assert (paid.status_code, paid.json["code"]) == (409, "trade_not_payable")
    assert api.balance(buyer) == 500000
    assert run_sweeper(app)["closed_unpaid"] == 1  # refused, not applied: the sweeper still closes it
    closed = trade(api, buyer, trade_id)
    assert (closed["status"], closed["close_reason"]) == ("TRADE_CLOSED", "unpaid")
    books_clean(app)


def test_a_trade_a_second_before_its_pay_deadline_is_paid(api, app, clock, people):
    buyer, seller = people
    trade_id = open_trade(api, buyer, seller)
    clock.advance(hours=24, seconds=-1)
    relogin(api, buyer)
    assert act(api, buyer, trade_id, "pay", key="just-in-time", **PP).json["status"] == "WAIT_SELLER_SEND_GOODS"


def test_a_confirm_deadline_that_has_passed_cannot_be_extended(api, app, clock, people):
    buyer, seller = people
    trade_id = paid_and_shipped(api, buyer, seller)
    clock.advance(days=10, hours=1)
    relogin(api, buyer, seller)
    extended = act(api, buyer, trade_id, "extend")
    assert (extended.status_code, extended.json["code"]) == (409, "trade_not_extendable")
    assert run_sweeper(app)["auto_confirmed"] == 1
    assert api.balance(seller) == 20900
    books_clean(app)


def test_a_refund_cannot_be_asked_for_once_the_confirm_deadline_passed(api, app, clock, people):
    buyer, seller = people
    trade_id = paid_and_shipped(api, buyer, seller)
    clock.advance(days=10)
    relogin(api, buyer, seller)
    late = act(api, buyer, trade_id, "refunds", amount=20900, reason="changed my mind")
    assert (late.status_code, late.json["code"]) == (409, "trade_not_refundable")
    assert "refund_requested" not in events(app, seller["phone"])
    assert run_sweeper(app)["auto_confirmed"] == 1
    books_clean(app)


def test_an_action_that_goes_through_commits_the_deadline_it_found(api, app, clock, people):
    """Evidence added after the confirm deadline: the trade is confirmed (money, SMS) in the same transaction."""
    buyer, seller = people
    trade_id = paid_and_shipped(api, buyer, seller)
    clock.advance(days=10, minutes=1)
    relogin(api, buyer, seller)
    assert act(api, seller, trade_id, "evidence", text="delivered, signed for").status_code == 201
    after = trade(api, seller, trade_id)
    assert after["status"] == "TRADE_FINISHED" and api.balance(seller) == 20900
    assert "trade_finished" in events(app, seller["phone"])
    kinds = [(entry["kind"], entry["data"].get("action")) for entry in _timeline(api, seller, trade_id)]
    assert kinds[-2:] == [("money", None), ("evidence", None)] and ("state", "auto_confirm") in kinds
    assert run_sweeper(app)["auto_confirmed"] == 0
    books_clean(app)


def test_a_seller_silent_past_the_refund_deadline_can_no_longer_refuse(api, app, clock, people):
    buyer, seller = people
    trade_id = paid_and_shipped(api, buyer, seller)
    rid = act(api, buyer, trade_id, "refunds", amount=5000, reason="scratched").json["id"]
    clock.advance(days=5)  # silence after shipping for 5 days counts as agreed
    relogin(api, buyer, seller)
    refused = act(api, seller, trade_id, f"refunds/{rid}/refuse", reason="too late")
    assert (refused.status_code, refused.json["code"]) == (409, "illegal_refund_transition")
    assert run_sweeper(app)["refund_deadlines"] == 1
    assert api.balance(buyer) == 500000 - 20900 + 5000
    books_clean(app)


def test_a_seller_agreeing_after_silence_agreed_gets_what_silence_gave_once(api, app, clock, people):
    """Agreeing late has the deadline's own outcome: the request answers with the refund the deadline paid (in the
    request's transaction), and the sweeper finds nothing left to do."""
    buyer, seller = people
    trade_id = paid_and_shipped(api, buyer, seller)
    rid = act(api, buyer, trade_id, "refunds", amount=5000, reason="scratched").json["id"]
    clock.advance(days=5, seconds=1)
    relogin(api, buyer, seller)
    agreed = act(api, seller, trade_id, f"refunds/{rid}/agree", **PP)
    assert (agreed.status_code, agreed.json["status"]) == (200, "REFUND_SUCCESS")
    assert run_sweeper(app)["refund_deadlines"] == 0
    assert api.balance(buyer) == 500000 - 20900 + 5000
    actions = [entry["data"].get("action") for entry in _timeline(api, buyer, trade_id) if entry["kind"] == "refund"]
    assert actions == ["request", "expire"]  # the deadline's step, not the seller's
    books_clean(app)


def test_a_buyer_confirming_after_the_deadline_confirmed_gets_the_finished_trade(api, app, clock, people):
    buyer, seller = people
    trade_id = paid_and_shipped(api, buyer, seller)
    clock.advance(days=10, seconds=1)
    relogin(api, buyer, seller)
    confirmed = act(api, buyer, trade_id, "confirm", key="late", **PP)
    assert (confirmed.status_code, confirmed.json["status"]) == (200, "TRADE_FINISHED")
    assert run_sweeper(app)["auto_confirmed"] == 0
    assert api.balance(seller) == 20900
    states = [entry["data"]["action"] for entry in _timeline(api, buyer, trade_id) if entry["kind"] == "state"]
    assert states[-1] == "auto_confirm"
    again = act(api, buyer, trade_id, "confirm", key="late", **PP)  # a retry replays the answer
    assert again.headers["Idempotent-Replayed"] == "true" and again.json == confirmed.json
    books_clean(app)


# --- SMS for every step of a refund ------------------------------------------------------------------------


def test_the_seller_is_told_when_goods_come_back(api, app, people):
    buyer, seller = people
    trade_id = paid_and_shipped(api, buyer, seller)
    rid = act(api, buyer, trade_id, "refunds", amount=20900, reason="broken", return_goods=True).json["id"]
    assert act(api, seller, trade_id, f"refunds/{rid}/agree", **PP).status_code == 200
    assert "refund_goods_returned" not in events(app, seller["phone"])
    returned = act(api, buyer, trade_id, f"refunds/{rid}/return", carrier="EMS", tracking_number="EMS99")
    assert returned.json["status"] == "WAIT_SELLER_CONFIRM_GOODS"
    assert events(app, seller["phone"])[-1] == "refund_goods_returned"


def test_both_sides_are_told_when_a_refund_lapses(api, app, clock, people):
    buyer, seller = people
    trade_id = paid_and_shipped(api, buyer, seller)
    rid = act(api, buyer, trade_id, "refunds", amount=20900, reason="broken", return_goods=True).json["id"]
    assert act(api, seller, trade_id, f"refunds/{rid}/agree", **PP).status_code == 200
    clock.advance(days=7)  # the buyer never sends the goods back
    assert run_sweeper(app)["refund_deadlines"] == 1
    for who in (buyer, seller):
        assert events(app, who["phone"])[-1] == "refund_closed"
    relogin(api, buyer)
    assert trade(api, buyer, trade_id)["deadlines"]["paused"] is False


# --- the staff decision of a dispute -------------------------------------------------------------------------


def test_a_dispute_decision_records_the_state_changes_it_makes(api, app, people, staff):
    buyer, seller = people
    trade_id = paid_and_shipped(api, buyer, seller)
    refund, dispute = disputed(api, buyer, seller, trade_id)
    decided = api.client.post(f"/api/v1/admin/disputes/{dispute['id']}/decide", headers=staff["headers"],
                              json={"outcome": "split", "refund_amount": 8000, "reason": "partly damaged"})
    assert decided.status_code == 200
    entries = [entry["data"] for entry in _timeline(api, buyer, trade_id)]
    assert {"action": "decide_to_buyer", "refund": refund["id"], "before": "SELLER_REFUSE_BUYER",
            "after": "REFUND_SUCCESS"}.items() <= entries[-2].items()
    assert {"action": "decide_to_seller", "before": "WAIT_BUYER_CONFIRM_GOODS",
            "after": "TRADE_FINISHED"}.items() <= entries[-1].items()
    bundle = api.client.get(f"/api/v1/trades/{trade_id}/evidence-bundle", headers=staff["headers"]).json
    assert bundle["intact"]
    books_clean(app)


def test_a_dispute_refunded_in_full_closes_the_trade_in_the_timeline(api, app, people, staff):
    buyer, seller = people
    trade_id = paid_and_shipped(api, buyer, seller)
    _refund, dispute = disputed(api, buyer, seller, trade_id)
    decided = api.client.post(f"/api/v1/admin/disputes/{dispute['id']}/decide", headers=staff["headers"],
                              json={"outcome": "refund", "reason": "never arrived"})
    assert decided.status_code == 200
    last = _timeline(api, buyer, trade_id)[-1]
    assert (last["kind"], last["data"]["action"], last["data"]["after"]) == ("state", "decide_all_to_buyer",
                                                                            "TRADE_CLOSED")
    assert trade(api, buyer, trade_id)["close_reason"] == "refunded"
    books_clean(app)


@pytest.mark.skipif(not PG_URL, reason="SQLite runs one write transaction at a time; the race needs PostgreSQL")
def test_two_staff_deciding_one_dispute_at_once_have_one_winner(api, app, people, staff):
    buyer, seller = people
    other_staff = api.register()
    assert app.test_cli_runner().invoke(args=["users", "grant-staff", other_staff["phone"]]).exit_code == 0
    for n in range(4):
        trade_id = paid_and_shipped(api, buyer, seller, amount=1000, shipping_fee=0)
        _refund, dispute = disputed(api, buyer, seller, trade_id, amount=1000)
        path = f"/api/v1/admin/disputes/{dispute['id']}/decide"
        barrier, results = threading.Barrier(2), {}

        def decide(who, outcome, barrier=barrier, results=results, path=path):
            barrier.wait()
            response = app.test_client().post(path, headers=who["headers"], json={"outcome": outcome,
                                                                                 "reason": "race"})
            results[outcome] = (response.status_code, response.get_json())

        threads = [threading.Thread(target=decide, args=(staff, "release")),
                   threading.Thread(target=decide, args=(other_staff, "refund"))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(status for status, _ in results.values()) == [200, 409], results
        loser = next(body for status, body in results.values() if status == 409)
        assert loser["code"] == "dispute_decided"
        final = trade(api, buyer, trade_id)
        expected = "TRADE_FINISHED" if results["release"][0] == 200 else "TRADE_CLOSED"
        assert final["status"] == expected, (results, final)
        assert final["refunded_amount"] + final["released_amount"] == 1000
        assert escrow_balance(app, trade_id) == 0
        assert events(app, buyer["phone"]).count("dispute_decided") == n + 1
    books_clean(app)


# --- input the API accepts fits the database ----------------------------------------------------------------


@pytest.mark.parametrize(("length", "status"), [(500, 200), (501, 422)])
def test_a_refusal_reason_is_at_most_500_characters(api, app, people, length, status):
    buyer, seller = people
    trade_id = paid_and_shipped(api, buyer, seller)
    rid = act(api, buyer, trade_id, "refunds", amount=5000, reason="scratched").json["id"]
    refused = act(api, seller, trade_id, f"refunds/{rid}/refuse", reason="x" * length)
    assert refused.status_code == status, refused.json
    if status == 422:
        assert refused.json["code"] == "validation_failed"


# --- the buyer withdraws a refund request ---------------------------------------------------------------------


def _withdraw(api, who, trade_id, rid):
    return act(api, who, trade_id, f"refunds/{rid}/withdraw")


def test_a_buyer_withdraws_a_refund_request_and_the_trade_goes_on(api, app, clock, people):
    buyer, seller = people
    trade_id = paid_and_shipped(api, buyer, seller)
    before = trade(api, buyer, trade_id)["deadlines"]
    assert before["paused_since"] is None
    asked = act(api, buyer, trade_id, "refunds", amount=5000, reason="changed my mind").json
    rid = asked["id"]
    paused = trade(api, buyer, trade_id)["deadlines"]
    # While paused the answer says since when, so a client can tell where the clock will stand once it resumes.
    assert (paused["paused"], paused["paused_since"], paused["confirm_by"]) == (True, asked["created_at"],
                                                                                before["confirm_by"])
    clock.advance(days=1)
    relogin(api, buyer, seller)
    withdrawn = _withdraw(api, buyer, trade_id, rid)
    assert (withdrawn.status_code, withdrawn.json["status"]) == (200, "REFUND_CLOSED")
    assert events(app, seller["phone"])[-1] == "refund_withdrawn"
    after = trade(api, buyer, trade_id)
    assert (after["deadlines"]["paused"], after["deadlines"]["paused_since"]) == (False, None)
    stood, since = (datetime.fromisoformat(v.replace("Z", "+00:00")) for v in (paused["confirm_by"],
                                                                              paused["paused_since"]))
    resumed = datetime.fromisoformat(after["deadlines"]["confirm_by"].replace("Z", "+00:00"))
    assert resumed == stood + timedelta(days=1) and resumed - stood == clock.now().replace(tzinfo=UTC) - since
    again = _withdraw(api, buyer, trade_id, rid)
    assert (again.status_code, again.json["code"]) == (409, "illegal_refund_transition")
    clock.advance(days=5)  # the seller's answer was due now; nothing happens, the request is gone
    assert run_sweeper(app)["refund_deadlines"] == 0
    relogin(api, buyer, seller)
    assert act(api, buyer, trade_id, "confirm", key="c", **PP).json["status"] == "TRADE_FINISHED"
    assert api.balance(seller) == 20900
    books_clean(app)


def test_a_buyer_cannot_ask_and_withdraw_without_end(api, app, clock, people):
    """Found by an audit: each request paused the confirm clock and texted the seller, and withdrawing let the buyer
    ask again, so a buyer could keep the seller's money in escrow for ever and flood them with SMS. Three requests a
    trade (ESCROW_REFUND_REQUESTS_PER_TRADE); the trade can still be confirmed, and the deadline runs again."""
    buyer, seller = people
    trade_id = paid_and_shipped(api, buyer, seller)
    for n in range(3):
        rid = act(api, buyer, trade_id, "refunds", amount=100, reason=f"ask {n}").json["id"]
        clock.advance(days=4)
        relogin(api, buyer, seller)
        assert _withdraw(api, buyer, trade_id, rid).json["status"] == "REFUND_CLOSED"
    texts = len(events(app, seller["phone"]))
    confirm_by = trade(api, buyer, trade_id)["deadlines"]["confirm_by"]
    fourth = act(api, buyer, trade_id, "refunds", amount=100, reason="ask 3")
    assert (fourth.status_code, fourth.json["code"]) == (409, "refund_limit_reached")
    after = trade(api, buyer, trade_id)
    assert after["deadlines"] == {**after["deadlines"], "paused": False, "confirm_by": confirm_by}
    assert len(events(app, seller["phone"])) == texts
    clock.advance(days=10)
    run_sweeper(app)
    relogin(api, buyer, seller)
    assert trade(api, buyer, trade_id)["status"] == "TRADE_FINISHED"
    books_clean(app)


def test_before_shipping_the_buyer_can_always_ask_for_the_money_back(api, app, clock, people):
    """Found by an audit: the limit above also counted requests made before shipping, where nothing pauses. After a
    seller agreed to three small refunds and never shipped, every way out was refused (a fourth refund, cancel,
    confirm, a dispute) and the rest of the buyer's money stayed in escrow for good. Before shipping, past the limit,
    one more request is taken if it asks for everything still held (ESCROW_REFUND_REQUESTS_PER_TRADE counts every
    request since): the seller's silence agrees, and the trade closes with everything back."""
    buyer, seller = people
    trade_id = open_trade(api, buyer, seller)
    assert act(api, buyer, trade_id, "pay", key="p", **PP).status_code == 200
    for n in range(3):
        rid = act(api, buyer, trade_id, "refunds", amount=100, reason=f"late {n}").json["id"]
        assert act(api, seller, trade_id, f"refunds/{rid}/agree", **PP).json["status"] == "REFUND_SUCCESS"
    assert escrow_balance(app, trade_id) == 20600
    fourth = act(api, buyer, trade_id, "refunds", amount=20600, reason="never shipped")
    assert fourth.status_code == 201, fourth.json
    clock.advance(days=3)  # the seller stays silent past the 2 days
    run_sweeper(app)
    relogin(api, buyer, seller)
    assert trade(api, buyer, trade_id)["status"] == "TRADE_CLOSED"
    assert escrow_balance(app, trade_id) == 0
    assert api.balance(buyer) == 500000 and api.balance(seller) == 0
    books_clean(app)


def test_a_seller_who_refused_a_refund_before_shipping_can_ship_and_the_request_closes(api, app, clock, people):
    """Found by an audit: a refused request kept the goods from going out until the buyer escalated, withdrew it or
    let it lapse (7 days), and requests before shipping are not limited in number, so asking for 1 fen, being refused,
    withdrawing and asking again kept a seller from ever shipping, with an SMS each turn. Shipping now closes a
    refused request; the buyer asks again, if they will, as a buyer of a shipped trade."""
    buyer, seller = people
    trade_id = open_trade(api, buyer, seller)
    assert act(api, buyer, trade_id, "pay", key="p", **PP).status_code == 200
    rid = act(api, buyer, trade_id, "refunds", amount=1, reason="ha").json["id"]
    pending = act(api, seller, trade_id, "ship", carrier="SF", tracking_number="1")
    assert (pending.status_code, pending.json["code"]) == (409, "refund_in_progress")  # answered first
    assert act(api, seller, trade_id, f"refunds/{rid}/refuse", reason="shipping today").status_code == 200
    shipped = act(api, seller, trade_id, "ship", carrier="SF", tracking_number="1")
    assert shipped.status_code == 200, shipped.json
    assert shipped.json["status"] == "WAIT_BUYER_CONFIRM_GOODS"
    (refund,) = shipped.json["refunds"]
    assert (refund["id"], refund["status"], refund["refunded_amount"]) == (rid, "REFUND_CLOSED", 0)
    entries = [(e["kind"], e["data"].get("action"), e["data"].get("after")) for e in _timeline(api, buyer, trade_id)]
    assert entries.index(("refund", "ship", "REFUND_CLOSED")) < entries.index(("state", "ship",
                                                                               "WAIT_BUYER_CONFIRM_GOODS"))
    late = act(api, buyer, trade_id, "disputes", reason="too late")
    assert (late.status_code, late.json["code"]) == (409, "no_refused_refund")
    again = act(api, buyer, trade_id, "refunds", amount=1, reason="ha")
    assert again.status_code == 201 and again.json["status"] == "WAIT_SELLER_AGREE"  # the shipped trade's first
    assert escrow_balance(app, trade_id) == 20900 and api.balance(seller) == 0
    # One text tells the buyer the goods left and the request they might have escalated is closed.
    told = events(app, buyer["phone"])
    assert told.count("trade_shipped_refund_closed") == 1 and "trade_shipped" not in told
    books_clean(app)


def test_a_refund_before_shipping_the_platform_is_deciding_still_keeps_the_goods_from_going_out(api, app, people):
    buyer, seller = people
    trade_id = open_trade(api, buyer, seller)
    assert act(api, buyer, trade_id, "pay", key="p", **PP).status_code == 200
    refund, _dispute = disputed(api, buyer, seller, trade_id)
    shipped = act(api, seller, trade_id, "ship", carrier="SF", tracking_number="1")
    assert (shipped.status_code, shipped.json["code"]) == (409, "refund_in_progress")
    answer = trade(api, buyer, trade_id)
    assert answer["status"] == "WAIT_SELLER_SEND_GOODS"
    assert [(r["id"], r["status"]) for r in answer["refunds"]] == [(refund["id"], "SELLER_REFUSE_BUYER")]
    books_clean(app)


def test_a_steps_answer_shows_the_refund_a_deadline_it_applied_closed(api, app, clock, people):
    """Found by an audit: the buyer confirming past a refused refund's escalation window (the sweeper not yet by)
    closed the refund and finished the trade, but the answer, read after the ORM had changed the refund and before it
    flushed it, still showed the refund refused, with its deadline; so did every replay of the stored answer."""
    buyer, seller = people
    trade_id = paid_and_shipped(api, buyer, seller)
    rid = act(api, buyer, trade_id, "refunds", amount=5000, reason="scratched").json["id"]
    assert act(api, seller, trade_id, f"refunds/{rid}/refuse", reason="it was fine").status_code == 200
    clock.advance(days=8)
    relogin(api, buyer, seller)
    confirmed = act(api, buyer, trade_id, "confirm", key="c1", **PP)
    assert confirmed.json["status"] == "TRADE_FINISHED"
    assert [(r["id"], r["status"], r["deadline"]) for r in confirmed.json["refunds"]] == [(rid, "REFUND_CLOSED", None)]
    assert confirmed.json["refunds"] == trade(api, buyer, trade_id)["refunds"]
    books_clean(app)


def test_a_buyer_withdraws_a_refused_refund_instead_of_waiting_a_week_to_confirm(api, app, people):
    buyer, seller = people
    trade_id = paid_and_shipped(api, buyer, seller)
    rid = act(api, buyer, trade_id, "refunds", amount=5000, reason="scratched").json["id"]
    assert act(api, seller, trade_id, f"refunds/{rid}/refuse", reason="it was fine").status_code == 200
    blocked = act(api, buyer, trade_id, "confirm", key="c1", **PP)
    assert (blocked.status_code, blocked.json["code"]) == (409, "refund_in_progress")
    assert _withdraw(api, buyer, trade_id, rid).json["status"] == "REFUND_CLOSED"
    assert act(api, buyer, trade_id, "confirm", key="c2", **PP).json["status"] == "TRADE_FINISHED"
    books_clean(app)


def test_a_buyer_keeps_the_goods_after_the_seller_agreed_to_a_return(api, app, people):
    buyer, seller = people
    trade_id = paid_and_shipped(api, buyer, seller)
    rid = act(api, buyer, trade_id, "refunds", amount=20900, reason="broken", return_goods=True).json["id"]
    assert act(api, seller, trade_id, f"refunds/{rid}/agree", **PP).json["status"] == "WAIT_BUYER_RETURN_GOODS"
    assert _withdraw(api, buyer, trade_id, rid).json["status"] == "REFUND_CLOSED"
    assert act(api, buyer, trade_id, "confirm", key="c", **PP).json["status"] == "TRADE_FINISHED"
    books_clean(app)


def test_a_refund_cannot_be_withdrawn_by_the_seller_once_sent_back_or_while_disputed(api, app, people):
    buyer, seller = people
    trade_id = paid_and_shipped(api, buyer, seller)
    rid = act(api, buyer, trade_id, "refunds", amount=20900, reason="broken", return_goods=True).json["id"]
    by_seller = _withdraw(api, seller, trade_id, rid)
    assert (by_seller.status_code, by_seller.json["code"]) == (409, "buyer_only")
    act(api, seller, trade_id, f"refunds/{rid}/agree", **PP)
    act(api, buyer, trade_id, f"refunds/{rid}/return", carrier="EMS", tracking_number="EMS99")
    sent_back = _withdraw(api, buyer, trade_id, rid)
    assert (sent_back.status_code, sent_back.json["code"]) == (409, "illegal_refund_transition")

    other = paid_and_shipped(api, buyer, seller)
    refund, _dispute = disputed(api, buyer, seller, other)
    refused = _withdraw(api, buyer, other, refund["id"])
    assert (refused.status_code, refused.json["code"]) == (409, "dispute_open")
    stranger = api.register()
    assert _withdraw(api, stranger, other, refund["id"]).status_code == 404


# --- R7 when the money moves ---------------------------------------------------------------------------------


@pytest.mark.parametrize("with_card", [False, True], ids=["from the balance", "topping up from a card"])
def test_a_seller_who_removed_every_card_is_not_paid_into_escrow(api, app, with_card):
    """Found by an audit: R7 ("only verified sellers receive escrow payments") was checked when the trade was opened
    only; a seller who then removed their last card was still paid, and a buyer's card was charged for it."""
    buyer = api.verified(real_name="李四", locale="en")
    if not with_card:
        api.money("/api/v1/topups", buyer, amount=50000, bank_card_id=buyer["card_id"])
    seller = api.verified(real_name="王五", locale="en")
    trade_id = open_trade(api, buyer, seller)
    removed = api.client.delete(f"/api/v1/me/bank-cards/{seller['card_id']}", headers=seller["headers"])
    assert removed.status_code == 204
    card = {"bank_card_id": buyer["card_id"]} if with_card else {}
    paid = act(api, buyer, trade_id, "pay", key="k", **card, **PP)
    assert (paid.status_code, paid.json["code"]) == (422, "seller_not_verified")
    assert trade(api, buyer, trade_id)["status"] == "WAIT_BUYER_PAY"
    assert api.balance(buyer) == (0 if with_card else 50000)  # no card charged for it either
    books_clean(app)


def test_a_sweep_at_the_confirm_deadline_itself_confirms_without_a_reminder(api, app, clock, people):
    """A sweeper down from before the reminder (day 7) that comes back at the confirm deadline's very instant (day 10)
    confirms the trade; the buyer is not asked to act "before" a deadline that has come."""
    buyer, seller = people
    trade_id = paid_and_shipped(api, buyer, seller)
    clock.advance(days=10)
    swept = run_sweeper(app)
    relogin(api, buyer, seller)
    assert (swept["reminded"], swept["auto_confirmed"]) == (0, 1), swept
    assert trade(api, buyer, trade_id)["status"] == "TRADE_FINISHED"
    assert "confirm_deadline_reminder" not in events(app, buyer["phone"])
    books_clean(app)


def test_a_buyer_who_locks_the_sellers_login_does_not_keep_the_seller_from_refusing_a_refund(api, app, clock, people):
    """Found by an audit: three wrong logins on the seller's number (the buyer has it: the trade was opened with it)
    made the seller's live session answer 423, and the refresh too, every three hours again, until the seller's
    silence agreed to the refund. The lock stops logging in with a password, not the seller's session."""
    buyer, seller = people
    trade_id = paid_and_shipped(api, buyer, seller)
    rid = act(api, buyer, trade_id, "refunds", amount=20900, reason="never arrived").json["id"]
    assert [api.login(seller["phone"], f"guess {n}", device_id="buyers-phone").status_code
            for n in range(3)] == [401, 401, 423]
    refused = act(api, seller, trade_id, f"refunds/{rid}/refuse", reason="delivered, signed for")
    assert refused.status_code == 200, refused.json
    assert refused.json["status"] == "SELLER_REFUSE_BUYER"
    books_clean(app)
