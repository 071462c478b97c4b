"""Deadlines applied late, by a party's step (``wallet.trades._catch_up``) or a sweeper that comes late, take effect
when they passed: the clocks they restart count from the deadline, not from whoever came by after it. Found by a
second audit, as were a card charged for a payment past its deadline and a reminder never sent for a moved deadline."""


from tests.api.escrow_helpers import (
    PP,
    act,
    books_clean,
    events,
    open_trade,
    paid_and_shipped,
    relogin,
    run_sweeper,
    trade,
    verify_cli,
)


def _refuse_late_refund(api, clock, buyer, seller):
    """Shipped at day 0 (confirm by day 10); the buyer asks for a refund on day 9 (one day left on the clock),
    the seller refuses at once, and the buyer never escalates: the refusal lapses on day 16, when the clock runs
    again with its one day left, so the trade is due to be confirmed on day 17."""
    trade_id = paid_and_shipped(api, buyer, seller)
    shipped_confirm_by = trade(api, buyer, trade_id)["deadlines"]["confirm_by"]
    clock.advance(days=9)
    relogin(api, buyer, seller)
    rid = act(api, buyer, trade_id, "refunds", amount=5000, reason="scratched").json["id"]
    assert act(api, seller, trade_id, f"refunds/{rid}/refuse", reason="it was fine").status_code == 200
    return trade_id, rid, shipped_confirm_by


def test_a_lapsed_refusal_resumes_the_clock_when_it_lapsed_not_when_someone_next_acts(api, app, clock, people):
    """With a punctual sweeper the refusal lapses on day 16 and the trade auto-confirms on day 17. When nobody sweeps
    and the buyer comes back on day 18, the refusal's lapse resumed the clock from day 18 (deadline day 19), so a
    fresh refund request escaped the auto-confirmation."""
    buyer, seller = people
    trade_id, _rid, _ = _refuse_late_refund(api, clock, buyer, seller)
    clock.advance(days=9)  # day 18: the refusal lapsed on day 16, the resumed deadline (day 17) passed too
    relogin(api, buyer, seller)
    late = act(api, buyer, trade_id, "refunds", amount=20900 - 0, reason="asking again")
    assert (late.status_code, late.json.get("code")) == (409, "trade_not_refundable"), late.json


def test_a_late_sweeper_gives_the_buyer_the_time_it_was_late(api, app, clock, people):
    """The refusal lapsed on day 16 with one day left on the clock, so the trade is due on day 17 whenever the
    sweeper runs; one that came by on day 18 resumed the clock from day 18 instead (deadline day 19)."""
    buyer, seller = people
    trade_id, _rid, _ = _refuse_late_refund(api, clock, buyer, seller)
    clock.advance(days=9)  # day 18
    swept = run_sweeper(app)
    swept_again = run_sweeper(app)
    relogin(api, buyer, seller)
    assert swept["refund_deadlines"] == 1
    assert trade(api, buyer, trade_id)["status"] == "TRADE_FINISHED", (swept, swept_again,
                                                                        trade(api, buyer, trade_id)["deadlines"])


def test_a_late_refusal_lapse_cannot_be_turned_into_an_extension(api, app, clock, people):
    buyer, seller = people
    trade_id, _rid, _ = _refuse_late_refund(api, clock, buyer, seller)
    clock.advance(days=9)  # day 18
    relogin(api, buyer, seller)
    extended = act(api, buyer, trade_id, "extend")
    assert (extended.status_code, extended.json.get("code")) == (409, "trade_not_extendable"), extended.json


def test_paying_with_a_card_after_the_pay_deadline_charges_no_card(api, app, clock):
    """The shortfall's top-up looked at the trade's status only, not at its pay deadline: a trade past it (not swept
    yet) got the card charged, then the payment refused."""
    buyer = api.verified(real_name="李四", locale="en")  # an empty wallet
    seller = api.verified(real_name="王五", locale="en")
    trade_id = open_trade(api, buyer, seller)
    clock.advance(hours=24, minutes=1)
    relogin(api, buyer)
    paid = act(api, buyer, trade_id, "pay", key="late-card", bank_card_id=buyer["card_id"], **PP)
    assert (paid.status_code, paid.json["code"]) == (409, "trade_not_payable")
    topups = api.client.get("/api/v1/wallet/transactions?kind=topup", headers=buyer["headers"]).json["data"]
    assert topups == [], "the card was charged for a payment that could not go through"
    assert api.balance(buyer) == 0
    books_clean(app)


