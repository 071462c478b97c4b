"""The spending limits where money meets the bank, at their edges (an audit's answers, pinned): one movement at most
LIMIT_PER_TRANSACTION, what a user sends out (withdrawals, payments to a phone, trade payments; not top-ups) at most
LIMIT_DAILY per China Standard Time day, and a withdrawal that fails at the bank gives its day back exactly once."""

from datetime import UTC, date, datetime

from sqlalchemy import select

from core.db import db
from wallet.check import check_invariants
from wallet.funds import process_withdrawals
from wallet.funds_models import DailyUsage


def _days(app) -> list[tuple[date, int]]:
    with app.app_context():
        rows = db.session.execute(select(DailyUsage.day, DailyUsage.amount).order_by(DailyUsage.day)).all()
        return [tuple(row) for row in rows]


def _answer(response) -> tuple[int, str | None]:
    return response.status_code, response.json.get("code")


def test_each_limit_lets_its_exact_amount_through_and_refuses_one_fen_more(api, app):
    app.config.update(LIMIT_PER_TRANSACTION=6000, LIMIT_DAILY=10000)
    alice, bob = api.verified(), api.register()
    card = alice["card_id"]
    assert _answer(api.money("/api/v1/topups", alice, amount=6001, bank_card_id=card)) == (422, "limit_exceeded")
    for _ in range(3):  # top-ups are money coming in: 180.00 on one day, none of it counted
        assert _answer(api.money("/api/v1/topups", alice, amount=6000, bank_card_id=card))[0] == 201
    assert _answer(api.money("/api/v1/withdrawals", alice, amount=6001, bank_card_id=card)) == (422, "limit_exceeded")
    assert _answer(api.money("/api/v1/transfers", alice, amount=6001, to_phone=bob["phone"])) == (
        422, "limit_exceeded")
    assert _answer(api.money("/api/v1/withdrawals", alice, amount=6000, bank_card_id=card))[0] == 202
    assert _answer(api.money("/api/v1/transfers", alice, amount=4001, to_phone=bob["phone"])) == (
        422, "limit_exceeded")
    assert _answer(api.money("/api/v1/transfers", alice, amount=4000, to_phone=bob["phone"]))[0] == 201
    assert _answer(api.money("/api/v1/withdrawals", alice, amount=1, bank_card_id=card)) == (422, "limit_exceeded")
    assert [amount for _day, amount in _days(app)] == [10000]
    assert api.balance(alice) == 18000 - 6000 - 4000


def test_a_withdrawal_asked_for_before_midnight_in_china_that_fails_after_gives_back_its_own_day_once(
        api, app, clock, inbox):
    app.config["LIMIT_DAILY"] = 10000
    clock.set(datetime(2026, 3, 1, 15, 59, 59, tzinfo=UTC))  # 23:59:59 on 1 March in China
    alice, bob = api.verified(card_ending="8888", locale="en"), api.register()
    assert api.money("/api/v1/topups", alice, amount=30000, bank_card_id=alice["card_id"]).status_code == 201
    assert api.money("/api/v1/withdrawals", alice, amount=10000, bank_card_id=alice["card_id"]).status_code == 202
    clock.advance(seconds=1)  # 2 March: a new day, a whole new limit
    api.relogin(alice)
    assert api.money("/api/v1/transfers", alice, amount=10000, to_phone=bob["phone"]).status_code == 201
    with app.app_context():
        for _ in range(5):  # the bank fails the payout; the worker comes by again and again
            clock.advance(seconds=60)
            process_withdrawals()
    assert _days(app) == [(date(2026, 3, 1), 0), (date(2026, 3, 2), 10000)]  # 1 March's given back, once
    api.relogin(alice)
    over = api.money("/api/v1/transfers", alice, amount=1, to_phone=bob["phone"])
    assert _answer(over) == (422, "limit_exceeded")  # 2 March's limit is not what came back
    assert api.balance(alice) == 20000
    assert len(inbox.messages(to=alice["phone"], event="withdrawal_requested")) == 1
    assert len(inbox.messages(to=alice["phone"], event="withdrawal_failed")) == 1
    assert not inbox.messages(to=alice["phone"], event="withdrawal_completed")
    with app.app_context():
        assert check_invariants() == []


def test_the_days_first_payment_above_a_daily_limit_lower_than_the_per_transaction_one_is_refused(api, app):
    """The daily limit holds on a day's first movement too, also when it is set below the per-transaction limit."""
    app.config.update(LIMIT_PER_TRANSACTION=6000, LIMIT_DAILY=3000)
    alice, bob = api.verified(), api.register()
    assert _answer(api.money("/api/v1/topups", alice, amount=6000, bank_card_id=alice["card_id"]))[0] == 201
    assert _answer(api.money("/api/v1/transfers", alice, amount=3001, to_phone=bob["phone"])) == (
        422, "limit_exceeded")
    assert _days(app) == []
    assert _answer(api.money("/api/v1/transfers", alice, amount=3000, to_phone=bob["phone"]))[0] == 201
    assert api.balance(alice) == 3000
