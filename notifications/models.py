"""The outbox: ``alert_events``, written with the change it announces, and ``alerts``, one row per SMS.

A change writes one ``alert_events`` row holding every message it announces, rendered (``outbox.enqueue``); a
dispatcher expands it into ``alerts`` rows and deletes it in one transaction (``dispatcher.expand``), then sends
those. Two tables because the change's transaction is on the payment's path: one narrow row with its primary key
there, and the per-message rows with the indexes that sending, listing and callbacks need written off it.

Life of a row (``status``): ``pending`` → ``sending`` (claimed by a dispatcher under a lease) → ``sent``
(handed to the provider) → ``delivered`` / ``undelivered`` / ``failed`` as the provider's callbacks report;
or ``failed`` straight from ``sending`` when the provider refuses it for good, it grew too old to retry, or it
carries a one-time code that expired, or that a newer code sent to the same number replaced, before it went out.
``provider_status`` is the provider's own word (``queued`` … ``delivered``) and only ever moves forward.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import NamedTuple

from sqlalchemy import CheckConstraint, Index, Integer, SmallInteger, String, Text, false, text
from sqlalchemy.orm import Mapped, mapped_column

from core import sql
from core.db import UTCDateTime, db
from core.pagination import PageQuery, read_page

PENDING, SENDING, SENT, DELIVERED, UNDELIVERED, FAILED = (
    "pending", "sending", "sent", "delivered", "undelivered", "failed",
)
STATUSES = (PENDING, SENDING, SENT, DELIVERED, UNDELIVERED, FAILED)
# What a one-time-code alert's body becomes once sent; the API shows it in place of any live code.
REDACTED = "[one-time code removed after sending]"
# One-time-code messages (``security.codes`` sends them, and its codes live this long). The code is made in the
# transaction that queues its message, so a code expires ``CODE_LIFETIME`` after its alert's ``created_at``: here,
# below security, so that the dispatcher knows when such a message is no longer worth sending.
CODE_EVENT = "sms_code"
CODE_LIFETIME = timedelta(minutes=10)

# The provider's statuses in the order a message passes through them (Twilio's names). A report may only
# move a message forward; once a final one is recorded nothing changes it, so duplicated, late or
# out-of-order callbacks (``delivered`` then a late ``sent``) are harmless.
PROVIDER_RANK = {"accepted": 0, "scheduled": 0, "queued": 1, "sending": 2, "sent": 3}
PROVIDER_FINAL = {"delivered": DELIVERED, "read": DELIVERED, "undelivered": UNDELIVERED, "failed": FAILED,
                  "canceled": FAILED}
PROVIDER_STATUSES = frozenset(PROVIDER_RANK) | frozenset(PROVIDER_FINAL)


def advance_provider_status(current: str | None, reported: str) -> str | None:
    """The provider status to keep after ``reported`` arrives on top of ``current``."""
    if current in PROVIDER_FINAL or reported not in PROVIDER_STATUSES:
        return current
    if reported in PROVIDER_FINAL or current is None:
        return reported
    return reported if PROVIDER_RANK[reported] > PROVIDER_RANK.get(current, -1) else current


def status_after_hand_over(provider_status: str | None) -> str:
    """An alert's ``status`` once the provider has it: ``sent`` until the provider reports a final word."""
    return PROVIDER_FINAL.get(provider_status or "", SENT)


# The predicates of the partial indexes below; a query uses such an index only if its WHERE says the same.
UNSENT_WHERE = "status IN ('pending', 'sending')"
FAILED_WHERE = "status = 'failed'"
IN_DOUBT_WHERE = "resends_in_doubt > 0"
LOCK_EVENTS_WHERE = "event IN ('login_locked', 'payment_locked', 'recovery_locked')"  # migration 0034


