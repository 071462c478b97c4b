"""``core.clock.as_utc`` and ``as_stored``: the conversions between the naive UTC the database stores and the aware
UTC the product works in, which every read and write of a time goes through (``core.sql``, ``core.db``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.clock import as_stored, as_utc

# Zones a time may arrive in: UTC itself, two fixed offsets (China Standard Time's +8:00, and -5:30) and two named
# zones, one with daylight saving time.
ZONES = st.sampled_from([UTC, timezone(timedelta(hours=8)), timezone(-timedelta(hours=5, minutes=30)),
                         ZoneInfo("Asia/Shanghai"), ZoneInfo("America/New_York")])


@given(st.datetimes(), st.sampled_from([0, 1]))
def test_a_stored_time_is_the_same_instant_aware_in_utc(stored: datetime, fold: int) -> None:
    stored = stored.replace(fold=fold)
    aware = as_utc(stored)
    assert aware.tzinfo is UTC
    assert aware == stored.replace(tzinfo=UTC)
    assert (aware.fold, aware.microsecond) == (fold, stored.microsecond)
    assert as_stored(aware) == stored


@given(st.datetimes(timezones=ZONES))
def test_an_aware_time_is_stored_as_the_same_instant_in_naive_utc(moment: datetime) -> None:
    stored = as_stored(moment)
    assert stored.tzinfo is None
    assert stored == moment.astimezone(UTC).replace(tzinfo=None)
    # The same instant (compared as timestamps: Python holds an ambiguous wall time unequal across zones).
    assert as_utc(stored).timestamp() == moment.timestamp()


def test_a_time_in_china_standard_time_is_stored_eight_hours_earlier() -> None:
    beijing = datetime(2026, 12, 7, 8, 30, 5, 123456, tzinfo=timezone(timedelta(hours=8)))
    assert as_stored(beijing) == datetime(2026, 12, 7, 0, 30, 5, 123456)


def test_a_naive_time_is_refused_rather_than_guessed() -> None:
    with pytest.raises(ValueError, match="naive"):
        as_stored(datetime(2026, 12, 7, 8, 30))
