"""Authenticator apps (RFC 6238 TOTP via pyotp): ±1 time step, and a code is never accepted twice."""

from __future__ import annotations

import pyotp

from core import clock
from security.models import User

ISSUER = "EscrowWallet"


def new_secret() -> str:
    return pyotp.random_base32()


def provisioning_uri(secret: str, phone: str) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=phone, issuer_name=ISSUER)


def accept(user: User, code: str) -> bool:
    """True if ``code`` matches the user's secret within ±1 step and its step is newer than the last
    accepted one; records the step. Call inside a transaction holding the user row."""
    if not user.totp_secret or not code.isdigit():
        return False
    totp = pyotp.TOTP(user.totp_secret)
    now = clock.now()
    step = totp.timecode(now)
    for candidate in (step - 1, step, step + 1):
        if pyotp.utils.strings_equal(totp.generate_otp(candidate), code):
            if user.totp_last_step is not None and candidate <= user.totp_last_step:
                return False
            user.totp_last_step = candidate
            return True
    return False
