"""The confirm deadline's reminder is sent once per deadline, found by the clock audit: an extension that moved nothing
(``ESCROW_EXTEND_DAYS=0``, which the README allows) marked the trade as not reminded, and the buyer got the same
reminder of the same deadline a second time."""

from tests.api.escrow_helpers import act, events, paid_and_shipped, relogin, run_sweeper, trade


def test_an_extension_that_moves_nothing_sends_no_second_reminder_of_the_same_deadline(api, app, clock, people):
    app.config["ESCROW_EXTEND_DAYS"] = 0
    buyer, seller = people
    trade_id = paid_and_shipped(api, buyer, seller)
    before = trade(api, buyer, trade_id)["deadlines"]
    clock.advance(days=7)
    assert run_sweeper(app)["reminded"] == 1
    relogin(api, buyer, seller)
    extended = act(api, buyer, trade_id, "extend")
    assert extended.status_code == 200, extended.json
    assert extended.json["deadlines"]["confirm_by"] == before["confirm_by"]
    assert run_sweeper(app)["reminded"] == 0
    assert events(app, buyer["phone"]).count("confirm_deadline_reminder") == 1
    clock.advance(days=3)
    assert run_sweeper(app)["auto_confirmed"] == 1


def test_an_extension_that_moves_the_deadline_is_reminded_of_again(api, app, clock, people):
    """What the fix keeps: a reminder sent before an extension named the old deadline, so the new one gets its own."""
    buyer, seller = people
    trade_id = paid_and_shipped(api, buyer, seller)
    clock.advance(days=7)
    assert run_sweeper(app)["reminded"] == 1
    relogin(api, buyer, seller)
    assert act(api, buyer, trade_id, "extend").status_code == 200
    assert run_sweeper(app)["reminded"] == 0  # the extended deadline's reminder is due on day 12
    clock.advance(days=5)
    assert run_sweeper(app)["reminded"] == 1
    assert events(app, buyer["phone"]).count("confirm_deadline_reminder") == 2
