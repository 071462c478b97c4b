"""Checking a password against its lockout state, for the login and the payment password alike.

The check runs in three steps so the slow argon2 verification holds no lock and no transaction:

1. read the lock state (and refuse at once if locked: a correct password answers "locked" too);
2. verify the password (against a dummy hash when there is no account, so both cost the same);
3. lock the state row, apply the outcome, commit; only then raise for a wrong password, so the failure
   is recorded even though the request fails.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from flask import current_app
from sqlalchemy import select

from core import clock
from core.db import db, insert_ignore, run_in_transaction
from core.errors import AppError
from security import lockout
from security.errors import InvalidCredentials, LoginLocked, PaymentPasswordLocked, WrongPaymentPassword
from security.lockout import LockState
from security.models import CredentialLock
from security.passwords import Passwords

LOGIN, PAYMENT = "login", "payment"


def passwords() -> Passwords:
    return current_app.extensions["passwords"]


def _to_state(row: CredentialLock | None) -> LockState:
    if row is None:
        return LockState()
    return LockState(
        recent_failures=tuple(datetime.fromisoformat(t) for t in row.recent_failures),
        consecutive_failures=row.consecutive_failures,
        locked_until=row.locked_until,
        hard_locked=row.hard_locked,
    )


def _store(row: CredentialLock, state: LockState) -> None:
    row.recent_failures = [t.isoformat() for t in state.recent_failures]
    row.consecutive_failures = state.consecutive_failures
    row.locked_until = state.locked_until
    row.hard_locked = state.hard_locked


def _locked_error(kind: str, state: LockState) -> AppError:
    cls = LoginLocked if kind == LOGIN else PaymentPasswordLocked
    return cls(state.locked_until, state.hard_locked)


def current_state(subject: str, kind: str) -> LockState:
    return _to_state(db.session.get(CredentialLock, (subject, kind)))


def raise_if_locked(subject: str, kind: str) -> None:
    """Raise ``LoginLocked`` / ``PaymentPasswordLocked`` if that secret is locked now."""
    state = current_state(subject, kind)
    if state.is_locked(clock.now()):
        raise _locked_error(kind, state)


def _row_for_update(subject: str, kind: str) -> CredentialLock:
    insert_ignore(CredentialLock.__table__, {"subject": subject, "kind": kind, "recent_failures": [],
                                             "consecutive_failures": 0, "hard_locked": False})
    row = db.session.scalars(
        select(CredentialLock)
        .where(CredentialLock.subject == subject, CredentialLock.kind == kind)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one()
    return row


def check_secret(
    subject: str,
    kind: str,
    stored_hash: str | None,
    candidate: str,
    on_lock: Callable[[LockState], None] | None = None,
) -> bool:
    """Verify ``candidate`` for the secret ``(subject, kind)``, enforcing and updating its lockout.

    ``stored_hash`` is None when there is no account (login with an unknown number): the candidate is
    checked against a dummy hash and counted as wrong. ``on_lock`` runs inside the recording
    transaction when this failure locks the secret (to enqueue the owner's alert).
    Returns whether the stored hash should be upgraded. Raises ``LoginLocked`` /
    ``PaymentPasswordLocked`` while locked, ``InvalidCredentials`` / ``WrongPaymentPassword`` when wrong.
    """
    run_in_transaction(lambda: raise_if_locked(subject, kind))
    hasher = passwords()
    ok = hasher.verify(stored_hash or hasher.dummy_hash, candidate) and stored_hash is not None

    def record() -> AppError | None:
        row = _row_for_update(subject, kind)
        now = clock.now()
        state = _to_state(row)
        if state.is_locked(now):  # a concurrent attempt locked it while we were verifying
            return _locked_error(kind, state)
        if ok:
            if state != LockState():
                _store(row, lockout.record_success(state))
            return None
        state = lockout.record_failure(state, now)
        _store(row, state)
        if state.is_locked(now):
            if on_lock is not None:
                on_lock(state)
            return _locked_error(kind, state)
        left = lockout.attempts_left(state, now)
        return InvalidCredentials(left) if kind == LOGIN else WrongPaymentPassword(left)

    error = run_in_transaction(record)
    if error is not None:
        raise error
    return stored_hash is not None and hasher.needs_rehash(stored_hash)


def lift_lock(subject: str, kind: str) -> None:
    """Clear the lock state (an SMS-verified reset). Call inside the reset's transaction."""
    row = db.session.get(CredentialLock, (subject, kind))
    if row is not None:
        _store(row, lockout.lift(_to_state(row)))
