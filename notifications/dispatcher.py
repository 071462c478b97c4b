"""The dispatcher: claims due alerts from the outbox, hands them to the sender, records the outcome.

Several dispatchers may run at once (``flask notifications dispatch`` processes, the dev server's thread).
Each message goes through three short transactions, and the sending itself happens outside any:

1. ``claim``: due rows (``pending`` whose time has come, or ``sending`` whose lease ran out because their
   dispatcher died) are selected ``FOR UPDATE SKIP LOCKED`` on PostgreSQL (SQLite serialises writers with
   ``BEGIN IMMEDIATE``), stamped with a fresh ``claim_token`` and a lease, and marked ``sending``.
2. ``begin_attempt``: just before the hand-over, and only while the claim is still ours, the attempt is
   written down: ``attempts + 1``, ``in_flight_since = now``, the lease renewed. A dispatcher that lost its
   claim (its lease ran out and another took the row) sends nothing.
3. ``record_sent`` / ``record_failure``: the outcome, fenced by the claim token; ``in_flight_since`` cleared.

Delivery guarantee: **at least once, with duplicates confined to hand-overs whose outcome is unknown.**
Every committed alert is handed to the provider until the provider accepts it, refuses it for good
(``failed`` at once), or it is older than ``SMS_MAX_AGE_SECONDS`` (``failed`` and logged as an error; the
``flask notifications status`` command shows it). A message is sent twice only when the provider accepted
it but the acceptance was never recorded: the dispatcher died (or lost the database) between the provider's
answer and step 3, or the provider's answer was lost on the wire (a read timeout after Twilio took the
request). Twilio's Messages API has no idempotency key, so no client can close that window; we narrow it:

- one message is in flight per dispatcher at a time, so a crash puts at most one message in doubt per
  dispatcher; rows it had claimed but not started are sent later without any doubt;
- such a row keeps ``in_flight_since`` (after a crash, and after a failure that may hide an accepted
  message: a read timeout, a connection dropped mid-answer); before re-sending it the dispatcher checks
  whether a delivery callback meanwhile proved Twilio has the message (the callback URL carries the alert id
  and sets ``provider_id``): if so it is recorded as sent and **not** sent again; otherwise it is re-sent and
  ``resends_in_doubt`` is counted: the upper bound of duplicates, shown by the status command (a 5xx answer
  is assumed to mean Twilio created nothing);
- the HTTP client never retries by itself, and the lease (``SMS_LEASE_SECONDS``, default 60 s) is far
  longer than a hand-over may take (``SMS_SEND_TIMEOUT_SECONDS``, default 10 s), so a live dispatcher never
  has a message taken from under it.

The opposite choice (never re-send an alert whose outcome is unknown) would turn each such duplicate into a
lost alert; for a security alert a duplicate is the lesser harm.

Failures: a permanent one (invalid, unreachable or unsubscribed number) fails the alert at once; a
transient one (429, 5xx, timeouts, connection errors, configuration) is retried with exponential backoff
and jitter, the last try falling at the alert's maximum age.
"""

from __future__ import annotations

import logging
import random
import secrets
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import func, select, update
from sqlalchemy.exc import InterfaceError, OperationalError

from core import clock
from core.db import db, is_postgres, run_in_transaction
from notifications.models import FAILED, PENDING, REDACTED, SENDING, STATUSES, Alert, status_after_hand_over
from notifications.sms import SendFailed, SmsSender

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outgoing:
    """What the sender needs of one claimed alert (plain values: no ORM object outlives its transaction)."""

    id: str
    to: str
    body: str
    event: str
    created_at: str


@dataclass
class Batch:
    token: str
    alerts: list[Outgoing] = field(default_factory=list)


def _setting(name: str) -> float:
    return current_app.config[name]


def _lease() -> timedelta:
    return timedelta(seconds=_setting("SMS_LEASE_SECONDS"))


def backoff(attempts: int, base: float = 2.0, cap: float = 600.0) -> timedelta:
    """Exponential backoff with jitter: after attempt n, between half and all of ``base * 2**(n-1)``,
    capped at ``cap`` seconds. The random half spreads retries of alerts that failed together."""
    ceiling = min(cap, base * 2 ** max(0, attempts - 1))
    return timedelta(seconds=random.uniform(ceiling / 2, ceiling))


