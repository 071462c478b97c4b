"""Errors of real-name identity verification (R7). Each code is stable; clients branch on it."""

from __future__ import annotations

from core.errors import AppError, Conflict, ValidationFailed


class InvalidIdNumber(ValidationFailed):
    """The resident ID number fails GB 11643: length, digits, check digit, birth date or region."""

    code, title = "invalid_id_number", "Invalid resident ID number"

    def __init__(self, reason: str, message: str) -> None:
        # ``reason`` (format, check_digit, birth_date, region) tells the client which part is wrong.
        super().__init__([{"field": "id_number", "code": reason, "message": message}], detail=message)


class InvalidRealName(ValidationFailed):
    """The real name is empty after trimming, too long, or contains characters no name has."""

    code, title = "invalid_real_name", "Invalid real name"

    def __init__(self, message: str) -> None:
        super().__init__([{"field": "real_name", "code": self.code, "message": message}], detail=message)


class IdentityMismatch(AppError):
    """The identity provider says the name does not belong to the ID number."""

    status, code, title = 422, "identity_mismatch", "Name and ID number do not match"


class IdNumberTaken(Conflict):
    """The ID number is already verified on another account (one ID number belongs to one user)."""

    code, title = "id_number_taken", "ID number already verified on another account"


class AlreadyVerified(Conflict):
    """This account is already verified with a different name or ID number; that is changed by support."""

    code, title = "already_verified", "Identity already verified"


class IdentityProviderUnavailable(AppError):
    """The identity provider did not answer in time; nothing was stored, the request may be retried."""

    status, code, title = 503, "identity_provider_unavailable", "Identity verification is unavailable"
