"""Audit of the end of a trade's life (DESIGN 6, 7.1): who is staff and what staff may do, who may open a dispute and
when, what a decision does to the money, the trade, the ledger and both parties' messages, and ratings at the edges
of their window."""

import pytest

from tests.api.escrow_helpers import (
    PP,
    act,
    books_clean,
    disputed,
    escrow_balance,
    events,
    grant_staff,
    open_trade,
    paid_and_shipped,
    refused_refund,
    relogin,
    run_sweeper,
    trade,
)


def _decide(api, who, dispute_id, **body):
    return api.client.post(f"/api/v1/admin/disputes/{dispute_id}/decide", headers=who["headers"],
                           json={"reason": "decided", **body})


def _open_disputes(api, who):
    return [d["id"] for d in api.client.get("/api/v1/admin/disputes", headers=who["headers"]).json["data"]]


# --- conflict of interest -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("side", ["buyer", "seller"])
def test_staff_cannot_decide_a_dispute_on_a_trade_they_are_a_party_to(api, app, people, side):
    buyer, seller = people
    if side == "buyer":  # staff who shop on the platform
        buyer = staff = grant_staff_on(api, app, buyer)
    else:
        seller = staff = grant_staff_on(api, app, seller)
    trade_id = paid_and_shipped(api, buyer, seller)
    _refund, dispute = disputed(api, buyer, seller, trade_id)
    own = _decide(api, staff, dispute["id"], outcome="refund" if side == "buyer" else "release")
    assert (own.status_code, own.json["code"]) == (403, "conflict_of_interest"), own.json
    assert escrow_balance(app, trade_id) == 20900
    assert trade(api, buyer, trade_id)["status"] == "WAIT_BUYER_CONFIRM_GOODS"
    assert dispute["id"] in _open_disputes(api, staff)  # still open, for someone else to decide
    colleague = grant_staff(api, app)
    assert _decide(api, colleague, dispute["id"], outcome="split", refund_amount=900).status_code == 200
    books_clean(app)


def grant_staff_on(api, app, account):
    assert app.test_cli_runner().invoke(args=["users", "grant-staff", account["phone"]]).exit_code == 0
    return account


def test_staff_have_no_part_in_a_trade_they_are_not_a_party_to(api, app, people, staff):
    buyer, seller = people
    trade_id = paid_and_shipped(api, buyer, seller)
    refund = refused_refund(api, buyer, seller, trade_id)
    before = trade(api, buyer, trade_id)
    attempts = [
        act(api, staff, trade_id, "pay", key="s-pay", **PP),
        act(api, staff, trade_id, "confirm", key="s-confirm", **PP),
        act(api, staff, trade_id, "ship", carrier="SF", tracking_number="1"),
        act(api, staff, trade_id, "extend"),
        act(api, staff, trade_id, "cancel"),
        act(api, staff, trade_id, "refunds", amount=100, reason="staff"),
        act(api, staff, trade_id, f"refunds/{refund['id']}/agree", **PP),
        act(api, staff, trade_id, f"refunds/{refund['id']}/withdraw"),
        act(api, staff, trade_id, "disputes", reason="staff"),
        act(api, staff, trade_id, "evidence", text="staff"),
        act(api, staff, trade_id, "ratings", score=-1),
    ]
    for response in attempts:
        assert (response.status_code, response.json["code"]) == (404, "not_found"), response.request.path
    # ... but they read it, to decide with the evidence
    seen = api.client.get(f"/api/v1/trades/{trade_id}", headers=staff["headers"])
    assert seen.status_code == 200 and seen.json["role"] == "staff"
    assert api.client.get(f"/api/v1/trades/{trade_id}/timeline", headers=staff["headers"]).status_code == 200
    assert trade(api, buyer, trade_id) == before
    books_clean(app)


# --- who may use the staff endpoints ------------------------------------------------------------------------------


def test_the_staff_endpoints_refuse_anyone_else(api, app, people, staff):
    buyer, seller = people
    trade_id = paid_and_shipped(api, buyer, seller)
    _refund, dispute = disputed(api, buyer, seller, trade_id)
    decide_path = f"/api/v1/admin/disputes/{dispute['id']}/decide"
    body = {"outcome": "refund", "reason": "mine"}
    assert api.client.get("/api/v1/admin/disputes").status_code == 401
    assert api.client.post(decide_path, json=body).status_code == 401
    for party in (buyer, seller):
        assert api.client.get("/api/v1/admin/disputes", headers=party["headers"]).json["code"] == "forbidden"
        refused = api.client.post(decide_path, headers=party["headers"], json=body)
        assert (refused.status_code, refused.json["code"]) == (403, "forbidden")
    unknown = _decide(api, staff, "dsp_nosuchdispute", outcome="refund")
    assert (unknown.status_code, unknown.json["code"]) == (404, "not_found")
    assert escrow_balance(app, trade_id) == 20900