class AlertEvent(db.Model):
    """What a transaction announced, waiting for a dispatcher to expand it into ``alerts``."""

    __tablename__ = "alert_events"
    __table_args__ = (CheckConstraint("message_count > 0", name="message_count_positive"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # time-ordered: expanded oldest first
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # How many messages ``messages`` holds, so that the queue's depth is counted without reading them.
    message_count: Mapped[int] = mapped_column(SmallInteger)
    # JSON: a list of the alerts' columns (id, user_id, to_phone, event, locale, body, sensitive).
    messages: Mapped[str] = mapped_column(Text)


class Alert(db.Model):
    __tablename__ = "alerts"
    __table_args__ = (
        CheckConstraint(f"status IN {STATUSES!r}", name="status_known"),
        CheckConstraint("attempts >= 0", name="attempts_not_negative"),
        # The dispatcher's claim query: the rows still to send, in the order they fall due. Partial: a row leaves
        # it once handed over, so it stays as small as the queue however many alerts were ever sent, and a claim
        # reads its batch off the front in order (no sort of the whole backlog after an outage).
        Index("ix_alerts_due", "next_attempt_at", postgresql_where=text(UNSENT_WHERE),
              sqlite_where=text(UNSENT_WHERE)),
        # /metrics (``dispatcher.queue_status``, ``security.metrics``) counts rows that are rare by nature through
        # partial indexes holding only them, never by reading the whole outbox; a new alert (but a lock alert)
        # matches none of them.
        Index("ix_alerts_failed", "id", postgresql_where=text(FAILED_WHERE), sqlite_where=text(FAILED_WHERE)),
        Index("ix_alerts_in_doubt", "id", postgresql_where=text(IN_DOUBT_WHERE),
              sqlite_where=text(IN_DOUBT_WHERE)),
        Index("ix_alerts_lock_events", "event", postgresql_where=text(LOCK_EVENTS_WHERE),
              sqlite_where=text(LOCK_EVENTS_WHERE)),
        # GET /me/alerts: one user's alerts, newest first, by cursor (and any other look-up by user).
        Index("ix_alerts_user_recent", "user_id", "id"),
        # Delivery callbacks find their message by the provider's id, which a row gets only once handed over:
        # partial, so writing a new alert (on every payment's path) does not touch this index.
        Index("ix_alerts_provider_id", "provider_id", postgresql_where=text("provider_id IS NOT NULL"),
              sqlite_where=text("provider_id IS NOT NULL")),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    # Plain column, no foreign key: notifications sits below security and knows nothing of users.
    user_id: Mapped[str | None] = mapped_column(String(40))
    to_phone: Mapped[str] = mapped_column(String(20))
    event: Mapped[str] = mapped_column(String(48))
    locale: Mapped[str] = mapped_column(String(8))
    body: Mapped[str] = mapped_column(Text)
    # Bodies of one-time-code messages are blanked once sent, so the outbox never keeps a live code.
    sensitive: Mapped[bool] = mapped_column(default=False, server_default=false())
    status: Mapped[str] = mapped_column(String(16), default=PENDING, server_default=PENDING)
    # Hand-overs begun (counted before each one starts, so a dispatcher's death still leaves a trace).
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # While ``pending``: when to try next. While ``sending``: when the claim's lease runs out.
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # The dispatcher claim that owns a ``sending`` row; outcomes from any other claim are fenced off.
    claim_token: Mapped[str | None] = mapped_column(String(32))
    # Set just before the message goes to the provider, cleared with the outcome. Still set when a lease
    # expires = the dispatcher died mid-hand-over and nobody knows whether the provider took the message.
    in_flight_since: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # How many times the message was sent again after such an unknown outcome (each one a possible duplicate).
    resends_in_doubt: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_error: Mapped[str | None] = mapped_column(Text)
    provider_id: Mapped[str | None] = mapped_column(String(64))
    provider_status: Mapped[str | None] = mapped_column(String(16))
    provider_error_code: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class AlertView(NamedTuple):
    """An alert as its owner sees it listed."""

    id: str
    event: str
    to_phone: str
    body: str
    sensitive: bool
    status: str
    created_at: datetime
    sent_at: datetime | None


_ALERT_PAGES: dict[tuple[bool, int], sql.Statement] = {}


def _alert_page(after: bool, rows: int) -> sql.Statement:
    """The page query with or without a cursor, for one page size (written into the SQL: see
    ``core.pagination``), built once. ``ix_alerts_user_recent`` serves it as one index range scan."""
    stmt = _ALERT_PAGES.get((after, rows))
    if stmt is None:
        stmt = _ALERT_PAGES[(after, rows)] = sql.Statement(
            f"SELECT {', '.join(AlertView._fields)} FROM alerts WHERE user_id = :viewer_id"  # noqa: S608 - constants
            f"{' AND id < :starting_after' if after else ''} ORDER BY id DESC LIMIT {int(rows)}",
            utc=["created_at", "sent_at"], boolean=["sensitive"])
    return stmt


def alerts_of(viewer: sql.Viewer, query: PageQuery) -> tuple[list[AlertView], bool]:
    """One page of the viewer's alerts (``sql.Viewing(user_id)``, or the request's caller, whose token check then
    rides in the same statement), newest first, and whether more remain. Never anyone else's."""
    stmt = _alert_page(query.starting_after is not None, query.limit + 1)
    params = {} if query.starting_after is None else {"starting_after": query.starting_after}
    rows, more = read_page(viewer, stmt, params, query.limit)
    return [AlertView(*row) for row in rows], more
