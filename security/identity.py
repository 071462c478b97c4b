"""Real-name identity verification (R7): a name and an 18-digit resident ID, checked by a provider.

Design:

- The number is validated locally first (GB 11643 via ``stdnum.cn.ric``: 17 digits and a check digit,
  a real birth date no later than today, a known region), so a typo never reaches the provider.
- The provider (``IdentityProvider``, held in ``app.extensions["identity_provider"]``) decides whether
  the name belongs to the number. It is asked *before* the uniqueness check, so ``id_number_taken`` is
  only ever told to someone who already knows the matching name: the endpoint is no oracle for "is this
  number registered here".
- The number is stored only as ``HMAC-SHA256(pepper, number)`` plus its last four characters. The
  database enforces both invariants: UNIQUE(user_id) (one identity per user) and UNIQUE(id_number_hash)
  (one user per ID number); a violation is translated, never pre-checked and trusted.
- Verifying again with the same name and number is an idempotent success (a mobile client whose answer
  got lost may retry); different data on a verified account is ``already_verified`` (support changes it).
- The SMS alert is enqueued in the transaction that stores the identity; it carries the masked name and
  the last four characters, never the number.

This module imports nothing from ``wallet``; the card service reads the verified name through
``verified_real_name``.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import date, timedelta, timezone
from typing import Protocol

from flask import current_app
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from stdnum import numdb
from stdnum.cn import ric
from stdnum.exceptions import ValidationError as StdnumError

from core import clock
from core.db import db, run_in_transaction
from core.errors import AppError
from core.ids import new_id
from notifications.outbox import enqueue
from notifications.templates import format_time
from security.identity_errors import (
    AlreadyVerified,
    IdentityMismatch,
    IdNumberTaken,
    InvalidIdNumber,
    InvalidRealName,
)
from security.identity_models import Identity
from security.models import User
from security.recovery_hold import hold_refusal, locked_account, refusal_under_lock, refuse_early

MAX_NAME_LENGTH = 64
_EARLIEST_BIRTH = date(1900, 1, 1)
_CHINA = timezone(timedelta(hours=8))
# How each dialect names a violated uniqueness rule of ``identities``: PostgreSQL the constraint, SQLite the column.
_UNIQUE_VIOLATIONS = ("uq_identities_user_id", "uq_identities_id_number_hash", "identities.user_id",
                      "identities.id_number_hash")
# Separators that appear inside real names: spaces, the interpunct of transliterated names (买买提·艾力),
# hyphens and apostrophes of Latin names.
_NAME_PUNCTUATION = frozenset(" ·•‧・.-'’‘")


# --- rules (no database, no Flask) -------------------------------------------------------------------


def normalize_real_name(raw: str) -> str:
    """NFC, trimmed, inner whitespace collapsed to one space. Raises ``InvalidRealName``."""
    name = " ".join(unicodedata.normalize("NFC", raw).split())
    if not name:
        raise InvalidRealName("Enter the name as it appears on the ID card.")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidRealName(f"A name has at most {MAX_NAME_LENGTH} characters.")
    if not any(ch.isalpha() for ch in name) or not all(
        ch.isalpha() or _is_name_punctuation(ch) or unicodedata.category(ch).startswith("M") for ch in name
    ):
        raise InvalidRealName("A name consists of letters, spaces and name punctuation only.")
    return name


def _is_name_punctuation(ch: str) -> bool:
    """Name punctuation, also in the full-width forms a Chinese keyboard types (``．`` ``＇`` ``－``, ``･``), which
    ``name_key`` folds: verification refused them while a card holder name typed so was the same name (an audit)."""
    return ch in _NAME_PUNCTUATION or unicodedata.normalize("NFKC", ch) in _NAME_PUNCTUATION


def same_name(a: str, b: str) -> bool:
    """Whether two names are the same person's name as written (case and spacing aside)."""
    return name_key(a) == name_key(b)


