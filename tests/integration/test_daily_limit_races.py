"""The daily limit is one upsert (insert the day's row, or add to it while the total stays within the limit):
concurrent payments of one user, including the day's very first ones, never get past it together."""

import threading

import pytest
from sqlalchemy import select

from core.db import db, run_in_transaction
from security.models import User
from wallet import limits
from wallet.funds_models import DailyUsage


def user_id_of(app, phone):
    with app.app_context():
        return db.session.scalar(select(User.id).where(User.phone == phone))


def used_today(app, user_id):
    with app.app_context():
        return db.session.scalar(select(DailyUsage.amount).where(DailyUsage.user_id == user_id))


def consume(app, user_id, amount):
    with app.app_context():
        try:
            run_in_transaction(lambda: limits.consume_daily(user_id, amount))
            return True
        except limits.LimitExceeded:
            return False


def test_twelve_concurrent_first_payments_of_the_day_stop_at_the_limit(api, app):
    app.config["LIMIT_DAILY"] = 1000
    user_id = user_id_of(app, api.register()["phone"])
    results, start = [], threading.Barrier(12)

    def one():
        start.wait()
        results.append(consume(app, user_id, 300))

    threads = [threading.Thread(target=one) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False] * 9 + [True] * 3
    assert used_today(app, user_id) == 900


@pytest.mark.parametrize("first", [1001, 1000])
def test_the_days_first_payment_is_held_to_the_limit_too(api, app, first):
    app.config["LIMIT_DAILY"], app.config["LIMIT_PER_TRANSACTION"] = 1000, 10_000
    user_id = user_id_of(app, api.register()["phone"])
    assert consume(app, user_id, first) is (first <= 1000)
    assert used_today(app, user_id) == (first if first <= 1000 else None)
