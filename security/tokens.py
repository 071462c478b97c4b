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
from typing import Any

from flask import current_app
from sqlalchemy import bindparam, select, text, update

from core import clock
from core.db import UTCDateTime, db, is_postgres, run_in_transaction
from core.ids import new_id
from security.errors import RefreshTokenRefused, RefreshTokenReused
from security.models import AuthSession, AuthToken

ACCESS, REFRESH = "access", "refresh"
# Built once, run by every login and refresh: plain statements, nothing here needs the rows as ORM objects.
_TIMES = [bindparam(name, type_=UTCDateTime()) for name in ("now", "access_expires", "refresh_expires")]
_SESSION_SQL = ("INSERT INTO auth_sessions (id, user_id, device_id, created_at)"
                " VALUES (:session_id, :user_id, :device_id, :now)")
_TOKENS_SQL = ("INSERT INTO auth_tokens (token_hash, kind, session_id, expires_at) VALUES"
               " (:access_hash, 'access', :session_id, :access_expires),"
               " (:refresh_hash, 'refresh', :session_id, :refresh_expires)")
_TOUCH_SQL = "UPDATE devices SET last_seen_at = :now WHERE id = :device_id"
_INSERT_SESSION = text(_SESSION_SQL).bindparams(_TIMES[0])
_INSERT_TOKENS = text(_TOKENS_SQL).bindparams(*_TIMES[1:])
_TOUCH_DEVICE = text(_TOUCH_SQL).bindparams(_TIMES[0])
# PostgreSQL: the session and its tokens (and the device's last-seen time) in one round trip.
_OPEN_SESSION = text(f"WITH s AS ({_SESSION_SQL}) {_TOKENS_SQL}").bindparams(*_TIMES)
_OPEN_SESSION_TOUCHING_DEVICE = text(
    f"WITH s AS ({_SESSION_SQL}), d AS ({_TOUCH_SQL}) {_TOKENS_SQL}").bindparams(*_TIMES)


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


def _pair(session_id: str) -> tuple[TokenPair, dict[str, Any]]:
    """A fresh access and refresh token for the session, and the parameters that store their hashes."""
    access_life, refresh_life = _lifetimes()
    now = clock.now()
    access, refresh = "at_" + secrets.token_urlsafe(32), "rt_" + secrets.token_urlsafe(32)
    params = {"session_id": session_id, "access_hash": token_hash(access), "access_expires": now + access_life,
              "refresh_hash": token_hash(refresh), "refresh_expires": now + refresh_life}
    return TokenPair(access, refresh, int(access_life.total_seconds())), params


def _mint(session_id: str) -> TokenPair:
    pair, params = _pair(session_id)
    db.session.execute(_INSERT_TOKENS, params)
    return pair


def start_session(user_id: str, device_id: str, *, touch_device: bool = False) -> TokenPair:
    """Open a session of the user on the device (inside the caller's transaction) and mint its first tokens;
    ``touch_device`` also notes the device as seen now. One statement on PostgreSQL, two or three on SQLite."""
    pair, params = _pair(new_id("ses"))
    params.update(user_id=user_id, device_id=device_id, now=clock.now())
    if is_postgres():
        db.session.execute(_OPEN_SESSION_TOUCHING_DEVICE if touch_device else _OPEN_SESSION, params)
        return pair
    if touch_device:
        db.session.execute(_TOUCH_DEVICE, params)
    db.session.execute(_INSERT_SESSION, params)
    db.session.execute(_INSERT_TOKENS, params)
    return pair


def refresh(refresh_token: str, device_key: str) -> TokenPair:
    """Rotate: spend ``refresh_token`` and mint a new pair. Reuse revokes the family.

    Raises ``RefreshTokenReused`` for a token already spent, ``RefreshTokenRefused`` for anything else invalid.
    """

    def work() -> TokenPair | Exception:
        row = db.session.scalars(
            select(AuthToken).where(AuthToken.token_hash == token_hash(refresh_token)).with_for_update(of=AuthToken)
        ).first()
        now = clock.now()
        if row is None or row.kind != REFRESH or row.session.device.device_key != device_key:
            return RefreshTokenRefused("The refresh token is not valid.")
        session = row.session
        if row.used_at is not None:
            if session.revoked_at is None:
                session.revoked_at, session.revoke_reason = now, "refresh_reuse"
            return RefreshTokenReused("This refresh token was already used; the session has been revoked.")
        if row.expires_at <= now or session.revoked_at is not None:
            return RefreshTokenRefused("The refresh token is expired or revoked.")
        # A login lock stops password guessing, not the sessions the owner already holds (``security.auth``).
        row.used_at = now
        # An app keeps its session by refreshing it, without the password: this is when its device was last seen.
        session.device.last_seen_at = now
        return _mint(session.id)

    result = run_in_transaction(work)
    if isinstance(result, Exception):
        raise result
    return result


def revoke_sessions(user_id: str, reason: str, *, keep: str | None = None, device_id: str | None = None,
                    only: str | None = None) -> None:
    """Revoke the user's live sessions (all, all but ``keep``, those of ``device_id``, or the one ``only``)."""
    stmt = update(AuthSession).where(AuthSession.user_id == user_id, AuthSession.revoked_at.is_(None))
    if keep is not None:
        stmt = stmt.where(AuthSession.id != keep)
    if only is not None:
        stmt = stmt.where(AuthSession.id == only)
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
