"""A user may pay one phone number's owner at most ``LIMIT_PAYMENTS_PER_PAYEE_DAILY`` times a China Standard Time day.
Found by an audit (left open since the twenty-eighth session): every payment to a phone number texts the payee
(``transfer_received``), and one of 1 fen costs the payer next to nothing, so a payer could text anyone with an account
without end at the platform's cost, capped only by ``LIMIT_DAILY`` (200,000 yuan of 1-fen texts). The payment past the
limit is 422 ``payee_limit_exceeded``: no money moves, nobody is texted. Other payees, and the next day, are counted
apart; a retry of a payment that went through replays its answer and counts nothing."""

from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from core.db import db
from tests.api.escrow_helpers import books_clean
from wallet.funds_models import DailyPayeeUsage
from wallet.limits import purge_past_days

LIMIT = 3


@pytest.fixture
def payer(api, app):
    app.config["LIMIT_PAYMENTS_PER_PAYEE_DAILY"] = LIMIT
    alice = api.verified(locale="en")
    assert api.money("/api/v1/topups", alice, amount=10000, bank_card_id=alice["card_id"]).status_code == 201
    return alice


def pay(api, payer, payee, key=None):
    return api.money("/api/v1/transfers", payer, key=key, amount=1, to_phone=payee["phone"])


def texts(inbox, phone):
    return [m["event"] for m in inbox.messages(to=phone)]


def test_the_payment_past_the_limit_moves_nothing_and_texts_nobody(api, app, inbox, payer):
    bob = api.register(locale="en")
    for n in range(LIMIT):
        assert pay(api, payer, bob, key=f"k{n}").status_code == 201
    to_bob, to_payer, balance = texts(inbox, bob["phone"]), texts(inbox, payer["phone"]), api.balance(payer)
    assert to_bob.count("transfer_received") == LIMIT

    refused = pay(api, payer, bob)
    assert (refused.status_code, refused.json["code"], refused.json["limit"]) == (422, "payee_limit_exceeded", LIMIT)
    assert texts(inbox, bob["phone"]) == to_bob and texts(inbox, payer["phone"]) == to_payer
    assert api.balance(payer) == balance and api.balance(bob) == LIMIT
    # A retry of one that went through is answered as before, and is no new payment.
    replay = pay(api, payer, bob, key="k0")
    assert replay.status_code == 201 and replay.headers["Idempotent-Replayed"] == "true"
    assert api.balance(bob) == LIMIT
    books_clean(app)


def test_another_payee_and_another_payer_are_counted_apart(api, app, payer):
    bob, carol = api.register(), api.register()
    for _ in range(LIMIT):
        assert pay(api, payer, bob).status_code == 201
    assert pay(api, payer, carol).status_code == 201
    dave = api.verified()
    assert api.money("/api/v1/topups", dave, amount=100, bank_card_id=dave["card_id"]).status_code == 201
    assert pay(api, dave, bob).status_code == 201
    assert pay(api, payer, bob).json["code"] == "payee_limit_exceeded"


def test_the_count_starts_again_at_midnight_in_china_and_old_days_are_purged(api, app, clock, payer):
    clock.set(datetime(2026, 3, 1, 15, 59, 0, tzinfo=UTC))  # 23:59 on 1 March in China
    api.relogin(payer)
    bob = api.register()
    for _ in range(LIMIT):
        assert pay(api, payer, bob).status_code == 201
    assert pay(api, payer, bob).json["code"] == "payee_limit_exceeded"
    clock.advance(seconds=60)  # 2 March
    assert pay(api, payer, bob).status_code == 201
    with app.app_context():
        days = sorted((row.day.isoformat(), row.payments) for row in db.session.scalars(select(DailyPayeeUsage)))
        assert days == [("2026-03-01", LIMIT), ("2026-03-02", 1)]
        clock.advance(days=2)  # 4 March: the rows of the days before yesterday go
        purge_past_days()
        assert db.session.scalars(select(DailyPayeeUsage)).all() == []


def test_a_payment_the_money_refuses_is_not_counted(api, app, payer):
    bob = api.register()
    too_much = api.money("/api/v1/transfers", payer, amount=10001, to_phone=bob["phone"])
    assert too_much.json["code"] == "insufficient_funds"
    for _ in range(LIMIT):
        assert pay(api, payer, bob).status_code == 201


def test_a_limit_its_counter_cannot_hold_is_refused_at_start_up(tmp_path):
    from core.config import ConfigError, load

    assert load({"LIMIT_PAYMENTS_PER_PAYEE_DAILY": str(2**31 - 1)}, str(tmp_path))["LIMIT_PAYMENTS_PER_PAYEE_DAILY"] \
        == 2**31 - 1
    with pytest.raises(ConfigError, match="LIMIT_PAYMENTS_PER_PAYEE_DAILY=2147483648 is more than its counter holds"):
        load({"LIMIT_PAYMENTS_PER_PAYEE_DAILY": str(2**31)}, str(tmp_path))
    with pytest.raises(ConfigError, match="more than zero"):
        load({"LIMIT_PAYMENTS_PER_PAYEE_DAILY": "0"}, str(tmp_path))


def test_the_database_refuses_a_count_of_no_payments(api, app):
    from datetime import date

    from sqlalchemy.exc import IntegrityError

    from core.db import run_in_transaction
    from security.models import User

    bob, carol = api.register(), api.register()
    with app.app_context():
        ids = {u.phone: u.id for u in db.session.scalars(select(User))}
        db.session.rollback()
        with pytest.raises(IntegrityError, match="payments_positive"):
            run_in_transaction(lambda: db.session.add(DailyPayeeUsage(
                payer_id=ids[bob["phone"]], payee_id=ids[carol["phone"]], day=date(2026, 3, 1), payments=0)))
