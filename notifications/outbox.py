"""``enqueue``: write an alert in the caller's transaction. If the change rolls back, so does the alert.

A transaction's alerts travel as **one** ``alert_events`` row holding all of them: a payment announced to both
parties writes one narrow row with a primary key, not two ``alerts`` rows with their indexes and constraints. A
dispatcher expands the row into ``alerts`` (one per SMS, rendered then) and deletes it in one transaction
(``dispatcher.expand``), so every alert a committed change queued is sent, and none twice over. What the payment
pays for is an id and a list entry per alert, and the row's one JSON encoding when it is written.

The row is written when the transaction commits (``core.sql.insert_at_commit``), and on PostgreSQL inside the
statement that stores an idempotency key's answer when there is one, so announcing a payment costs no statement
of its own. A rollback (including a retried serialization failure) throws it away with everything else. An
alert queued after a statement has already carried the transaction's row starts a second row, and so does the
101st alert of one transaction.

An event without a template is refused here, in the change's transaction; parameters a template cannot use show
up when the dispatcher renders the text, as a ``failed`` alert and an error in the log (``dispatcher.expand``),
never as a change refused or an outbox stuck behind it. Every template is rendered by the tests with the
parameters its callers pass.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from core import clock
from core.db import blocks
from core.ids import new_id
from core.sql import WrittenAs, insert_at_commit, queued_at_commit
from notifications.models import AlertEvent
from notifications.templates import TEMPLATES, render

_events = AlertEvent.__table__
_EVENT = "notifications.outbox.event"  # in the transaction's info: its event row and the messages in it
# A transaction that queues more (a batch job's) starts another row: an expansion's work stays bounded.
MESSAGES_PER_EVENT = 100


@dataclass(frozen=True)
class QueuedAlert:
    """What was queued; the row itself is written when the transaction commits."""

    id: str
    to_phone: str
    event: str
    locale: str
    params: dict[str, Any] = field(repr=False)

    @property
    def body(self) -> str:
        """The text the dispatcher will send."""
        return render(self.event, self.locale, self.params)


def enqueue(
    to_phone: str,
    event: str,
    *,
    locale: str,
    user_id: str | None = None,
    sensitive: bool = False,
    **params: Any,
) -> QueuedAlert:
    """Add ``event`` for ``to_phone`` to the outbox of the current transaction.

    Raises ``RuntimeError`` when called outside a transaction (an alert must commit with its change), and
    ``KeyError`` for an event without a template.
    """
    if event not in TEMPLATES:
        raise KeyError(f"no SMS template for event {event!r}")
    message = {"id": new_id("sms"), "user_id": user_id, "to_phone": to_phone, "event": event, "locale": locale,
               "sensitive": sensitive, "params": params}
    state = blocks()
    waiting = state.info.get(_EVENT) if state.depth else None
    if waiting is not None and len(waiting[1]) < MESSAGES_PER_EVENT and queued_at_commit(waiting[0]):
        waiting[1].append(message)
    else:
        messages = [message]
        # Named after its first message (unique and time-ordered like it): an id less to make on the payment's path.
        row = {"id": "evt" + message["id"][3:], "created_at": clock.now(), "message_count": WrittenAs(messages.__len__),
               "messages": WrittenAs(lambda: json.dumps(messages, ensure_ascii=False, separators=(",", ":")))}
        insert_at_commit(_events, row)  # raises RuntimeError outside a transaction
        state.info[_EVENT] = (row, messages)
    return QueuedAlert(message["id"], to_phone, event, locale, params)


def decoded(messages: str) -> list[dict[str, Any]]:
    """The messages of an ``alert_events`` row, as ``enqueue`` wrote them."""
    return json.loads(messages)
