"""Sessions and bearer tokens.

Tokens are 256 random bits, handed out once and stored only as SHA-256. An access token lives
``ACCESS_TOKEN_MINUTES`` (15); a refresh token ``REFRESH_TOKEN_DAYS`` (30), is bound to its session's
device, and is single use: refreshing rotates both. Presenting a refresh token that was already used means
it was copied, so the whole session (the token family) is revoked.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta

from flask import current_app
from sqlalchemy import insert, select, update

from core import clock
from core.db import db, run_in_transaction
from core.errors import Unauthenticated
from core.ids import new_id
from security.errors import RefreshTokenReused
from security.models import AuthSession, AuthToken

ACCESS, REFRESH = "access", "refresh"
# Built once, run by every login and refresh. Plain inserts: nothing here needs the rows as ORM objects.
_INSERT_SESSION, _INSERT_TOKENS = insert(AuthSession.__table__), insert(AuthToken.__table__)


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _lifetimes() -> tuple[timedelta, timedelta]:
    cfg = current_app.config
    return timedelta(minutes=cfg["ACCESS_TOKEN_MINUTES"]), timedelta(days=cfg["REFRESH_TOKEN_DAYS"])


def _mint(session_id: str) -> TokenPair:
    access_life, refresh_life = _lifetimes()
    now = clock.now()
    access, refresh = "at_" + secrets.token_urlsafe(32), "rt_" + secrets.token_urlsafe(32)
    db.session.execute(_INSERT_TOKENS, [
        {"token_hash": token_hash(access), "kind": ACCESS, "session_id": session_id, "expires_at": now + access_life},
        {"token_hash": token_hash(refresh), "kind": REFRESH, "session_id": session_id,
         "expires_at": now + refresh_life},
    ])
    return TokenPair(access, refresh, int(access_life.total_seconds()))


def start_session(user_id: str, device_id: str) -> TokenPair:
    """Open a session of the user on the device (inside the caller's transaction) and mint its first tokens."""
    session_id = new_id("ses")
    db.session.execute(_INSERT_SESSION, {"id": session_id, "user_id": user_id, "device_id": device_id,
                                         "created_at": clock.now()})
    return _mint(session_id)


def live_session(token: AuthToken | None) -> AuthSession:
    """The live session of an access token found by its hash (None: no such token). Raises ``Unauthenticated``."""
    if token is None or token.kind != ACCESS or token.expires_at <= clock.now() or token.session.revoked_at is not None:
        raise Unauthenticated("The access token is missing, expired or revoked.")
    return token.session


def refresh(refresh_token: str, device_key: str) -> TokenPair:
    """Rotate: spend ``refresh_token`` and mint a new pair. Reuse revokes the family.

    Raises ``RefreshTokenReused`` for a token already spent, ``Unauthenticated`` for anything else invalid.
    """

    def work() -> TokenPair | Exception:
        row = db.session.scalars(
            select(AuthToken).where(AuthToken.token_hash == token_hash(refresh_token)).with_for_update(of=AuthToken)
        ).first()
        now = clock.now()
        if row is None or row.kind != REFRESH or row.session.device.device_key != device_key:
            return Unauthenticated("The refresh token is not valid.")
        session = row.session
        if row.used_at is not None:
            if session.revoked_at is None:
                session.revoked_at, session.revoke_reason = now, "refresh_reuse"
            return RefreshTokenReused("This refresh token was already used; the session has been revoked.")
        if row.expires_at <= now or session.revoked_at is not None:
            return Unauthenticated("The refresh token is expired or revoked.")
        row.used_at = now
        return _mint(session.id)

    result = run_in_transaction(work)
    if isinstance(result, Exception):
        raise result
    return result


def revoke_sessions(user_id: str, reason: str, *, keep: str | None = None, device_id: str | None = None) -> None:
    """Revoke the user's live sessions (all, all but ``keep``, or those of ``device_id``)."""
    stmt = update(AuthSession).where(AuthSession.user_id == user_id, AuthSession.revoked_at.is_(None))
    if keep is not None:
        stmt = stmt.where(AuthSession.id != keep)
    if device_id is not None:
        stmt = stmt.where(AuthSession.device_id == device_id)
    db.session.execute(stmt.values(revoked_at=clock.now(), revoke_reason=reason))


def end_session(session_id: str) -> None:
    run_in_transaction(
        lambda: db.session.execute(
            update(AuthSession)
            .where(AuthSession.id == session_id, AuthSession.revoked_at.is_(None))
            .values(revoked_at=clock.now(), revoke_reason="logout")
        )
    )


def live_session_ids(user_id: str) -> list[str]:
    return list(
        db.session.scalars(
            select(AuthSession.id).where(AuthSession.user_id == user_id, AuthSession.revoked_at.is_(None))
        )
    )
