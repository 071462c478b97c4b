from datetime import UTC, datetime, timedelta

import pytest

from security.lockout import (
    LockState,
    attempts_left,
    lift,
    record_failure,
    record_reset_failure,
    record_success,
    reset_attempts_left,
    reset_locked,
)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def fail(state: LockState, *offsets: timedelta) -> LockState:
    for offset in offsets:
        state = record_failure(state, T0 + offset)
    return state


def test_two_wrong_entries_leave_it_open_with_attempts_counting_down():
    one = record_failure(LockState(), T0)
    assert not one.is_locked(T0) and attempts_left(one, T0) == 2
    two = record_failure(one, T0 + timedelta(minutes=1))
    assert not two.is_locked(T0) and attempts_left(two, T0 + timedelta(minutes=1)) == 1


def test_third_wrong_entry_within_a_day_locks_for_three_hours():
    state = fail(LockState(), timedelta(0), timedelta(hours=5), timedelta(hours=23, minutes=59))
    locked_at = T0 + timedelta(hours=23, minutes=59)
    assert state.locked_until == locked_at + timedelta(hours=3)
    assert state.is_locked(locked_at + timedelta(hours=2, minutes=59, seconds=59))
    assert not state.is_locked(locked_at + timedelta(hours=3))


def test_failures_outside_the_rolling_window_do_not_add_up():
    state = fail(LockState(), timedelta(0), timedelta(hours=25), timedelta(hours=50))
    assert state.locked_until is None
    assert attempts_left(state, T0 + timedelta(hours=50)) == 2


def test_success_clears_the_window():
    state = record_success(fail(LockState(), timedelta(0), timedelta(minutes=1)))
    state = fail(state, timedelta(minutes=2), timedelta(minutes=3))
    assert not state.is_locked(T0 + timedelta(minutes=3))


def test_ten_consecutive_failures_across_windows_hard_lock_until_lifted():
    state = LockState()
    for i in range(9):
        state = record_failure(state, T0 + timedelta(days=i))  # one a day: never three in a window
    assert not state.is_locked(T0 + timedelta(days=9))
    state = record_failure(state, T0 + timedelta(days=9))
    assert state.hard_locked and state.is_locked(T0 + timedelta(days=400))
    assert not lift(state).is_locked(T0 + timedelta(days=9))


@pytest.mark.parametrize(("failures", "expected"), [(0, 3), (1, 2), (2, 1)])
def test_attempts_left(failures, expected):
    state = fail(LockState(), *[timedelta(minutes=i) for i in range(failures)])
    assert attempts_left(state, T0 + timedelta(minutes=5)) == expected


def test_a_reset_factor_counts_like_a_wrong_entry_while_there_is_no_hard_lock():
    state = LockState()
    for minutes in (0, 1, 2, 200, 201):
        at = T0 + timedelta(minutes=minutes)
        assert record_reset_failure(state, at) == record_failure(state, at)
        state = record_failure(state, at)


def test_three_wrong_reset_factors_in_the_window_lock_the_reset_for_three_hours():
    state = record_reset_failure(record_reset_failure(LockState(), T0), T0 + timedelta(minutes=1))
    assert not reset_locked(state, T0 + timedelta(minutes=1))
    assert reset_attempts_left(state, T0 + timedelta(minutes=1)) == 1
    state = record_reset_failure(state, T0 + timedelta(minutes=2))
    until = T0 + timedelta(minutes=2, hours=3)
    assert (state.locked_until, state.hard_locked, state.consecutive_failures) == (until, False, 3)
    assert reset_locked(state, until - timedelta(seconds=1)) and not reset_locked(state, until)


def test_a_reset_factor_never_makes_a_hard_lock():
    """Only the reset itself would lift a hard lock of the reset: the window rule alone applies (fifth audit)."""
    state = LockState()
    for i in range(12):
        state = record_reset_failure(state, T0 + timedelta(days=i))  # one a day: never three in a window
    assert (state.consecutive_failures, state.hard_locked, state.locked_until) == (12, False, None)
    assert not state.is_locked(T0 + timedelta(days=11)) and reset_attempts_left(state, T0 + timedelta(days=11)) == 2
