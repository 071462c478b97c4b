"""The dispatcher: claims due alerts from the outbox, hands them to the sender, records the outcome.

Claiming is a short transaction of its own: due rows (``pending``, or ``sending`` whose lease ran out
because a dispatcher died) are selected ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so several dispatchers
share the queue without waiting on each other, and marked ``sending`` with a lease. Sending happens outside
any transaction; the outcome is written in another short one.

Guarantee: at-least-once. A dispatcher that dies after the provider accepted a message but before recording
it leaves the row ``sending``; when the lease expires the message is sent again.

Failures: a permanent one (bad number) fails the alert at once; a transient one is retried with exponential
backoff and jitter until the alert is older than ``SMS_MAX_AGE_SECONDS``, then fails.
"""

from __future__ import annotations

import logging
import random
from datetime import timedelta

from flask import current_app
from sqlalchemy import or_, select

from core import clock
from core.db import db, is_postgres, run_in_transaction
from notifications.models import FAILED, PENDING, SENDING, SENT, Alert
from notifications.sms import SendFailed, SmsSender

log = logging.getLogger(__name__)

LEASE = timedelta(seconds=60)
REDACTED = "[one-time code removed after sending]"


def backoff(attempts: int) -> timedelta:
    """Exponential backoff with full jitter: up to 2, 4, 8 ... seconds, capped at 10 minutes."""
    return timedelta(seconds=random.uniform(1, min(600, 2**attempts)))


def claim(batch_size: int) -> list[tuple[str, str, str, str, str]]:
    """Mark up to ``batch_size`` due alerts ``sending`` under a lease and return what to send."""

    def work() -> list[tuple[str, str, str, str, str]]:
        now = clock.now()
        stmt = (
            select(Alert)
            .where(
                Alert.status.in_((PENDING, SENDING)),
                Alert.next_attempt_at <= now,
            )
            .order_by(Alert.next_attempt_at)
            .limit(batch_size)
        )
        if is_postgres():
            stmt = stmt.with_for_update(skip_locked=True)
        claimed = []
        for alert in db.session.scalars(stmt):
            alert.status = SENDING
            alert.attempts += 1
            alert.next_attempt_at = now + LEASE
            alert.updated_at = now
            claimed.append((alert.id, alert.to_phone, alert.body, alert.event, alert.created_at.isoformat()))
        return claimed

    return run_in_transaction(work)


def _record(alert_id: str, provider_id: str | None, error: SendFailed | None) -> None:
    def work() -> None:
        alert = db.session.get(Alert, alert_id, with_for_update=True)
        if alert is None or alert.status != SENDING:
            return  # someone else finished it (a duplicate after a lease expiry)
        now = clock.now()
        alert.updated_at = now
        if error is None:
            alert.status, alert.provider_id, alert.sent_at, alert.last_error = SENT, provider_id, now, None
            if alert.sensitive:
                alert.body = REDACTED
            return
        alert.last_error = str(error)[:2000]
        max_age = timedelta(seconds=current_app.config["SMS_MAX_AGE_SECONDS"])
        if error.permanent or now - alert.created_at >= max_age:
            alert.status = FAILED
            log.warning("sms %s failed for good after %d attempts: %s", alert_id, alert.attempts, error)
        else:
            alert.status = PENDING
            alert.next_attempt_at = now + backoff(alert.attempts)

    run_in_transaction(work)


def dispatch_once(sender: SmsSender, batch_size: int = 100) -> int:
    """Send one batch of due alerts; returns how many were attempted."""
    batch = claim(batch_size)
    for alert_id, to, body, event, created_at in batch:
        try:
            provider_id = sender.send(to=to, body=body, event=event, alert_id=alert_id, created_at=created_at)
        except SendFailed as exc:
            _record(alert_id, None, exc)
        else:
            _record(alert_id, provider_id, None)
    return len(batch)


def dispatch_all(sender: SmsSender, batch_size: int = 100) -> int:
    """Send until nothing is due (tests and the CLI's ``--drain``)."""
    total = 0
    while sent := dispatch_once(sender, batch_size):
        total += sent
    return total


def pending_count() -> int:
    return db.session.query(Alert).filter(or_(Alert.status == PENDING, Alert.status == SENDING)).count()
