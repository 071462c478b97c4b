"""What a client reads back: lists and their cursors, the statement, the trade view, the evidence bundle, ratings.

Each test states what a mobile client of a payment platform relies on when it reads; the evidence bundle's hash
chain is checked with a verifier written here from the documented algorithm alone (``wallet/timeline.py``'s
docstring), not with our code, as a client or an arbitrator would check it.
"""

import hashlib
import json
from datetime import UTC, datetime, timedelta

from tests.api.escrow_helpers import (
    PP,
    act,
    evidence_added_as_the_timeline_is_read,
    open_trade,
    paid_and_shipped,
    trade,
)

GENESIS = "0" * 64


def client_verifies(entries: list[dict], head_hash: str) -> bool:
    """A client's own check of a bundle: ``hash_n = SHA-256(hash_{n-1} || canonical JSON of {seq, at, actor, kind,
    data})`` with ``hash_0`` 64 zeros; canonical = keys sorted, no spaces, UTF-8 (not \\u-escaped)."""
    prev = GENESIS
    for n, entry in enumerate(entries, start=1):
        content = {key: entry[key] for key in ("seq", "at", "actor", "kind", "data")}
        text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        digest = hashlib.sha256((prev + text).encode("utf-8")).hexdigest()
        if entry["seq"] != n or entry["prev_hash"] != prev or entry["hash"] != digest:
            return False
        prev = digest
    return prev == head_hash


def bundle(api, who, trade_id):
    response = api.client.get(f"/api/v1/trades/{trade_id}/evidence-bundle", headers=who["headers"])
    assert response.status_code == 200, response.json
    return response.json


# --- the evidence bundle ----------------------------------------------------------------------------------


def test_a_client_verifies_the_evidence_bundle_without_our_code(api, app, people):
    buyer, seller = people
    trade_id = paid_and_shipped(api, buyer, seller)
    refund = act(api, buyer, trade_id, "refunds", amount=5000, reason="屏幕有划痕 🙁 \"quoted\"\n").json
    act(api, seller, trade_id, f"refunds/{refund['id']}/refuse", reason="不同意")
    added = act(api, buyer, trade_id, "evidence", text="照片如下 \u2028 tab\t end", attachments=[
        {"name": "划痕.jpg", "sha256": "a" * 64, "url": "https://example.invalid/1.jpg"}])
    assert added.status_code == 201, added.json
    body = bundle(api, buyer, trade_id)
    assert body["intact"] is True and body["broken_at"] is None
    assert client_verifies(body["timeline"], body["head_hash"])
    assert body["timeline"][-1]["kind"] == "evidence" and body["timeline"][-1]["seq"] == added.json["seq"]
    # and one changed character anywhere is caught by the same check
    money = next(entry for entry in body["timeline"] if entry["kind"] == "money")
    money["data"]["amount"] += 1
    assert not client_verifies(body["timeline"], body["head_hash"])


def test_an_evidence_bundle_read_while_evidence_is_added_is_one_consistent_picture(api, app, people):
    """Evidence committed by another request just before the bundle reads the timeline must not make the bundle
    report a tampered chain (``intact`` false), nor hand out a head hash its own timeline does not end in: the
    trade's head and its entries are one picture."""
    buyer, seller = people
    trade_id = paid_and_shipped(api, buyer, seller)
    with evidence_added_as_the_timeline_is_read(app, seller, trade_id) as raced:
        body = bundle(api, buyer, trade_id)
    assert raced
    assert (body["intact"], body["broken_at"]) == (True, None), body
    assert client_verifies(body["timeline"], body["head_hash"])


# --- the trade view ----------------------------------------------------------------------------------------


