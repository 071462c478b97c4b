"""The ratings window is one of a trade's deadlines (DESIGN 6: "deadlines are data on the trade and visible in the
API"), but a finished trade showed none: a client could not tell its user until when a rating is taken without knowing
the server's ESCROW_RATE_DAYS. A finished trade's ``deadlines.rate_by`` says it, the window's last moment included
(found by the time audit)."""

from datetime import datetime, timedelta

from tests.api.escrow_helpers import PP, act, open_trade, paid_and_shipped, relogin, run_sweeper, trade


def _at(text):
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_a_finished_trade_shows_until_when_it_can_be_rated_and_takes_a_rating_until_then(api, app, clock, people):
    buyer, seller = people
    trade_id = paid_and_shipped(api, buyer, seller)
    assert trade(api, buyer, trade_id)["deadlines"]["rate_by"] is None  # not finished yet
    clock.advance(days=1, microseconds=321)
    relogin(api, buyer, seller)
    finished = act(api, buyer, trade_id, "confirm", key="confirm", **PP).json
    rate_by = _at(finished["deadlines"]["rate_by"])
    assert rate_by == _at(finished["finished_at"]) + timedelta(days=15)
    assert trade(api, seller, trade_id)["deadlines"]["rate_by"] == finished["deadlines"]["rate_by"]

    clock.set(rate_by)
    relogin(api, buyer, seller)
    assert act(api, buyer, trade_id, "ratings", score=1).status_code == 201
    clock.set(rate_by + timedelta(microseconds=1))
    relogin(api, buyer, seller)
    late = act(api, seller, trade_id, "ratings", score=1)
    assert (late.status_code, late.json["code"]) == (409, "rating_closed")


def test_a_trade_confirmed_by_its_deadline_late_counts_the_window_from_the_deadline(api, app, clock, people):
    buyer, seller = people
    trade_id = paid_and_shipped(api, buyer, seller)
    confirm_by = trade(api, buyer, trade_id)["deadlines"]["confirm_by"]
    clock.advance(days=12)  # the sweeper comes two days late
    run_sweeper(app)
    relogin(api, buyer, seller)
    after = trade(api, buyer, trade_id)
    assert after["status"] == "TRADE_FINISHED"
    assert _at(after["deadlines"]["rate_by"]) == _at(confirm_by) + timedelta(days=15)


def test_a_closed_trade_shows_no_rating_deadline(api, app, people):
    buyer, seller = people
    trade_id = open_trade(api, buyer, seller)
    closed = act(api, buyer, trade_id, "cancel").json
    assert closed["status"] == "TRADE_CLOSED" and closed["deadlines"]["rate_by"] is None
