"""Spending limits: one movement at most ``LIMIT_PER_TRANSACTION`` fen, a user's outgoing money per China
Standard Time day at most ``LIMIT_DAILY`` fen. Checked in the movement's own transaction with a conditional
UPDATE, so two concurrent payments cannot both slip under the limit."""

from __future__ import annotations

from datetime import timedelta, timezone

from flask import current_app
from sqlalchemy import text

from core import clock
from core.db import db, insert_ignore
from core.errors import AppError
from wallet.funds_models import DailyUsage

CST = timezone(timedelta(hours=8))


class LimitExceeded(AppError):
    """The movement is above the per-transaction limit or would take the day's total above the daily limit."""

    status, code, title = 422, "limit_exceeded", "Limit exceeded"


def check_single(amount: int) -> None:
    limit = current_app.config["LIMIT_PER_TRANSACTION"]
    if amount > limit:
        raise LimitExceeded(f"At most {limit} fen per transaction.", limit=limit)


def consume_daily(user_id: str, amount: int) -> None:
    """Count ``amount`` against today's limit inside the caller's transaction; raises ``LimitExceeded``."""
    check_single(amount)
    limit = current_app.config["LIMIT_DAILY"]
    today = clock.now().astimezone(CST).date()
    insert_ignore(DailyUsage.__table__, {"user_id": user_id, "day": today, "amount": 0})
    updated = db.session.execute(
        text("UPDATE daily_usage SET amount = amount + :amount WHERE user_id = :user AND day = :day"
             " AND amount + :amount <= :limit"),
        {"amount": amount, "user": user_id, "day": today, "limit": limit},
    ).rowcount
    if updated != 1:
        raise LimitExceeded(f"At most {limit} fen per day in total.", limit=limit)


def release_daily(user_id: str, amount: int, day_of: object) -> None:
    """Give back what a failed withdrawal had counted on the day it was requested."""
    day = day_of.astimezone(CST).date()  # type: ignore[attr-defined]
    db.session.execute(
        text("UPDATE daily_usage SET amount = amount - :amount WHERE user_id = :user AND day = :day"
             " AND amount >= :amount"),
        {"amount": amount, "user": user_id, "day": day},
    )