def test_timeline_stays_intact_across_withdraw_rerequest_and_catch_up(api, app, clock, people):
    buyer, seller = people
    trade_id = paid_and_shipped(api, buyer, seller)
    rid = act(api, buyer, trade_id, "refunds", amount=5000, reason="scratched").json["id"]
    assert act(api, buyer, trade_id, f"refunds/{rid}/withdraw").status_code == 200
    rid2 = act(api, buyer, trade_id, "refunds", amount=6000, reason="dented", return_goods=True).json["id"]
    clock.advance(days=5)  # seller silent: agreed (return)
    relogin(api, buyer, seller)
    assert act(api, buyer, trade_id, f"refunds/{rid2}/withdraw").json["status"] == "REFUND_CLOSED"
    clock.advance(days=30)
    relogin(api, buyer, seller)
    assert act(api, seller, trade_id, "evidence", text="late").status_code == 201
    code, output = verify_cli(app, trade_id)
    assert code == 0, output
    assert trade(api, seller, trade_id)["status"] == "TRADE_FINISHED"
    assert "refund_withdrawn" in events(app, seller["phone"])
    books_clean(app)


def test_a_return_window_that_ran_out_behind_a_lapsed_answer_is_not_reopened(api, app, clock, people):
    """Chained deadlines: the seller stays silent on a refund with return (agreed on day 6, the buyer then has until
    day 13 to send the goods back). Nobody sweeps; on day 20 the buyer enters a return tracking number: the return
    window must have started on day 6 and closed on day 13, not start on day 20."""
    buyer, seller = people
    trade_id = paid_and_shipped(api, buyer, seller)
    clock.advance(days=1)
    relogin(api, buyer, seller)
    rid = act(api, buyer, trade_id, "refunds", amount=20900, reason="broken", return_goods=True).json["id"]
    clock.advance(days=19)  # day 20
    relogin(api, buyer, seller)
    late = act(api, buyer, trade_id, f"refunds/{rid}/return", carrier="EMS", tracking_number="EMS1")
    assert (late.status_code, late.json.get("code")) == (409, "illegal_refund_transition"), late.json


def test_a_deadline_moved_by_a_refund_is_reminded_of_again(api, app, clock, people):
    """Reminded on day 7 of the day-10 deadline; a refund on day 8, refused at once and withdrawn on day 14, paused
    the clock six days: the deadline is day 16, and the buyer is reminded of that one too (as after an extension)."""
    buyer, seller = people
    trade_id = paid_and_shipped(api, buyer, seller)
    clock.advance(days=7)
    assert run_sweeper(app)["reminded"] == 1
    clock.advance(days=1)
    relogin(api, buyer, seller)
    rid = act(api, buyer, trade_id, "refunds", amount=1000, reason="x").json["id"]
    assert act(api, seller, trade_id, f"refunds/{rid}/refuse", reason="no").status_code == 200
    clock.advance(days=6)
    relogin(api, buyer, seller)
    assert act(api, buyer, trade_id, f"refunds/{rid}/withdraw").status_code == 200
    assert run_sweeper(app)["reminded"] == 1  # the new reminder was due on day 13: sent at once
    assert run_sweeper(app)["reminded"] == 0
    assert events(app, buyer["phone"]).count("confirm_deadline_reminder") == 2


