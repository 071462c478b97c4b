"""Illegal transitions answer a stable 4xx code and change nothing; strangers see 404; tampering is caught."""

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.exc import IntegrityError

from core.db import db, run_in_transaction
from notifications import dispatcher
from tests.api.escrow_helpers import grant_staff
from tests.api.test_escrow_stories import PP, act, books_clean, open_trade, paid_and_shipped, trade
from tests.db_triggers import trigger_off
from tests.statements import selects_sent
from wallet import timeline


@pytest.fixture
def people(api):
    buyer = api.verified(real_name="李四")
    api.money("/api/v1/topups", buyer, amount=50000, bank_card_id=buyer["card_id"])
    return buyer, api.verified(real_name="王五")


def unchanged(api, who, trade_id, before):
    after = trade(api, who, trade_id)
    assert after == before


def test_confirm_before_ship(api, app, people):
    buyer, seller = people
    trade_id = open_trade(api, buyer, seller)
    act(api, buyer, trade_id, "pay", key="p", **PP)
    before = trade(api, buyer, trade_id)
    response = act(api, buyer, trade_id, "confirm", key="c", **PP)
    assert (response.status_code, response.json["code"]) == (409, "trade_not_confirmable")
    unchanged(api, buyer, trade_id, before)
    books_clean(app)


def test_ship_twice(api, people):
    buyer, seller = people
    trade_id = paid_and_shipped(api, buyer, seller)
    before = trade(api, seller, trade_id)
    response = act(api, seller, trade_id, "ship", carrier="SF", tracking_number="2")
    assert (response.status_code, response.json["code"]) == (409, "trade_not_shippable")
    unchanged(api, seller, trade_id, before)


def test_pay_a_closed_trade(api, people):
    buyer, seller = people
    trade_id = open_trade(api, buyer, seller)
    act(api, buyer, trade_id, "cancel")
    response = act(api, buyer, trade_id, "pay", key="p", **PP)
    assert (response.status_code, response.json["code"]) == (409, "trade_not_payable")
    assert api.balance(buyer) == 50000


def test_refund_more_than_held(api, app, people):
    buyer, seller = people
    trade_id = paid_and_shipped(api, buyer, seller)
    before = trade(api, buyer, trade_id)
    response = act(api, buyer, trade_id, "refunds", amount=20901, reason="all and more")
    assert (response.status_code, response.json["code"]) == (422, "refund_exceeds_held")
    unchanged(api, buyer, trade_id, before)


def test_only_the_right_party_acts(api, people):
    buyer, seller = people
    trade_id = open_trade(api, buyer, seller)
    assert act(api, seller, trade_id, "pay", key="p", **PP).json["code"] == "buyer_only"
    act(api, buyer, trade_id, "pay", key="p", **PP)
    assert act(api, buyer, trade_id, "ship", carrier="SF", tracking_number="1").json["code"] == "seller_only"


def test_a_stranger_gets_404_for_everything(api, people):
    buyer, seller = people
    stranger = api.verified(real_name="赵六")
    trade_id = paid_and_shipped(api, buyer, seller)
    before = trade(api, buyer, trade_id)
    attempts = [
        api.client.get(f"/api/v1/trades/{trade_id}", headers=stranger["headers"]),
        api.client.get(f"/api/v1/trades/{trade_id}/timeline", headers=stranger["headers"]),
        api.client.get(f"/api/v1/trades/{trade_id}/evidence-bundle", headers=stranger["headers"]),
        act(api, stranger, trade_id, "confirm", key="x", **PP),
        act(api, stranger, trade_id, "ship", carrier="SF", tracking_number="1"),
        act(api, stranger, trade_id, "cancel"),
        act(api, stranger, trade_id, "extend"),
        act(api, stranger, trade_id, "refunds", amount=1, reason="mine"),
        act(api, stranger, trade_id, "evidence", text="hi"),
        act(api, stranger, trade_id, "disputes", reason="hi"),
        act(api, stranger, trade_id, "ratings", score=1),
    ]
    for response in attempts:
        assert (response.status_code, response.json["code"]) == (404, "not_found"), response.request.path
    listed = api.client.get("/api/v1/trades", headers=stranger["headers"]).json["data"]
    assert listed == []
    unchanged(api, buyer, trade_id, before)


