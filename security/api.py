"""HTTP endpoints of the security package: codes, registration, sessions, devices, profile, passwords."""

from __future__ import annotations

from datetime import datetime

from flask import Blueprint
from pydantic import ValidationError

from core.api import endpoint, json_body, json_object_or_none, parse_body, parse_query, respond
from core.db import run_in_transaction
from core.errors import ValidationFailed
from core.pagination import DevicePageQuery
from core.ratelimit import configured, limit
from security import accounts, codes, freezes
from security.auth import CALLER, current_caller, current_session, current_user
from security.errors import (
    AccountRecentlyRecovered,
    DeviceVerificationRequired,
    InvalidCredentials,
    InvalidSmsCode,
    InvalidTotpCode,
    LoginLocked,
    PaymentPasswordLocked,
    PaymentPasswordResetTooSoon,
    PhoneTaken,
    RecoveryLocked,
    RefreshTokenRefused,
    RefreshTokenReused,
    TotpNotEnrolled,
    TotpRequired,
    WrongPaymentPassword,
)
from security.phones import normalize_phone
from security.schemas import (
    Accepted,
    DeviceList,
    DeviceOut,
    LoginPasswordChange,
    LoginRequest,
    PasswordReset,
    PaymentPasswordChange,
    PaymentPasswordVerify,
    PhoneChange,
    ProfilePatch,
    RefreshRequest,
    RegisterRequest,
    RegistrationOut,
    SmsCodeRequest,
    TokensOut,
    TotpEnrolment,
    TotpEnrolmentStart,
    TotpVerify,
    UserOut,
    Verified,
)
from security.secrets_guard import passwords
from security.tokens import end_session, refresh

bp = Blueprint("accounts", __name__, url_prefix="/api/v1")


def _body_phone() -> str | None:
    """The normalised phone number in the body, None when it names no valid one."""
    data = json_object_or_none()
    raw = data.get("phone") if data is not None else None
    if not isinstance(raw, str):
        return None
    try:
        return normalize_phone(raw)
    except ValidationFailed:
        return None


def phone_key() -> str:
    """Rate-limit key: the normalised phone number in the body, so reformatting it gains nothing, as a keyed digest
    (flask-limiter logs the key of every limit a request breaks, and the counters in Redis are named by it)."""
    phone = _body_phone()
    return "phone:" + passwords().keyed_digest("rate-limit:" + phone)[:32] if phone else "phone:none"


def no_phone() -> bool:
    """The per-phone limits leave out a request naming no valid number: it asks nothing for any number and is answered
    422 naming the field (found by an audit: all of them shared one counter, so after the first from anyone in the
    minute everyone's mistyped number was 429 rate_limited). The per-client limits count it."""
    return _body_phone() is None


def not_sendable() -> bool:
    """The per-phone limits on codes count code requests that can be sent: one that names no valid number
    (``no_phone``) or is refused 422 for another field (a locale or purpose the app got wrong, a field too many) sends
    nothing, and must not use up the number's minute or hour (found by an audit: the corrected request that followed
    one was 429 for a minute). The per-client limit counts them."""
    if no_phone():
        return True
    try:
        SmsCodeRequest.model_validate(json_object_or_none())
    except ValidationError:
        return True
    return False


def _purpose() -> str:
    data = json_object_or_none()
    purpose = data.get("purpose") if data is not None else None
    return purpose if purpose in codes.PURPOSES else "none"


def _user_out(user, frozen_since: datetime | None = None) -> UserOut:
    return UserOut(id=user.id, phone=user.phone, email=user.email, locale=user.locale,
                   totp_enabled=user.totp_enabled, created_at=user.created_at, frozen_since=frozen_since)


@endpoint(bp, "/sms-codes", "POST", summary="Send a one-time code by SMS (always 202)", body=SmsCodeRequest,
          response=Accepted, status=202, auth=False,
          errors=())
@limit(configured("SMS_CODE_RESEND_LIMIT"), key_func=lambda: f"{phone_key()}:{_purpose()}",
               exempt_when=not_sendable)
@limit(configured("SMS_CODE_LIMIT_PER_PHONE"), key_func=phone_key, exempt_when=not_sendable)
@limit(configured("SMS_CODE_LIMIT_PER_CLIENT"))
def send_sms_code():
    req = parse_body(SmsCodeRequest)
    codes.request_code(normalize_phone(req.phone), req.purpose, req.locale)
    return respond(Accepted(expires_in=int(codes.LIFETIME.total_seconds())), 202)


@endpoint(bp, "/users", "POST", summary="Register with a phone number", body=RegisterRequest,
          response=RegistrationOut, status=201, auth=False,
          errors=(InvalidSmsCode, PhoneTaken))
@limit(configured("LOGIN_LIMIT_PER_CLIENT"))
def register():
    req = parse_body(RegisterRequest)
    result = accounts.register(
        normalize_phone(req.phone), req.sms_code, req.login_password, req.payment_password, req.device_id,
        req.email, req.locale, req.device_name,
    )
    tokens = result.tokens
    return respond(RegistrationOut(user=_user_out(result.user), access_token=tokens.access_token,
                                   refresh_token=tokens.refresh_token, expires_in=tokens.expires_in), 201)


@endpoint(bp, "/sessions", "POST", summary="Log in", body=LoginRequest, response=TokensOut, status=201, auth=False,
          errors=(InvalidCredentials, LoginLocked, DeviceVerificationRequired, InvalidSmsCode, InvalidTotpCode))
@limit(configured("LOGIN_LIMIT_PER_PHONE"), key_func=phone_key, exempt_when=no_phone)
@limit(configured("LOGIN_LIMIT_PER_CLIENT"))
def log_in():
    req = parse_body(LoginRequest)
    tokens = accounts.log_in(normalize_phone(req.phone), req.login_password, req.device_id, req.sms_code,
                             req.totp_code, req.device_name)
    return respond(TokensOut(**tokens.__dict__), 201)


