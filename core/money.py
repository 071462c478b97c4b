"""Money: integer minor units (fen) and an ISO 4217 currency. Floats are refused everywhere."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictInt

SUPPORTED_CURRENCIES = frozenset({"CNY"})
DEFAULT_CURRENCY = "CNY"
# Larger than any real payment and well inside a signed 64-bit column after summing many of them.
MAX_AMOUNT = 10**12


@dataclass(frozen=True, slots=True)
class Money:
    amount: int
    currency: str = DEFAULT_CURRENCY

    def __post_init__(self) -> None:
        # bool is an int subclass; True is not one fen.
        if not isinstance(self.amount, int) or isinstance(self.amount, bool):
            raise TypeError(f"Money amount must be an int of minor units, got {type(self.amount).__name__}")
        if self.currency not in SUPPORTED_CURRENCIES:
            raise ValueError(f"unsupported currency {self.currency!r}")

    def __add__(self, other: Money) -> Money:
        self._same_currency(other)
        return Money(self.amount + other.amount, self.currency)

    def __sub__(self, other: Money) -> Money:
        self._same_currency(other)
        return Money(self.amount - other.amount, self.currency)

    def _same_currency(self, other: Money) -> None:
        if other.currency != self.currency:
            raise ValueError(f"cannot combine {self.currency} with {other.currency}")

    def format_yuan(self) -> str:
        """``12345`` fen → ``"123.45"`` (sign kept)."""
        sign = "-" if self.amount < 0 else ""
        whole, cents = divmod(abs(self.amount), 100)
        return f"{sign}{whole}.{cents:02d}"


PositiveAmount = Annotated[StrictInt, Field(gt=0, le=MAX_AMOUNT, description="Minor units (fen), > 0")]


class MoneyIn(BaseModel):
    """``{"amount": 1999, "currency": "CNY"}`` as a request field; amounts are strict integers."""

    model_config = ConfigDict(extra="forbid")
    amount: PositiveAmount
    currency: str = Field(default=DEFAULT_CURRENCY, pattern="^CNY$")

    def to_money(self) -> Money:
        return Money(self.amount, self.currency)


class MoneyOut(BaseModel):
    amount: int
    currency: str

    @classmethod
    def of(cls, money: Money) -> MoneyOut:
        return cls(amount=money.amount, currency=money.currency)
