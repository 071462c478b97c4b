"""Errors of the wallet package. Each code is stable; clients branch on it.

Ledger errors are raised before anything is written, so the caller's transaction is left as it was.
"""

from __future__ import annotations

from core.errors import AppError


class InvalidAmount(AppError):
    """An amount is not a positive integer of minor units within ``core.money.MAX_AMOUNT``."""

    status, code, title = 422, "invalid_amount", "Invalid amount"


class InsufficientFunds(AppError):
    """A wallet or escrow account has less available than the movement needs (holds count as spent)."""

    status, code, title = 422, "insufficient_funds", "Insufficient funds"


class CurrencyMismatch(AppError):
    """The two ledger accounts of a movement, or the movement and its accounts, differ in currency."""

    status, code, title = 422, "currency_mismatch", "Currency mismatch"


class SameLedgerAccount(AppError):
    """A movement names the same ledger account on both sides."""

    status, code, title = 422, "same_ledger_account", "Debit and credit ledger accounts are the same"


class LedgerAccountNotFound(AppError):
    """No ledger account has this id (or no wallet exists for this user and currency)."""

    status, code, title = 404, "ledger_account_not_found", "Ledger account not found"


class HoldNotFound(AppError):
    """No hold has this id."""

    status, code, title = 404, "hold_not_found", "Hold not found"


class HoldAlreadyResolved(AppError):
    """The hold was already posted, voided or expired; ``status`` says which."""

    status, code, title = 409, "hold_already_resolved", "Hold already resolved"

    def __init__(self, hold_status: str) -> None:
        super().__init__(f"The hold is already {hold_status}.", hold_status=hold_status)


class HoldAmountExceeded(AppError):
    """Posting a hold asked for more than the hold reserved."""

    status, code, title = 422, "hold_amount_exceeded", "Amount exceeds the hold"


class HoldExpired(AppError):
    """The hold's deadline has passed: it can no longer be posted or voided, only expired by the sweeper."""

    status, code, title = 409, "hold_expired", "Hold expired"
