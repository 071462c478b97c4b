"""The ``bank_cards`` table: cards bound to accounts for top-ups and withdrawals.

What is stored, and why:

- ``card_hash`` = ``HMAC-SHA256(pepper, number)``: "this card is already bound" is a unique index over the
  card_hash of active cards, decided by the database (one account per card since migration 0016).
- ``last4`` for display and SMS texts.
- ``bank_token``: the bank's token for the card, answered when the card was linked at binding
  (``BankGateway.link_card``); debits and payouts name it. The full card number is never stored: it passes
  through the binding request to the bank and is gone. The token is never returned by the API, never
  logged, never put in an SMS, and it is erased when the card is removed (the row stays, for the history
  of the money that moved through it).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from core.db import UTCDateTime, db
from wallet.banks import BANK_CODES

_ACTIVE = text("removed_at IS NULL")


class BankCard(db.Model):
    __tablename__ = "bank_cards"
    __table_args__ = (
        CheckConstraint(f"bank_code IN {BANK_CODES!r}", name="bank_code_known"),
        CheckConstraint("length(last4) = 4", name="last4_length"),
        CheckConstraint("removed_at IS NOT NULL OR bank_token IS NOT NULL", name="active_card_has_token"),
        # A card has one holder, and a holder one account (``identities``): an active card is bound to one account
        # only (migration 0016; before it, once per account).
        Index("uq_bank_cards_active_card", "card_hash", unique=True, sqlite_where=_ACTIVE, postgresql_where=_ACTIVE),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    bank_code: Mapped[str] = mapped_column(String(8))
    card_hash: Mapped[str] = mapped_column(String(64))
    last4: Mapped[str] = mapped_column(String(4))
    bank_token: Mapped[str | None] = mapped_column(Text)  # erased on removal; see the module docstring (migration 0030)
    holder_name: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    removed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    @property
    def active(self) -> bool:
        return self.removed_at is None