def test_a_revoked_staff_role_ends_at_the_next_request(api, app, people, staff):
    buyer, seller = people
    trade_id = paid_and_shipped(api, buyer, seller)
    _refund, dispute = disputed(api, buyer, seller, trade_id)
    assert _open_disputes(api, staff) == [dispute["id"]]
    revoked = app.test_cli_runner().invoke(args=["users", "revoke-staff", staff["phone"]])
    assert revoked.exit_code == 0, revoked.output
    assert api.client.get("/api/v1/admin/disputes", headers=staff["headers"]).status_code == 403  # same token
    refused = _decide(api, staff, dispute["id"], outcome="release")
    assert (refused.status_code, refused.json["code"]) == (403, "forbidden")
    assert api.client.get(f"/api/v1/trades/{trade_id}", headers=staff["headers"]).status_code == 404
    assert escrow_balance(app, trade_id) == 20900
    unknown = app.test_cli_runner().invoke(args=["users", "revoke-staff", "+12025550199"])
    assert unknown.exit_code != 0 and "no account" in unknown.output


# --- decisions ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("refund_amount", "status", "code"), [
    (0, 422, "validation_failed"),
    (-1, 422, "validation_failed"),
    (15900, 422, "invalid_split"),       # everything still held: that is a refund
    (15901, 422, "invalid_split"),       # more than held
    (20900, 422, "invalid_split"),       # what was paid, ignoring the partial refund
    (None, 422, "invalid_split"),
])
def test_a_split_takes_more_than_nothing_and_less_than_what_is_still_held(api, app, people, staff, refund_amount,
                                                                          status, code):
    buyer, seller = people
    trade_id = paid_and_shipped(api, buyer, seller)
    first = act(api, buyer, trade_id, "refunds", amount=5000, reason="scratched").json
    assert act(api, seller, trade_id, f"refunds/{first['id']}/agree", **PP).status_code == 200
    _refund, dispute = disputed(api, buyer, seller, trade_id, amount=15900)
    refused = _decide(api, staff, dispute["id"], outcome="split", refund_amount=refund_amount)
    assert (refused.status_code, refused.json["code"]) == (status, code)
    assert escrow_balance(app, trade_id) == 15900
    at_edge = _decide(api, staff, dispute["id"], outcome="split", refund_amount=15899)
    assert at_edge.status_code == 200 and at_edge.json["refund_amount"] == 15899
    body = trade(api, buyer, trade_id)
    assert (body["status"], body["refunded_amount"], body["released_amount"]) == ("TRADE_FINISHED", 20899, 1)
    assert (api.balance(buyer), api.balance(seller)) == (500000 - 1, 1)
    books_clean(app)


@pytest.mark.parametrize(("outcome", "refund_amount"), [("refund", 5000), ("release", 5000), ("refund", 15901)])
def test_a_refund_amount_that_contradicts_the_outcome_is_refused_not_ignored(api, app, people, staff, outcome,
                                                                             refund_amount):
    """Staff who write "refund 50.00" must not refund 159.00 (or release everything) because the amount was
    silently dropped."""
    buyer, seller = people
    trade_id = paid_and_shipped(api, buyer, seller)
    first = act(api, buyer, trade_id, "refunds", amount=5000, reason="scratched").json
    act(api, seller, trade_id, f"refunds/{first['id']}/agree", **PP)
    _refund, dispute = disputed(api, buyer, seller, trade_id, amount=15900)
    refused = _decide(api, staff, dispute["id"], outcome=outcome, refund_amount=refund_amount)
    assert (refused.status_code, refused.json["code"]) == (422, "refund_amount_mismatch"), refused.json
    assert escrow_balance(app, trade_id) == 15900
    assert dispute["id"] in _open_disputes(api, staff)
    consistent = _decide(api, staff, dispute["id"], outcome="refund", refund_amount=15900)  # says what it does
    assert consistent.status_code == 200 and consistent.json["refund_amount"] == 15900
    books_clean(app)


def test_a_release_after_a_partial_refund_pays_the_seller_what_is_left_less_the_fee(api, app, people, staff):
    buyer, seller = people
    assert app.test_cli_runner().invoke(args=["users", "set-fee", seller["phone"], "100"]).exit_code == 0
    trade_id = paid_and_shipped(api, buyer, seller)
    first = act(api, buyer, trade_id, "refunds", amount=5000, reason="scratched").json
    act(api, seller, trade_id, f"refunds/{first['id']}/agree", **PP)
    refund, dispute = disputed(api, buyer, seller, trade_id, amount=10000)
    decided = _decide(api, staff, dispute["id"], outcome="release")
    assert decided.status_code == 200 and decided.json["refund_amount"] == 0
    body = trade(api, buyer, trade_id)
    assert (body["status"], body["refunded_amount"], body["released_amount"], body["fee_amount"]) == (
        "TRADE_FINISHED", 5000, 15900, 159)
    assert body["deadlines"]["paused"] is False
    assert [r["status"] for r in body["refunds"]] == ["REFUND_SUCCESS", "REFUND_CLOSED"]
    assert (api.balance(buyer), api.balance(seller)) == (500000 - 20900 + 5000, 15900 - 159)
    assert escrow_balance(app, trade_id) == 0
    for who in (buyer, seller):
        assert events(app, who["phone"]).count("dispute_decided") == 1
    again = _decide(api, staff, dispute["id"], outcome="refund")
    assert (again.status_code, again.json["code"]) == (409, "dispute_decided")
    assert refund["id"] == body["refunds"][1]["id"]
    books_clean(app)


