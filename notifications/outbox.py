"""``enqueue``: write an alert in the caller's transaction. If the change rolls back, so does the alert.

The rows are collected on the session and written by one multi-row ``INSERT`` just before the transaction
commits (a ``before_commit`` hook), so announcing a change costs one statement however many alerts it sends;
a rollback (including a retried serialization failure) throws the collected rows away with everything else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import event, insert
from sqlalchemy.orm import Session

from core import clock
from core.db import db, in_transaction
from core.ids import new_id
from notifications.models import PENDING, Alert
from notifications.templates import render

_KEY = "outbox_rows"


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
    if not in_transaction():
        raise RuntimeError("enqueue() must run inside the transaction of the change it announces")
    now = clock.now()
    row = {
        "id": new_id("sms"), "user_id": user_id, "to_phone": to_phone, "event": event, "locale": locale,
        "body": render(event, locale, params), "sensitive": sensitive, "status": PENDING, "attempts": 0,
        "next_attempt_at": now, "created_at": now, "updated_at": now,
    }
    db.session.info.setdefault(_KEY, []).append(row)
    return QueuedAlert(row["id"], to_phone, event, row["body"])


@event.listens_for(Session, "before_commit")
def _write_outbox(session: Session) -> None:
    rows = session.info.pop(_KEY, None)
    if rows:
        session.execute(insert(Alert.__table__), rows)


@event.listens_for(Session, "after_rollback")
def _discard_outbox(session: Session) -> None:
    session.info.pop(_KEY, None)
