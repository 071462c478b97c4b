"""Tables of escrow trades: trades, refunds, disputes, the hash-chained timeline, ratings, seller fees."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from core.db import UTCDateTime, db
from wallet.escrow import (
    OPEN_REFUND_STATES,
    REFUND_STATES,
    TRADE_CLOSED,
    TRADE_FINISHED,
    TRADE_STATES,
    WAIT_BUYER_CONFIRM_GOODS,
    WAIT_BUYER_PAY,
    WAIT_SELLER_SEND_GOODS,
)

_OPEN_REFUND = "status IN ({})".format(", ".join(f"'{s}'" for s in OPEN_REFUND_STATES))
# The trades each of the sweeper's look-ups is about (``trades.sweep`` says the same in its WHERE): the predicates of
# partial indexes that hold only those trades.
UNPAID = f"status = '{WAIT_BUYER_PAY}'"
AWAITING_CONFIRMATION = f"status = '{WAIT_BUYER_CONFIRM_GOODS}'"
TO_REMIND = f"{AWAITING_CONFIRMATION} AND NOT reminded"
UNSHIPPED = f"status = '{WAIT_SELLER_SEND_GOODS}'"
# Two CHECKs of migration 0016, kept here so the migration writes exactly what the models declare.
MONEY_MATCHES_STATUS = (
    f"(status <> '{WAIT_BUYER_PAY}' OR paid_amount = 0)"
    f" AND (status NOT IN ('{WAIT_SELLER_SEND_GOODS}', '{WAIT_BUYER_CONFIRM_GOODS}', '{TRADE_FINISHED}')"
    " OR paid_amount > 0)"
    f" AND (status NOT IN ('{TRADE_FINISHED}', '{TRADE_CLOSED}') OR released_amount + refunded_amount = paid_amount)"
)
DISPUTE_DECIDED_CONSISTENTLY = (
    "(status = 'open' AND outcome IS NULL AND refund_amount IS NULL AND decided_at IS NULL)"
    " OR (status = 'decided' AND outcome IS NOT NULL AND refund_amount >= 0 AND decided_at IS NOT NULL)"
)


class Trade(db.Model):
    """One escrow trade. Its money sits in its own ledger account (``escrow_account_id``)."""

    __tablename__ = "trades"
    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("shipping_fee >= 0", name="shipping_fee_not_negative"),
        CheckConstraint("buyer_id <> seller_id", name="buyer_is_not_seller"),
        CheckConstraint("refunded_amount >= 0 AND refunded_amount <= paid_amount", name="refunds_within_paid"),
        CheckConstraint("released_amount >= 0 AND released_amount + refunded_amount <= paid_amount",
                        name="releases_within_paid"),
        # escrow.seller_fee's rates: none, or a merchant's 1-1.5 % (migrations 0024, 0025)
        CheckConstraint("fee_bp = 0 OR (fee_bp >= 100 AND fee_bp <= 150)", name="fee_bp_range"),
        CheckConstraint("status IN ({})".format(", ".join(f"'{s}'" for s in TRADE_STATES)), name="status_known"),
        # Migration 0016: the fee is a share of what was released; a trade is paid in full or not at all; and its
        # money agrees with its state (nothing paid before payment, something paid after, nothing left in escrow
        # once it is over).
        CheckConstraint("fee_amount >= 0 AND fee_amount <= released_amount", name="fee_within_released"),
        CheckConstraint("paid_amount = 0 OR paid_amount = amount + shipping_fee", name="paid_in_full_or_not"),
        CheckConstraint(MONEY_MATCHES_STATUS, name="money_matches_status"),
        # Migration 0017: the escrow account is the trade's own (owned by it, in its currency), so no step can move
        # another account's money as this trade's. Deferred: a trade is opened with its account written at commit,
        # after the trade's row on SQLite (``ledger.new_escrow_account``).
        ForeignKeyConstraint(["escrow_account_id", "id", "currency"],
                             ["ledger_accounts.id", "ledger_accounts.owner", "ledger_accounts.currency"],
                             deferrable=True, initially="DEFERRED"),
        Index("ix_trades_buyer", "buyer_id", "id"),
        Index("ix_trades_seller", "seller_id", "id"),
        # The sweeper's: each holds only the trades waiting on that deadline, so it stays the size of the open
        # trades however many have finished, and a step that leaves a state writes no entry into the others.
        Index("ix_trades_pay_deadline", "pay_deadline", postgresql_where=text(UNPAID), sqlite_where=text(UNPAID)),
        Index("ix_trades_confirm_deadline", "confirm_deadline", postgresql_where=text(AWAITING_CONFIRMATION),
              sqlite_where=text(AWAITING_CONFIRMATION)),
        Index("ix_trades_remind_at", "remind_at", postgresql_where=text(TO_REMIND), sqlite_where=text(TO_REMIND)),
        # A payment counts its buyer's trades waiting for the same seller to ship (``trades._check_unshipped``):
        # without it, every payment read all of the buyer's trades ever made.
        Index("ix_trades_unshipped", "buyer_id", "seller_id", postgresql_where=text(UNSHIPPED),
              sqlite_where=text(UNSHIPPED)),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    buyer_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    seller_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    title: Mapped[str] = mapped_column(String(128))
    amount: Mapped[int] = mapped_column(BigInteger)
    shipping_fee: Mapped[int] = mapped_column(BigInteger, default=0)
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(32))
    fee_bp: Mapped[int] = mapped_column(Integer, default=0)
    paid_amount: Mapped[int] = mapped_column(BigInteger, default=0)
    refunded_amount: Mapped[int] = mapped_column(BigInteger, default=0)
    released_amount: Mapped[int] = mapped_column(BigInteger, default=0)
    fee_amount: Mapped[int] = mapped_column(BigInteger, default=0)
    escrow_account_id: Mapped[str | None] = mapped_column(String(40))
    carrier: Mapped[str | None] = mapped_column(String(64))
    tracking_number: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    pay_deadline: Mapped[datetime | None] = mapped_column(UTCDateTime())
    paid_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    shipped_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    confirm_deadline: Mapped[datetime | None] = mapped_column(UTCDateTime())
    remind_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    reminded: Mapped[bool] = mapped_column(default=False)
    extended: Mapped[bool] = mapped_column(default=False)
    # Set while a refund or a dispute is open: the confirm clock stands still.
    paused_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    close_reason: Mapped[str | None] = mapped_column(String(32))
    # The head of the hash-chained timeline (see ``wallet.timeline``).
    timeline_seq: Mapped[int] = mapped_column(Integer, default=0)
    timeline_hash: Mapped[str] = mapped_column(String(64), default="0" * 64)
    # Set while one of its refunds is open (migration 0011 says why it is kept here too).
    refund_open: Mapped[bool] = mapped_column(default=False, server_default=false())


class Refund(db.Model):
    """A buyer's refund request on a trade; at most one is open per trade (a partial unique index)."""

    __tablename__ = "refunds"
    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("status IN ({})".format(", ".join(f"'{s}'" for s in REFUND_STATES)), name="status_known"),
        Index("uq_refunds_one_open_per_trade", "trade_id", unique=True,
              postgresql_where=text(_OPEN_REFUND), sqlite_where=text(_OPEN_REFUND)),
        Index("ix_refunds_deadline", "status", "deadline"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    trade_id: Mapped[str] = mapped_column(ForeignKey("trades.id"), index=True)
    amount: Mapped[int] = mapped_column(BigInteger)
    reason: Mapped[str] = mapped_column(String(500))
    return_goods: Mapped[bool] = mapped_column(default=False)
    after_shipping: Mapped[bool] = mapped_column(default=False)
    status: Mapped[str] = mapped_column(String(32))
    deadline: Mapped[datetime | None] = mapped_column(UTCDateTime())
    refuse_reason: Mapped[str | None] = mapped_column(String(500))
    return_carrier: Mapped[str | None] = mapped_column(String(64))
    return_tracking_number: Mapped[str | None] = mapped_column(String(64))
    disputed: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Dispute(db.Model):
    """A refused refund escalated to the platform; staff decide release, refund or split."""

    __tablename__ = "disputes"
    __table_args__ = (
        CheckConstraint("status IN ('open', 'decided')", name="status_known"),
        CheckConstraint("outcome IS NULL OR outcome IN ('release', 'refund', 'split')", name="outcome_known"),
        CheckConstraint(DISPUTE_DECIDED_CONSISTENTLY, name="decided_consistently"),  # migration 0016
        Index("uq_disputes_one_open_per_trade", "trade_id", unique=True,
              postgresql_where=text("status = 'open'"), sqlite_where=text("status = 'open'")),
        Index("ix_disputes_status", "status", "id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    trade_id: Mapped[str] = mapped_column(ForeignKey("trades.id"), index=True)
    refund_id: Mapped[str] = mapped_column(ForeignKey("refunds.id"))
    opened_by: Mapped[str] = mapped_column(ForeignKey("users.id"))
    reason: Mapped[str] = mapped_column(String(1000))
    status: Mapped[str] = mapped_column(String(8), default="open")
    outcome: Mapped[str | None] = mapped_column(String(8))
    refund_amount: Mapped[int | None] = mapped_column(BigInteger)
    decision_reason: Mapped[str | None] = mapped_column(String(1000))
    decided_by: Mapped[str | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class TimelineEntry(db.Model):
    """One event in a trade's history. ``hash`` = SHA-256 over the previous entry's hash and this entry's
    canonical content, so changing or removing any entry breaks every hash after it."""

    __tablename__ = "trade_timeline"
    __table_args__ = (UniqueConstraint("trade_id", "seq"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    trade_id: Mapped[str] = mapped_column(ForeignKey("trades.id"))
    seq: Mapped[int] = mapped_column(Integer)
    at: Mapped[str] = mapped_column(String(40))  # ISO text, exactly as hashed
    actor: Mapped[str] = mapped_column(String(40))
    kind: Mapped[str] = mapped_column(String(32))
    data: Mapped[str] = mapped_column(Text)  # canonical JSON, exactly as hashed
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class Rating(db.Model):
    """After a finished trade each side rates the other once: 1, 0 or -1 (Taobao's good, neutral, bad)."""

    __tablename__ = "ratings"
    __table_args__ = (
        UniqueConstraint("trade_id", "rater_id"),
        CheckConstraint("score IN (-1, 0, 1)", name="score_known"),
        CheckConstraint("role IN ('seller', 'buyer')", name="role_known"),
        CheckConstraint("rater_id <> ratee_id", name="not_oneself"),  # migration 0016
        Index("ix_ratings_ratee", "ratee_id", "role"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    trade_id: Mapped[str] = mapped_column(ForeignKey("trades.id"))
    rater_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    ratee_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    role: Mapped[str] = mapped_column(String(8))  # the ratee's role in the trade
    score: Mapped[int] = mapped_column(SmallInteger)
    comment: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class RatingTotals(db.Model):
    """A user's ratings in one role, summed as they are given (``trades.rate``), so that a reputation is one row
    read however many ratings a merchant has collected. Ratings are never changed or removed, so the sums only
    grow; ``flask wallet check`` recomputes them from ``ratings``."""

    __tablename__ = "rating_totals"
    __table_args__ = (
        CheckConstraint("role IN ('seller', 'buyer')", name="role_known"),
        CheckConstraint("ratings > 0 AND positive >= 0 AND positive <= ratings", name="counts_consistent"),
        # score = positive - negative, and negative <= ratings - positive
        CheckConstraint("score <= positive AND score >= 2 * positive - ratings", name="score_within_counts"),
    )

    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), primary_key=True)
    role: Mapped[str] = mapped_column(String(8), primary_key=True)
    score: Mapped[int] = mapped_column(BigInteger)  # the credit score: the sum of the ratings' scores
    ratings: Mapped[int] = mapped_column(BigInteger)
    positive: Mapped[int] = mapped_column(BigInteger)  # ratings of +1


class SellerSettings(db.Model):
    """Per-seller settings: the platform fee on released escrow, in basis points: 0, or 100-150 for a merchant."""

    __tablename__ = "seller_settings"
    # escrow.seller_fee's rates (migrations 0024, 0025)
    __table_args__ = (CheckConstraint("fee_bp = 0 OR (fee_bp >= 100 AND fee_bp <= 150)", name="fee_bp_range"),)

    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), primary_key=True)
    fee_bp: Mapped[int] = mapped_column(Integer, default=0)
