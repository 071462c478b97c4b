"""What a payment into escrow and a confirmation send to the database after the password check: the seller's
verification is read with the trade's lock, and the trade's UPDATE goes with the stored answer of the
Idempotency-Key (on PostgreSQL in one statement, with the timeline entries and alerts; on SQLite just before it).
Each round trip after the argon2 check is time the trade waits (bench/escrow.py)."""

from core.db import is_postgres
from tests.api.escrow_helpers import PP, act, books_clean, open_trade, trade
from tests.statements import statements_sent


def _kinds(sent):
    """The statements as a short word each, in order (reads of the password check and the key left out)."""
    words = []
    for statement in sent:
        if statement.startswith("SELECT t.id") and "JOIN users s ON s.id = t.seller_id" in statement:
            words.append("lock trade+seller" if "seller_verified" in statement else "lock trade")
        elif "verified" in statement and statement.startswith("SELECT (EXISTS"):
            words.append("seller check")
        elif statement.startswith("WITH u AS (UPDATE trades") and statement.endswith("WHERE id = %(record_id)s"):
            words.append("trade+answer")
        elif statement.startswith(("UPDATE trades", "WITH w0 AS (INSERT INTO trade_timeline")) and \
                "UPDATE trades" in statement and "idempotency_keys" not in statement:
            words.append("trade")
        elif statement.startswith("UPDATE idempotency_keys"):
            words.append("answer")
    return words


def test_paying_and_confirming_send_the_trade_with_the_stored_answer(api, app):
    buyer, seller = api.verified(locale="en"), api.verified(locale="en")
    assert api.money("/api/v1/topups", buyer, amount=50000, bank_card_id=buyer["card_id"]).status_code == 201
    trade_id = open_trade(api, buyer, seller)
    with app.app_context():
        postgres = is_postgres()

    with statements_sent(app) as sent:
        paid = act(api, buyer, trade_id, "pay", key="pay-1", **PP)
    assert paid.status_code == 200 and paid.json["status"] == "WAIT_SELLER_SEND_GOODS"
    pay = _kinds(sent)
    assert act(api, seller, trade_id, "ship", carrier="SF", tracking_number="SF1").status_code == 200
    with statements_sent(app) as sent:
        confirmed = act(api, buyer, trade_id, "confirm", key="confirm-1", **PP)
    assert confirmed.status_code == 200 and confirmed.json["status"] == "TRADE_FINISHED"
    confirm = _kinds(sent)

    if postgres:
        assert pay == ["lock trade+seller", "trade+answer"]
        assert confirm == ["lock trade", "trade+answer"]
    else:
        assert pay == ["lock trade+seller", "trade", "answer"]
        assert confirm == ["lock trade", "trade", "answer"]
    # What was written is what the answers said, and replays answer the same.
    assert trade(api, buyer, trade_id)["status"] == "TRADE_FINISHED"
    again = act(api, buyer, trade_id, "confirm", key="confirm-1", **PP)
    assert again.json == confirmed.json and again.headers["Idempotent-Replayed"] == "true"
    books_clean(app)
