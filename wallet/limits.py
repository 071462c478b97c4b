"""Spending limits: one movement at most ``LIMIT_PER_TRANSACTION`` fen, a user's outgoing money per China
Standard Time day at most ``LIMIT_DAILY`` fen, and at most ``LIMIT_PAYMENTS_PER_PAYEE_DAILY`` payments a day from one
user to one phone number's owner (``count_payment_to``: each texts the payee, and one of 1 fen costs the payer next to
nothing). Checked in the movement's own transaction with a conditional upsert, so two concurrent payments cannot both
slip under a limit.

A day's row counts for nothing once the day is over, so the background worker deletes the rows of days before
yesterday every hour (``purge_past_days``): the table holds what today's and yesterday's payers sent, not a row
for every day every user ever paid. A withdrawal that fails later gives back to its day only while that row is
kept (``release_daily``), which is all the giving back can change: an earlier day's limit no longer applies."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from flask import current_app

from core import clock, sql
from core.db import delete_in_batches
from core.errors import AppError
from wallet.funds_models import DailyPayeeUsage, DailyUsage

CST = timezone(timedelta(hours=8))


class LimitExceeded(AppError):
    """The movement is above the per-transaction limit or would take the day's total above the daily limit."""

    status, code, title = 422, "limit_exceeded", "Limit exceeded"


class PayeeLimitExceeded(AppError):
    """The payer has made ``LIMIT_PAYMENTS_PER_PAYEE_DAILY`` payments to this payee today (China Standard Time)."""

    status, code, title = 422, "payee_limit_exceeded", "Payments to this payee limited"


# Every payment runs it, on the driver's cursor (``core.sql``).
_CONSUME = sql.Statement(
    "INSERT INTO daily_usage (user_id, day, amount) VALUES (:user, :day, :amount)"
    " ON CONFLICT (user_id, day) DO UPDATE SET amount = daily_usage.amount + excluded.amount"
    " WHERE daily_usage.amount + excluded.amount <= :limit"
)
_COUNT_PAYMENT = sql.Statement(
    "INSERT INTO daily_payee_usage (payer_id, payee_id, day, payments) VALUES (:payer, :payee, :day, 1)"
    " ON CONFLICT (payer_id, payee_id, day) DO UPDATE SET payments = daily_payee_usage.payments + 1"
    " WHERE daily_payee_usage.payments < :limit"
)
_USED = sql.Statement("SELECT amount FROM daily_usage WHERE user_id = :user AND day = :day")
_RELEASE = sql.Statement(
    "UPDATE daily_usage SET amount = amount - :amount WHERE user_id = :user AND day = :day AND amount >= :amount")


def check_single(amount: int) -> None:
    limit = current_app.config["LIMIT_PER_TRANSACTION"]
    if amount > limit:
        raise LimitExceeded(f"At most {limit} fen per transaction.", limit=limit)


def consume_daily(user_id: str, amount: int, at: datetime | None = None) -> None:
    """Count ``amount`` against the day's limit inside the caller's transaction; raises ``LimitExceeded``. The day is
    today, or that of ``at``: a movement that may be given back later (``release_daily``) counts on the day of the
    time it records."""
    check_single(amount)
    limit = current_app.config["LIMIT_DAILY"]
    today = (at or clock.now()).astimezone(CST).date()
    # One statement: the day's first movement inserts the row (and is itself within the limit, checked here),
    # a later one adds to it only while the total stays within the limit (the row is locked meanwhile).
    counted = amount <= limit and _CONSUME.run(amount=amount, user=user_id, day=today, limit=limit) == 1
    if not counted:
        raise LimitExceeded(f"At most {limit} fen per day in total.", limit=limit)


def count_payment_to(payer_id: str, payee_id: str) -> None:
    """Count one payment from ``payer_id`` to ``payee_id`` today inside the caller's transaction; raises
    ``PayeeLimitExceeded`` past ``LIMIT_PAYMENTS_PER_PAYEE_DAILY``. Found by an audit: every payment to a phone number
    texts its owner, so a payer could text anyone with an account without end for 1 fen a text. Run after
    ``consume_daily`` (the payer's day row first, then this one: one order for every payment)."""
    limit = current_app.config["LIMIT_PAYMENTS_PER_PAYEE_DAILY"]
    today = clock.now().astimezone(CST).date()
    if _COUNT_PAYMENT.run(payer=payer_id, payee=payee_id, day=today, limit=limit) != 1:
        raise PayeeLimitExceeded(f"At most {limit} payments a day to one payee.", limit=limit)


def fits_today(user_id: str, amount: int) -> bool:
    """Whether ``amount`` would pass both limits now, counting nothing: for a step that must not start on a movement
    the limits will refuse (taking a card payment's shortfall from the card). ``consume_daily`` still decides."""
    if amount > current_app.config["LIMIT_PER_TRANSACTION"]:
        return False
    used = _USED.scalar(user=user_id, day=clock.now().astimezone(CST).date()) or 0
    return used + amount <= current_app.config["LIMIT_DAILY"]


def release_daily(user_id: str, amount: int, day_of: object) -> None:
    """Give back what a failed withdrawal had counted on the day it was requested."""
    day = day_of.astimezone(CST).date()  # type: ignore[attr-defined]
    _RELEASE.run(amount=amount, user=user_id, day=day)


def purge_past_days(now: datetime | None = None, batch: int = 5000) -> int:
    """Delete the usage rows (``daily_usage`` and ``daily_payee_usage``) of the days before yesterday (China Standard
    Time), ``batch`` per transaction; returns how many went, of both tables. Yesterday's stay a day longer, for
    whoever looks into a limit refused at midnight."""
    yesterday = (now or clock.now()).astimezone(CST).date() - timedelta(days=1)
    return (delete_in_batches((DailyUsage.user_id, DailyUsage.day), DailyUsage.day < yesterday, batch=batch)
            + delete_in_batches((DailyPayeeUsage.payer_id, DailyPayeeUsage.payee_id, DailyPayeeUsage.day),
                                DailyPayeeUsage.day < yesterday, batch=batch))
