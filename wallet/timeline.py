"""A trade's timeline: every state change, money movement, message and piece of evidence, hash-chained.

Entry ``n`` stores ``hash_n = SHA-256(hash_{n-1} || canonical JSON of (seq, at, actor, kind, data))`` with
``hash_0`` = 64 zeros. The trade row keeps the head (``timeline_seq``, ``timeline_hash``) and is locked by
every writer, so appends are serial per trade. An appended entry is written when its transaction commits
(``core.sql.insert_at_commit``), with the trade's new head saved by the use case in the same transaction.
``verify`` recomputes the chain: an edited entry, a removed one or a reordered pair is found and named. (An
attacker who can rewrite the whole chain *and* the head can forge it; exporting the head hash with the evidence
bundle, or anchoring it elsewhere, closes that.)
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from core import clock
from core.db import db
from core.sql import insert_at_commit
from wallet.escrow_models import TimelineEntry

GENESIS = "0" * 64


def canonical(data: dict[str, Any]) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _string(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


def entry_hash(prev_hash: str, seq: int, at: str, actor: str, kind: str, data: str) -> str:
    """SHA-256 of ``prev_hash`` followed by the canonical JSON of the entry. ``data`` is the entry's canonical JSON
    text as stored, and goes in as it is: the envelope is ``canonical({"actor", "at", "data", "kind", "seq"})``
    spelt out in its sorted key order, so a stored text that is not exactly what was hashed does not check out."""
    content = (f'{{"actor":{_string(actor)},"at":{_string(at)},"data":{data},"kind":{_string(kind)},'
               f'"seq":{int(seq)}}}')
    return hashlib.sha256((prev_hash + content).encode()).hexdigest()


_entries = TimelineEntry.__table__


def append(trade: Any, actor: str, kind: str, **data: Any) -> int:
    """Add an entry to ``trade``'s timeline and move the head on ``trade`` to it; returns its sequence number.
    The caller holds the trade row lock and saves ``trade`` in the same transaction."""
    seq = trade.timeline_seq + 1
    at = clock.now().isoformat()
    body = canonical(data)
    digest = entry_hash(trade.timeline_hash, seq, at, actor, kind, body)
    insert_at_commit(_entries, {"trade_id": trade.id, "seq": seq, "at": at, "actor": actor, "kind": kind,
                                "data": body, "prev_hash": trade.timeline_hash, "hash": digest})
    trade.timeline_seq, trade.timeline_hash = seq, digest
    return seq


def entries(trade_id: str) -> list[TimelineEntry]:
    return list(db.session.scalars(select(TimelineEntry).where(TimelineEntry.trade_id == trade_id)
                                   .order_by(TimelineEntry.seq)))


@dataclass(frozen=True)
class Verification:
    intact: bool
    entries: int
    broken_at: int | None = None  # seq of the first entry that does not check out
    problem: str | None = None


def verify(trade: Any, rows: Sequence[Any] | None = None) -> Verification:
    """Recompute the chain of ``trade`` and compare it with the stored hashes and the head on the trade. ``rows``
    are its entries in order when the caller read them with the trade (as of the same moment); else they are read
    now."""
    if rows is None:
        rows = entries(trade.id)
    if not rows:  # every trade's first entry is its opening (found by an audit: a paid trade with none was "intact")
        return Verification(False, 0, 1, "entry 1 is missing: a trade's timeline starts with its opening")
    prev = GENESIS
    datas: list[dict[str, Any]] = []
    for expected_seq, row in enumerate(rows, start=1):
        if row.seq != expected_seq:
            return Verification(False, len(rows), expected_seq, f"entry {expected_seq} is missing")
        if row.prev_hash != prev:
            return Verification(False, len(rows), row.seq, f"entry {row.seq} does not follow entry {row.seq - 1}")
        if entry_hash(prev, row.seq, row.at, row.actor, row.kind, row.data) != row.hash:
            return Verification(False, len(rows), row.seq, f"entry {row.seq} was altered")
        # A chain rewritten whole, head included, checks out link by link whatever text it holds (found by the
        # followups audit: text that was not JSON, or a money entry without its amount, crashed the verifier), and a
        # client checks the canonical JSON of what it reads, so only the text ``append`` writes is taken.
        data = readable(row.data)
        if data is None:
            return Verification(False, len(rows), row.seq, f"entry {row.seq}'s data is not the canonical JSON of an"
                                " object, as every entry's is")
        datas.append(data)
        prev = row.hash
    if len(rows) > trade.timeline_seq:  # well chained, but the trade's head never named them
        first = trade.timeline_seq + 1
        return Verification(False, len(rows), first, f"entries {first} to {len(rows)} were added after the last one"
                            f" the trade records ({trade.timeline_seq})")
    if (trade.timeline_seq, trade.timeline_hash) != (len(rows), prev):
        if len(rows) < trade.timeline_seq:
            return Verification(False, len(rows), len(rows) + 1, f"the newest entries are missing (the trade records"
                                f" {trade.timeline_seq}, the timeline holds {len(rows)})")
        return Verification(False, len(rows), len(rows), f"entry {len(rows)} is not the one the trade records as its"
                            " last")
    disagreement = _trade_disagrees(trade, rows, datas)
    if disagreement is not None:
        seq, problem = disagreement
        return Verification(False, len(rows), seq, problem)
    return Verification(True, len(rows))


# What a trade's row must say, by the entry's word for it: its terms as the opening entry recorded them (entries
# written before the terms were recorded name only some: the rest are not compared), and its money as the sums of
# the chain's money entries (a release's fee is part of what was released).
_TERMS = {"buyer": "buyer_id", "seller": "seller_id", "title": "title", "amount": "amount",
          "shipping_fee": "shipping_fee", "currency": "currency", "fee_bp": "fee_bp",
          "escrow_account": "escrow_account_id"}
_MONEY = {"paid_amount": ("pay",), "refunded_amount": ("refund",), "released_amount": ("release", "fee"),
          "fee_amount": ("fee",)}


def readable(text: str) -> dict[str, Any] | None:
    """The object an entry's stored ``data`` holds, or None when the text is not the canonical JSON of an object (not
    what ``append`` writes: a rewritten entry)."""
    try:
        data = json.loads(text)
    except ValueError:
        return None
    return data if isinstance(data, dict) and canonical(data) == text else None


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _trade_disagrees(trade: Any, rows: Sequence[Any], datas: Sequence[dict[str, Any]]) -> tuple[int, str] | None:
    """Where the trade's row says something its intact chain does not (a seller, an amount or the status changed in
    the table alone): ``(seq, problem)``, or None. Without it a chain checks out whatever the row beside it says.
    ``datas`` are the entries' data, read."""
    opened = datas[0]
    for word, column in _TERMS.items():
        if word in opened and opened[word] != getattr(trade, column):
            return 1, f"the trade's {column} is {getattr(trade, column)!r} but its opening entry says {opened[word]!r}"
    moved: dict[str, int] = {}
    last_state: tuple[int, str] | None = None
    for row, data in zip(rows, datas, strict=True):
        if row.kind == "money":
            if not isinstance(data.get("movement"), str) or not _whole(data.get("amount")):
                return row.seq, f"entry {row.seq} is a money entry without a movement and a whole amount"
            moved[data["movement"]] = moved.get(data["movement"], 0) + data["amount"]
        elif row.kind == "state":
            if not isinstance(data.get("after"), str):
                return row.seq, f"entry {row.seq} is a state change without the state it left the trade in"
            last_state = row.seq, data["after"]
    # The state the chain last recorded is the trade's (found by an audit: a row moved to "shipped" alone checked out).
    if last_state is not None and last_state[1] != trade.status:
        seq, after = last_state
        return seq, f"the trade's status is {trade.status} but its entry {seq} left it {after}"
    for column, movements in _MONEY.items():
        recorded = sum(moved.get(movement, 0) for movement in movements)
        if getattr(trade, column) != recorded:
            return len(rows), f"the trade's {column} is {getattr(trade, column)} but its money entries give {recorded}"
    return None
