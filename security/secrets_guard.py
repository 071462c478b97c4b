"""Checking a password against its lockout state, for the login and the payment password alike.

The check runs in three steps so the slow argon2 verification holds no lock and no transaction:

1. read the lock state (and refuse at once if locked: a correct password answers "locked" too);
2. verify the password (against a dummy hash when there is no account, so both cost the same);
3. lock the state row, apply the outcome, commit; only then raise for a wrong password, so the failure
   is recorded even though the request fails. A success may bring the caller's own change (``then``) into
   this transaction: it commits only if no concurrent attempt locked the secret during step 2.

A caller that reads other things before the check may read the lock state in that same transaction and
pass it in (``state``), which saves step 1 a transaction of its own.

Lock order, so that no two paths wait on each other (each crossing cost PostgreSQL a deadlock, a second, and a retry):
the account's row before the login lock state (a recovery, a login's authenticator code and a new device's session
lock the account first; a login from a trusted device takes the account's row first too, ``check_secret``'s
``first``), but the payment lock state before the account's row (every payment holds it while it writes rows that
point at the account; a change of the payment password by SMS takes it first, ``hold_state``).

The state row of a secret is created by its first failure and never deleted. A success does not create
it: with no row nothing has failed yet, and no lock can be on its way either (a lock takes three failures,
so its row was committed by an earlier one), so there is nothing to record and nothing to wait for.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from flask import current_app

from core import clock, sql
from core.db import run_in_transaction
from core.errors import AppError
from security import lockout
from security.errors import (
    InvalidCredentials,
    LoginLocked,
    PaymentPasswordLocked,
    RecoveryLocked,
    WrongPaymentPassword,
)
from security.lockout import LockState
from security.models import CredentialLock
from security.passwords import Passwords

# The secrets with a lock state: the login password (keyed by phone number), the payment password (by account), and
# the authenticator code of a login-password recovery (by account; ``check_reset_factor``).
LOGIN, PAYMENT, RECOVER = "login", "payment", "recover"
T = TypeVar("T")

_locks = CredentialLock.__table__
# The state columns, for callers that read the lock state in a statement of their own (an outer join).
STATE_COLUMNS = (_locks.c.recent_failures, _locks.c.consecutive_failures, _locks.c.locked_until, _locks.c.hard_locked)
# Every login and every payment runs these: statements on the driver's cursor (``core.sql``).
STATE_CONVERSIONS: dict[str, list[str]] = {"utc": ["locked_until"], "boolean": ["hard_locked"],
                                           "json": ["recent_failures"]}
_STATE_SQL = ("SELECT recent_failures, consecutive_failures, locked_until, hard_locked FROM credential_locks"
              " WHERE subject = :subject AND kind = :kind")
_READ_STATE = sql.Statement(_STATE_SQL, **STATE_CONVERSIONS)
_LOCK_STATE = sql.Statement({"postgresql": _STATE_SQL + " FOR UPDATE", "sqlite": _STATE_SQL},  # BEGIN IMMEDIATE
                            **STATE_CONVERSIONS)
_CREATE_STATE = sql.Statement(
    "INSERT INTO credential_locks (subject, kind, recent_failures, consecutive_failures, hard_locked)"
    " VALUES (:subject, :kind, '[]', 0, false) ON CONFLICT DO NOTHING")
_STORE_STATE = sql.Statement(
    "UPDATE credential_locks SET recent_failures = :recent_failures, consecutive_failures = :consecutive_failures,"
    " locked_until = :locked_until, hard_locked = :hard_locked WHERE subject = :subject AND kind = :kind")


def passwords() -> Passwords:
    return current_app.extensions["passwords"]


def state_of(row: Any) -> LockState:
    """The lock state in a row carrying the state columns (None, or all None from an outer join: no state)."""
    if row is None or row.recent_failures is None:
        return LockState()
    return LockState(
        recent_failures=tuple(datetime.fromisoformat(t) for t in row.recent_failures),
        consecutive_failures=row.consecutive_failures,
        locked_until=row.locked_until,
        hard_locked=row.hard_locked,
    )


def _store(subject: str, kind: str, state: LockState) -> None:
    _STORE_STATE.run(subject=subject, kind=kind, recent_failures=json.dumps([t.isoformat() for t in
                                                                             state.recent_failures]),
                     consecutive_failures=state.consecutive_failures, locked_until=state.locked_until,
                     hard_locked=state.hard_locked)


def _locked_error(kind: str, state: LockState) -> AppError:
    if kind == RECOVER:
        return RecoveryLocked(state.locked_until)
    cls = LoginLocked if kind == LOGIN else PaymentPasswordLocked
    return cls(state.locked_until, state.hard_locked)


def current_state(subject: str, kind: str) -> LockState:
    return state_of(_READ_STATE.one(subject=subject, kind=kind))


def refuse_if_locked(kind: str, state: LockState) -> None:
    """Raise ``LoginLocked`` / ``PaymentPasswordLocked`` if ``state`` is locked now."""
    if state.is_locked(clock.now()):
        raise _locked_error(kind, state)


def _locked_row(subject: str, kind: str, *, create: bool) -> Any:
    """The state row, locked until the end of the transaction; ``create`` makes it first if there is none."""
    if create:
        _CREATE_STATE.run(subject=subject, kind=kind)
    return _LOCK_STATE.one(subject=subject, kind=kind)


def check_secret(
    subject: str,
    kind: str,
    stored_hash: str | None,
    candidate: str,
    on_lock: Callable[[LockState], None] | None = None,
    *,
    state: LockState | None = None,
    then: Callable[[str | None], T] | None = None,
    settles: bool = True,
    on_wrong: Callable[[], None] | None = None,
    first: Callable[[], None] | None = None,
) -> T | None:
    """Verify ``candidate`` for the secret ``(subject, kind)``, enforcing and updating its lockout.

    ``stored_hash`` is None when there is no account (login with an unknown number): the candidate is
    checked against a dummy hash and counted as wrong. ``on_lock`` runs inside the recording
    transaction when this failure locks the secret (to enqueue the owner's alert). ``state`` is the lock
    state the caller has just read, if it has (else it is read here, in a transaction of its own). ``on_wrong`` runs
    inside the recording transaction when the candidate was checked and is wrong (also when a concurrent attempt
    locked the secret meanwhile). For a right candidate, ``first`` runs at the start of each transaction that takes the
    lock state's row, before it (to take a row the caller's ``then`` needs and others take before the lock state: the
    lock order above).

    On success ``then(new_hash)`` runs inside the recording transaction and its result is returned (when the
    success resets earlier failures, in a transaction right after it instead, so the reset commits even if
    ``then`` fails; it is refused there if a lock came in between);
    ``new_hash`` is the candidate hashed with the current parameters when ``stored_hash`` was made with
    older ones (the caller stores it), else None. ``settles=False``: a right password that still waits for a
    second factor (a new device's code) leaves earlier failures standing; the caller then counts that factor
    with ``record_second_factor``, whose success clears them. Raises ``LoginLocked`` / ``PaymentPasswordLocked``
    while locked, ``InvalidCredentials`` / ``WrongPaymentPassword`` when wrong.
    """
    if state is None:
        state = run_in_transaction(lambda: current_state(subject, kind), read_only=True)
    refuse_if_locked(kind, state)
    hasher = passwords()
    ok = hasher.verify(stored_hash or hasher.dummy_hash, candidate) and stored_hash is not None
    rehash = then is not None and ok and hasher.needs_rehash(stored_hash)  # type: ignore[arg-type]
    new_hash = hasher.hash(candidate) if rehash else None  # slow too: before the transaction

    def record() -> tuple[AppError | None, T | None, bool]:
        if ok and first is not None:
            first()
        row = _locked_row(subject, kind, create=not ok)
        now = clock.now()
        current = state_of(row)
        if not ok and on_wrong is not None:
            on_wrong()
        if current.is_locked(now):  # a concurrent attempt locked it while we were verifying
            return _locked_error(kind, current), None, True
        if ok:
            if current == LockState() or not settles:  # nothing to record: the caller's work commits (or fails) alone
                return None, then(new_hash) if then is not None else None, True
            _store(subject, kind, lockout.record_success(current))
            return None, None, then is None
        current = lockout.record_failure(current, now)
        _store(subject, kind, current)
        if current.is_locked(now):
            if on_lock is not None:
                on_lock(current)
            locked = _locked_error(kind, current)
            locked.by_this_entry = True  # type: ignore[attr-defined]
            return locked, None, True
        left = lockout.attempts_left(current, now)
        return (InvalidCredentials(left) if kind == LOGIN else WrongPaymentPassword(left)), None, True

    def after_reset() -> tuple[AppError | None, T | None, bool]:
        if first is not None:
            first()
        current = state_of(_locked_row(subject, kind, create=False))
        if current.is_locked(clock.now()):  # locked in between the two transactions
            return _locked_error(kind, current), None, True
        assert then is not None
        return None, then(new_hash), True

    error, result, done = run_in_transaction(record)
    if not done:
        # This success reset earlier failures, which must stick even if the caller's work fails (a payment
        # refused for want of funds): that work runs in a transaction of its own.
        error, result, done = run_in_transaction(after_reset)
    if error is not None:
        raise error
    return result


def hold_state(subject: str, kind: str) -> None:
    """Inside the caller's transaction: lock the secret's state row, if it has one, until the transaction ends (to take
    it in the lock order above, before a row the caller locks next)."""
    _locked_row(subject, kind, create=False)


def lift_lock(subject: str, kind: str) -> None:
    """Clear the lock state (an SMS-verified reset). Call inside the reset's transaction."""
    _store(subject, kind, lockout.lift(current_state(subject, kind)))


def record_second_factor(subject: str, kind: str, ok: bool, on_lock: Callable[[LockState], None] | None = None
                         ) -> LockState:
    """Inside the caller's transaction: count a code checked after a right password (``check_secret`` with
    ``settles=False``) as the password itself would count: a wrong one is a failure toward the lock (``on_lock``
    runs if it locks), a right one clears earlier failures. Without this, each right password cleared the window and
    wrong codes were bounded only by the rate limits. Returns the state after, which the caller refuses when it is
    locked (``refuse_if_locked``), also when a concurrent attempt locked it meanwhile."""
    row = _locked_row(subject, kind, create=not ok)
    now = clock.now()
    current = state_of(row)
    if current.is_locked(now):
        return current
    after = lockout.record_success(current) if ok else lockout.record_failure(current, now)
    if after != current:
        _store(subject, kind, after)
    if after.is_locked(now) and on_lock is not None:
        on_lock(after)
    return after


def check_reset_factor(subject: str, check: Callable[[], bool], wrong: Callable[[int], AppError],
                       on_lock: Callable[[LockState], None] | None = None) -> AppError | None:
    """Inside the caller's transaction (which holds the account's row, so one try at a time): a second factor that an
    SMS-verified reset still needs (a recovery's authenticator code), counted in a lock state of its own,
    ``(subject, RECOVER)``, by the window rule alone (``lockout.record_reset_failure``). A lock of the password the
    reset replaces does not refuse it (anyone who knows the number can lock its login; the reset is what lifts that
    lock). While the reset is locked (``lockout.reset_locked``) ``check`` is not run, so a right code answers "locked"
    too. ``on_lock`` runs when a wrong code locks the reset.

    Returns None when ``check()`` accepts the factor (the caller then clears this state, ``lift_lock``), else the error
    to answer with: ``RecoveryLocked`` while or once locked, ``wrong(attempts_left)`` otherwise. The caller returns it
    rather than raising it, so that the failure is recorded when its transaction commits."""
    now = clock.now()
    current = state_of(_locked_row(subject, RECOVER, create=False))
    if lockout.reset_locked(current, now):
        return _locked_error(RECOVER, current)
    if check():
        return None
    # The caller's row lock keeps every other try at this reset out, so nothing changed the state since it was read.
    _locked_row(subject, RECOVER, create=True)
    after = lockout.record_reset_failure(current, now)
    _store(subject, RECOVER, after)
    if lockout.reset_locked(after, now):
        if on_lock is not None:
            on_lock(after)
        return _locked_error(RECOVER, after)
    return wrong(lockout.reset_attempts_left(after, now))