def test_an_unverified_seller_cannot_be_chosen(api):
    buyer, seller = api.register(), api.register()
    response = api.client.post("/api/v1/trades", headers=buyer["headers"],
                               json={"seller_phone": seller["phone"], "title": "x", "amount": 100})
    assert (response.status_code, response.json["code"]) == (422, "seller_not_verified")  # as for no account at all
    own = api.client.post("/api/v1/trades", headers=buyer["headers"],
                          json={"seller_phone": buyer["phone"], "title": "x", "amount": 100})
    assert (own.status_code, own.json["code"]) == (404, "seller_not_found")


def test_a_tampered_timeline_entry_is_named_by_the_verifier(api, app, people):
    buyer, seller = people
    trade_id = paid_and_shipped(api, buyer, seller)
    runner = app.test_cli_runner()
    ok = runner.invoke(args=["escrow", "verify", trade_id])
    assert ok.exit_code == 0 and "intact: 4 entries" in ok.output
    with app.app_context(), trigger_off("trade_timeline_append_only", "trade_timeline"):  # as the database's owner
        db.session.execute(text("UPDATE trade_timeline SET data = :d WHERE trade_id = :t AND seq = 2"),
                           {"d": '{"amount":1,"movement":"pay","transfer":"tf_forged"}', "t": trade_id})
        db.session.commit()
    broken = runner.invoke(args=["escrow", "verify", trade_id])
    assert broken.exit_code == 1 and "BROKEN at entry 2" in broken.output
    bundle = api.client.get(f"/api/v1/trades/{trade_id}/evidence-bundle", headers=buyer["headers"]).json
    assert (bundle["intact"], bundle["broken_at"]) == (False, 2)


@pytest.mark.parametrize(("change", "named"), [
    ("seller_id = :other", "the trade's seller_id is"),
    ("amount = amount - 10000, paid_amount = paid_amount - 10000", "the trade's amount is"),
    ("fee_bp = 150", "the trade's fee_bp is"),
    ("refunded_amount = 100", "the trade's refunded_amount is 100 but its money entries give 0"),
])
def test_a_trade_row_changed_beside_its_intact_chain_is_caught(api, app, people, change, named):
    """Found by an audit: the chain never named the seller and the verifier never held the trade's row to it, so a
    trade moved to another seller after payment (who then shipped, was confirmed and paid) or given another price
    checked out "intact". The opening entry now records the trade's terms, and the row must agree with them and with
    the sums of the chain's money entries."""
    buyer, seller = people
    other = api.verified(real_name="赵六")
    trade_id = paid_and_shipped(api, buyer, seller)
    with app.app_context():
        db.session.execute(text(f"UPDATE trades SET {change} WHERE id = :t"),
                           {"t": trade_id, "other": other["user"]["id"]})
        db.session.commit()
    broken = app.test_cli_runner().invoke(args=["escrow", "verify", trade_id])
    assert broken.exit_code == 1 and named in broken.output, broken.output
    bundle = api.client.get(f"/api/v1/trades/{trade_id}/evidence-bundle", headers=buyer["headers"]).json
    assert bundle["intact"] is False and named in bundle["problem"]


def test_a_deleted_timeline_entry_is_found(api, app, people):
    buyer, seller = people
    trade_id = paid_and_shipped(api, buyer, seller)
    with app.app_context(), trigger_off("trade_timeline_append_only", "trade_timeline"):
        db.session.execute(text("DELETE FROM trade_timeline WHERE trade_id = :t AND seq = 3"), {"t": trade_id})
        db.session.commit()
    broken = app.test_cli_runner().invoke(args=["escrow", "verify", trade_id])
    assert broken.exit_code == 1 and "entry 3" in broken.output


