"""A trade's timeline: every state change, money movement, message and piece of evidence, hash-chained.

Entry ``n`` stores ``hash_n = SHA-256(hash_{n-1} || canonical JSON of (seq, at, actor, kind, data))`` with
``hash_0`` = 64 zeros. The trade row keeps the head (``timeline_seq``, ``timeline_hash``) and is locked by
every writer, so appends are serial per trade. ``verify`` recomputes the chain: an edited entry, a removed
one or a reordered pair is found and named. (An attacker who can rewrite the whole chain *and* the head can
forge it; exporting the head hash with the evidence bundle, or anchoring it elsewhere, closes that.)
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from core import clock
from core.db import db
from wallet.escrow_models import TimelineEntry, Trade

GENESIS = "0" * 64


def canonical(data: dict[str, Any]) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def entry_hash(prev_hash: str, seq: int, at: str, actor: str, kind: str, data: str) -> str:
    content = canonical({"seq": seq, "at": at, "actor": actor, "kind": kind, "data": json.loads(data)})
    return hashlib.sha256((prev_hash + content).encode()).hexdigest()


def next_entry(trade: Trade, actor: str, kind: str, **data: Any) -> TimelineEntry:
    """The entry that extends ``trade``'s timeline, with the head on ``trade`` moved to it; the caller adds it to
    the session (after the trade row, for the first entry of a new trade). The caller holds the trade row lock."""
    seq = trade.timeline_seq + 1
    at = clock.now().isoformat()
    body = canonical(data)
    digest = entry_hash(trade.timeline_hash, seq, at, actor, kind, body)
    entry = TimelineEntry(trade_id=trade.id, seq=seq, at=at, actor=actor, kind=kind, data=body,
                          prev_hash=trade.timeline_hash, hash=digest)
    trade.timeline_seq, trade.timeline_hash = seq, digest
    return entry


def append(trade: Trade, actor: str, kind: str, **data: Any) -> TimelineEntry:
    """Add an entry to ``trade``'s timeline (the caller holds the trade row lock)."""
    entry = next_entry(trade, actor, kind, **data)
    db.session.add(entry)
    return entry


def entries(trade_id: str) -> list[TimelineEntry]:
    return list(db.session.scalars(select(TimelineEntry).where(TimelineEntry.trade_id == trade_id)
                                   .order_by(TimelineEntry.seq)))


@dataclass(frozen=True)
class Verification:
    intact: bool
    entries: int
    broken_at: int | None = None  # seq of the first entry that does not check out
    problem: str | None = None


def verify(trade: Trade) -> Verification:
    """Recompute the chain of ``trade`` and compare it with the stored hashes and the head on the trade."""
    rows = entries(trade.id)
    prev = GENESIS
    for expected_seq, row in enumerate(rows, start=1):
        if row.seq != expected_seq:
            return Verification(False, len(rows), expected_seq, f"entry {expected_seq} is missing")
        if row.prev_hash != prev:
            return Verification(False, len(rows), row.seq, f"entry {row.seq} does not follow entry {row.seq - 1}")
        if entry_hash(prev, row.seq, row.at, row.actor, row.kind, row.data) != row.hash:
            return Verification(False, len(rows), row.seq, f"entry {row.seq} was altered")
        prev = row.hash
    if (trade.timeline_seq, trade.timeline_hash) != (len(rows), prev):
        return Verification(False, len(rows), len(rows) + 1, "the newest entries are missing")
    return Verification(True, len(rows))