# The interpunct of transliterated names is typed several ways (买买提·艾力, 买买提•艾力, 买买提・艾力),
# and as a full stop between Chinese characters (买买提．艾力, 买买提.艾力). Compatibility folding makes the
# full-width ``．`` an ASCII stop, so a stop is recognised by its neighbours after folding (listing ``．``
# among the interpuncts matched nothing: found by an audit); elsewhere (J. R. Smith) a stop stays a stop.
_INTERPUNCTS = str.maketrans(dict.fromkeys("•‧・", "·"))
# An apostrophe is typed straight or typographic (iOS writes O’Brien for O'Brien; found by an audit).
_APOSTROPHES = str.maketrans(dict.fromkeys("’‘ʼ", "'"))
_STOP_BETWEEN_CJK = re.compile(r"(?<=[\u3400-\u9fff\uf900-\ufaff]) ?\. ?(?=[\u3400-\u9fff\uf900-\ufaff])")
_SPACE_BY_CJK = re.compile(r"(?<=[\u3400-\u9fff\uf900-\ufaff·]) | (?=[\u3400-\u9fff\uf900-\ufaff·])")


def name_key(name: str) -> str:
    """What two spellings of one name have in common: compatibility forms folded (full-width Ｊｏｈｎ is John),
    one interpunct (a full stop between Chinese characters is one too), one apostrophe, no space next to a Chinese
    character (张 三 is 张三; Latin words keep theirs), any case."""
    folded = " ".join(unicodedata.normalize("NFKC", name).translate(_INTERPUNCTS).translate(_APOSTROPHES).split())
    return _SPACE_BY_CJK.sub("", _STOP_BETWEEN_CJK.sub("·", folded)).casefold()


def mask_name(name: str) -> str:
    """Chinese practice: ``张三`` → ``*三``; Latin names keep each word's initial: ``John Doe`` → ``J*** D**``."""
    if any(ch.isascii() and ch.isalpha() for ch in name):
        return " ".join(word[:1] + "*" * (len(word) - 1) for word in name.split(" "))
    if len(name) <= 1:
        return "*"
    return "*" * (len(name) - 1) + name[-1]


def normalize_id_number(raw: str, today: date) -> str:
    """The 18-character resident ID in canonical form (upper-case ``X``), or ``InvalidIdNumber``.

    Checks, in order: 17 ASCII digits and a digit or X (spaces between groups, as input fields format it, aside);
    the GB 11643 check digit; a birth date that exists, is not before 1900 and not after ``today``; a region code
    known and not abolished before that birth year.
    """
    number = "".join(raw.split()).upper()
    if len(number) != 18 or not (number[:17].isascii() and number[:17].isdigit()) or number[17] not in "0123456789X":
        raise InvalidIdNumber("format", "A resident ID number is 17 digits followed by a digit or X.")
    if ric.calc_check_digit(number) != number[17]:
        raise InvalidIdNumber("check_digit", "The check digit does not match; check the number for typos.")
    try:
        born = ric.get_birth_date(number)
    except StdnumError as exc:
        raise InvalidIdNumber("birth_date", "The birth date in the number does not exist.") from exc
    if not _EARLIEST_BIRTH <= born <= today:
        raise InvalidIdNumber("birth_date", "The birth date in the number is not possible.")
    if not _region_possible(number[:6], born.year):
        raise InvalidIdNumber("region", "The region code in the number is unknown.")
    return number


def _region_possible(code: str, born: int) -> bool:
    """Whether a county ``code`` can begin the number of someone born in ``born``: python-stdnum knows it, and it was
    not abolished before that year (a number is given after birth, by where the person is registered then).

    Not python-stdnum's ``get_birth_place``, which wants the county to exist in the birth year: districts made later
    (Pudong 310115 in 1992, Yuzhong 500103 in 1997) give their numbers to everyone registered there, whenever born, and
    those real people were refused (found by an audit). It also raised KeyError, a 500, for a province it knows with a
    county it does not (``119999``)."""
    found = {name: value for _part, props in numdb.get("cn/loc").info(code) for name, value in props.items()}
    for county in found.get("county", "").split(",") if found.get("county") else ():
        if not county.startswith("["):
            return True  # no dates: a county as it is today
        ended = county[1:].partition("]")[0].partition("-")[2]
        if not ended or born <= int(ended):
            return True
    return False


# --- the provider ---------------------------------------------------------------------------------------


class IdentityProvider(Protocol):
    """Tells whether a name belongs to a resident ID number (a government-backed service in production).

    ``verify`` receives a normalised name and a number already valid under GB 11643. It returns whether
    they match, and raises ``IdentityProviderUnavailable`` when the service does not answer.
    """

    name: str

    def verify(self, real_name: str, id_number: str) -> bool: ...