def claim(batch_size: int) -> Batch:
    """Mark up to ``batch_size`` due alerts ``sending`` under a fresh claim token and lease."""
    batch = Batch(token=secrets.token_hex(16))

    def work() -> None:
        batch.alerts.clear()
        now = clock.now()
        stmt = (
            select(Alert)
            .where(Alert.status.in_((PENDING, SENDING)), Alert.next_attempt_at <= now)
            .order_by(Alert.next_attempt_at)
            .limit(batch_size)
        )
        if is_postgres():
            stmt = stmt.with_for_update(skip_locked=True)
        for alert in db.session.scalars(stmt):
            alert.status = SENDING
            alert.claim_token = batch.token
            alert.next_attempt_at = now + _lease()
            alert.updated_at = now
            batch.alerts.append(
                Outgoing(alert.id, alert.to_phone, alert.body, alert.event, alert.created_at.isoformat())
            )

    run_in_transaction(work)
    return batch


def _locked(alert_id: str) -> Alert | None:
    return db.session.get(Alert, alert_id, with_for_update=True, populate_existing=True)


def _mark_sent(alert: Alert, provider_id: str, now: datetime) -> None:
    alert.status = status_after_hand_over(alert.provider_status)
    # A callback may have recorded the SID first (of this message, or of an earlier copy): keep it.
    alert.provider_id = alert.provider_id or provider_id
    alert.sent_at = alert.sent_at or now
    alert.last_error = None
    alert.claim_token = None
    alert.in_flight_since = None
    alert.updated_at = now
    if alert.sensitive:
        alert.body = REDACTED


def begin_attempt(alert_id: str, token: str) -> bool:
    """Write down that the message is about to be handed over; False when it must not be sent (the claim
    was lost, or a callback showed that the provider already has it)."""

    def work() -> bool:
        alert = _locked(alert_id)
        if alert is None or alert.claim_token != token or alert.status != SENDING:
            return False
        now = clock.now()
        if alert.provider_id:
            # Only a delivery callback sets this before an outcome is recorded: the provider has the message
            # from a hand-over whose answer we never recorded. Sending again would be a duplicate.
            log.warning("alert %s: provider already has it (%s); recorded as sent, not sent again",
                        alert_id, alert.provider_id)
            _mark_sent(alert, alert.provider_id, now)
            return False
        if alert.in_flight_since is not None:
            alert.resends_in_doubt += 1
            log.warning("alert %s: the hand-over begun at %s has no known outcome; sending again",
                        alert_id, alert.in_flight_since.isoformat())
        alert.in_flight_since = now
        alert.attempts += 1
        alert.next_attempt_at = now + _lease()
        alert.updated_at = now
        return True

    return run_in_transaction(work)


def record_sent(alert_id: str, provider_id: str) -> None:
    """The provider accepted the message. Recorded even if our claim was lost meanwhile: it *was* sent."""

    def work() -> None:
        alert = _locked(alert_id)
        if alert is None:
            return
        if alert.status in (PENDING, SENDING):
            _mark_sent(alert, provider_id, clock.now())
        else:
            log.warning("alert %s handed over again as %s after it was recorded as %s (%s)",
                        alert_id, provider_id, alert.status, alert.provider_id)

    run_in_transaction(work)


def record_failure(alert_id: str, token: str, error: SendFailed) -> None:
    """The provider refused the message: fail it (permanent, or too old) or schedule the next try."""

    def work() -> None:
        alert = _locked(alert_id)
        if alert is None or alert.claim_token != token or alert.status != SENDING:
            return  # another dispatcher owns this alert now and decides its fate
        now = clock.now()
        alert.last_error = str(error)[:2000]
        if not error.in_doubt:
            # The provider surely has nothing. When it may have (a lost answer), ``in_flight_since`` stays, so
            # the next attempt first looks for a callback and otherwise counts itself as a resend in doubt.
            alert.in_flight_since = None
        alert.claim_token = None
        alert.updated_at = now
        deadline = alert.created_at + timedelta(seconds=_setting("SMS_MAX_AGE_SECONDS"))
        if error.permanent:
            alert.status = FAILED
            log.warning("alert %s (%s) refused for good after %d attempts: %s",
                        alert_id, alert.event, alert.attempts, error)
        elif now >= deadline:
            alert.status = FAILED
            log.error("alert %s (%s) still unsent after %d attempts and %s; given up: %s",
                      alert_id, alert.event, alert.attempts, now - alert.created_at, error)
        else:
            alert.status = PENDING
            delay = backoff(alert.attempts, _setting("SMS_BACKOFF_BASE_SECONDS"), _setting("SMS_BACKOFF_MAX_SECONDS"))
            alert.next_attempt_at = min(now + delay, deadline)

    run_in_transaction(work)


