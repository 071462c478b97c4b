"""A trade's row as the escrow use cases handle it: read (under its lock), changed in Python, written back.

The table is ``wallet.escrow_models.Trade``, whose constraints are the database's half of the escrow rules. The
use cases of ``wallet.trades`` do not go through the ORM for it: every payment, shipment and confirmation reads
and writes a trade, and the unit of work (identity map, change history, flush) cost more than the statements
themselves. Instead a trade is a ``TradeRecord``, a plain object of its columns:

* ``lock`` reads it ``FOR UPDATE`` (on SQLite ``BEGIN IMMEDIATE`` already serialises writers), together with
  what its messages and money need of its two parties (phone, locale, wallet), in one statement;
* the use case changes its attributes;
* ``save`` writes the columns that changed since it was read, in one UPDATE, which also moves the timeline
  head (``timeline_seq``, ``timeline_hash``) the entries appended meanwhile were chained to.

``insert`` carries the rows the transaction queued for commit so far (timeline entries, alerts, a new trade's
escrow account: ``core.sql.execute_carrying``); ``save`` leaves its UPDATE to go with the transaction's next
statement (``core.sql.write_before_next``), so on PostgreSQL a step's writes after its money movement, the
stored answer of its Idempotency-Key included, are one statement.

All on the driver's cursor (``core.sql``), in the use case's transaction.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, NamedTuple

from core import sql

UTC_COLUMNS = ["created_at", "pay_deadline", "paid_at", "shipped_at", "confirm_deadline", "remind_at",
                "paused_at", "finished_at", "closed_at"]
BOOLEAN_COLUMNS = ["reminded", "extended", "refund_open"]


@dataclass(slots=True, eq=False)
class TradeRecord:
    """One row of ``trades`` (the columns of ``wallet.escrow_models.Trade``, in its order)."""

    id: str
    buyer_id: str
    seller_id: str
    title: str
    amount: int
    shipping_fee: int
    currency: str
    status: str
    fee_bp: int
    paid_amount: int
    refunded_amount: int
    released_amount: int
    fee_amount: int
    escrow_account_id: str | None
    carrier: str | None
    tracking_number: str | None
    created_at: datetime
    pay_deadline: datetime | None
    paid_at: datetime | None
    shipped_at: datetime | None
    confirm_deadline: datetime | None
    remind_at: datetime | None
    reminded: bool
    extended: bool
    paused_at: datetime | None
    finished_at: datetime | None
    closed_at: datetime | None
    close_reason: str | None
    timeline_seq: int
    timeline_hash: str
    refund_open: bool
    # Not a column: the values as last read or written, to find what a use case changed.
    _as_read: tuple[Any, ...] = field(default=(), repr=False)


COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(TradeRecord) if not f.name.startswith("_"))
_SELECT_COLUMNS = ", ".join(f"t.{name}" for name in COLUMNS)


class Party(NamedTuple):
    """One side of a trade: where its messages go (``phone``, ``locale``) and where its money goes (``wallet_id``,
    the ledger account of its wallet in the trade's currency; None while it has none)."""

    id: str
    phone: str
    locale: str
    wallet_id: str | None = None


class Locked(NamedTuple):
    """A trade read under its row lock, and its two parties as they were read with it; ``seller_verified`` what the
    caller's check of the seller answered, read in the same statement (None when it asked for none)."""

    trade: TradeRecord
    buyer: Party
    seller: Party
    seller_verified: bool | None = None


# A wallet's ledger account never changes once opened, so reading its id in the statement's snapshot is safe;
# one opened meanwhile reads as None, and the caller opens (finds) it.
_WALLET_OF = ("(SELECT w.id FROM ledger_accounts w WHERE w.kind = 'wallet' AND w.owner = {party}"
              " AND w.currency = t.currency AND w.shard = 0)")
_LOCK_SQL = (
    f"SELECT {_SELECT_COLUMNS}, b.phone AS buyer_phone, b.locale AS buyer_locale,"  # noqa: S608 - column names
    f" {_WALLET_OF.format(party='t.buyer_id')} AS buyer_wallet,"
    f" s.phone AS seller_phone, s.locale AS seller_locale, {_WALLET_OF.format(party='t.seller_id')} AS seller_wallet"
    "{more} FROM trades t JOIN users b ON b.id = t.buyer_id JOIN users s ON s.id = t.seller_id WHERE t.id = :trade_id"
)
_LOCK = sql.Statement({"postgresql": _LOCK_SQL.format(more="") + " FOR UPDATE OF t",
                       "sqlite": _LOCK_SQL.format(more="")}, utc=UTC_COLUMNS, boolean=BOOLEAN_COLUMNS)
# The sweeper passes over a trade someone else holds: it comes back to it on its next round.
_LOCK_OR_SKIP = sql.Statement({"postgresql": _LOCK_SQL.format(more="") + " FOR UPDATE OF t SKIP LOCKED",
                               "sqlite": _LOCK_SQL.format(more="")}, utc=UTC_COLUMNS, boolean=BOOLEAN_COLUMNS)
# The lock with a check of the seller (by the caller's SQL expression on ``t.seller_id``), by expression.
_LOCK_CHECKING: dict[str, sql.Statement] = {}
_READ = sql.Statement(f"SELECT {_SELECT_COLUMNS} FROM trades t WHERE t.id = :trade_id",  # noqa: S608
                      utc=UTC_COLUMNS, boolean=BOOLEAN_COLUMNS)
_INSERT_SQL = f"INSERT INTO trades ({', '.join(COLUMNS)}) VALUES ({', '.join(':' + c for c in COLUMNS)})"  # noqa: S608
_UPDATES: dict[tuple[str, ...], str] = {}


def _record(row: Any) -> TradeRecord:
    record = TradeRecord(*row[: len(COLUMNS)])
    _remember(record)
    return record


def _remember(record: TradeRecord) -> None:
    record._as_read = tuple(getattr(record, name) for name in COLUMNS)


def lock(trade_id: str, *, skip_locked: bool = False, check_seller: str | None = None) -> Locked | None:
    """The trade and its parties, its row locked until the transaction ends; None if there is no such trade (or,
    with ``skip_locked``, if another transaction holds it). ``check_seller``, a boolean SQL expression on
    ``t.seller_id`` (from code, never from a request), is read in the same statement (``Locked.seller_verified``):
    a payment checks its seller without a round trip of its own."""
    statement = _LOCK_OR_SKIP if skip_locked else _LOCK
    if check_seller is not None:
        if skip_locked:
            raise ValueError("a trade locked to check its seller is not skipped")
        statement = _LOCK_CHECKING.get(check_seller) or _LOCK_CHECKING.setdefault(check_seller, _checking(check_seller))
    row = statement.one(trade_id=trade_id)
    if row is None:
        return None
    trade = _record(row)
    return Locked(trade, Party(trade.buyer_id, row.buyer_phone, row.buyer_locale, row.buyer_wallet),
                  Party(trade.seller_id, row.seller_phone, row.seller_locale, row.seller_wallet),
                  None if check_seller is None else bool(row.seller_verified))


def _checking(check_seller: str) -> sql.Statement:
    text = _LOCK_SQL.format(more=f", {check_seller} AS seller_verified")
    return sql.Statement({"postgresql": text + " FOR UPDATE OF t", "sqlite": text}, utc=UTC_COLUMNS,
                         boolean=[*BOOLEAN_COLUMNS, "seller_verified"])


def read(trade_id: str) -> TradeRecord | None:
    """The trade as committed (no lock), for reading only."""
    row = _READ.one(trade_id=trade_id)
    return None if row is None else TradeRecord(*row)


def insert(trade: TradeRecord) -> None:
    """Write a new trade (in the caller's transaction) with the rows queued for commit so far; later changes to
    it are saved with ``save``."""
    sql.execute_carrying(_INSERT_SQL, {name: getattr(trade, name) for name in COLUMNS})
    _remember(trade)


def save(trade: TradeRecord) -> None:
    """Write the columns of ``trade`` that changed since it was read (or inserted), in one UPDATE that goes with
    the transaction's next statement (``core.sql.write_before_next``: an idempotent step's stored answer takes it
    and the rows queued for commit along, one round trip for all) or before COMMIT; nothing if none changed. The
    caller holds the row lock."""
    if not trade._as_read:
        raise ValueError("only a trade read with lock() or written with insert() can be saved")
    changed = tuple(name for name, old in zip(COLUMNS, trade._as_read, strict=True) if getattr(trade, name) != old)
    if changed:
        update = _UPDATES.get(changed)
        if update is None:
            update = _UPDATES[changed] = (
                f"UPDATE trades SET {', '.join(f'{name} = :{name}' for name in changed)} WHERE id = :id")  # noqa: S608
        sql.write_before_next(update, {**{name: getattr(trade, name) for name in changed}, "id": trade.id})
    _remember(trade)