@endpoint(bp, "/sessions/refresh", "POST", summary="Rotate the refresh token", body=RefreshRequest,
          response=TokensOut, auth=False,
          errors=(RefreshTokenRefused, RefreshTokenReused))
@limit(configured("LOGIN_LIMIT_PER_CLIENT"))
def refresh_session():
    req = parse_body(RefreshRequest)
    return respond(TokensOut(**refresh(req.refresh_token, req.device_id).__dict__))


@endpoint(bp, "/sessions/current", "DELETE", summary="Log out", status=204)
def log_out():
    end_session(current_session().id)
    return respond(None, 204)


@endpoint(bp, "/devices", "GET", summary="List my devices", query=DevicePageQuery, response=DeviceList)
def list_devices():
    session = current_session()
    query = parse_query(DevicePageQuery)
    devices, more = accounts.list_devices(current_user(), query.limit, query.starting_after)
    return respond(DeviceList(data=[
        DeviceOut(id=d.id, name=d.name, trusted=d.trusted, current=d.id == session.device_id,
                  created_at=d.created_at, last_seen_at=d.last_seen_at)
        for d in devices
    ], has_more=more, next_starting_after=devices[-1].id if more else None))


@endpoint(bp, "/devices/<device_id>", "DELETE", summary="Revoke a device and its sessions", status=204)
def revoke_device(device_id: str):
    accounts.revoke_device(current_user(), device_id)
    return respond(None, 204)


@endpoint(bp, "/me", "GET", summary="My profile", response=UserOut)
def me():
    profile = accounts.profile(CALLER)  # one statement: the token's check and the account
    return respond(_user_out(profile, profile.frozen_since))


@endpoint(bp, "/me", "PATCH", summary="Change email (needs login_password) or locale", body=ProfilePatch,
          response=UserOut,
          errors=(InvalidCredentials, LoginLocked))
def update_me():
    user = current_user()
    req = parse_body(ProfilePatch)
    email_given = "email" in json_body()
    updated = accounts.update_profile(user, req.email, req.locale, req.login_password, email_given,
                                      current_session().id)
    return respond(_user_out(updated, run_in_transaction(lambda: freezes.frozen_since(updated.id), read_only=True)))


@endpoint(bp, "/me/login-password", "PUT", summary="Change the login password", body=LoginPasswordChange,
          status=204,
          errors=(InvalidCredentials, LoginLocked))
def change_login_password():
    session = current_session()
    req = parse_body(LoginPasswordChange)
    accounts.change_login_password(current_user(), req.current_password, req.new_password, session.id)
    return respond(None, 204)


@endpoint(bp, "/me/payment-password", "PUT", summary="Change the payment password", body=PaymentPasswordChange,
          status=204,
          errors=(WrongPaymentPassword, PaymentPasswordLocked, InvalidSmsCode, PaymentPasswordResetTooSoon))
def change_payment_password():
    user = current_user()
    req = parse_body(PaymentPasswordChange)
    accounts.change_payment_password(user, req.new_payment_password, req.current_payment_password, req.sms_code)
    return respond(None, 204)


@endpoint(bp, "/me/payment-password/verify", "POST", summary="Check the payment password (counts toward its lock)",
          body=PaymentPasswordVerify, response=Verified,
          errors=(WrongPaymentPassword, PaymentPasswordLocked))
def verify_payment_password():
    caller = current_caller()
    req = parse_body(PaymentPasswordVerify)
    accounts.authorize_payment(caller.id, req.payment_password, moves_money=False)
    return respond(Verified())


@endpoint(bp, "/password-resets", "POST", summary="Recover the login password by SMS", body=PasswordReset,
          status=204, auth=False,
          errors=(InvalidSmsCode, TotpRequired, InvalidTotpCode, RecoveryLocked))
@limit(configured("LOGIN_LIMIT_PER_PHONE"), key_func=phone_key, exempt_when=no_phone)
@limit(configured("LOGIN_LIMIT_PER_CLIENT"))
def reset_password():
    req = parse_body(PasswordReset)
    accounts.recover_password(normalize_phone(req.phone), req.sms_code, req.new_password, req.totp_code)
    return respond(None, 204)


@endpoint(bp, "/me/phone", "PUT", summary="Change the phone number", body=PhoneChange, status=204,
          errors=(InvalidCredentials, LoginLocked, AccountRecentlyRecovered, InvalidSmsCode, PhoneTaken))
def change_phone():
    user = current_user()
    req = parse_body(PhoneChange)
    accounts.change_phone(user, normalize_phone(req.new_phone, "new_phone"), req.sms_code, req.login_password,
                          current_session().id)
    return respond(None, 204)


@endpoint(bp, "/me/totp", "POST", summary="Start enrolling an authenticator app (needs login_password)",
          body=TotpEnrolmentStart, response=TotpEnrolment, status=201,
          errors=(InvalidCredentials, LoginLocked, AccountRecentlyRecovered))
def enrol_totp():
    user = current_user()
    req = parse_body(TotpEnrolmentStart)
    secret, uri = accounts.start_totp_enrolment(user, req.login_password, current_session().id)
    return respond(TotpEnrolment(secret=secret, otpauth_uri=uri), 201)


@endpoint(bp, "/me/totp/verify", "POST", summary="Confirm the authenticator with a code", body=TotpVerify,
          response=Verified,
          errors=(TotpNotEnrolled, InvalidTotpCode, AccountRecentlyRecovered))
def verify_totp():
    user = current_user()
    req = parse_body(TotpVerify)
    accounts.confirm_totp_enrolment(user, req.code)
    return respond(Verified())