def test_the_database_refuses_to_change_a_timeline_entry(api, app, people):
    """Migration 0027: the evidence of a dispute is append-only in the database too, as the ledger is (on SQLite the
    suite empties tables with DELETE, so there only UPDATE is refused)."""
    buyer, seller = people
    trade_id = paid_and_shipped(api, buyer, seller)
    with app.app_context():
        with pytest.raises(IntegrityError):
            db.session.execute(text("UPDATE trade_timeline SET actor = 'x' WHERE trade_id = :t AND seq = 2"),
                               {"t": trade_id})
        db.session.rollback()
        if db.engine.dialect.name == "postgresql":
            with pytest.raises(IntegrityError):
                db.session.execute(text("DELETE FROM trade_timeline WHERE trade_id = :t AND seq = 3"), {"t": trade_id})
            db.session.rollback()
    assert app.test_cli_runner().invoke(args=["escrow", "verify", trade_id]).exit_code == 0


def test_a_paid_trade_with_its_whole_timeline_gone_is_not_intact(api, app, people):
    """Found by an audit: every entry deleted and the trade's head put back to the start, the empty chain checked out
    "intact" (the row was held to its chain only when there was one)."""
    buyer, seller = people
    trade_id = paid_and_shipped(api, buyer, seller)
    with app.app_context(), trigger_off("trade_timeline_append_only", "trade_timeline"):
        db.session.execute(text("DELETE FROM trade_timeline WHERE trade_id = :t"), {"t": trade_id})
        db.session.execute(text("UPDATE trades SET timeline_seq = 0, timeline_hash = :g WHERE id = :t"),
                           {"t": trade_id, "g": timeline.GENESIS})
        db.session.commit()
    broken = app.test_cli_runner().invoke(args=["escrow", "verify", trade_id])
    assert broken.exit_code == 1 and "BROKEN at entry 1" in broken.output, broken.output


def test_a_trade_status_changed_in_its_row_alone_is_caught(api, app, people):
    """Found by an audit: a paid trade's row set to "shipped" (with a carrier) while its chain's last state entry
    says it waits for the seller checked out "intact"."""
    buyer, seller = people
    trade_id = open_trade(api, buyer, seller)
    assert act(api, buyer, trade_id, "pay", key="p", **PP).status_code == 200
    with app.app_context():
        db.session.execute(text("UPDATE trades SET status = 'WAIT_BUYER_CONFIRM_GOODS', carrier = 'SF',"
                                " tracking_number = 'X1' WHERE id = :t"), {"t": trade_id})
        db.session.commit()
    broken = app.test_cli_runner().invoke(args=["escrow", "verify", trade_id])
    assert broken.exit_code == 1, broken.output
    assert ("the trade's status is WAIT_BUYER_CONFIRM_GOODS but its entry 2 left it WAIT_SELLER_SEND_GOODS"
            in broken.output), broken.output


@pytest.mark.parametrize(
    "body",
    [{"amount": 0, "title": "x"}, {"amount": -1, "title": "x"}, {"amount": 1.5, "title": "x"},
     {"amount": 100, "title": ""}, {"amount": 100, "title": "x", "shipping_fee": -1},
     {"amount": 100, "title": "x", "status": "TRADE_FINISHED"}],
)
def test_bad_trade_input(api, people, body):
    buyer, seller = people
    response = api.client.post("/api/v1/trades", headers=buyer["headers"],
                               json={"seller_phone": seller["phone"], **body})
    assert (response.status_code, response.json["code"]) == (422, "validation_failed")


def test_opening_a_trade_with_an_idempotency_key_can_be_retried(api, people):
    buyer, seller = people
    body = {"seller_phone": seller["phone"], "title": "retry me", "amount": 100}
    headers = {**buyer["headers"], "Idempotency-Key": "open-1"}
    first = api.client.post("/api/v1/trades", headers=headers, json=body)
    again = api.client.post("/api/v1/trades", headers=headers, json=body)
    assert first.status_code == again.status_code == 201
    assert first.json["id"] == again.json["id"] and again.headers["Idempotent-Replayed"] == "true"
    listed = api.client.get("/api/v1/trades?role=buyer", headers=buyer["headers"]).json["data"]
    assert [t["id"] for t in listed] == [first.json["id"]]
    other = api.client.post("/api/v1/trades", headers=headers, json={**body, "amount": 200})
    assert (other.status_code, other.json["code"]) == (422, "idempotency_key_reused")