def test_every_answer_that_shows_a_trade_shows_its_refunds(api, app, people):
    """A trade's answer has a ``refunds`` field; a client that reads an empty list there concludes that there are
    none. The list of trades and the answers of the steps must show the same refunds as GET /trades/{id}."""
    buyer, seller = people
    trade_id = paid_and_shipped(api, buyer, seller)
    refund = act(api, buyer, trade_id, "refunds", amount=5000, reason="scratched").json
    act(api, seller, trade_id, f"refunds/{refund['id']}/refuse", reason="it was fine")
    act(api, buyer, trade_id, f"refunds/{refund['id']}/withdraw")
    shown = trade(api, buyer, trade_id)["refunds"]
    assert [(r["id"], r["status"]) for r in shown] == [(refund["id"], "REFUND_CLOSED")]
    listed = api.client.get("/api/v1/trades", headers=buyer["headers"]).json["data"]
    assert [t["refunds"] for t in listed if t["id"] == trade_id] == [shown]
    confirmed = act(api, buyer, trade_id, "confirm", key="c", **PP)
    assert confirmed.status_code == 200 and confirmed.json["status"] == "TRADE_FINISHED"
    assert confirmed.json["refunds"] == shown
    assert confirmed.json == trade(api, buyer, trade_id)


# --- evidence ----------------------------------------------------------------------------------------------


def test_evidence_with_a_lone_surrogate_is_refused_as_input_not_a_server_error(api, people):
    """JSON may spell a lone UTF-16 surrogate (``"\\ud800"``); it is no character and cannot be stored or hashed
    as UTF-8. It is bad input: 4xx with a code, never a 500."""
    buyer, seller = people
    trade_id = paid_and_shipped(api, buyer, seller)
    for body in ('{"text": "\\ud800 photo"}',
                 '{"attachments": [{"name": "\\udfff.jpg", "sha256": "' + "a" * 64 + '"}]}'):
        response = api.client.post(f"/api/v1/trades/{trade_id}/evidence", headers=buyer["headers"], data=body,
                                   content_type="application/json")
        assert 400 <= response.status_code < 500, (body, response.status_code)
    assert bundle(api, buyer, trade_id)["intact"] is True


def test_evidence_limits_and_attachment_hashes(api, people):
    buyer, seller = people
    trade_id = paid_and_shipped(api, buyer, seller)
    for bad in ({"text": "x" * 4001}, {"attachments": [{"name": "a.jpg", "sha256": "A" * 64}]},
                {"attachments": [{"name": "a.jpg", "sha256": "a" * 63}]},
                {"attachments": [{"name": "a.jpg", "sha256": "g" * 64}]},
                {"attachments": [{"name": "a.jpg", "sha256": "a" * 64}] * 21}):
        response = act(api, buyer, trade_id, "evidence", **bad)
        assert (response.status_code, response.json["code"]) == (422, "validation_failed"), bad
    assert act(api, buyer, trade_id, "evidence", text="长" * 4000).status_code == 201


# --- lists and cursors -------------------------------------------------------------------------------------


def pages(api, who, path, limit, key="id"):
    """Every page of a list, followed by its cursors: the items, and each page's (size, has_more, cursor)."""
    items, shape, cursor = [], [], None
    while True:
        separator = "&" if "?" in path else "?"
        query = f"{path}{separator}limit={limit}" + (f"&starting_after={cursor}" if cursor else "")
        page = api.client.get(query, headers=who["headers"]).json
        items += page["data"]
        shape.append((len(page["data"]), page["has_more"], page["next_starting_after"]))
        if not page["has_more"]:
            return items, shape
        cursor = page["next_starting_after"]
        assert cursor == str(page["data"][-1][key])