def test_a_sweeper_down_past_the_confirm_deadline_sends_no_reminder_of_it(api, app, clock, people):
    """Found by a third audit: the reminder job runs before the confirmation in a sweep, and a sweeper down from before
    the reminder until after the deadline texted the buyer to ask for a refund "before" a time already past."""
    buyer, seller = people
    trade_id = paid_and_shipped(api, buyer, seller)
    clock.advance(days=11)  # reminder due on day 7, the deadline on day 10
    assert run_sweeper(app)["reminded"] == 0
    relogin(api, buyer, seller)
    assert trade(api, buyer, trade_id)["status"] == "TRADE_FINISHED"
    assert "confirm_deadline_reminder" not in events(app, buyer["phone"])
    assert "trade_finished" in events(app, buyer["phone"])
    books_clean(app)


def test_a_late_confirmation_finishes_the_trade_at_its_deadline_and_the_ratings_window_counts_from_there(
        api, app, clock, people):
    """Found by a third audit: a trade the deadline confirmed was dated when the confirmation was applied, so the
    ratings window of a trade no sweeper reached in time ran from then, and a rating 20 days after the deadline (5
    past the window) was taken, where the same trade swept on time refused it."""
    buyer, seller = people
    trade_id = paid_and_shipped(api, buyer, seller)
    confirm_by = trade(api, buyer, trade_id)["deadlines"]["confirm_by"]
    clock.advance(days=30)  # nobody swept: the buyer's rating applies the deadline first
    relogin(api, buyer, seller)
    late = act(api, buyer, trade_id, "ratings", score=-1)
    assert (late.status_code, late.json["code"]) == (409, "rating_closed")
    run_sweeper(app)  # the refusal rolled the catching up back with it: the sweeper applies the deadline
    relogin(api, buyer, seller)
    after = trade(api, buyer, trade_id)
    assert (after["status"], after["finished_at"]) == ("TRADE_FINISHED", confirm_by)
    books_clean(app)


def test_an_unpaid_trade_closed_late_is_closed_as_of_its_pay_deadline(api, app, clock, people):
    buyer, seller = people
    trade_id = open_trade(api, buyer, seller)
    pay_by = trade(api, buyer, trade_id)["deadlines"]["pay_by"]
    clock.advance(days=3)
    run_sweeper(app)
    relogin(api, buyer, seller)
    closed = trade(api, buyer, trade_id)
    assert (closed["status"], closed["close_reason"], closed["closed_at"]) == ("TRADE_CLOSED", "unpaid", pay_by)


def test_one_sweep_applies_a_chain_of_deadlines_long_past(api, app, clock, people):
    """Found by the liveness audit: a sweep applied one deadline per trade per run. A refund with return that the
    seller never answered and the buyer never sent back, 400 days on, took three runs of ``flask escrow sweep``: the
    silence agreed, then the return window lapsed (resuming a confirm clock long past its end), then the trade
    finished. One run now applies the chain, and the next finds nothing."""
    buyer, seller = people
    trade_id = paid_and_shipped(api, buyer, seller)
    assert act(api, buyer, trade_id, "refunds", amount=100, reason="scratched", return_goods=True).status_code == 201
    clock.advance(days=400)
    first, second = (app.test_cli_runner().invoke(args=["escrow", "sweep"]) for _ in range(2))
    assert first.exit_code == second.exit_code == 0, (first.output, second.output)
    assert first.output.split() == ["closed_unpaid=0", "reminded=0", "auto_confirmed=1", "refund_deadlines=2"]
    assert second.output.split() == ["closed_unpaid=0", "reminded=0", "auto_confirmed=0", "refund_deadlines=0"]
    relogin(api, buyer)
    assert trade(api, buyer, trade_id)["status"] == "TRADE_FINISHED"
    books_clean(app)


def test_one_sweep_closes_more_due_trades_than_one_page_holds(api, app, clock, people):
    """A pass reads 200 due trades of each kind; one sweep left the 201st unpaid trade open (liveness audit)."""
    buyer, seller = people
    opened = [open_trade(api, buyer, seller, amount=100, shipping_fee=0) for _ in range(201)]
    clock.advance(days=2)
    swept = app.test_cli_runner().invoke(args=["escrow", "sweep"])
    assert swept.output.split()[0] == "closed_unpaid=201", swept.output
    relogin(api, buyer)
    assert {trade(api, buyer, trade_id)["status"] for trade_id in opened} == {"TRADE_CLOSED"}
