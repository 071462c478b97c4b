"""The error hierarchy every package builds on.

``AppError`` carries an HTTP status, a stable machine ``code`` and a human ``detail``. ``app.py`` turns
every ``AppError`` into an RFC 9457 ``application/problem+json`` response; anything else is a bug and
answers a bare 500 with a request id. Each package keeps its own ``errors.py`` with subclasses.
"""

from __future__ import annotations

from typing import Any


class AppError(Exception):
    """Base class of every error a client may see. Subclasses set ``status``, ``code`` and ``title``."""

    status: int = 400
    code: str = "bad_request"
    title: str = "Bad request"
    # The setting holding the seconds a client should wait before trying again, sent as ``Retry-After`` (None: none).
    retry_after_setting: str | None = None
    # Or the seconds themselves, worked out when the error was raised (a lock that lifts at a known time).
    retry_after: int | None = None

    def __init__(self, detail: str | None = None, **extra: Any) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        # Extension members of the problem document (``attempts_left``, ``locked_until``, ``errors`` ...).
        self.extra = extra

    def to_problem(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": f"https://errors.wallet.invalid/{self.code}",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "code": self.code,
        }
        body.update(self.extra)
        return body


class BadRequest(AppError):
    """The request could not be read at all (malformed JSON, not an object)."""

    status, code, title = 400, "malformed_request", "Malformed request"


class ValidationFailed(AppError):
    """The request was well-formed but one or more fields are invalid; ``errors`` lists them."""

    status, code, title = 422, "validation_failed", "Validation failed"

    def __init__(self, errors: list[dict[str, str]], detail: str | None = None) -> None:
        super().__init__(detail or "One or more fields are invalid.", errors=errors)

    @classmethod
    def field(cls, field: str, code: str, message: str) -> ValidationFailed:
        return cls([{"field": field, "code": code, "message": message}], detail=message)


class Unauthenticated(AppError):
    """No valid bearer token accompanied a request that needs one."""

    status, code, title = 401, "unauthenticated", "Authentication required"
    # Whether the bearer token the request sent is what was refused: its 401 then says ``error="invalid_token"``.
    bearer_refused: bool = True


class Forbidden(AppError):
    """The caller is authenticated but the action is not theirs to take."""

    status, code, title = 403, "forbidden", "Forbidden"


class NotFound(AppError):
    """The resource does not exist or belongs to someone else (never say which)."""

    status, code, title = 404, "not_found", "Not found"


class Conflict(AppError):
    """The request conflicts with the current state of a resource."""

    status, code, title = 409, "conflict", "Conflict"


class PayloadTooLarge(AppError):
    """The body exceeds ``MAX_CONTENT_LENGTH``."""

    status, code, title = 413, "payload_too_large", "Payload too large"


class UnsupportedMediaType(AppError):
    """A body was sent with a content type other than ``application/json``."""

    status, code, title = 415, "unsupported_media_type", "Unsupported media type"


class DatabaseNotMigrated(AppError):
    """The database lacks migrations this code needs: ``flask --app app db upgrade`` has not been run (/readyz)."""

    status = 503
    code = "database_not_migrated"
    title = "Service unavailable"


class RateLimited(AppError):
    """Too many requests from this client or for this phone number."""

    status, code, title = 429, "rate_limited", "Too many requests"


class IdempotencyKeyMissing(AppError):
    """A money-moving POST arrived without an ``Idempotency-Key`` header."""

    status, code, title = 400, "idempotency_key_missing", "Idempotency-Key header required"


class IdempotencyKeyReused(AppError):
    """The same ``Idempotency-Key`` was sent again with a different request body."""

    status, code, title = 422, "idempotency_key_reused", "Idempotency-Key reused with another request"