def test_trade_pages_neither_skip_nor_repeat_while_new_trades_arrive(api, people):
    buyer, seller = people
    opened = [open_trade(api, buyer, seller, amount=100 + n) for n in range(6)]
    first = api.client.get("/api/v1/trades?limit=3", headers=buyer["headers"]).json
    newer = [open_trade(api, buyer, seller, amount=200 + n) for n in range(2)]
    rest = api.client.get(f"/api/v1/trades?limit=3&starting_after={first['next_starting_after']}",
                          headers=buyer["headers"]).json
    assert [t["id"] for t in first["data"] + rest["data"]] == opened[::-1]
    assert (first["has_more"], rest["has_more"], rest["next_starting_after"]) == (True, False, None)
    # a list of exactly ``limit`` items is one page that says there is no more
    items, shape = pages(api, buyer, "/api/v1/trades?role=buyer", 8)
    assert [t["id"] for t in items] == (opened + newer)[::-1] and shape == [(8, False, None)]
    items, shape = pages(api, seller, "/api/v1/trades?role=seller", 4)
    assert [t["id"] for t in items] == (opened + newer)[::-1] and shape == [(4, True, items[3]["id"]),
                                                                            (4, False, None)]


def test_a_cursor_from_someone_else_shows_nothing_of_theirs(api, people):
    buyer, seller = people
    mine = open_trade(api, buyer, seller)
    stranger = api.verified(real_name="赵六")
    theirs = open_trade(api, stranger, seller)  # newer than mine
    for cursor in (theirs, "trd_" + "z" * 26):
        page = api.client.get(f"/api/v1/trades?starting_after={cursor}", headers=buyer["headers"])
        assert page.status_code == 200 and [t["id"] for t in page.json["data"]] == [mine], cursor
    statement = api.client.get("/api/v1/wallet/transactions?starting_after=99999999999", headers=buyer["headers"])
    assert {line["counterparty"] for line in statement.json["data"]} == {"bank ICBC"}


def test_alert_pages_neither_skip_nor_repeat(api, inbox):
    alice = api.verified()
    for _ in range(3):
        api.money("/api/v1/topups", alice, amount=100, bank_card_id=alice["card_id"])
    every = api.client.get("/api/v1/me/alerts?limit=100", headers=alice["headers"]).json["data"]
    items, shape = pages(api, alice, "/api/v1/me/alerts", 2)
    assert [a["id"] for a in items] == [a["id"] for a in every] and len(set(a["id"] for a in items)) == len(items)
    assert shape[-1][1:] == (False, None)


# --- the statement -----------------------------------------------------------------------------------------


def test_every_statement_line_adds_up_to_the_next_and_to_the_wallet(api, app, clock, people):
    """Top-up, payments both ways, escrow pay, partial refund, release, a withdrawal paid out and one that failed:
    each line's balance_after is the line before's plus its amount, each transfer shows once, and the newest
    balance is what GET /wallet says."""
    from tests.api.test_funds import drain_withdrawals

    buyer, seller = people
    friend = api.verified(real_name="赵六", card_ending="8888")
    api.money("/api/v1/transfers", buyer, amount=1234, to_phone=friend["phone"])
    api.money("/api/v1/transfers", friend, amount=234, to_phone=buyer["phone"])
    trade_id = paid_and_shipped(api, buyer, seller, amount=30000, shipping_fee=500)
    refund = act(api, buyer, trade_id, "refunds", amount=10000, reason="half broken").json
    act(api, seller, trade_id, f"refunds/{refund['id']}/agree", **PP)
    act(api, buyer, trade_id, "confirm", key="c", **PP)
    api.money("/api/v1/withdrawals", buyer, amount=5000, bank_card_id=buyer["card_id"])
    api.money("/api/v1/withdrawals", friend, amount=500, bank_card_id=friend["card_id"])  # its payout fails
    drain_withdrawals(app, clock)
    for who in (buyer, seller, friend):
        api.relogin(who)
        lines, _shape = pages(api, who, "/api/v1/wallet/transactions", 3)
        transfers = [line["transfer_id"] for line in lines]
        assert len(transfers) == len(set(transfers))
        running = 0
        for line in reversed(lines):
            running += line["amount"]
            assert line["balance_after"] == running, line
        wallet = api.client.get("/api/v1/wallet", headers=who["headers"]).json
        assert (wallet["available"], wallet["pending"]) == (running, 0)
    kinds = [line["kind"] for line in pages(api, buyer, "/api/v1/wallet/transactions", 50)[0]]
    assert kinds == ["withdrawal", "refund", "escrow_pay", "payment", "payment", "topup"]


