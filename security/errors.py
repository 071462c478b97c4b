"""Errors of the security package. Each code is stable; clients branch on it."""

from __future__ import annotations

import math
from datetime import datetime
from typing import ClassVar

from core import clock
from core.errors import AppError, Conflict, Unauthenticated


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")


class InvalidCredentials(AppError):
    """Wrong phone/password pair (also for unknown phone numbers); says how many tries remain."""

    status, code, title = 401, "invalid_credentials", "Invalid credentials"

    def __init__(self, attempts_left: int) -> None:
        super().__init__("The phone number or password is not correct.", attempts_left=attempts_left)


class WrongPaymentPassword(AppError):
    """The payment password did not match; says how many tries remain before payments lock."""

    status, code, title = 401, "invalid_credentials", "Wrong payment password"

    def __init__(self, attempts_left: int) -> None:
        super().__init__("The payment password is not correct.", attempts_left=attempts_left)


class _Locked(AppError):
    """A lock in force. One that lifts by itself (not hard) also answers ``Retry-After``: the seconds until
    ``locked_until``, rounded up."""

    status = 423
    #: True when the wrong entry this answers is the one that locked it (not a lock already in force).
    by_this_entry = False

    def __init__(self, locked_until: datetime | None, hard: bool) -> None:
        detail = (
            "Locked after too many wrong entries; reset it with an SMS code to unlock."
            if hard
            else "Locked after three wrong entries; it unlocks by itself at locked_until."
        )
        super().__init__(detail, locked_until=_iso(locked_until), hard_locked=hard)
        self._lifts_at(None if hard else locked_until)

    def _lifts_at(self, locked_until: datetime | None) -> None:
        if locked_until is not None:
            self.retry_after = max(1, math.ceil((locked_until - clock.now()).total_seconds()))


class LoginLocked(_Locked):
    """The login password is locked (3 wrong in 24 h, or the hard lock after 10 in a row)."""

    code, title = "login_locked", "Login locked"


class PaymentPasswordLocked(_Locked):
    """The payment password is locked; money cannot move until it unlocks or is reset by SMS."""

    code, title = "payment_password_locked", "Payment password locked"


class RecoveryLocked(_Locked):
    """Recovering the login password is locked: three wrong authenticator codes at recoveries within 24 hours. It
    lifts by itself at ``locked_until`` (there is no hard lock); the login password's own lock is another."""

    code, title = "recovery_locked", "Password recovery locked"

    def __init__(self, locked_until: datetime | None) -> None:
        AppError.__init__(self, "Locked after three wrong authenticator codes; recovery unlocks by itself at "
                          "locked_until.", locked_until=_iso(locked_until), hard_locked=False)
        self._lifts_at(locked_until)


class InvalidSmsCode(AppError):
    """The SMS code is wrong, expired, already used, meant for another purpose, or out of tries."""

    status, code, title = 401, "invalid_sms_code", "Invalid SMS code"


class InvalidTotpCode(AppError):
    """The authenticator code is wrong, outside ±1 step, or was already used; at login it counts toward the login
    lock and says how many tries remain."""

    status, code, title = 401, "invalid_totp_code", "Invalid authenticator code"

    def __init__(self, detail: str, attempts_left: int | None = None) -> None:
        if attempts_left is None:
            super().__init__(detail)
        else:
            super().__init__(detail, attempts_left=attempts_left)


class DeviceVerificationRequired(AppError):
    """Correct password from a device this account has not trusted yet: send ``sms_code`` or ``totp_code``."""

    status, code, title = 401, "device_verification_required", "New device: verification code required"


class RefreshTokenRefused(Unauthenticated):
    """The refresh token sent to be rotated is unknown, expired or revoked. An access token the request carries too is
    not what was refused (found by the review: its 401 said ``invalid_token`` of one that still worked)."""

    bearer_refused = False


class RefreshTokenReused(RefreshTokenRefused):
    """An already-rotated refresh token was presented: the whole session family is revoked."""

    code, title = "refresh_token_reused", "Refresh token reused"


class PaymentPasswordResetTooSoon(AppError):
    """An SMS reset of the payment password asked for too soon: within ``PAYMENT_RESET_AFTER_PHONE_CHANGE_HOURS`` of a
    phone change (``reason`` ``phone_changed``: the code would come to the number just bound, which only the login
    password proved) or within ``SMS_RECOVERY_HOLD_HOURS`` of a login-password recovery by SMS alone (``reason``
    ``password_recovered``: the SIM would be all that proved either password). Says when it may (``available_at``)."""

    status, code, title = 403, "payment_password_reset_too_soon", "Payment password reset by SMS not yet possible"
    _DETAILS: ClassVar[dict[str, str]] = {
        "phone_changed": "The phone number changed recently; until available_at the payment password can only be "
                         "changed with the current one.",
        "password_recovered": "The login password was recovered by SMS recently; until available_at the payment "
                              "password can only be changed with the current one.",
    }

    def __init__(self, available_at: datetime, reason: str = "phone_changed") -> None:
        super().__init__(self._DETAILS[reason], available_at=_iso(available_at), reason=reason)


class AccountRecentlyRecovered(AppError):
    """A phone change, an authenticator enrolment or a real-name verification asked for within
    ``SMS_RECOVERY_HOLD_HOURS`` of a login-password recovery by SMS alone: each would keep the owner, who may get the
    SIM back, out of the account (or out of its identity and cards) for good. Says when it may (``available_at``)."""

    status, code, title = 403, "account_recently_recovered", "Not possible so soon after a password recovery"

    def __init__(self, available_at: datetime) -> None:
        super().__init__("The login password was recovered by SMS recently; until available_at the phone number "
                         "cannot be changed, an authenticator enrolled or a real name verified.",
                         available_at=_iso(available_at))


class TotpRequired(AppError):
    """A recovery of an account with an authenticator sent no ``totp_code``: the SMS code alone does not recover it.
    The SMS code was spent (it was checked first, so that nobody learns this about a number without one)."""

    status, code, title = 401, "totp_required", "Authenticator code required"


class AccountFrozen(AppError):
    """Staff froze the account (R13, ``flask users freeze``): no payment, top-up, withdrawal or card binding until they
    lift it. Refused before the payment password is checked, so a frozen account's tries never count toward its lock.
    Money may still come in, and trades still reach their deadlines."""

    status, code, title = 403, "account_frozen", "Account frozen"

    def __init__(self, frozen_at: datetime) -> None:
        super().__init__("The account is frozen while the platform looks into it; contact support. Money can still "
                         "be received.", frozen_at=_iso(frozen_at))


class PhoneTaken(Conflict):
    """The phone number already belongs to an account."""

    code, title = "phone_taken", "Phone number already registered"


class TotpNotEnrolled(Conflict):
    """Verification was asked for an authenticator that was never enrolled."""

    code, title = "totp_not_enrolled", "No authenticator enrolment in progress"
