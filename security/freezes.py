"""Account freezes (R13, risk control): staff stop an account's money from leaving it while they look into it.

While an account is frozen:

* every request that moves its money or links a bank account is refused with 403 ``account_frozen``, before its
  payment password is checked (``accounts.authorize_payment``, which reads the freeze in the statement that reads the
  password hash, so a payment pays nothing for it), and a frozen account's tries never count toward its lock;
* a withdrawal it asked for before the freeze that the bank has not received yet is failed back to the wallet by the
  withdrawal worker (``wallet.funds``); one already with the bank runs its course;
* money may still come in (transfers, refunds, the sweeper's deadlines), and the owner can still sign in, read the
  account and change either password.

A payment whose password check read the account before the freeze committed still completes: a freeze stops what
starts after it. Freezing and lifting send the owner an SMS. ``flask users freeze PHONE --reason TEXT`` and
``flask users unfreeze PHONE`` are the commands, and ``flask users frozen`` lists the accounts frozen now; every
freeze is kept with its reason when lifted.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from core import clock, sql
from core.db import run_in_transaction
from core.ids import new_id
from notifications.outbox import enqueue
from notifications.templates import format_time

_ACTIVE = sql.Statement(
    "SELECT frozen_at, reason FROM account_freezes WHERE user_id = :user_id AND lifted_at IS NULL", utc=["frozen_at"])
_USER = sql.Statement("SELECT phone, locale FROM users WHERE id = :user_id")
_FREEZE = sql.Statement(
    "INSERT INTO account_freezes (id, user_id, reason, frozen_at) VALUES (:id, :user_id, :reason, :now)"
    " ON CONFLICT (user_id) WHERE lifted_at IS NULL DO NOTHING")
_ACTIVE_ALL = sql.Statement(
    "SELECT u.id, u.phone, f.frozen_at, f.reason FROM account_freezes f JOIN users u ON u.id = f.user_id"
    " WHERE f.lifted_at IS NULL ORDER BY f.frozen_at, u.id", utc=["frozen_at"])
# A clock stepped back since the freeze (NTP, or another host's clock a second behind) lifts it at its start: a freeze
# is never lifted before it began (the table's CHECK), and lifting it must not fail on that.
_LIFT = sql.Statement("UPDATE account_freezes SET lifted_at = CASE WHEN frozen_at > :now THEN frozen_at ELSE :now END"
                      " WHERE user_id = :user_id AND lifted_at IS NULL")


def frozen_since(user_id: str) -> datetime | None:
    """When the account's current freeze began, or None when it is not frozen (in the caller's transaction)."""
    return _ACTIVE.scalar(user_id=user_id)  # the first column


def frozen_accounts() -> list[Any]:
    """Every account frozen now, longest frozen first: rows of (id, phone, frozen_at, reason)."""
    return run_in_transaction(lambda: _ACTIVE_ALL.all(), read_only=True)


# What ``account_freezes.reason`` holds; a longer reason is refused by ``flask users freeze``, never cut short.
MAX_REASON = 200


@dataclass(frozen=True)
class Freeze:
    """The account's freeze after ``freeze_account``: when it began, why, and whether this call made it (False: the
    account was frozen already, and that freeze and its reason stand unchanged)."""

    since: datetime
    reason: str
    new: bool


def freeze(user_id: str, reason: str) -> datetime:
    """Freeze the account (its owner is told by SMS); when it is frozen already, nothing changes. Returns when the
    account's freeze began."""
    return freeze_account(user_id, reason).since


def freeze_account(user_id: str, reason: str) -> Freeze:
    """As ``freeze``, saying whether the account was frozen already and for what reason (``flask users freeze`` tells
    the operator: a second reason is not kept)."""
    reason = reason.strip()
    if not reason:
        raise ValueError("a freeze needs a reason")

    def work() -> Freeze:
        now = clock.now()
        if _FREEZE.run(id=new_id("frz"), user_id=user_id, reason=reason[:MAX_REASON], now=now):
            owner = _USER.one(user_id=user_id)
            enqueue(owner.phone, "account_frozen", locale=owner.locale, user_id=user_id, time=format_time(now))
            return Freeze(now, reason[:MAX_REASON], True)
        current = _ACTIVE.one(user_id=user_id)
        return Freeze(current.frozen_at, current.reason, False)

    return run_in_transaction(work)


def lift(user_id: str) -> bool:
    """Lift the account's freeze (its owner is told by SMS); False when it was not frozen."""

    def work() -> bool:
        now = clock.now()
        if not _LIFT.run(user_id=user_id, now=now):
            return False
        owner = _USER.one(user_id=user_id)
        enqueue(owner.phone, "account_unfrozen", locale=owner.locale, user_id=user_id, time=format_time(now))
        return True

    return run_in_transaction(work)