def test_statement_days_are_china_days_to_the_millisecond(api, clock):
    alice, bob = api.verified(), api.register()
    api.money("/api/v1/topups", alice, amount=1000, bank_card_id=alice["card_id"])  # 16:00 in China, 15 January
    clock.set(datetime(2026, 1, 15, 15, 59, 59, 999000, tzinfo=UTC))  # 23:59:59.999 in China
    api.relogin(alice)
    api.money("/api/v1/transfers", alice, amount=1, to_phone=bob["phone"])
    clock.set(datetime(2026, 1, 15, 16, 0, tzinfo=UTC))  # midnight: 16 January in China
    api.money("/api/v1/transfers", alice, amount=2, to_phone=bob["phone"])

    def amounts(query):
        response = api.client.get(f"/api/v1/wallet/transactions?{query}", headers=alice["headers"])
        assert response.status_code == 200, response.json
        return [line["amount"] for line in response.json["data"]]

    assert amounts("from=2026-01-15&to=2026-01-15") == [-1, 1000]
    assert amounts("from=2026-01-16&to=2026-01-16") == [-2]
    assert amounts("from=2026-01-16") == [-2] and amounts("to=2026-01-15") == [-1, 1000]
    assert amounts("from=2026-01-17") == []
    # Swapped days are refused (test_statement_range_audit3), not an empty statement that reads as "no money moved".
    swapped = api.client.get("/api/v1/wallet/transactions?from=2026-01-16&to=2026-01-15", headers=alice["headers"])
    assert (swapped.status_code, swapped.json["code"]) == (422, "validation_failed")
    csv_lines = api.client.get("/api/v1/wallet/transactions?format=csv&from=2026-01-15&to=2026-01-15",
                               headers=alice["headers"]).get_data(as_text=True).strip().splitlines()
    assert len(csv_lines) == 3


def test_devices_and_bank_cards_are_cursor_paginated_like_every_list(api, inbox):
    """DESIGN 7: "Lists use cursor pagination (limit, starting_after, has_more)"."""
    from tests.factories_ids import make_card_number

    alice = api.verified()
    for device in ("tablet", "laptop"):
        logged_in = api.login(alice["phone"], device_id=device, sms_code=api.code(alice["phone"], "login"))
        assert logged_in.status_code == 201, logged_in.json
    for _ in range(2):
        bound = api.client.post("/api/v1/me/bank-cards", headers=alice["headers"], json={
            "card_number": make_card_number(), "holder_name": "张三", "bank_code": "CCB",
            "payment_password": "135790"})
        assert bound.status_code == 201, bound.json
    for path in ("/api/v1/devices", "/api/v1/me/bank-cards"):
        every = api.client.get(path, headers=alice["headers"]).json
        assert len(every["data"]) == 3 and every["has_more"] is False and every["next_starting_after"] is None
        items, shape = pages(api, alice, path, 2)
        assert items == every["data"] and shape == [(2, True, items[1]["id"]), (1, False, None)], path
        assert api.client.get(f"{path}?limit=0", headers=alice["headers"]).status_code == 422


