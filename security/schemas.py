"""Request and response models of the security endpoints."""

from __future__ import annotations

import unicodedata
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, Field, model_validator

from core.api import RequestModel
from core.pagination import Page

Phone = Field(min_length=3, max_length=32, description="Mobile number, E.164 (+8613800138000) or national")


def _ascii_digits(value: object) -> object:
    """Any Unicode decimal digit as its ASCII digit: some Chinese input methods type a code as "１２３４５６", which the
    user cannot tell from 123456 (codes only: a password is never rewritten so)."""
    if isinstance(value, str) and not value.isascii():
        return "".join(str(unicodedata.decimal(ch)) if ch.isdecimal() else ch for ch in value)
    return value


# A 6-digit one-time code (SMS or authenticator), typed in any script's decimal digits ("１２３４５６" too).
OneTimeCode = Annotated[str, BeforeValidator(_ascii_digits)]
SmsCode = Field(pattern=r"^[0-9]{6}$",
                description="The 6-digit code from the SMS (digits typed full-width, as １２３４５６, count as"
                            " the ASCII ones)")
DeviceId = Field(min_length=1, max_length=128, pattern=r"^[\x21-\x7e]+$", description="Stable id of the app install")
Locale = Literal["zh", "en"]


class SmsCodeRequest(RequestModel):
    phone: str = Phone
    purpose: Literal["register", "login", "recover", "change_phone"]
    locale: Locale = "zh"


class Accepted(BaseModel):
    accepted: bool = True
    expires_in: int = Field(description="Seconds a code stays valid")


class RegisterRequest(RequestModel):
    phone: str = Phone
    sms_code: OneTimeCode = SmsCode
    login_password: str = Field(min_length=1, max_length=128)
    payment_password: str = Field(min_length=1, max_length=16)
    device_id: str = DeviceId
    device_name: str | None = Field(default=None, max_length=128)
    email: str | None = Field(default=None, max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
    locale: Locale = "zh"


class UserOut(BaseModel):
    id: str
    phone: str
    email: str | None
    locale: str
    totp_enabled: bool
    created_at: datetime
    frozen_since: datetime | None = Field(
        default=None, description="Set while the platform has frozen the account (R13): payments, top-ups, "
                                  "withdrawals and card binding answer 403 account_frozen; money still comes in")


class TokensOut(BaseModel):
    access_token: str
    refresh_token: str
    expires_in: int
    token_type: Literal["Bearer"] = "Bearer"  # noqa: S105 - the scheme name, not a secret


class RegistrationOut(TokensOut):
    user: UserOut


class LoginRequest(RequestModel):
    phone: str = Phone
    login_password: str = Field(min_length=1, max_length=128)
    device_id: str = DeviceId
    device_name: str | None = Field(default=None, max_length=128)
    sms_code: OneTimeCode | None = Field(default=None, pattern=r"^[0-9]{6}$")
    totp_code: OneTimeCode | None = Field(default=None, pattern=r"^[0-9]{6}$")


class RefreshRequest(RequestModel):
    refresh_token: str = Field(min_length=1, max_length=128)
    device_id: str = DeviceId


class DeviceOut(BaseModel):
    id: str
    name: str | None
    trusted: bool
    current: bool
    created_at: datetime
    last_seen_at: datetime = Field(description="When the device last logged in or refreshed its session (an app in"
                                   " use refreshes it as its access token expires: every ACCESS_TOKEN_MINUTES, 15 by"
                                   " default)")


class DeviceList(Page[DeviceOut]):
    """Newest first; ``next_starting_after`` is the cursor of the next page while ``has_more``."""


class ProfilePatch(RequestModel):
    email: str | None = Field(default=None, max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
    locale: Locale | None = None
    login_password: str | None = Field(default=None, min_length=1, max_length=128)


class LoginPasswordChange(RequestModel):
    current_password: str = Field(min_length=1, max_length=128)
    new_password: str = Field(min_length=1, max_length=128)


class PaymentPasswordChange(RequestModel):
    current_payment_password: str | None = Field(default=None, min_length=1, max_length=16)
    sms_code: OneTimeCode | None = Field(
        default=None, pattern=r"^[0-9]{6}$",
        description="A 'recover' code; refused (403 payment_password_reset_too_soon, with available_at and reason) "
                    "for PAYMENT_RESET_AFTER_PHONE_CHANGE_HOURS (24) after a phone change (reason phone_changed) and "
                    "for SMS_RECOVERY_HOLD_HOURS (24) after a login-password recovery by SMS alone (reason "
                    "password_recovered, and the owner is told)")
    new_payment_password: str = Field(min_length=1, max_length=16)

    @model_validator(mode="after")
    def one_proof(self) -> PaymentPasswordChange:
        if (self.current_payment_password is None) == (self.sms_code is None):
            raise ValueError("send exactly one of current_payment_password or sms_code")
        return self


class PasswordReset(RequestModel):
    """Signs every device out (each needs a code at its next login). Recovered by SMS alone, the account then cannot
    reset the payment password by SMS, change its phone or enrol an authenticator for SMS_RECOVERY_HOLD_HOURS (24)."""

    phone: str = Phone
    sms_code: OneTimeCode = SmsCode
    new_password: str = Field(min_length=1, max_length=128)
    totp_code: OneTimeCode | None = Field(
        default=None, pattern=r"^[0-9]{6}$",
        description="Required when the account has an authenticator (401 totp_required otherwise, the SMS code "
                    "spent); ignored when it has none")


class PhoneChange(RequestModel):
    """Refused (403 account_recently_recovered, with available_at) for SMS_RECOVERY_HOLD_HOURS (24) after a
    login-password recovery by SMS alone."""

    new_phone: str = Phone
    sms_code: OneTimeCode = SmsCode
    login_password: str = Field(min_length=1, max_length=128)


class TotpEnrolmentStart(RequestModel):
    login_password: str = Field(min_length=1, max_length=128,
                                description="Enrolling replaces any authenticator in use: a token alone is not enough;"
                                            " refused (403 account_recently_recovered, with available_at) for"
                                            " SMS_RECOVERY_HOLD_HOURS (24) after a login-password recovery by SMS"
                                            " alone")


class TotpEnrolment(BaseModel):
    secret: str
    otpauth_uri: str


class TotpVerify(RequestModel):
    code: OneTimeCode = Field(pattern=r"^[0-9]{6}$")


class PaymentPasswordVerify(RequestModel):
    payment_password: str = Field(min_length=1, max_length=16)


class Verified(BaseModel):
    verified: bool = True