def test_a_trade_retried_with_the_sellers_number_spelt_another_way_replays(api, people):
    """Found by an audit: the fingerprint held the number as typed, so a retry with spaces in it was refused as
    another request (as transfers' payees were)."""
    buyer, seller = people
    body = {"seller_phone": seller["phone"], "title": "retry me", "amount": 100}
    headers = {**buyer["headers"], "Idempotency-Key": "open-1"}
    first = api.client.post("/api/v1/trades", headers=headers, json=body)
    phone = seller["phone"]
    spaced = f"{phone[:2]} {phone[2:5]} {phone[5:8]} {phone[8:]}"
    again = api.client.post("/api/v1/trades", headers=headers, json={**body, "seller_phone": spaced})
    assert first.status_code == again.status_code == 201
    assert again.json == first.json and again.headers["Idempotent-Replayed"] == "true"


def test_a_trade_is_read_with_all_its_refunds_in_one_statement(api, app, people):
    buyer, seller = people
    trade_id = paid_and_shipped(api, buyer, seller)
    first = act(api, buyer, trade_id, "refunds", amount=5000, reason="scratched").json
    assert act(api, seller, trade_id, f"refunds/{first['id']}/agree", **PP).status_code == 200
    second = act(api, buyer, trade_id, "refunds", amount=3000, reason="and dented").json
    with selects_sent(app) as selects:
        body = trade(api, seller, trade_id)
    assert [(r["id"], r["amount"], r["status"]) for r in body["refunds"]] == [
        (first["id"], 5000, "REFUND_SUCCESS"), (second["id"], 3000, "WAIT_SELLER_AGREE")]
    assert len(selects) == 1  # the caller's authentication, joined to the trade joined to its refunds
    stranger = api.register()
    assert api.client.get(f"/api/v1/trades/{trade_id}", headers=stranger["headers"]).status_code == 404


def test_a_partys_contact_is_read_afresh_by_each_transaction(api, app, people, clock):
    """The contacts read with a locked trade serve only that transaction: a buyer whose number changed after the
    trade shipped gets the sweeper's reminder at the new number, even in the session that shipped it (the
    sweeper runs many trades in one session, and locks them without reading contacts)."""
    from notifications.models import Alert
    from security.models import User
    from wallet import trades

    buyer, seller = people
    trade_id = open_trade(api, buyer, seller)
    with app.app_context():
        buyer_id = db.session.scalars(select(User.id).where(User.phone == buyer["phone"])).one()
        seller_id = db.session.scalars(select(User.id).where(User.phone == seller["phone"])).one()
        run_in_transaction(lambda: trades.pay(buyer_id, trade_id))
        trades.ship(seller_id, trade_id, "SF", "SF1")
        db.session.execute(update(User).where(User.id == buyer_id).values(phone="+12025550199"))
        db.session.commit()
        clock.advance(days=7)
        trades.sweep()
        dispatcher.expand()
        told = db.session.scalars(select(Alert.to_phone).where(Alert.event == "confirm_deadline_reminder")).all()
    assert told == ["+12025550199"]


def test_a_refund_step_takes_an_optional_idempotency_key_and_replays_under_it(api, app, people):
    buyer, seller = people
    trade_id = paid_and_shipped(api, buyer, seller)
    rid = act(api, buyer, trade_id, "refunds", amount=20900, reason="broken", return_goods=True).json["id"]
    first = act(api, seller, trade_id, f"refunds/{rid}/agree", key="agree-1", **PP)
    again = act(api, seller, trade_id, f"refunds/{rid}/agree", key="agree-1", **PP)
    assert (first.status_code, first.json["status"]) == (200, "WAIT_BUYER_RETURN_GOODS")
    assert again.json == first.json and again.headers["Idempotent-Replayed"] == "true"
    repeated = act(api, seller, trade_id, f"refunds/{rid}/agree", **PP)  # no key: the state refuses a repeat
    assert (repeated.status_code, repeated.json["code"]) == (409, "illegal_refund_transition")
    act(api, buyer, trade_id, f"refunds/{rid}/return", carrier="EMS", tracking_number="EMS99")
    bad_key = act(api, seller, trade_id, f"refunds/{rid}/receive-return", key="not a key!", **PP)
    assert (bad_key.status_code, bad_key.json["code"]) == (422, "validation_failed")
    received = act(api, seller, trade_id, f"refunds/{rid}/receive-return", key="received-1", **PP)
    replay = act(api, seller, trade_id, f"refunds/{rid}/receive-return", key="received-1", **PP)
    assert (received.status_code, received.json["status"]) == (200, "REFUND_SUCCESS")
    assert replay.json == received.json and replay.headers["Idempotent-Replayed"] == "true"
    assert api.balance(buyer) == 50000  # refunded once
    assert trade(api, buyer, trade_id)["refunded_amount"] == 20900
    books_clean(app)


