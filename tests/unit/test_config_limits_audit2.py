"""The spending limits take only values the books can hold. Found by the arithmetic audit: ``LIMIT_DAILY`` above the
largest signed 64-bit integer (an operator's "no daily limit", ``LIMIT_DAILY=99999999999999999999``) started the
application, and on SQLite every payment, transfer and withdrawal then answered 500 (``OverflowError: Python int too
large to convert to SQLite INTEGER``, binding the limit to the daily-usage statement); ``LIMIT_PER_TRANSACTION``
above ``core.money.MAX_AMOUNT`` let a trade be opened for more than any single movement may carry, which its payment
then refused (422 ``invalid_amount``), and promised top-ups the API refuses. The README: a value the application
cannot use stops it at start-up with one line naming the setting."""

from __future__ import annotations

import pytest

from core.config import ConfigError, load
from core.money import MAX_AMOUNT


@pytest.mark.parametrize(("name", "value"), [
    ("LIMIT_DAILY", str(2**63)),
    ("LIMIT_DAILY", "99999999999999999999"),
    ("LIMIT_PER_TRANSACTION", str(MAX_AMOUNT + 1)),
])
def test_a_limit_beyond_what_the_books_hold_stops_the_start(tmp_path, name, value):
    with pytest.raises(ConfigError) as refused:
        load({name: value}, str(tmp_path))
    assert name in str(refused.value) and "\n" not in str(refused.value)


def test_the_largest_limits_the_books_hold_are_accepted(tmp_path):
    config = load({"LIMIT_DAILY": str(2**63 - 1), "LIMIT_PER_TRANSACTION": str(MAX_AMOUNT)}, str(tmp_path))
    assert (config["LIMIT_DAILY"], config["LIMIT_PER_TRANSACTION"]) == (2**63 - 1, MAX_AMOUNT)


def test_a_payment_under_the_largest_daily_limit_goes_through(api, app):
    """With the largest daily limit the books hold, a transfer is counted (not a 500, on SQLite too)."""
    app.config["LIMIT_DAILY"] = 2**63 - 1
    payer, payee = api.verified(real_name="李四"), api.verified(real_name="王五")
    assert api.money("/api/v1/topups", payer, amount=1000, bank_card_id=payer["card_id"]).status_code == 201
    paid = api.money("/api/v1/transfers", payer, to_phone=payee["phone"], amount=100)
    assert paid.status_code == 201, paid.json
