"""A user's ratings per role are summed as they are given (``rating_totals``): migration 0015 sums the ratings
already given, the database refuses sums that no set of ratings could make, concurrent ratings of one user all
count, and ``flask wallet check`` reports totals that disagree with the ratings."""

from __future__ import annotations

import pytest
from flask_migrate import downgrade, upgrade
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError

from app import create_app
from core.db import db
from tests.api.test_escrow_stories import PP, act, paid_and_shipped
from tests.integration.test_escrow_races import in_app, together
from tests.integration.test_trade_refund_flag import _TRADE, _USER, NOW
from wallet import trades
from wallet.check import check_invariants

# Finished: everything paid was released (the database refuses a finished trade still holding money).
_FINISHED_TRADE = _TRADE.replace("'WAIT_BUYER_CONFIRM_GOODS', 0, 100, 0, 0, 0,", "'TRADE_FINISHED', 0, 100, 0, 100, 0,")
_RATING = ("INSERT INTO ratings (id, trade_id, rater_id, ratee_id, role, score, created_at)"
           " VALUES (:id, :trade_id, :rater, :ratee, :role, :score, :now)")
_TOTALS = ("INSERT INTO rating_totals (user_id, role, score, ratings, positive)"
           " VALUES (:user_id, :role, :score, :ratings, :positive)")


def _ratings() -> None:
    """usr_s rated +1, +1, 0, -1 as seller; usr_b rated +1 as buyer (written straight into the tables)."""
    for user_id, phone in (("usr_b", "+12025550101"), ("usr_s", "+12025550102")):
        db.session.execute(text(_USER), {"id": user_id, "phone": phone, "now": NOW})
    for n, score in enumerate((1, 1, 0, -1)):
        db.session.execute(text(_FINISHED_TRADE), {"id": f"trd_{n}", "now": NOW, "genesis": "0" * 64})
        db.session.execute(text(_RATING), {"id": f"rat_s{n}", "trade_id": f"trd_{n}", "rater": "usr_b",
                                           "ratee": "usr_s", "role": "seller", "score": score, "now": NOW})
    db.session.execute(text(_RATING), {"id": "rat_b0", "trade_id": "trd_0", "rater": "usr_s", "ratee": "usr_b",
                                       "role": "buyer", "score": 1, "now": NOW})
    db.session.commit()


def _totals() -> dict[tuple[str, str], tuple[int, int, int]]:
    rows = db.session.execute(text("SELECT user_id, role, score, ratings, positive FROM rating_totals")).all()
    db.session.rollback()  # on SQLite the read's transaction holds the write lock the checker needs
    return {(row.user_id, row.role): (row.score, row.ratings, row.positive) for row in rows}


def _totals_problems() -> list[str]:
    return [problem for problem in check_invariants() if problem.startswith("rating totals")]


def test_migration_0015_sums_the_ratings_already_given_and_back(scratch_url):
    app = create_app({"DATABASE_URL": scratch_url, "WALLET_ENV": "test"})
    with app.app_context():
        upgrade(revision="0014")
        _ratings()
        upgrade(revision="0015")
        assert _totals() == {("usr_s", "seller"): (1, 4, 2), ("usr_b", "buyer"): (1, 1, 1)}
        db.session.commit()
        downgrade(revision="0014")
        assert "rating_totals" not in inspect(db.engine).get_table_names()
        db.engine.dispose()


@pytest.mark.parametrize(("score", "ratings", "positive"), [
    (0, 0, 0),    # no ratings: no row
    (2, 2, 3),    # more positive ratings than ratings
    (2, 3, 1),    # a score above the positive ratings
    (-3, 3, 1),   # a score below what the other two ratings could take away
])
def test_the_database_refuses_totals_no_ratings_could_make(app, score, ratings, positive):
    with app.app_context():
        db.session.execute(text(_USER), {"id": "usr_s", "phone": "+12025550102", "now": NOW})
        db.session.commit()
        with pytest.raises(IntegrityError):
            db.session.execute(text(_TOTALS), {"user_id": "usr_s", "role": "seller", "score": score,
                                               "ratings": ratings, "positive": positive})
            db.session.commit()
        db.session.rollback()


def test_totals_that_disagree_with_the_ratings_are_reported(app):
    with app.app_context():
        _ratings()
        db.session.execute(text(_TOTALS), {"user_id": "usr_s", "role": "seller", "score": 1, "ratings": 4,
                                           "positive": 2})
        db.session.execute(text(_TOTALS), {"user_id": "usr_b", "role": "buyer", "score": 1, "ratings": 1,
                                           "positive": 1})
        db.session.commit()
        assert _totals_problems() == []
        db.session.execute(text("UPDATE rating_totals SET ratings = ratings + 1 WHERE user_id = 'usr_s'"))
        db.session.execute(text("DELETE FROM rating_totals WHERE user_id = 'usr_b'"))
        db.session.commit()
        assert _totals_problems() == [
            "rating totals of usr_b as buyer: score None, None ratings, None positive, but the ratings give 1, 1, 1",
            "rating totals of usr_s as seller: score 1, 5 ratings, 2 positive, but the ratings give 1, 4, 2",
        ]


def test_concurrent_ratings_of_one_user_all_count(api, app):
    buyer, seller = api.verified(real_name="李四"), api.verified(real_name="王五")
    api.money("/api/v1/topups", buyer, amount=500000, bank_card_id=buyer["card_id"])
    finished = []
    for n in range(6):
        trade_id = paid_and_shipped(api, buyer, seller, amount=100 + n, shipping_fee=0)
        assert act(api, buyer, trade_id, "confirm", key=f"c{n}", **PP).status_code == 200
        finished.append(trade_id)
    buyer_id, seller_id = buyer["user"]["id"], seller["user"]["id"]
    scores = [1, 1, 1, 0, -1, 1]
    results = together(*[in_app(app, lambda t=t, s=s: trades.rate(buyer_id, t, s, None))
                         for t, s in zip(finished, scores, strict=True)],
                       *[in_app(app, lambda t=t: trades.rate(seller_id, t, 1, None)) for t in finished])
    assert all(result is not None for result in results)
    with app.app_context():
        assert _totals() == {(seller_id, "seller"): (3, 6, 4), (buyer_id, "buyer"): (6, 6, 6)}
        assert check_invariants() == []
        assert trades.reputation(seller_id, "seller") == trades.Reputation(3, round(4 / 6, 4), 6)


def test_totals_whose_positive_count_alone_disagrees_are_reported(app):
    """The positive ratings are checked on their own: 1, 4, 1 is a sum some ratings could make, but not these."""
    with app.app_context():
        _ratings()
        db.session.execute(text(_TOTALS), {"user_id": "usr_s", "role": "seller", "score": 1, "ratings": 4,
                                           "positive": 1})
        db.session.execute(text(_TOTALS), {"user_id": "usr_b", "role": "buyer", "score": 1, "ratings": 1,
                                           "positive": 1})
        db.session.commit()
        assert _totals_problems() == [
            "rating totals of usr_s as seller: score 1, 4 ratings, 1 positive, but the ratings give 1, 4, 2"]
