"""A day's row of spending (``daily_usage``) counts for nothing once the day is over; the background worker
deletes the rows of the days before yesterday, China Standard Time (wallet.limits.purge_past_days), and a limit
on today's payments is untouched by it. Each payment to a phone number also has its payer's count of payments to that
payee that day (``daily_payee_usage``), purged with it: the counts below are of both tables' rows."""

from datetime import UTC, date, datetime

from sqlalchemy import select

from core.db import db
from wallet.funds_models import DailyUsage
from wallet.limits import purge_past_days


def _days(app) -> list[tuple[str, date, int]]:
    with app.app_context():
        rows = db.session.execute(select(DailyUsage.user_id, DailyUsage.day, DailyUsage.amount)
                                  .order_by(DailyUsage.day, DailyUsage.user_id)).all()
        return [tuple(row) for row in rows]


def _purge(app, **kwargs) -> int:
    with app.app_context():
        return purge_past_days(**kwargs)


def _pay(api, payer, payee, amount: int) -> None:
    response = api.money("/api/v1/transfers", payer, amount=amount, to_phone=payee["phone"])
    assert response.status_code == 201, response.json


def test_the_days_before_yesterday_go_and_yesterday_and_today_stay(app, api, clock):
    clock.set(datetime(2026, 3, 1, 15, 59, 59, tzinfo=UTC))  # 23:59:59 on 1 March in China
    alice, bob = api.verified(), api.register()
    api.money("/api/v1/topups", alice, amount=50_000, bank_card_id=alice["card_id"])
    _pay(api, alice, bob, 100)
    clock.advance(seconds=1)  # midnight in China: 2 March
    alice, bob = api.relogin(alice), api.relogin(bob)
    _pay(api, alice, bob, 200)
    assert [(day, amount) for _user, day, amount in _days(app)] == [(date(2026, 3, 1), 100), (date(2026, 3, 2), 200)]

    assert _purge(app) == 0  # 1 March is yesterday
    clock.set(datetime(2026, 3, 2, 15, 59, 59, tzinfo=UTC))  # still 2 March in China
    assert _purge(app) == 0
    clock.advance(seconds=1)  # 3 March: 1 March is the day before yesterday
    assert _purge(app) == 2  # its spending, and its one payment to bob
    assert [(day, amount) for _user, day, amount in _days(app)] == [(date(2026, 3, 2), 200)]


def test_todays_limit_still_counts_what_was_paid_today_after_a_purge(app, api, clock):
    app.config["LIMIT_DAILY"] = 1500
    alice, bob = api.verified(), api.register()
    api.money("/api/v1/topups", alice, amount=50_000, bank_card_id=alice["card_id"])
    _pay(api, alice, bob, 1000)
    clock.advance(days=2)
    alice, bob = api.relogin(alice), api.relogin(bob)
    _pay(api, alice, bob, 1000)
    assert _purge(app) == 2  # the first day's rows (spending, payments to bob)
    over = api.money("/api/v1/transfers", alice, amount=600, to_phone=bob["phone"])
    assert (over.status_code, over.json["code"]) == (422, "limit_exceeded")
    _pay(api, alice, bob, 500)


def test_a_backlog_goes_in_batches(app, api, clock):
    payers = [api.verified() for _ in range(3)]
    bob = api.register()
    for payer in payers:
        api.money("/api/v1/topups", payer, amount=5_000, bank_card_id=payer["card_id"])
        _pay(api, payer, bob, 10)
    clock.advance(days=2)
    assert _purge(app, batch=2) == 6  # three payers' spending and three payments to bob
    assert _days(app) == []


def test_the_background_worker_purges_every_hour(app):
    from app import _worker_tasks

    tasks = {task.name: task for task in _worker_tasks(app)}
    assert tasks["purge-daily-usage"].run is purge_past_days
    assert tasks["purge-daily-usage"].every_seconds == 3600