def release(token: str) -> int:
    """Give back the alerts of a claim that were not started (a dispatcher stopping mid-batch)."""

    def work() -> int:
        result = db.session.execute(
            update(Alert)
            .where(Alert.claim_token == token, Alert.status == SENDING)
            .values(status=PENDING, claim_token=None, next_attempt_at=clock.now())
        )
        return result.rowcount

    return run_in_transaction(work)


def dispatch_once(sender: SmsSender, batch_size: int | None = None, stop: threading.Event | None = None) -> int:
    """Claim one batch and send it; returns how many alerts were claimed. Stops between two messages when
    ``stop`` is set, giving back what it had not started."""
    batch = claim(batch_size or int(_setting("SMS_BATCH_SIZE")))
    for item in batch.alerts:
        if stop is not None and stop.is_set():
            release(batch.token)
            break
        if not begin_attempt(item.id, batch.token):
            continue
        try:
            provider_id = sender.send(
                to=item.to, body=item.body, event=item.event, alert_id=item.id, created_at=item.created_at
            )
        except SendFailed as exc:
            record_failure(item.id, batch.token, exc)
        else:
            record_sent(item.id, provider_id)
    return len(batch.alerts)


def dispatch_all(sender: SmsSender, batch_size: int | None = None) -> int:
    """Send until nothing is due (tests and the CLI's ``--once``)."""
    total = 0
    while claimed := dispatch_once(sender, batch_size):
        total += claimed
    return total


def run(sender: SmsSender, stop: threading.Event, interval: float | None = None,
        batch_size: int | None = None) -> None:
    """The dispatcher loop: send what is due, sleep ``interval`` when nothing is, until ``stop`` is set."""
    interval = interval if interval is not None else float(_setting("DISPATCH_INTERVAL_SECONDS"))
    log.info("dispatcher started")
    while not stop.is_set():
        try:
            claimed = dispatch_once(sender, batch_size, stop)
        except (OperationalError, InterfaceError) as exc:
            # The database is unreachable: nothing can be claimed or recorded. Rows we hold come back when
            # their leases run out.
            log.error("dispatcher cannot reach the database, retrying: %s", exc.orig)
            stop.wait(max(interval, 1.0) * 5)
            continue
        if not claimed:
            stop.wait(interval)
    log.info("dispatcher stopped")


@dataclass(frozen=True)
class QueueStatus:
    by_status: dict[str, int]
    oldest_unsent_id: str | None
    oldest_unsent_age: timedelta | None
    resends_in_doubt: int

    def lines(self) -> list[str]:
        """The report as ``flask notifications status`` prints it."""
        out = [f"{status:<12}{self.by_status.get(status, 0):>9}" for status in STATUSES]
        if self.oldest_unsent_age is None:
            out.append("oldest unsent: none")
        else:
            out.append(f"oldest unsent: {int(self.oldest_unsent_age.total_seconds())}s ({self.oldest_unsent_id})")
        out.append(f"re-sent after an unknown outcome (possible duplicates): {self.resends_in_doubt}")
        return out


def queue_status() -> QueueStatus:
    """Queue depth by status, the oldest alert not yet handed over, and how many re-sends were in doubt."""
    counts = dict(db.session.execute(select(Alert.status, func.count()).group_by(Alert.status)).all())
    oldest = db.session.execute(
        select(Alert.id, Alert.created_at)
        .where(Alert.status.in_((PENDING, SENDING)))
        .order_by(Alert.created_at)
        .limit(1)
    ).first()
    doubtful = db.session.scalar(select(func.coalesce(func.sum(Alert.resends_in_doubt), 0)))
    db.session.rollback()
    return QueueStatus(
        by_status=counts,
        oldest_unsent_id=oldest.id if oldest else None,
        oldest_unsent_age=clock.now() - oldest.created_at if oldest else None,
        resends_in_doubt=int(doubtful or 0),
    )


def pending_count() -> int:
    """Alerts not yet handed over (``pending`` or ``sending``)."""
    return sum(queue_status().by_status.get(status, 0) for status in (PENDING, SENDING))
