"""Tables of the double-entry ledger (see ``wallet/ledger.py`` for the design and its invariants).

``ledger_accounts``   one row per ledger account, caching its four running totals (the balance itself).
``transfers``         immutable posted movements: amount from a debit account to a credit account.
``ledger_entries``    one immutable row per side of each transfer, carrying the account's balance after it
                      (the statement of an account is one index range scan on ``(account_id, id)``).
``holds``             two-phase transfers: pending money reserved from one account for another.
``hold_resolutions``  how each hold ended (posted, voided, expired); its primary key is the hold id, so a
                      hold is resolved at most once as a database fact.

Triggers that refuse UPDATE and DELETE of the append-only tables live in the migration (``0002``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    SmallInteger,
    String,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from core.db import UTCDateTime, db

# Kinds of ledger account. Wallets and escrow accounts hold someone's money and may never go below zero
# available; bank clearing and other system accounts mirror money outside the platform and go negative.
WALLET, ESCROW, BANK_CLEARING, FEES, SYSTEM = "wallet", "escrow", "bank_clearing", "fees", "system"
ACCOUNT_KINDS = (WALLET, ESCROW, BANK_CLEARING, FEES, SYSTEM)
NON_NEGATIVE_KINDS = (WALLET, ESCROW)

PENDING, POSTED, VOIDED, EXPIRED = "pending", "posted", "voided", "expired"
HOLD_STATUSES = (PENDING, POSTED, VOIDED, EXPIRED)
HOLD_OUTCOMES = (POSTED, VOIDED, EXPIRED)

# Entry ids are a 64-bit sequence on PostgreSQL and SQLite's rowid (which must be plain INTEGER).
EntryId = BigInteger().with_variant(Integer(), "sqlite")

_AVAILABLE = "credits_posted - debits_posted - debits_pending"


class LedgerAccount(db.Model):
    """A ledger account. The four totals only grow or shrink through ``wallet.ledger``; balance is
    ``credits_posted - debits_posted`` (so the balances of all accounts of a currency sum to zero) and
    available is that less ``debits_pending``."""

    __tablename__ = "ledger_accounts"
    __table_args__ = (
        UniqueConstraint("kind", "owner", "currency", "shard"),
        # Target of the composite foreign keys that pin a transfer's currency to both of its accounts.
        UniqueConstraint("id", "currency"),
        # Target of the foreign key that makes a trade's escrow account the trade's own (migration 0017). An index,
        # not a constraint: SQLite would have to copy the table (and lose its triggers) to add a constraint.
        Index("uq_ledger_accounts_id_owner_currency", "id", "owner", "currency", unique=True),
        CheckConstraint(f"kind IN {ACCOUNT_KINDS!r}", name="kind_known"),
        CheckConstraint("length(currency) = 3", name="currency_iso"),
        CheckConstraint("shard >= 0", name="shard_not_negative"),
        CheckConstraint("debits_posted >= 0", name="debits_posted_not_negative"),
        CheckConstraint("credits_posted >= 0", name="credits_posted_not_negative"),
        CheckConstraint("debits_pending >= 0", name="debits_pending_not_negative"),
        CheckConstraint("credits_pending >= 0", name="credits_pending_not_negative"),
        CheckConstraint(f"kind NOT IN {NON_NEGATIVE_KINDS!r} OR {_AVAILABLE} >= 0", name="available_not_negative"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    # Whose account: the user id of a wallet, the trade id of an escrow account, the bank code of a clearing
    # account, a name for other system accounts.
    owner: Mapped[str] = mapped_column(String(64))
    currency: Mapped[str] = mapped_column(String(3))
    # System accounts are split into a few buckets so no single row serialises all traffic.
    shard: Mapped[int] = mapped_column(SmallInteger, default=0)
    debits_posted: Mapped[int] = mapped_column(BigInteger, default=0)
    credits_posted: Mapped[int] = mapped_column(BigInteger, default=0)
    debits_pending: Mapped[int] = mapped_column(BigInteger, default=0)
    credits_pending: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


def _account_fk(table: str, side: str) -> ForeignKeyConstraint:
    """``(<side>_account_id, currency)`` must name a ledger account *of that currency*."""
    return ForeignKeyConstraint(
        [f"{side}_account_id", "currency"],
        ["ledger_accounts.id", "ledger_accounts.currency"],
        name=f"fk_{table}_{side}_account_currency",
    )


class Hold(db.Model):
    """Money reserved on ``debit_account_id`` for ``credit_account_id`` until posted, voided or expired.

    Only ``status`` ever changes, once, from ``pending`` (a trigger refuses anything else)."""

    __tablename__ = "holds"
    __table_args__ = (
        _account_fk("holds", "debit"),
        _account_fk("holds", "credit"),
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("debit_account_id <> credit_account_id", name="accounts_differ"),
        CheckConstraint(f"status IN {HOLD_STATUSES!r}", name="status_known"),
        # Target of the foreign key that makes a withdrawal pay out what its hold holds (migration 0017).
        Index("uq_holds_id_amount_currency", "id", "amount", "currency", unique=True),
        # The expiry sweep reads only open holds.
        Index(
            "ix_holds_open_expiry",
            "expires_at",
            postgresql_where=text("status = 'pending'"),
            sqlite_where=text("status = 'pending'"),
        ),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    debit_account_id: Mapped[str] = mapped_column(String(40), index=True)
    credit_account_id: Mapped[str] = mapped_column(String(40))
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    kind: Mapped[str] = mapped_column(String(32))
    reference: Mapped[str | None] = mapped_column(String(64))
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(8), default=PENDING)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Transfer(db.Model):
    """A posted movement of ``amount`` from the debit to the credit account. Never updated or deleted:
    corrections are new transfers."""

    __tablename__ = "transfers"
    __table_args__ = (
        _account_fk("transfers", "debit"),
        _account_fk("transfers", "credit"),
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("debit_account_id <> credit_account_id", name="accounts_differ"),
        # A hold posts at most one transfer.
        Index(
            "uq_transfers_hold_id",
            "hold_id",
            unique=True,
            postgresql_where=text("hold_id IS NOT NULL"),
            sqlite_where=text("hold_id IS NOT NULL"),
        ),
        Index(
            "ix_transfers_reference",
            "reference",
            postgresql_where=text("reference IS NOT NULL"),
            sqlite_where=text("reference IS NOT NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    debit_account_id: Mapped[str] = mapped_column(String(40))
    credit_account_id: Mapped[str] = mapped_column(String(40))
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    kind: Mapped[str] = mapped_column(String(32))
    hold_id: Mapped[str | None] = mapped_column(ForeignKey("holds.id"))
    reference: Mapped[str | None] = mapped_column(String(64))
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class LedgerEntry(db.Model):
    """One side of a transfer as the account sees it: signed amount (credit +, debit -) and the posted balance
    after it. Ids grow in the order the account's row lock was taken, so the running sum of ``amount`` by
    ``id`` equals ``balance_after`` on every row. A trigger refuses an entry that is not its transfer's side or
    does not carry its account's balance (migration 0029)."""

    __tablename__ = "ledger_entries"
    __table_args__ = (
        CheckConstraint("amount <> 0", name="amount_not_zero"),
        # The statement query: WHERE account_id = ? AND id < cursor ORDER BY id DESC LIMIT n.
        Index("ix_ledger_entries_account_id_id", "account_id", "id"),
    )

    id: Mapped[int] = mapped_column(EntryId, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("ledger_accounts.id"))
    transfer_id: Mapped[str] = mapped_column(ForeignKey("transfers.id"))
    counterparty_account_id: Mapped[str] = mapped_column(String(40))
    kind: Mapped[str] = mapped_column(String(32))
    amount: Mapped[int] = mapped_column(BigInteger)
    balance_after: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class HoldResolution(db.Model):
    """How a hold ended. The primary key is the hold id: a second resolution cannot be inserted."""

    __tablename__ = "hold_resolutions"
    __table_args__ = (
        CheckConstraint(f"outcome IN {HOLD_OUTCOMES!r}", name="outcome_known"),
        CheckConstraint(
            "(outcome = 'posted' AND transfer_id IS NOT NULL AND posted_amount > 0)"
            " OR (outcome <> 'posted' AND transfer_id IS NULL AND posted_amount = 0)",
            name="posted_has_transfer",
        ),
    )

    hold_id: Mapped[str] = mapped_column(ForeignKey("holds.id"), primary_key=True)
    outcome: Mapped[str] = mapped_column(String(8))
    posted_amount: Mapped[int] = mapped_column(BigInteger, default=0)
    transfer_id: Mapped[str | None] = mapped_column(ForeignKey("transfers.id"), unique=True)
    resolved_at: Mapped[datetime] = mapped_column(UTCDateTime())