def test_the_trade_view_agrees_with_the_books_in_every_state(api, app, people):
    """What is held in the trade's escrow account is always paid - refunded - released, and what the seller's
    statement shows as released is released - fee."""
    from tests.api.escrow_helpers import escrow_balance, grant_staff

    buyer, seller = people
    assert app.test_cli_runner().invoke(args=["users", "set-fee", seller["phone"], "150"]).exit_code == 0
    staff = grant_staff(api, app)

    def agrees(trade_id, status):
        view = trade(api, buyer, trade_id)
        assert view["status"] == status
        assert escrow_balance(app, trade_id) == view["paid_amount"] - view["refunded_amount"] - view["released_amount"]
        assert trade(api, seller, trade_id) == {**view, "role": "seller"}
        return view

    trade_id = open_trade(api, buyer, seller, amount=20000, shipping_fee=1000)
    agrees(trade_id, "WAIT_BUYER_PAY")
    act(api, buyer, trade_id, "pay", key="p", **PP)
    assert agrees(trade_id, "WAIT_SELLER_SEND_GOODS")["paid_amount"] == 21000
    refund = act(api, buyer, trade_id, "refunds", amount=1000, reason="no gift wrap").json
    act(api, seller, trade_id, f"refunds/{refund['id']}/agree", **PP)
    assert agrees(trade_id, "WAIT_SELLER_SEND_GOODS")["refunded_amount"] == 1000
    act(api, seller, trade_id, "ship", carrier="SF", tracking_number="SF1")
    refund = act(api, buyer, trade_id, "refunds", amount=20000, reason="broken").json
    act(api, seller, trade_id, f"refunds/{refund['id']}/refuse", reason="it was not")
    dispute = act(api, buyer, trade_id, "disputes", reason="seller refuses").json
    view = agrees(trade_id, "WAIT_BUYER_CONFIRM_GOODS")
    assert view["deadlines"]["paused"] is True and view["refunds"][-1]["disputed"] is True
    assert view["refunds"][-1]["deadline"] is None  # the platform decides now, not a clock
    decided = api.client.post(f"/api/v1/admin/disputes/{dispute['id']}/decide", headers=staff["headers"],
                              json={"outcome": "split", "refund_amount": 6000, "reason": "half"})
    assert decided.status_code == 200, decided.json
    view = agrees(trade_id, "TRADE_FINISHED")
    assert (view["refunded_amount"], view["released_amount"], view["fee_amount"]) == (7000, 14000, 210)
    rate_by = datetime.fromisoformat(view["finished_at"].replace("Z", "+00:00")) + timedelta(days=15)
    assert view["deadlines"] == {"pay_by": None, "confirm_by": None, "remind_at": None, "paused": False,
                                 "paused_since": None, "rate_by": rate_by.isoformat().replace("+00:00", "Z")}
    released = [line["amount"] for line in api.client.get("/api/v1/wallet/transactions?kind=escrow_release",
                                                          headers=seller["headers"]).json["data"]]
    assert released == [view["released_amount"] - view["fee_amount"]]
    # a trade the platform finished can be rated, by each side once
    assert act(api, buyer, trade_id, "ratings", score=-1).status_code == 201
    assert act(api, seller, trade_id, "ratings", score=0).status_code == 201


def test_reputation_sums_counts_and_positive_rate_after_many_ratings(api, app, clock, people):
    buyer, seller = people
    scores = [1, 1, 0, -1, 1, -1, 0]
    for n, score in enumerate(scores):
        trade_id = paid_and_shipped(api, buyer, seller, amount=100 + n, shipping_fee=0)
        assert act(api, buyer, trade_id, "confirm", key=f"c{n}", **PP).status_code == 200
        assert act(api, buyer, trade_id, "ratings", score=score).status_code == 201
        assert act(api, seller, trade_id, "ratings", score=1).status_code == 201
    late = paid_and_shipped(api, buyer, seller, amount=99, shipping_fee=0)
    act(api, buyer, late, "confirm", key="late", **PP)
    clock.advance(days=15)  # the last moment of the window
    api.relogin(buyer)
    api.relogin(seller)
    assert act(api, buyer, late, "ratings", score=-1).status_code == 201
    rep = api.client.get(f"/api/v1/users/{seller['user']['id']}/reputation", headers=buyer["headers"]).json
    assert rep["as_seller"] == {"credit_score": sum(scores) - 1, "positive_rate": round(3 / 8, 4), "count": 8}
    assert rep["as_buyer"] == {"credit_score": 0, "positive_rate": None, "count": 0}
    rep = api.client.get(f"/api/v1/users/{buyer['user']['id']}/reputation", headers=seller["headers"]).json
    assert rep["as_buyer"] == {"credit_score": 7, "positive_rate": 1.0, "count": 7}
    fresh = api.register()
    rep = api.client.get(f"/api/v1/users/{fresh['user']['id']}/reputation", headers=buyer["headers"]).json
    assert rep["as_seller"] == {"credit_score": 0, "positive_rate": None, "count": 0}
    assert api.client.get("/api/v1/users/usr_nobody/reputation", headers=buyer["headers"]).status_code == 404


