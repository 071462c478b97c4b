"""Evidence, the hash-chained timeline and its verifier, ratings and disputes: what the evidence audit found."""

import threading

from sqlalchemy import event
from sqlalchemy.engine import Engine

from core import sql
from core.db import db
from tests.api.escrow_helpers import paid_and_shipped, verify_cli
from wallet import trades


def test_escrow_verify_run_while_evidence_is_added_reports_no_tampering(api, app, people):
    """An operator runs ``flask escrow verify`` on a live trade: evidence committed by a party between the verifier's
    read of the trade's head and its read of the entries must not be reported as entries forged onto the chain (exit
    1, "BROKEN"), as the evidence bundle already reads both as one picture."""
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
        code, output = verify_cli(app, trade_id)
    finally:
        event.remove(Engine, "before_cursor_execute", orm_statement)
        sql.unlisten(before_the_timeline_is_read)
    assert raced
    assert code == 0, output
    assert "intact:" in output
