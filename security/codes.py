"""One-time SMS codes: six digits, ten minutes, single use, bound to phone and purpose, five tries.

Codes are stored as an HMAC under the password pepper. Asking for a code always answers the same way,
whether or not the number has an account; who actually gets a text depends on the purpose:

* ``register``: a code if the number is free, otherwise a notice that it already has an account;
* ``login`` and ``recover``: a code only if the number has an account;
* ``change_phone``: a code only if the number is free (it is the *new* number).

The request writes a code row whatever the answer, spent at once where no code is texted, so that it does the
same work for a number with an account and one without (DESIGN 4.2: no one learns which numbers have accounts).
Before, a number that got nothing cost one read where the others cost writes and a commit: on PostgreSQL, in
process, 2.0 against 4.2 ms for a login code. Only the outbox row still differs (a code, the notice, or nothing
for a login, recovery or phone-change code): 4.0 against 4.4 ms, which the per-number limit on codes leaves an
attacker few tries to measure.

A code is bound to a number, not to an account: when an account leaves its number, the codes still open on that
number are spent with it (``void_codes``), or whoever read one could use it on the next account of that number.
"""

from __future__ import annotations

import hmac
import secrets

from sqlalchemy import select, update

from core import clock, sql
from core.db import db, run_in_transaction
from core.ids import new_id
from notifications.models import CODE_EVENT, CODE_LIFETIME
from notifications.outbox import enqueue
from security.errors import InvalidSmsCode
from security.models import SmsCode, User
from security.secrets_guard import passwords

PURPOSES = ("register", "login", "recover", "change_phone")
# The dispatcher gives up a code's SMS it could not send before this ran out (``notifications.dispatcher``).
LIFETIME = CODE_LIFETIME

# Requests for one number and purpose one at a time, until each commits: otherwise two at once each spend the codes
# before them, neither sees the other's new code, and two stay valid (an audit left three). SQLite runs one write
# transaction at a time already.
_ONE_AT_A_TIME = sql.Statement({"postgresql": "SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))",
                                "sqlite": "SELECT 1 WHERE :key IS NOT NULL"})
MAX_ATTEMPTS = 5


def _digest(code_id: str, code: str) -> str:
    return passwords().keyed_digest(f"{code_id}:{code}")


def request_code(phone: str, purpose: str, locale: str = "zh") -> None:
    """Send a code for ``purpose`` to ``phone`` when the purpose allows it (see the module docstring)."""

    def work() -> None:
        _ONE_AT_A_TIME.all(key=f"sms-code:{purpose}:{phone}")
        user = db.session.scalars(select(User).where(User.phone == phone)).first()
        lang = user.locale if user else locale
        texted = (user is not None) == (purpose in ("login", "recover"))  # else: a notice (register), or nothing
        now = clock.now()
        # Only the newest code for a phone and purpose is valid.
        db.session.execute(
            update(SmsCode)
            .where(SmsCode.phone == phone, SmsCode.purpose == purpose, SmsCode.consumed_at.is_(None))
            .values(consumed_at=now)
        )
        code = f"{secrets.randbelow(10**6):06d}"
        code_id = new_id("otp")
        db.session.add(
            SmsCode(
                id=code_id,
                phone=phone,
                purpose=purpose,
                code_hash=_digest(code_id, code),
                attempts=0,
                created_at=now,
                expires_at=now + LIFETIME,
                consumed_at=None if texted else now,  # never texted: spent at once, it can never be used
            )
        )
        if texted:
            enqueue(
                phone, CODE_EVENT, locale=lang, user_id=user.id if user else None, sensitive=True,
                code=code, minutes=int(LIFETIME.total_seconds() // 60), purpose=purpose,
            )
        elif purpose == "register":
            assert user is not None
            enqueue(phone, "account_exists", locale=lang, user_id=user.id)

    run_in_transaction(work)


def void_codes(phone: str) -> None:
    """Spend every open code of ``phone`` (inside the caller's transaction): the account it was sent for is leaving
    the number, and a login or recovery code must not work for the next account there. The number's requests in
    flight are waited for first: one had read the account still on the number, and the code it committed after this
    statement stayed alive (found by an audit); one that waits for the move instead finds the number free."""
    for purpose in PURPOSES:
        _ONE_AT_A_TIME.all(key=f"sms-code:{purpose}:{phone}")
    db.session.execute(
        update(SmsCode).where(SmsCode.phone == phone, SmsCode.consumed_at.is_(None)).values(consumed_at=clock.now())
    )


def consume_code(phone: str, purpose: str, code: str | None) -> None:
    """Accept ``code`` once. Raises ``InvalidSmsCode`` (after recording the try) for anything else."""

    def work() -> bool:
        now = clock.now()
        row = db.session.scalars(
            select(SmsCode)
            .where(SmsCode.phone == phone, SmsCode.purpose == purpose, SmsCode.consumed_at.is_(None))
            .order_by(SmsCode.created_at.desc())
            .limit(1)
            .with_for_update()
        ).first()
        if row is None or row.expires_at <= now or row.attempts >= MAX_ATTEMPTS:
            return False
        if code is not None and hmac.compare_digest(row.code_hash, _digest(row.id, code)):
            row.consumed_at = now
            return True
        row.attempts += 1
        return False

    if not run_in_transaction(work):
        raise InvalidSmsCode("The code is wrong, expired or used up; request a new one.")
