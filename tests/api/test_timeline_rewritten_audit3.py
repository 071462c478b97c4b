"""A timeline rewritten whole, its head on the trade moved with it (the chain hash is unkeyed SHA-256, so anyone with
the database owner's rights can), with an entry whose stored data is not what the code writes: not JSON, not an
object, a money entry without its amount or with a text for one, a state entry without the state it left the trade in.
Found by the followups audit: `flask escrow verify` ended in a traceback and the evidence bundle and the timeline in a
500 (``json.loads`` or ``data["amount"]`` raised); each must name the entry and say the trade is not intact."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from core.db import db
from tests.api.escrow_helpers import paid_and_shipped
from tests.api.test_escrow_rules_http import people  # noqa: F401 - fixture
from tests.db_triggers import trigger_off
from wallet.timeline import GENESIS, entry_hash


def rewrite(app, trade_id: str, seq: int, data: str) -> None:
    """Entry ``seq`` of the trade's timeline gets ``data``; every hash from it on, and the trade's head, are made
    again, so the chain checks out link by link."""
    with app.app_context(), trigger_off("trade_timeline_append_only", "trade_timeline"):
        rows = db.session.execute(text("SELECT seq, at, actor, kind, data FROM trade_timeline WHERE trade_id = :t"
                                       " ORDER BY seq"), {"t": trade_id}).all()
        prev = GENESIS
        for row in rows:
            stored = data if row.seq == seq else row.data
            digest = entry_hash(prev, row.seq, row.at, row.actor, row.kind, stored)
            db.session.execute(text("UPDATE trade_timeline SET data = :d, prev_hash = :p, hash = :h"
                                    " WHERE trade_id = :t AND seq = :s"),
                               {"d": stored, "p": prev, "h": digest, "t": trade_id, "s": row.seq})
            prev = digest
        db.session.execute(text("UPDATE trades SET timeline_hash = :h WHERE id = :t"), {"h": prev, "t": trade_id})
        db.session.commit()


# paid_and_shipped's timeline: 1 open (state), 2 pay (state), 3 pay (money), 4 ship (state)
@pytest.mark.parametrize(("seq", "data"), [
    (3, "not json"),
    (3, '{"movement":"pay"}'),
    (3, '{"amount":"20900","movement":"pay"}'),
    (3, '{"amount":20900}'),
    (3, "[20900]"),
    (1, "not json"),
    (1, '"an opening"'),
    (4, '{"action":"ship"}'),
    (4, "[]"),
], ids=["money not JSON", "money without amount", "money amount a text", "money without movement",
        "money an array", "opening not JSON", "opening a string", "state without after", "state an array"])
def test_an_entry_rewritten_with_data_the_code_never_writes_is_named(api, app, people, seq, data):  # noqa: F811
    buyer, seller = people
    trade_id = paid_and_shipped(api, buyer, seller)
    rewrite(app, trade_id, seq, data)
    result = app.test_cli_runner().invoke(args=["escrow", "verify", trade_id])
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"the verifier crashed with {result.exception!r}")
    assert result.exit_code == 1 and f"BROKEN at entry {seq}" in result.output, result.output
    bundle = api.client.get(f"/api/v1/trades/{trade_id}/evidence-bundle", headers=buyer["headers"])
    assert bundle.status_code == 200, bundle.get_data(as_text=True)
    assert (bundle.json["intact"], bundle.json["broken_at"]) == (False, seq), bundle.json
    assert f"entry {seq}" in bundle.json["problem"]
    page = api.client.get(f"/api/v1/trades/{trade_id}/timeline", headers=buyer["headers"])
    assert page.status_code == 200, page.get_data(as_text=True)


def test_an_entry_rewritten_as_json_spelt_otherwise_is_named(api, app, people):  # noqa: F811
    """The bundle's chain is checked over the canonical JSON of each entry's data (keys sorted, no spaces), so a stored
    text spelt otherwise checks out for a client only if ours says it does not either: both must say broken."""
    buyer, seller = people
    trade_id = paid_and_shipped(api, buyer, seller)
    with app.app_context():
        stored = db.session.scalar(text("SELECT data FROM trade_timeline WHERE trade_id = :t AND seq = 3"),
                                   {"t": trade_id})
    rewrite(app, trade_id, 3, stored.replace(",", ", "))
    result = app.test_cli_runner().invoke(args=["escrow", "verify", trade_id])
    assert result.exit_code == 1 and "BROKEN at entry 3" in result.output, result.output
