"""The escrow clock's configuration, found by the clock audit: an escrow duration too long for a date to hold was
accepted at start-up and then failed every trade's opening, shipping or rating with a 500 (``OverflowError``)."""

from __future__ import annotations

import pytest

from core.config import SETTINGS, ConfigError, load
from tests.api.escrow_helpers import PP, act, books_clean, open_trade, paid_and_shipped, run_sweeper

# The escrow deadlines' durations, each with its longest accepted value: 100 years of 366 days, as for every duration.
LONGEST = {name: 878_400 if "_HOURS" in name else 36_600 for name in SETTINGS
           if name.startswith("ESCROW_") and ("_DAYS" in name or "_HOURS" in name)}


@pytest.mark.parametrize("name", sorted(LONGEST))
@pytest.mark.parametrize("past_longest", [1, 3_000_000, 1_000_000_000])
def test_an_escrow_duration_no_date_can_reach_is_refused_at_start_naming_the_setting(tmp_path, name, past_longest):
    with pytest.raises(ConfigError) as refused:
        load({name: str(LONGEST[name] + past_longest)}, str(tmp_path))
    message = refused.value.message
    assert name in message and "\n" not in message, message


def test_a_trade_runs_its_whole_course_with_the_longest_durations_accepted(api, app, clock, people, tmp_path):
    """Every escrow duration at its longest: opening, paying, shipping, a refund and its chain of deadlines, an
    extension, confirming and rating all answer, none with a 500. The reminder is at its longest beside the longest
    confirm window: a day less (``ESCROW_REMIND_DAYS_BEFORE`` must be less than ``ESCROW_CONFIRM_DAYS``)."""
    together = {**LONGEST, "ESCROW_REMIND_DAYS_BEFORE": LONGEST["ESCROW_CONFIRM_DAYS"] - 1}
    longest = load({name: str(most) for name, most in together.items()}, str(tmp_path))
    app.config.update({name: longest[name] for name in LONGEST})
    buyer, seller = people
    assert open_trade(api, buyer, seller)
    trade_id = paid_and_shipped(api, buyer, seller)
    refund = act(api, buyer, trade_id, "refunds", amount=1000, reason="scratched", return_goods=True)
    assert refund.status_code == 201, refund.json
    agreed = act(api, seller, trade_id, f"refunds/{refund.json['id']}/agree", **PP)
    assert agreed.status_code == 200, agreed.json
    withdrawn = act(api, buyer, trade_id, f"refunds/{refund.json['id']}/withdraw")
    assert withdrawn.status_code == 200, withdrawn.json
    extended = act(api, buyer, trade_id, "extend")
    assert extended.status_code == 200, extended.json
    assert act(api, buyer, trade_id, "confirm", key="confirm", **PP).status_code == 200
    rated = act(api, buyer, trade_id, "ratings", score=1)
    assert rated.status_code == 201, rated.json
    run_sweeper(app)
    books_clean(app)
