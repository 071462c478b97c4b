"""The outbox table. One row per SMS; written with the change it announces, sent later by the dispatcher."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from core.db import UTCDateTime, db

PENDING, SENDING, SENT, DELIVERED, UNDELIVERED, FAILED = (
    "pending", "sending", "sent", "delivered", "undelivered", "failed",
)
STATUSES = (PENDING, SENDING, SENT, DELIVERED, UNDELIVERED, FAILED)


class Alert(db.Model):
    __tablename__ = "alerts"
    __table_args__ = (
        CheckConstraint(f"status IN {STATUSES!r}", name="status_known"),
        CheckConstraint("attempts >= 0", name="attempts_not_negative"),
        # The dispatcher's claim query: due rows in creation order.
        Index("ix_alerts_due", "status", "next_attempt_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    # Plain column, no foreign key: notifications sits below security and knows nothing of users.
    user_id: Mapped[str | None] = mapped_column(String(40), index=True)
    to_phone: Mapped[str] = mapped_column(String(20))
    event: Mapped[str] = mapped_column(String(48))
    locale: Mapped[str] = mapped_column(String(8))
    body: Mapped[str] = mapped_column(Text)
    # Bodies of one-time-code messages are blanked once sent, so the outbox never keeps a live code.
    sensitive: Mapped[bool] = mapped_column(default=False)
    status: Mapped[str] = mapped_column(String(16), default=PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(Text)
    provider_id: Mapped[str | None] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
