"""Lockout policy for the login and payment passwords (DESIGN 4.2), as plain functions over a value.

* A rolling 24-hour window: the first and second wrong entries inside it answer normally, the third locks
  for three hours. The lock lifts by itself; the window starts empty after a lock, so an attacker gets at
  most three guesses per three hours.
* A success clears everything.
* Ten wrong entries in a row, across windows, become a hard lock that only an SMS-verified reset lifts.
* While locked, nothing is checked: a correct password answers "locked" too, so a lock cannot be used to
  confirm a guess.

The login and payment passwords each have their own ``LockState``; the login state is keyed by phone
number, so unknown numbers lock exactly like real ones.

A second factor that an SMS-verified reset still needs (the authenticator code of a login-password recovery) has a
lock state of its own, not the login password's: anyone who knows a number can lock its login, and a login lock that
refused the recovery shut out an owner who holds both the SIM and the authenticator (found by an audit). Its state
follows the window rule alone (``record_reset_failure``): the third wrong code in the window locks the reset for
``lock_for``; there is no hard lock, which only the reset itself would lift. ``reset_locked`` and
``reset_attempts_left`` read such a state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta


@dataclass(frozen=True)
class Policy:
    window: timedelta = timedelta(hours=24)
    max_failures: int = 3
    lock_for: timedelta = timedelta(hours=3)
    hard_lock_after: int = 10


POLICY = Policy()


@dataclass(frozen=True)
class LockState:
    recent_failures: tuple[datetime, ...] = field(default_factory=tuple)
    consecutive_failures: int = 0
    locked_until: datetime | None = None
    hard_locked: bool = False

    def is_locked(self, now: datetime) -> bool:
        return self.hard_locked or (self.locked_until is not None and now < self.locked_until)


def _in_window(state: LockState, now: datetime, policy: Policy) -> tuple[datetime, ...]:
    return tuple(t for t in state.recent_failures if now - t < policy.window)


def record_failure(state: LockState, now: datetime, policy: Policy = POLICY) -> LockState:
    """The state after one more wrong entry at ``now``; it may be locked."""
    consecutive = state.consecutive_failures + 1
    if consecutive >= policy.hard_lock_after:
        return LockState((), consecutive, None, True)
    recent = (*_in_window(state, now, policy), now)
    if len(recent) >= policy.max_failures:
        return LockState((), consecutive, now + policy.lock_for, False)
    return LockState(recent, consecutive, None, False)


def record_success(_state: LockState) -> LockState:
    """A correct entry clears the window and the consecutive count."""
    return LockState()


def lift(_state: LockState) -> LockState:
    """An SMS-verified reset lifts any lock, hard ones included."""
    return LockState()


def reset_locked(state: LockState, now: datetime) -> bool:
    """Whether a reset's second factor is refused now: during a lock that lifts by itself (a reset has no other)."""
    return state.locked_until is not None and now < state.locked_until


def record_reset_failure(state: LockState, now: datetime, policy: Policy = POLICY) -> LockState:
    """The state after a wrong second factor at a reset: the window rule of ``record_failure`` without its ceiling
    (the third wrong entry in the window locks for ``lock_for``; nothing becomes a hard lock, since only the reset
    itself would lift one). The consecutive count is kept, for the record."""
    consecutive = state.consecutive_failures + 1
    recent = (*_in_window(state, now, policy), now)
    if len(recent) >= policy.max_failures:
        return LockState((), consecutive, now + policy.lock_for, False)
    return LockState(recent, consecutive, None, False)


def reset_attempts_left(state: LockState, now: datetime, policy: Policy = POLICY) -> int:
    """Tries a reset's second factor has left before the reset locks, the locking one included."""
    return max(0, policy.max_failures - len(_in_window(state, now, policy)))


def attempts_left(state: LockState, now: datetime, policy: Policy = POLICY) -> int:
    """Tries left, the locking one included: 2 after the first wrong entry, 1 after the second."""
    by_window = policy.max_failures - len(_in_window(state, now, policy))
    by_ceiling = policy.hard_lock_after - state.consecutive_failures
    return max(0, min(by_window, by_ceiling))
