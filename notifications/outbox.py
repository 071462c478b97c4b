"""``enqueue``: write an alert in the caller's transaction. If the change rolls back, so does the alert.

The rows are collected on the session and written by one multi-row ``INSERT`` just before the transaction
commits (a ``before_commit`` hook), so announcing a change costs one statement however many alerts it sends;
a rollback (including a retried serialization failure) throws the collected rows away with everything else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import TextClause, bindparam, event, text
from sqlalchemy.orm import Session

from core import clock
from core.db import db, in_transaction
from core.ids import new_id
from notifications.models import PENDING, Alert
from notifications.templates import render

_KEY = "outbox_rows"
_COLUMNS = ("id", "user_id", "to_phone", "event", "locale", "body", "sensitive", "status", "attempts",
            "next_attempt_at", "created_at", "updated_at")
_CHUNK = 16
_inserts: dict[int, TextClause] = {}


def _insert_rows(count: int) -> TextClause:
    """``INSERT INTO alerts ... VALUES (...), (...)`` for ``count`` rows, built once per count: a single
    statement, where an executemany would cost psycopg a pipeline and a sync (twice the time for two rows)."""
    stmt = _inserts.get(count)
    if stmt is None:
        table = Alert.__table__
        rows = ", ".join("(" + ", ".join(f":{name}_{i}" for name in _COLUMNS) + ")" for i in range(count))
        stmt = text(f"INSERT INTO alerts ({', '.join(_COLUMNS)}) VALUES {rows}").bindparams(  # noqa: S608
            *[bindparam(f"{name}_{i}", type_=table.c[name].type) for i in range(count) for name in _COLUMNS])
        _inserts[count] = stmt
    return stmt


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
        connection = session.connection()
        for start in range(0, len(rows), _CHUNK):
            chunk = rows[start:start + _CHUNK]
            connection.execute(_insert_rows(len(chunk)),
                               {f"{name}_{i}": row[name] for i, row in enumerate(chunk) for name in _COLUMNS})


@event.listens_for(Session, "after_rollback")
def _discard_outbox(session: Session) -> None:
    session.info.pop(_KEY, None)
