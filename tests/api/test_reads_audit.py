"""What a client reads back: lists and their cursors, the statement, the trade view, the evidence bundle, ratings.

Each test states what a mobile client of a payment platform relies on when it reads; the evidence bundle's hash
chain is checked with a verifier written here from the documented algorithm alone (``wallet/timeline.py``'s
docstring), not with our code, as a client or an arbitrator would check it.
"""

import hashlib
import json
import threading

from sqlalchemy import event
from sqlalchemy.engine import Engine

from core import sql
from core.db import db
from tests.api.escrow_helpers import PP, act, paid_and_shipped, trade
from wallet import trades

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
    reader, raced = threading.get_ident(), []

    def add_evidence_meanwhile() -> None:
        with app.app_context():
            trades.add_evidence(seller["user"]["id"], trade_id, "shipped on time", [])
            db.session.remove()

    def before_the_timeline_is_read(statement: str) -> None:
        if threading.get_ident() == reader and not raced and "trade_timeline" in statement:
            raced.append(statement)
            writer = threading.Thread(target=add_evidence_meanwhile)
            writer.start()
            writer.join()

    def orm_statement(_conn, _cursor, statement, *_args):
        before_the_timeline_is_read(statement)

    sql.listen(before_the_timeline_is_read)
    event.listen(Engine, "before_cursor_execute", orm_statement)
    try:
        body = bundle(api, buyer, trade_id)
    finally:
        event.remove(Engine, "before_cursor_execute", orm_statement)
        sql.unlisten(before_the_timeline_is_read)
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
