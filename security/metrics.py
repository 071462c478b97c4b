"""Security gauges for ``/metrics``: credentials locked right now, and lock events so far."""

from __future__ import annotations

from sqlalchemy import bindparam, func, or_, select, text

from core import clock
from core.db import db, run_in_transaction
from notifications.models import LOCK_EVENTS_WHERE, Alert
from security.models import CredentialLock

# Both read through partial indexes that hold only such rows (``CredentialLock``, ``notifications.models.Alert``),
# never the lock state of everyone who ever mistyped a password nor the whole outbox.
_LOCKED_NOW = (select(CredentialLock.kind, func.count())
               .where(or_(CredentialLock.hard_locked, CredentialLock.locked_until > bindparam("now")))
               .group_by(CredentialLock.kind))
# Every lock of a real account sends its owner an alert, so the outbox counts lock events across all processes
# and restarts.
_LOCK_EVENTS = select(Alert.event, func.count()).where(text(LOCK_EVENTS_WHERE)).group_by(Alert.event)


def gauges():
    def read():
        locked = dict(db.session.execute(_LOCKED_NOW, {"now": clock.now()}).all())
        return locked, dict(db.session.execute(_LOCK_EVENTS).all())

    locked, events = run_in_transaction(read, read_only=True)
    return [
        ("wallet_credentials_locked", "secrets locked right now: login and payment passwords, recoveries' authenticator"
         " codes", ["kind"], [([kind], float(locked.get(kind, 0))) for kind in _LOCK_ALERTS]),
        ("wallet_lock_events", "locks of real accounts since the start (from the lock alerts)", ["kind"],
         [([kind], float(events.get(event, 0))) for kind, event in _LOCK_ALERTS.items()]),
    ]


# Each lock kind (``security.models.CredentialLock.kind``) and the alert its owner gets when it locks.
_LOCK_ALERTS = {"login": "login_locked", "payment": "payment_locked", "recover": "recovery_locked"}
