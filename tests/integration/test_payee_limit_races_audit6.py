"""Concurrent payments from one payer to one payee never get past ``LIMIT_PAYMENTS_PER_PAYEE_DAILY`` together: the
count is one conditional upsert of the (payer, payee, day) row, taken after the payer's day row. PostgreSQL only."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from core.db import db
from tests.api.escrow_helpers import books_clean
from tests.integration.test_escrow_races import together
from tests.integration.test_money_races_audit import first_pauses_inside, money, retries_recorded
from tests.pg_races import postgres_only  # noqa: F401 - the autouse skip on SQLite
from wallet import limits
from wallet.funds_models import DailyPayeeUsage

pytestmark = pytest.mark.postgres


@pytest.fixture
def payer(api, app):
    alice = api.verified()
    assert api.money("/api/v1/topups", alice, amount=10000, bank_card_id=alice["card_id"]).status_code == 201
    return alice


def _counted(app) -> list[int]:
    with app.app_context():
        return list(db.session.scalars(select(DailyPayeeUsage.payments)))


def test_twelve_first_payments_of_the_day_to_one_payee_stop_at_the_limit(api, app, payer, monkeypatch):
    app.config["LIMIT_PAYMENTS_PER_PAYEE_DAILY"] = 3
    bob = api.register()
    retried = retries_recorded(monkeypatch)
    answers = together(*[lambda n=n: money(app, payer, "/api/v1/transfers", f"t{n}", amount=100,
                                           to_phone=bob["phone"]) for n in range(12)])
    assert sorted(status for status, _ in answers) == [201] * 3 + [422] * 9, answers
    assert {body["code"] for status, body in answers if status == 422} == {"payee_limit_exceeded"}
    assert _counted(app) == [3]
    assert api.balance(payer) == 10000 - 300 and api.balance(bob) == 300
    assert "40P01" not in retried  # one lock order: no deadlock between the payer's day row and the pair's
    books_clean(app)


def test_the_last_payment_allowed_has_one_winner(api, app, payer, monkeypatch):
    """The first is stopped once it has counted itself (the pair's row locked, nothing committed) while the second
    comes for the same last place; the second waits for it and is refused."""
    app.config["LIMIT_PAYMENTS_PER_PAYEE_DAILY"] = 2
    bob = api.register()
    assert api.money("/api/v1/transfers", payer, amount=100, to_phone=bob["phone"]).status_code == 201
    pay = lambda key: lambda: money(app, payer, "/api/v1/transfers", key, amount=100,  # noqa: E731
                                    to_phone=bob["phone"])
    first, second, waited = first_pauses_inside(monkeypatch, limits, "count_payment_to", pay("last-1"),
                                                 pay("last-2"), after=True)
    assert waited
    assert first[0] == 201, first
    assert (second[0], second[1]["code"]) == (422, "payee_limit_exceeded"), second
    assert _counted(app) == [2]
    assert api.balance(bob) == 200
    books_clean(app)