class SimulatedIdentityProvider:
    """Sandbox (DESIGN 7.2): every valid number with a non-empty name matches, except sequence code 999."""

    name = "simulated"
    MISMATCH_SEQUENCE = "999"

    def verify(self, real_name: str, id_number: str) -> bool:
        # Not ``ric.is_valid``: its region check refuses real numbers of districts made after the birth year.
        try:
            normalize_id_number(id_number, clock.now().astimezone(_CHINA).date())
        except InvalidIdNumber:
            return False
        return bool(real_name.strip()) and id_number[14:17] != self.MISMATCH_SEQUENCE


def provider() -> IdentityProvider:
    return current_app.extensions["identity_provider"]


# --- use cases ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verification:
    identity: Identity
    created: bool  # False when this was a repeat of an earlier, identical verification


def id_number_digest(number: str) -> str:
    """The keyed hash stored in place of the number (domain-separated from other uses of the pepper)."""
    return current_app.extensions["passwords"].keyed_digest("resident-id:" + number)


def identity_of(user_id: str) -> Identity | None:
    """The user's verified identity, if any."""
    return run_in_transaction(
        lambda: db.session.scalars(select(Identity).where(Identity.user_id == user_id)).first()
    )


def verified_real_name(user_id: str) -> str | None:
    """The verified real name (unmasked, for checks such as the bank card holder), or None."""
    identity = identity_of(user_id)
    return identity.real_name if identity else None


def _repeat_of(existing: Identity, name: str, digest: str) -> Verification:
    if existing.id_number_hash == digest and same_name(existing.real_name, name):
        return Verification(existing, created=False)
    raise AlreadyVerified("This account is already verified; contact support to change the identity.")


def verify_identity(user: User, real_name: str, id_number: str) -> Verification:
    """Verify ``user`` as the holder of ``id_number`` named ``real_name``; alert by SMS on success.

    Raises ``InvalidRealName``, ``InvalidIdNumber`` (422), ``IdentityMismatch`` (422, the provider says
    no), ``AlreadyVerified`` (409, this account holds another identity), ``IdNumberTaken`` (409, another
    account holds this number), ``IdentityProviderUnavailable`` (503), ``AccountRecentlyRecovered`` (403) within
    ``SMS_RECOVERY_HOLD_HOURS`` of a login-password recovery by SMS alone (``security.recovery_hold``): whoever held
    only the SIM would otherwise bind the account to their own identity for good, and the owner's cards with it.
    """
    name = normalize_real_name(real_name)
    number = normalize_id_number(id_number, clock.now().astimezone(_CHINA).date())
    digest = id_number_digest(number)
    user_id = user.id

    existing = identity_of(user_id)
    if existing is not None:
        return _repeat_of(existing, name, digest)
    refuse_early(hold_refusal(user), user)  # before the provider is asked: the request changes nothing
    source = provider()
    if not source.verify(name, number):
        raise IdentityMismatch("The name does not match the ID number.")

    def work() -> Identity | AppError:
        account = locked_account(user_id)
        refused = refusal_under_lock(hold_refusal(account), account)
        if refused is not None:
            return refused
        now = clock.now()
        identity = Identity(
            id=new_id("idn"),
            user_id=user_id, real_name=name, id_number_hash=digest, id_last4=number[-4:],
            provider=source.name, verified_at=now,
        )
        db.session.add(identity)
        db.session.flush()
        enqueue(account.phone, "identity_verified", locale=account.locale, user_id=user_id,
                name=mask_name(name), last4=number[-4:], time=format_time(now))
        return identity

    try:
        verified = run_in_transaction(work)
    except IntegrityError as exc:
        if not any(unique in str(exc.orig) for unique in _UNIQUE_VIOLATIONS):
            raise
        # Either this user was verified concurrently (then judge it as a repeat) or the number is someone else's.
        mine = identity_of(user_id)
        if mine is not None:
            return _repeat_of(mine, name, digest)
        raise IdNumberTaken("This ID number is already verified on another account.") from exc
    if isinstance(verified, AppError):  # held after a recovery that committed meanwhile: the owner's alert is sent
        raise verified
    return Verification(verified, created=True)
