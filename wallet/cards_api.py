"""HTTP endpoints of bank cards: bind (payment password), list (masked), remove."""

from __future__ import annotations

from datetime import datetime

from flask import Blueprint
from pydantic import BaseModel, Field

from core.api import RequestModel, endpoint, parse_body, parse_query, respond
from core.pagination import CardPageQuery, Page
from security.auth import current_caller, current_user
from security.identity import mask_name
from wallet import cards
from wallet.banks import BANK_CODES
from wallet.card_errors import (
    BankUnavailable,
    CardAlreadyBound,
    CardBoundToAnotherAccount,
    CardHolderMismatch,
    CardInUse,
    CardNotFound,
    IdentityNotVerified,
    InvalidCardNumber,
    UnknownBank,
)
from wallet.card_models import BankCard
from wallet.guarded import FROM_CALLER_REFUSALS

bp = Blueprint("bank_cards", __name__, url_prefix="/api/v1")


class BindCardRequest(RequestModel):
    card_number: str = Field(min_length=1, max_length=32, description="16-19 digits; spaces and hyphens are ignored")
    holder_name: str = Field(min_length=1, max_length=64, description="Must equal the verified real name")
    bank_code: str = Field(min_length=1, max_length=16, json_schema_extra={"enum": list(BANK_CODES)})
    payment_password: str = Field(min_length=1, max_length=16)


class CardOut(BaseModel):
    id: str
    bank_code: str
    masked: str = Field(description="Only the last four digits: **** 1234")
    holder_name: str = Field(description="Masked: 张三 → *三")
    created_at: datetime


class CardList(Page[CardOut]):
    """Oldest first; ``next_starting_after`` is the cursor of the next page while ``has_more``."""


def _out(card: BankCard) -> CardOut:
    return CardOut(id=card.id, bank_code=card.bank_code, masked=cards.masked(card),
                   holder_name=mask_name(card.holder_name), created_at=card.created_at)


@endpoint(bp, "/me/bank-cards", "POST", summary="Bind a bank card (needs the payment password)",
          body=BindCardRequest, response=CardOut, status=201,
          errors=(*FROM_CALLER_REFUSALS, InvalidCardNumber, UnknownBank, IdentityNotVerified, CardHolderMismatch,
                  CardAlreadyBound, CardBoundToAnotherAccount, BankUnavailable))
def bind_card():
    user = current_user()
    req = parse_body(BindCardRequest)
    card = cards.bind_card(user, req.card_number, req.holder_name, req.bank_code, req.payment_password)
    return respond(_out(card), 201)


@endpoint(bp, "/me/bank-cards", "GET", summary="My bank cards (masked)", query=CardPageQuery, response=CardList)
def list_cards():
    user_id = current_caller().id
    query = parse_query(CardPageQuery)
    page, more = cards.list_cards(user_id, query.limit, query.starting_after)
    return respond(CardList(data=[_out(card) for card in page], has_more=more,
                            next_starting_after=page[-1].id if more else None))


@endpoint(bp, "/me/bank-cards/<card_id>", "DELETE", summary="Remove a bank card", status=204,
          errors=(CardNotFound, CardInUse))
def remove_card(card_id: str):
    cards.remove_card(current_user(), card_id)
    return respond(None, 204)
