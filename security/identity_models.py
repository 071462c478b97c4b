"""The ``identities`` table: one verified real-name identity per user, one user per ID number.

The resident ID number itself is never stored: only ``HMAC-SHA256(pepper, number)`` (unique, so the
database decides "this number is already someone's") and its last four characters for display.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from core.db import UTCDateTime, db


class Identity(db.Model):
    __tablename__ = "identities"
    __table_args__ = (CheckConstraint("length(id_last4) = 4", name="id_last4_length"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), unique=True)
    real_name: Mapped[str] = mapped_column(String(64))
    id_number_hash: Mapped[str] = mapped_column(String(64), unique=True)
    id_last4: Mapped[str] = mapped_column(String(4))
    provider: Mapped[str] = mapped_column(String(32))
    verified_at: Mapped[datetime] = mapped_column(UTCDateTime())
