"""Request and response models of the wallet endpoints."""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from core.api import RequestModel
from core.money import MAX_AMOUNT

PaymentPassword = Field(min_length=1, max_length=16, description="The six-digit payment password")
CardId = Field(min_length=1, max_length=40)


class Amount(RequestModel):
    amount: int = Field(gt=0, le=MAX_AMOUNT, description="Minor units (fen)")
    currency: Literal["CNY"] = "CNY"


class TopUpRequest(Amount):
    bank_card_id: str = CardId
    payment_password: str = PaymentPassword


class WithdrawalRequest(Amount):
    bank_card_id: str = CardId
    payment_password: str = PaymentPassword


# What text shown to another person may not hold (a payment's note, a trade's words): control characters (C0, DEL,
# C1) but the tab and the line breaks a text of several lines has (a note's CSV cell is quoted), and the Unicode
# bidirectional controls (U+202A-U+202E, U+2066-U+2069, the marks U+200E, U+200F, U+061C), with which the writer
# makes the reader's statement, SMS or dispute page show the text in another order than it was written. The body of a
# regular-expression character class, in escapes that Python's ``re``, pydantic's Rust regex and JSON Schema all read.
HIDDEN_CHARACTERS = r"\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
_NOT_IN_A_NOTE = re.compile(f"[{HIDDEN_CHARACTERS}]")


class TransferRequest(Amount):
    to_phone: str = Field(min_length=3, max_length=32)
    note: str | None = Field(
        default=None, max_length=140,
        description="What the payment is for, shown to both sides on their statements. A blank note (empty, or spaces"
                    " only) is kept as no note; one with a control character (a tab and line breaks aside) or a Unicode"
                    " bidirectional control (U+202A-U+202E, U+2066-U+2069, U+200E, U+200F, U+061C) is refused (422"
                    " note_character_not_allowed)")
    payment_password: str = PaymentPassword

    @field_validator("note")
    @classmethod
    def shown_as_written(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if _NOT_IN_A_NOTE.search(value):
            raise PydanticCustomError("note_character_not_allowed", "A note may not hold control characters or"
                                      " bidirectional controls.")
        return value if value.strip() else None


class WalletOut(BaseModel):
    available: int
    pending: int
    currency: str


class TopUpOut(BaseModel):
    id: str
    status: Literal["pending", "succeeded", "failed"]
    amount: int
    currency: str
    bank_card_id: str
    created_at: datetime
    completed_at: datetime | None


class WithdrawalOut(BaseModel):
    id: str
    status: Literal["pending", "submitted", "succeeded", "failed"]
    amount: int
    currency: str
    bank_card_id: str
    failure_reason: str | None = Field(description="Why a failed withdrawal failed (the money is back in the wallet):"
                                       " payout_failed (the bank could not pay the card), account_frozen (the"
                                       " account was frozen before the bank received it), bank_never_answered (the"
                                       " bank never received it within WITHDRAWAL_MAX_AGE_SECONDS), or the bank's"
                                       " own refusal (card_not_found, ...); null unless failed")
    created_at: datetime
    completed_at: datetime | None


class TransferOut(BaseModel):
    id: str
    amount: int
    currency: str
    to_phone: str
    balance_after: int = Field(description="The payer's posted balance after this payment, as its statement line"
                               " shows it; money held for a withdrawal still being paid out is not subtracted"
                               " (GET /wallet gives what is available)")
    created_at: datetime


FIRST_STATEMENT_DAY, LAST_STATEMENT_DAY = date(1900, 1, 1), date(9999, 12, 30)


class StatementQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    limit: int = Field(default=20, ge=1, le=100)
    starting_after: str | None = Field(default=None, pattern=r"^[0-9]{1,18}$")
    kind: Literal["topup", "withdrawal", "payment", "escrow_pay", "escrow_release", "refund", "fee"] | None = None
    from_date: date | None = Field(default=None, alias="from", description="First day (YYYY-MM-DD), a day in China"
                                   " Standard Time (UTC+8): from its midnight there")
    to_date: date | None = Field(default=None, alias="to", description="Last day (YYYY-MM-DD), included, a day in"
                                 " China Standard Time (UTC+8): up to its end there; not before `from`")
    format: Literal["json", "csv"] = Field(
        default="json", description="json: one page of lines (Statement). csv: a text/csv download of every line the"
        " filters (kind, from, to) select, newest first (limit and starting_after page only the JSON), with the"
        " columns id, created_at, kind, amount, balance_after, currency, counterparty, transfer_id, note: created_at in"
        " UTC (ISO 8601), amount (signed) and balance_after in fen, as in the JSON")

    @field_validator("from_date", "to_date", mode="before")
    @classmethod
    def calendar_date(cls, value: object) -> object:
        # Lax parsing would read "0" as a Unix timestamp; the document promises YYYY-MM-DD.
        if value is not None and not (isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value)):
            raise ValueError("use a calendar date, YYYY-MM-DD")
        return value

    @field_validator("from_date", "to_date")
    @classmethod
    def within_the_calendar(cls, value: date | None) -> date | None:
        # A day is searched from its midnight in China to the next one, in UTC: both must exist.
        if value is not None and not FIRST_STATEMENT_DAY <= value <= LAST_STATEMENT_DAY:
            raise ValueError(f"use a date from {FIRST_STATEMENT_DAY} to {LAST_STATEMENT_DAY}")
        return value

    @field_validator("to_date")
    @classmethod
    def not_before_from(cls, value: date | None, info: ValidationInfo) -> date | None:
        # Swapped dates would answer an empty statement, which reads as "no money moved".
        first = info.data.get("from_date")
        if value is not None and first is not None and value < first:
            raise ValueError("the last day (to) cannot be before the first day (from)")
        return value


class StatementLine(BaseModel):
    id: str
    kind: str
    amount: int = Field(description="In fen, signed: money in is positive, money out negative")
    balance_after: int = Field(description="The wallet's posted balance after this line, in fen")
    currency: str
    counterparty: str
    transfer_id: str
    created_at: datetime
    note: str | None = Field(description="The note the payer wrote on a payment to a phone number (both sides see"
                             " it); null on every other line")


class Statement(BaseModel):
    data: list[StatementLine]
    has_more: bool
    next_starting_after: str | None = None
