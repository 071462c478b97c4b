"""Errors of bank cards and the bank gateway. Each code is stable; clients branch on it."""

from __future__ import annotations

from core.errors import AppError, Conflict, NotFound, ValidationFailed


class _FieldError(ValidationFailed):
    field_name = ""

    def __init__(self, message: str) -> None:
        super().__init__([{"field": self.field_name, "code": self.code, "message": message}], detail=message)


class InvalidCardNumber(_FieldError):
    """The card number is not 16-19 digits or fails the Luhn check."""

    code, title, field_name = "invalid_card_number", "Invalid card number", "card_number"


class UnknownBank(_FieldError):
    """The bank code is not one of the partner banks."""

    code, title, field_name = "unknown_bank", "Unknown bank", "bank_code"


class IdentityNotVerified(AppError):
    """The action needs a verified real-name identity (``POST /api/v1/me/identity``) first."""

    status, code, title = 422, "identity_not_verified", "Identity not verified"


class CardHolderMismatch(AppError):
    """The holder name differs from the verified real name, or the bank says the card is not theirs."""

    status, code, title = 422, "card_holder_mismatch", "Card holder does not match"


class CardAlreadyBound(Conflict):
    """This card is already bound to this account."""

    code, title = "card_already_bound", "Card already bound"


class CardBoundToAnotherAccount(Conflict):
    """This card is bound to another account: a card has one holder, and a holder one account."""

    code, title = "card_bound_to_another_account", "Card bound to another account"


class CardNotFound(NotFound):
    """No such active card on this account (another user's card answers the same)."""

    code, title = "card_not_found", "Card not found"


class BankUnavailable(AppError):
    """The bank did not answer in time (or its adapter failed, or answered something that cannot be trusted). The
    outcome of an operation with a reference is unknown until the same reference is retried (banks are idempotent by
    reference) or polled. The answer carries ``Retry-After: BANK_RETRY_AFTER_SECONDS``."""

    status, code, title = 503, "bank_unavailable", "The bank is not answering"
    retry_after_setting = "BANK_RETRY_AFTER_SECONDS"


class CardInUse(Conflict):
    """The card cannot be removed while a withdrawal to it or a top-up from it is still with the bank."""

    code, title = "card_in_use", "Card in use"
