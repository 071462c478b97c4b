"""``enqueue``: write an alert in the caller's transaction. If the change rolls back, so does the alert."""

from __future__ import annotations

from typing import Any

from core import clock
from core.db import db, in_transaction
from core.ids import new_id
from notifications.models import PENDING, Alert
from notifications.templates import render


def enqueue(
    to_phone: str,
    event: str,
    *,
    locale: str,
    user_id: str | None = None,
    sensitive: bool = False,
    **params: Any,
) -> Alert:
    """Render ``event`` for ``to_phone`` and add it to the outbox of the current transaction.

    Raises ``RuntimeError`` when called outside a transaction: an alert must commit with its change.
    """
    if not in_transaction():
        raise RuntimeError("enqueue() must run inside the transaction of the change it announces")
    now = clock.now()
    alert = Alert(
        id=new_id("sms"),
        user_id=user_id,
        to_phone=to_phone,
        event=event,
        locale=locale,
        body=render(event, locale, params),
        sensitive=sensitive,
        status=PENDING,
        attempts=0,
        next_attempt_at=now,
        created_at=now,
        updated_at=now,
    )
    db.session.add(alert)
    return alert
