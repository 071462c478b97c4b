"""Account use cases: register, log in, passwords, recovery, phone and profile changes, devices.

Each public function is one use case. Password checks go through ``secrets_guard.check_secret`` (which
records failures in a transaction of its own); the change itself then runs in one transaction together
with the alerts that announce it. A login from a trusted device opens its session in the transaction that
records the success, so the whole login is two short transactions around the argon2 verification.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from flask import current_app
from sqlalchemy import String, bindparam, select, update
from sqlalchemy.exc import IntegrityError

from core import clock, sql
from core.db import db, primary_key, run_in_transaction
from core.errors import AppError, NotFound, Unauthenticated, ValidationFailed
from core.ids import new_id
from notifications.outbox import enqueue
from notifications.templates import UNTIL_RESET, format_time, format_until, mask_email, mask_phone
from security import codes, lockout, totp
from security.errors import (
    AccountFrozen,
    DeviceVerificationRequired,
    InvalidCredentials,
    InvalidTotpCode,
    PaymentPasswordResetTooSoon,
    PhoneTaken,
    TotpNotEnrolled,
    TotpRequired,
    WrongPaymentPassword,
)
from security.lockout import LockState
from security.models import AuthSession, CredentialLock, Device, User
from security.passwords import check_login_password, check_payment_password
from security.recovery_hold import Refusal, hold_refusal, hold_until, locked_account, refusal_under_lock, refuse_early
from security.secrets_guard import (
    LOGIN,
    PAYMENT,
    RECOVER,
    STATE_COLUMNS,
    STATE_CONVERSIONS,
    check_reset_factor,
    check_secret,
    current_state,
    hold_state,
    lift_lock,
    passwords,
    record_second_factor,
    refuse_if_locked,
    state_of,
)
from security.tokens import TokenPair, revoke_sessions, start_session


@dataclass(frozen=True)
class Registration:
    user: User
    tokens: TokenPair


def _is_phone_conflict(exc: IntegrityError) -> bool:
    # PostgreSQL names the constraint; SQLite names the column.
    message = str(exc.orig)
    return "uq_users_phone" in message or "users.phone" in message


def _user_by_phone(phone: str, *, lock: bool = False) -> User | None:
    stmt = select(User).where(User.phone == phone)
    return db.session.scalars(stmt.with_for_update() if lock else stmt).first()

T = TypeVar("T")


@dataclass(frozen=True)
class _LoginView:
    """What a login needs to know about the account and the device, read as plain values (ORM objects
    expire at commit, and touching one afterwards would cost a query)."""

    id: str
    phone: str
    locale: str
    login_password_hash: str
    device_id: str | None  # None: the account has never used this device
    trusted: bool


_users, _devices, _locks = User.__table__, Device.__table__, CredentialLock.__table__
_asked = select(bindparam("phone", type_=String()).label("phone")).subquery()
# Built once, run by every login: one statement, one row, for known and unknown numbers alike (both take the
# same time): the account and this device if there are, and the login lock state of the number.
_LOGIN_VIEW = select(
    _users.c.id, _users.c.phone, _users.c.locale, _users.c.login_password_hash, _devices.c.id.label("device_id"),
    _devices.c.trusted, _devices.c.revoked_at, *STATE_COLUMNS,
).select_from(
    _asked.outerjoin(_users, _users.c.phone == _asked.c.phone)
    .outerjoin(_devices, (_devices.c.user_id == _users.c.id) & (_devices.c.device_key == bindparam("device_key")))
    .outerjoin(_locks, (_locks.c.subject == _asked.c.phone) & (_locks.c.kind == LOGIN))
)
# A login from a trusted device takes the account's row before the login lock state (``secrets_guard``'s lock order):
# a recovery holds the row (FOR UPDATE) and then lifts the lock, so the login's session (whose foreign key takes the row
# FOR KEY SHARE) must not hold the lock state while it waits for the row (a deadlock, found by the fifth audit).
_HOLD_ACCOUNT = sql.Statement({"postgresql": "SELECT 1 FROM users WHERE id = :user_id FOR KEY SHARE",
                               "sqlite": "SELECT 1 FROM users WHERE id = :user_id"})  # BEGIN IMMEDIATE
# A login's last look, in the transaction that opens its session, after writing it: is the login password still
# the one verified (and, from a trusted device, is the device still trusted)? See ``_open_session``.
_STILL_VALID = sql.Statement("SELECT login_password_hash = :verified AS same_password FROM users WHERE id = :user_id",
                             boolean=["same_password"])
_STILL_VALID_ON_DEVICE = sql.Statement(
    "SELECT u.login_password_hash = :verified AS same_password, d.trusted AND d.revoked_at IS NULL AS trusted"
    " FROM users u JOIN devices d ON d.id = :device_id WHERE u.id = :user_id", boolean=["same_password", "trusted"])
# The payer and the payment lock state in one statement (every payment runs it: on the driver's cursor).
# A freeze (``security.freezes``) rides along: a payment of a frozen account is refused for no statement of its own.
_PAYER = sql.Statement(
    "SELECT u.phone, u.locale, u.payment_password_hash, l.recent_failures, l.consecutive_failures, l.locked_until,"
    " l.hard_locked, f.frozen_at FROM users u LEFT JOIN credential_locks l ON l.subject = u.id AND l.kind = 'payment'"
    " LEFT JOIN account_freezes f ON f.user_id = u.id AND f.lifted_at IS NULL"
    " WHERE u.id = :user_id", **{**STATE_CONVERSIONS, "utc": [*STATE_CONVERSIONS["utc"], "frozen_at"]})


# What GET /me shows: read for a viewer (the request's caller, whose token check then rides in the statement).
_PROFILE = sql.Statement(
    "SELECT id, phone, email, locale, totp_enabled, created_at, (SELECT f.frozen_at FROM account_freezes f"
    " WHERE f.user_id = users.id AND f.lifted_at IS NULL) AS frozen_since FROM users WHERE id = :viewer_id",
    utc=["created_at", "frozen_since"], boolean=["totp_enabled"])


def profile(viewer: sql.Viewer) -> Any:
    """The viewer's account as GET /me shows it (id, phone, email, locale, totp_enabled, created_at, frozen_since).
    Raises ``NotFound`` for a viewer with no account (never the request's caller: its token names an account, in the
    same statement)."""
    rows = run_in_transaction(lambda: viewer.read(_PROFILE, {}), read_only=True)
    if not rows:
        raise NotFound("No such account.")
    return rows[0]


def _login_view(phone: str, device_key: str) -> tuple[_LoginView | None, LockState]:
    row = db.session.execute(_LOGIN_VIEW, {"phone": phone, "device_key": device_key}).one()
    if row.id is None:
        return None, state_of(row)
    trusted = row.device_id is not None and row.trusted and row.revoked_at is None
    return _LoginView(row.id, row.phone, row.locale, row.login_password_hash, row.device_id, trusted), state_of(row)


def _lock_alert(user_id: str, phone: str, locale: str, kind: str) -> Callable[[LockState], None]:
    event = {LOGIN: "login_locked", PAYMENT: "payment_locked", RECOVER: "recovery_locked"}[kind]

    def alert(state: LockState) -> None:
        until = UNTIL_RESET if state.hard_locked or not state.locked_until else format_until(state.locked_until)
        enqueue(phone, event, locale=locale, user_id=user_id, until=until)

    return alert


# A device new to the account, unless a concurrent login on it has just added it: on PostgreSQL this insert waits for
# that login's (the unique key) and then does nothing, where a plain insert failed on the key (a 500).
_ADD_DEVICE = sql.Statement(
    "INSERT INTO devices (id, user_id, device_key, name, trusted, created_at, last_seen_at)"
    " VALUES (:id, :user_id, :device_key, :name, false, :now, :now) ON CONFLICT (user_id, device_key) DO NOTHING")


def _device(user_id: str, device_key: str) -> Device | None:
    return db.session.scalars(
        select(Device).where(Device.user_id == user_id, Device.device_key == device_key)
    ).first()


def register(
    phone: str,
    sms_code: str,
    login_password: str,
    payment_password: str,
    device_key: str,
    email: str | None,
    locale: str,
    device_name: str | None = None,
) -> Registration:
    """Create an account; the registering device is trusted. Raises ``ValidationFailed`` for weak
    passwords, ``InvalidSmsCode``, ``PhoneTaken``."""
    check_login_password(login_password, phone)
    check_payment_password(payment_password, phone)
    codes.consume_code(phone, "register", sms_code)
    hasher = passwords()
    login_hash, payment_hash = hasher.hash(login_password), hasher.hash(payment_password)

    def work() -> Registration:
        now = clock.now()
        user = User(
            id=new_id("usr"), phone=phone, login_password_hash=login_hash, payment_password_hash=payment_hash,
            email=email, locale=locale, created_at=now, updated_at=now,
        )
        device = Device(
            id=new_id("dev"), user_id=user.id, device_key=device_key, name=device_name, trusted=True,
            created_at=now, last_seen_at=now,
        )
        db.session.add(user)
        db.session.flush()  # the user row first: no ORM relationship orders the inserts
        db.session.add(device)
        db.session.flush()
        # Failed logins on the number while it had no account count like any others (DESIGN 4.2) and may have
        # locked it; the SMS code just proved the number, as a reset does, so the new owner starts unlocked.
        lift_lock(phone, LOGIN)
        tokens = start_session(user.id, device.id)
        enqueue(phone, "registered", locale=locale, user_id=user.id, phone=mask_phone(phone))
        return Registration(user, tokens)

    try:
        return run_in_transaction(work)
    except IntegrityError as exc:
        if not _is_phone_conflict(exc):
            raise
        raise PhoneTaken("This phone number already has an account.") from exc


def log_in(
    phone: str,
    login_password: str,
    device_key: str,
    sms_code: str | None,
    totp_code: str | None,
    device_name: str | None = None,
) -> TokenPair:
    """Log in. A device not yet trusted also needs an SMS code (purpose ``login``) or a TOTP code.

    Raises ``LoginLocked``, ``InvalidCredentials`` (same for unknown numbers),
    ``DeviceVerificationRequired``, ``InvalidSmsCode``, ``InvalidTotpCode``.
    """
    account, state = run_in_transaction(lambda: _login_view(phone, device_key), read_only=True)
    stored = account.login_password_hash if account else None
    alert = _lock_alert(account.id, account.phone, account.locale, LOGIN) if account else None
    left = lockout.attempts_left(state, clock.now())
    if account is not None and account.trusted:  # the usual case: the session opens with the recorded success
        user_id = account.id
        return check_secret(phone, LOGIN, stored, login_password, alert, state=state,
                            then=lambda new_hash: _open_session(account, device_key, device_name, new_hash, left),
                            first=lambda: _HOLD_ACCOUNT.one(user_id=user_id))

    # The right password does not clear earlier failures yet: a wrong authenticator code counts like a wrong
    # password (R3), and only the whole login, second factor included, clears them (in ``verified`` below).
    new_hash = check_secret(phone, LOGIN, stored, login_password, alert, state=state,
                            then=lambda new_hash: new_hash, settles=False)
    assert account is not None and alert is not None  # check_secret raised for unknown numbers
    user_id = account.id
    if totp_code is not None:
        def check_totp() -> LockState | None:
            locked_user = db.session.get(User, user_id, with_for_update=True)
            if locked_user and locked_user.totp_enabled and totp.accept(locked_user, totp_code):
                return None
            return record_second_factor(phone, LOGIN, False, alert)

        after = run_in_transaction(check_totp)
        if after is not None:
            refuse_if_locked(LOGIN, after)
            raise InvalidTotpCode("The authenticator code is wrong or was already used.",
                                  lockout.attempts_left(after, clock.now()))
    elif sms_code is not None:
        codes.consume_code(phone, "login", sms_code)
    else:
        raise DeviceVerificationRequired(
            "This device is new: request a code with purpose 'login' and send it as sms_code."
        )

    def verified() -> TokenPair:
        pair = _open_session(account, device_key, device_name, new_hash, left)
        # After the session's rows: the user's row before the lock state's, the order a recovery takes them in.
        refuse_if_locked(LOGIN, record_second_factor(phone, LOGIN, True))
        return pair

    return run_in_transaction(verified)


def _open_session(account: _LoginView, device_key: str, device_name: str | None, new_hash: str | None,
                  attempts_left: int) -> TokenPair:
    """Inside the caller's transaction: note the device (trusting it now if it was not: the caller verified it),
    open the session, make sure the password verified (and a trusted device) still stands, and store an upgraded
    hash. Raises ``InvalidCredentials`` when the password changed since it was read (``attempts_left`` as before
    this try, which counts neither way), ``DeviceVerificationRequired`` when the trusted device was revoked.

    The session is written before the check: on PostgreSQL its foreign keys hold the user's and the device's rows
    (``FOR KEY SHARE``) until this commits, and a password change, a recovery or a device's revocation locks that
    row ``FOR UPDATE`` first, so it either committed before the check (which sees it, and the whole transaction,
    session included, rolls back) or waits for this login and then revokes its session with the others. SQLite
    runs one write transaction at a time."""
    now = clock.now()
    if account.trusted:
        assert account.device_id is not None
        pair = start_session(account.id, account.device_id, touch_device=True)
        still = _STILL_VALID_ON_DEVICE.one(user_id=account.id, verified=account.login_password_hash,
                                           device_id=account.device_id)
    else:
        device = _device(account.id, device_key)  # read again: a concurrent login may have added it meanwhile
        if device is None:
            _ADD_DEVICE.run(id=new_id("dev"), user_id=account.id, device_key=device_key, name=device_name, now=now)
            device = _device(account.id, device_key)
            assert device is not None
        device.last_seen_at, device.trusted, device.revoked_at = now, True, None
        enqueue(account.phone, "new_device_login", locale=account.locale, user_id=account.id,
                device=device_name or "", time=format_time(now))
        pair = start_session(account.id, device.id)
        still = _STILL_VALID.one(user_id=account.id, verified=account.login_password_hash)
    if still is None or not still.same_password:
        raise InvalidCredentials(attempts_left)
    if account.trusted and not still.trusted:
        raise DeviceVerificationRequired(
            "This device was signed out: request a code with purpose 'login' and send it as sms_code.")
    if new_hash is not None:  # over the hash verified only (checked above, and held by the session's key)
        db.session.execute(update(User).where(User.id == account.id,
                                              User.login_password_hash == account.login_password_hash)
                           .values(login_password_hash=new_hash))
    return pair


def verify_login_password(user: User, password: str, session_id: str | None) -> None:
    """Check the login password of a signed-in user (counts toward the login lock). A wrong one ends the session it
    was entered in (``session_id``): whoever holds the session does not know the account's password, as a thief with
    a stolen token would not, who thus gets one guess per stolen session however the lock stands. (A login lock
    itself leaves the owner's sessions alone: ``security.auth``.)"""
    check_secret(user.phone, LOGIN, user.login_password_hash, password,
                 _lock_alert(user.id, user.phone, user.locale, LOGIN),
                 on_wrong=None if session_id is None else functools.partial(
                     revoke_sessions, user.id, "wrong_login_password", only=session_id))


def authorize_payment(user_id: str, payment_password: str, then: Callable[[], T] | None = None, *,
                      moves_money: bool = True, still_current: bool = False) -> T | None:
    """The gate in front of every movement of money: the payment password under its own lockout.

    ``then()``, the movement itself, runs in the transaction that checks the lock state after the argon2
    verification, so a payment costs one transaction besides its reads; its result is returned. A payment whose
    check began before a change of the payment password committed completes, as one whose check began before a
    freeze does: it was authorised by the password of its moment. ``still_current`` (a change of the password itself)
    locks the account's row first and refuses the password verified if it is no longer the account's: a change that
    committed meanwhile is not undone by one verified with the password it replaced.
    Raises ``AccountFrozen`` (403) for a frozen account when ``moves_money`` (before the password is checked),
    ``PaymentPasswordLocked`` (423) while locked, ``WrongPaymentPassword`` (401) when wrong.
    """
    payer = run_in_transaction(lambda: _PAYER.one(user_id=user_id), read_only=True)
    if payer is None:
        raise NotFound("No such account.")
    if moves_money and payer.frozen_at is not None:
        raise AccountFrozen(payer.frozen_at)

    verified = payer.payment_password_hash

    def store(new_hash: str | None) -> T | None:
        if still_current and locked_account(user_id).payment_password_hash != verified:
            raise WrongPaymentPassword(lockout.attempts_left(current_state(user_id, PAYMENT), clock.now()))
        if new_hash is not None:
            # Over the hash verified only: a payment in flight must not write the old password back over a change
            # that committed meanwhile (an audit found the old, perhaps leaked, password working again).
            db.session.execute(update(User).where(User.id == user_id, User.payment_password_hash == verified)
                               .values(payment_password_hash=new_hash))
        return then() if then is not None else None

    return check_secret(user_id, PAYMENT, payer.payment_password_hash, payment_password,
                        _lock_alert(user_id, payer.phone, payer.locale, PAYMENT), state=state_of(payer), then=store)


def change_login_password(user: User, current: str, new: str, session_id: str) -> None:
    """Change the login password; every other session is revoked. Raises ``InvalidCredentials``,
    ``LoginLocked``, ``ValidationFailed``."""
    check_login_password(new, user.phone, field="new_password")
    verified = user.login_password_hash
    verify_login_password(user, current, session_id)
    new_hash = passwords().hash(new)
    user_id = user.id

    def work() -> None:
        # Locked first: a login that verified the old password and is opening its session holds the row (shared)
        # until it commits, and its session is then revoked with the others below.
        account = locked_account(user_id)
        still_authorised(account, verified, session_id)
        account.login_password_hash, account.updated_at = new_hash, clock.now()
        revoke_sessions(user_id, "password_changed", keep=session_id)
        enqueue(account.phone, "login_password_changed", locale=account.locale, user_id=user_id,
                time=format_time(clock.now()))

    run_in_transaction(work)


def still_authorised(account: User, verified: str, session_id: str | None) -> None:
    """Under the account's row lock (``locked_account``), before a change proven by the login password: the hash
    verified is still the account's, and the caller's session (``session_id``) was not revoked meanwhile. A change,
    a recovery or a revocation that committed while this one verified is seen here (one in flight waits for the
    lock), so a thief's change verified with the old password cannot undo the owner's. Raises ``InvalidCredentials``
    (attempts left as before this try, which counts neither way) and ``Unauthenticated``."""
    if account.login_password_hash != verified:
        raise InvalidCredentials(lockout.attempts_left(current_state(account.phone, LOGIN), clock.now()))
    if session_id is not None and db.session.scalar(
            select(AuthSession.revoked_at.is_(None)).where(AuthSession.id == session_id)) is not True:
        raise Unauthenticated("The access token is missing, expired or revoked.")


def _sms_reset_refusal(user: User) -> Refusal | None:
    """R2: a payment password set by SMS code alone waits (1) after a phone change: the login password alone moves
    the account to a number of one's choosing (``change_phone``), and the old number, which was told, gets time to
    react; (2) after a login-password recovery by SMS alone (``hold_until``), when the owner is told of
    the refusal. The later of the two is the answer (``PaymentPasswordResetTooSoon``)."""
    waits: list[tuple[datetime, str]] = []
    if user.phone_changed_at is not None:
        hours = current_app.config["PAYMENT_RESET_AFTER_PHONE_CHANGE_HOURS"]
        after_move = user.phone_changed_at + timedelta(hours=hours)
        if clock.now() < after_move:
            waits.append((after_move, "phone_changed"))
    held = hold_until(user)
    if held is not None:
        waits.append((held, "password_recovered"))
    if not waits:
        return None
    available_at, reason = max(waits)
    return PaymentPasswordResetTooSoon(available_at, reason), held




def change_payment_password(user: User, new: str, current: str | None, sms_code: str | None) -> None:
    """Change the payment password, proven by the current one or an SMS code (purpose ``recover``);
    the SMS route also lifts a payment lock, and is refused for a while after a phone change or a recovery by SMS
    alone. Raises ``PaymentPasswordResetTooSoon`` (before the code is spent, unless a recovery came in meanwhile),
    ``InvalidSmsCode``, ``WrongPaymentPassword``, ``PaymentPasswordLocked``, ``ValidationFailed``."""
    check_payment_password(new, user.phone, field="new_payment_password")
    user_id = primary_key(user)

    def work() -> AppError | None:
        if current is None:
            # The payment lock state before the account's row, as a change by the current password and every payment
            # take them (``secrets_guard``'s lock order; the other order deadlocked with them, found by an audit).
            hold_state(user_id, PAYMENT)
        account = locked_account(user_id)
        if current is None:
            refused = refusal_under_lock(_sms_reset_refusal(account), account)
            if refused is not None:
                return refused
        account.payment_password_hash, account.updated_at = new_hash, clock.now()
        if current is None:
            lift_lock(user_id, PAYMENT)
        enqueue(account.phone, "payment_password_changed", locale=account.locale, user_id=user_id,
                time=format_time(clock.now()))
        return None

    if current is not None:
        # The change commits in the check's transaction, the account's row locked and the password verified still
        # its own (``still_current``): two changes at once, both proven by the old password, cannot both land (the
        # one committed last replaced the other's, an owner's included). So the new password is hashed first.
        new_hash = passwords().hash(new)
        authorize_payment(user_id, current, work, moves_money=False, still_current=True)
        return
    refuse_early(_sms_reset_refusal(user), user)
    codes.consume_code(user.phone, "recover", sms_code)
    new_hash = passwords().hash(new)
    error = run_in_transaction(work)
    if error is not None:
        raise error


def recover_password(phone: str, sms_code: str, new_password: str, totp_code: str | None = None) -> None:
    """Reset the login password by SMS: lifts any login lock (hard ones too), revokes every session and signs every
    device out (each proves itself again at its next login: the recovery proved the SIM, not who holds the device).
    An account with an authenticator also needs ``totp_code``; one without starts the hold of
    ``SMS_RECOVERY_HOLD_HOURS`` (``security.recovery_hold``). Wrong authenticator codes count toward a lock of the
    recovery's own (``secrets_guard.check_reset_factor``, kind ``recover``, keyed by the account): the third in 24
    hours locks recoveries for three hours (the owner is told), and while that lock lasts the recovery is refused
    without looking at the code. They do not count toward the login lock, and a login lock does not refuse a
    recovery: anyone who knows the number can lock its login, and the recovery is what lifts that lock. Raises
    ``InvalidSmsCode`` (also for unknown numbers, which never get a code), then, with the SMS code spent:
    ``TotpRequired``, ``InvalidTotpCode`` (with ``attempts_left``), ``RecoveryLocked``; ``ValidationFailed``."""
    check_login_password(new_password, phone, field="new_password")
    codes.consume_code(phone, "recover", sms_code)
    new_hash = passwords().hash(new_password)

    def work() -> Exception | None:
        account = _user_by_phone(phone, lock=True)  # as in change_login_password: a login in flight is revoked too
        if account is None:  # the account vanished between code and reset; nothing to do
            return None
        if account.totp_enabled:
            if totp_code is None:
                return TotpRequired("This account has an authenticator: request a new code and send it with "
                                    "totp_code.")
            refused = check_reset_factor(
                account.id, lambda: totp.accept(account, totp_code),
                lambda left: InvalidTotpCode("The authenticator code is wrong or was already used.", left),
                _lock_alert(account.id, phone, account.locale, RECOVER))
            if refused is not None:
                return refused
            lift_lock(account.id, RECOVER)  # a success clears the window (R3)
        now = clock.now()
        account.login_password_hash, account.updated_at = new_hash, now
        if not account.totp_enabled:  # the SIM alone proved this one
            account.password_recovered_at = now
            account.totp_secret = None  # an enrolment begun before it is not finished after it (whose was it?)
        lift_lock(phone, LOGIN)
        # The devices before their sessions, as revoking one device takes them (the other order deadlocked with it).
        db.session.execute(update(Device).where(Device.user_id == account.id, Device.revoked_at.is_(None))
                           .values(trusted=False, revoked_at=now))
        revoke_sessions(account.id, "password_recovered")
        enqueue(phone, "password_recovered", locale=account.locale, user_id=account.id, time=format_time(now))
        return None

    error = run_in_transaction(work)
    if error is not None:
        raise error


def change_phone(user: User, new_phone: str, sms_code: str, login_password: str, session_id: str | None) -> None:
    """Move the account to ``new_phone`` (code sent to the new number); both numbers are told, and the codes still
    open on the old number die with the move. Refused during the recovery hold (``AccountRecentlyRecovered``, before
    the code is spent unless a recovery came in meanwhile): the owner would not recover a moved account with the SIM
    back. Refused too when the password verified or the caller's session (``session_id``) no longer stands
    (``still_authorised``)."""
    verified = user.login_password_hash
    verify_login_password(user, login_password, session_id)
    refuse_early(hold_refusal(user), user)
    codes.consume_code(new_phone, "change_phone", sms_code)
    user_id = user.id

    def work() -> AppError | None:
        account = locked_account(user_id)
        refused = refusal_under_lock(hold_refusal(account), account)
        if refused is not None:
            return refused
        still_authorised(account, verified, session_id)
        old_phone, now = account.phone, clock.now()
        account.phone, account.updated_at, account.phone_changed_at = new_phone, now, now
        db.session.flush()
        lift_lock(new_phone, LOGIN)  # as at registration: a lock left on the number before it was proven
        codes.void_codes(old_phone)  # a login or recovery code sent there must not open the number's next account
        enqueue(old_phone, "phone_changed_old", locale=account.locale, user_id=user_id,
                new_phone=mask_phone(new_phone), time=format_time(now))
        enqueue(new_phone, "phone_changed_new", locale=account.locale, user_id=user_id, time=format_time(now))
        return None

    try:
        error = run_in_transaction(work)
    except IntegrityError as exc:
        if not _is_phone_conflict(exc):
            raise
        raise PhoneTaken("That phone number already has an account.") from exc
    if error is not None:
        raise error


def update_profile(user: User, email: str | None, locale: str | None, login_password: str | None,
                   email_given: bool, session_id: str | None) -> User:
    """Change email (needs the login password, still standing when the change commits: ``still_authorised``) and/or
    locale."""
    verified = user.login_password_hash
    proven = email_given and email != user.email
    if proven:
        if login_password is None:
            raise ValidationFailed.field("login_password", "missing", "Changing the email needs the login password.")
        verify_login_password(user, login_password, session_id)
    user_id = user.id

    def work() -> User:
        account = locked_account(user_id) if proven else db.session.get(User, user_id)
        assert account is not None
        if proven:
            still_authorised(account, verified, session_id)
        now = clock.now()
        if locale is not None:
            account.locale = locale
        if email_given and email != account.email:
            account.email = email
            enqueue(account.phone, "email_changed", locale=account.locale, user_id=user_id,
                    email=mask_email(email) if email else "-", time=format_time(now))
        account.updated_at = now
        return account

    return run_in_transaction(work)


def start_totp_enrolment(user: User, login_password: str, session_id: str | None) -> tuple[str, str]:
    """Give the user a fresh secret (not active until confirmed with a code). It replaces any authenticator in use,
    so it needs the login password (counted toward the login lock), as an email change does: a stolen access token
    alone cannot swap the owner's authenticator for the thief's. Switching an active one off tells the owner. Refused
    during the recovery hold: an authenticator would then be needed to recover the account, which the owner, with
    the SIM back, would not have. Raises ``InvalidCredentials``, ``LoginLocked``, ``AccountRecentlyRecovered``, and
    ``Unauthenticated`` when the caller's session was revoked meanwhile (``still_authorised``)."""
    verified = user.login_password_hash
    verify_login_password(user, login_password, session_id)
    refuse_early(hold_refusal(user), user)
    secret = totp.new_secret()
    user_id = user.id

    def work() -> str | AppError:
        account = locked_account(user_id)
        refused = refusal_under_lock(hold_refusal(account), account)
        if refused is not None:
            return refused
        still_authorised(account, verified, session_id)
        if account.totp_enabled:
            enqueue(account.phone, "totp_disabled", locale=account.locale, user_id=user_id,
                    time=format_time(clock.now()))
        account.totp_secret, account.totp_enabled, account.totp_last_step = secret, False, None
        return account.phone

    phone = run_in_transaction(work)
    if isinstance(phone, AppError):
        raise phone
    return secret, totp.provisioning_uri(secret, phone)


def confirm_totp_enrolment(user: User, code: str) -> None:
    """Activate the enrolled secret with a code from it; the owner is told. Refused during the recovery hold, as
    starting an enrolment is: an authenticator switched on then is one the owner, with the SIM back, would need to
    recover the account and not have. Raises ``TotpNotEnrolled``, ``InvalidTotpCode``, ``AccountRecentlyRecovered``."""
    refuse_early(hold_refusal(user), user)
    user_id = user.id

    def work() -> Exception | None:
        # Read afresh under the lock: the request's earlier read of the account may predate a new enrolment, whose
        # secret this code never proved (an audit saw the first secret's code switch the second one on).
        account = locked_account(user_id)
        refused = refusal_under_lock(hold_refusal(account), account)
        if refused is not None:
            return refused
        if not account.totp_secret:
            return TotpNotEnrolled("Start enrolment with POST /api/v1/me/totp first.")
        if not totp.accept(account, code):
            return InvalidTotpCode("The authenticator code is wrong.")
        if not account.totp_enabled:
            account.totp_enabled = True
            enqueue(account.phone, "totp_enabled", locale=account.locale, user_id=user_id,
                    time=format_time(clock.now()))
        return None

    error = run_in_transaction(work)
    if error is not None:
        raise error


def list_devices(user: User, limit: int, starting_after: str | None) -> tuple[list[Device], bool]:
    """A page of the user's devices still in use, newest first (after the cursor ``starting_after``), and whether
    more remain."""
    query = select(Device).where(Device.user_id == user.id, Device.revoked_at.is_(None))
    if starting_after is not None:
        query = query.where(Device.id < starting_after)
    rows = list(db.session.scalars(query.order_by(Device.id.desc()).limit(limit + 1)))
    return rows[:limit], len(rows) > limit


def revoke_device(user: User, device_id: str) -> None:
    """Untrust a device and end its sessions. Another user's device is ``NotFound``."""
    user_id = user.id

    def work() -> None:
        # Locked first, as the password change locks the user: a login from this device in flight is revoked too.
        device = db.session.get(Device, device_id, with_for_update=True)
        if device is None or device.user_id != user_id or device.revoked_at is not None:
            raise NotFound("No such device.")
        device.trusted, device.revoked_at = False, clock.now()
        revoke_sessions(user_id, "device_revoked", device_id=device_id)

    run_in_transaction(work)