# --- opening a dispute ----------------------------------------------------------------------------------------------


def test_a_dispute_is_opened_only_on_a_refused_refund_and_only_once(api, app, clock, people):
    buyer, seller = people
    finished = paid_and_shipped(api, buyer, seller, amount=100, shipping_fee=0)
    act(api, buyer, finished, "confirm", key="c", **PP)
    closed = open_trade(api, buyer, seller)
    act(api, buyer, closed, "cancel")
    asked = paid_and_shipped(api, buyer, seller)
    act(api, buyer, asked, "refunds", amount=100, reason="asked only")
    for trade_id in (finished, closed, asked):
        refused = act(api, buyer, trade_id, "disputes", reason="please")
        assert (refused.status_code, refused.json["code"]) == (409, "no_refused_refund")
    trade_id = paid_and_shipped(api, buyer, seller)
    refused_refund(api, buyer, seller, trade_id)
    clock.advance(days=7)  # the buyer let the escalation window run out, and the sweeper has not come by
    relogin(api, buyer, seller)
    late = act(api, buyer, trade_id, "disputes", reason="too late")
    assert (late.status_code, late.json["code"]) == (409, "no_refused_refund")
    run_sweeper(app)
    lapsed = trade(api, buyer, trade_id)
    assert (lapsed["refunds"][0]["status"], lapsed["deadlines"]["paused"]) == ("REFUND_CLOSED", False)
    books_clean(app)


def test_an_open_dispute_stops_every_clock_until_it_is_decided(api, app, clock, people, staff):
    buyer, seller = people
    trade_id = paid_and_shipped(api, buyer, seller)
    _refund, dispute = disputed(api, buyer, seller, trade_id)
    assert act(api, buyer, trade_id, "disputes", reason="twice").json["code"] == "no_refused_refund"
    opened = trade(api, buyer, trade_id)
    assert opened["deadlines"]["paused"] is True and opened["refunds"][0]["deadline"] is None
    clock.advance(days=60)
    assert run_sweeper(app) == {"closed_unpaid": 0, "reminded": 0, "auto_confirmed": 0, "refund_deadlines": 0}
    relogin(api, buyer, seller, staff)
    waiting = trade(api, buyer, trade_id)
    assert (waiting["status"], waiting["refunds"][0]["status"]) == ("WAIT_BUYER_CONFIRM_GOODS", "SELLER_REFUSE_BUYER")
    assert act(api, buyer, trade_id, "confirm", key="c", **PP).json["code"] == "refund_in_progress"
    assert _decide(api, staff, dispute["id"], outcome="refund").status_code == 200
    assert trade(api, buyer, trade_id)["status"] == "TRADE_CLOSED"
    assert api.balance(buyer) == 500000
    books_clean(app)


# --- ratings ----------------------------------------------------------------------------------------------------


def test_a_trade_is_rated_up_to_exactly_fifteen_days_after_it_finished(api, app, clock, people):
    buyer, seller = people
    trade_id = paid_and_shipped(api, buyer, seller)
    act(api, buyer, trade_id, "confirm", key="c", **PP)
    clock.advance(days=15)
    relogin(api, buyer, seller)
    assert act(api, buyer, trade_id, "ratings", score=1).status_code == 201
    clock.advance(microseconds=1)
    relogin(api, buyer, seller)
    assert act(api, seller, trade_id, "ratings", score=1).json["code"] == "rating_closed"


def test_reputation_after_trades_ended_by_confirmation_release_split_and_refund(api, app, people, staff):
    buyer, seller = people
    ended = []
    for outcome in ("confirm", "release", "split", "refund"):
        trade_id = paid_and_shipped(api, buyer, seller, amount=1000, shipping_fee=0)
        if outcome == "confirm":
            act(api, buyer, trade_id, "confirm", key=f"c-{trade_id}", **PP)
        else:
            _refund, dispute = disputed(api, buyer, seller, trade_id, amount=1000)
            assert _decide(api, staff, dispute["id"], outcome=outcome,
                           **({"refund_amount": 400} if outcome == "split" else {})).status_code == 200
        ended.append(trade_id)
    scores = {"confirm": 1, "release": 0, "split": -1}
    for trade_id, (outcome, score) in zip(ended, scores.items(), strict=False):
        assert act(api, buyer, trade_id, "ratings", score=score).status_code == 201, outcome
    assert act(api, buyer, ended[3], "ratings", score=-1).json["code"] == "rating_closed"  # closed, refunded
    rep = api.client.get(f"/api/v1/users/{seller['user']['id']}/reputation", headers=buyer["headers"]).json
    assert rep["as_seller"] == {"credit_score": 0, "positive_rate": round(1 / 3, 4), "count": 3}
    books_clean(app)
