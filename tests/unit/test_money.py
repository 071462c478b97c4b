import pytest
from pydantic import ValidationError

from core.money import Money, MoneyIn


@pytest.mark.parametrize("amount", [1.0, 19.99, "100", True, None])
def test_money_refuses_anything_but_integer_minor_units(amount):
    with pytest.raises(TypeError):
        Money(amount)


def test_money_refuses_unknown_currencies_and_mixing():
    with pytest.raises(ValueError):
        Money(1, "USD")
    assert Money(150) + Money(50) == Money(200)


@pytest.mark.parametrize(("fen", "text"), [(0, "0.00"), (5, "0.05"), (19900, "199.00"), (-12345, "-123.45")])
def test_format_yuan(fen, text):
    assert Money(fen).format_yuan() == text


@pytest.mark.parametrize("amount", [0, -1, 1.5, "100", 10**13, True])
def test_request_amounts_are_strict_positive_integers(amount):
    with pytest.raises(ValidationError):
        MoneyIn.model_validate({"amount": amount, "currency": "CNY"})


def test_request_currency_must_be_supported():
    with pytest.raises(ValidationError):
        MoneyIn.model_validate({"amount": 100, "currency": "USD"})
    assert MoneyIn.model_validate({"amount": 100}).to_money() == Money(100, "CNY")
