"""The hold after a login-password recovery by SMS alone (``SMS_RECOVERY_HOLD_HOURS``).

Whoever holds the SIM could have done that recovery, so for a while the SIM alone gets no payment password and nothing
that would keep out the owner, who may get the SIM back from the carrier: no phone change, no authenticator, no
real-name identity (an account holds one identity for good, and cards are bound only in its name). Each change it holds
off checks twice: ``refuse_early`` before any code is spent or slow work done, and ``refusal_under_lock`` again in the
change's own transaction on the account's row (``locked_account``), which a recovery locks too. The owner is told of
every refusal (``held_after_recovery``).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from flask import current_app

from core import clock
from core.db import db, run_in_transaction
from core.errors import AppError
from notifications.outbox import enqueue
from notifications.templates import format_time, format_until
from security.errors import AccountRecentlyRecovered
from security.models import User

# A refusal by a hold: the error, and when the recovery hold ends if it is among the reasons (the owner is told then).
Refusal = tuple[AppError, datetime | None]


def hold_until(user: User) -> datetime | None:
    """When the hold that follows a login-password recovery by SMS alone ends, if it has not yet."""
    if user.password_recovered_at is None:
        return None
    until = user.password_recovered_at + timedelta(hours=current_app.config["SMS_RECOVERY_HOLD_HOURS"])
    return until if clock.now() < until else None


def announce_hold(user: User, until: datetime) -> None:
    """Inside the caller's transaction: the owner hears of a change refused by the hold (R4)."""
    enqueue(user.phone, "held_after_recovery", locale=user.locale, user_id=user.id, time=format_time(clock.now()),
            until=format_until(until))


def hold_refusal(user: User) -> Refusal | None:
    """A change that would keep the owner out waits out the hold (``AccountRecentlyRecovered``)."""
    until = hold_until(user)
    return None if until is None else (AccountRecentlyRecovered(until), until)


def refuse_early(refusal: Refusal | None, user: User) -> None:
    """Before the SMS code is spent and any slow work: raise the refusal, if any; the owner is told of a hold in a
    transaction of its own (the refusal rolls back the request's)."""
    if refusal is not None:
        error, held = refusal
        if held is not None:
            run_in_transaction(lambda: announce_hold(user, held))
        raise error


def refusal_under_lock(refusal: Refusal | None, account: User) -> AppError | None:
    """The same check again, in the change's transaction on the account's row locked ``FOR UPDATE``, which a recovery
    locks too before it writes ``password_recovered_at``: a recovery that committed since the early check is seen
    here, and one in flight holds the row until it commits, then is seen. The early check read the account outside
    this transaction, so it alone let a concurrent recovery slip past. Returns the error for the caller to answer
    with once its transaction has committed (the owner's alert alone)."""
    if refusal is None:
        return None
    error, held = refusal
    if held is not None:
        announce_hold(account, held)
    return error


def locked_account(user_id: str) -> User:
    """The account's row, locked until the transaction ends and read afresh (not as an earlier read left it)."""
    account = db.session.get(User, user_id, with_for_update=True)  # afresh: core.db._locked_reads_read_afresh
    assert account is not None
    return account
