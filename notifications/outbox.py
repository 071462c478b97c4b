"""``enqueue``: write an alert in the caller's transaction. If the change rolls back, so does the alert.

The row is written when the transaction commits (``core.sql.insert_at_commit``): all of a transaction's alerts
in one multi-row INSERT, and on PostgreSQL inside the statement that stores an idempotency key's answer when
there is one, so announcing a payment costs no statement of its own. A rollback (including a retried
serialization failure) throws the rows away with everything else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core import clock
from core.ids import new_id
from core.sql import insert_at_commit
from notifications.models import Alert
from notifications.templates import render

_alerts = Alert.__table__


@dataclass(frozen=True)
class QueuedAlert:
    """What was queued; the row itself is written when the transaction commits."""

    id: str
    to_phone: str
    event: str
    body: str


def enqueue(
    to_phone: str,
    event: str,
    *,
    locale: str,
    user_id: str | None = None,
    sensitive: bool = False,
    **params: Any,
) -> QueuedAlert:
    """Render ``event`` for ``to_phone`` and add it to the outbox of the current transaction.

    Raises ``RuntimeError`` when called outside a transaction: an alert must commit with its change.
    """
    now = clock.now()
    # status (pending), attempts (0) and sensitive (false) come from the columns' server defaults.
    row = {"id": new_id("sms"), "user_id": user_id, "to_phone": to_phone, "event": event, "locale": locale,
           "body": render(event, locale, params), "next_attempt_at": now, "created_at": now, "updated_at": now}
    if sensitive:
        row["sensitive"] = True
    insert_at_commit(_alerts, row)  # raises RuntimeError outside a transaction
    return QueuedAlert(row["id"], to_phone, event, row["body"])
