"""Password hashing and password rules. The only module that imports ``argon2``.

Both passwords are hashed with argon2id over ``HMAC-SHA256(pepper, password)``. The pepper lives in the
environment, never in the database, so a stolen database alone cannot be brute-forced. Parameters come from
configuration (defaults: m=19 MiB, t=2, p=1, OWASP's minimum); a hash made with older parameters is
replaced at the next successful check.

A password is hashed, verified and judged in Unicode normal form NFKC (NIST SP 800-63B 5.1.1.2): "café" typed on
one phone (precomposed) and on another (e + combining accent) is one password, as are full-width and ASCII digits.
A hash made before this rule from a password NFKC changes still verifies with the password as typed then.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import unicodedata
from pathlib import Path

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from core.errors import ValidationFailed

_COMMON = frozenset(
    line.strip().lower()
    for line in (Path(__file__).with_name("common_passwords.txt")).read_text(encoding="utf-8").splitlines()
    if line.strip() and not line.startswith("#")
)
_DIGITS = "0123456789"


class Passwords:
    """argon2id over a peppered HMAC. One instance per application (``app.extensions["passwords"]``)."""

    def __init__(self, pepper: str, *, time_cost: int, memory_kib: int, parallelism: int) -> None:
        if not pepper:
            raise ValueError("a password pepper is required")
        self._pepper = pepper.encode()
        self._hasher = PasswordHasher(
            time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism, type=Type.ID
        )
        #: What to verify against when there is no account, so both cases cost the same time.
        self.dummy_hash = self._make_dummy_hash(time_cost, memory_kib, parallelism)

    def _peppered(self, secret: str) -> bytes:
        return hmac.new(self._pepper, secret.encode(), hashlib.sha256).hexdigest().encode()

    def hash(self, secret: str) -> str:
        return self._hasher.hash(self._peppered(normalized(secret)))

    def verify(self, stored_hash: str, secret: str) -> bool:
        if self._verify(stored_hash, normalized(secret)):
            return True
        # A hash made before passwords were normalised, from a password normalising changes: as it was typed.
        return normalized(secret) != secret and self._verify(stored_hash, secret)

    def _verify(self, stored_hash: str, secret: str) -> bool:
        try:
            return self._hasher.verify(stored_hash, self._peppered(secret))
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, stored_hash: str) -> bool:
        return self._hasher.check_needs_rehash(stored_hash)

    def _make_dummy_hash(self, time_cost: int, memory_kib: int, parallelism: int) -> str:
        # A well-formed argon2id hash with random salt and digest: verifying against it costs exactly what a
        # real one costs (the parameters set the work) and never matches. Built eagerly and without hashing,
        # so even the first unknown-number login after a start takes no longer than a known one.
        salt = base64.b64encode(os.urandom(16)).decode().rstrip("=")
        digest = base64.b64encode(os.urandom(32)).decode().rstrip("=")
        return f"$argon2id$v=19$m={memory_kib},t={time_cost},p={parallelism}${salt}${digest}"

    def keyed_digest(self, message: str) -> str:
        """HMAC-SHA256 with the pepper, for short secrets such as one-time codes."""
        return hmac.new(self._pepper, message.encode(), hashlib.sha256).hexdigest()


def normalized(secret: str) -> str:
    """``secret`` in Unicode normal form NFKC, the form passwords are hashed and judged in."""
    return secret if secret.isascii() else unicodedata.normalize("NFKC", secret)


def check_login_password(password: str, phone: str, field: str = "login_password") -> None:
    """8-128 characters, not a common password, not the phone number, not one repeated character (of the password
    in NFKC, as it is hashed: full-width "ｐａｓｓｗｏｒｄ１" is "password1").

    Raises ``ValidationFailed`` naming ``field`` otherwise.
    """
    reason = _login_password_problem(normalized(password), phone)
    if reason:
        raise ValidationFailed.field(field, "weak_password", reason)


def _login_password_problem(password: str, phone: str) -> str | None:
    if not 8 <= len(password) <= 128:
        return "Use 8 to 128 characters."
    lowered = password.lower()
    if lowered in _COMMON:
        return "This password is among the most commonly used; choose another."
    if len(set(password)) == 1:
        return "A password of one repeated character is too easy to guess."
    digits = "".join(ch for ch in phone if ch.isdigit())
    if password.isdigit() and password in digits:
        return "Do not use your phone number as your password."
    if password.isdigit() and (password in _DIGITS * 2 or password in _DIGITS[::-1] * 2):
        return "A run of consecutive digits is too easy to guess."
    return None


def check_payment_password(password: str, phone: str, field: str = "payment_password") -> None:
    """Exactly six digits, and not a trivial one: repeated (000000, 121212, 123123), sequential
    (123456, 654321, 901234) or the end of the phone number, judged in NFKC as it is hashed (six full-width digits
    are six digits). Raises ``ValidationFailed``."""
    password = normalized(password)
    if len(password) != 6 or not password.isdigit() or not password.isascii():
        raise ValidationFailed.field(field, "invalid_payment_password", "The payment password is six digits.")
    if _is_trivial_pin(password) or phone.endswith(password):
        raise ValidationFailed.field(field, "weak_payment_password", "This payment password is too easy to guess.")


def _is_trivial_pin(pin: str) -> bool:
    repeats = any(pin == pin[:size] * (6 // size) for size in (1, 2, 3))
    ascending = pin in _DIGITS * 2
    descending = pin in _DIGITS[::-1] * 2
    return repeats or ascending or descending