def test_a_trades_timeline_is_cursor_paginated_oldest_first(api, people):
    """The timeline is a list like any other (DESIGN 7); the whole chain, to verify, is the evidence bundle."""
    buyer, seller = people
    trade_id = paid_and_shipped(api, buyer, seller)
    for n in range(3):
        act(api, seller, trade_id, "evidence", text=f"photo {n}")
    everything = bundle(api, buyer, trade_id)["timeline"]
    assert len(everything) == 7
    items, shape = pages(api, buyer, f"/api/v1/trades/{trade_id}/timeline", 3, key="seq")
    assert items == everything
    assert shape == [(3, True, "3"), (3, True, "6"), (1, False, None)]
    beyond = api.client.get(f"/api/v1/trades/{trade_id}/timeline?starting_after=7", headers=buyer["headers"])
    assert (beyond.status_code, beyond.json["data"], beyond.json["has_more"]) == (200, [], False)
    stranger = api.register()
    hidden = api.client.get(f"/api/v1/trades/{trade_id}/timeline?starting_after=1", headers=stranger["headers"])
    assert hidden.status_code == 404
    assert api.client.get(f"/api/v1/trades/{trade_id}/timeline?starting_after=x",
                          headers=buyer["headers"]).status_code == 422


def test_each_party_adds_a_bounded_amount_of_evidence(api, app, people):
    """Every piece of evidence is kept in the trade's timeline and bundle forever (up to 4,000 characters and 20
    attachments each); without a bound one party could grow the bundle staff must read without end. Fifty pieces
    each (``ESCROW_EVIDENCE_PER_PARTY``)."""
    buyer, seller = people
    trade_id = paid_and_shipped(api, buyer, seller)
    for n in range(50):
        assert act(api, buyer, trade_id, "evidence", text=f"photo {n}").status_code == 201
    refused = act(api, buyer, trade_id, "evidence", text="one more")
    assert (refused.status_code, refused.json["code"]) == (409, "evidence_limit_reached")
    assert act(api, seller, trade_id, "evidence", text="my side").status_code == 201
    assert sum(e["kind"] == "evidence" for e in bundle(api, buyer, trade_id)["timeline"]) == 51


def test_a_cursor_that_is_no_id_is_refused_like_the_statements(api, app, people):
    """The statement refuses a cursor that is no line id (422); the other lists took any text and answered a page
    as if it were a position (``zzzz``: the first page again; an empty one: nothing, ``has_more`` false), so a
    client with a broken cursor looped or stopped early without being told."""
    from tests.api.escrow_helpers import grant_staff

    buyer, seller = people
    open_trade(api, buyer, seller)
    staff = grant_staff(api, app)
    for path, who in (("/api/v1/trades", buyer), ("/api/v1/me/alerts", buyer), ("/api/v1/devices", buyer),
                      ("/api/v1/me/bank-cards", buyer), ("/api/v1/admin/disputes", staff),
                      ("/api/v1/wallet/transactions", buyer)):
        for cursor in ("", "zzzz", "trd_' OR 1=1"):
            response = api.client.get(f"{path}?starting_after={cursor}", headers=who["headers"])
            assert (response.status_code, response.json["code"]) == (422, "validation_failed"), (path, cursor)
