"""The buyer's withdrawal of a refund against the seller's answer, the sweeper, a second request, and staff deciding
while evidence comes in: exactly one winner each time (PostgreSQL; SQLite serialises them, which must hold too)."""


from tests.api.escrow_helpers import (
    PP,
    escrow_balance,
    grant_staff,
    paid_and_shipped,
    trade,
    verify_cli,
)
from tests.integration.test_escrow_races import clean, in_app, post, together
from wallet.trades import sweep


def _refund(app, buyer, trade_id, amount, **extra):
    status, body = post(app, buyer, f"/api/v1/trades/{trade_id}/refunds", amount=amount, reason="race", **extra)
    assert status == 201, body
    return body["id"]


def test_buyer_withdraws_while_the_seller_agrees(api, app, people):
    buyer, seller = people
    for _ in range(6):
        trade_id = paid_and_shipped(api, buyer, seller)
        rid = _refund(app, buyer, trade_id, 5000)
        withdrawn, agreed = together(
            lambda t=trade_id, r=rid: post(app, buyer, f"/api/v1/trades/{t}/refunds/{r}/withdraw"),
            lambda t=trade_id, r=rid: post(app, seller, f"/api/v1/trades/{t}/refunds/{r}/agree", **PP),
        )
        assert sorted([withdrawn[0], agreed[0]]) == [200, 409], (withdrawn, agreed)
        state = trade(api, buyer, trade_id)
        assert state["refunded_amount"] == (5000 if agreed[0] == 200 else 0)
        assert state["refunds"][0]["status"] == ("REFUND_SUCCESS" if agreed[0] == 200 else "REFUND_CLOSED")
        assert state["deadlines"]["paused"] is False
        assert escrow_balance(app, trade_id) == 20900 - state["refunded_amount"]
        assert verify_cli(app, trade_id)[0] == 0
    clean(app)


def test_buyer_withdraws_while_the_seller_refuses(api, app, people):
    buyer, seller = people
    for _ in range(6):
        trade_id = paid_and_shipped(api, buyer, seller)
        rid = _refund(app, buyer, trade_id, 5000)
        withdrawn, refused = together(
            lambda t=trade_id, r=rid: post(app, buyer, f"/api/v1/trades/{t}/refunds/{r}/withdraw"),
            lambda t=trade_id, r=rid: post(app, seller, f"/api/v1/trades/{t}/refunds/{r}/refuse", reason="no"),
        )
        statuses = sorted([withdrawn[0], refused[0]])
        # either the refusal came first and the buyer then withdrew it (both 200), or the withdrawal came first
        assert statuses in ([200, 200], [200, 409]), (withdrawn, refused)
        assert withdrawn[0] == 200
        state = trade(api, buyer, trade_id)
        assert state["refunds"][0]["status"] == "REFUND_CLOSED" and state["deadlines"]["paused"] is False
        assert verify_cli(app, trade_id)[0] == 0
    clean(app)


def test_buyer_withdraws_while_the_sweeper_applies_the_sellers_silence(api, app, clock, people):
    buyer, seller = people
    trade_ids, rids = [], []
    for _ in range(6):
        trade_id = paid_and_shipped(api, buyer, seller)
        trade_ids.append(trade_id)
        rids.append(_refund(app, buyer, trade_id, 5000))
    clock.advance(days=5)
    api.relogin(buyer)
    *withdrawals, _swept = together(
        *[(lambda t=t, r=r: post(app, buyer, f"/api/v1/trades/{t}/refunds/{r}/withdraw"))
          for t, r in zip(trade_ids, rids, strict=True)],
        in_app(app, sweep),
    )
    in_app(app, sweep)()  # a trade the first pass skipped (locked by a withdrawal) is applied now
    for (status, body), trade_id in zip(withdrawals, trade_ids, strict=True):
        # the seller's silence decided at the deadline: a withdrawal after it is refused
        assert status == 409 and body["code"] == "illegal_refund_transition", body
        state = trade(api, buyer, trade_id)
        assert state["refunded_amount"] == 5000 and state["refunds"][0]["status"] == "REFUND_SUCCESS"
        assert escrow_balance(app, trade_id) == 15900
    clean(app)


def test_two_refund_requests_at_once_after_a_withdrawal(api, app, people):
    buyer, seller = people
    for _ in range(4):
        trade_id = paid_and_shipped(api, buyer, seller)
        rid = _refund(app, buyer, trade_id, 5000)
        assert post(app, buyer, f"/api/v1/trades/{trade_id}/refunds/{rid}/withdraw")[0] == 200
        first, second = together(
            lambda t=trade_id: post(app, buyer, f"/api/v1/trades/{t}/refunds", amount=20900, reason="a"),
            lambda t=trade_id: post(app, buyer, f"/api/v1/trades/{t}/refunds", amount=20900, reason="b"),
        )
        assert sorted([first[0], second[0]]) == [201, 409], (first, second)
    clean(app)


def test_staff_decide_while_the_seller_opens_nothing_and_buyer_adds_evidence(api, app, people):
    """A decision and an evidence entry at once: both land, the chain stays intact, escrow ends at zero."""
    buyer, seller = people
    staff = grant_staff(api, app)
    for _ in range(4):
        trade_id = paid_and_shipped(api, buyer, seller)
        rid = _refund(app, buyer, trade_id, 5000)
        assert post(app, seller, f"/api/v1/trades/{trade_id}/refunds/{rid}/refuse", reason="no")[0] == 200
        status, dispute = post(app, buyer, f"/api/v1/trades/{trade_id}/disputes", reason="please")
        assert status == 201
        decided, evidence = together(
            lambda d=dispute["id"]: post(app, staff, f"/api/v1/admin/disputes/{d}/decide", outcome="split",
                                         refund_amount=3000, reason="half"),
            lambda t=trade_id: post(app, buyer, f"/api/v1/trades/{t}/evidence", text="photo"),
        )
        assert decided[0] == 200 and evidence[0] == 201, (decided, evidence)
        assert escrow_balance(app, trade_id) == 0
        assert verify_cli(app, trade_id)[0] == 0
    clean(app)
