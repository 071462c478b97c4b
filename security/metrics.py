"""Security gauges for ``/metrics``: credentials locked right now, and lock events so far."""

from __future__ import annotations

from sqlalchemy import func, or_, select

from core import clock
from core.db import db, run_in_transaction
from notifications.models import Alert
from security.models import CredentialLock


def gauges():
    def read():
        now = clock.now()
        locked = dict(db.session.execute(
            select(CredentialLock.kind, func.count())
            .where(or_(CredentialLock.hard_locked.is_(True), CredentialLock.locked_until > now))
            .group_by(CredentialLock.kind)).all())
        # Every lock of a real account sends its owner an alert, so the outbox counts lock events across
        # all processes and restarts.
        events = dict(db.session.execute(
            select(Alert.event, func.count()).where(Alert.event.in_(("login_locked", "payment_locked")))
            .group_by(Alert.event)).all())
        return locked, events

    locked, events = run_in_transaction(read)
    return [
        ("wallet_credentials_locked", "passwords locked right now", ["kind"],
         [([kind], float(locked.get(kind, 0))) for kind in ("login", "payment")]),
        ("wallet_lock_events", "locks of real accounts since the start (from the lock alerts)", ["kind"],
         [([kind], float(events.get(f"{kind}_locked", 0))) for kind in ("login", "payment")]),
    ]
