"""Tables of money movement: top-ups, withdrawals and the daily spending counters."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import BigInteger, CheckConstraint, Date, ForeignKey, ForeignKeyConstraint, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from core.db import UTCDateTime, db

# Top-up and withdrawal states
PENDING, SUCCEEDED, FAILED = "pending", "succeeded", "failed"
SUBMITTED = "submitted"  # a withdrawal the bank has accepted and is paying out


class TopUp(db.Model):
    """Money taken from a bound card at the bank and credited to the wallet. ``reference`` is what the bank
    knows it by, so a retry after a crash asks the bank about the same debit instead of charging twice."""

    __tablename__ = "topups"
    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("status IN ('pending', 'succeeded', 'failed')", name="status_known"),
        # Migration 0016: money taken at the bank is credited in the same step, so a succeeded top-up names the
        # transfer that credited it, and no other top-up names one.
        CheckConstraint("(status = 'succeeded') = (transfer_id IS NOT NULL)", name="succeeded_has_transfer"),
        Index("ix_topups_user", "user_id", "id"),
        Index("ix_topups_pending", "status", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    card_id: Mapped[str] = mapped_column(ForeignKey("bank_cards.id"))
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(12), default=PENDING)
    failure_reason: Mapped[str | None] = mapped_column(String(64))
    transfer_id: Mapped[str | None] = mapped_column(ForeignKey("transfers.id"), unique=True)  # migration 0017
    bank_reference: Mapped[str | None] = mapped_column(Text)  # what the bank calls it, any length (migration 0030)
    # Set when the top-up is part of another request (paying a trade with a card): retries of that request
    # (same caller, same Idempotency-Key) find this top-up instead of charging the card again.
    request_key: Mapped[str | None] = mapped_column(String(300), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Migration 0019: when the worker may ask the bank about a pending top-up again (None: it never tried).
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Withdrawal(db.Model):
    """A payout to a bound card. The money is held on the wallet from the request; the bank's answer posts
    the hold (paid out) or voids it (back in the wallet)."""

    __tablename__ = "withdrawals"
    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("status IN ('pending', 'submitted', 'succeeded', 'failed')", name="status_known"),
        # Migration 0017: the bank pays out ``amount``, the ledger takes the hold's amount when it posts: the same.
        ForeignKeyConstraint(["hold_id", "amount", "currency"], ["holds.id", "holds.amount", "holds.currency"],
                             name="fk_withdrawals_hold_amount_currency"),
        Index("ix_withdrawals_user", "user_id", "id"),
        Index("ix_withdrawals_due", "status", "next_attempt_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    card_id: Mapped[str] = mapped_column(ForeignKey("bank_cards.id"))
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    hold_id: Mapped[str] = mapped_column(ForeignKey("holds.id"), unique=True)
    status: Mapped[str] = mapped_column(String(12), default=PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(Text)
    failure_reason: Mapped[str | None] = mapped_column(String(64))
    bank_reference: Mapped[str | None] = mapped_column(Text)  # what the bank calls it, any length (migration 0030)
    # Until when a payout submitted by a claim may still reach the bank (``wallet.funds._IN_FLIGHT``, migration 0026).
    submitted_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class DailyUsage(db.Model):
    """What a user has sent out on one (China Standard Time) day; a conditional UPDATE keeps it under the
    daily limit without a race."""

    __tablename__ = "daily_usage"
    __table_args__ = (CheckConstraint("amount >= 0", name="amount_not_negative"),)

    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    amount: Mapped[int] = mapped_column(BigInteger, default=0)


class DailyPayeeUsage(db.Model):
    """How many payments to a phone number one user has made to one payee on one (China Standard Time) day. Each
    texts the payee (``transfer_received``), so a conditional upsert keeps them under
    ``LIMIT_PAYMENTS_PER_PAYEE_DAILY`` without a race (migration 0033)."""

    __tablename__ = "daily_payee_usage"
    __table_args__ = (CheckConstraint("payments > 0", name="payments_positive"),)

    payer_id: Mapped[str] = mapped_column(ForeignKey("users.id"), primary_key=True)
    payee_id: Mapped[str] = mapped_column(ForeignKey("users.id"), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    payments: Mapped[int] = mapped_column(Integer)