def test_the_openapi_document_marks_the_refund_steps_key_optional(api):
    paths = api.client.get("/api/v1/openapi.json").json["paths"]

    def key_header(path):
        [header] = [p for p in paths[path]["post"]["parameters"] if p["name"] == "Idempotency-Key"]
        return header["required"]

    assert key_header("/api/v1/trades/{trade_id}/refunds/{refund_id}/agree") is False
    assert key_header("/api/v1/trades/{trade_id}/refunds/{refund_id}/receive-return") is False
    assert key_header("/api/v1/trades/{trade_id}/confirm") is True


def test_refund_and_dispute_amounts_come_with_their_currency(api, app, people):
    """DESIGN 3: "The API takes and returns ``{"amount": 1999, "currency": "CNY"}``." A refund request refused a
    ``currency`` beside its amount (422, unknown field), and refunds and disputes answered amounts without one (design
    audit). Trades are opened in CNY, so another currency is refused as any would be."""
    buyer, seller = people
    staff = grant_staff(api, app)
    trade_id = paid_and_shipped(api, buyer, seller)
    other = act(api, buyer, trade_id, "refunds", amount=20900, currency="USD", reason="broken")
    assert (other.status_code, other.json["code"]) == (422, "validation_failed")
    asked = act(api, buyer, trade_id, "refunds", amount=20900, currency="CNY", reason="broken")
    assert asked.status_code == 201, asked.json
    assert (asked.json["amount"], asked.json["currency"]) == (20900, "CNY")
    refused = act(api, seller, trade_id, f"refunds/{asked.json['id']}/refuse", reason="it was fine")
    assert refused.json["currency"] == "CNY"
    assert [r["currency"] for r in trade(api, buyer, trade_id)["refunds"]] == ["CNY"]
    listed = api.client.get("/api/v1/trades", headers=buyer["headers"]).json["data"]
    assert [r["currency"] for t in listed if t["id"] == trade_id for r in t["refunds"]] == ["CNY"]
    dispute = act(api, buyer, trade_id, "disputes", reason="seller refuses")
    assert (dispute.status_code, dispute.json["currency"]) == (201, "CNY")
    pending = api.client.get("/api/v1/admin/disputes", headers=staff["headers"]).json["data"]
    assert [(d["id"], d["currency"]) for d in pending] == [(dispute.json["id"], "CNY")]
    decided = api.client.post(f"/api/v1/admin/disputes/{dispute.json['id']}/decide", headers=staff["headers"],
                              json={"outcome": "split", "refund_amount": 8000, "currency": "CNY", "reason": "half"})
    assert decided.status_code == 200, decided.json
    assert (decided.json["refund_amount"], decided.json["currency"]) == (8000, "CNY")
    books_clean(app)


def test_a_second_refund_is_refused_while_one_is_open(api, people):
    """One refund at a time per trade: another is asked for only once the open one is settled or withdrawn."""
    buyer, seller = people
    trade_id = paid_and_shipped(api, buyer, seller)
    first = act(api, buyer, trade_id, "refunds", amount=5000, reason="scratched")
    assert first.status_code in (200, 201), first.json
    before = trade(api, buyer, trade_id)
    second = act(api, buyer, trade_id, "refunds", amount=3000, reason="also dented")
    assert (second.status_code, second.json["code"]) == (409, "refund_in_progress"), second.json
    unchanged(api, buyer, trade_id, before)
